"""Retrieval kernels, Eqs (2)–(5): similarities, support set, prior vote, top-K and the fused route.

The numpy twins in ``smcs.kernels.reference`` are the spec; the hand-computed examples below are checked
against numbers worked out in this file, not produced by any code.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from kernel_strategies import (
    FAST,
    FEW,
    MEDIUM,
    assert_route_close,
    assert_route_equal,
    assert_support_order,
    dyadic_banks,
    gammas,
    nonneg_sims,
    normal_bank,
    normal_banks,
    vote_vectors,
)

from smcs import kernels
from smcs.kernels import reference, retrieval

THREADS = (1, 2, None)

# --- a 4-row bank small enough to work out by hand -------------------------------------------------------
# Every row is a unit vector with entries in {0, ±0.5, ±1}, so all dot products are exact.
#   q  = ( .5,  .5,  .5,  .5)
#   e0 = ( .5,  .5,  .5, -.5)   e0·q =  0.5
#   e1 = ( .5,  .5,  .5,  .5)   e1·q =  1.0
#   e2 = (-.5, -.5, -.5,  .5)   e2·q = -0.5  -> clipped to 0
#   e3 = (  1,   0,   0,   0)   e3·q =  0.5
# so Ŝ = (0.5, 1.0, 0.0, 0.5).
HAND_E = np.array(
    [[0.5, 0.5, 0.5, -0.5], [0.5, 0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, 0.5], [1.0, 0.0, 0.0, 0.0]],
    dtype=np.float32,
)
HAND_Q = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
HAND_S = np.array([0.5, 1.0, 0.0, 0.5], dtype=np.float32)
# capability, R = 3 models x N = 4 questions (1 correct, 0 wrong, -1 not evaluated)
HAND_M = np.array([[1, 0, 1, 1], [0, 1, -1, -1], [1, 1, 1, -1]], dtype=np.int8)


# --- hand-computed examples -------------------------------------------------------------------------------


def test_hand_similarities_clip_negative_to_zero():
    np.testing.assert_array_equal(kernels.similarities(HAND_E, HAND_Q), HAND_S)


@pytest.mark.parametrize("threads", THREADS)
def test_hand_route_nbase2_gamma095(threads):
    # 2nd largest Ŝ = 0.5, threshold 0.95·0.5 = 0.475 -> I = {1, 0, 3} (1.0 first, then the 0.5 tie by row).
    # V0 = 0·1.0 + 1·0.5 + 1·0.5 = 1.0 ; V1 = 1·1.0 + 0·0.5 + (−1 → nothing) = 1.0 ; V2 = 1.0 + 0.5 = 1.5
    rows, sims, votes = kernels.route(HAND_E, HAND_Q, HAND_M, n_base=2, gamma=0.95, threads=threads)
    np.testing.assert_array_equal(rows, [1, 0, 3])
    np.testing.assert_array_equal(sims, np.array([1.0, 0.5, 0.5], np.float32))
    np.testing.assert_array_equal(votes, [1.0, 1.0, 1.5])
    # argtop_2: model 2 (1.5), then the tie 1.0/1.0 goes to the lower index 0
    np.testing.assert_array_equal(kernels.top_k(votes, 2), [2, 0])
    np.testing.assert_array_equal(kernels.top_k(votes, 3), [2, 0, 1])


@pytest.mark.parametrize("threads", THREADS)
def test_hand_route_nbase1_keeps_only_near_max(threads):
    # max Ŝ = 1.0, threshold 0.95 -> I = {1}; V = (M_01, M_11, M_21)·1.0 = (0, 1, 1)
    rows, sims, votes = kernels.route(HAND_E, HAND_Q, HAND_M, n_base=1, gamma=0.95, threads=threads)
    np.testing.assert_array_equal(rows, [1])
    np.testing.assert_array_equal(sims, [1.0])
    np.testing.assert_array_equal(votes, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(kernels.top_k(votes, 1), [1])  # tie 1 vs 2 -> lower index


def test_hand_support_threshold_is_inclusive():
    # N_base = 3, γ = 1: threshold = 3rd largest = 0.5, and Ŝ ≥ 0.5 (not >) keeps both 0.5 rows
    rows, sims = kernels.support_set(HAND_S, 3, 1.0)
    np.testing.assert_array_equal(rows, [1, 0, 3])
    np.testing.assert_array_equal(sims, [1.0, 0.5, 0.5])


@pytest.mark.parametrize("threads", THREADS)
def test_hand_route_nbase_above_n_threshold_is_min(threads):
    # N_base = 10 > N = 4 clamps to the 4th largest = min = 0 -> every row; row 2 adds 0 to every vote
    rows, sims, votes = kernels.route(HAND_E, HAND_Q, HAND_M, n_base=10, gamma=1.0, threads=threads)
    np.testing.assert_array_equal(rows, [1, 0, 3, 2])
    np.testing.assert_array_equal(sims, [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_array_equal(votes, [1.0, 1.0, 1.5])


def test_nbase_above_n_uses_nth_largest():
    s = np.array([0.25, 1.0, 0.75], np.float32)
    # N_base = 5 > N = 3 -> max_3 = 0.25, γ = 1 -> all three rows, most similar first
    rows, sims = kernels.support_set(s, 5, 1.0)
    np.testing.assert_array_equal(rows, [1, 2, 0])
    np.testing.assert_array_equal(sims, [1.0, 0.75, 0.25])
    # γ = 0.5: threshold 0.125, still everything (a clamp to a larger rank would drop row 0)
    np.testing.assert_array_equal(kernels.support_set(s, 4, 0.5)[0], [1, 2, 0])


def test_nbase_one_uses_maximum():
    s = np.array([0.25, 1.0, 0.75], np.float32)
    np.testing.assert_array_equal(kernels.support_set(s, 1, 0.75)[0], [1, 2])  # threshold 0.75
    np.testing.assert_array_equal(kernels.support_set(s, 1, 0.8)[0], [1])  # threshold 0.8
    np.testing.assert_array_equal(kernels.support_set(s, 1, 1.0)[0], [1])


def test_nbase_two_uses_second_largest():
    s = np.array([0.25, 1.0, 0.75, 0.5], np.float32)
    # max_2 = 0.75; γ = 0.5 -> threshold 0.375 -> rows 1, 2, 3
    np.testing.assert_array_equal(kernels.support_set(s, 2, 0.5)[0], [1, 2, 3])


def test_all_equal_similarities_keep_row_order():
    s = np.full(6, 0.5, np.float32)
    for n_base in (1, 3, 6, 9):
        rows, sims = kernels.support_set(s, n_base, 0.95)
        np.testing.assert_array_equal(rows, np.arange(6))
        np.testing.assert_array_equal(sims, s)


@pytest.mark.parametrize("threads", THREADS)
def test_route_identical_rows_ties_by_lower_row(threads):
    e = np.tile(np.array([[0.5, 0.5, 0.5, 0.5]], np.float32), (5, 1))
    m = np.array([[1, 0, 1, 0, 1]], np.int8)
    rows, sims, votes = kernels.route(e, HAND_Q, m, n_base=2, gamma=0.95, threads=threads)
    np.testing.assert_array_equal(rows, np.arange(5))
    np.testing.assert_array_equal(sims, np.ones(5, np.float32))
    np.testing.assert_array_equal(votes, [3.0])


def test_support_equal_sims_ordered_by_row_among_others():
    s = np.array([0.5, 0.75, 0.5, 0.75, 0.5], np.float32)
    rows, _ = kernels.support_set(s, 5, 1.0)  # threshold = min = 0.5: everything
    np.testing.assert_array_equal(rows, [1, 3, 0, 2, 4])


def test_top_k_vote_ties_go_to_lower_index():
    v = np.array([1.0, 2.0, 2.0, 1.0, 2.0])
    np.testing.assert_array_equal(kernels.top_k(v, 1), [1])
    np.testing.assert_array_equal(kernels.top_k(v, 3), [1, 2, 4])
    np.testing.assert_array_equal(kernels.top_k(v, 4), [1, 2, 4, 0])


def test_top_k_with_k_equal_r_is_full_ranking():
    v = np.array([0.5, 3.0, 0.0, 3.0, 1.5])
    np.testing.assert_array_equal(kernels.top_k(v, 5), [1, 3, 4, 0, 2])


def test_top_k_all_zero_votes_is_identity_order():
    np.testing.assert_array_equal(kernels.top_k(np.zeros(4), 4), [0, 1, 2, 3])


@pytest.mark.parametrize("threads", THREADS)
def test_negative_sims_clip_and_zero_threshold_admits_every_row(threads):
    # q = (1, 0): raw S = (1, −1, 0, −0.5) -> Ŝ = (1, 0, 0, 0). The 2nd largest Ŝ is 0, so the threshold is
    # 0 and every row is in I, but the clipped rows add 0 to the votes.
    e = np.array([[1, 0], [-1, 0], [0, -1], [-0.5, -0.5]], np.float32)
    q = np.array([1, 0], np.float32)
    m = np.array([[0, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]], np.int8)
    np.testing.assert_array_equal(kernels.similarities(e, q), [1.0, 0.0, 0.0, 0.0])
    rows, sims, votes = kernels.route(e, q, m, n_base=2, gamma=0.95, threads=threads)
    np.testing.assert_array_equal(rows, [0, 1, 2, 3])
    np.testing.assert_array_equal(sims, [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(votes, [0.0, 1.0, 1.0])


def test_gamma_zero_admits_every_row():
    s = np.array([0.0, 0.9, 0.1, 0.4], np.float32)
    rows, _ = kernels.support_set(s, 1, 0.0)
    np.testing.assert_array_equal(rows, [1, 3, 2, 0])


def test_unknown_entries_contribute_nothing_to_votes():
    rows = np.array([1, 0, 3], np.int64)
    sims = np.array([1.0, 0.5, 0.25], np.float32)
    m = np.array(
        [
            [-1, -1, -1, -1],  # nothing known -> 0
            [-1, 1, -1, -1],  # only row 1 (Ŝ = 1.0) counts -> 1.0
            [1, -1, 1, 1],  # rows 0 (Ŝ = 0.5) and 3 (Ŝ = 0.25); row 2 is not in I -> 0.75
            [0, 1, 0, 0],  # model 1 with 0 instead of −1 -> the same 1.0
        ],
        np.int8,
    )
    np.testing.assert_array_equal(kernels.prior_vote(m, rows, sims), [0.0, 1.0, 0.75, 1.0])


@pytest.mark.parametrize("threads", THREADS)
def test_single_model(threads):
    m = np.array([[1, 1, 0, 1]], np.int8)
    rows, sims, votes = kernels.route(HAND_E, HAND_Q, m, n_base=2, gamma=0.95, threads=threads)
    np.testing.assert_array_equal(rows, [1, 0, 3])
    np.testing.assert_array_equal(votes, [1.0 + 0.5 + 0.5])
    np.testing.assert_array_equal(kernels.top_k(votes, 1), [0])


@pytest.mark.parametrize("threads", (1, 2, 3, None))
def test_empty_bank_gives_empty_support_and_zero_votes(threads):
    e = np.empty((0, 4), np.float32)
    m = np.empty((3, 0), np.int8)
    rows, sims, votes = kernels.route(e, HAND_Q, m, n_base=400, gamma=0.95, threads=threads)
    assert rows.shape == (0,) and rows.dtype == np.int64
    assert sims.shape == (0,) and sims.dtype == np.float32
    np.testing.assert_array_equal(votes, np.zeros(3))
    assert votes.dtype == np.float64
    assert kernels.similarities(e, HAND_Q).shape == (0,)
    r, s = kernels.support_set(np.empty(0, np.float32), 1, 0.5)
    assert r.shape == (0,) and s.shape == (0,)
    np.testing.assert_array_equal(kernels.prior_vote(m, r, s), np.zeros(3))


def test_support_set_sims_far_above_one():
    # Values ≥ 1 share the last histogram bin; huge ones must not overflow the bin index.
    s = np.array([3e38, 1e20, 0.5, 2e15, 0.0, 1.0], np.float32)
    np.testing.assert_array_equal(kernels.support_set(s, 1, 0.5)[0], [0])
    np.testing.assert_array_equal(kernels.support_set(s, 3, 1.0)[0], [0, 1, 3])
    np.testing.assert_array_equal(kernels.support_set(s, 5, 1.0)[0], [0, 1, 3, 5, 2])
    np.testing.assert_array_equal(kernels.support_set(s, 6, 1.0)[0], [0, 1, 3, 5, 2, 4])


def test_support_set_rank_inside_one_histogram_bin():
    # 0.5 + k·2^-20 for k = 0..9 all fall in one 1/4096 bin; the 3rd largest is 0.5 + 7·2^-20.
    s = (0.5 + np.arange(10) * 2.0**-20).astype(np.float32)
    rows, sims = kernels.support_set(s[::-1].copy(), 3, 1.0)  # row i holds 0.5 + (9 − i)·2^-20
    np.testing.assert_array_equal(rows, [0, 1, 2])


def test_route_float64_bank_is_converted():
    m = HAND_M
    got = kernels.route(HAND_E.astype(np.float64), HAND_Q.astype(np.float64), m, 2, 0.95)
    assert_route_equal(got, kernels.route(HAND_E, HAND_Q, m, 2, 0.95))


# --- kernel == reference on random inputs -----------------------------------------------------------------


@FAST
@given(dyadic_banks())
def test_similarities_equal_reference_on_dyadic(case):
    got = kernels.similarities(case.embeddings, case.query)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, reference.similarities(case.embeddings, case.query))


@FAST
@given(normal_banks())
def test_similarities_close_to_reference_on_normal(case):
    got = kernels.similarities(case.embeddings, case.query)
    want = reference.similarities(case.embeddings, case.query)
    assert got.dtype == np.float32 and np.all(got >= 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@MEDIUM
@given(nonneg_sims(), st.integers(1, 80), gammas)
def test_support_set_equals_reference(s, n_base, gamma):
    rows, sims = kernels.support_set(s, n_base, gamma)
    want_rows, want_sims = reference.support_set(s, n_base, gamma)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(sims, want_sims)
    assert_support_order(rows, sims)



def _candidate_share(s: np.ndarray, n_base: int, gamma: float) -> float:
    """The share of ``s`` at or above fl(γ·lo), lo the lower edge of the bin holding the N_base-th largest:
    the candidates ``retrieval._support`` gathers in one pass below ``SPARSE_MAX_SHARE``."""
    k = min(n_base, s.size)
    lo = np.floor(np.sort(s)[::-1][k - 1].astype(np.float64) * retrieval.N_BINS) / retrieval.N_BINS
    return float(np.mean(s.astype(np.float64) >= gamma * min(lo, (retrieval.N_BINS - 1) / retrieval.N_BINS)))


@MEDIUM
@given(st.data())
def test_support_set_on_both_sides_of_the_sparse_share(data):
    """Eq (3)'s support set equals the reference's whether its candidates are few (the one-pass gather that
    drops the candidates below τ) or many (the branch-free passes): spread and narrow bands of Ŝ, values
    repeated around τ (ties inside the rank bin), zeros, values ≥ 1 in the last bin, any N_base and γ."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(1, 3000))
    width = data.draw(st.sampled_from([0.5, 0.05, 2.0**-12, 0.0]))
    s = np.clip(0.6 + width * rng.standard_normal(n), 0.0, None)
    if data.draw(st.booleans()):  # a few distinct values: ties at τ and a crowded rank bin
        s = np.round(s * 64) / 64
    s[rng.random(n) < data.draw(st.sampled_from([0.0, 0.2]))] = 0.0
    s = s.astype(np.float32)
    n_base = data.draw(st.one_of(st.integers(1, 40), st.integers(1, n + 5)))  # small ones: few candidates
    gamma = data.draw(st.sampled_from([0.0, 0.5, 0.95, 1.0]))
    rows, sims = kernels.support_set(s, n_base, gamma)
    want_rows, want_sims = reference.support_set(s, n_base, gamma)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(sims, want_sims)


