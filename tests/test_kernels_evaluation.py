"""Evaluation measures: the pairwise ranking score, Eq (8), and OCA/MCA (paper §4.7)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from kernel_strategies import MEDIUM

from smcs import kernels
from smcs.kernels import reference

# --- pairwise ranking score, Eq (8) -----------------------------------------------------------------------


def test_pairwise_ranking_by_hand_with_unknowns_and_ties():
    prior = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 2.0], [2.0, 2.0, 5.0]])
    outcomes = np.array([[1, 0, -1], [1, 0, 0], [1, 0, -1]], np.int8)
    # q0: P={0}, N={1}: 3 > 1                 -> 1 of 1   (model 2 unknown: left out)
    # q1: P={0}, N={1,2}: 1 > 2, 1 > 2 false  -> 0 of 2
    # q2: P={0}, N={1}: 2 > 2 false (strict)  -> 0 of 1   (model 2 unknown: left out)
    # total 1 / 4. (Counting −1 as wrong would give 2/6; counting ties would give 2/4.)
    assert kernels.pairwise_ranking_score(prior, outcomes) == 0.25


def test_pairwise_ranking_by_hand_several_correct_and_wrong():
    prior = np.array([[0.9, 0.1, 0.5, 0.3]])
    outcomes = np.array([[1, 1, 0, 0]], np.int8)
    # pairs (0,2) (0,3) hit, (1,2) (1,3) miss -> 2/4
    assert kernels.pairwise_ranking_score(prior, outcomes) == 0.5


def test_pairwise_ranking_pools_pairs_over_questions():
    # q0 has 1 pair (hit), q1 has 4 pairs (all misses): pooled 1/5, not the mean of per-question shares (1/2)
    prior = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    outcomes = np.array([[1, 0, -1], [1, 1, 0]], np.int8)
    prior2 = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    outcomes2 = np.array([[1, 0, -1, -1], [1, 1, 0, 0]], np.int8)
    assert kernels.pairwise_ranking_score(prior, outcomes) == 1 / 3  # q1: P={0,1}, N={2}: 2 misses
    assert kernels.pairwise_ranking_score(prior2, outcomes2) == 1 / 5


def test_pairwise_ranking_perfect_and_reversed():
    outcomes = np.array([[1, 0, 0], [0, 1, 0]], np.int8)
    assert kernels.pairwise_ranking_score(np.array([[3.0, 1.0, 2.0], [0.0, 9.0, 1.0]]), outcomes) == 1.0
    assert kernels.pairwise_ranking_score(np.array([[0.0, 1.0, 2.0], [5.0, 1.0, 1.0]]), outcomes) == 0.0


@pytest.mark.parametrize(
    "outcomes",
    [
        [[1, 1, 1], [1, -1, 1]],  # no wrong model anywhere
        [[0, 0, -1], [0, 0, 0]],  # no correct model anywhere
        [[-1, -1, -1], [-1, -1, -1]],  # nothing known
        [[1, -1, -1], [-1, 0, -1]],  # one class per question, never both in the same question
    ],
)
def test_pairwise_ranking_nan_when_no_pair(outcomes):
    prior = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert math.isnan(kernels.pairwise_ranking_score(prior, np.array(outcomes, np.int8)))


def test_pairwise_ranking_nan_for_zero_questions():
    assert math.isnan(kernels.pairwise_ranking_score(np.empty((0, 3)), np.empty((0, 3), np.int8)))


@MEDIUM
@given(st.data())
def test_pairwise_ranking_equals_reference(data):
    q = data.draw(st.integers(0, 12))
    r = data.draw(st.integers(1, 8))
    elems = st.one_of(st.integers(0, 3).map(float), st.floats(-1e6, 1e6))
    prior = data.draw(arrays(np.float64, (q, r), elements=elems))
    outcomes = data.draw(arrays(np.int8, (q, r), elements=st.integers(-1, 1)))
    got = kernels.pairwise_ranking_score(prior, outcomes)
    want = reference.pairwise_ranking_score(prior, outcomes)
    assert isinstance(got, float)
    if math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want
        assert 0.0 <= got <= 1.0


# --- OCA / MCA, §4.7 --------------------------------------------------------------------------------------


def test_oca_mca_by_hand():
    correct = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
    # correct counts per question: 1, 2, 0, 3 -> OCA = 3/4 (≥ 1), MCA = 2/4 (≥ 2)
    assert kernels.oca_mca(correct) == (0.75, 0.5)
    assert kernels.oca_mca(correct.astype(bool)) == (0.75, 0.5)


def test_oca_mca_single_aggregation_has_zero_mca():
    assert kernels.oca_mca(np.array([[1], [0], [1], [1]])) == (0.75, 0.0)


def test_oca_mca_nan_for_zero_questions():
    oca, mca = kernels.oca_mca(np.empty((0, 8)))
    assert math.isnan(oca) and math.isnan(mca)


@MEDIUM
@given(arrays(np.int8, st.tuples(st.integers(1, 20), st.integers(1, 10)), elements=st.integers(0, 1)))
def test_oca_mca_equal_reference(correct):
    oca, mca = kernels.oca_mca(correct)
    assert (oca, mca) == reference.oca_mca(correct)
    assert 0.0 <= mca <= oca <= 1.0


# --- bad input --------------------------------------------------------------------------------------------


def test_pairwise_ranking_rejects_1d_prior():
    with pytest.raises(ValueError, match="prior must be a 2-D"):
        kernels.pairwise_ranking_score(np.ones(3), np.ones((1, 3), np.int8))


def test_pairwise_ranking_rejects_nan_prior():
    with pytest.raises(ValueError, match="prior contains NaN"):
        kernels.pairwise_ranking_score(np.array([[1.0, np.nan]]), np.array([[1, 0]], np.int8))


def test_pairwise_ranking_rejects_column_mismatch():
    with pytest.raises(ValueError, match="outcomes has 2 columns"):
        kernels.pairwise_ranking_score(np.ones((1, 3)), np.array([[1, 0]], np.int8))


def test_pairwise_ranking_rejects_row_mismatch():
    with pytest.raises(ValueError, match="outcomes has 1 rows but prior has 2"):
        kernels.pairwise_ranking_score(np.ones((2, 2)), np.array([[1, 0]], np.int8))


@pytest.mark.parametrize("outcomes", [np.array([[1.0, 0.0]]), np.array([[1, 2]], np.int64)])
def test_pairwise_ranking_rejects_bad_outcome_values(outcomes):
    with pytest.raises(ValueError, match="outcomes"):
        kernels.pairwise_ranking_score(np.ones((1, 2)), outcomes)


def test_oca_mca_rejects_1d():
    with pytest.raises(ValueError, match="correct must be a 2-D"):
        kernels.oca_mca(np.array([1, 0, 1]))
