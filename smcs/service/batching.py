"""Route batching: the Route calls that arrive while the worker is busy share one pass over the bank.

A route over a bank larger than the cache costs about one read of the bank, and most of that read is the
same for every question. ``RouteBatcher`` queues each call; a batch starts as soon as a worker is free and
takes every queued call over the same bank snapshot (up to ``max_batch``), so an idle server adds no wait
to a lone call, and a busy one answers the calls that piled up during a batch with the next, in one
``Router.route_many``. The decisions are identical to one ``Router.route`` per call.

A lone call (a batch of one with nothing else waiting) on a bank small enough may run on the event loop
itself instead (``alone_on_loop``): the hop to a worker thread and back costs more than such a route on
a 2-core machine. Batches of several always go to the workers, where they run beside the loop's own work
(receiving, parsing and answering the other requests): routing every batch on the loop lost throughput
with 8 clients (measurements: docs/performance.md, "Service performance").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..config import ServerConfig
from ..core import RouteCall, RouteDecision, Router

Run = Callable[..., Awaitable[object]]
"""Runs a blocking function with its arguments: on a worker thread (``ServiceState.run``) or ``on_loop``."""


async def on_loop(function: Callable[..., object], *args: object) -> object:
    """``function(*args)`` on the event loop itself (a ``Run``)."""
    return function(*args)


def never(router: Router) -> bool:
    """An ``alone_on_loop`` that keeps every batch on the workers."""
    return False


class RouteBatcher:
    """Coalesces concurrent ``route`` calls into ``Router.route_many`` batches on worker threads."""

    def __init__(
        self, run: Run, max_batch: int, max_running: int = 1, alone_on_loop: Callable[[Router], bool] = never
    ) -> None:
        """``run`` executes a batch off the event loop; at most ``max_batch`` calls go in one batch and at
        most ``max_running`` batches run at once. ``alone_on_loop(router)``: whether a lone call on
        ``router`` (nothing else waiting) runs on the event loop instead of through ``run``.

        The drain task that takes a batch starts after every request handler that was ready in the same
        turn of the loop has queued its call, so calls that arrive together are never taken for lone ones.
        """
        self._run = run
        self._alone_on_loop = alone_on_loop
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
                alone = len(batch) == 1 and not self._queue and self._alone_on_loop(router)
                try:
                    results = await (on_loop if alone else self._run)(router.route_many, [call for call, _ in batch])
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


def service_batcher(run: Run, server: ServerConfig) -> RouteBatcher:
    """The service's batcher, as ``[server]`` sets it: at most ``route_batch`` calls a batch and ``workers``
    batches at once, a lone call over a bank under ``inline_route_bytes`` on the event loop. A server
    makes one: its gRPC calls and its HTTP gateway's routes share it, and so its batches."""
    return RouteBatcher(
        run, server.route_batch, server.workers, lambda router: router.bank.embeddings.nbytes < server.inline_route_bytes
    )
