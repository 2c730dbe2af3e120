"""``kernels.route_rows`` (Eqs (2)–(4) over a subset of bank rows) against its numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_strategies import FAST, FEW, assert_route_equal, dyadic_banks, normal_bank

from smcs import kernels
from smcs.kernels import reference


@st.composite
def banks_with_rows(draw, max_n: int = 48, rng_only: bool = False):
    """A dyadic bank and a distinct subset of its rows in a drawn (unsorted) order, possibly empty or all."""
    case = draw(dyadic_banks(max_n=max_n, rng_only=rng_only))
    kind = draw(st.sampled_from(["subset", "all", "empty"]))
    if kind == "all":
        rows = np.arange(case.n)
    elif kind == "empty":
        rows = np.empty(0, dtype=np.int64)
    else:
        rows = np.asarray(draw(st.lists(st.integers(0, max(case.n - 1, 0)), unique=True, max_size=case.n)) if case.n else [])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return case, rng.permutation(np.asarray(rows, dtype=np.int64))


@FAST
@given(banks_with_rows())
def test_route_rows_equals_reference_on_dyadic_all_thread_counts(drawn):
    case, rows = drawn
    want = reference.route_rows(case.embeddings, rows, case.query, case.capability, case.n_base, case.gamma)
    for threads in (1, 2, 3, None):
        got = kernels.route_rows(case.embeddings, rows, case.query, case.capability, case.n_base, case.gamma, threads)
        assert_route_equal(got, want)


@FEW
@given(banks_with_rows(max_n=4000, rng_only=True))
def test_route_rows_equals_reference_on_large_dyadic(drawn):
    case, rows = drawn
    want = reference.route_rows(case.embeddings, rows, case.query, case.capability, case.n_base, case.gamma)
    for threads in (1, 2):
        got = kernels.route_rows(case.embeddings, rows, case.query, case.capability, case.n_base, case.gamma, threads)
        assert_route_equal(got, want)


@FAST
@given(banks_with_rows())
def test_a_reordered_copy_with_labels_routes_as_the_bank_itself(drawn):
    case, rows = drawn
    order = np.random.default_rng(case.n).permutation(case.n).astype(np.int64)  # copy row i is bank row order[i]
    copy = np.ascontiguousarray(case.embeddings[order])
    positions = np.argsort(order)[rows]  # where each wanted bank row sits in the copy
    want = reference.route_rows(case.embeddings, rows, case.query, case.capability, case.n_base, case.gamma)
    assert_route_equal(
        reference.route_rows(copy, positions, case.query, case.capability, case.n_base, case.gamma, order), want
    )
    for threads in (1, 2):
        got = kernels.route_rows(
            copy, positions, case.query, case.capability, case.n_base, case.gamma, threads, labels=order
        )
        assert_route_equal(got, want)


def test_labels_of_the_wrong_shape_or_type_are_named():
    case = normal_bank(0, n=10, d=8, r=3, n_base=4, gamma=0.95)
    for labels in (np.arange(9), np.arange(10, dtype=np.int32)):
        with pytest.raises(ValueError, match="labels must be an int64 vector of the 10"):
            kernels.route_rows(case.embeddings, np.arange(3), case.query, case.capability, 4, 0.95, labels=labels)


@pytest.mark.parametrize("threads", [1, 2])
def test_every_row_in_any_order_is_the_exact_route_bit_for_bit(threads):
    case = normal_bank(3, n=5000, d=64, r=6, n_base=400, gamma=0.95)
    rows = np.random.default_rng(0).permutation(case.n)
    exact = kernels.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma, threads=1)
    got = kernels.route_rows(case.embeddings, rows, case.query, case.capability, case.n_base, case.gamma, threads)
    assert_route_equal(got, exact)


def test_ties_go_to_the_lower_bank_row_whatever_the_order_of_rows():
    embeddings = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (6, 1))
    capability = np.ones((2, 6), dtype=np.int8)
    rows = np.array([5, 1, 3, 0], dtype=np.int64)
    got_rows, sims, votes = kernels.route_rows(embeddings, rows, np.array([1.0, 0.0]), capability, 2, 1.0)
    np.testing.assert_array_equal(got_rows, [0, 1, 3, 5])
    np.testing.assert_array_equal(sims, np.ones(4, dtype=np.float32))
    np.testing.assert_array_equal(votes, [4.0, 4.0])


def test_n_base_beyond_the_subset_uses_its_smallest_similarity():
    embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]], dtype=np.float32)
    capability = np.array([[1, 0, 1, 1]], dtype=np.int8)
    got_rows, _, _ = kernels.route_rows(embeddings, np.array([2, 1]), np.array([1.0, 0.0]), capability, 10, 1.0)
    np.testing.assert_array_equal(got_rows, [1, 2])  # threshold = min over the subset = Ŝ_2 = 0


def test_empty_rows_give_an_empty_support_and_zero_votes():
    case = normal_bank(0, n=10, d=8, r=3, n_base=4, gamma=0.95)
    rows, sims, votes = kernels.route_rows(case.embeddings, np.empty(0, np.int64), case.query, case.capability, 4, 0.95)
    assert rows.size == 0 and sims.size == 0
    np.testing.assert_array_equal(votes, np.zeros(3))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.array([0, 10]), "rows must index the 10 bank questions"),
        (np.array([-1]), "rows must index the 10 bank questions"),
        (np.array([[0, 1]]), "rows must be a 1-D vector"),
        (np.array([0.0, 1.0]), "rows must hold integer row indices"),
    ],
)
def test_bad_rows_are_named(rows, message):
    case = normal_bank(0, n=10, d=8, r=3, n_base=4, gamma=0.95)
    with pytest.raises(ValueError, match=message):
        kernels.route_rows(case.embeddings, rows, case.query, case.capability, 4, 0.95)


def test_nan_query_is_refused():
    case = normal_bank(0, n=10, d=8, r=3, n_base=4, gamma=0.95)
    query = case.query.copy()
    query[0] = np.nan
    with pytest.raises(ValueError, match="query"):
        kernels.route_rows(case.embeddings, np.arange(5), query, case.capability, 4, 0.95)
