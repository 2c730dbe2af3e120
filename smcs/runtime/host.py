"""The one host of the step machines: ``StepHost`` performs the steps of the SMCS pipeline
(``smcs.core.pipeline``), of every strategy (``smcs.strategies``) and of the ``smcs data`` jobs, with real
model backends, an embedder and a route function.

The calls of one ``CallModels`` step go out concurrently and each failure becomes a ``CallFailed`` the step
machine can reason about. A ``RouteQuestion`` goes to ``route``: in-process ``route_in_process`` (the
route on the spot); the server passes its batcher, so a strategy's route is batched with the concurrent
Route calls. Cancelling (or closing) a run cancels the calls in flight (an HTTP backend then closes its
connections). ``answer_models`` picks the models an answer may use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from ..backends.pool import ModelPool
from ..core import RouteCall, RouteDecision, Router
from ..core.messages import Generation
from ..core.pipeline import CallModels, CallResult, EmbedTexts, Emit, ModelCall, RouteQuestion, Stage, Step
from ..embed import AsyncEmbedder
from ..errors import InputError

RouteFunction = Callable[[Router, RouteCall], Awaitable[RouteDecision]]
Steps = Generator[Step, object, Any]


async def route_in_process(router: Router, call: RouteCall) -> RouteDecision:
    """``call`` routed by ``router``, here and now."""
    return router.route(call.embedding, seed=call.seed, policy=call.policy, allowed_models=call.allowed_models)


class _Returned(msgspec.Struct, frozen=True):
    """What a run of steps returned (the step machine's ``StopIteration.value``)."""

    value: Any


@dataclass(frozen=True)
class StepHost:
    """Performs steps with ``pool``'s models, ``embedder`` (None: a step that needs it is an error) and
    ``route``; ``timeouts`` bounds each call of a stage (``reference``, ``aggregate``): a call past it is a
    ``timeout`` failure, which the step machine handles like any other. ``generation``, when set, is the
    request's own sampling settings (the HTTP gateway's ``temperature``, ``max_tokens`` …): every call the
    steps ask for is sent with them, field by field over the call's own (a role's temperature)."""

    pool: ModelPool
    embedder: AsyncEmbedder | None = None
    route: RouteFunction = route_in_process
    timeouts: Mapping[Stage, float | None] = field(default_factory=dict)
    generation: Generation | None = None

    async def events(self, steps: Steps) -> AsyncIterator[msgspec.Struct]:
        """Each event ``steps`` emits, as it is emitted (the last is the result). Errors the step machine
        raises (e.g. ``QuorumNotMet``) and embedder or route errors propagate. Closing the iterator early
        (or cancelling the task iterating it) cancels the calls in flight."""
        async with aclosing(self._perform(steps)) as performed:
            async for item in performed:
                if not isinstance(item, _Returned):
                    yield item

    async def run(self, steps: Steps) -> Any:
        """Perform ``steps`` to the end; what the step machine returned (its result)."""
        async with aclosing(self._perform(steps)) as performed:
            async for item in performed:
                if isinstance(item, _Returned):
                    return item.value
        raise RuntimeError("the steps ended without returning")  # _perform always ends with _Returned

    async def _perform(self, steps: Steps) -> AsyncIterator[msgspec.Struct]:
        reply: object = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                yield _Returned(done.value)
                return
            if isinstance(step, Emit):
                yield step.event
                reply = None
            elif isinstance(step, CallModels):
                results: list[CallResult | None] = [None] * len(step.calls)
                calls = step.calls if self.generation is None else [_with_request(c, self.generation) for c in step.calls]
                async for index, result in _as_completed(self.pool, calls, self.timeouts.get(step.stage)):
                    results[index] = result
                    if step.evidence is not None:
                        yield step.evidence(index, result)
                reply = results
            elif isinstance(step, EmbedTexts):
                if self.embedder is None:
                    raise RuntimeError("these steps ask for embeddings, but their host was given no embedder")
                reply = np.asarray(await self.embedder.embed(step.texts))
            elif isinstance(step, RouteQuestion):
                reply = await self.route(step.router, step.call)
            else:
                raise TypeError(f"unknown step {type(step).__name__}")


def _with_request(call: ModelCall, request: Generation) -> ModelCall:
    """``call`` with the request's sampling settings over its own, field by field."""
    own = call.generation if call.generation is not None else Generation()
    return msgspec.structs.replace(call, generation=msgspec.structs.replace(own, **request.changes()))


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
    ``allowed`` when it is non-empty), in bank order; ``InputError`` naming the problem when none is left."""
    unknown = [m for m in allowed if m not in bank_models]
    if unknown:
        raise InputError(f"allowed_models names {unknown[0]!r}, which is not a model of the bank")
    usable = [m for m in bank_models if m in pool and (not allowed or m in allowed)]
    if not usable:
        where = "of allowed_models" if allowed else "of the bank"
        raise NoModelsConfigured(
            f"no model {where} has a backend configured (configured: {', '.join(pool.names) or 'none'}; "
            f"the bank's: {', '.join(bank_models)})"
        )
    return usable


class NoModelsConfigured(InputError):
    """None of the models a request may use has a backend in the pool."""