def test_support_set_takes_both_paths():
    """The two regimes of ``retrieval._support`` are both reached, and both give the reference's set: a wide
    spread with a small N_base (few candidates) and a narrow band (most rows candidates)."""
    rng = np.random.default_rng(7)
    wide = np.clip(0.3 + 0.2 * rng.standard_normal(20000), 0, 1).astype(np.float32)
    narrow = np.clip(0.75 + 0.005 * rng.standard_normal(20000), 0, 1).astype(np.float32)
    tied = np.round(wide * 256) / np.float32(256)  # τ = γ·max_400 with γ = 1 is a value many rows share
    cases = ((wide, 0.95, True), (wide, 1.0, True), (tied, 1.0, True), (narrow, 0.95, False), (narrow, 0.0, False))
    for s, gamma, few in cases:
        assert (_candidate_share(s, 400, gamma) < retrieval.SPARSE_MAX_SHARE) is few
        got = kernels.support_set(s, 400, gamma)
        want = reference.support_set(s, 400, gamma)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert np.sum(tied >= kernels.support_set(tied, 400, 1.0)[1].min()) > 400  # the ties at τ are in it

@FAST
@given(dyadic_banks(min_n=1))
def test_prior_vote_equals_reference_on_dyadic(case):
    s = reference.similarities(case.embeddings, case.query)
    rows, sims = reference.support_set(s, case.n_base, case.gamma)
    got = kernels.prior_vote(case.capability, rows, sims)
    np.testing.assert_array_equal(got, reference.prior_vote(case.capability, rows, sims))


