"""Distinct exploration subsets and Eq (6)'s per-referencer drop probabilities, against their numpy twins."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_strategies import FAST, vote_vectors

from smcs import kernels
from smcs.kernels import reference
from smcs.kernels.sampling import EXACT_DROP_MAX_K, MAX_DRAWS_PER_SUBSET

SEEDS = st.integers(0, 2**63 - 1)


def _distinct(votes: np.ndarray, k_drop: int, n: int, seed: int) -> tuple[np.ndarray, int]:
    return reference.draw_distinct_subsets(votes, k_drop, n, seed, MAX_DRAWS_PER_SUBSET * n)


@FAST
@given(vote_vectors(1, 7), st.integers(0, 6), st.integers(1, 40), SEEDS)
def test_distinct_subsets_equal_reference(votes, k_drop, n, seed):
    k_drop %= votes.shape[0]
    got, dropped = kernels.draw_distinct_subsets(votes, k_drop, n, seed)
    want, want_dropped = _distinct(votes, k_drop, n, seed)
    np.testing.assert_array_equal(got, want)
    assert dropped == want_dropped
    assert len({row.tobytes() for row in got}) == got.shape[0] <= min(n, math.comb(votes.shape[0], votes.shape[0] - k_drop))


@FAST
@given(vote_vectors(1, 7), st.integers(0, 6), st.integers(1, 12), SEEDS)
def test_distinct_subsets_are_the_paper_draws_without_their_repeats_first(votes, k_drop, n, seed):
    """The first draws are the paper mode's: its distinct rows, in order, start the distinct result."""
    k_drop %= votes.shape[0]
    paper = kernels.draw_subsets(votes, k_drop, n, seed)
    got, _ = kernels.draw_distinct_subsets(votes, k_drop, n, seed)
    firsts = list(dict.fromkeys(row.tobytes() for row in paper))
    assert [row.tobytes() for row in got[: len(firsts)]] == firsts


def test_distinct_subsets_with_n_above_the_possible_returns_every_subset():
    votes = np.array([6.0, 3.0, 1.0])  # C(3, 2) = 3 subsets; the paper mode repeats them
    got, dropped = kernels.draw_distinct_subsets(votes, 1, 8, seed=4)
    assert sorted(map(tuple, got.tolist())) == [(0, 1), (0, 2), (1, 2)]
    paper = kernels.draw_subsets(votes, 1, 8, seed=4)
    assert len({row.tobytes() for row in paper}) < 8 and dropped > 0


def test_distinct_subsets_edge_cases():
    # k_drop = 0: one possible subset, drawn once, nothing dropped
    got, dropped = kernels.draw_distinct_subsets(np.array([5.0, 3.0, 1.0]), 0, 8, seed=1)
    assert got.tolist() == [[0, 1, 2]] and dropped == 0
    # K = 1
    got, dropped = kernels.draw_distinct_subsets(np.array([0.7]), 0, 3, seed=0)
    assert got.tolist() == [[0]] and dropped == 0
    # all-equal votes: D uniform, all C(4, 2) = 6 subsets for n = 6
    got, _ = kernels.draw_distinct_subsets(np.full(4, 2.0), 2, 6, seed=3)
    assert sorted(map(tuple, got.tolist())) == list(itertools.combinations(range(4), 2))


def test_distinct_subsets_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k_drop"):
        kernels.draw_distinct_subsets(np.array([1.0, 2.0]), 2, 3, seed=0)
    with pytest.raises(ValueError, match="n"):
        kernels.draw_distinct_subsets(np.array([1.0, 2.0]), 1, 0, seed=0)


@FAST
@given(vote_vectors(1, 6), st.integers(0, 5))
def test_drop_probabilities_equal_reference(votes, k_drop):
    k_drop %= votes.shape[0]
    got = kernels.drop_probabilities(votes, k_drop)
    np.testing.assert_allclose(got, reference.drop_probabilities(votes, k_drop), rtol=1e-12, atol=1e-15)
    assert got.sum() == pytest.approx(k_drop, abs=1e-12)


def test_drop_probabilities_by_hand_and_by_frequency():
    # K = 2, keep 1: the item drawn first is kept, so P(drop i) = D of the other
    d = kernels.drop_distribution(np.array([3.0, 1.0]))
    np.testing.assert_allclose(kernels.drop_probabilities(np.array([3.0, 1.0]), 1), d[::-1], rtol=1e-14)
    # the bundled pool's shape (K = 3, k_drop = 1): the lowest prior is dropped about 0.74 of the time
    votes = np.array([3.0, 2.0, 1.0])
    p = kernels.drop_probabilities(votes, 1)
    subsets = kernels.draw_subsets(votes, 1, 20_000, seed=9)
    frequency = np.array([np.mean(~np.any(subsets == i, axis=1)) for i in range(3)])
    np.testing.assert_allclose(frequency, p, atol=0.015)
    assert 0.7 < p[2] < 0.78


def test_drop_probabilities_edge_cases():
    np.testing.assert_array_equal(kernels.drop_probabilities(np.array([4.0, 2.0, 1.0]), 0), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(kernels.drop_probabilities(np.array([0.7]), 0), [0.0])
    np.testing.assert_allclose(kernels.drop_probabilities(np.full(5, 1.0), 2), np.full(5, 0.4), rtol=1e-14)
    with pytest.raises(ValueError, match=f"K <= {EXACT_DROP_MAX_K}"):
        kernels.drop_probabilities(np.arange(EXACT_DROP_MAX_K + 1, dtype=float), 1)
