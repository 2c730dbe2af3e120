"""``smcs data sft|preference|opinions``: the command line of the alignment-data jobs."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path


from smcs import bundled
from smcs.core.pipeline import MAX_TEMPERATURE
from smcs.core.prompts import check_task
from smcs.backends.pool import ModelPool
from smcs.runtime.host import StepHost
from smcs.runtime.local import local_runtime
from smcs.progress import Progress
from smcs.strategies import STRATEGIES, get_strategy, parse_options, parse_params
from smcs.data.jobs import Instruction, Outcome, RecordLog, item_seed, print_report, read_instructions, run_job, skipped_path
from smcs.data.opinions import opinions_work
from smcs.data.preference import SAMPLE_TEMPERATURE, PreferenceOutcome, preference_steps
from smcs.data.sft import sft_work
from smcs.errors import InputError

_INPUT = ('INSTRUCTIONS is JSON Lines: {"id"?, "instruction"} a line (id: a string or integer, default the line '
          "number). Records are appended to --out and fsynced one by one; rerunning the same command skips the ids "
          "already there (a partial last line left by a kill is cut off), and retries the instructions that failed.")


def add_data_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``smcs data`` and its jobs."""
    data = commands.add_parser("data", help="generate alignment data (SFT, preference pairs, opinions) with the strategies",
                               description="Alignment data from the multi-LLM strategies (MoAA: Wang et al., ICML 2025; Mixture-of-Opinions, MoO).")
    jobs = data.add_subparsers(required=True, metavar="JOB")

    sft = jobs.add_parser("sft", help="chat-SFT records: each instruction answered by a strategy (MoAA stage 1)",
                          description="MoAA stage 1 (Wang et al., ICML 2025, §3.1): each instruction is answered by --strategy and written as "
                          '{"id", "messages": [user, assistant], "metadata": {"strategy", "models", "seed", ...}}. ' + _INPUT)
    _common(sft, bank=True)
    _strategy(sft, "--strategy")
    sft.set_defaults(run=run_sft)

    pref = jobs.add_parser("preference", help="DPO pairs: policy samples judged pairwise by MoA as a reward model (MoAA stage 2)",
                           description="MoAA stage 2 (Wang et al., ICML 2025, §3.2, Appendix K.2-K.4): --samples responses of --policy-model per "
                           "instruction; every pair judged in both orders (criteria filter, proposer judges, aggregator judge); a pair "
                           "whose two verdicts disagree is a tie (½ win each); the sample with the most wins is chosen, the one with "
                           'the fewest rejected: {"id", "prompt", "chosen", "rejected", "criteria", "judgements", "consistent", '
                           '"scores", "pairs", "metadata"}. Instructions with no decided pair (or fewer than two distinct samples) '
                           "go to OUT.skipped.jsonl with the reason and are not redone. " + _INPUT)
    _common(pref, bank=False)
    pref.add_argument("--policy-model", required=True, metavar="NAME", help="the configured model whose responses are sampled (the model to align)")
    pref.add_argument("--samples", type=int, default=4, metavar="M", help="responses sampled per instruction, distinct seeds (default 4: 6 pairs)")
    pref.add_argument("--judges", metavar="A,B,...", help="the proposer judges, comma-separated configured models (default: every configured model)")
    pref.add_argument("--aggregator", metavar="NAME", help="the aggregator judge (default: [policy] aggregator if configured, else the first judge)")
    pref.add_argument("--criteria-model", metavar="NAME", help="the model that picks the three criteria per pair (default: the aggregator)")
    pref.add_argument("--sample-temperature", type=_temperature, default=SAMPLE_TEMPERATURE, metavar="T",
                      help=f"temperature of the policy samples, 0-2 or 'model' for its configured one (default {SAMPLE_TEMPERATURE}: MoAA's)")
    pref.add_argument("--judge-temperature", type=_temperature, default=None, metavar="T",
                      help="temperature of every judge call (criteria, proposers, aggregator), 0-2 (default: each model's configured one)")
    pref.set_defaults(run=run_preference)

    opinions = jobs.add_parser("opinions", help="Mixture-of-Opinions SFT records: other models' answers in the context, the target strategy's answer",
                               description="Mixture-of-Opinions (MoO) records: every --models model answers the instruction; "
                               "the answers go, numbered, into a system block before the instruction, and --target-strategy's "
                               'answer is the assistant turn: {"id", "messages": [system, user, assistant], "metadata": '
                               '{"target_strategy", "target_models", "opinion_models", "failed_opinions", "seed"}}. ' + _INPUT)
    _common(opinions, bank=True)
    opinions.add_argument("--models", metavar="A,B,...", help="the opinion models, comma-separated configured models (default: the bank's configured models)")
    opinions.add_argument("--opinion-temperature", type=_temperature, default=None, metavar="T",
                          help="temperature of the opinion calls, 0-2 (default: each model's configured one)")
    _strategy(opinions, "--target-strategy")
    opinions.set_defaults(run=run_opinions)


def _temperature(value: str) -> float | None:
    """A ``--*-temperature`` value: a number in [0, 2], or ``model`` for the model's configured temperature."""
    if value == "model":
        return None
    try:
        temperature = float(value)
    except ValueError:
        temperature = math.nan
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise argparse.ArgumentTypeError(f"must be a number in [0, {MAX_TEMPERATURE}] or 'model', got {value!r}")
    return temperature


