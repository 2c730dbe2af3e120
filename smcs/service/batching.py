"""Route batching: the Route calls that arrive while the worker is busy share one pass over the bank.

A route over a bank larger than the cache costs about one read of the bank, and most of that read is the
same for every question. ``RouteBatcher`` queues each call; a batch starts as soon as a worker is free and
takes every queued call over the same bank snapshot (up to ``max_batch``), so an idle server adds no wait
to a lone call, and a busy one answers the calls that piled up during a batch with the next, in one
``Router.route_many``. The decisions are identical to one ``Router.route`` per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..core import RouteCall, RouteDecision, Router

Run = Callable[..., Awaitable[object]]
"""Runs a blocking function with its arguments: on a worker thread (``ServiceState.run``) or ``on_loop``."""


async def on_loop(function: Callable[..., object], *args: object) -> object:
    """``function(*args)`` on the event loop itself: a ``Run`` for batches short enough to hold the loop.

    A batch still forms: the drain task that runs it starts after every request handler that was ready
    in the same turn of the loop has queued its call.
    """
    return function(*args)


class RouteBatcher:
    """Coalesces concurrent ``route`` calls into ``Router.route_many`` batches on worker threads."""

    def __init__(self, run: Run, max_batch: int, max_running: int = 1) -> None:
        """``run`` executes a batch off the event loop; at most ``max_batch`` calls go in one batch and at
        most ``max_running`` batches run at once."""
        self._run = run
        self._max_batch = max_batch
        self._max_running = max_running
        self._queue: list[tuple[Router, RouteCall, asyncio.Future[RouteDecision]]] = []
        self._running = 0  # drains started and not yet returned (counted in the coroutine, not by task state)
        self._drains: set[asyncio.Task[None]] = set()  # strong references while they run

    async def route(self, router: Router, call: RouteCall) -> RouteDecision:
        """``router.route(*call)``, computed in a batch with the calls queued beside it. Raises what
        ``route`` raises; a call cancelled while it waits is left out of its batch."""
        future: asyncio.Future[RouteDecision] = asyncio.get_running_loop().create_future()
        self._queue.append((router, call, future))
        if self._running < self._max_running:
            self._running += 1
            drain = asyncio.ensure_future(self._drain())
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    def _next_batch(self) -> tuple[Router, list[tuple[RouteCall, asyncio.Future[RouteDecision]]]] | None:
        """Take the oldest waiting call's router and up to ``max_batch`` waiting calls on it off the queue."""
        self._queue = [item for item in self._queue if not item[2].done()]  # drop calls cancelled while queued
        if not self._queue:
            return None
        router = self._queue[0][0]
        batch, rest = [], []
        for item in self._queue:
            (batch if item[0] is router and len(batch) < self._max_batch else rest).append(item)
        self._queue = rest
        return router, [(call, future) for _, call, future in batch]

    async def _drain(self) -> None:
        """Run batches until the queue is empty."""
        try:
            while (taken := self._next_batch()) is not None:
                router, batch = taken
                try:
                    results = await self._run(router.route_many, [call for call, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - each caller of the batch gets it, as its own route would raise it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):  # type: ignore[call-overload]  # run returns the list
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running -= 1