@FAST
@given(st.data())
def test_prior_vote_close_to_reference_on_random(data):
    r = data.draw(st.integers(1, 8))
    n = data.draw(st.integers(1, 40))
    m = data.draw(arrays(np.int8, (r, n), elements=st.integers(-1, 1)))
    rows = data.draw(arrays(np.int64, st.integers(0, n), elements=st.integers(0, n - 1), unique=True))
    sims = data.draw(arrays(np.float32, rows.shape, elements=st.floats(0.0, 1.0, width=32)))
    np.testing.assert_allclose(
        kernels.prior_vote(m, rows, sims), reference.prior_vote(m, rows, sims), rtol=1e-12, atol=1e-12
    )


@MEDIUM
@given(st.data())
def test_top_k_equals_reference(data):
    v = data.draw(vote_vectors(1, 12))
    k = data.draw(st.integers(1, v.shape[0]))
    got = kernels.top_k(v, k)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, reference.top_k(v, k))


@FAST
@given(dyadic_banks())
def test_route_equals_reference_on_dyadic_all_thread_counts(case):
    want = reference.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma)
    for threads in (1, 2, 3, None):
        got = kernels.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma, threads)
        assert_route_equal(got, want)
    votes = want[2]
    for k in {1, votes.shape[0]}:
        np.testing.assert_array_equal(kernels.top_k(votes, k), reference.top_k(votes, k))


