"""Route batching: the Route calls that arrive while the worker is busy share one pass over the bank.

A route over a bank larger than the cache costs about one read of the bank, and most of that read is the
same for every question. ``RouteBatcher`` queues each call; a batch starts as soon as a worker is free and
takes every queued call over the same bank snapshot (up to ``max_batch``), so an idle server adds no wait
to a lone call, and a busy one answers the calls that piled up during a batch with the next, in one
``Router.route_many``. The decisions are identical to one ``Router.route`` per call.

A lone call (a batch of one with nothing else waiting, and no other call in the batcher) on a bank small
enough may run on the event loop itself instead (``alone_on_loop``): the hop to a worker thread and back
costs more than such a route on a 2-core machine. Batches of several, and lone calls while others are in
the batcher, go to the workers, where they run beside the loop's own work (receiving, parsing and
answering the other requests): routing every batch, or every lone call, on the loop lost throughput with
8 clients (measurements: docs/performance.md, "Service performance").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..config import ServerConfig
from ..core import RouteCall, RouteDecision, Router
from .admission import Admission

Run = Callable[..., Awaitable[object]]
"""Runs a blocking function with its arguments on a worker thread (``ServiceState.run``)."""
Batch = list[tuple[RouteCall, "asyncio.Future[RouteDecision]"]]
"""The calls of one batch, each with the future its caller awaits."""
_Taken = tuple[Router, Batch]
"""A batch taken off the queue, with the router all its calls are on."""


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
        ``router`` runs on the event loop instead of through ``run``; it does so only while no other call
        is in the batcher (queued, routing, or answered and not yet returned to its caller): under load
        the loop is left to receive and answer the other requests while the workers route.

        Batches are taken by a callback scheduled when a call finds a free slot: it runs after every
        request handler that was ready in the same turn of the loop has queued its call, so calls that
        arrive together are never taken for lone ones. A lone call on the loop is routed in that callback;
        the first batch for the workers starts the drain task that takes the batches queued after it.
        """
        self._run = run
        self._alone_on_loop = alone_on_loop
        self._max_batch = max_batch
        self._max_running = max_running
        self._queue: list[tuple[Router, RouteCall, asyncio.Future[RouteDecision]]] = []
        self._running = 0  # slots taken: drains scheduled or running and not yet returned
        self._callers = 0  # route() calls not yet returned
        self._drains: set[asyncio.Task[None]] = set()  # strong references while they run

    async def route(self, router: Router, call: RouteCall) -> RouteDecision:
        """``router.route(*call)``, computed in a batch with the calls queued beside it. Raises what
        ``route`` raises; a call cancelled while it waits is left out of its batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RouteDecision] = loop.create_future()
        self._queue.append((router, call, future))
        if self._running < self._max_running:
            self._running += 1
            loop.call_soon(self._start)
        self._callers += 1
        try:
            return await future
        finally:
            self._callers -= 1

    def _next_batch(self) -> _Taken | None:
        """Take the oldest waiting call's router and up to ``max_batch`` waiting calls on it off the queue."""
        if any(item[2].done() for item in self._queue):
            self._queue = [item for item in self._queue if not item[2].done()]  # drop calls cancelled while queued
        if not self._queue:
            return None
        router = self._queue[0][0]
        if len(self._queue) == 1:
            (_, call, future), = self._queue
            self._queue = []
            return router, [(call, future)]
        batch, rest = [], []
        for item in self._queue:
            (batch if item[0] is router and len(batch) < self._max_batch else rest).append(item)
        self._queue = rest
        return router, [(call, future) for _, call, future in batch]

    def _start(self) -> None:
        """Take the next batch for the slot ``route`` took: route it here when it is a lone call to run on
        the loop (then free the slot), else hand it, and the slot, to a drain task on the workers."""
        taken = self._next_batch()
        if taken is not None and not self._lone_on_loop(*taken):
            drain = asyncio.ensure_future(self._drain(taken))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
            return
        try:
            if taken is not None:
                router, batch = taken
                _settle(batch, _results(router.route_many, batch))
        finally:
            self._running -= 1

    def _lone_on_loop(self, router: Router, batch: Batch) -> bool:
        """Whether ``batch`` runs on the loop: one call, nothing else waiting or in the batcher, and
        ``alone_on_loop`` says yes for its router."""
        return len(batch) == 1 and not self._queue and self._callers == 1 and self._alone_on_loop(router)

    async def _drain(self, taken: _Taken | None) -> None:
        """Run ``taken`` and then the batches queued meanwhile on the workers, until the queue is empty."""
        try:
            while taken is not None:
                router, batch = taken
                try:
                    results = await self._run(router.route_many, [call for call, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - each caller of the batch gets it, as its own route would raise it
                    results = [exc] * len(batch)
                _settle(batch, results)  # type: ignore[arg-type]  # run returns the list
                taken = self._next_batch()
        finally:
            self._running -= 1


def _results(route_many: Callable[[list[RouteCall]], list[object]], batch: Batch) -> list[object]:
    """``route_many`` over the batch's calls, or its error for each of them."""
    try:
        return route_many([call for call, _ in batch])
    except Exception as exc:  # noqa: BLE001 - each caller of the batch gets it, as its own route would raise it
        return [exc] * len(batch)


def _settle(batch: Batch, results: list[object]) -> None:
    """Give each call of ``batch`` still waiting its result, or raise it its error."""
    for (_, future), result in zip(batch, results):
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)  # type: ignore[arg-type]


def service_batcher(run: Run, server: ServerConfig, admission: Admission | None = None) -> RouteBatcher:
    """The service's batcher, as ``[server]`` sets it: at most ``route_batch`` calls a batch and ``workers``
    batches at once, a lone call over a bank under ``inline_route_bytes`` on the event loop while it is the
    only RouterService call in flight (``admission``'s count, when given): under load the other calls'
    receiving, parsing and answering then run on the loop beside the workers' routes (more Route throughput
    with 8 clients on 2 cores; measurements: docs/performance.md, "The lean Route and the service's cost per
    Route"). A server makes one: its gRPC calls and its HTTP gateway's routes share it, and so its batches."""

    def alone_on_loop(router: Router) -> bool:
        idle = admission is None or admission.in_flight <= 1
        return idle and router.bank.embeddings.nbytes < server.inline_route_bytes

    return RouteBatcher(run, server.route_batch, server.workers, alone_on_loop)
