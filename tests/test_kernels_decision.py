"""Eqs (5)–(6) in one compiled call (``kernels.vote_decision``, ``decide_votes``, ``route_decide``) against
their numpy reference and the separate kernels they stand for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from kernel_strategies import FAST, FEW, assert_route_equal, normal_bank, vote_vectors

from smcs import kernels
from smcs.kernels import reference

seeds = st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32, 2**64 - 1))


@st.composite
def vote_cases(draw, max_models: int = 9):
    """(votes, known weights ≥ votes with some zero, accuracies with a NaN or two, k, k_drop, n, seed)."""
    votes = draw(vote_vectors(1, max_models))
    r = votes.shape[0]
    extra = draw(arrays(np.float64, (r,), elements=st.one_of(st.just(0.0), st.floats(0.0, 10.0))))
    known = votes + extra
    accuracy = draw(arrays(np.float64, (r,), elements=st.one_of(st.just(np.nan), st.floats(0.0, 1.0))))
    k = draw(st.integers(1, r))
    return votes, known, accuracy, k, draw(st.integers(0, k + 1)), draw(st.integers(0, 6)), draw(seeds)


def _assert_same(got: kernels.VoteDecision, want: tuple, drops_rtol: float = 0.0) -> None:
    """Equal bit for bit, but for the drop probabilities within ``drops_rtol`` (the reference sums the
    draw orders in another order)."""
    for field, a, b in zip(kernels.VoteDecision._fields, got, want):
        if field == "drop_probabilities" and drops_rtol:
            np.testing.assert_allclose(a, b, rtol=drops_rtol, atol=1e-15, err_msg=field)
        else:
            np.testing.assert_array_equal(a, b, err_msg=field)
        assert a.dtype == np.asarray(b).dtype or a.size == 0, field


@FAST
@given(vote_cases())
def test_vote_decision_is_the_reference(case):
    _assert_same(kernels.vote_decision(*case), reference.vote_decision(*case), drops_rtol=1e-12)


@FAST
@given(vote_cases())
def test_vote_decision_is_the_separate_kernels(case):
    """Ties, zero variance, K = R, k_drop ≥ K (clamped to K − 1) and n = 0 come up among the drawn cases."""
    votes, known, accuracy, k, k_drop, n, seed = case
    got = kernels.vote_decision(*case)
    referencers = kernels.top_k(votes, k)
    explored = kernels.explore(votes[referencers], min(k_drop, k - 1), n, seed)
    np.testing.assert_array_equal(got.referencers, referencers)
    np.testing.assert_array_equal(got.votes, votes[referencers])
    np.testing.assert_array_equal(got.subsets, explored.subsets)
    np.testing.assert_array_equal(got.drop_probabilities, explored.drop_probabilities)
    positive = known > 0
    np.testing.assert_array_equal(got.probabilities, np.where(positive, votes / np.where(positive, known, 1.0), accuracy))


def test_more_referencers_than_the_exact_drop_limit_report_no_drop_probabilities():
    votes = np.arange(20, dtype=np.float64)
    got = kernels.vote_decision(votes, votes + 1.0, np.full(20, 0.5), 17, 3, 4, 9)
    assert got.drop_probabilities.size == 0 and got.subsets.shape == (4, 14)
    np.testing.assert_array_equal(got.referencers, np.arange(19, 2, -1))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"votes": np.array([1.0, np.nan])}, "votes"),
        ({"votes": np.array([[1.0, 2.0]])}, "votes"),
        ({"known": np.array([1.0, 2.0, 3.0])}, "known"),
        ({"accuracy": "many"}, "accuracy"),
        ({"k": 3}, "k"),
        ({"k": 0}, "k"),
        ({"k_drop": -1}, "k_drop"),
        ({"n": True}, "n"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_vote_decision_names_a_bad_argument(change, field):
    arguments = {"votes": np.array([1.0, 2.0]), "known": np.array([2.0, 2.0]), "accuracy": np.array([0.5, 0.5])}
    arguments.update(k=1, k_drop=0, n=2, seed=0)
    arguments.update(change)
    with pytest.raises(ValueError, match=field):
        kernels.vote_decision(**arguments)


def test_decide_votes_gives_none_for_a_vote_that_is_not_finite():
    """What the router falls back on to raise as its general path does (an overflowed Ŝ makes a vote inf)."""
    votes = np.array([1.0, np.inf, 0.5])
    assert kernels.decide_votes(votes, votes, np.full(3, 0.5), 2, 1, 3, 7) is None


@FEW
@given(
    st.integers(0, 2**31 - 1), st.integers(1, 400), st.integers(1, 40), st.integers(1, 6),
    st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.integers(1, 2), seeds,
)
def test_route_decide_is_route_then_decide_votes(bank_seed, n, d, r, gamma, threads, seed):
    case = normal_bank(bank_seed, n, d, r, min(n, 1 + bank_seed % 50), gamma)
    bits = kernels.capability_bits(case.capability)
    accuracy = np.linspace(0.2, 0.9, r)
    k = 1 + bank_seed % r
    got = kernels.route_decide(
        case.embeddings, case.query, case.capability, bits, case.n_base, case.gamma, threads, accuracy, k, 1, 5, seed
    )
    routed = kernels.route(
        case.embeddings, case.query, case.capability, case.n_base, case.gamma, threads,
        capability_bits=bits, ordered=False, return_known=True,
    )
    assert_route_equal(got[:3], routed[:3])
    np.testing.assert_array_equal(got[3], routed[3])
    _assert_same(got[4], kernels.decide_votes(routed[2], routed[3], accuracy, k, 1, 5, seed))


def test_route_decide_scans_a_bank_on_several_threads_as_route_does():
    case = normal_bank(5, 9_000, 256, 7, 60, 0.8)  # 9.2 MB: above PARALLEL_MIN_BYTES, so threads=None scans in chunks
    assert case.embeddings.nbytes >= kernels.retrieval.PARALLEL_MIN_BYTES
    bits = kernels.capability_bits(case.capability)
    accuracy = np.full(7, 0.5)
    got = kernels.route_decide(case.embeddings, case.query, case.capability, bits, 60, 0.8, None, accuracy, 7, 2, 4, 3)
    routed = kernels.route(case.embeddings, case.query, case.capability, 60, 0.8, capability_bits=bits, ordered=False, return_known=True)
    for a, b in zip(got[:4], routed):
        np.testing.assert_array_equal(a, b)
    _assert_same(got[4], kernels.decide_votes(routed[2], routed[3], accuracy, 7, 2, 4, 3))
