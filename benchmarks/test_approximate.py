"""Approximate (IVF) retrieval against the exact kernel and against faiss's IVF, on the same data.

For each bank (N = 1e5 by default, 1e6 with ``--bench-large``; d = 384), in two geometries (the route
benchmark's topic clusters of 50 rows, where the support set of N_base = 400 reaches far past the
query's own topic, and topics of 1000 rows, where it mostly stays inside), one index is trained
(``smcs.bank.ivf.train``, the default nlist) and shared by every competitor:

* ``exact``: ``smcs.kernels.route`` over the whole bank, the baseline the approximate modes must match;
* ``smcs-ivf-P``: probe P lists, then ``kernels.route_rows`` over their rows (what ``Router`` does);
* ``faiss-ivf-P``: faiss ``IndexIVFFlat`` over the same centroids (inner product, nprobe P): ``search`` for
  the N_base-th similarity, then ``range_search`` for every row above γ times it — two passes over the
  probed lists, as faiss offers no fused form.

Before timing, each approximate competitor routes ``QUALITY_QUERIES`` queries (bank rows plus noise) and
its recall of the exact support set and the share of queries with the exact ordered top-K are recorded
in ``extra_info``; the timed call then cycles through the same queries. ``report.py`` does not read these
runs; ``pytest benchmarks/test_approximate.py --benchmark-only --benchmark-json=a.json`` then
``python benchmarks/report_approximate.py a.json`` prints the table.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from bench_data import GAMMA, N_BASE, TOP_K, Bank, BankSize, faiss, make_bank, perturbed_rows
from ivf_quality import ApproximateRoute, ExactRoute, exact_routes, measure, smcs_ivf

import smcs.kernels as sk
from smcs.bank import ivf

SIZES = (BankSize(100_000, 384), BankSize(100_000, 384, cluster_rows=1000))
LARGE_SIZES = (BankSize(1_000_000, 384), BankSize(1_000_000, 384, cluster_rows=1000))
QUALITY_QUERIES = 200
NPROBES = (8, 16, 32)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``approx_size`` over this run's sizes, at session scope."""
    if "approx_size" in metafunc.fixturenames:
        sizes = SIZES + (LARGE_SIZES if metafunc.config.getoption("--bench-large") else ())
        metafunc.parametrize("approx_size", sizes, ids=[s.id for s in sizes], scope="module")


class Setup:
    """One size's bank, queries, index, exact routes and (lazily) faiss index, built once."""

    def __init__(self, size: BankSize) -> None:
        self.bank: Bank = make_bank(size)
        self.queries = perturbed_rows(self.bank.embeddings, size, QUALITY_QUERIES, purpose=4)
        self.index = ivf.train(self.bank.embeddings, seed=0).with_vectors(self.bank.embeddings)  # as committed
        self.exact: list[ExactRoute] = exact_routes(self.bank.embeddings, self.bank.capability, self.queries)
        self._faiss = None

    def faiss_index(self):  # noqa: ANN201 - a faiss object
        """faiss ``IndexIVFFlat`` (inner product) whose quantizer holds this index's centroids."""
        if self._faiss is None:
            d = self.bank.embeddings.shape[1]
            quantizer = faiss.IndexFlatIP(d)
            quantizer.add(np.ascontiguousarray(self.index.centroids))
            index = faiss.IndexIVFFlat(quantizer, d, self.index.nlist, faiss.METRIC_INNER_PRODUCT)
            index.add(self.bank.embeddings)
            self._faiss = (index, quantizer)
        return self._faiss[0]


@pytest.fixture(scope="module")
def setup(approx_size: BankSize) -> Setup:
    return Setup(approx_size)


def _faiss_route(setup: Setup, nprobe: int) -> ApproximateRoute:
    """(support rows, top-K) by faiss: the N_base-th similarity by ``search``, the rows by ``range_search``."""
    index = setup.faiss_index()
    index.nprobe = nprobe
    capability = setup.bank.capability

    def route(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = query[None, :]
        top_sims, _ = index.search(q, N_BASE)
        found = top_sims[0][top_sims[0] > -math.inf]
        threshold = GAMMA * max(float(found[-1]), 0.0) if found.size else 0.0
        radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf))) if threshold > 0 else -math.inf
        _, sims, rows = index.range_search(q, radius)
        np.maximum(sims, np.float32(0.0), out=sims)
        keep = sims >= threshold
        rows, sims = rows[keep], sims[keep]
        order = np.lexsort((rows, -sims))
        rows, sims = rows[order], sims[order].astype(np.float32)
        votes = sk.prior_vote(capability, rows, sims)
        return rows, sk.top_k(votes, TOP_K)

    return route


COMPETITORS = ["exact"] + [f"smcs-ivf-{p}" for p in NPROBES] + [f"faiss-ivf-{p}" for p in NPROBES]


@pytest.mark.parametrize("name", COMPETITORS)
def test_approximate_route(benchmark, setup: Setup, name: str) -> None:
    """Time one competitor cycling through the queries, after measuring its quality on them."""
    bank, index = setup.bank, setup.index
    e, m = bank.embeddings, bank.capability
    queries = itertools.cycle(setup.queries)
    if name == "exact":
        def run() -> object:
            rows, _, votes = sk.route(e, next(queries), m, N_BASE, GAMMA)
            return sk.top_k(votes, TOP_K)
        quality = None
    else:
        engine, nprobe = name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1])
        if engine == "faiss-ivf" and faiss is None:
            pytest.skip("faiss is not installed")
        route = smcs_ivf(e, m, index, nprobe) if engine == "smcs-ivf" else _faiss_route(setup, nprobe)
        quality = measure(route, index, setup.queries, setup.exact, nprobe)  # same centroids: same lists probed

        def run() -> object:
            return route(next(queries))
        # lists unrelated to similarity would find support rows at the rate rows are scanned
        assert quality.recall_mean > quality.scanned_share, f"{name}: recall {quality.recall_mean:.3f}: no better than chance"

    benchmark.group = f"approximate route {bank.size.label}"
    benchmark.extra_info.update(competitor=name, n=bank.size.n, d=bank.size.d, nlist=index.nlist)
    if quality is not None:
        benchmark.extra_info.update(dataclasses.asdict(quality))
    benchmark(run)
