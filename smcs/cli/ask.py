"""``smcs ask``: the full pipeline (or another strategy) on one question, in this process or through a
server, with live progress.

Progress goes to stderr as the stages complete (one line per event); the answer and a compact evidence
table go to stdout, or, with ``--json``, the whole result (``AnswerResult`` for ``smcs``,
``StrategyResult`` for the others) as JSON. ``--strategy NAME`` picks a strategy of ``smcs.strategies``
(default ``smcs``) and ``--option KEY=VALUE`` sets its parameters, in this process or on the server.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import TextIO

import msgspec

from smcs import bundled
from smcs.client import AsyncClient
from smcs.config import Config
from smcs.core.decision import enc_hook
from smcs.core.pipeline import AggregationEvidence, AnswerResult, CallEvidence, Event, ReferenceEvidence, Routed
from smcs.core.prompts import Task, check_task
from smcs.core.question import check_question
from smcs.cli.target import server_target
from smcs.runtime.local import local_runtime
from smcs.strategies import STRATEGIES, StrategyCall, StrategyEvent, StrategyPlan, StrategyResult, StrategySpec
from smcs.strategies import get_strategy, parse_options, parse_params
from smcs.errors import InputError

Result = AnswerResult | StrategyResult


def run_ask(args: argparse.Namespace, policy_overrides: dict[str, object]) -> int:
    """The ``smcs ask`` command: print progress, then the answer; exit status 0 (errors raise)."""
    task = check_task(args.task)
    options: dict[str, object] = dict(parse_options(args.option or []))
    check_question(args.question, max_chars=None)  # the length limit is the server's, or the configuration's below
    if args.server is not None:
        if args.strategy is not None:  # checked here too, so that a typo fails before the call
            parse_params(get_strategy(args.strategy).name, options)
        elif options:
            raise InputError("--option needs --strategy (the server's default strategy takes its own options)")
        events = _through_server(
            args.server, args.token or os.environ.get("SMCS_TOKEN"), args.question, task, args.seed, policy_overrides,
            strategy=args.strategy or "", options=options,
        )
    else:
        config, bank_path = bundled.config_and_bank(args.config, args.bank)
        check_question(args.question, max_chars=config.server.max_question_chars)
        if args.strategy is None:  # the configuration's [answer] strategy, with its options unless given
            options = options or dict(config.answer.strategy_options)
        spec = get_strategy(args.strategy or config.answer.strategy)
        params = parse_params(spec.name, options)
        events = _in_process(bank_path, config, args.question, task, args.seed, policy_overrides, spec, params)
    result = asyncio.run(_follow(events, None if args.quiet else sys.stderr))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(result, enc_hook=enc_hook).decode()))
    elif isinstance(result, StrategyResult):
        print_strategy_result(result, sys.stdout)
    else:
        print_result(result, sys.stdout)
    return 0


async def _in_process(
    bank_path: Path, config: Config, question: str, task: Task | None, seed: int | None, overrides: dict[str, object],
    spec: StrategySpec, params: msgspec.Struct,
) -> AsyncIterator[Event | StrategyEvent]:
    """The strategy's events (the full pipeline's for ``smcs``), computed here with the configured models
    and embedder; the question is embedded only for the strategies that route it."""
    policy = msgspec.structs.replace(config.policy, **overrides) if overrides else config.policy
    async with local_runtime(config, bank_path) as runtime:
        async with aclosing(runtime.events(spec, params, question, seed, task, policy)) as events:
            async for event in events:
                yield event


async def _through_server(
    target: str, token: str | None, question: str, task: str | None, seed: int | None, overrides: dict[str, object],
    *, strategy: str = "", options: dict[str, object] | None = None,
) -> AsyncIterator[Event | StrategyEvent]:
    """The events a server streams for the question."""
    async with AsyncClient(target, token=token) as client:
        answer = client.answer(question, seed=seed, task=task, strategy=strategy, options=options, **overrides)
        async with aclosing(answer) as events:
            async for event in events:
                yield event


async def _follow(events: AsyncIterator[Event | StrategyEvent], progress: TextIO | None) -> Result:
    """Consume ``events``, writing a progress line for each to ``progress``; the final result. The stream is
    closed on return (its models' connections with it), not left to the event loop's shutdown."""
    async with aclosing(events):
        async for event in events:
            if progress is not None:
                print(progress_line(event), file=progress, flush=True)
            if isinstance(event, (AnswerResult, StrategyResult)):
                return event
    raise RuntimeError("the answer stream ended without a result")


def progress_line(event: Event | StrategyPlan | StrategyCall | StrategyResult) -> str:
    """One line saying what an event reports."""
    if isinstance(event, StrategyPlan):
        scores = f" ({event.score_kind} {', '.join(f'{s:.3f}' for s in event.scores)})" if event.score_kind else ""
        aggregator = f"; aggregator {event.aggregator}" if event.aggregator else ""
        return f"plan        {event.strategy}: {', '.join(event.models)}{scores}{aggregator}"
    if isinstance(event, StrategyCall):
        extracted = f"  answer {_one_line(event.extracted, 24)}" if event.extracted is not None else ""
        return f"{event.role:<11} {event.model:<24} L{event.layer}#{event.index:<3} {_outcome(event)}{extracted}"
    if isinstance(event, StrategyResult):
        return f"final       {event.strategy}" + (f" #{event.chosen}" if event.chosen is not None else "")
    if isinstance(event, Routed):
        d = event.decision
        clamped = f"; k clamped from {d.k_clamped_from} to the bank's {len(d.referencers)} models" if d.k_clamped_from is not None else ""
        repeats = f"; {d.duplicate_subsets} repeated draws dropped" if d.duplicate_subsets else ""
        return (f"routed      referencers {', '.join(d.referencers)}; aggregator {d.aggregator}; {len(d.subsets)} subsets "
                f"(seed {d.seed}){repeats}{clamped}")
    if isinstance(event, ReferenceEvidence):
        return f"reference   {event.model:<24} {_outcome(event)}"
    if isinstance(event, AggregationEvidence):
        scores = f"  sim {event.similarity:.3f}  ppl {event.perplexity:.3f}  total {event.total:.3f}" if event.ok else ""
        return f"aggregation {event.index:<3} by {event.aggregator:<20} {_outcome(event)}{scores}"
    return f"final       {event.source}" + (f" #{event.selected}" if event.selected is not None else "")


def _outcome(evidence: CallEvidence) -> str:
    if evidence.ok:
        return f"ok     {evidence.latency_s:6.2f} s  {evidence.completion_tokens:5d} tokens"
    return f"failed {evidence.latency_s:6.2f} s  {evidence.error_kind}: {_one_line(evidence.error or '', 80)}"


def print_result(result: AnswerResult, out: TextIO) -> None:
    """The answer, then the evidence table (references, aggregations) and any notes."""
    agreement = f", agreement {result.agreement:.3f}" if result.agreement is not None else ""
    _print_answer(result.text, f"source {result.source}, seed {result.seed}, bank {result.bank_version}{agreement}", out)
    print(f" {'reference':<23} {'prior':>8}  {'status':<8} {'latency':>8}  text", file=out)
    for i, r in enumerate(result.references):
        mark = "*" if i == result.reference else " "
        print(f"{mark}{r.model:<23} {r.prior:8.3f}  {_status(r):<8} {r.latency_s:7.2f}s  {_one_line(r.text or r.error or '', 50)}", file=out)
    print(f"{'aggregation':<12} {'sim':>7} {'ppl':>9} {'total':>9}  subset", file=out)
    for a in result.aggregations:
        mark = "*" if a.index == result.selected else " "
        print(f"{mark}{a.index:<11} {_number(a.similarity, 7)} {_number(a.perplexity, 9)} {_number(a.total, 9)}  "
              f"{', '.join(a.subset)}" + ("" if a.ok else f"  ({a.error_kind})"), file=out)
    _print_notes(result.notes, out)


def print_strategy_result(result: StrategyResult, out: TextIO) -> None:
    """The answer, then a table of every call (the chosen one starred), the votes and any notes."""
    _print_answer(result.text, f"strategy {result.strategy}, seed {result.seed}, bank {result.bank_version or '-'}", out)
    print(f" {'call':<4} {'role':<10} {'layer':>5} {'model':<24} {'status':<14} {'latency':>8}  {'answer':<12} text", file=out)
    for c in result.calls:
        mark = "*" if c.position == result.chosen else " "
        inputs = f"[{','.join(map(str, c.inputs))}] " if c.inputs else ""
        answer = _one_line(c.extracted, 12) if c.extracted is not None else "-"
        print(f"{mark}{c.position:<4} {c.role:<10} {c.layer:>5} {c.model:<24} {_status(c):<14} {c.latency_s:7.2f}s  {answer:<12} "
              f"{inputs}{_one_line(c.text or c.error or '', 50)}", file=out)
    if result.votes:
        print("votes: " + ", ".join(f"{_one_line(answer, 30)} ×{count}" for answer, count in result.votes.items()), file=out)
    _print_notes(result.notes, out)


def _print_answer(text: str, summary: str, out: TextIO) -> None:
    print(text.strip(), file=out)
    print(file=out)
    print(summary, file=out)


def _status(evidence: CallEvidence) -> str:
    return "ok" if evidence.ok else evidence.error_kind or "failed"


def _print_notes(notes: list[str], out: TextIO) -> None:
    for note in notes:
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
        help="answer one question with the full SMCS pipeline or a baseline strategy (in this process, or through --server)",
        description=(
            "With no --server the pipeline (or the --strategy) runs in this process: over --bank (or the configuration's "
            "[bank], or the bundled default bank), whose files' hashes are verified first, with the models of --config "
            "(default: for a bank of the bundled demonstration pool's models, such as the bundled bank or a copy of it, "
            "that pool of SmolLM2-135M members, which needs the smcs[local] extra; else none). An empty question is "
            "refused before anything runs."
        ),
    )
    ask.add_argument("question", help="the question (not empty)")
    ask.add_argument("--strategy", metavar="NAME",
                     help=f"how to answer: {', '.join(STRATEGIES)} (default: [answer] strategy of the configuration, else smcs, the full pipeline)")
    ask.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="a parameter of --strategy, e.g. --option layers=3 (repeatable; see smcs.strategies)")
    ask.add_argument("--task", help="prompt template: math, numeric, multiple_choice, code, exact, instruction")
    ask.add_argument("--server", type=server_target,
                     help="answer through the smcs server at this address HOST:PORT (e.g. 127.0.0.1:50051; replicas as in smcs route --help)")
    ask.add_argument("--bank", type=Path, help="in-process: this bank (default: [bank] of --config, else the bundled bank)")
    ask.add_argument("--config", type=Path, help=(
        "in-process: TOML configuration ([models], [embedder], [policy], [answer]); default: the bundled pool's for a "
        "bank of its models (the bundled bank, copies of it), else the built-in defaults"))
    ask.add_argument("--token", help="bearer token for --server (or set SMCS_TOKEN)")
    ask.add_argument("--seed", type=int, help="seed of the exploration and of every model call (default: random, reported)")
    ask.add_argument("--json", action="store_true", help="print the whole result with its evidence as JSON")
    ask.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return ask