@FEW
@given(dyadic_banks(max_n=4000, rng_only=True))
def test_route_equals_reference_on_large_dyadic(case):
    want = reference.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma)
    for threads in (1, 2):
        got = kernels.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma, threads)
        assert_route_equal(got, want)


@FAST
@given(normal_banks())
def test_route_close_to_reference_on_normal(case):
    got = kernels.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma, threads=1)
    assert_route_close(case, got)


@FAST
@given(normal_banks())
def test_route_thread_counts_bit_identical_on_normal(case):
    args = (case.embeddings, case.query, case.capability, case.n_base, case.gamma)
    serial = kernels.route(*args, threads=1)
    for threads in (2, 3, None):
        assert_route_equal(kernels.route(*args, threads=threads), serial)


@FAST
@given(normal_banks())
def test_route_sims_bit_identical_to_similarities_kernel(case):
    rows, sims, _ = kernels.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma)
    np.testing.assert_array_equal(sims, kernels.similarities(case.embeddings, case.query)[rows])


@FAST
@given(normal_banks(max_d=300), st.randoms(use_true_random=False))
def test_similarity_of_a_row_does_not_depend_on_its_position(case, rnd):
    """The scans pair each row with another half a chunk away (or with itself when one is left over):
    whichever row it is paired with and whichever side of the pair it is on, its Ŝ is the same bits."""
    perm = np.array(rnd.sample(range(case.embeddings.shape[0]), case.embeddings.shape[0]), dtype=np.int64)
    sims = kernels.similarities(case.embeddings, case.query)
    moved = kernels.similarities(np.ascontiguousarray(case.embeddings[perm]), case.query)
    np.testing.assert_array_equal(moved, sims[perm])
    if case.embeddings.shape[0]:
        alone = kernels.similarities(case.embeddings[-1:], case.query)
        np.testing.assert_array_equal(alone, sims[-1:])


