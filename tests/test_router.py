"""smcs.Router and Policy: decisions follow the reference equations, replay exactly, and reject bad input."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from smcs import Bank, Policy, RouteCall, RouteDecision, Router, kernels
from smcs.bank import ModelInfo, Question
from smcs.core.decision import enc_hook
from smcs.core.router import _unit_query
from smcs.kernels import reference
from smcs.synthetic import clustered_bank, queries_near
from support.banks import clustered_test_bank


def _make_bank(path, n=600, dim=32, n_models=9, seed=0) -> Bank:
    return clustered_test_bank(path, n, dim, n_models, seed)


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Bank:
    return _make_bank(tmp_path_factory.mktemp("bank") / "b")


def test_decision_follows_the_reference_equations(bank):
    policy = Policy(k=5, n_base=40, gamma=0.9, k_drop=2, n=6)
    router = Router(bank, policy)
    for query in queries_near(np.asarray(bank.embeddings), 20, seed=3):
        decision = router.route(query, seed=11)
        rows, sims, votes = reference.route(
            np.asarray(bank.embeddings), query, np.asarray(bank.capability), policy.n_base, policy.gamma
        )
        threshold = policy.gamma * reference.kth_largest(reference.similarities(np.asarray(bank.embeddings), query), policy.n_base)
        clear = np.abs(sims.astype(np.float64) - threshold) > 1e-5
        assert set(rows[clear].tolist()) <= set(decision.support_rows)
        if clear.all():  # no row sits on the threshold: the whole decision must match the spec exactly
            assert decision.support_rows == rows.tolist()
            expected = [bank.model_names[r] for r in reference.top_k(votes, policy.k)]
            assert decision.referencers == expected
            np.testing.assert_allclose(decision.votes, np.sort(votes)[::-1][: policy.k], rtol=1e-5)
        assert decision.support_similarities == sorted(decision.support_similarities, reverse=True)


def test_subsets_keep_k_minus_k_drop_referencers_in_prior_order(bank):
    policy = Policy(k=6, k_drop=2, n=10, n_base=50)
    decision = Router(bank, policy).route(bank.embeddings[7], seed=5)
    assert len(decision.subsets) == 10
    rank = {name: i for i, name in enumerate(decision.referencers)}
    for subset in decision.subsets:
        assert len(subset) == 4
        assert len(set(subset)) == 4
        assert [rank[name] for name in subset] == sorted(rank[name] for name in subset)


def test_same_seed_replays_and_a_reported_random_seed_replays(bank):
    router = Router(bank, Policy(k=5, n_base=50))
    query = queries_near(np.asarray(bank.embeddings), 1, seed=9)[0]
    assert router.route(query, seed=42) == router.route(query, seed=42)
    first = router.route(query)
    assert router.route(query, seed=first.seed) == first
    seen = {tuple(map(tuple, router.route(query, seed=s).subsets)) for s in range(20)}
    assert len(seen) > 1, "different seeds never changed the exploration subsets"


@pytest.mark.parametrize(
    "policy",
    [Policy(k=5, n_base=40), Policy(k=9, k_drop=8, n=7, gamma=0.5), Policy(k=1, k_drop=0, n=1), Policy(k=3, n=2, threads=2)],
)
def test_the_votes_decide_in_one_compiled_call_as_the_general_path_does(tmp_path, policy):
    """A route the votes alone decide runs in one compiled call (``kernels.route_decide``); naming every
    model in ``allowed_models`` takes the general path, which must give the same decision, for a model
    never evaluated (no known weight: its probability is the fallback accuracy) too. ``route_many`` decides through the same path."""
    embeddings, capability, _ = clustered_bank(700, 32, 9, seed=4)
    capability[2] = -1
    bank = Bank.create(
        tmp_path / "b", embeddings=embeddings, capability=capability,
        questions=[Question(id=f"q{i}", text=f"question {i}") for i in range(700)], models=[ModelInfo(name=f"m{r}") for r in range(9)],
    )
    router = Router(bank, policy)
    everyone = list(bank.model_names)
    queries = queries_near(np.asarray(bank.embeddings), 12, seed=6)
    batch = router.route_many([RouteCall(q, seed=2**40 + i) for i, q in enumerate(queries)])
    for i, query in enumerate(queries):
        fast = router.route(query, seed=2**40 + i)
        general = router.route(query, seed=2**40 + i, allowed_models=everyone)
        assert msgspec.json.encode(fast, enc_hook=enc_hook) == msgspec.json.encode(general, enc_hook=enc_hook)
        assert msgspec.json.encode(batch[i], enc_hook=enc_hook) == msgspec.json.encode(fast, enc_hook=enc_hook)


def test_decision_reports_bank_version_and_roundtrips_as_json(bank):
    decision = Router(bank, Policy(k=3, n_base=10)).route(bank.embeddings[0], seed=1)
    assert decision.bank_version == bank.version
    assert msgspec.json.decode(msgspec.json.encode(decision, enc_hook=enc_hook), type=RouteDecision) == decision
    assert msgspec.convert(decision.to_builtins(), RouteDecision) == decision
    with pytest.raises(TypeError, match="SupportValues"):  # the support columns need the hook: loud, not empty
        msgspec.json.encode(decision)


def test_query_norm_does_not_change_the_decision(bank):
    router = Router(bank, Policy(k=4, n_base=30))
    query = queries_near(np.asarray(bank.embeddings), 1, seed=4)[0]
    unit, scaled = router.route(query, seed=2), router.route(query * 7.5, seed=2)
    assert (unit.referencers, unit.support_rows, unit.subsets) == (scaled.referencers, scaled.support_rows, scaled.subsets)
    np.testing.assert_allclose(unit.votes, scaled.votes, rtol=1e-5)


def test_default_aggregator_is_the_most_accurate_model(tmp_path):
    embeddings = np.eye(4, 8, dtype=np.float32)
    capability = np.array(
        [[1, 0, 0, -1], [1, 1, 0, 0], [1, 1, -1, -1], [0, 0, 0, 0]], dtype=np.int8
    )  # accuracies 1/3, 1/2, 1 (of 2 known), 0
    bank = Bank.create(
        tmp_path / "b",
        embeddings=embeddings,
        capability=capability,
        questions=[Question(id=str(i), text=str(i)) for i in range(4)],
        models=[ModelInfo(name=n) for n in ("a", "b", "c", "d")],
    )
    assert Router(bank, Policy(k=2, k_drop=0)).route(embeddings[0], seed=0).aggregator == "c"
    assert Router(bank, Policy(k=2, k_drop=0, aggregator="d")).route(embeddings[0], seed=0).aggregator == "d"


def test_hand_computed_route(tmp_path):
    # 4 questions in 2-D; the query is e0, so Ŝ = [1, 0.8, 0, 0.6] (the negative cosine clips to 0).
    embeddings = np.array([[1, 0], [0.8, 0.6], [-1, 0], [0.6, 0.8]], dtype=np.float32)
    capability = np.array([[1, 0, 1, 0], [0, 1, 1, 1], [1, 1, -1, -1]], dtype=np.int8)
    bank = Bank.create(
        tmp_path / "b",
        embeddings=embeddings,
        capability=capability,
        questions=[Question(id=str(i), text=str(i)) for i in range(4)],
        models=[ModelInfo(name=n) for n in ("x", "y", "z")],
    )
    # N_base = 2 → 2nd largest 0.8; γ = 0.7 → threshold 0.56 → I = {0, 1, 3}.
    decision = Router(bank, Policy(k=3, n_base=2, gamma=0.7, k_drop=0, n=1)).route(np.array([1.0, 0.0]), seed=0)
    assert decision.support_rows == [0, 1, 3]
    # V_x = 1, V_y = 0.8 + 0.6 = 1.4, V_z = 1 + 0.8 = 1.8
    assert decision.referencers == ["z", "y", "x"]
    np.testing.assert_allclose(decision.votes, [1.8, 1.4, 1.0], rtol=1e-6)
    assert decision.subsets == [["z", "y", "x"]]


def test_allowed_models_pick_the_top_votes_among_them_and_default_the_aggregator(tmp_path):
    # Ŝ = [1, 0.8] for query e0; votes: a = 1, b = 1.8, c = 1.8, d = 0.8 → among {a, c, d}: c, a
    embeddings = np.array([[1, 0], [0.8, 0.6]], dtype=np.float32)
    capability = np.array([[1, 0], [1, 1], [1, 1], [0, 1]], dtype=np.int8)
    bank = Bank.create(
        tmp_path / "b",
        embeddings=embeddings,
        capability=capability,
        questions=[Question(id=str(i), text=str(i)) for i in range(2)],
        models=[ModelInfo(name=n) for n in ("a", "b", "c", "d")],
    )
    router = Router(bank, Policy(k=2, n_base=2, gamma=0.5, k_drop=0, n=1))
    assert router.route(embeddings[0], seed=0).referencers == ["b", "c"]  # the tie goes to the lower index
    restricted = router.route(embeddings[0], seed=0, allowed_models=["d", "c", "a"])
    assert restricted.referencers == ["c", "a"]
    # accuracies a 1/2, b 1, c 1, d 1/2: the bank's best is b, the best allowed is c
    assert router.route(embeddings[0], seed=0).aggregator == "b"
    assert restricted.aggregator == "c"
    with pytest.raises(ValueError, match="allowed_models names unknown models: 'zz'"):
        router.route(embeddings[0], seed=0, allowed_models=["a", "zz"])
    with pytest.raises(ValueError, match="k=2 exceeds the 1 allowed_models"):
        router.route(embeddings[0], seed=0, allowed_models=["a"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"n_base": 0}, "n_base"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"k_drop": -1}, "k_drop"),
        ({"k": 3, "k_drop": 3}, "k_drop"),
        ({"n": 0}, "n"),
        ({"lam": float("nan")}, "lam"),
        ({"aggregator": ""}, "aggregator"),
        ({"threads": 0}, "threads"),
    ],
)
def test_invalid_policy_is_rejected_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Policy(**kwargs)


def test_policy_decoding_rejects_unknown_and_bad_fields():
    assert msgspec.json.decode(b'{"k": 3, "gamma": 0.9}', type=Policy) == Policy(k=3, gamma=0.9)
    with pytest.raises(msgspec.ValidationError, match="gama"):
        msgspec.json.decode(b'{"gama": 0.9}', type=Policy)
    with pytest.raises(msgspec.ValidationError, match="gamma"):
        msgspec.json.decode(b'{"gamma": 2}', type=Policy)


def test_policy_that_does_not_fit_the_bank_is_rejected_or_clamped(bank):
    with pytest.raises(ValueError, match="aggregator 'nope'"):
        Router(bank, Policy(k=3, aggregator="nope"))
    clamped = Router(bank, Policy(k=10))  # K above the bank's models routes with K clamped (issue 22)
    assert clamped.policy.k == bank.n_models and clamped.route(bank.embeddings[0], seed=0).k_clamped_from == 10
    router = Router(bank, Policy(k=3))
    decision = router.route(bank.embeddings[0], policy=Policy(k=12), seed=0)
    assert decision.k_clamped_from == 12 and len(decision.referencers) == bank.n_models


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        (np.zeros(31), "dimension 31"),
        (np.zeros((2, 32)), "1-D"),
        (np.full(32, np.nan), "NaN"),
        (np.zeros(32), "zero vector"),
        (["a"] * 32, "numbers"),
    ],
)
def test_bad_embedding_is_rejected(bank, embedding, message):
    with pytest.raises(ValueError, match=message):
        Router(bank, Policy(k=3)).route(embedding, seed=0)


def test_the_query_is_divided_by_numpys_norm_bit_for_bit_and_an_overflowing_one_keeps_its_direction(bank):
    """A route's unit query is ``(q / np.linalg.norm(q)).astype(float32)`` exactly, at any scale; an embedding
    of finite values whose q·q overflows routes as its copy scaled by its largest magnitude (it used to route
    as a zero query)."""
    rng = np.random.default_rng(3)
    for scale in (1e-150, 1e-3, 1.0, 1e3, 1e150):
        q = rng.standard_normal(bank.dim) * scale
        np.testing.assert_array_equal(_unit_query(q, bank.dim), (q / np.linalg.norm(q)).astype(np.float32))
    router = Router(bank, Policy(k=3))
    huge = rng.standard_normal(bank.dim) * 1e300
    with np.errstate(over="ignore"):
        decision = router.route(huge, seed=1)
    assert decision == router.route(huge / np.abs(huge).max(), seed=1)
    assert decision.support_rows and any(decision.votes)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_bad_seed_is_rejected(bank, seed):
    with pytest.raises(ValueError, match="seed"):
        Router(bank, Policy(k=3)).route(bank.embeddings[0], seed=seed)


def test_router_keeps_its_snapshot_while_the_bank_grows(tmp_path):
    bank = _make_bank(tmp_path / "b", n=200, n_models=4)
    router = Router(bank, Policy(k=3, n_base=20))
    before = router.route(bank.embeddings[3], seed=1)
    extra, _, _ = clustered_bank(50, bank.dim, 4, seed=99)
    newer = bank.append_questions(extra, [Question(id=f"new{i}", text="x") for i in range(50)])
    assert newer.version != bank.version
    assert router.route(bank.embeddings[3], seed=1) == before
    assert Router(newer, Policy(k=3, n_base=20)).route(bank.embeddings[3], seed=1).bank_version == newer.version


# --- the quantized policy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        Policy(k=5, n_base=40, gamma=0.9, k_drop=2, n=6),
        Policy(k=3, n_base=1, gamma=1.0),
        Policy(k=4, n_base=10, gamma=0.5),
        Policy(k=4, n_base=600, gamma=0.95),
        Policy(k=9, n_base=5, gamma=0.0, k_drop=0),
        Policy(k=4, n_base=20, threads=2),
    ],
)
def test_quantized_policy_gives_the_exact_decision(bank, policy):
    exact = Router(bank, policy)
    quantized = Router(bank, msgspec.structs.replace(policy, quantized=True))
    embeddings = np.asarray(bank.embeddings)
    near, opposite = queries_near(embeddings, 15, seed=21), -queries_near(embeddings, 3, seed=22)
    queries = np.concatenate([near, opposite, embeddings[:3]])
    for seed, query in enumerate(queries):
        assert quantized.route(query, seed=seed) == exact.route(query, seed=seed)


def test_quantized_decisions_match_on_a_bank_large_enough_to_prune(tmp_path):
    bank = _make_bank(tmp_path / "b", n=20000, dim=48, n_models=6, seed=3)
    exact, quantized = Router(bank, Policy(k=4, n_base=50)), Router(bank, Policy(k=4, n_base=50, quantized=True))
    for seed, query in enumerate(queries_near(np.asarray(bank.embeddings), 10, seed=5)):
        assert quantized.route(query, seed=seed) == exact.route(query, seed=seed)


def test_quantized_copy_is_built_at_warm_up_only_for_a_quantized_router(bank):
    assert Router(bank, Policy(k=3, quantized=True))._quantized is not None
    router = Router(bank, Policy(k=3))
    assert router._quantized is None
    query = bank.embeddings[5]
    override = router.route(query, seed=3, policy=Policy(k=3, quantized=True))  # per-call override: built now
    assert router._quantized is not None
    assert override == router.route(query, seed=3)


def test_quantized_copy_is_built_once_under_concurrent_first_use(bank, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    calls = []
    real = kernels.quantize_rows

    def counting(embeddings, *args, **kwargs):
        calls.append(1)
        return real(embeddings, *args, **kwargs)

    monkeypatch.setattr(kernels, "quantize_rows", counting)
    router = Router(bank, Policy(k=3))
    policy = Policy(k=3, quantized=True)
    queries = queries_near(np.asarray(bank.embeddings), 16, seed=8)
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda q: router.route(q, seed=1, policy=policy), queries))
    assert len(calls) == 1
    assert decisions == [router.route(q, seed=1) for q in queries]


def test_quantized_policy_is_validated_and_decoded():
    with pytest.raises(ValueError, match="quantized"):
        Policy(quantized=1)
    with pytest.raises(ValueError, match="quantized"):
        Policy(quantized="yes")
    assert msgspec.json.decode(b'{"quantized": true}', type=Policy) == Policy(quantized=True)
    assert Policy().quantized is False
    with pytest.raises(msgspec.ValidationError, match="quantized"):
        msgspec.json.decode(b'{"quantized": 1}', type=Policy)


def test_by_accuracy_ranks_known_accuracy_first_and_keeps_ties_in_order():
    from smcs.core import by_accuracy

    accuracy = {"a": 0.5, "b": float("nan"), "c": 0.9, "d": 0.5}
    assert by_accuracy(accuracy, ["a", "b", "c", "d", "e"]) == ["c", "a", "d", "b", "e"]
    assert by_accuracy(accuracy, ["d", "a"]) == ["d", "a"] and by_accuracy(accuracy, []) == []


def test_route_many_gives_each_call_what_route_gives_it(bank):
    """Mixed calls in one batch: default and own policies, a quantized one (routed apart), allowed models,
    and bad calls, whose errors stay in their own slots."""
    router = Router(bank, Policy(k=4, n_base=30))
    queries = queries_near(np.asarray(bank.embeddings), 6, seed=8)
    calls = [
        RouteCall(queries[0], seed=1),
        RouteCall(queries[1], seed=2, policy=Policy(k=3, n_base=80, gamma=0.8, n=5)),
        RouteCall(queries[2], seed=3, policy=Policy(k=4, quantized=True)),
        RouteCall(queries[3], seed=4, allowed_models=["m8", "m1", "m5", "m2"]),
        RouteCall(queries[4], seed=5, allowed_models=["nobody"]),
        RouteCall(np.zeros(bank.dim), seed=6),
        RouteCall(queries[0], seed=1),
        RouteCall(queries[5], seed=7, policy=Policy(k=2, threads=1)),
    ]
    got = router.route_many(calls)
    assert len(got) == len(calls)
    for call, result in zip(calls, got):
        try:
            want = router.route(call.embedding, seed=call.seed, policy=call.policy, allowed_models=call.allowed_models)
        except ValueError as exc:
            assert isinstance(result, ValueError) and str(result) == str(exc)
        else:
            assert result == want
    assert got[0] == got[6]
    assert router.route_many([]) == []


def test_quantized_calls_of_a_batch_share_one_bound_pass(bank, monkeypatch):
    """Quantized calls in a batch beside exact ones: one ``route_quantized_many`` for the quantized, one
    ``route_many`` for the rest, and each call the decision its own ``route`` gives."""
    router = Router(bank, Policy(k=4, n_base=30, quantized=True))
    queries = queries_near(np.asarray(bank.embeddings), 5, seed=9)
    calls = [
        RouteCall(queries[0], seed=1),
        RouteCall(queries[1], seed=2, policy=Policy(k=3, n_base=80, gamma=0.8, quantized=True)),
        RouteCall(queries[2], seed=3, policy=Policy(k=4)),
        RouteCall(queries[3], seed=4, allowed_models=["m8", "m1", "m5", "m2"]),
        RouteCall(queries[4], seed=5, policy=Policy(k=2, threads=1)),
    ]
    passes = []

    def counted(name):
        real = getattr(kernels, name)

        def run(*args, **kwargs):
            passes.append((name, len(args[-3])))  # args[-3]: n_base, one per query of the batch
            return real(*args, **kwargs)

        return run

    for name in ("route_many", "route_quantized_many"):
        monkeypatch.setattr(kernels, name, counted(name))
    got = router.route_many(calls)
    assert sorted(passes) == [("route_many", 2), ("route_quantized_many", 3)]
    monkeypatch.undo()
    for call, result in zip(calls, got):
        assert result == router.route(call.embedding, seed=call.seed, policy=call.policy, allowed_models=call.allowed_models)


def test_route_many_with_a_fresh_seed_reports_a_replayable_one(bank):
    router = Router(bank, Policy(k=3, n_base=20))
    first, second = router.route_many([RouteCall(bank.embeddings[3]), RouteCall(bank.embeddings[4])])
    assert first.seed != second.seed
    assert router.route(bank.embeddings[3], seed=first.seed) == first
