"""Exploitation kernels, Eq (7): mean pairwise similarity, perplexity, hybrid score and selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from kernel_strategies import FAST, MEDIUM

from smcs import kernels
from smcs.kernels import reference

R2 = 1 / math.sqrt(2)


@st.composite
def candidate_matrices(draw):
    n = draw(st.integers(1, 8))
    d = draw(st.integers(1, 32))
    elems = st.one_of(st.integers(-5, 5).map(float), st.floats(-10, 10, allow_subnormal=False))
    g = draw(arrays(np.float64, (n, d), elements=elems))
    tiny = np.linalg.norm(g, axis=1) < 1e-3  # keep cosines well defined (no zero / underflowing rows)
    g[tiny, 0] = 1.0
    return g


@st.composite
def ragged_logprobs(draw):
    lengths = draw(st.lists(st.integers(1, 30), min_size=1, max_size=8))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    lp = draw(arrays(np.float64, (int(offsets[-1]),), elements=st.floats(-20.0, 0.0)))
    return lp, offsets


# --- mean pairwise similarity -----------------------------------------------------------------------------


def test_mean_pairwise_similarity_by_hand():
    # cos(g0, g1) = 0, cos(g0, g2) = cos(g1, g2) = 1/√2, and each row with itself = 1
    got = kernels.mean_pairwise_similarity(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    np.testing.assert_allclose(got, [(1 + 0 + R2) / 3, (0 + 1 + R2) / 3, (R2 + R2 + 1) / 3], rtol=1e-14)


def test_mean_pairwise_similarity_includes_self_term():
    # orthogonal pair: (1/n)(1 + 0) = 0.5, not 0 as a sum over j != i would give
    np.testing.assert_allclose(kernels.mean_pairwise_similarity(np.eye(2)), [0.5, 0.5], rtol=1e-15)


def test_mean_pairwise_similarity_ignores_scale():
    got = kernels.mean_pairwise_similarity(np.array([[2.0, 0.0], [0.0, 5.0], [3.0, 3.0]]))
    np.testing.assert_allclose(got, [(1 + R2) / 3, (1 + R2) / 3, (1 + 2 * R2) / 3], rtol=1e-14)


def test_mean_pairwise_similarity_opposite_vectors_cancel():
    np.testing.assert_allclose(
        kernels.mean_pairwise_similarity(np.array([[1.0, 2.0], [-1.0, -2.0]])), [0.0, 0.0], atol=1e-15
    )


def test_mean_pairwise_similarity_single_candidate_is_one():
    got = kernels.mean_pairwise_similarity(np.array([[3.0, -4.0, 12.0]]))
    assert got.shape == (1,)
    np.testing.assert_allclose(got, [1.0], rtol=1e-15)


@MEDIUM
@given(candidate_matrices())
def test_mean_pairwise_similarity_equals_reference(g):
    got = kernels.mean_pairwise_similarity(g)
    assert got.dtype == np.float64 and got.shape == (g.shape[0],)
    np.testing.assert_allclose(got, reference.mean_pairwise_similarity(g), rtol=1e-9, atol=1e-12)
    assert np.all(got <= 1 + 1e-12) and np.all(got >= -1 - 1e-12)


def test_mean_pairwise_similarity_accepts_float32():
    g = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_allclose(
        kernels.mean_pairwise_similarity(g), reference.mean_pairwise_similarity(g), rtol=1e-9, atol=1e-12
    )


# --- perplexity -------------------------------------------------------------------------------------------


def test_perplexity_by_hand():
    # candidate 0: mean(−1, −1) = −1 -> e ; candidate 1: −2 -> e² ; candidate 2: 0 -> 1
    got = kernels.perplexity(np.array([-1.0, -1.0, -2.0, 0.0]), np.array([0, 2, 3, 4]))
    np.testing.assert_allclose(got, [math.e, math.e**2, 1.0], rtol=1e-14)


def test_perplexity_ragged_lengths_by_hand():
    # p = 1/2 on three tokens -> PPL 2 ; then p = (1/2, 1/8) -> exp((ln2 + 3 ln2)/2) = 4 ; then p = 1/4 -> 4
    lp = np.log([0.5, 0.5, 0.5, 0.5, 0.125, 0.25])
    got = kernels.perplexity(lp, np.array([0, 3, 5, 6]))
    np.testing.assert_allclose(got, [2.0, 4.0, 4.0], rtol=1e-13)


def test_perplexity_single_candidate():
    np.testing.assert_allclose(kernels.perplexity(np.log([0.25]), np.array([0, 1])), [4.0], rtol=1e-14)


@MEDIUM
@given(ragged_logprobs())
def test_perplexity_equals_reference(data):
    lp, offsets = data
    got = kernels.perplexity(lp, offsets)
    assert got.shape == (offsets.shape[0] - 1,)
    np.testing.assert_allclose(got, reference.perplexity(lp, offsets), rtol=1e-12)
    assert np.all(got >= 1.0)  # logprobs ≤ 0 -> PPL ≥ 1


# --- hybrid score and selection ---------------------------------------------------------------------------


def test_hybrid_scores_by_hand():
    sim = np.array([0.5, 0.25])
    ppl = np.array([1.5, 1.0])
    np.testing.assert_array_equal(kernels.hybrid_scores(sim, ppl, 1.0), [0.0, 0.25])  # 0.5 + (1 − 1.5)
    np.testing.assert_array_equal(kernels.hybrid_scores(sim, ppl, 0.5), [0.25, 0.25])
    np.testing.assert_array_equal(kernels.hybrid_scores(sim, ppl, 0.0), sim)


def test_hybrid_ties_select_lowest_index():
    # 0.5 + (1 − 1) = 0.75 + (1 − 1.25) = 0.25 + (1 − 0.75) = 0.5, all exact
    scores = kernels.hybrid_scores(np.array([0.25, 0.5, 0.75, 0.25]), np.array([1.5, 1.0, 1.25, 0.75]), 1.0)
    np.testing.assert_array_equal(scores, [-0.25, 0.5, 0.5, 0.5])
    assert kernels.select_best(scores) == 1


def test_select_best_by_hand():
    assert kernels.select_best(np.array([1.0, 3.0, 3.0, 2.0])) == 1
    assert kernels.select_best(np.array([-2.0, -1.0, -1.5])) == 1
    assert kernels.select_best(np.array([0.0, 0.0, 0.0])) == 0
    assert kernels.select_best(np.array([1.0, 2.0, 5.0])) == 2


def test_select_best_single_candidate():
    assert kernels.select_best(np.array([-7.0])) == 0


@MEDIUM
@given(st.data())
def test_hybrid_scores_equal_reference(data):
    n = data.draw(st.integers(1, 10))
    sim = data.draw(arrays(np.float64, (n,), elements=st.floats(-1.0, 1.0)))
    ppl = data.draw(arrays(np.float64, (n,), elements=st.floats(1.0, 1e6)))
    lam = data.draw(st.floats(-5.0, 5.0))
    got = kernels.hybrid_scores(sim, ppl, lam)
    np.testing.assert_array_equal(got, reference.hybrid_scores(sim, ppl, lam))


@MEDIUM
@given(
    st.one_of(
        arrays(np.float64, st.integers(1, 12), elements=st.integers(-3, 3).map(float)),
        arrays(np.float64, st.integers(1, 12), elements=st.floats(-1e9, 1e9)),
    )
)
def test_select_best_equals_reference(scores):
    got = kernels.select_best(scores)
    assert isinstance(got, int)
    assert got == reference.select_best(scores)
    assert scores[got] == scores.max() and np.all(scores[:got] < scores[got])


@FAST
@given(candidate_matrices(), st.floats(0.0, 2.0), st.data())
def test_scoring_pipeline_equals_reference(g, lam, data):
    n = g.shape[0]
    lengths = data.draw(st.lists(st.integers(1, 10), min_size=n, max_size=n))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    lp = data.draw(arrays(np.float64, (int(offsets[-1]),), elements=st.integers(-8, 0).map(lambda k: k / 4)))
    got = kernels.hybrid_scores(kernels.mean_pairwise_similarity(g), kernels.perplexity(lp, offsets), lam)
    want = reference.hybrid_scores(
        reference.mean_pairwise_similarity(g), reference.perplexity(lp, offsets), lam
    )
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


# --- bad input --------------------------------------------------------------------------------------------


def test_mean_pairwise_similarity_rejects_1d():
    with pytest.raises(ValueError, match="candidates must be a 2-D"):
        kernels.mean_pairwise_similarity(np.ones(3))


def test_mean_pairwise_similarity_rejects_no_candidates():
    with pytest.raises(ValueError, match="candidates"):
        kernels.mean_pairwise_similarity(np.empty((0, 3)))


def test_mean_pairwise_similarity_rejects_zero_vector():
    with pytest.raises(ValueError, match="candidates row 1 is a zero vector"):
        kernels.mean_pairwise_similarity(np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 0.5]]))


def test_mean_pairwise_similarity_rejects_nan():
    with pytest.raises(ValueError, match="candidates contains NaN"):
        kernels.mean_pairwise_similarity(np.array([[1.0, np.nan]]))


def test_perplexity_rejects_empty_segment():
    with pytest.raises(ValueError, match="offsets give candidate 1 no tokens"):
        kernels.perplexity(np.array([-1.0, -1.0, -1.0]), np.array([0, 2, 2, 3]))


def test_perplexity_rejects_decreasing_offsets():
    with pytest.raises(ValueError, match="offsets"):
        kernels.perplexity(np.array([-1.0, -1.0, -1.0]), np.array([0, 3, 2, 3]))


@pytest.mark.parametrize("offsets", [[0, 2], [1, 3], [0, 4]])
def test_perplexity_rejects_offsets_not_covering_logprobs(offsets):
    with pytest.raises(ValueError, match=r"offsets must start at 0 and end at len\(logprobs\) = 3"):
        kernels.perplexity(np.array([-1.0, -1.0, -1.0]), np.array(offsets))


@pytest.mark.parametrize("offsets", [np.array([0.0, 3.0]), np.array([3]), np.array([[0, 3]])])
def test_perplexity_rejects_malformed_offsets(offsets):
    with pytest.raises(ValueError, match="offsets"):
        kernels.perplexity(np.array([-1.0, -1.0, -1.0]), offsets)


@pytest.mark.parametrize("lp", [np.array([-1.0, np.nan]), np.array([[-1.0, -1.0]])])
def test_perplexity_rejects_bad_logprobs(lp):
    with pytest.raises(ValueError, match="logprobs"):
        kernels.perplexity(lp, np.array([0, 2]))


def test_hybrid_scores_rejects_length_mismatch():
    with pytest.raises(ValueError, match="ppl must have length 2"):
        kernels.hybrid_scores(np.array([0.5, 0.5]), np.array([1.0, 1.0, 1.0]), 1.0)


def test_hybrid_scores_rejects_nan_sim():
    with pytest.raises(ValueError, match="sim contains NaN"):
        kernels.hybrid_scores(np.array([np.nan]), np.array([1.0]), 1.0)


@pytest.mark.parametrize("lam", [np.nan, np.inf])
def test_hybrid_scores_rejects_non_finite_lam(lam):
    with pytest.raises(ValueError, match="lam"):
        kernels.hybrid_scores(np.array([0.5]), np.array([1.0]), lam)


@pytest.mark.parametrize("scores", [np.array([]), np.array([1.0, np.nan])])
def test_select_best_rejects_bad_scores(scores):
    with pytest.raises(ValueError, match="scores"):
        kernels.select_best(scores)