def _common(parser: argparse.ArgumentParser, *, bank: bool) -> None:
    parser.add_argument("instructions", type=Path, help="instructions file (JSON Lines)")
    parser.add_argument("--out", type=Path, required=True, help="output JSON Lines file (appended to; resumed when it exists)")
    parser.add_argument("--config", type=Path, help="TOML configuration with the [models] to call (default: the bundled pool)")
    if bank:
        parser.add_argument("--bank", type=Path, help="bank the strategy routes over (default: [bank] of --config, else the bundled bank)")
    parser.add_argument("--concurrency", type=int, default=4, help="instructions worked on at once (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each instruction's request seed derives from it and its id (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")


def _strategy(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(flag, default="moa-lite", metavar="NAME", dest="strategy",
                        help=f"the strategy that writes the answer: {', '.join(STRATEGIES)} (default moa-lite, a 2-layer MoA)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="a parameter of the strategy, e.g. --option proposers=3 (repeatable)")
    parser.add_argument("--task", help="prompt template the models are asked with (default: the bare instruction)")


def _names(value: str | None, option: str) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise InputError(f"{option} names no model")
    if len(set(names)) != len(names):
        raise InputError(f"{option} names a model twice")
    return names


def _run(args: argparse.Namespace, label: str, job: Callable[[RecordLog, RecordLog | None, list[Instruction], Progress | None], Awaitable],
         skipping: bool = False) -> int:
    items = read_instructions(args.instructions)
    out = RecordLog(args.out)
    skipped = RecordLog(skipped_path(args.out)) if skipping else None
    try:
        progress = None if args.quiet else Progress(len(items), label)
        report = asyncio.run(job(out, skipped, items, progress))
        if progress is not None:
            progress.close()
    finally:
        out.close()
        if skipped is not None:
            skipped.close()
    return print_report(report, f"{label} {args.out}")


def run_sft(args: argparse.Namespace) -> int:
    """The ``smcs data sft`` command: 0 when every instruction has its record, 1 when some failed."""
    spec = get_strategy(args.strategy)
    params = parse_params(spec.name, parse_options(args.option or []))
    task = check_task(args.task)

    async def job(out, skipped, items, progress):  # type: ignore[no-untyped-def]
        async with local_runtime(*bundled.config_and_bank(args.config, args.bank)) as runtime:
            return await run_job(items, lambda item: sft_work(runtime, spec, params, item, args.seed, task), out,
                                 concurrency=args.concurrency, progress=progress)

    return _run(args, "sft", job)


def run_opinions(args: argparse.Namespace) -> int:
    """The ``smcs data opinions`` command: 0 when every instruction has its record, 1 when some failed."""
    spec = get_strategy(args.strategy)
    params = parse_params(spec.name, parse_options(args.option or []))
    task = check_task(args.task)
    models = _names(args.models, "--models")

    async def job(out, skipped, items, progress):  # type: ignore[no-untyped-def]
        async with local_runtime(*bundled.config_and_bank(args.config, args.bank)) as runtime:
            runtime.require_configured(models or [], "--models")
            chosen = models or runtime.usable
            return await run_job(items, lambda item: opinions_work(runtime, spec, params, chosen, item, args.seed, task, args.opinion_temperature), out,
                                 concurrency=args.concurrency, progress=progress)

    return _run(args, "opinions", job)


def run_preference(args: argparse.Namespace) -> int:
    """The ``smcs data preference`` command: 0 when every instruction has its record (or its skip), 1
    when some failed."""
    if args.samples < 2:
        raise InputError(f"--samples must be >= 2 (a pair needs two responses), got {args.samples}")
    config, _ = bundled.config_and_bank(args.config, None)
    configured = list(config.models)
    judges = _names(args.judges, "--judges") or configured
    aggregator = args.aggregator or (config.policy.aggregator if config.policy.aggregator in config.models else judges[0] if judges else None)
    criteria_model = args.criteria_model or aggregator
    for option, names in [("--policy-model", [args.policy_model]), ("--judges", judges), ("--aggregator", [aggregator]),
                          ("--criteria-model", [criteria_model])]:
        for name in names:
            if name not in config.models:
                raise InputError(f"{option}: model {name!r} is not configured (configured: {', '.join(configured) or 'none'})")
    needed = dict.fromkeys([args.policy_model, *judges, aggregator, criteria_model])
    timeouts = dict(config.answer.timeouts)

    async def work(host: StepHost, item: Instruction) -> Outcome:
        steps = preference_steps(item.id, item.instruction, policy_model=args.policy_model, samples=args.samples, judges=judges,
                                 aggregator=aggregator, criteria_model=criteria_model, seed=item_seed(args.seed, item.id),
                                 sample_temperature=args.sample_temperature, judge_temperature=args.judge_temperature)
        outcome: PreferenceOutcome = await host.run(steps)
        return Outcome(record=outcome.record, skipped=outcome.skipped)

    async def job(out, skipped, items, progress):  # type: ignore[no-untyped-def]
        async with ModelPool.from_config({name: config.models[name] for name in needed}) as pool:  # type: ignore[index]
            host = StepHost(pool, timeouts=timeouts)
            return await run_job(items, lambda item: work(host, item), out, skipped=skipped,
                                 concurrency=args.concurrency, progress=progress)

    return _run(args, "preference", job, skipping=True)


__all__ = ["add_data_parser"]
