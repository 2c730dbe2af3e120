"""The host of the sans-I/O pipeline: performs its steps with real model backends and an embedder.

``run_steps`` runs a pipeline generator (``smcs.core.pipeline``), yielding its events as they come: the
calls of one step go out concurrently and each failure becomes a ``CallFailed`` the pipeline can reason
about. Cancelling it cancels the calls in flight (an HTTP backend then closes its connections).
``answer_models`` picks the models an answer may use and ``answer_steps`` the pipeline over them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Mapping, Sequence

import numpy as np

from ..backends.pool import ModelPool
from ..core import Policy, RouteDecision, Router, by_accuracy
from ..core.pipeline import (
    AnswerResult,
    CallModels,
    CallResult,
    EmbedTexts,
    Emit,
    Event,
    ModelCall,
    Stage,
    Step,
    smcs_pipeline,
)
from ..core.prompts import Task
from ..embed import AsyncEmbedder
from ..errors import SmcsError


async def run_steps(
    steps: Generator[Step, object, AnswerResult],
    pool: ModelPool,
    embedder: AsyncEmbedder,
    timeouts: Mapping[Stage, float | None] | None = None,
) -> AsyncIterator[Event]:
    """Perform the steps of ``steps``, yielding each event as the pipeline emits it; the last is the
    ``AnswerResult``.

    ``timeouts`` bounds each call of a stage (``reference``, ``aggregate``); a call past it is a
    ``timeout`` failure, which the pipeline handles like any other. Errors the pipeline raises (e.g.
    ``QuorumNotMet``) and embedder errors propagate. Closing the iterator early (or cancelling the task
    iterating it) cancels the calls in flight.
    """
    limits = timeouts or {}
    reply: object = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration:
            return
        if isinstance(step, Emit):
            yield step.event
            reply = None
        elif isinstance(step, CallModels):
            results: list[CallResult | None] = [None] * len(step.calls)
            async for index, result in _as_completed(pool, step.calls, limits.get(step.stage)):
                results[index] = result
                if step.evidence is not None:
                    yield step.evidence(index, result)
            reply = results
        elif isinstance(step, EmbedTexts):
            reply = np.asarray(await embedder.embed(step.texts))
        else:
            raise TypeError(f"unknown pipeline step {type(step).__name__}")


async def _as_completed(
    pool: ModelPool, calls: Sequence[ModelCall], timeout_s: float | None
) -> AsyncIterator[tuple[int, CallResult]]:
    """(index, result) of each of ``calls``, sent concurrently, as each completes. Leaving early (or an
    error, or cancellation) cancels the calls still in flight."""

    async def indexed(index: int, call: ModelCall) -> tuple[int, CallResult]:
        return index, await pool.call(call, timeout_s)

    tasks = [asyncio.ensure_future(indexed(i, call)) for i, call in enumerate(calls)]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def answer_models(bank_models: Sequence[str], pool: ModelPool, allowed: Sequence[str] = ()) -> list[str]:
    """The models an answer may use: the bank's models that have a backend in ``pool`` (and are in
    ``allowed`` when it is non-empty), in bank order; ``ValueError`` naming the problem when none is left."""
    unknown = [m for m in allowed if m not in bank_models]
    if unknown:
        raise ValueError(f"allowed_models names {unknown[0]!r}, which is not a model of the bank")
    usable = [m for m in bank_models if m in pool and (not allowed or m in allowed)]
    if not usable:
        where = "of allowed_models" if allowed else "of the bank"
        raise NoModelsConfigured(
            f"no model {where} has a backend configured (configured: {', '.join(pool.names) or 'none'}; "
            f"the bank's: {', '.join(bank_models)})"
        )
    return usable


class NoModelsConfigured(SmcsError, ValueError):
    """None of the models a request may use has a backend in the pool."""


def answer_steps(
    router: Router,
    decision: RouteDecision,
    question: str,
    *,
    usable: Sequence[str],
    policy: Policy,
    task: Task | None = None,
    use_fallback: bool = True,
) -> Generator[Step, object, AnswerResult]:
    """The SMCS pipeline along ``decision``, with the fallback aggregator picked from ``usable`` by the
    router's bank accuracy (none when ``use_fallback`` is off)."""
    bank_models = router.bank.model_names
    fallback = fallback_aggregator(router.accuracy, bank_models, usable, decision.aggregator) if use_fallback else None
    return smcs_pipeline(decision, question, policy=policy, task=task, fallback_aggregator=fallback)


def fallback_aggregator(accuracy: np.ndarray, bank_models: Sequence[str], usable: Sequence[str], aggregator: str) -> str | None:
    """The aggregator to try when every aggregation of ``aggregator`` failed: the most accurate other
    usable model (``accuracy`` per bank model, NaN = unknown, ties to the lower index); None if none."""
    by_name = dict(zip(bank_models, accuracy.tolist()))
    ranked = by_accuracy(by_name, [m for m in bank_models if m in usable and m != aggregator])
    return ranked[0] if ranked else None
