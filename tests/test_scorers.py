"""smcs.core.scorers (pure functions) and fit.cover_orders, each against a plain loop written here from the
documented formula (DESIGN.md §3, the module docstrings), on small random inputs full of pads (−1 rows),
unknown outcomes (−1) and ties."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smcs.bank import Platt
from smcs.core.fit import cover_orders
from smcs.core.scorers import (
    EPS,
    Evidence,
    bank_stats,
    calibrated,
    covering_referencers,
    knn_probability,
    logit,
    neighbour_sources,
    sigmoid,
    source_probability,
    vote_probability,
)

SOME = settings(max_examples=60, deadline=None)
seeds = st.integers(0, 2**32 - 1)


# --- plain references ---------------------------------------------------------------------------------------


def ref_bank_stats(cap: np.ndarray, row_sources: list[str] | None, sources: list[str]):
    """(row_source, c_sr, m_sr, acc_r) by explicit loops."""
    n_models, n = cap.shape
    row_source = [sources.index(s) if row_sources is not None and s in sources else -1 for s in (row_sources or [None] * n)]
    correct = np.zeros((len(sources), n_models))
    known = np.zeros((len(sources), n_models))
    accuracy = np.empty(n_models)
    for r in range(n_models):
        c = k = 0
        for i in range(n):
            if cap[r, i] >= 0:
                k += 1
                c += cap[r, i] == 1
                if row_source[i] >= 0:
                    known[row_source[i], r] += 1
                    correct[row_source[i], r] += cap[r, i] == 1
        accuracy[r] = c / k if k else 0.5
    return np.array(row_source), correct, known, accuracy


def random_case(seed: int, *, n_models: int | None = None, n_sources: int | None = None):
    """A random bank (capability with unknowns, row sources some of which the fit does not know) and the
    evidence of a few questions over it (neighbours with −1 pads, arbitrary similarities)."""
    rng = np.random.default_rng(seed)
    n_models = n_models or int(rng.integers(1, 6))
    n = int(rng.integers(1, 25))
    n_sources = n_sources if n_sources is not None else int(rng.integers(1, 4))
    cap = rng.choice(np.array([-1, 0, 1], np.int8), size=(n_models, n), p=rng.dirichlet([1, 1, 1]))
    if rng.random() < 0.2:
        cap[rng.integers(n_models)] = -1  # a model with no known outcome at all
    sources = [f"s{s}" for s in range(n_sources)]
    row_sources = [f"s{s}" for s in rng.integers(0, n_sources + 1, n)]  # s{n_sources}: unknown to the fit
    q = int(rng.integers(1, 6))
    k = int(rng.integers(1, 8))
    neighbours = rng.integers(0, n, (q, k))
    pads = rng.random((q, k)) < 0.3
    neighbours[pads] = -1
    neighbours[rng.integers(q), :] = -1 if rng.random() < 0.3 else neighbours[0]  # sometimes a row of pads only
    sims = rng.random((q, k))
    sims[rng.random((q, k)) < 0.1] = 0.0
    evidence = Evidence(
        queries=rng.standard_normal((q, 4)),
        neighbours=neighbours,
        similarities=sims,  # pads carry garbage: the scorers must ignore them whatever their similarity
        votes=rng.random((q, n_models)) * 3,
        known=np.where(rng.random((q, n_models)) < 0.3, 0.0, rng.random((q, n_models)) * 3 + 0.01),
    )
    return rng, cap, row_sources, sources, evidence


# --- bank_stats ----------------------------------------------------------------------------------------------


@SOME
@given(seeds)
def test_bank_stats_counts_per_source_correct_and_known_and_accuracy(seed):
    _, cap, row_sources, sources, _ = random_case(seed)
    stats = bank_stats(cap, row_sources, sources)
    row_source, correct, known, accuracy = ref_bank_stats(cap, row_sources, sources)
    np.testing.assert_array_equal(stats.row_source, row_source)
    np.testing.assert_array_equal(stats.source_correct, correct)
    np.testing.assert_array_equal(stats.source_known, known)
    np.testing.assert_allclose(stats.accuracy, accuracy, rtol=0, atol=1e-15)
    unsourced = bank_stats(cap, None, sources)
    assert (unsourced.row_source == -1).all() and not unsourced.source_known.any()


# --- vote ----------------------------------------------------------------------------------------------------


@SOME
@given(seeds)
def test_vote_probability_is_votes_over_known_with_the_accuracy_fallback(seed):
    _, cap, row_sources, sources, evidence = random_case(seed)
    stats = bank_stats(cap, row_sources, sources)
    p = vote_probability(evidence, stats)
    q_total, n_models = evidence.votes.shape
    assert p.shape == (q_total, n_models)
    for q in range(q_total):
        for r in range(n_models):
            if evidence.known[q, r] > 0:
                assert p[q, r] == pytest.approx(evidence.votes[q, r] / evidence.known[q, r], rel=1e-12)
            else:
                assert p[q, r] == stats.accuracy[r]


def test_vote_probability_by_hand():
    # two models: the first known on weight 2 of which 1.5 correct; the second known on nothing → its accuracy
    stats = bank_stats(np.array([[1, 0, 1, 1], [-1, -1, 0, 1]], np.int8), None, [])
    evidence = Evidence(np.zeros((1, 2)), np.zeros((1, 0), np.int64), np.zeros((1, 0)), np.array([[1.5, 0.0]]), np.array([[2.0, 0.0]]))
    np.testing.assert_allclose(vote_probability(evidence, stats), [[0.75, 0.5]])


# --- source --------------------------------------------------------------------------------------------------


def ref_neighbour_sources(evidence: Evidence, row_source: np.ndarray, n_sources: int, k: int) -> np.ndarray:
    out = np.zeros((evidence.neighbours.shape[0], n_sources))
    for q in range(out.shape[0]):
        for j in range(min(k, evidence.neighbours.shape[1])):
            row = evidence.neighbours[q, j]
            if row < 0 or row_source[row] < 0:
                continue
            out[q, row_source[row]] += evidence.similarities[q, j]
        total = out[q].sum()
        if total > 0:
            out[q] /= total
    return out


@SOME
@given(seeds, st.integers(1, 9))
def test_neighbour_sources_is_the_similarity_weighted_source_share_of_the_k_nearest(seed, k):
    _, cap, row_sources, sources, evidence = random_case(seed)
    stats = bank_stats(cap, row_sources, sources)
    got = neighbour_sources(evidence, stats, k)
    expected = ref_neighbour_sources(evidence, stats.row_source, len(sources), k)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    sums = got.sum(axis=1)
    assert np.all((np.abs(sums - 1) < 1e-12) | (sums == 0))


def test_neighbour_sources_ignores_pads_and_unknown_sources_by_hand():
    # rows 0, 1 of source 0, row 2 of source 1, row 3 of a source the fit does not know
    stats = bank_stats(np.ones((1, 4), np.int8), ["a", "a", "b", "zz"], ["a", "b"])
    evidence = Evidence(np.zeros((3, 2)), np.array([[0, 2, 3, -1], [3, -1, -1, -1], [-1, 1, 2, 0]]),
                        np.array([[0.6, 0.2, 0.9, 0.9], [0.9, 0.9, 0.9, 0.9], [0.9, 0.3, 0.1, 0.5]]),
                        np.zeros((3, 1)), np.zeros((3, 1)))
    np.testing.assert_allclose(neighbour_sources(evidence, stats, 4), [[0.75, 0.25], [0, 0], [0.8 / 0.9, 0.1 / 0.9]])
    np.testing.assert_allclose(neighbour_sources(evidence, stats, 1), [[1, 0], [0, 0], [0, 0]])


@SOME
@given(seeds, st.floats(0.01, 50.0))
def test_source_probability_mixes_the_shrunk_per_source_rates(seed, smoothing):
    rng, cap, row_sources, sources, evidence = random_case(seed)
    stats = bank_stats(cap, row_sources, sources)
    pi = rng.dirichlet(np.ones(len(sources)), size=evidence.neighbours.shape[0])
    pi[rng.random(len(pi)) < 0.3] = 0.0  # no evidence of a source: the model's accuracy
    got = source_probability(stats, pi, smoothing)
    _, correct, known, accuracy = ref_bank_stats(cap, row_sources, sources)
    for q in range(len(pi)):
        for r in range(cap.shape[0]):
            if pi[q].sum() == 0:
                expected = accuracy[r]
            else:
                expected = sum(pi[q, s] * (correct[s, r] + smoothing * accuracy[r]) / (known[s, r] + smoothing) for s in range(len(sources)))
            assert got[q, r] == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert np.all((got >= 0) & (got <= 1 + 1e-12))


def test_source_probability_by_hand():
    # model 0: 3 of 4 right on source a, 0 of 2 on b, accuracy 1/2; a = 2
    cap = np.array([[1, 1, 1, 0, 0, 0]], np.int8)
    stats = bank_stats(cap, ["a", "a", "a", "a", "b", "b"], ["a", "b"])
    got = source_probability(stats, np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0]]), 2.0)
    rate_a, rate_b = (3 + 2 * 0.5) / (4 + 2), (0 + 2 * 0.5) / (2 + 2)
    np.testing.assert_allclose(got[:, 0], [rate_a, rate_b, (rate_a + rate_b) / 2, 0.5])


# --- knn -----------------------------------------------------------------------------------------------------


def ref_knn(evidence: Evidence, cap: np.ndarray, k: int, alpha: float, prior: np.ndarray) -> np.ndarray:
    q_total, n_models = prior.shape
    out = np.empty((q_total, n_models))
    for q in range(q_total):
        for r in range(n_models):
            correct = known = 0.0
            for j in range(min(k, evidence.neighbours.shape[1])):
                row = evidence.neighbours[q, j]
                if row < 0 or cap[r, row] < 0:
                    continue
                known += evidence.similarities[q, j]
                correct += evidence.similarities[q, j] * (cap[r, row] == 1)
            out[q, r] = (correct + alpha * prior[q, r]) / (known + alpha)
    return out


@SOME
@given(seeds, st.integers(1, 9), st.floats(0.1, 30.0))
def test_knn_probability_against_a_loop(seed, k, alpha):
    rng, cap, row_sources, sources, evidence = random_case(seed)
    stats = bank_stats(cap, row_sources, sources)
    prior = rng.random(evidence.votes.shape)
    got = knn_probability(evidence, stats, k, alpha, prior)
    np.testing.assert_allclose(got, ref_knn(evidence, cap, k, alpha, prior), rtol=1e-12, atol=1e-12)
    assert np.all((got >= 0) & (got <= 1 + 1e-12))


def test_knn_probability_without_evidence_is_the_prior_and_with_much_is_the_neighbours():
    cap = np.array([[1, 1, 1], [0, 0, -1]], np.int8)
    stats = bank_stats(cap, None, [])
    prior = np.array([[0.3, 0.6]])
    pads = Evidence(np.zeros((1, 1)), np.full((1, 3), -1), np.ones((1, 3)), np.zeros((1, 2)), np.zeros((1, 2)))
    np.testing.assert_allclose(knn_probability(pads, stats, 3, 2.0, prior), prior)
    near = Evidence(np.zeros((1, 1)), np.array([[0, 1, 2]]), np.full((1, 3), 1e6), np.zeros((1, 2)), np.zeros((1, 2)))
    np.testing.assert_allclose(knn_probability(near, stats, 3, 1.0, prior), [[1.0, 0.0]], atol=1e-5)


# --- covering referencers ------------------------------------------------------------------------------------


@st.composite
def cover_cases(draw):
    n_models = draw(st.integers(1, 7))
    p = np.array(draw(st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.7, 1.0]) | st.floats(0, 1), min_size=n_models, max_size=n_models)))
    cover = []
    for f in range(n_models):
        others = [m for m in range(n_models) if m != f]
        cover.append(draw(st.permutations(others)).copy()[: draw(st.integers(0, len(others)))])
    allowed = None
    if draw(st.booleans()):
        chosen = sorted(draw(st.sets(st.integers(0, n_models - 1), min_size=1)))
        allowed = np.array(draw(st.permutations(chosen)), dtype=np.int64)  # in any order
    k = draw(st.integers(1, n_models if allowed is None else len(allowed)))
    return p, cover, k, allowed


def ref_covering(p, cover, k, allowed):
    candidates = list(range(len(p))) if allowed is None else sorted(allowed.tolist())
    by_p = sorted(candidates, key=lambda m: (-p[m], m))
    chosen = [by_p[0]]
    for m in cover[by_p[0]]:
        if len(chosen) < k and m in candidates and m not in chosen:
            chosen.append(m)
    chosen += [m for m in by_p if m not in chosen]
    return chosen[:k]


@settings(max_examples=150, deadline=None)
@given(cover_cases())
def test_covering_referencers(case):
    p, cover, k, allowed = case
    got = covering_referencers(p, cover, k, allowed).tolist()
    candidates = list(range(len(p))) if allowed is None else allowed.tolist()
    assert len(got) == k and len(set(got)) == k
    assert set(got) <= set(candidates)  # the restriction is respected
    best = max(p[m] for m in candidates)
    assert got[0] == min(m for m in candidates if p[m] == best)  # argmax p, ties to the lower index
    assert got == ref_covering(p, cover, k, allowed)
    if k == len(candidates):
        assert sorted(got) == sorted(candidates)


def test_covering_referencers_follows_the_cover_order_then_fills_by_p():
    p = np.array([0.1, 0.9, 0.5, 0.8, 0.3])
    cover = [[], [4, 0], [], [], []]
    assert covering_referencers(p, cover, 3, None).tolist() == [1, 4, 0]
    assert covering_referencers(p, cover, 4, None).tolist() == [1, 4, 0, 3]  # cover order short: by p
    assert covering_referencers(p, cover, 5, None).tolist() == [1, 4, 0, 3, 2]
    assert covering_referencers(p, [[]] * 5, 3, None).tolist() == [1, 3, 2]  # no cover order: by p alone
    # model 4 is not allowed: skipped in the cover order, and the first is the best allowed one
    assert covering_referencers(p, cover, 3, np.array([0, 1, 2, 3])).tolist() == [1, 0, 3]
    assert covering_referencers(p, [[], [], [], [4, 0], []], 2, np.array([0, 2, 3])).tolist() == [3, 0]


def test_covering_referencers_ties_go_to_the_lower_index():
    p = np.array([0.4, 0.7, 0.7, 0.7])
    assert covering_referencers(p, [[]] * 4, 2, None).tolist() == [1, 2]
    assert covering_referencers(p, [[]] * 4, 2, np.array([3, 2])).tolist() == [2, 3]


# --- Platt, sigmoid, logit -----------------------------------------------------------------------------------


@SOME
@given(st.floats(0.05, 8.0), st.floats(-4.0, 4.0), seeds)
def test_platt_calibration_is_monotone_in_p(a, b, seed):
    p = np.sort(np.random.default_rng(seed).random(200))
    p = np.concatenate([[0.0, EPS / 2], p, [1 - EPS / 2, 1.0]])
    up = calibrated(p, Platt(a=a, b=b))
    assert np.all(np.diff(up) >= 0) and np.all((up >= 0) & (up <= 1))
    down = calibrated(p, Platt(a=-a, b=b))
    assert np.all(np.diff(down) <= 0)
    np.testing.assert_allclose(calibrated(p, Platt(a=0.0, b=b)), np.full(p.shape, 1 / (1 + np.exp(-b))), rtol=1e-12)


def test_platt_identity_pair_leaves_p_unchanged_inside_the_clip():
    p = np.linspace(EPS, 1 - EPS, 101)
    np.testing.assert_allclose(calibrated(p, Platt(a=1.0, b=0.0)), p, rtol=1e-9, atol=1e-12)


@SOME
@given(st.floats(EPS, 1 - EPS))
def test_sigmoid_inverts_logit(p):
    assert sigmoid(logit(p)) == pytest.approx(p, rel=1e-9, abs=1e-13)


@SOME
@given(st.floats(-9.0, 9.0))
def test_logit_inverts_sigmoid_inside_the_clip(z):
    assert logit(sigmoid(z)) == pytest.approx(z, abs=1e-7)
    assert sigmoid(z) == pytest.approx(1 / (1 + np.exp(-z)), rel=1e-12)


def test_sigmoid_and_logit_at_the_extremes(recwarn):
    np.testing.assert_array_equal(sigmoid(np.array([-1e4, 0.0, 1e4])), [0.0, 0.5, 1.0])
    bound = np.log((1 - EPS) / EPS)
    np.testing.assert_allclose(logit(np.array([0.0, 1.0, -3.0, 7.0])), [-bound, bound, -bound, bound])
    assert not [w for w in recwarn.list if issubclass(w.category, RuntimeWarning)]


# --- the fit's cover orders ----------------------------------------------------------------------------------


def ref_cover_orders(cap: np.ndarray, row_source: np.ndarray, n_sources: int, depth: int) -> list[list[list[int]]]:
    """Greedy by definition: the next model is known correct on most rows of the source that no chosen model
    is known correct on; ties to the model more accurate on the source (exact fractions), then the lower index."""
    n_models = cap.shape[0]
    out = []
    for s in range(n_sources):
        rows = [i for i in range(cap.shape[1]) if row_source[i] == s]
        right = [{i for i in rows if cap[m, i] == 1} for m in range(n_models)]
        known = [sum(cap[m, i] >= 0 for i in rows) for m in range(n_models)]
        accuracy = [Fraction(len(right[m]), max(known[m], 1)) for m in range(n_models)]
        per_first = []
        for first in range(n_models):
            chosen, covered = [first], set(right[first])
            for _ in range(min(depth, n_models - 1)):
                pick = max((m for m in range(n_models) if m not in chosen),
                           key=lambda m: (len(right[m] - covered), accuracy[m], -m))
                chosen.append(pick)
                covered |= right[pick]
            per_first.append(chosen[1:])
        out.append(per_first)
    return out


@settings(max_examples=150, deadline=None)
@given(seeds, st.integers(0, 8))
def test_cover_orders_against_a_brute_force_greedy(seed, depth):
    rng = np.random.default_rng(seed)
    n_models, n, n_sources = int(rng.integers(1, 6)), int(rng.integers(0, 14)), int(rng.integers(1, 4))
    cap = rng.choice(np.array([-1, 0, 1], np.int8), size=(n_models, n), p=rng.dirichlet([1, 1, 1]))
    row_source = rng.integers(-1, n_sources, n)  # −1: a row of no fitted source, never counted
    got = cover_orders(cap, row_source, n_sources, depth)
    assert got == ref_cover_orders(cap, row_source, n_sources, depth)


def test_cover_orders_by_hand():
    # one source, 4 rows. m0 right on rows 0, 1; m1 right on 0, 1, 2 (of 3 known); m2 right on 3; m3 right on 2, 3
    cap = np.array([[1, 1, 0, 0], [1, 1, 1, -1], [0, 0, 0, 1], [0, 0, 1, 1]], np.int8)
    orders = cover_orders(cap, np.zeros(4, np.int64), 1, 3)
    # after m0 (rows 0, 1): m3 adds 2 rows; then m1 and m2 add none, m1 is the more accurate (1 against 1/4)
    assert orders[0][0] == [3, 1, 2]
    # after m2 (row 3): m1 adds 3 (rows 0, 1, 2); then nothing is left and m0, m3 tie at accuracy 1/2: lower index
    assert orders[0][2] == [1, 0, 3]
    assert cover_orders(cap, np.zeros(4, np.int64), 1, 1)[0][0] == [3]
    assert cover_orders(cap, np.zeros(4, np.int64), 1, 0) == [[[], [], [], []]]
