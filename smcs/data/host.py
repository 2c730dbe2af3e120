"""Running a strategy (or any step generator) for the ``smcs data`` jobs on a ``smcs.runtime.host.StrategyHost``:
the last result of the steps, with every-call-failed turned into the job's ``ItemFailed``."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar, cast

import msgspec

from ..core.pipeline import AnswerResult, QuorumNotMet, Stage, Step
from ..core.prompts import Task
from ..backends.pool import ModelPool
from ..runtime.dispatch import run_steps
from ..embed import AsyncEmbedder
from ..runtime.host import StrategyHost
from ..strategies import StrategyResult, StrategySpec
from .jobs import ItemFailed

T = TypeVar("T")


async def host_steps(
    steps: Generator[Step, object, Any], pool: ModelPool, embedder: AsyncEmbedder | None,
    timeouts: dict[Stage, float | None] | None, want: type[T] | tuple[type, ...],
) -> T:
    """Run ``steps`` with ``run_steps``; the last event of type ``want``. A ``QuorumNotMet`` (every call
    a result depends on failed) becomes ``ItemFailed``."""
    found = None
    try:
        # run_steps is annotated for the pipeline's generator; it hosts any generator of pipeline steps
        async for event in run_steps(cast(Generator[Step, object, AnswerResult], steps), pool, cast(AsyncEmbedder, embedder), timeouts):
            if isinstance(event, want):
                found = event
    except QuorumNotMet as exc:
        raise ItemFailed(str(exc)) from None
    if found is None:
        raise RuntimeError("the steps ended without their result")
    return cast(T, found)


def result_models(result: StrategyResult | AnswerResult) -> list[str]:
    """The models whose calls a result's answer drew on (the calls that wrote text), in call order, once each."""
    if isinstance(result, StrategyResult):
        names = [c.model for c in result.calls if c.ok]
    else:
        names = [r.model for r in result.references if r.ok] + [a.aggregator for a in result.aggregations if a.ok]
    return list(dict.fromkeys(names))


async def strategy_answer(
    host: StrategyHost, spec: StrategySpec, params: msgspec.Struct, question: str, seed: int, task: Task | None
) -> StrategyResult | AnswerResult:
    """The strategy's result on ``question`` (``ItemFailed`` when it had nothing to answer with)."""
    ctx = host.context(spec, question, seed, task, await host.query(spec, question))
    return await host_steps(spec.run(ctx, params), host.pool, host.embedder, host.timeouts, (StrategyResult, AnswerResult))
