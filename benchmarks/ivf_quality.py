"""Quality of IVF (approximate) retrieval against the exact kernel: support-set recall and top-K agreement.

Used by ``test_approximate.py`` on synthetic banks, and runnable on a real bank and real queries::

    .venv/bin/python benchmarks/ivf_quality.py BANK QUERIES [--nlist N] [--nprobe 4 8 16] [--queries 1000]

``BANK`` is a bank directory (its index is trained here, with ``--nlist``, when it has none); ``QUERIES``
is a second bank whose rows are the queries (e.g. the held-out split of the same import). For each
``nprobe`` it prints the mean and minimum recall of the exact support set, the share of queries whose
support set is found whole (recall = 1) and at least 99 %, the share whose top-K referencers are the
exact kernel's, and the share of bank rows scanned.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench_data import GAMMA, N_BASE, TOP_K

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

    def row(self) -> str:
        """One markdown table row."""
        return (
            f"| {self.nprobe} | {self.recall_mean:.4f} | {self.recall_min:.3f} | {self.share_recall_1:.3f} "
            f"| {self.share_recall_099:.3f} | {self.share_same_top:.3f} | {self.scanned_share:.4f} |"
        )


TABLE_HEADER = (
    "| nprobe | recall mean | recall min | recall = 1 | recall ≥ 0.99 | same top-K | rows scanned |\n"
    "|---:|---:|---:|---:|---:|---:|---:|"
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
    recalls, same_top, scanned = [], 0, 0
    for query, want in zip(queries, exact, strict=True):
        rows, top = route(query)
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
    )


def main(argv: list[str] | None = None) -> int:
    """Print the quality table for a real bank and its held-out queries."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bank", type=Path)
    parser.add_argument("queries", type=Path, help="a bank whose rows are the queries")
    parser.add_argument("--nlist", type=int, default=None, help="lists when training (default: the bank's index, else sqrt rule)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--queries", type=int, default=1000, dest="count", help="queries used (the first ones)")
    parser.add_argument("--k", type=int, default=TOP_K, help="referencers compared, in order (default 7, at most the models)")
    args = parser.parse_args(argv)
    bank = Bank.open(args.bank)
    queries = np.ascontiguousarray(Bank.open(args.queries).embeddings[: args.count])
    index = bank.index
    if index is None or args.nlist is not None:
        index = ivf.train(bank.embeddings, args.nlist).with_vectors(bank.embeddings)
    k = min(args.k, bank.n_models)
    exact = exact_routes(bank.embeddings, bank.capability, queries, k)
    print(f"bank {bank.path} ({bank.n_questions} x {bank.dim}, {bank.n_models} models), {len(queries)} queries, "
          f"nlist {index.nlist}, N_base {N_BASE}, gamma {GAMMA}, K {k}\n")
    print(TABLE_HEADER)
    for nprobe in args.nprobe:
        route = smcs_ivf(bank.embeddings, bank.capability, index, nprobe, k)
        print(measure(route, index, queries, exact, nprobe).row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
