"""Eight routes at once: ``kernels.route_many`` against eight ``kernels.route`` calls, numpy and faiss.

What a busy server does with the requests that queued during one route (``[server] route_batch``). Every
competitor routes the same ``BATCH`` queries on the bank of each size; before timing, each of its routes
is checked against ``kernels.route`` on that query (``check_route``). The floor is one read of the bank
(``floor_pass``), as in the single-route benchmark: a batch cannot cost less. ``report.py`` prints the
table (the per-query time, and each competitor's time over the floor and over ``smcs-route-x8``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from bench_data import (
    GAMMA,
    N_BASE,
    TOP_K,
    Bank,
    Route,
    check_route,
    expected_route,
    faiss,
    floor_pass,
    perturbed_rows,
    votes_and_top,
)

from smcs import kernels as sk

BATCH = 8
"""Queries per batch."""

BatchFn = Callable[[], list[Route]]


def _queries(bank: Bank) -> np.ndarray:
    return perturbed_rows(bank.embeddings, bank.size, BATCH, purpose=5)


def _smcs_many(bank: Bank, queries: np.ndarray) -> BatchFn:
    e, m = bank.embeddings, bank.capability
    bits = sk.capability_bits(m)  # once per bank, as the router does

    def run() -> list[Route]:
        found = sk.route_many(e, queries, m, [N_BASE] * BATCH, [GAMMA] * BATCH, capability_bits=bits)
        return [Route(rows, sims, sk.top_k(votes, TOP_K)) for rows, sims, votes in found]

    return run


def _smcs_singles(bank: Bank, queries: np.ndarray) -> BatchFn:
    e, m = bank.embeddings, bank.capability
    bits = sk.capability_bits(m)

    def run() -> list[Route]:
        out = []
        for q in queries:
            rows, sims, votes = sk.route(e, q, m, N_BASE, GAMMA, capability_bits=bits)
            out.append(Route(rows, sims, sk.top_k(votes, TOP_K)))
        return out

    return run


def _numpy_gemm(bank: Bank, queries: np.ndarray) -> BatchFn:
    """One BLAS gemm for all the queries, then per query: clip, partition for max_k, mask, vote."""
    e, m = bank.embeddings, bank.capability
    n = e.shape[0]
    pos = n - min(N_BASE, n)

    def run() -> list[Route]:
        all_sims = np.maximum(queries @ e.T, np.float32(0.0))
        out = []
        for s in all_sims:
            threshold = np.float64(GAMMA) * np.float64(np.partition(s, pos)[pos])
            rows = np.flatnonzero(s >= threshold)
            sims = s[rows]
            out.append(Route(rows, sims, votes_and_top(m, rows, sims)))
        return out

    return run


def _faiss_flat(bank: Bank, queries: np.ndarray) -> BatchFn:
    """faiss ``IndexFlatIP``: one ``search`` of all the queries for max_k, then one ``range_search`` each
    (the radii differ), filtered with ≥ in float64 as the kernel compares."""
    if faiss is None:
        raise ImportError("faiss is not installed (pip install faiss-cpu)")
    e, m = bank.embeddings, bank.capability
    k = min(N_BASE, e.shape[0])
    index = faiss.IndexFlatIP(e.shape[1])
    index.add(e)

    def run() -> list[Route]:
        top_sims, _ = index.search(queries, k)
        out = []
        for q, kth in zip(queries, top_sims[:, k - 1]):
            threshold = np.float64(GAMMA) * max(np.float64(kth), 0.0)
            radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf))) if threshold > 0 else -np.inf
            _, sims, rows = index.range_search(q[None, :], radius)
            np.maximum(sims, np.float32(0.0), out=sims)
            keep = sims >= threshold
            rows, sims = rows[keep], sims[keep]
            out.append(Route(rows, sims, votes_and_top(m, rows, sims)))
        return out

    return run


COMPETITORS: dict[str, Callable[[Bank, np.ndarray], Callable[[], object]]] = {
    "smcs-route-many": _smcs_many,
    "smcs-route-x8": _smcs_singles,
    "numpy-gemm": _numpy_gemm,
    "faiss-flat": _faiss_flat,
    "floor": lambda bank, _queries: floor_pass(None)(bank),
}


@pytest.mark.parametrize("name", list(COMPETITORS))
def test_route_batch(benchmark, bank: Bank, threads: int, name: str) -> None:
    """Time one competitor's batch of ``BATCH`` routes, after checking each route against smcs's."""
    if name == "faiss-flat" and faiss is None:
        pytest.skip("faiss is not installed")
    queries = _queries(bank)
    run = COMPETITORS[name](bank, queries)
    result = run()
    if name != "floor":
        for q, got in zip(queries, result):  # type: ignore[call-overload]
            check_route(name, expected_route(Bank(bank.size, bank.embeddings, bank.capability, q)), got)
    benchmark.group = f"route x{BATCH} {bank.size.label}"
    benchmark.extra_info.update(
        batch_competitor=name, batch=BATCH, n=bank.size.n, d=bank.size.d, kind=bank.size.kind, threads=threads
    )
    benchmark(run)
