"""Exploration kernels, Eq (6): drop distribution and successive unequal-probability sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_strategies import FAST, MEDIUM, distributions, uniform_matrices, vote_vectors

from smcs import kernels
from smcs.kernels import pcg64, reference


def _softmax_of_standardised(votes: list[float]) -> np.ndarray:
    """Eq (6) worked out longhand with the math module (population std), for the hand-checked tests."""
    k = len(votes)
    mean = sum(votes) / k
    std = math.sqrt(sum((v - mean) ** 2 for v in votes) / k)
    e = [math.exp((v - mean) / std) for v in votes]
    return np.array([x / sum(e) for x in e])


def _exact_drop_probabilities(d: np.ndarray, keep: int) -> np.ndarray:
    """P(item i is left out) under successive sampling without replacement, by enumerating draw orders."""
    k = d.shape[0]
    out = np.zeros(k)
    for order in itertools.permutations(range(k), keep):
        p, left = 1.0, 1.0
        for i in order:
            p *= d[i] / left
            left -= d[i]
        for i in set(range(k)) - set(order):
            out[i] += p
    return out


# --- drop distribution ------------------------------------------------------------------------------------


def test_drop_distribution_two_votes_by_hand():
    # V = (3, 1): mean 2, population std 1, z = (1, −1), D = (e, 1/e)/(e + 1/e)
    d = kernels.drop_distribution(np.array([3.0, 1.0]))
    np.testing.assert_allclose(d, [1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))], rtol=1e-14)


def test_drop_distribution_three_votes_by_hand():
    # V = (1, 2, 3): std = sqrt(2/3) (ddof 0, not sqrt(1) as ddof 1 would give), z = (−√1.5, 0, √1.5)
    z = [-math.sqrt(1.5), 0.0, math.sqrt(1.5)]
    want = np.array([math.exp(x) for x in z]) / sum(math.exp(x) for x in z)
    np.testing.assert_allclose(kernels.drop_distribution(np.array([1.0, 2.0, 3.0])), want, rtol=1e-14)


def test_drop_distribution_matches_longhand_on_skewed_votes():
    votes = [9.5, 4.0, 3.0, 0.25, 0.0]
    np.testing.assert_allclose(
        kernels.drop_distribution(np.array(votes)), _softmax_of_standardised(votes), rtol=1e-13
    )


@pytest.mark.parametrize("votes", [[2.0, 2.0, 2.0], [0.0, 0.0], [7.25], [1e-3] * 7])
def test_drop_distribution_zero_variance_is_uniform(votes):
    d = kernels.drop_distribution(np.array(votes))
    np.testing.assert_array_equal(d, np.full(len(votes), 1.0 / len(votes)))


def test_drop_distribution_is_shift_and_scale_invariant():
    v = np.array([5.0, 1.0, 2.5, 0.0])
    np.testing.assert_allclose(
        kernels.drop_distribution(3.0 * v + 11.0), kernels.drop_distribution(v), rtol=1e-12
    )


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_drop_distribution_tiny_or_huge_spread_is_the_scaled_distribution(scale):
    expected = kernels.drop_distribution(np.array([1.0, 2.0, 3.0]))
    for f in (kernels.drop_distribution, reference.drop_distribution):
        np.testing.assert_allclose(f(np.array([1.0, 2.0, 3.0]) * scale), expected, rtol=1e-9)


@MEDIUM
@given(vote_vectors(1, 12))
def test_drop_distribution_equals_reference(votes):
    got = kernels.drop_distribution(votes)
    np.testing.assert_allclose(got, reference.drop_distribution(votes), rtol=1e-12, atol=1e-15)
    assert got.dtype == np.float64 and got.shape == votes.shape
    assert np.all(got > 0)
    assert math.isclose(got.sum(), 1.0, rel_tol=1e-12)
    # a higher prior never gets a lower weight
    order = np.argsort(votes, kind="stable")
    assert np.all(np.diff(got[order]) >= -1e-15)


# --- successive sampling ----------------------------------------------------------------------------------

HAND_D = np.array([0.5, 0.25, 0.25])  # dyadic: every partial sum below is exact


@pytest.mark.parametrize(
    "u, want",
    [
        # draw 1: target u0·1.0; cumulative 0.5, 0.75, 1.0. draw 2: renormalised over the two left.
        ([0.6, 0.9], [1, 2]),  # 0.75 > 0.6 -> 1 ; left {0, 2}: target 0.675, 0.75 > 0.675 -> 2
        ([0.0, 0.0], [0, 1]),  # 0.5 > 0 -> 0 ; left {1, 2}: 0.25 > 0 -> 1
        ([0.99, 0.99], [1, 2]),  # 1.0 > 0.99 -> 2 ; left {0, 1}: target 0.7425, 0.75 > it -> 1
        ([0.5, 0.5], [0, 1]),  # 0.5 > 0.5 is false -> 1 ; left {0, 2}: target 0.375, 0.5 > it -> 0
        ([0.25, 0.7], [0, 2]),  # 0.5 > 0.25 -> 0 ; left {1, 2}: target 0.35, 0.5 > it -> 2
    ],
)
def test_sample_subsets_by_hand(u, want):
    got = kernels.sample_subsets(HAND_D, 2, np.array([u]))
    np.testing.assert_array_equal(got, [want])


def test_sample_subsets_zero_weight_remainder_falls_back_to_last_item():
    # after item 0 is drawn only zero weights remain: nothing exceeds the target 0 -> last remaining item
    u = np.array([[0.3, 0.8], [0.0, 0.0]])
    np.testing.assert_array_equal(kernels.sample_subsets(np.array([1.0, 0.0, 0.0]), 2, u), [[0, 2], [0, 2]])


def test_sample_subsets_never_draws_zero_weight_while_weight_remains():
    u = np.random.default_rng(3).random((200, 2))
    got = kernels.sample_subsets(np.array([0.0, 0.5, 0.5]), 2, u)
    np.testing.assert_array_equal(got, np.tile([1, 2], (200, 1)))


def test_sample_subsets_keep_all_returns_every_item():
    u = np.random.default_rng(4).random((30, 5))
    got = kernels.sample_subsets(np.array([0.4, 0.3, 0.1, 0.15, 0.05]), 5, u)
    np.testing.assert_array_equal(got, np.tile(np.arange(5), (30, 1)))


@MEDIUM
@given(st.data())
def test_sample_subsets_equals_reference(data):
    d = data.draw(distributions())
    keep = data.draw(st.integers(1, d.shape[0]))
    n = data.draw(st.integers(1, 20))
    u = data.draw(uniform_matrices(n, keep))
    got = kernels.sample_subsets(d, keep, u)
    assert got.dtype == np.int64 and got.shape == (n, keep)
    np.testing.assert_array_equal(got, reference.sample_subsets(d, keep, u))


@FAST
@given(vote_vectors(1, 9), st.integers(0, 8), st.integers(1, 40), st.integers(0, 2**63 - 1))
def test_draw_subsets_equals_reference_pipeline(votes, k_drop, n, seed):
    k = votes.shape[0]
    k_drop = k_drop % k
    keep = k - k_drop
    got = kernels.draw_subsets(votes, k_drop, n, seed)
    uniforms = np.random.default_rng(seed).random((n, keep))
    want = reference.sample_subsets(reference.drop_distribution(votes), keep, uniforms)
    np.testing.assert_array_equal(got, want)
    # sorted ascending (= descending prior), no duplicates, valid positions
    assert got.shape == (n, keep)
    assert np.all(np.diff(got, axis=1) > 0)
    assert got.min() >= 0 and got.max() < k


def test_subset_uniforms_come_from_pcg64_seeded_per_call():
    u = kernels.subset_uniforms(123, 6, 3)
    np.testing.assert_array_equal(u, np.random.Generator(np.random.PCG64(123)).random((6, 3)))
    assert u.shape == (6, 3) and np.all((u >= 0) & (u < 1))


@FAST
@given(
    st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1])),
    st.integers(1, 40),
    st.integers(1, 16),
)
def test_subset_uniforms_are_numpys_default_rng_stream_bit_for_bit(seed, n, keep):
    """The compiled SeedSequence and PCG64 (``kernels.pcg64``) give ``default_rng(seed).random`` exactly, for
    one-word and two-word seeds, and the stream continues as numpy's does."""
    generator = np.random.default_rng(seed)
    np.testing.assert_array_equal(kernels.subset_uniforms(seed, n, keep), generator.random((n, keep)))
    state = pcg64.state_of(seed)
    first, then = np.empty((n, keep)), np.empty(3 * keep)
    pcg64.fill_uniforms(state, first)
    pcg64.fill_uniforms(state, then)
    np.testing.assert_array_equal(then, generator.random(3 * keep))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, None, "7"])
