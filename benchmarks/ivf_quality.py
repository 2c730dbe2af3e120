"""Quality of IVF (approximate) retrieval against the exact kernel: support-set recall and top-K agreement.

Used by ``test_approximate.py`` on synthetic banks, and runnable on a real bank and real queries::

    .venv/bin/python benchmarks/ivf_quality.py BANK QUERIES [--nlist N] [--nprobe 4 8 16] [--queries 1000]

or on a synthetic bank of the benchmarks (``bench_data.make_bank``: N rows of dimension D in topics of
TOPIC_ROWS rows on average, queries drawn near its rows)::

    .venv/bin/python benchmarks/ivf_quality.py --synthetic 100000 384 50 --nlist 4096 --nprobe 128 512

``BANK`` is a bank directory (its index is trained here, with ``--nlist``, when it has none); ``QUERIES``
is a second bank whose rows are the queries (e.g. the held-out split of the same import). For each
``nprobe`` it prints the mean and minimum recall of the exact support set, the share of queries whose
support set is found whole (recall = 1) and at least 99 %, the share whose top-K referencers are the
exact kernel's, the share of bank rows scanned and the median time of one route (probe, scan, votes).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_data import GAMMA, N_BASE, TOP_K, BankSize, make_bank, perturbed_rows

import smcs.kernels as sk
from smcs import Bank
from smcs.bank import ivf
from smcs.core.router import route_ivf


@dataclass(frozen=True)
class ExactRoute:
    """The exact kernel's support rows and top-K referencers for one query."""

    rows: np.ndarray
    top: np.ndarray


@dataclass(frozen=True)
class Quality:
    """IVF retrieval measured against the exact routes of the same queries."""

    nprobe: int
    recall_mean: float
    recall_min: float
    share_recall_1: float
    share_recall_099: float
    share_same_top: float
    scanned_share: float
    route_ms: float

    def row(self) -> str:
        """One markdown table row."""
        return (
            f"| {self.nprobe} | {self.recall_mean:.4f} | {self.recall_min:.3f} | {self.share_recall_1:.3f} "
            f"| {self.share_recall_099:.3f} | {self.share_same_top:.3f} | {self.scanned_share:.4f} | {self.route_ms:.2f} |"
        )


TABLE_HEADER = (
    "| nprobe | recall mean | recall min | recall = 1 | recall ≥ 0.99 | same top-K | rows scanned | route ms |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def exact_routes(embeddings: np.ndarray, capability: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> list[ExactRoute]:
    """The exact kernel's route of every query."""
    routes = []
    for query in queries:
        rows, _, votes = sk.route(embeddings, query, capability, N_BASE, GAMMA)
        routes.append(ExactRoute(rows, sk.top_k(votes, k)))
    return routes


ApproximateRoute = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""A query's (support rows, top-K) by some approximate engine."""


def smcs_ivf(embeddings: np.ndarray, capability: np.ndarray, index: ivf.IVFIndex, nprobe: int, k: int = TOP_K) -> ApproximateRoute:
    """The IVF route at ``nprobe`` as ``Router`` routes it (``route_ivf``), then the top-K."""

    def route(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, _, votes = route_ivf(index, embeddings, query, capability, N_BASE, GAMMA, nprobe)
        return rows, sk.top_k(votes, k)

    return route


def measure(route: ApproximateRoute, index: ivf.IVFIndex, queries: np.ndarray, exact: list[ExactRoute], nprobe: int) -> Quality:
    """Recall and top-K agreement of ``route`` (probing ``nprobe`` lists of ``index``) over ``queries``,
    against their exact routes."""
    recalls, same_top, scanned, seconds = [], 0, 0, []
    for query, want in zip(queries, exact, strict=True):
        start = time.perf_counter()
        rows, top = route(query)
        seconds.append(time.perf_counter() - start)
        n_scanned = index.positions(query, nprobe).size
        recalls.append(np.intersect1d(rows, want.rows).size / max(want.rows.size, 1))
        same_top += bool(np.array_equal(top, want.top))
        scanned += n_scanned
    r = np.asarray(recalls)
    return Quality(
        nprobe=nprobe,
        recall_mean=float(r.mean()),
        recall_min=float(r.min()),
        share_recall_1=float(np.mean(r == 1.0)),
        share_recall_099=float(np.mean(r >= 0.99)),
        share_same_top=same_top / len(queries),
        scanned_share=scanned / (len(queries) * index.n_rows),
        route_ms=1e3 * float(np.median(seconds)),
    )


def main(argv: list[str] | None = None) -> int:
    """Print the quality table for a real bank and its held-out queries."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bank", type=Path, nargs="?", help="a bank directory (or give --synthetic)")
    parser.add_argument("queries", type=Path, nargs="?", help="a bank whose rows are the queries")
    parser.add_argument(
        "--synthetic", type=int, nargs=3, metavar=("N", "D", "TOPIC_ROWS"), help="a synthetic bank of the benchmarks instead"
    )
    parser.add_argument("--nlist", type=int, default=None, help="lists when training (default: the bank's index, else sqrt rule)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--queries", type=int, default=1000, dest="count", help="queries used (the first ones)")
    parser.add_argument("--k", type=int, default=TOP_K, help="referencers compared, in order (default 7, at most the models)")
    args = parser.parse_args(argv)
    if (args.synthetic is None) == (args.bank is None or args.queries is None):
        parser.error("give BANK and QUERIES, or --synthetic N D TOPIC_ROWS")
    if args.synthetic is not None:
        size = BankSize(*args.synthetic)
        synthetic = make_bank(size)
        embeddings, capability, index = synthetic.embeddings, synthetic.capability, None
        queries = perturbed_rows(embeddings, size, args.count, purpose=4)
        name = f"synthetic {size.label}"
    else:
        bank = Bank.open(args.bank)
        embeddings, capability, index = np.asarray(bank.embeddings), np.asarray(bank.capability), bank.index
        queries = np.ascontiguousarray(Bank.open(args.queries).embeddings[: args.count])
        name = str(bank.path)
    if index is None or args.nlist is not None:
        index = ivf.train(embeddings, args.nlist).with_vectors(embeddings)
    k = min(args.k, capability.shape[0])
    exact = exact_routes(embeddings, capability, queries, k)
    print(f"bank {name} ({embeddings.shape[0]} x {embeddings.shape[1]}, {capability.shape[0]} models), {len(queries)} queries, "
          f"nlist {index.nlist}, N_base {N_BASE}, gamma {GAMMA}, K {k}\n")
    print(TABLE_HEADER)
    for nprobe in args.nprobe:
        route = smcs_ivf(embeddings, capability, index, nprobe, k)
        print(measure(route, index, queries, exact, nprobe).row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
