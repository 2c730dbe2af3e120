"""``kernels.route_many`` (B queries in one pass over the bank) and ``kernels.route_quantized_many`` (B
queries in one bound pass over the int8 copy): equal to B ``route`` calls bit for bit, and to the numpy
reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_strategies import FAST, FEW, assert_route_equal, dyadic_banks, gammas, normal_bank

from smcs import kernels
from smcs.kernels import reference
from smcs.synthetic import clustered_bank, queries_near


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


@FAST
@given(banks_with_queries())
def test_route_quantized_many_equals_reference_on_dyadic(drawn):
    """Each query of the shared bound pass gets the reference's route, whatever its own N_base and γ (γ = 0
    and N_base past N make every row a candidate: the exact kernel's fallback)."""
    case, queries, n_base, gamma = drawn
    want = reference.route_many(case.embeddings, queries, case.capability, n_base, gamma)
    quantized = kernels.quantize_rows(case.embeddings)
    for threads in (1, 2, 3):
        got = kernels.route_quantized_many(quantized, case.embeddings, queries, case.capability, n_base, gamma, threads)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_route_equal(g, w)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_queries", [1, 2, 5])
def test_route_quantized_many_is_route_bit_for_bit_on_clustered_banks(threads, n_queries):
    """On a bank large enough to prune (most rows ruled out by their bounds) and over blocks of the shared
    pass that end inside the bank, with unordered and ordered support sets and the known weights."""
    embeddings, capability, _ = clustered_bank(5003, 384, 7, seed=n_queries)
    queries = queries_near(embeddings, n_queries, seed=threads)
    quantized = kernels.quantize_rows(embeddings)
    bits = kernels.capability_bits(capability)
    n_base, gamma = [50, 400, 7, 1, 5003][:n_queries], [0.95, 0.9, 0.5, 1.0, 0.0][:n_queries]
    for ordered in (True, False):
        got = kernels.route_quantized_many(
            quantized, embeddings, queries, capability, n_base, gamma, threads, capability_bits=bits, ordered=ordered, return_known=True
        )
        for q, nb, g, found in zip(queries, n_base, gamma, got):
            want = kernels.route(embeddings, q, capability, nb, g, threads, capability_bits=bits, ordered=ordered, return_known=True)
            assert len(found) == 4 and all(np.array_equal(a, b) for a, b in zip(found, want))


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
    for rows, sims, votes in kernels.route_quantized_many(kernels.quantize_rows(e), e, q, m, [3, 1], [0.95, 0.5]):
        assert rows.size == 0 and sims.size == 0
        np.testing.assert_array_equal(votes, np.zeros(2))
    eye = np.eye(4, dtype=np.float32)
    assert kernels.route_quantized_many(kernels.quantize_rows(eye), eye, np.empty((0, 4)), np.ones((1, 4), np.int8), [], []) == []


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
    with pytest.raises(ValueError, match=message):
        kernels.route_quantized_many(kernels.quantize_rows(e), e, queries, np.ones((2, 4), dtype=np.int8), n_base, gamma)


def test_route_quantized_many_refuses_an_int8_copy_of_another_bank():
    e = np.eye(4, dtype=np.float32)
    other = kernels.quantize_rows(np.eye(5, 4, dtype=np.float32))
    with pytest.raises(ValueError, match="quantized codes must be int8 of shape"):
        kernels.route_quantized_many(other, e, np.ones((1, 4)), np.ones((2, 4), dtype=np.int8), [1], [0.5])
