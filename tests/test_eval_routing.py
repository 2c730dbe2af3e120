"""smcs.eval: offline routing evaluation on banks whose right answers are known by construction."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from smcs import kernels
from smcs.bank import Bank, EmbedderInfo, ModelInfo, Question
from smcs.core import Policy
from smcs.eval import RoutingReport, evaluate_routing, format_report
from smcs.cli.main import main
from smcs.eval.routing import scan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = {"n_base_grid": (5, 10, 20), "gamma_grid": (0.8, 0.9, 1.0), "knn_grid": (1, 5, 10)}


def make_bank(path, embeddings, capability, *, sources=None, models=None, metadata=None, embedder="test", query_text="raw") -> Bank:
    n = len(embeddings)
    capability = np.asarray(capability, dtype=np.int8)
    return Bank.create(
        path,
        embeddings=np.asarray(embeddings, dtype=np.float32),
        capability=capability,
        questions=[
            Question(id=f"q{i}", text=f"question {i}", source=sources[i] if sources else "",
                     metadata=metadata[i] if metadata else {})
            for i in range(n)
        ],
        models=models or [ModelInfo(name=f"m{r}") for r in range(capability.shape[0])],
        embedder=EmbedderInfo(id=embedder, dim=np.asarray(embeddings).shape[1], query_text=query_text),
    )


def clusters(per_cluster, n_clusters=3, dim=8, seed=0):
    """Tight clusters around orthogonal basis vectors: (embeddings, cluster of each row)."""
    rng = np.random.default_rng(seed)
    topic = np.repeat(np.arange(n_clusters), per_cluster)
    e = np.eye(dim)[topic] + 0.05 * rng.standard_normal((len(topic), dim))
    return e / np.linalg.norm(e, axis=1, keepdims=True), topic


def specialist_outcomes(topic, n_models=3):
    """Model m is correct exactly on cluster m."""
    return (np.arange(n_models)[:, None] == topic[None, :]).astype(np.int8)


@pytest.fixture(scope="module")
def specialists(tmp_path_factory):
    root = tmp_path_factory.mktemp("specialists")
    e, topic = clusters(30)
    qe, qtopic = clusters(10, seed=1)
    bank = make_bank(root / "bank", e, specialist_outcomes(topic), sources=[f"c{t}" for t in topic])
    queries = make_bank(root / "queries", qe, specialist_outcomes(qtopic), sources=[f"c{t}" for t in qtopic])
    return bank, queries


def method(report: RoutingReport, name: str):
    return next(m for m in report.methods if m.name == name)


def test_specialists_the_prior_finds_each_clusters_model(specialists):
    bank, queries = specialists
    report = evaluate_routing(bank, queries, Policy(k=3, n_base=20, gamma=0.9), **SMALL)
    assert report.mode == "held-out" and report.n_queries == 30
    assert method(report, "smcs").accuracy == 1.0
    assert method(report, "smcs-normalised").accuracy == 1.0
    assert method(report, "knn").accuracy == 1.0
    assert method(report, "best-single").accuracy == pytest.approx(1 / 3)
    assert method(report, "random").accuracy == pytest.approx(1 / 3)
    assert method(report, "oracle").accuracy == 1.0
    assert [round(r.smcs, 6) for r in report.coverage] == [1.0, 1.0, 1.0]
    # the static K-set is the first K models (all tie on the bank, ties to the lower index)
    assert [round(r.best_static, 6) for r in report.coverage] == [round(1 / 3, 6), round(2 / 3, 6), 1.0]
    by_source = {r.source: r for r in report.by_source}
    assert sorted(by_source) == ["c0", "c1", "c2"]
    assert all(r.n == 10 and r.accuracy["smcs"] == 1.0 for r in by_source.values())
    assert [by_source[c].accuracy["best-single"] for c in ("c0", "c1", "c2")] == [1.0, 0.0, 0.0]
    assert report.costs is None and any("cost" in note for note in report.notes)


def test_a_model_that_is_always_right_is_the_best_single(tmp_path):
    e, topic = clusters(20)
    qe, qtopic = clusters(5, seed=2)
    always = lambda t: np.vstack([specialist_outcomes(t), np.ones((1, len(t)), np.int8)])  # noqa: E731
    bank = make_bank(tmp_path / "b", e, always(topic))
    queries = make_bank(tmp_path / "q", qe, always(qtopic))
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=10), **SMALL)
    assert method(report, "best-single").accuracy == 1.0
    assert method(report, "best-single").params["model"] == "m3"
    assert method(report, "random").accuracy == pytest.approx((3 * 1 / 3 + 1) / 4)
    assert method(report, "oracle").accuracy == 1.0


def test_pairwise_score_is_eq8_of_the_kernels_prior(specialists):
    bank, queries = specialists
    # outcomes that the prior orders imperfectly: flip a few query outcomes
    outcomes = np.asarray(queries.capability).copy()
    outcomes[:, ::4] = 1 - outcomes[:, ::4]
    outcomes[2, 1] = -1
    noisy = make_bank(bank.path.parent / "noisy", queries.embeddings, outcomes)
    policy = Policy(k=3, n_base=20, gamma=0.9)
    report = evaluate_routing(bank, noisy, policy, **SMALL)
    prior = np.array([
        kernels.route(np.asarray(bank.embeddings), q, np.asarray(bank.capability), policy.n_base, policy.gamma)[2]
        for q in np.asarray(noisy.embeddings)
    ])
    expected = kernels.pairwise_ranking_score(prior, outcomes.T)
    assert method(report, "smcs").pairwise == pytest.approx(expected)
    assert 0.0 < expected < 1.0
    assert method(report, "random").pairwise is None


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_scan_matches_the_kernels_support_sets_votes_and_top_k(leave_one_out):
    rng = np.random.default_rng(5)
    n, dim, n_models = 300, 16, 6
    e = rng.standard_normal((n, dim)) + 2.0 * np.eye(dim)[rng.integers(0, 4, n)]
    e = (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)
    cap = rng.choice(np.array([-1, 0, 1], np.int8), size=(n_models, n), p=[0.2, 0.4, 0.4])
    cap[1] = cap[0]  # two models with identical outcomes: their votes must tie exactly
    if leave_one_out:
        rows = rng.choice(n, 12, replace=False)
        queries = e
    else:
        rows = np.arange(12)
        queries = rng.standard_normal((12, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    configs = [(40, 0.9), (7, 1.0), (1000, 0.5), (1, 0.0)]
    result = scan(e, cap, queries, configs, leave_one_out=leave_one_out, rows_per_block=5)
    for i in rows:
        keep = np.arange(n) != i if leave_one_out else np.ones(n, bool)
        sims = kernels.similarities(e[keep], queries[i])
        for n_base, gamma in configs:
            support, support_sims = kernels.support_set(sims, n_base, gamma)
            expected = kernels.prior_vote(cap[:, keep], support, support_sims)
            got = result.votes[(n_base, gamma)]
            threshold = gamma * np.sort(sims)[::-1][min(n_base, keep.sum()) - 1]
            if threshold == 0 or np.abs(sims.astype(np.float64) - threshold).min() > 1e-5:  # no row in doubt
                assert got.support[i] == len(support)
                np.testing.assert_allclose(got.votes[i], expected, rtol=1e-5, atol=1e-6)
                known = kernels.prior_vote(np.where(cap[:, keep] >= 0, 1, 0).astype(np.int8), support, support_sims)
                np.testing.assert_allclose(got.known[i], known, rtol=1e-5, atol=1e-6)
                contenders = set(np.flatnonzero(expected > expected.max() - 1e-4).tolist())
                if len(contenders) == 1 or contenders == {0, 1}:  # no near-tie but the exact one of 0 and 1
                    assert np.argsort(-got.votes[i], kind="stable")[0] == kernels.top_k(expected, 1)[0]
            assert got.votes[i, 0] == got.votes[i, 1]


def test_leave_one_out_never_uses_the_querys_own_outcome(tmp_path):
    # four orthogonal questions: model 0 correct on q0, q1, model 1 on q2, q3. A query that saw its own row
    # (similarity 1, everything else 0) or its own outcome in the bank accuracies would be routed right
    # every time. Without it: the support set is the other three at similarity 0, every vote is 0 and the
    # tie goes to model 0 (right on q0, q1 only); by accuracy without the query, the other model always leads.
    cap = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], np.int8)
    bank = make_bank(tmp_path / "b", np.eye(4), cap)
    report = evaluate_routing(bank, None, Policy(k=2, n_base=1, gamma=0.95), **SMALL)
    assert report.mode == "leave-one-out" and report.n_queries == 4
    assert method(report, "smcs").accuracy == 0.5
    assert method(report, "smcs-tuned").accuracy == 0.5
    assert method(report, "best-single").accuracy == 0.0
    assert method(report, "knn").accuracy == 0.5  # k = 1: the nearest other row, ties to the lower row
    assert method(report, "oracle").accuracy == 1.0
    assert [r.best_static for r in report.coverage] == [0.0, 1.0]
    assert [r.mean_support for r in report.sweeps] == [3.0] * 4  # the other three, never the query itself


def test_leave_one_out_masks_the_query_in_a_clustered_bank(specialists):
    bank, _ = specialists
    report = evaluate_routing(bank, None, Policy(k=3, n_base=20, gamma=0.9), **SMALL)
    assert report.n_queries == bank.n_questions == 90
    assert method(report, "smcs").accuracy == 1.0
    # without the query, the model right on its cluster has 29 of 89 against the others' 30: never chosen
    assert method(report, "best-single").accuracy == 0.0
    assert any("leave-one-out" in note for note in report.notes)


def test_unknown_query_outcomes_count_as_wrong_and_are_reported(specialists):
    bank, queries = specialists
    outcomes = np.asarray(queries.capability).copy()
    outcomes[0, :10] = -1  # model 0, the right model on cluster 0, was not evaluated there
    partial = make_bank(bank.path.parent / "partial", queries.embeddings, outcomes,
                        sources=[q.source for q in queries.questions])
    report = evaluate_routing(bank, partial, Policy(k=3, n_base=20, gamma=0.9), **SMALL)
    smcs = method(report, "smcs")
    assert smcs.accuracy == pytest.approx(2 / 3)
    assert smcs.unknown == pytest.approx(1 / 3)
    assert method(report, "oracle").accuracy == pytest.approx(2 / 3)
    assert report.coverage[0].smcs == pytest.approx(2 / 3)
    assert report.coverage[2].smcs == pytest.approx(2 / 3)
    assert method(report, "random").accuracy == pytest.approx(20 / 90)
    assert {r.source: r.accuracy["smcs"] for r in report.by_source} == {"c0": 0.0, "c1": 1.0, "c2": 1.0}


def test_the_normalised_vote_prefers_a_partially_evaluated_model_that_is_right_where_known(tmp_path):
    # one cluster; model 0 evaluated everywhere, right on 60 %; model 1 evaluated on 10 questions, all right.
    e, _ = clusters(50, n_clusters=1)
    cap = np.full((2, 50), -1, np.int8)
    cap[0] = (np.arange(50) % 5 < 3).astype(np.int8)
    cap[1, :10] = 1
    bank = make_bank(tmp_path / "b", e, cap)
    qe, _ = clusters(8, n_clusters=1, seed=3)
    queries = make_bank(tmp_path / "q", qe, np.array([[0] * 8, [1] * 8], np.int8))
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=50, gamma=0.0), **SMALL)
    assert method(report, "smcs").accuracy == 0.0  # Eq 4: 30 correct votes against 10
    assert method(report, "smcs-normalised").accuracy == 1.0  # 60 % against 100 % of what is known
    assert method(report, "best-single").accuracy == 1.0  # bank accuracy over known entries: 0.6 vs 1.0


def test_tuning_counts_an_unknown_outcome_at_the_models_accuracy_not_as_wrong(tmp_path):
    # model 1 is known on 10 of 50 bank questions and right on all of them, model 0 right on half. kNN with
    # k = 49 always picks model 1: worth 1.0 when its unknowns count at its accuracy, but only 0.2 if they
    # counted as wrong, which would make the tuner prefer k = 1 (mostly model 0, right half the time).
    e, _ = clusters(50, n_clusters=1)
    cap = np.full((2, 50), -1, np.int8)
    cap[0] = np.arange(50) % 2
    cap[1, :10] = 1
    bank = make_bank(tmp_path / "b", e, cap)
    qe, _ = clusters(8, n_clusters=1, seed=3)
    queries = make_bank(tmp_path / "q", qe, np.array([[1, 0] * 4, [1] * 8], np.int8))
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=50), knn_grid=(1, 49), sweeps=False, tune=False)
    assert method(report, "knn").params["k"] == 49
    assert method(report, "knn").accuracy == 1.0


def test_sweeps_give_one_row_per_grid_value(specialists):
    bank, queries = specialists
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=10, gamma=0.9), **SMALL)
    assert [(r.parameter, r.value) for r in report.sweeps] == [
        ("n_base", 5), ("n_base", 10), ("n_base", 20), ("gamma", 0.8), ("gamma", 0.9), ("gamma", 1.0)
    ]
    assert all(r.gamma == 0.9 for r in report.sweeps if r.parameter == "n_base")
    assert all(r.n_base == 10 for r in report.sweeps if r.parameter == "gamma")
    at_default = next(r for r in report.sweeps if r.parameter == "n_base" and r.value == 10)
    assert at_default.accuracy == method(report, "smcs").accuracy
    assert next(r for r in report.sweeps if r.parameter == "gamma" and r.value == 1.0).mean_support == 10.0  # the 10 at or above the 10th
    assert len(report.coverage) == 3 and all(len(r.coverage) == 3 for r in report.sweeps)
    assert report.sweeps[0].coverage == [1.0, 1.0, 1.0]
    none = evaluate_routing(bank, queries, Policy(k=2, n_base=10), sweeps=False, tune=False, **SMALL)
    assert none.sweeps == [] and "smcs-tuned" not in [m.name for m in none.methods]


def test_costs_non_dominated_set(tmp_path):
    # A always right (cost 10), B right on clusters 0 and 1 (cost 1), C right on cluster 0 (cost 5).
    e, topic = clusters(20)
    qe, qtopic = clusters(10, seed=4)
    outcomes = lambda t: np.vstack([np.ones(len(t)), t <= 1, t == 0]).astype(np.int8)  # noqa: E731
    models = [ModelInfo(name="A", cost_per_input_token=6, cost_per_output_token=4),
              ModelInfo(name="B", cost_per_input_token=1), ModelInfo(name="C", cost_per_output_token=5)]
    bank = make_bank(tmp_path / "b", e, outcomes(topic), models=models)
    queries = make_bank(tmp_path / "q", qe, outcomes(qtopic), models=models)
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=10, gamma=0.9), **SMALL)
    points = {p.name: p for p in report.costs}
    assert (points["model A"].accuracy, points["model A"].mean_cost) == (1.0, 10.0)
    assert points["model C"].dominated and not points["model B"].dominated
    # with a cost weight the prior's ties (clusters 0, 1) go to the cheap B, cluster 2 still to A
    cheap = points["smcs-cost lambda=0.5"]
    assert cheap.accuracy == 1.0 and cheap.mean_cost == pytest.approx(4.0) and not cheap.dominated
    assert points["model A"].dominated and points["smcs"].dominated  # (1.0, 10) against (1.0, 4)
    assert "price" in report.cost_basis
    bound = points["oracle (cheapest correct)"]  # B on clusters 0 and 1, A on cluster 2
    assert bound.bound and bound.accuracy == 1.0 and bound.mean_cost == pytest.approx(4.0)


def test_the_routers_willingness_sweep_reaches_the_cheap_frontier_and_has_the_best_aiq(tmp_path):
    # A always right (cost 10), B right on clusters 0 and 1 (cost 1), C right on cluster 0 (cost 5), as recorded
    e, topic = clusters(20)
    qe, qtopic = clusters(10, seed=4)
    outcomes = lambda t: np.vstack([np.ones(len(t)), t <= 1, t == 0]).astype(np.int8)  # noqa: E731
    costs = lambda t: [{"cost": {"A": 10.0, "B": 1.0, "C": 5.0}} for _ in t]  # noqa: E731
    bank = make_bank(tmp_path / "b", e, outcomes(topic), models=[ModelInfo(name=n) for n in "ABC"], metadata=costs(topic))
    queries = make_bank(tmp_path / "q", qe, outcomes(qtopic), models=[ModelInfo(name=n) for n in "ABC"], metadata=costs(qtopic))
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=10, gamma=0.9), **SMALL)
    swept = [p for p in report.costs if p.name.startswith("smcs W=")]
    assert len(swept) == 26
    # cheap W: B everywhere (2/3 right at 1.0); some W: B where it is right, A on cluster 2; large W: A (or a tie to A)
    assert min(p.mean_cost for p in swept) == pytest.approx(1.0)
    assert any(p.accuracy == 1.0 and p.mean_cost == pytest.approx(4.0) and not p.dominated for p in swept)
    assert report.aiq["smcs W sweep"] > max(v for k, v in report.aiq.items() if k.startswith("model "))
    low, high = 1.0, 10.0  # every point's cost lies in [1, 10]
    assert report.aiq["model A"] == pytest.approx(0.0)  # the most expensive point: its step starts at the range's end
    assert report.aiq["model B"] == pytest.approx(2 / 3)
    assert report.aiq["model C"] == pytest.approx((high - 5.0) / (high - low) / 3)
    loo = evaluate_routing(bank, None, Policy(k=2, n_base=10, gamma=0.9), **SMALL)
    assert not any(p.name.startswith("smcs W=") for p in loo.costs) and loo.aiq == {}
    assert any("held-out" in note for note in loo.notes)


def test_costs_from_question_metadata(tmp_path):
    e, topic = clusters(10)
    qe, qtopic = clusters(4, seed=6)
    bank_costs = [{"cost": {"m0": 2.0, "m1": 1.0, "m2": 3.0}} for _ in topic]
    query_costs = [{"cost": {"m0": float(i), "m1": 1.0}} for i in range(len(qtopic))]  # m2 missing: bank mean
    bank = make_bank(tmp_path / "b", e, specialist_outcomes(topic), metadata=bank_costs)
    queries = make_bank(tmp_path / "q", qe, specialist_outcomes(qtopic), metadata=query_costs)
    report = evaluate_routing(bank, queries, Policy(k=2, n_base=5), **SMALL)
    points = {p.name: p for p in report.costs}
    assert points["model m0"].mean_cost == pytest.approx(np.mean(np.arange(12)))
    assert points["model m2"].mean_cost == 3.0
    assert "metadata" in report.cost_basis


def test_banks_must_share_embedder_and_models(specialists, tmp_path):
    bank, queries = specialists
    other = make_bank(tmp_path / "e", queries.embeddings, queries.capability, embedder="other")
    with pytest.raises(ValueError, match="embedder"):
        evaluate_routing(bank, other, Policy(k=2))
    templated = make_bank(tmp_path / "t", queries.embeddings, queries.capability, query_text="question-v1")
    with pytest.raises(ValueError, match="query-text rule 'question-v1' but the bank under 'raw'"):
        evaluate_routing(bank, templated, Policy(k=2))
    fewer = make_bank(tmp_path / "m", queries.embeddings, np.asarray(queries.capability)[:2])
    with pytest.raises(ValueError, match="the queries lack 'm2'"):
        evaluate_routing(bank, fewer, Policy(k=2))
    with pytest.raises(ValueError, match="k=7"):
        evaluate_routing(bank, queries, Policy())


def test_cli_json_decodes_and_table_prints(specialists, capsys):
    bank, queries = specialists
    assert main(["eval", "route", str(bank.path), "--queries", str(queries.path), "--json", "--n-base", "20", "--gamma", "0.9"]) == 0
    report = msgspec.json.decode(capsys.readouterr().out, type=RoutingReport)
    assert report.k == 3 and report.n_base == 20  # K defaults to min(7, models)
    assert method(report, "smcs").accuracy == 1.0
    assert json.loads(msgspec.json.encode(report))["methods"][0]["name"] == "smcs"
    assert main(["eval", "route", str(bank.path), "--no-sweeps", "--no-tune", "--n-base", "20"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "leave-one-out" in out and "smcs" in rows and "oracle" in rows and "smcs-tuned" not in rows
    assert format_report(report).splitlines()[0].startswith("routing evaluation, held-out")


def test_cli_plot_writes_a_png(specialists, tmp_path, capsys):
    bank, queries = specialists
    target = tmp_path / "eval.png"
    assert main(["eval", "route", str(bank.path), "--queries", str(queries.path), "--plot", str(target), "--n-base", "20"]) == 0
    assert target.read_bytes()[:8] == PNG_MAGIC


def test_matplotlib_is_imported_only_for_a_plot(specialists):
    bank, queries = specialists
    code = (
        "import sys\n"
        "from smcs.cli.main import main\n"
        f"assert main(['eval', 'route', {str(bank.path)!r}, '--queries', {str(queries.path)!r}, '--no-tune', '--json']) == 0\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_cli_imports_format_paths(tmp_path, capsys):
    pytest.importorskip("smcs.ingest.importers")
    pytest.importorskip("onnxruntime")
    topics = ["the capital city of a country", "adding two whole numbers", "the boiling point of water"]
    def write(name, n):
        records = [{"question": f"Question {i} about {topics[i % 3]}?",
                    "scores": {"a": float(i % 3 == 0), "b": float(i % 3 != 0)}} for i in range(n)]
        (tmp_path / name).write_text(json.dumps(records))
        return str(tmp_path / name)
    bank, queries = write("quiz_train.json", 12), write("quiz_test.json", 6)
    assert main(["eval", "route", f"routerdc:{bank}", "--queries", f"routerdc:{queries}", "--json", "--no-sweeps"]) == 0
    report = msgspec.json.decode(capsys.readouterr().out, type=RoutingReport)
    assert report.n_bank == 12 and report.n_queries == 6 and report.models == ["a", "b"]
    assert method(report, "oracle").accuracy == 1.0
    # queries imported on the fly take the bank's query-text rule, whatever the default
    assert main(["bank", "import", "routerdc", bank, "--out", str(tmp_path / "raw"), "--query-text", "raw"]) == 0
    capsys.readouterr()
    assert main(["eval", "route", str(tmp_path / "raw"), "--queries", f"routerdc:{queries}", "--json", "--no-sweeps"]) == 0
    assert msgspec.json.decode(capsys.readouterr().out, type=RoutingReport).n_queries == 6


def test_scorer_rows_per_source_best_on_queries_and_ece_match_plain_computations(tmp_path):
    from smcs import Router
    from smcs.core.fit import fit_scorer

    rng = np.random.default_rng(12)
    truth = np.array([[0.9, 0.2, 0.5], [0.3, 0.8, 0.4], [0.5, 0.5, 0.9]])  # model x cluster
    e, topic = clusters(50, seed=12)
    qe, qtopic = clusters(15, seed=13)
    draw = lambda t: (rng.random((3, len(t))) < truth[:, t]).astype(np.int8)  # noqa: E731
    bank_cap, query_cap = draw(topic), draw(qtopic)
    query_sources = [("c0", "c1", "zz")[t] for t in qtopic]  # "zz": a source the bank lacks
    bank = make_bank(tmp_path / "b", e, bank_cap, sources=[f"c{t}" for t in topic])
    queries = make_bank(tmp_path / "q", qe, query_cap, sources=query_sources)
    # gamma = 0: the support set is the whole bank, so the router sees the same nearest rows as the evaluation
    policy = Policy(k=2, n_base=400, gamma=0.0)
    bank = bank.with_scorer(fit_scorer(bank, policy))
    report = evaluate_routing(bank, queries, policy, **SMALL)
    names = [m.name for m in report.methods]
    assert report.default_method in names
    assert report.default_method == ("smcs" if bank.scorer.default == "vote" else f"smcs-{bank.scorer.default}")
    assert "the bank's fit" in report.scorer_fit

    outcomes = query_cap.T  # Q x R, every outcome known
    rows = np.arange(len(outcomes))
    # per-source: the bank's best model on the query's source, the overall best where the bank lacks it
    overall = (bank_cap == 1).mean(axis=1)
    best = {f"c{t}": int(np.argmax((bank_cap[:, topic == t] == 1).mean(axis=1))) for t in range(3)}
    choice = np.array([best.get(s, int(np.argmax(overall))) for s in query_sources])
    assert method(report, "per-source").accuracy == pytest.approx(float((outcomes[rows, choice] == 1).mean()))
    # the best single model on the queries themselves: the best column mean
    on_queries = method(report, "best-single-on-queries")
    assert on_queries.accuracy == pytest.approx(float((outcomes == 1).mean(axis=0).max()))
    assert on_queries.params["model"] == f"m{int(np.argmax((outcomes == 1).mean(axis=0)))}"

    # ECE: only the rows with probabilities have one, in [0, 1], equal to the plain ECE of the router's p
    with_ece = {m.name: m.ece for m in report.methods if m.ece is not None}
    assert set(with_ece) == {"smcs", "smcs-source", "smcs-knn", "smcs-head"} == {c.method for c in report.calibration}
    assert method(report, "knn").ece is None and method(report, "per-source").ece is None
    for name, ece in with_ece.items():
        assert 0.0 <= ece <= 1.0
        scorer = "vote" if name == "smcs" else name.removeprefix("smcs-")
        router = Router(bank, Policy(k=2, n_base=400, gamma=0.0, scorer=scorer))
        p = np.array([router.route(q, seed=0).model_probabilities for q in np.asarray(queries.embeddings)]).ravel()
        y = (outcomes == 1).ravel().astype(np.float64)
        bins = np.minimum((p * 10).astype(int), 9)
        plain = sum(abs(p[bins == b].sum() - y[bins == b].sum()) for b in range(10)) / len(p)
        assert ece == pytest.approx(plain, abs=1e-6), name
        diagram = next(c for c in report.calibration if c.method == name)
        assert diagram.ece == ece and sum(b.count for b in diagram.bins) == len(p)
