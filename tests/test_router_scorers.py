"""The Router with a fitted bank: "vote" is still the paper's decision bit for bit, the other scorers'
probabilities are well formed, "auto" follows the fit, out-of-bank queries fall back to bank accuracy, and
the cover order only rearranges the referencers after the most probable model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smcs import Bank, Policy, Router
from smcs.bank import ModelInfo, Question
from smcs.core.fit import fit_scorer
from smcs.core.scorers import EPS, SCORERS
from smcs.kernels import reference
from smcs.synthetic import clustered_bank, queries_near

SOME = settings(max_examples=25, deadline=None)
CASES = [(300, 16, 3, 1), (500, 32, 6, 2), (400, 24, 5, 3)]  # N, d, R, seed


def create(path, embeddings, capability, topics) -> Bank:
    return Bank.create(
        path,
        embeddings=embeddings,
        capability=capability,
        questions=[Question(id=f"q{i}", text=f"question {i}", source=f"t{t}") for i, t in enumerate(topics)],
        models=[ModelInfo(name=f"m{r}") for r in range(capability.shape[0])],
    )


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"N{c[0]}-d{c[1]}-R{c[2]}")
def banks(request, tmp_path_factory) -> tuple[Bank, Bank]:
    """(a random bank without a fit, the same data with one)."""
    n, dim, n_models, seed = request.param
    embeddings, capability, topics = clustered_bank(n, dim, n_models, seed=seed)
    root = tmp_path_factory.mktemp("banks")
    plain = create(root / "plain", embeddings, capability, topics)
    fitted = create(root / "fitted", embeddings, capability, topics)
    return plain, fitted.with_scorer(fit_scorer(fitted))


def plain_accuracy(capability: np.ndarray) -> np.ndarray:
    cap = np.asarray(capability)
    known = (cap >= 0).sum(axis=1)
    return np.where(known > 0, (cap == 1).sum(axis=1) / np.maximum(known, 1), 0.5)


def platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return 1.0 / (1.0 + np.exp(-(a * np.log(q / (1 - q)) + b)))


def top_k_names(bank: Bank, scores, k: int) -> list[str]:
    return [bank.model_names[r] for r in reference.top_k(np.asarray(scores, dtype=np.float64), k)]


@st.composite
def calls(draw, n_models: int):
    k = draw(st.integers(1, n_models))
    policy = Policy(
        k=k,
        k_drop=draw(st.integers(0, k - 1)),
        n=draw(st.integers(1, 5)),
        n_base=draw(st.sampled_from([1, 5, 40, 400])),
        gamma=draw(st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0])),
    )
    return draw(st.integers(0, 2**31)), policy, draw(st.integers(0, 2**32 - 1))


# --- vote: the paper's decision, fit or no fit ----------------------------------------------------------------


def test_vote_on_a_fitted_bank_is_the_unfitted_decision_and_the_reference(banks):
    plain, fitted = banks
    e, cap = np.asarray(plain.embeddings), np.asarray(plain.capability)
    accuracy = plain_accuracy(cap)
    vote_platt = fitted.scorer.calibration["vote"]

    @SOME
    @given(calls(plain.n_models))
    def check(call):
        query_seed, policy, seed = call
        query = queries_near(e, 1, seed=query_seed)[0]
        without = Router(plain, policy).route(query, seed=seed)
        with_fit = Router(fitted, Policy(**{**_fields(policy), "scorer": "vote"})).route(query, seed=seed)
        assert without.scorer == with_fit.scorer == "vote"
        for field in ("referencers", "votes", "support_rows", "support_similarities", "subsets", "aggregator", "seed"):
            assert getattr(with_fit, field) == getattr(without, field), field
        assert not without.out_of_bank
        # against the spec: Eqs (2)-(5) in plain numpy
        rows, sims, votes = reference.route(e, query, cap, policy.n_base, policy.gamma)
        threshold = policy.gamma * reference.kth_largest(reference.similarities(e, query), policy.n_base)
        if threshold == 0 or np.all(np.abs(sims.astype(np.float64) - threshold) > 1e-5):  # no row in doubt
            # the same rows; their order may differ where two similarities are a float32 bit apart (the kernel's
            # dot products and numpy's round differently), which the kernels' tests on exact banks pin down
            assert sorted(without.support_rows) == sorted(rows.tolist())
            assert without.referencers == top_k_names(plain, votes, policy.k)
            np.testing.assert_allclose(without.votes, np.sort(votes)[::-1][: policy.k], rtol=1e-5, atol=1e-9)
            # the unfitted probabilities are the normalised vote; the fitted ones its Platt calibration
            known = (cap[:, rows] >= 0).astype(np.float64) @ sims.astype(np.float64)
            normalised = np.where(known > 0, votes / np.where(known > 0, known, 1), accuracy)
            np.testing.assert_allclose(without.model_probabilities, normalised, rtol=1e-4, atol=1e-6)
            if not with_fit.out_of_bank:
                np.testing.assert_allclose(with_fit.model_probabilities, platt(normalised, vote_platt.a, vote_platt.b), rtol=1e-4, atol=1e-6)

    check()


def _fields(policy: Policy) -> dict:
    return {name: getattr(policy, name) for name in policy.__struct_fields__}


# --- every scorer: well-formed probabilities, "auto", cover ---------------------------------------------------


def test_probabilities_are_aligned_with_the_referencers_and_cover_only_reorders_after_the_first(banks):
    _, fitted = banks
    e = np.asarray(fitted.embeddings)
    names = fitted.model_names

    @SOME
    @given(calls(fitted.n_models), st.sampled_from(SCORERS))
    def check(call, scorer):
        query_seed, policy, seed = call
        query = queries_near(e, 1, seed=query_seed)[0]
        router = Router(fitted, Policy(**{**_fields(policy), "scorer": scorer}))
        covered = router.route(query, seed=seed)
        by_p = router.route(query, seed=seed, policy=Policy(**{**_fields(policy), "scorer": scorer, "cover": False}))
        for decision in (covered, by_p):
            assert decision.scorer == scorer
            p = np.array(decision.model_probabilities)
            assert p.shape == (fitted.n_models,) and np.all((p >= 0) & (p <= 1))
            assert len(decision.referencers) == policy.k == len(set(decision.referencers))
            assert decision.probabilities == [decision.model_probabilities[names.index(r)] for r in decision.referencers]
        assert covered.model_probabilities == by_p.model_probabilities
        p = np.array(by_p.model_probabilities)
        if scorer == "vote":  # the paper's ranking, whatever the cover flag
            assert covered.referencers == by_p.referencers
            assert by_p.votes == sorted(by_p.votes, reverse=True)
        else:
            assert by_p.referencers == top_k_names(fitted, p, policy.k)  # by p, ties to the lower index
            assert covered.referencers[0] == by_p.referencers[0] == names[int(np.argmax(p))]
            if policy.k == fitted.n_models:
                assert sorted(covered.referencers) == sorted(names)

    check()


def test_auto_is_the_fits_default_and_vote_without_a_fit(banks):
    plain, fitted = banks
    default = fitted.scorer.default
    for query in queries_near(np.asarray(fitted.embeddings), 5, seed=4):
        auto = Router(fitted, Policy(k=2)).route(query, seed=1)
        assert auto.scorer == default
        assert auto == Router(fitted, Policy(k=2, scorer=default)).route(query, seed=1)
        assert Router(plain, Policy(k=2)).route(query, seed=1).scorer == "vote"
    assert Router(fitted, Policy(k=2)).scorer_of() == default
    assert Router(plain, Policy(k=2)).scorer_of(Policy(scorer="knn")) == "knn"


def test_allowed_models_restrict_every_scorer(banks):
    _, fitted = banks
    allowed = list(fitted.model_names[1::2])
    k = len(allowed)
    for scorer in SCORERS:
        for cover in (True, False):
            router = Router(fitted, Policy(k=k, k_drop=0, scorer=scorer, cover=cover))
            for query in queries_near(np.asarray(fitted.embeddings), 3, seed=6):
                decision = router.route(query, seed=0, allowed_models=allowed)
                assert sorted(decision.referencers) == sorted(allowed)
                p = np.array(decision.model_probabilities)
                best = max(allowed, key=lambda m: (p[fitted.model_names.index(m)], -fitted.model_names.index(m)))
                if scorer != "vote":
                    assert decision.referencers[0] == best


# --- scorers that need a fit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scorer", ["source", "knn", "head"])
def test_a_scorer_that_needs_a_fit_is_refused_on_an_unfitted_bank(banks, scorer):
    plain, _ = banks
    with pytest.raises(ValueError, match="smcs bank fit"):
        Router(plain, Policy(k=2, scorer=scorer))
    router = Router(plain, Policy(k=2))
    with pytest.raises(ValueError, match="smcs bank fit"):
        router.route(plain.embeddings[0], seed=0, policy=Policy(k=2, scorer=scorer))
    assert router.fitted is None


# --- out of bank -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_bank(tmp_path_factory) -> Bank:
    """A fitted bank whose rows all have a zero last coordinate: e_{d-1} is orthogonal to every row."""
    embeddings, capability, topics = clustered_bank(400, 23, 5, seed=8)
    embeddings = np.hstack([embeddings, np.zeros((len(embeddings), 1), np.float32)])
    bank = create(tmp_path_factory.mktemp("flat") / "b", embeddings, capability, topics)
    return bank.with_scorer(fit_scorer(bank))


def test_a_query_far_from_every_bank_row_is_out_of_bank_and_ranked_by_accuracy(flat_bank):
    e, cap = np.asarray(flat_bank.embeddings), np.asarray(flat_bank.capability)
    accuracy = plain_accuracy(cap)
    threshold = flat_bank.scorer.out_of_bank
    assert threshold > 0.2
    orthogonal = np.eye(24)[23]
    far = orthogonal + 0.1 * e[0]  # nearest similarity about 0.1
    for query in (orthogonal, far):
        unit = query / np.linalg.norm(query)
        assert np.max(e @ unit) < threshold - 0.05
        for scorer in SCORERS:
            decision = Router(flat_bank, Policy(k=3, scorer=scorer)).route(query, seed=0)
            assert decision.out_of_bank, scorer
            np.testing.assert_allclose(decision.model_probabilities, accuracy, rtol=1e-12)
            if scorer == "vote":  # the paper's decision stands
                assert decision.referencers == top_k_names(flat_bank, decision_votes(flat_bank, unit), 3)
            else:
                assert decision.referencers == top_k_names(flat_bank, accuracy, 3)


def decision_votes(bank: Bank, query: np.ndarray) -> np.ndarray:
    policy = Policy()
    return reference.route(np.asarray(bank.embeddings), query.astype(np.float32), np.asarray(bank.capability), policy.n_base, policy.gamma)[2]


def test_out_of_bank_is_the_nearest_similarity_below_the_fits_threshold(flat_bank):
    e = np.asarray(flat_bank.embeddings)
    threshold = flat_bank.scorer.out_of_bank
    router = Router(flat_bank, Policy(k=2, scorer="knn"))
    rng = np.random.default_rng(3)
    # queries from near the bank to far from it: mix a bank row with the orthogonal direction
    flagged = []
    for weight in np.linspace(0.0, 3.0, 40):
        query = queries_near(e, 1, seed=int(rng.integers(1 << 30)))[0] + weight * np.eye(24)[23]
        unit = (query / np.linalg.norm(query)).astype(np.float32)
        nearest = float(np.max(np.maximum(e @ unit, 0)))
        if abs(nearest - threshold) < 1e-4:
            continue
        decision = router.route(query, seed=0)
        assert decision.out_of_bank == (nearest < threshold), (weight, nearest, threshold)
        flagged.append(decision.out_of_bank)
    assert any(flagged) and not all(flagged)


def test_an_unfitted_bank_never_says_out_of_bank(tmp_path):
    embeddings, capability, topics = clustered_bank(100, 8, 3, seed=1)
    embeddings = np.hstack([embeddings, np.zeros((100, 1), np.float32)])
    bank = create(tmp_path / "b", embeddings, capability, topics)
    decision = Router(bank, Policy(k=2)).route(np.eye(9)[8], seed=0)
    assert not decision.out_of_bank and decision.scorer == "vote"


# --- the router and the evaluation score a query alike -----------------------------------------------------


def evaluation_probabilities(bank: Bank, queries: np.ndarray, policy: Policy, scorer: str) -> np.ndarray:
    """p as ``smcs eval`` and the fit compute it: over the k nearest bank rows (``fit.batch_evidence``)."""
    from smcs.core import scorers
    from smcs.core.fit import batch_evidence

    fitted = bank.scorer
    stats = scorers.bank_stats(np.asarray(bank.capability), [q.source for q in bank.questions], fitted.sources)
    width = max(fitted.knn_k, fitted.source_k)
    evidence = batch_evidence(bank.embeddings, np.asarray(bank.capability), queries, width, policy.n_base, policy.gamma)
    return scorers.probabilities(evidence, scorers.Scoring.of(stats, fitted), scorer)[0]


@pytest.mark.parametrize("scorer", SCORERS)
def test_the_router_scores_like_the_evaluation_under_the_default_support_set(banks, scorer):
    _, fitted = banks
    policy = Policy(k=2, scorer=scorer)
    queries = queries_near(np.asarray(fitted.embeddings), 8, seed=12)
    router = Router(fitted, policy)
    got = np.array([router.route(q, seed=0).model_probabilities for q in queries])
    np.testing.assert_allclose(got, evaluation_probabilities(fitted, queries, policy, scorer), rtol=1e-5, atol=1e-7)


def test_the_router_scores_knn_over_the_k_nearest_rows_even_with_a_small_support_set(banks):
    _, fitted = banks
    policy = Policy(k=2, n_base=1, gamma=1.0, scorer="knn")
    queries = queries_near(np.asarray(fitted.embeddings), 8, seed=12)
    router = Router(fitted, policy)
    assert all(len(router.route(q, seed=0).support_rows) < fitted.scorer.knn_k for q in queries)
    got = np.array([router.route(q, seed=0).model_probabilities for q in queries])
    np.testing.assert_allclose(got, evaluation_probabilities(fitted, queries, policy, "knn"), rtol=1e-5, atol=1e-7)