@pytest.mark.parametrize("seed", [0, 1])
def test_route_default_threads_goes_parallel_on_large_bank(seed):
    case = normal_bank(seed, n=30_000, d=64, r=6, n_base=400, gamma=0.95)
    assert case.embeddings.nbytes >= retrieval.PARALLEL_MIN_BYTES  # so threads=None takes the parallel path
    args = (case.embeddings, case.query, case.capability, case.n_base, case.gamma)
    default = kernels.route(*args)
    assert_route_equal(default, kernels.route(*args, threads=1))
    assert_route_equal(kernels.route(*args, threads=2), default)
    assert_route_close(case, default)
    assert default[0].size >= 1


# --- bad input --------------------------------------------------------------------------------------------


def _route(**overrides):
    args = dict(embeddings=HAND_E, query=HAND_Q, capability=HAND_M, n_base=2, gamma=0.95)
    args.update(overrides)
    return kernels.route(**args)


def test_route_rejects_1d_embeddings():
    with pytest.raises(ValueError, match="embeddings"):
        _route(embeddings=HAND_E[0])


def test_route_rejects_capability_column_mismatch():
    with pytest.raises(ValueError, match="capability"):
        _route(capability=HAND_M[:, :3])


def test_route_rejects_1d_capability():
    with pytest.raises(ValueError, match="capability"):
        _route(capability=HAND_M[0])


