"""The ``smcs`` command line: bank inspection, routing, and a self-contained demo."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from .bank import Bank, BankFormatError, ModelInfo, Question
from .core import Policy, RouteDecision, Router
from .synthetic import clustered_bank, queries_near


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smcs`` console script; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, BankFormatError, OSError, msgspec.ValidationError) as exc:
        print(f"smcs: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smcs", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="build a synthetic bank, route held-out questions, report timing")
    demo.add_argument("--questions", type=int, default=20000, help="bank size N (default 20000)")
    demo.add_argument("--dim", type=int, default=384, help="embedding dimension d (default 384)")
    demo.add_argument("--models", type=int, default=15, help="number of models R (default 15)")
    demo.add_argument("--queries", type=int, default=200, help="held-out questions to route (default 200)")
    demo.add_argument("--path", type=Path, help="write the bank here (default: a temporary directory)")
    _add_policy_options(demo)
    demo.set_defaults(run=_run_demo)

    route = commands.add_parser("route", help="route one embedding over a bank and print the decision as JSON")
    route.add_argument("bank", type=Path, help="bank directory")
    route.add_argument("--embedding", type=Path, required=True, help="query embedding: a .npy vector or a JSON list")
    route.add_argument("--seed", type=int, help="seed of the exploration subsets (default: random, reported)")
    _add_policy_options(route)
    route.set_defaults(run=_run_route)

    bank = commands.add_parser("bank", help="inspect a bank")
    bank_commands = bank.add_subparsers(required=True, metavar="ACTION")
    info = bank_commands.add_parser("info", help="version, sizes, embedder and per-model accuracy")
    info.add_argument("path", type=Path)
    info.set_defaults(run=_run_bank_info)
    validate = bank_commands.add_parser("validate", help="verify every file of the current version (hashes included)")
    validate.add_argument("path", type=Path)
    validate.set_defaults(run=_run_bank_validate)
    return parser


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    defaults = Policy()
    group = parser.add_argument_group("policy (defaults are the paper's)")
    group.add_argument("--k", type=int, default=defaults.k, help=f"referencers K (default {defaults.k})")
    group.add_argument("--n-base", type=int, default=defaults.n_base, help=f"N_base of Eq 3 (default {defaults.n_base})")
    group.add_argument("--gamma", type=float, default=defaults.gamma, help=f"tolerance γ of Eq 3 (default {defaults.gamma})")
    group.add_argument("--k-drop", type=int, default=defaults.k_drop, help=f"references dropped per subset (default {defaults.k_drop})")
    group.add_argument("--n", type=int, default=defaults.n, help=f"exploration subsets (default {defaults.n})")
    group.add_argument("--aggregator", help="aggregator model (default: the bank's most accurate)")
    group.add_argument("--threads", type=int, help="route kernel threads (default: by bank size)")


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(
        k=args.k,
        n_base=args.n_base,
        gamma=args.gamma,
        k_drop=args.k_drop,
        n=args.n,
        aggregator=args.aggregator,
        threads=args.threads,
    )


def _run_route(args: argparse.Namespace) -> int:
    router = Router(Bank.open(args.bank), _policy(args))
    decision = router.route(_read_embedding(args.embedding), seed=args.seed)
    print(msgspec.json.format(msgspec.json.encode(decision).decode()))
    return 0


def _read_embedding(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    try:
        return np.asarray(json.loads(path.read_text()), dtype=np.float64)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"--embedding {path}: not a JSON list of numbers ({exc})") from None


def _run_bank_info(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    m = bank.capability
    known = (m >= 0).sum(axis=1)
    accuracy = np.divide((m == 1).sum(axis=1), known, out=np.full(len(known), np.nan), where=known > 0)
    print(f"bank {bank.path}  version {bank.version}  created {bank.manifest.created}")
    print(f"questions {bank.n_questions}  models {bank.n_models}  embedder {bank.manifest.embedder.id} (dim {bank.dim})")
    width = max((len(name) for name in bank.model_names), default=5)
    print(f"{'model':<{width}}  accuracy  evaluated")
    for name, acc, count in zip(bank.model_names, accuracy, known):
        print(f"{name:<{width}}  {acc:8.3f}  {count:9d}")
    return 0


def _run_bank_validate(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    bank.validate()
    print(f"bank {bank.path} version {bank.version}: valid ({bank.n_questions} questions, {bank.n_models} models)")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    policy = _policy(args)
    if args.queries < 1:
        raise ValueError(f"--queries must be >= 1, got {args.queries}")
    with tempfile.TemporaryDirectory(prefix="smcs-demo-") as scratch:
        path = args.path or Path(scratch) / "bank"
        print(f"building a synthetic bank: {args.questions} questions x {args.dim} dims, {args.models} models -> {path}")
        embeddings, capability, topics = clustered_bank(args.questions, args.dim, args.models)
        bank = Bank.create(
            path,
            embeddings=embeddings,
            capability=capability,
            questions=[Question(id=f"q{i}", text=f"synthetic question {i}", source=f"topic-{t}") for i, t in enumerate(topics.tolist())],
            models=[ModelInfo(name=f"model-{r:02d}") for r in range(args.models)],
        )
        started = time.perf_counter()
        router = Router(Bank.open(path), policy)
        print(f"router ready in {1e3 * (time.perf_counter() - started):.0f} ms (bank {router.bank.version})")
        queries = queries_near(embeddings, args.queries)
        timings = []
        for i, query in enumerate(queries):
            started = time.perf_counter()
            decision = router.route(query, seed=i)
            timings.append(time.perf_counter() - started)
        print(f"routed {len(queries)} questions: median {1e6 * np.median(timings):.0f} µs, p99 {1e6 * np.quantile(timings, 0.99):.0f} µs per route")
        print("last decision:")
        print(msgspec.json.format(msgspec.json.encode(_summary(decision)).decode()))
        del bank, router
    return 0


def _summary(decision: RouteDecision) -> dict[str, object]:
    """The decision with the support set shortened to its size and top rows, for printing."""
    return {
        "referencers": decision.referencers,
        "votes": [round(v, 3) for v in decision.votes],
        "aggregator": decision.aggregator,
        "support_size": len(decision.support_rows),
        "top_support": [[r, round(s, 4)] for r, s in zip(decision.support_rows[:5], decision.support_similarities[:5])],
        "subsets": decision.subsets,
        "seed": decision.seed,
        "bank_version": decision.bank_version,
    }


if __name__ == "__main__":
    raise SystemExit(main())
