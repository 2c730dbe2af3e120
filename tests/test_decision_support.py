"""The decision's support columns (``SupportValues``): ordered and turned into Python values only when read,
and then the same support set as Eq (3)'s reference, read from any number of threads."""

from __future__ import annotations

import threading

import msgspec
import numpy as np
import pytest

from smcs import Bank, Policy, RouteCall, RouteDecision, Router
from smcs.core.decision import SupportValues, enc_hook, support_columns
from smcs.kernels import reference
from smcs.synthetic import queries_near
from support.banks import clustered_test_bank

POLICY = Policy(k=4, n_base=200, gamma=0.5, k_drop=1, n=3)
"""A wide support set (N_base a third of the bank, γ = 0.5), so that the kernel's order is far from Eq (3)'s."""


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Bank:
    return clustered_test_bank(tmp_path_factory.mktemp("bank") / "b")


@pytest.fixture(scope="module")
def queries(bank: Bank) -> np.ndarray:
    return queries_near(np.asarray(bank.embeddings), 8, seed=5)


def _reference_support(bank: Bank, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unit = (query / np.linalg.norm(query)).astype(np.float32)
    return reference.support_set(reference.similarities(np.asarray(bank.embeddings), unit), POLICY.n_base, POLICY.gamma)


def test_columns_are_eq3_support_set_in_order(bank, queries):
    router = Router(bank, POLICY)
    for query in queries:
        decision = router.route(query, seed=1)
        assert isinstance(decision.support_rows, SupportValues)
        rows, sims = _reference_support(bank, query)
        assert len(decision.support_rows) == len(rows) > 50
        assert decision.support_rows == rows.tolist()
        np.testing.assert_allclose(np.asarray(decision.support_similarities), sims, atol=1e-6)
        assert all(type(r) is int for r in decision.support_rows)
        assert all(type(s) is float for s in decision.support_similarities)
        assert list(decision.support_similarities) == sorted(decision.support_similarities, reverse=True)


def test_batched_routes_give_equal_columns(bank, queries):
    router = Router(bank, POLICY)
    batch = router.route_many([RouteCall(q, 3) for q in queries])
    for query, decision in zip(queries, batch):
        single = router.route(query, seed=3)
        assert decision == single
        assert decision.support_rows == single.support_rows
        np.testing.assert_array_equal(np.asarray(decision.support_similarities), np.asarray(single.support_similarities))


def test_sequence_behaviour_matches_a_list():
    rows = np.array([5, 2, 9, 4], dtype=np.int64)
    sims = np.array([0.5, 0.75, 0.5, 0.25], dtype=np.float32)
    got_rows, got_sims = support_columns(rows, sims, ordered=False)
    want = [2, 5, 9, 4]  # Ŝ descending, the tie of rows 5 and 9 to the lower row
    assert got_rows == want and want == got_rows and got_rows != [2, 9, 5, 4]
    assert got_sims == [0.75, 0.5, 0.5, 0.25]
    assert got_rows[0] == 2 and got_rows[-1] == 4 and got_rows[1:3] == [5, 9]
    assert list(reversed(got_rows)) == want[::-1] and 9 in got_rows and got_rows.index(9) == 2
    assert repr(got_rows) == repr(want) and len(got_rows) == 4 and bool(got_rows)
    assert (got_rows == "2594") is False
    with pytest.raises(TypeError):
        hash(got_rows)
    assert not support_columns(rows[:0], sims[:0], ordered=False)[0]


def test_arrays_are_shared_read_only_and_converted_on_request():
    rows, sims = support_columns(np.array([3, 1], dtype=np.int64), np.array([0.25, 0.5], dtype=np.float32), ordered=False)
    array = np.asarray(rows)
    assert array.dtype == np.int64 and np.shares_memory(array, np.asarray(rows))
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 7
    assert rows == [1, 3]  # the decision's values are untouched
    copy = np.array(rows, copy=True)
    copy[0] = 7
    assert rows == [1, 3]
    assert np.asarray(sims, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(sims, dtype=np.float64), [0.5, 0.25])


def test_encodes_through_the_hook_only(bank, queries):
    decision = Router(bank, POLICY).route(queries[0], seed=2)
    builtins = decision.to_builtins()
    assert builtins["support_rows"] == list(decision.support_rows)
    assert msgspec.json.decode(msgspec.json.encode(decision, enc_hook=enc_hook), type=RouteDecision) == decision
    with pytest.raises(TypeError, match="SupportValues"):
        msgspec.to_builtins(decision)
    with pytest.raises(NotImplementedError, match="object"):
        enc_hook(object())


def test_concurrent_first_reads_agree(bank, queries):
    router = Router(bank, POLICY)
    want = router.route(queries[1], seed=4)
    expected = (list(want.support_rows), list(want.support_similarities))
    for _ in range(5):
        decision = router.route(queries[1], seed=4)  # fresh, unread columns
        start = threading.Barrier(8)
        seen: list[tuple[list, list]] = []

        def read(d: RouteDecision = decision) -> None:
            start.wait()
            seen.append((np.asarray(d.support_rows).tolist(), list(d.support_similarities)))

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [expected] * 8


def test_without_support_the_columns_are_empty_lists(bank, queries):
    decision = Router(bank, POLICY).route(queries[0], seed=2, support=False)
    assert decision.support_rows == [] and decision.support_similarities == []
    assert type(decision.support_rows) is list