def test_route_rejects_out_of_range_wide_capability():
    with pytest.raises(ValueError, match="capability"):
        _route(capability=HAND_M.astype(np.int16) * 2)


def test_route_rejects_2d_query():
    with pytest.raises(ValueError, match="query"):
        _route(query=HAND_Q[None, :])


def test_route_rejects_query_dimension_mismatch():
    with pytest.raises(ValueError, match="query has dimension 3"):
        _route(query=HAND_Q[:3])


def test_similarities_rejects_query_dimension_mismatch():
    with pytest.raises(ValueError, match="query has dimension 5"):
        kernels.similarities(HAND_E, np.ones(5, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_route_rejects_non_finite_query(bad):
    q = HAND_Q.copy()
    q[2] = bad
    with pytest.raises(ValueError, match="query contains NaN or infinity"):
        _route(query=q)
    with pytest.raises(ValueError, match="query contains NaN or infinity"):
        kernels.similarities(HAND_E, q)


@pytest.mark.parametrize("n_base", [0, -3, 1.5, True])
def test_route_rejects_bad_n_base(n_base):
    with pytest.raises(ValueError, match="n_base"):
        _route(n_base=n_base)
    with pytest.raises(ValueError, match="n_base"):
        kernels.support_set(HAND_S, n_base, 0.95)


@pytest.mark.parametrize("gamma", [-0.01, 1.01, np.nan, "high"])
def test_route_rejects_gamma_outside_unit_interval(gamma):
    with pytest.raises(ValueError, match="gamma"):
        _route(gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        kernels.support_set(HAND_S, 2, gamma)


def test_route_rejects_zero_threads():
    with pytest.raises(ValueError, match="threads"):
        _route(threads=0)


def test_top_k_rejects_k_above_r():
    with pytest.raises(ValueError, match=r"k=4 exceeds the number of models \(3\)"):
        kernels.top_k(np.array([1.0, 2.0, 3.0]), 4)


def test_top_k_rejects_k_zero():
    with pytest.raises(ValueError, match=r"\bk must be >= 1"):
        kernels.top_k(np.array([1.0, 2.0, 3.0]), 0)


def test_top_k_rejects_nan_votes():
    with pytest.raises(ValueError, match="votes"):
        kernels.top_k(np.array([1.0, np.nan]), 1)


def test_support_set_rejects_negative_sims():
    with pytest.raises(ValueError, match="sims must be non-negative"):
        kernels.support_set(np.array([0.5, -0.1], np.float32), 1, 0.5)


def test_support_set_rejects_nan_sims():
    with pytest.raises(ValueError, match="sims"):
        kernels.support_set(np.array([0.5, np.nan], np.float32), 1, 0.5)


def test_support_set_rejects_2d_sims():
    with pytest.raises(ValueError, match="sims"):
        kernels.support_set(HAND_S[None, :], 1, 0.5)


def test_prior_vote_rejects_rows_out_of_range():
    with pytest.raises(ValueError, match="rows"):
        kernels.prior_vote(HAND_M, np.array([0, 4]), np.array([0.5, 0.5], np.float32))
    with pytest.raises(ValueError, match="rows"):
        kernels.prior_vote(HAND_M, np.array([-1]), np.array([0.5], np.float32))


def test_prior_vote_rejects_sims_length_mismatch():
    with pytest.raises(ValueError, match="sims"):
        kernels.prior_vote(HAND_M, np.array([0, 1]), np.array([0.5], np.float32))


def test_prior_vote_rejects_1d_capability():
    with pytest.raises(ValueError, match="capability"):
        kernels.prior_vote(HAND_M[0], np.array([0]), np.array([0.5], np.float32))


def test_openmp_workers_sleep_between_kernels_unless_the_user_says_otherwise():
    """Importing smcs.kernels leaves the environment alone; configure_threads (which Router, serve and the
    CLI call before the first parallel kernel) sets OMP_WAIT_POLICY=PASSIVE, keeping a choice made in the
    environment."""
    import os
    import subprocess
    import sys

    code = (
        "import os, smcs.kernels; before = os.environ.get('OMP_WAIT_POLICY'); "
        "smcs.kernels.configure_threads(); print(before, os.environ['OMP_WAIT_POLICY'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    chosen = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True, check=True)
    assert (default.stdout.strip(), chosen.stdout.strip()) == ("None PASSIVE", "ACTIVE ACTIVE")


def test_support_set_orders_negative_zero_as_zero_by_row():
    """−0.0 and +0.0 are the same similarity: ties among them go to the lower row, as for any tie."""
    s = np.array([0.0, -0.0, 0.25, -0.0, 0.0, 0.25], dtype=np.float32)
    rows, sims = kernels.support_set(s, n_base=6, gamma=1.0)
    np.testing.assert_array_equal(rows, [2, 5, 0, 1, 3, 4])
    np.testing.assert_array_equal(sims, [0.25, 0.25, 0, 0, 0, 0])
    want_rows, _ = reference.support_set(s, 6, 1.0)
    np.testing.assert_array_equal(rows, want_rows)


# --- order_support: an unordered route's support set put in Eq (3)'s order ---------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 300, 5000])
@pytest.mark.parametrize("levels", [3, 1000])  # 3: nearly every similarity tied; 1000: few ties
def test_order_support_matches_reference(size, levels):
    rng = np.random.default_rng(size * 7 + levels)
    rows = rng.permutation(10 * size + 1)[:size].astype(np.int64)  # distinct rows in no order
    sims = (rng.integers(0, levels, size) / levels).astype(np.float32)
    got_rows, got_sims = kernels.order_support(rows, sims)
    want_rows, want_sims = reference.order_support(rows, sims)
    np.testing.assert_array_equal(got_rows, want_rows)
    np.testing.assert_array_equal(got_sims, want_sims)
    assert got_rows.dtype == np.int64 and got_sims.dtype == np.float32


def test_order_support_of_an_unordered_route_is_the_ordered_route():
    case = normal_bank(seed=3, n=2000, d=16, r=5, n_base=1500, gamma=0.1)  # a support set of most of the bank
    e, q, m = case.embeddings, case.query, case.capability
    ordered = kernels.route(e, q, m, case.n_base, case.gamma, 1)
    loose = kernels.route(e, q, m, case.n_base, case.gamma, 1, ordered=False)
    assert len(ordered[0]) > 1000
    got = kernels.order_support(loose[0], loose[1])
    np.testing.assert_array_equal(got[0], ordered[0])
    np.testing.assert_array_equal(got[1], ordered[1])


@pytest.mark.parametrize(
    ("rows", "sims", "message"),
    [
        ([0, 1], [0.5, np.nan], "non-negative and not NaN"),
        ([0, 1], [0.5, -0.1], "non-negative"),
        ([0, 1], [0.5], "same length"),
        ([-1, 1], [0.5, 0.4], "rows must index"),
        ([2**31, 1], [0.5, 0.4], "rows must index"),
        ([0.5, 1.0], [0.5, 0.4], "integer row indices"),
    ],
)
def test_order_support_refuses_bad_input(rows, sims, message):
    with pytest.raises(ValueError, match=message):
        kernels.order_support(np.asarray(rows), np.asarray(sims, dtype=np.float32))
