"""Route batching: the Route calls that arrive while a worker is busy share one pass over the bank.

A route over a bank larger than the cache costs about one read of the bank, and most of that read is the
same for every question. ``RouteBatcher`` queues each call; a worker thread that is free takes every queued
call over the same bank snapshot (up to ``max_batch``) and routes them in one ``Router.route_many``, and a
worker that finishes a batch takes the calls queued meanwhile itself, there and then. So an idle server adds
no wait to a lone call, a busy one answers the calls that piled up during a batch with the next, and the
event loop is not on the way from one batch to the next: it queues calls and is handed the decisions. The
decisions are identical to one ``Router.route`` per call.

A lone call (a batch of one with nothing else waiting, and no other call in the batcher) on a bank small
enough may run on the event loop itself instead (``alone_on_loop``): the hop to a worker thread and back
costs more than such a route on a 2-core machine. Batches of several, and lone calls while others are in
the batcher, go to the workers, where they run beside the loop's own work (receiving, parsing and
answering the other requests): routing every batch, or every lone call, on the loop lost throughput with
8 clients (measurements: docs/performance.md, "Service performance").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from ..config import ServerConfig
from ..core import RouteCall, RouteDecision, Router
from .admission import Admission

Batch = list[tuple[RouteCall, "asyncio.Future[RouteDecision]"]]
"""The calls of one batch, each with the future its caller awaits."""
_Queued = tuple[Router, RouteCall, "asyncio.Future[RouteDecision]"]
"""A queued call: the router it is on, the call, and the future its caller awaits."""


def never(router: Router) -> bool:
    """An ``alone_on_loop`` that keeps every batch on the workers."""
    return False


class RouteBatcher:
    """Coalesces concurrent ``route`` calls into ``Router.route_many`` batches on worker threads of its own."""

    def __init__(self, max_batch: int, workers: int = 1, alone_on_loop: Callable[[Router], bool] = never) -> None:
        """At most ``max_batch`` calls go in one batch and at most ``workers`` batches run at once, each on a
        worker thread (started when first needed; ``close`` stops them). ``alone_on_loop(router)``: whether
        a lone call on ``router`` runs on the event loop instead; it does so only while no other call is in
        the batcher (queued, routing, or answered and not yet returned to its caller): under load the loop is
        left to receive and answer the other requests while the workers route.

        A call is looked at by a callback scheduled on the loop: it runs after every request handler that
        was ready in the same turn of the loop has queued its call, so calls that arrive together are never
        taken for lone ones. It routes a lone call for the loop there and then, or wakes an idle worker; a
        worker that is busy takes the queued calls when its batch ends, without the loop.
        """
        self._alone_on_loop = alone_on_loop
        self._max_batch = max_batch
        self._workers = workers
        self._lock = threading.Condition()  # guards the fields below it, shared with the workers
        self._queue: list[_Queued] = []
        self._idle = 0  # workers waiting for calls
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._looking = False  # a ``_look`` callback is scheduled (the loop's own)
        self._callers = 0  # route() calls not yet returned (the loop's own)

    async def route(self, router: Router, call: RouteCall) -> RouteDecision:
        """``router.route(*call)``, computed in a batch with the calls queued beside it. Raises what
        ``route`` raises; a call cancelled while it waits is left out of its batch; ``RuntimeError`` once
        the batcher is closed."""
        future: asyncio.Future[RouteDecision] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the route batcher is closed")
            self._queue.append((router, call, future))
        if not self._looking:
            self._looking = True
            future.get_loop().call_soon(self._look)
        self._callers += 1
        try:
            return await future
        finally:
            self._callers -= 1

    def close(self) -> None:
        """Cancel the calls still queued and stop the workers once their batches end (they are not waited
        for: a batch in progress delivers its decisions to the callers still waiting, if any)."""
        with self._lock:
            self._closed = True
            queued, self._queue = self._queue, []
            self._lock.notify_all()
        for _, _, future in queued:
            _on_loop(future, future.cancel)

    def _look(self) -> None:
        """The loop's look at the queue once the turn's handlers have queued their calls: a lone call to
        run on the loop is routed here; otherwise a worker is woken (or started) unless all are busy."""
        self._looking = False
        with self._lock:
            taken = self._lone_on_loop()
            if taken is None:
                self._wake_worker()
        if taken is not None:
            router, batch = taken
            _settle(batch, _results(router, batch))

    def _lone_on_loop(self) -> tuple[Router, Batch] | None:
        """The one queued call, taken, when it runs on the loop: nothing else waiting or in the batcher,
        and ``alone_on_loop`` says yes for its router (under ``_lock``)."""
        if len(self._queue) != 1 or self._callers != 1 or not self._alone_on_loop(self._queue[0][0]):
            return None
        return self._next_batch()

    def _wake_worker(self) -> None:
        """Wake an idle worker, or start one while fewer than ``workers`` run (under ``_lock``); when all are
        busy, the first to finish takes the queue."""
        if not self._queue or self._closed:
            return
        if self._idle:
            self._lock.notify()
        elif len(self._threads) < self._workers:
            worker = threading.Thread(target=self._work, name=f"smcs-route-batch-{len(self._threads)}", daemon=True)
            self._threads.append(worker)
            worker.start()

    def _next_batch(self) -> tuple[Router, Batch] | None:
        """Take the oldest waiting call's router and up to ``max_batch`` waiting calls on it off the queue
        (under ``_lock``); calls cancelled while queued are dropped."""
        queue = [item for item in self._queue if not item[2].done()]
        if not queue:
            self._queue = queue
            return None
        router = queue[0][0]
        batch: Batch = []
        rest: list[_Queued] = []
        for item in queue:
            if item[0] is router and len(batch) < self._max_batch:
                batch.append((item[1], item[2]))
            else:
                rest.append(item)
        self._queue = rest
        return router, batch

    def _work(self) -> None:
        """A worker thread's life (``_serve``); a worker that ends leaves its place, and the calls queued, to
        another (one that died of an error is reported by ``threading.excepthook``)."""
        try:
            self._serve()
        finally:
            with self._lock:
                self._threads.remove(threading.current_thread())
                self._wake_worker()

    def _serve(self) -> None:
        """Take a batch, route it, hand the decisions to the callers' loop; wait while the queue is empty;
        return once closed."""
        while True:
            with self._lock:
                taken = self._next_batch()
                while taken is None:
                    if self._closed:
                        return
                    self._idle += 1
                    self._lock.wait()
                    self._idle -= 1
                    taken = self._next_batch()
                self._wake_worker()  # calls left for another router or past max_batch: another idle worker takes them
            router, batch = taken
            results = _results(router, batch)
            _on_loop(batch[0][1], _settle, batch, results)


def _on_loop(future: asyncio.Future[RouteDecision], callback: Callable[..., object], *args: object) -> None:
    """``callback(*args)`` on the loop of ``future``, from any thread; nothing when that loop has closed
    (no caller is left to answer)."""
    try:
        future.get_loop().call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _results(router: Router, batch: Batch) -> list[object]:
    """``router.route_many`` over the batch's calls, or its error for each of them."""
    try:
        return router.route_many([call for call, _ in batch])
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


def service_batcher(server: ServerConfig, admission: Admission | None = None) -> RouteBatcher:
    """The service's batcher, as ``[server]`` sets it: at most ``route_batch`` calls a batch and ``workers``
    batches at once, a lone call over a bank under ``inline_route_bytes`` on the event loop while it is the
    only RouterService call in flight (``admission``'s count, when given): under load the other calls'
    receiving, parsing and answering then run on the loop beside the workers' routes (more Route throughput
    with 8 clients on 2 cores; measurements: docs/performance.md, "The lean Route and the service's cost per
    Route"). A server makes one: its gRPC calls and its HTTP gateway's routes share it, and so its batches."""

    def alone_on_loop(router: Router) -> bool:
        idle = admission is None or admission.in_flight <= 1
        return idle and router.bank.embeddings.nbytes < server.inline_route_bytes

    return RouteBatcher(server.route_batch, server.workers, alone_on_loop)