def test_subset_uniforms_name_a_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        kernels.subset_uniforms(seed, 2, 2)
    with pytest.raises(ValueError, match="seed"):
        kernels.draw_distinct_subsets(np.array([3.0, 2.0, 1.0]), 1, 2, seed)


@FAST
@given(vote_vectors(1, 9), st.integers(0, 8), st.integers(0, 12), st.integers(0, 2**64 - 1), st.booleans())
def test_explore_is_the_draws_and_the_drop_probabilities(votes, k_drop, n, seed, distinct):
    """``explore`` (one D for everything a decision reports) equals the separate kernels it stands for."""
    k_drop = min(k_drop, len(votes) - 1)
    got = kernels.explore(votes, k_drop, n, seed, distinct=distinct)
    if n == 0:
        assert got.subsets.shape == (0, len(votes) - k_drop) and got.duplicates == 0
    elif distinct:
        subsets, duplicates = kernels.draw_distinct_subsets(votes, k_drop, n, seed)
        np.testing.assert_array_equal(got.subsets, subsets)
        assert got.duplicates == duplicates
    else:
        np.testing.assert_array_equal(got.subsets, kernels.draw_subsets(votes, k_drop, n, seed))
        assert got.duplicates == 0
    np.testing.assert_array_equal(got.drop_probabilities, kernels.drop_probabilities(votes, k_drop))


