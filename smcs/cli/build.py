"""``smcs bank build QUESTIONS --config CONFIG --out DIR``: the command line of the bank builder."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import math
import sys
from pathlib import Path
from typing import TextIO

from smcs.bank import Bank, ModelInfo
from smcs.cli.warn import warn_if_degenerate
from smcs.config import Config, load_config
from smcs.core.query_text import DEFAULT_QUERY_TEXT_RULE, RULES
from smcs.backends.pool import ModelPool
from smcs.embed import AsyncEmbedder, EmbedderConfig, as_async, make_embedder
from smcs.progress import Progress

from smcs.ingest.builder.journal import Journal
from smcs.ingest.builder.questions import BuildQuestion, read_questions
from smcs.ingest.builder.run import BuildReport, build_bank
from smcs.errors import InputError


def add_build_parser(bank_commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``smcs bank build``."""
    build = bank_commands.add_parser(
        "build",
        help="build a new bank by asking the configured models every question of a questions file",
        description=(
            'QUESTIONS is JSON Lines: {"id", "question", "answer", "task", "source"?, "choices"?, "tests"?} a line '
            "(task: multiple_choice, math, numeric, code, exact). Every model of the configuration's [models] "
            "tables (or those of --models) answers every question with its task's prompt; each answer is checked "
            "and recorded in the journal as it arrives, so an interrupted build, run again with the same "
            "arguments, asks only what is left. The bank is written at the end, as one new version."
        ),
    )
    build.add_argument("questions", type=Path, help="questions file (JSON Lines)")
    build.add_argument("--config", type=Path, required=True, help="TOML configuration with the [models] to ask (and [embedder])")
    build.add_argument("--out", type=Path, required=True, help="bank directory to create (new or empty)")
    build.add_argument("--models", help="comma-separated subset of the configured models (default: all, in file order)")
    build.add_argument("--concurrency", type=int, default=8, help="model calls in flight at once (default 8)")
    build.add_argument("--journal", type=Path, help="journal directory (default: OUT.journal beside the bank)")
    build.add_argument("--keep-responses", action="store_true", help="keep every raw response in the journal (kept after the build)")
    build.add_argument("--allow-missing", action="store_true", help="write the bank even if calls failed (their outcomes stay unknown, -1)")
    build.add_argument(
        "--query-text", choices=RULES, default=DEFAULT_QUERY_TEXT_RULE,
        help=f"what of each question is embedded (default {DEFAULT_QUERY_TEXT_RULE}; raw: the text as it is); "
        "the bank records it and applies it to queries",
    )
    build.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    """The ``smcs bank build`` command; exit status 0 when the bank was written, 1 when calls failed."""
    config = load_config(args.config)
    questions, digest = read_questions(args.questions)
    models = _chosen_models(config, args.models)
    embedder = as_async(make_embedder(config.embedder or EmbedderConfig()))
    journal_path = args.journal or args.out.with_name(args.out.name + ".journal")
    with Journal.open(journal_path, digest, embedder.info.id) as journal:
        progress = Progress(len(questions) * len(models), "answers")
        progress.start_at(sum((m.name, q.id) in journal.done for m in models for q in questions))
        print(f"building {args.out}: {len(questions)} questions x {len(models)} models; journal {journal_path}", file=sys.stderr)
        provenance = {
            "built_by": f"smcs {importlib.metadata.version('smcs')} bank build",
            "questions_file": args.questions.name,
            "questions_sha256": digest,
            "config_file": args.config.name,
            "checkers": "smcs.grading.checkers",
        }
        report = asyncio.run(_build(questions, models, config, embedder, journal, args, progress, provenance))
        progress.close()
    _print_report(report, sys.stdout)
    if report.bank is not None:
        warn_if_degenerate(Bank.open(report.bank))
        if not args.keep_responses:
            _remove_journal(journal_path)
    return 0 if report.bank is not None else 1


async def _build(
    questions: list[BuildQuestion], models: list[ModelInfo], config: Config, embedder: AsyncEmbedder, journal: Journal,
    args: argparse.Namespace, progress: Progress, provenance: dict[str, str],
) -> BuildReport:
    async with ModelPool.from_config({m.name: config.models[m.name] for m in models}) as pool:
        return await build_bank(
            questions, models, pool, embedder, journal, args.out, concurrency=args.concurrency,
            keep_responses=args.keep_responses, allow_missing=args.allow_missing, provenance=provenance,
            on_progress=lambda done, total, note: progress.update(done, note), query_text=args.query_text,
        )


def _chosen_models(config: Config, names: str | None) -> list[ModelInfo]:
    """The models to ask, in configuration order (or ``--models`` order), each with its backend kind as a hint."""
    if not config.models:
        raise InputError("the configuration has no [models.\"NAME\"] tables: there is no one to ask")
    chosen = [n.strip() for n in names.split(",") if n.strip()] if names else list(config.models)
    unknown = [n for n in chosen if n not in config.models]
    if unknown:
        raise InputError(f"--models names {', '.join(map(repr, unknown))}, not in the configuration ({', '.join(config.models)})")
    if len(set(chosen)) != len(chosen):
        raise InputError("--models names a model twice")
    return [ModelInfo(name=n, backend={"kind": type(config.models[n]).__struct_config__.tag}) for n in chosen]  # type: ignore[dict-item]


def _print_report(report: BuildReport, out: TextIO) -> None:
    where = f"bank {report.bank} version {report.version}" if report.bank else "bank NOT written"
    print(f"{where}: {report.questions} questions, {len(report.models)} models; "
          f"{report.calls} calls this run, {report.resumed} outcomes resumed, {report.elapsed_s:.0f} s", file=out)
    width = max(len(m) for m in report.models)
    print(f"{'model':<{width}}  accuracy  failed", file=out)
    for model in report.models:
        acc = report.accuracy[model]
        print(f"{model:<{width}}  {'-' if math.isnan(acc) else f'{acc:8.3f}':>8}  {report.failures[model]:6d}", file=out)
    for model, why in report.given_up.items():
        print(f"gave up on {model}: {why}", file=out)
    if report.bank is None and any(report.failures.values()):
        print("some calls failed: run the same command again to retry them (or add --allow-missing)", file=out)


def _remove_journal(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
