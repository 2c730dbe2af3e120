"""The ``smcs`` command line: bank inspection, routing, answering, and a self-contained demo.

Exit statuses: 0 done; 1 the command ran but reports a failure (``health`` not serving, a build with
failed pairs, …); 2 the user's mistake (an ``SmcsError``, a file that cannot be read or decoded, a refused
RPC), printed as ``smcs: error: MESSAGE``; 70 a bug in smcs (any other exception), printed as
``smcs: internal error: TYPE: MESSAGE`` with the traceback when ``SMCS_TRACEBACK=1``; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import grpc
import msgspec
import numpy as np

from smcs import bundled
from smcs.kernels import configure_threads
from smcs.cli.ask import add_ask_parser, run_ask
from smcs.cli.bank import add_bank_parser, embed_with_bundled
from smcs.cli.info import add_info_parser, in_process_route_json, proto_json
from smcs.backends.config import LocalModelConfig
from smcs.bank import Bank, remote
from smcs.client import DEFAULT_TARGET, Client
from smcs.core import Policy, RouteDecision, Router
from smcs.core.pipeline import clamped_note
from smcs.core.question import check_question
from smcs.cli.policy_options import add_policy_options, policy_overrides
from smcs.cli.target import SERVER_HELP, server_target
from smcs.errors import InputError, SmcsError
from smcs.cli.data import add_data_parser
from smcs.config import Config, load_config
from smcs.cli.eval import add_eval_parser
from smcs.progress import Steps
from smcs.service import serve
from smcs.synthetic import create_clustered_bank, queries_near


EXIT_USAGE = 2
"""The user's mistake: a bad option, input file, configuration or request (as argparse's own errors)."""
EXIT_INTERNAL = 70
"""A bug in smcs (``EX_SOFTWARE`` of sysexits.h)."""
TRACEBACK_ENV = "SMCS_TRACEBACK"
"""Set to 1 (any value but empty or 0) to print the traceback of an internal error."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smcs`` console script; returns the process exit status.

    An ``SmcsError`` (every error smcs raises on purpose), an ``OSError`` (a file), a msgspec decoding
    error (the user's file) and a refused RPC are the user's to fix: one line ``smcs: error: MESSAGE``,
    status 2. Any other exception is a bug in smcs: ``smcs: internal error: TYPE: MESSAGE`` and a hint,
    the traceback too when ``SMCS_TRACEBACK=1``, status 70.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.run is not _run_serve:  # serve logs at INFO with times; the others print warnings as smcs: warning: ...
        _print_warnings()
    configure_threads()  # before the first parallel kernel of any command
    try:
        return args.run(args)
    except grpc.RpcError as exc:
        hint = ""
        if exc.code() == grpc.StatusCode.UNAVAILABLE and getattr(args, "server", None):
            hint = f" (is an smcs server listening at --server {args.server}? it takes HOST:PORT)"
        print(f"smcs: error: {exc.code().name}: {exc.details()}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except (SmcsError, OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        print(f"smcs: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else is a bug, reported as one
        print(f"smcs: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"smcs: this is a bug in smcs, please report it; {TRACEBACK_ENV}=1 in the environment prints the traceback",
              file=sys.stderr)
        if os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
            traceback.print_exc()
        return EXIT_INTERNAL


class _LevelFormatter(logging.Formatter):
    """``smcs: warning: MESSAGE``: how a command (other than ``serve``) shows what smcs logs."""

    def format(self, record: logging.LogRecord) -> str:
        return f"smcs: {record.levelname.lower()}: {record.getMessage()}"


def _print_warnings() -> None:
    """Log WARNING and above to stderr as ``smcs: warning: ...`` (when nothing configured logging yet): a
    router clamping K says so this way."""
    handler = logging.StreamHandler()
    handler.setFormatter(_LevelFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose innermost subcommand reports the arguments it does not know, with its
    own usage (``usage: smcs route ...``), instead of the top-level parser with the top-level usage."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None and self.prog != "smcs":
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def version() -> str:
    """The installed smcs distribution's version ("unknown" when smcs runs from a tree not installed)."""
    try:
        return importlib.metadata.version("smcs")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smcs", description=__doc__)
    parser.add_argument("--version", action="version", version=f"smcs {version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="build a synthetic bank, route held-out questions, report timing")
    demo.add_argument("--questions", type=int, default=20000, help="bank size N (default 20000)")
    demo.add_argument("--dim", type=int, default=384, help="embedding dimension d (default 384)")
    demo.add_argument("--models", type=int, default=15, help="number of models R (default 15)")
    demo.add_argument("--queries", type=int, default=200, help="held-out questions to route (default 200)")
    demo.add_argument("--path", type=Path, help="write the bank here (default: a temporary directory)")
    add_policy_options(demo)
    demo.set_defaults(run=_run_demo)

    route = commands.add_parser(
        "route", help="route one question through a server (or in-process over --bank) and print the decision"
    )
    route.add_argument("question", nargs="?", help="question text (embedded by the server's embedder, or the bundled one with --bank); or give --embedding")
    route.add_argument("--embedding", type=Path, help="query embedding: a .npy vector or a JSON list")
    where = route.add_mutually_exclusive_group()
    where.add_argument("--server", default=DEFAULT_TARGET, type=server_target, help=SERVER_HELP)
    where.add_argument("--bank", type=Path, help=(
        "route in this process over the bank directory instead of a server (its files' hashes are verified "
        "first; the policy defaults are the bundled pool's for a bank of its models, else the paper's)"))
    route.add_argument("--token", help="bearer token (or set SMCS_TOKEN)")
    route.add_argument("--seed", type=int, help="seed of the exploration subsets (default: random, reported)")
    route.add_argument("--debug", action="store_true", help="include the support questions' text and outcomes")
    route.add_argument("--json", action="store_true", help=(
        "print the RouteResponse as proto3 JSON (as grpcurl prints it: 64-bit seeds as strings) instead of a table"))
    add_policy_options(route)
    route.set_defaults(run=_run_route)

    ask = add_ask_parser(commands)
    add_policy_options(ask)
    ask.set_defaults(run=lambda args: run_ask(args, policy_overrides(args)))

    serve = commands.add_parser("serve", help="run the gRPC router service")
    serve.add_argument("--config", type=Path, help=(
        "TOML configuration file (docs/configuration.md); default: the bundled demonstration pool's for a bank "
        "of its models (the bundled bank, copies of it), else the built-in defaults"))
    serve.add_argument("--bank", type=_bank_location, help=(
        "bank directory, or s3://bucket/prefix for a bank `smcs bank publish` wrote, served from a local copy "
        "kept in sync ([server] bank_cache_dir, bank_sync_interval_s) "
        "(overrides [bank] path; default: the bundled bank); the hashes of the version served "
        "are verified at start-up"))
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--http-port", type=int, help=(
        "also serve the OpenAI-compatible HTTP gateway (/v1/chat/completions, /v1/models) on this port, on "
        "[http] host (default 127.0.0.1); 0 picks a free one (overrides [http] port; default: [http] port, else off)"))
    serve.set_defaults(run=_run_serve)

    health = commands.add_parser("health", help="ask a server whether it is serving")
    health.add_argument("--server", default=DEFAULT_TARGET, type=server_target, help=SERVER_HELP)
    health.set_defaults(run=_run_health)

    add_info_parser(commands)

    add_bank_parser(commands)
    add_eval_parser(commands)
    add_data_parser(commands)
    return parser


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(**policy_overrides(args))


def _run_route(args: argparse.Namespace) -> int:
    if (args.question is None) == (args.embedding is None):
        raise InputError("give a question or --embedding FILE (exactly one)")
    embedding = _read_embedding(args.embedding) if args.embedding is not None else None
    if args.bank is not None:
        if args.question is not None:
            check_question(args.question)
        config, _ = bundled.config_and_bank(None, args.bank)
        bank = Bank.open(args.bank, verify=True, progress=Steps(f"smcs: verifying bank {args.bank}"))
        if embedding is None:
            embedding = embed_with_bundled([args.question], bank)[0]
        policy = msgspec.structs.replace(config.policy, **policy_overrides(args))
        decision = Router(bank, policy).route(embedding, seed=args.seed)
        if args.json:
            print(in_process_route_json(decision, bank, debug=args.debug))
            return 0
    else:
        with Client(args.server, token=args.token or os.environ.get("SMCS_TOKEN")) as client:
            call = client.route_message if args.json else client.route
            decision = call(
                args.question, embedding=embedding, seed=args.seed, debug=args.debug, include_support=True,
                **policy_overrides(args),
            )  # the table and the JSON show the support set
        if args.json:
            print(proto_json(decision))
            return 0
    _print_decision(decision)
    return 0


def _print_decision(decision: RouteDecision) -> None:
    print(f"bank {decision.bank_version}  seed {decision.seed}  aggregator {decision.aggregator}  scorer {decision.scorer}"
          + ("  OUT OF BANK: ranked by overall accuracy" if decision.out_of_bank else ""))
    if decision.k_clamped_from is not None:
        print(f"note: {clamped_note(decision)}")
    for note in decision.plan_notes:
        print(f"note: {note}")
    width = max(len(name) for name in decision.referencers)
    costs = decision.costs if any(c is not None for c in decision.costs) else []
    print(f"{'referencer':<{width}}  prior vote  p(correct)" + ("  expected cost" if costs else ""))
    for i, (name, vote, p) in enumerate(zip(decision.referencers, decision.votes, decision.probabilities, strict=True)):
        cost = f"  {_cost(costs[i]):>13}" if costs else ""
        print(f"{name:<{width}}  {vote:10.4f}  {p:10.3f}{cost}")
    if costs:
        print(f"plan: expected cost {_cost(decision.expected_cost)} ({len(decision.referencers)} references, "
              f"{len(decision.subsets)} aggregations at {_cost(decision.aggregation_cost)})")
    top = ", ".join(f"{r}:{s:.3f}" for r, s in zip(decision.support_rows[:5], decision.support_similarities[:5]))
    print(f"support set: {len(decision.support_rows)} questions (row:similarity {top}{', …' if len(decision.support_rows) > 5 else ''})")
    for i, subset in enumerate(decision.subsets):
        print(f"subset {i}: {', '.join(subset)}")


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.6g}"


def _bank_location(text: str) -> Path | str:
    """``serve --bank``: a bank directory, or the URL of a bank in object storage (kept as text)."""
    return text if remote.is_url(text) else Path(text)


def _remote_bank(args: argparse.Namespace) -> tuple[str, Path] | None:
    """The URL of the bank in object storage that ``serve`` is to follow (``--bank``, else the ``--config``
    file's ``[bank] path``) and its local copy, brought up to date now; None for a local bank."""
    if isinstance(args.bank, Path):
        return None
    config = load_config(args.config) if args.config is not None else Config()
    url = args.bank if args.bank is not None else (config.bank.path if config.bank is not None else None)
    if url is None or not remote.is_url(url):
        return None
    server = config.server
    cache = Path(server.bank_cache_dir) if server.bank_cache_dir else remote.default_cache_dir(url)
    print(f"smcs: syncing bank {url} into {cache}", flush=True)
    return url, remote.sync(url, cache, client=remote.s3_client(server.s3_endpoint_url))


def _run_serve(args: argparse.Namespace) -> int:
    followed = _remote_bank(args)
    config, bank_path = bundled.config_and_bank(args.config, followed[1] if followed is not None else args.bank)
    serving_bundled = bundled.is_bundled_bank(bank_path)
    local = any(isinstance(model, LocalModelConfig) for model in config.models.values())
    if local and args.config is None and importlib.util.find_spec("llama_cpp") is None:
        config = msgspec.structs.replace(config, models={})
        print("smcs: llama-cpp-python is not installed (pip install 'smcs[local]'): serving Route without the "
              "bundled models; Answer needs them", flush=True)
    server_changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if server_changes:
        try:
            config = msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, **server_changes))
        except ValueError as exc:
            raise InputError(f"--{exc}") from None
    if args.http_port is not None:
        try:
            config = msgspec.structs.replace(config, http=msgspec.structs.replace(config.http, port=args.http_port))
        except ValueError as exc:
            raise InputError(f"--http-{exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="smcs-serve-") as scratch:
        if serving_bundled:  # a copy, so that the admin RPCs never write into the installed package
            bank_path = Path(shutil.copytree(bundled.BANK, Path(scratch) / "bank"))
            why = "no bank configured" if args.bank is None and config.bank is None else "the bundled bank's own directory"
            print(f"smcs: {why}: serving a copy of the bundled bank at {bank_path} (writes go to the copy)", flush=True)
        asyncio.run(serve(config, bank_path, bank_url=followed[0] if followed is not None else None))
    return 0


def _run_health(args: argparse.Namespace) -> int:
    with Client(args.server, retries=0, timeout=5.0) as client:
        status = client.health()
    print(status)
    return 0 if status == "SERVING" else 1


def _read_embedding(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        except (ValueError, TypeError, EOFError) as exc:  # not an .npy file (EOFError: an empty one), or not numbers
            raise InputError(f"--embedding {path}: not a .npy array of numbers ({exc})") from None
    try:
        return np.asarray(json.loads(path.read_text()), dtype=np.float64)
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(f"--embedding {path}: not a JSON list of numbers ({exc})") from None


def _run_demo(args: argparse.Namespace) -> int:
    policy = _policy(args)
    if args.queries < 1:
        raise InputError(f"--queries must be >= 1, got {args.queries}")
    with tempfile.TemporaryDirectory(prefix="smcs-demo-") as scratch:
        path = args.path or Path(scratch) / "bank"
        print(f"building a synthetic bank: {args.questions} questions x {args.dim} dims, {args.models} models -> {path}")
        embeddings = np.asarray(create_clustered_bank(path, args.questions, args.dim, args.models).embeddings)
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
