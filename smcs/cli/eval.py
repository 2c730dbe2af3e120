"""``smcs eval route BANK [--queries QUERIES]``: offline routing quality on recorded outcomes."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from smcs.bank import Bank
from smcs.core import Policy
from smcs.eval.report import format_report, write_plot
from smcs.eval.routing import evaluate_routing
from smcs.errors import InputError

_DESCRIPTION = """\
Route every query whose outcomes are known (no model is called) and report top-1 accuracy against the
best single model, a random model and the oracle; top-K coverage; the pairwise ranking score (Eq 8); a kNN
baseline; the variants of the prior; sweeps over N_base and gamma; a breakdown by source; and accuracy vs
cost when the bank records costs. Without --queries every bank question is routed over the others
(leave-one-out). BANK and QUERIES are bank directories, or FORMAT:PATH[,PATH...] to import files of an
importer format (embedded with the bundled ONNX model into a temporary directory). The two must share the
embedder and the model names."""


def add_eval_parser(commands: Any) -> None:
    """Register ``eval route`` on the ``smcs`` sub-command set ``commands``."""
    evaluate = commands.add_parser("eval", help="evaluate routing quality offline on recorded outcomes")
    actions = evaluate.add_subparsers(required=True, metavar="ACTION")
    route = actions.add_parser("route", help="route held-out (or leave-one-out) questions and score the choices",
                               description=_DESCRIPTION)
    route.add_argument("bank", help="bank directory, or FORMAT:PATH[,PATH...] to import")
    route.add_argument("--queries", help="held-out queries: a bank directory or FORMAT:PATH[,PATH...] (default: leave-one-out on BANK)")
    route.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    route.add_argument("--plot", type=Path, metavar="FILE", help="also write a PNG of the coverage curve and the sweeps")
    route.add_argument("--no-sweeps", dest="sweeps", action="store_false", help="skip the N_base and gamma sweeps")
    route.add_argument("--no-tune", dest="tune", action="store_false",
                       help="skip smcs-tuned (the N_base x gamma search on the bank, the slowest part)")
    defaults = Policy()
    group = route.add_argument_group("policy")
    group.add_argument("--k", type=int, help=f"referencers K (default: {defaults.k}, or the bank's model count if smaller)")
    group.add_argument("--n-base", type=int, help=f"N_base of Eq 3 (paper: {defaults.n_base})")
    group.add_argument("--gamma", type=float, help=f"tolerance gamma of Eq 3 (paper: {defaults.gamma})")
    route.set_defaults(run=run_eval_route)


def run_eval_route(args: argparse.Namespace) -> int:
    """Run ``smcs eval route`` for parsed ``args``; returns the exit status (errors raise ``InputError``)."""
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise InputError("--plot needs matplotlib, which is not installed (pip install 'smcs[plot]')")
    with tempfile.TemporaryDirectory(prefix="smcs-eval-") as scratch:
        bank = open_bank(args.bank, Path(scratch) / "bank")
        rule = bank.manifest.embedder.query_text  # queries imported here are embedded as the bank's questions were
        queries = open_bank(args.queries, Path(scratch) / "queries", rule) if args.queries else None
        options = {"n_base": args.n_base, "gamma": args.gamma}
        policy = Policy(k=args.k if args.k is not None else min(Policy().k, max(bank.n_models, 1)),
                        k_drop=0, **{k: v for k, v in options.items() if v is not None})
        report = evaluate_routing(bank, queries, policy, sweeps=args.sweeps, tune=args.tune)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(report).decode()))
    else:
        print(format_report(report))
    if args.plot is not None:
        write_plot(report, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def open_bank(spec: str, scratch: Path, query_text: str | None = None) -> Bank:
    """The bank directory ``spec``, or the files of ``FORMAT:PATH[,PATH...]`` imported into ``scratch``
    with the bundled embedder under the ``query_text`` rule (None: the default rule)."""
    path = Path(spec)
    if (path / "CURRENT").is_file():
        return Bank.open(path)
    format, colon, files = spec.partition(":")
    if not colon or not format or not files:
        raise InputError(f"{spec}: not a bank directory (no CURRENT file) nor FORMAT:PATH[,PATH...]")
    from smcs.ingest.importers import FORMATS, import_bank, read_imports
    from smcs.embed import EmbedderConfig, make_embedder

    if format not in FORMATS:
        raise InputError(f"{spec}: not a bank directory, and {format!r} is not an import format ({', '.join(FORMATS)})")
    imported = read_imports(format, [Path(p) for p in files.split(",")])
    return import_bank(imported, scratch, make_embedder(EmbedderConfig()), query_text=query_text)