def test_explore_leaves_the_drop_probabilities_out_past_the_exact_limit():
    votes = np.linspace(1.0, 2.0, kernels.EXACT_DROP_MAX_K + 1)
    got = kernels.explore(votes, 2, 3, seed=5)
    assert got.drop_probabilities.size == 0
    np.testing.assert_array_equal(got.subsets, kernels.draw_subsets(votes, 2, 3, seed=5))
    with pytest.raises(ValueError, match="n must be"):
        kernels.explore(votes, 2, -1, seed=5)


def test_draw_subsets_k_drop_zero_keeps_every_item():
    got = kernels.draw_subsets(np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.25, 0.0]), 0, 16, seed=11)
    np.testing.assert_array_equal(got, np.tile(np.arange(7), (16, 1)))


def test_draw_subsets_single_referencer():
    np.testing.assert_array_equal(kernels.draw_subsets(np.array([0.7]), 0, 3, seed=0), [[0], [0], [0]])


def test_draw_subsets_same_seed_is_identical():
    votes = np.array([6.0, 5.0, 3.5, 3.0, 1.0, 0.5, 0.0])
    a = kernels.draw_subsets(votes, 2, 64, seed=2024)
    b = kernels.draw_subsets(votes, 2, 64, seed=2024)
    np.testing.assert_array_equal(a, b)


def test_draw_subsets_different_seeds_differ():
    votes = np.array([6.0, 5.0, 3.5, 3.0, 1.0, 0.5, 0.0])
    draws = [kernels.draw_subsets(votes, 1, 50, seed=s).tobytes() for s in range(20)]
    assert len(set(draws)) == 20


