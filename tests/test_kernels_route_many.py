"""``kernels.route_many`` (B queries in one pass over the bank): equal to B ``route`` calls bit for bit,
and to its numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_strategies import FAST, FEW, assert_route_equal, dyadic_banks, gammas, normal_bank

from smcs import kernels
from smcs.kernels import reference


@st.composite
def banks_with_queries(draw, max_n: int = 48, rng_only: bool = False):
    """A dyadic bank and B ≥ 1 dyadic queries (repeats allowed), each with its own N_base and γ."""
    case = draw(dyadic_banks(max_n=max_n, rng_only=rng_only))
    b = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    d = case.query.shape[0]
    queries = (rng.integers(-4, 5, size=(b, d)) * 2.0**-3).astype(np.float32)
    queries[0] = case.query
    if b > 1 and draw(st.booleans()):
        queries[-1] = queries[0]  # the same question twice in one batch
    n_base = [draw(st.integers(1, case.n + 5)) for _ in range(b)]
    gamma = [draw(gammas) for _ in range(b)]
    return case, queries, n_base, gamma


@FAST
@given(banks_with_queries())
def test_route_many_equals_reference_and_route_on_dyadic(drawn):
    case, queries, n_base, gamma = drawn
    want = reference.route_many(case.embeddings, queries, case.capability, n_base, gamma)
    for threads in (1, 2, 3, None):
        got = kernels.route_many(case.embeddings, queries, case.capability, n_base, gamma, threads)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_route_equal(g, w)


@FEW
@given(banks_with_queries(max_n=3000, rng_only=True))
def test_route_many_equals_reference_on_large_dyadic(drawn):
    case, queries, n_base, gamma = drawn
    want = reference.route_many(case.embeddings, queries, case.capability, n_base, gamma)
    for threads in (1, 2):
        for g, w in zip(kernels.route_many(case.embeddings, queries, case.capability, n_base, gamma, threads), want):
            assert_route_equal(g, w)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("n", "d"), [(5000, 384), (700, 1024), (3, 7)])
def test_route_many_is_route_bit_for_bit_on_normal_banks(n, d, threads):
    """Order-dependent float sums (Gaussian rows): each query's result is the single-query kernel's exactly."""
    case = normal_bank(seed=n + d, n=n, d=d, r=5, n_base=400, gamma=0.95)
    rng = np.random.default_rng(d)
    queries = rng.standard_normal((9, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    got = kernels.route_many(case.embeddings, queries, case.capability, [400] * 9, [0.95] * 9, threads)
    for q, g in zip(queries, got):
        assert_route_equal(g, kernels.route(case.embeddings, q, case.capability, 400, 0.95, threads))


def test_route_many_on_an_empty_bank_and_with_no_queries():
    e = np.empty((0, 4), dtype=np.float32)
    m = np.empty((2, 0), dtype=np.int8)
    q = np.ones((2, 4), dtype=np.float32)
    for rows, sims, votes in kernels.route_many(e, q, m, [3, 1], [0.95, 0.5]):
        assert rows.size == 0 and sims.size == 0
        np.testing.assert_array_equal(votes, np.zeros(2))
    assert kernels.route_many(np.eye(4, dtype=np.float32), np.empty((0, 4)), np.ones((1, 4), np.int8), [], []) == []


@pytest.mark.parametrize(
    ("queries", "n_base", "gamma", "message"),
    [
        (np.ones((2, 3)), [1, 1], [0.5, 0.5], "queries have dimension 3"),
        (np.ones(4), [1], [0.5], "queries must be a 2-D array"),
        (np.array([[1.0, np.nan, 0, 0]]), [1], [0.5], "queries"),
        (np.ones((2, 4)), [1], [0.5, 0.5], "one value per query"),
        (np.ones((1, 4)), [0], [0.5], "n_base"),
        (np.ones((1, 4)), [1], [1.5], "gamma"),
    ],
)
def test_route_many_bad_input_names_the_argument(queries, n_base, gamma, message):
    e = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        kernels.route_many(e, queries, np.ones((2, 4), dtype=np.int8), n_base, gamma)
