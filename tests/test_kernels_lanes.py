"""The scans' summation order (``smcs.kernels.lanes``): pinned, so that every scan gives a row the same bits.

Each Ŝ is summed in 16 lanes (j mod 16), each lane folded as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)) per
8-lane half, the halves added, then the elements after the last whole 16 one at a time. The rows below have
one non-zero product per lane, all exact powers of two, so the lanes are exact and only the fold and the
tail round: numpy float32 arithmetic in the documented order must give the kernel's bits, where another
order (LLVM's own vectorisation, a different tree) gives other bits for many of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from smcs import kernels

F32 = np.float32


def _fold(lanes: np.ndarray) -> np.float32:
    a, b, c, d, e, f, g, h = (F32(x) for x in lanes)
    return F32(F32(F32(a + e) + F32(c + g)) + F32(F32(b + f) + F32(d + h)))


def _documented_order(row: np.ndarray, query: np.ndarray) -> np.float32:
    """Ŝ in the order the lanes document, for a row whose only non-zero products are in its first 16
    elements and its tail (every product exact)."""
    products = row.astype(np.float32) * query.astype(np.float32)
    whole = len(row) - len(row) % 16
    total = F32(_fold(products[:8]) + _fold(products[8:16])) if whole else F32(0.0)
    for p in products[whole:]:
        total = F32(total + p)
    return max(total, F32(0.0))


def _rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Rows with powers of two from 2^0 to 2^26 (random signs) in the first 16 elements and the tail,
    zeros between: sums of such values round differently in different orders."""
    rows = np.zeros((n, d), dtype=np.float32)
    whole = d - d % 16
    live = list(range(min(16, whole))) + list(range(whole, d))
    for column in live:
        rows[:, column] = np.ldexp(1.0, rng.integers(0, 27, n)) * rng.choice([-1.0, 1.0], n)
    return rows


@pytest.mark.parametrize("d", [16, 19, 32, 45, 384, 7])
def test_similarities_follow_the_documented_lane_order(d):
    rng = np.random.default_rng(d)
    rows = _rows(rng, 600, d)
    query = np.ones(d, dtype=np.float32)
    want = np.array([_documented_order(r, query) for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(kernels.similarities(rows, query), want)
    sequential = np.array([max(F32(np.cumsum(r * query, dtype=np.float32)[-1]), F32(0.0)) for r in rows])
    if d >= 16:  # the rows are built so that the order shows: plain left-to-right sums differ for many
        assert np.count_nonzero(sequential != want) > 10


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_queries", [2, 3, 4, 5])
def test_every_batch_and_row_subset_gives_the_lone_scans_bits(n_queries, threads):
    """Queries two at a time (and the odd one alone), rows four at a time for one query (and the rows left
    over alone), whole bank or a row list: the same Ŝ for every row."""
    rng = np.random.default_rng(n_queries)
    embeddings = rng.standard_normal((1003, 45)).astype(np.float32)
    queries = rng.standard_normal((n_queries, 45)).astype(np.float32)
    capability = rng.integers(-1, 2, (3, 1003)).astype(np.int8)
    lone = [kernels.similarities(embeddings, q) for q in queries]
    batch = kernels.route_many(embeddings, queries, capability, [1003] * n_queries, [0.0] * n_queries, threads, ordered=False)
    for q, (rows, sims, _) in enumerate(batch):
        np.testing.assert_array_equal(sims, lone[q][rows])
    subset = np.sort(rng.choice(1003, 501, replace=False)).astype(np.int64)
    for q in range(n_queries):
        rows, sims, _ = kernels.route_rows(embeddings, subset, queries[q], capability, 501, 0.0, threads)
        np.testing.assert_array_equal(sims, lone[q][rows])