def test_draw_subsets_rows_sorted_without_duplicates():
    votes = np.array([6.0, 5.0, 3.5, 3.0, 1.0, 0.5, 0.0])
    got = kernels.draw_subsets(votes, 3, 500, seed=5)
    assert got.shape == (500, 4)
    assert np.all(np.diff(got, axis=1) > 0)
    assert got.min() >= 0 and got.max() <= 6


# --- statistics -------------------------------------------------------------------------------------------

SKEWED_VOTES = [4.0, 3.0, 1.0, 0.0]  # referencers ranked by prior: item 0 highest, item 3 lowest
N_STAT = 20_000


def test_drop_frequencies_follow_the_prior():
    d = _softmax_of_standardised(SKEWED_VOTES)
    subsets = kernels.draw_subsets(np.array(SKEWED_VOTES), 1, N_STAT, seed=97)
    assert subsets.shape == (N_STAT, 3)
    dropped = np.array([np.setdiff1d(np.arange(4), row)[0] for row in subsets])
    freq = np.bincount(dropped, minlength=4) / N_STAT
    # the highest-prior item is dropped least, the lowest-prior item most
    assert freq[0] < freq[3]
    assert np.all(np.diff(freq) > 0)
    want = _exact_drop_probabilities(d, 3)
    assert math.isclose(want.sum(), 1.0, rel_tol=1e-12)
    se = np.sqrt(want * (1 - want) / N_STAT)
    assert np.all(np.abs(freq - want) < 5 * se), (freq, want, se)


def test_first_draw_frequencies_match_distribution():
    d = _softmax_of_standardised(SKEWED_VOTES)
    first = kernels.draw_subsets(np.array(SKEWED_VOTES), 3, N_STAT, seed=98)  # keep 1: the first draw
    assert first.shape == (N_STAT, 1)
    freq = np.bincount(first[:, 0], minlength=4) / N_STAT
    se = np.sqrt(d * (1 - d) / N_STAT)
    assert np.all(np.abs(freq - d) < 5 * se), (freq, d, se)


# --- bad input --------------------------------------------------------------------------------------------

VOTES = np.array([3.0, 2.0, 1.0])


@pytest.mark.parametrize("k_drop", [3, 4, -1, 1.0, True])
def test_draw_subsets_rejects_bad_k_drop(k_drop):
    with pytest.raises(ValueError, match="k_drop"):
        kernels.draw_subsets(VOTES, k_drop, 4, seed=0)


@pytest.mark.parametrize("n", [0, -2, 2.0])
def test_draw_subsets_rejects_bad_n(n):
    with pytest.raises(ValueError, match=r"^n must be"):
        kernels.draw_subsets(VOTES, 1, n, seed=0)


@pytest.mark.parametrize("votes", [np.array([]), np.array([1.0, np.nan]), np.array([[1.0, 2.0]])])
def test_drop_distribution_rejects_bad_votes(votes):
    with pytest.raises(ValueError, match="votes"):
        kernels.drop_distribution(votes)
    with pytest.raises(ValueError, match="votes"):
        kernels.draw_subsets(votes, 0, 1, seed=0)


@pytest.mark.parametrize(
    "dist", [np.array([0.5, -0.1, 0.6]), np.zeros(3), np.array([]), np.array([0.5, np.inf, 0.1])]
)
def test_sample_subsets_rejects_bad_distribution(dist):
    with pytest.raises(ValueError, match="distribution"):
        kernels.sample_subsets(dist, 1, np.zeros((1, 1)))


@pytest.mark.parametrize("keep", [0, 4])
def test_sample_subsets_rejects_bad_keep(keep):
    with pytest.raises(ValueError, match="keep"):
        kernels.sample_subsets(HAND_D, keep, np.zeros((1, max(keep, 1))))


@pytest.mark.parametrize(
    "u", [np.zeros((2, 3)), np.zeros(2), np.array([[0.5, 1.0]]), np.array([[-0.1, 0.5]]), np.array([[0.5, np.nan]])]
)
def test_sample_subsets_rejects_bad_uniforms(u):
    with pytest.raises(ValueError, match="uniforms"):
        kernels.sample_subsets(HAND_D, 2, u)
