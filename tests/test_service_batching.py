"""Route batching: ``RouteBatcher`` on its own (with a scripted router), then in a real server.

The scripted router records each ``route_many`` batch and can hold one until the test releases it, so
the batches formed depend only on what was queued meanwhile, not on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from service_harness import POLICY, make_bank, make_config, queries_for, running_server
from smcs import Bank, RouteCall, Router
from smcs.client import AsyncClient
from smcs.core import router as router_module
from smcs.config import ServerConfig
from smcs.service.admission import Admission
from smcs.service.batching import RouteBatcher, service_batcher

PATIENCE_S = 30.0


class ScriptedRouter:
    """Answers each call with ``(name, call.seed)``; a negative seed answers with a ValueError."""

    def __init__(self, name: str = "r") -> None:
        self.name = name
        self.batches: list[list[int | None]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail_next: Exception | None = None

    def route_many(self, calls: Sequence[RouteCall]) -> list[object]:
        self.batches.append([c.seed for c in calls])
        self.entered.set()
        assert self.hold.wait(PATIENCE_S)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [ValueError(f"bad seed {c.seed}") if (c.seed or 0) < 0 else (self.name, c.seed) for c in calls]


_BATCHERS: list[RouteBatcher] = []


def _batcher(**options: object) -> RouteBatcher:
    """A ``RouteBatcher`` with ``options``, closed (its worker threads stopped) after the test."""
    batcher = RouteBatcher(**options)  # type: ignore[arg-type]
    _BATCHERS.append(batcher)
    return batcher


@pytest.fixture(autouse=True)
def _close_batchers() -> Iterator[None]:
    yield
    while _BATCHERS:
        _BATCHERS.pop().close()


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(PATIENCE_S / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _call(seed: int) -> RouteCall:
    return RouteCall(np.ones(2, dtype=np.float32), seed=seed)


async def _held_first_batch(router: ScriptedRouter, batcher: RouteBatcher) -> asyncio.Future[object]:
    """Start a lone call (seed 0) and hold its batch on the worker, so that what follows queues behind it."""
    router.hold.clear()
    first = asyncio.ensure_future(batcher.route(router, _call(0)))  # type: ignore[arg-type]
    await _until(router.entered.is_set, "the first batch")
    return first


def _queue(batcher: RouteBatcher, router: ScriptedRouter, seeds: Sequence[int]) -> list[asyncio.Future[object]]:
    """One call per seed on ``router``, started in that order."""
    return [asyncio.ensure_future(batcher.route(router, _call(s))) for s in seeds]  # type: ignore[arg-type]


def test_a_lone_call_runs_at_once_and_calls_queued_meanwhile_share_the_next_batch():
    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=16)
        first = await _held_first_batch(router, batcher)
        rest = _queue(batcher, router, range(1, 6))
        await asyncio.sleep(0.05)
        assert router.batches == [[0]], "nothing else may start while the only worker is busy"
        router.hold.set()
        assert await first == ("r", 0)
        assert await asyncio.gather(*rest) == [("r", s) for s in range(1, 6)]
        assert router.batches == [[0], [1, 2, 3, 4, 5]]

    asyncio.run(scenario())


def _threads_of(router: ScriptedRouter) -> list[int]:
    """The threads ``router``'s batches will run on, in order (recorded as each batch starts)."""
    threads: list[int] = []
    scripted = router.route_many

    def recording(calls: Sequence[RouteCall]) -> list[object]:
        threads.append(threading.get_ident())
        return scripted(calls)

    router.route_many = recording  # type: ignore[method-assign]
    return threads


def test_a_lone_call_runs_on_the_loop_and_calls_that_arrive_together_on_the_worker():
    """With ``alone_on_loop``, a batch of one with nothing else waiting runs on the event loop's own thread;
    calls started in the same turn of the loop still form one batch, and it goes to the worker."""

    async def scenario() -> None:
        small, large = ScriptedRouter("small"), ScriptedRouter("large")
        on_small, on_large = _threads_of(small), _threads_of(large)
        loop_thread = threading.get_ident()
        batcher = _batcher(max_batch=16, alone_on_loop=lambda router: router is small)
        assert await batcher.route(small, _call(0)) == ("small", 0)  # type: ignore[arg-type]
        assert await asyncio.gather(*_queue(batcher, small, range(1, 5))) == [("small", s) for s in range(1, 5)]
        assert small.batches == [[0], [1, 2, 3, 4]]
        assert on_small[0] == loop_thread and on_small[1] != loop_thread
        assert await batcher.route(large, _call(9)) == ("large", 9)  # type: ignore[arg-type]
        assert on_large[0] != loop_thread  # alone_on_loop says no: even a lone call goes to the worker

    asyncio.run(scenario())


def test_batches_hold_at_most_max_batch_calls_in_arrival_order():
    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=2)
        first = await _held_first_batch(router, batcher)
        rest = _queue(batcher, router, range(1, 6))
        await asyncio.sleep(0)
        router.hold.set()
        await asyncio.gather(first, *rest)
        assert router.batches == [[0], [1, 2], [3, 4], [5]]

    asyncio.run(scenario())


def test_calls_on_different_routers_never_share_a_batch():
    async def scenario() -> None:
        old, new = ScriptedRouter("old"), ScriptedRouter("new")
        batcher = _batcher(max_batch=16)
        first = await _held_first_batch(old, batcher)
        calls = [asyncio.ensure_future(batcher.route(r, _call(s))) for s, r in enumerate([new, old, new, old], start=1)]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        old.hold.set()
        assert await asyncio.gather(first, *calls) == [("old", 0), ("new", 1), ("old", 2), ("new", 3), ("old", 4)]
        assert old.batches == [[0], [2, 4]]
        assert new.batches == [[1, 3]]

    asyncio.run(scenario())


def test_a_call_cancelled_while_queued_is_left_out_and_the_others_complete():
    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=16)
        first = await _held_first_batch(router, batcher)
        calls = _queue(batcher, router, (1, 2, 3))
        await asyncio.sleep(0)
        calls[1].cancel()
        router.hold.set()
        assert await first == ("r", 0)
        assert await calls[0] == ("r", 1) and await calls[2] == ("r", 3)
        with pytest.raises(asyncio.CancelledError):
            await calls[1]
        assert router.batches == [[0], [1, 3]]

    asyncio.run(scenario())


def test_errors_reach_their_own_callers_and_the_batcher_keeps_serving():
    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=16)
        first = await _held_first_batch(router, batcher)
        good, bad = _queue(batcher, router, (1, -1))
        await asyncio.sleep(0)
        router.fail_next = RuntimeError("the kernel broke")
        router.hold.set()
        with pytest.raises(RuntimeError, match="the kernel broke"):
            await first  # a batch that raises fails each of its calls
        assert await good == ("r", 1)
        with pytest.raises(ValueError, match="bad seed -1"):
            await bad  # an error of one call stays with that call
        assert await batcher.route(router, _call(7)) == ("r", 7)  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_workers_run_batches_side_by_side():
    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=16, workers=2)
        router.hold.clear()
        calls = _queue(batcher, router, [0])
        await _until(lambda: len(router.batches) == 1, "the first batch")
        calls += _queue(batcher, router, [1])
        await _until(lambda: len(router.batches) == 2, "a second batch beside the first")
        calls += _queue(batcher, router, (2, 3))
        await asyncio.sleep(0.05)
        assert len(router.batches) == 2, "a third batch started while two ran"
        router.hold.set()
        assert await asyncio.gather(*calls) == [("r", s) for s in range(4)]
        assert router.batches == [[0], [1], [2, 3]]

    asyncio.run(scenario())


def test_a_worker_takes_the_calls_queued_during_its_batch_without_the_event_loop():
    """When a batch ends, its worker starts the next one from the calls queued meanwhile while the event loop
    is busy elsewhere (here: blocked): the loop is not on the way from one batch to the next."""

    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=16)
        first = await _held_first_batch(router, batcher)
        rest = _queue(batcher, router, (1, 2, 3))
        await asyncio.sleep(0)  # the calls are queued
        router.hold.set()
        deadline = time.monotonic() + PATIENCE_S
        while len(router.batches) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # blocks the loop: nothing scheduled on it runs meanwhile
        assert router.batches == [[0], [1, 2, 3]]
        assert await first == ("r", 0)
        assert await asyncio.gather(*rest) == [("r", s) for s in (1, 2, 3)]

    asyncio.run(scenario())


def test_close_cancels_the_queued_calls_lets_the_batch_in_progress_answer_and_stops_the_workers():
    async def scenario() -> None:
        router = ScriptedRouter()
        batcher = _batcher(max_batch=16, workers=2)
        first = await _held_first_batch(router, batcher)
        second = _queue(batcher, router, [1])[0]
        await _until(lambda: len(router.batches) == 2, "a batch on the second worker")
        queued = _queue(batcher, router, (2, 3))
        await asyncio.sleep(0)
        batcher.close()
        for call in queued:
            with pytest.raises(asyncio.CancelledError):
                await call
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.route(router, _call(4))  # type: ignore[arg-type]
        router.hold.set()
        assert await first == ("r", 0) and await second == ("r", 1)
        workers = [t for t in threading.enumerate() if t.name.startswith("smcs-route-batch-")]
        await _until(lambda: not any(t.is_alive() for t in workers), "the workers to end")
        assert router.batches == [[0], [1]]

    asyncio.run(scenario())


def test_a_lone_call_goes_to_the_worker_while_another_call_is_in_the_batcher():
    """A call that finds a free slot but another call still in the batcher (here: routing on the other
    worker) is under load: it goes to a worker even where ``alone_on_loop`` says yes."""

    async def scenario() -> None:
        small, large = ScriptedRouter("small"), ScriptedRouter("large")
        on_small = _threads_of(small)
        loop_thread = threading.get_ident()
        batcher = _batcher(max_batch=16, workers=2, alone_on_loop=lambda router: router is small)
        first = await _held_first_batch(large, batcher)
        assert await batcher.route(small, _call(1)) == ("small", 1)  # type: ignore[arg-type]
        large.hold.set()
        assert await first == ("large", 0)
        assert await batcher.route(small, _call(2)) == ("small", 2)  # type: ignore[arg-type]  # alone now
        assert on_small[0] != loop_thread and on_small[1] == loop_thread

    asyncio.run(scenario())


class _SizedRouter(ScriptedRouter):
    """A scripted router over a bank of ``nbytes`` bytes of embeddings (what ``service_batcher`` reads)."""

    def __init__(self, nbytes: int) -> None:
        super().__init__()
        self.bank = SimpleNamespace(embeddings=SimpleNamespace(nbytes=nbytes))


def test_the_service_batcher_routes_a_lone_call_on_the_loop_only_while_it_is_the_only_call_in_flight():
    async def scenario() -> None:
        admission = Admission(limit=8, wait_s=0.0)
        batcher = service_batcher(ServerConfig(inline_route_bytes=1000), admission)
        _BATCHERS.append(batcher)
        small, large = _SizedRouter(999), _SizedRouter(1000)
        threads = {name: _threads_of(router) for name, router in (("small", small), ("large", large))}
        loop_thread = threading.get_ident()
        for in_flight in (1, 2, 1):
            admission.in_flight = in_flight  # the call itself, then one more RouterService call
            for router in (small, large):
                await batcher.route(router, _call(in_flight))  # type: ignore[arg-type]
        assert [t == loop_thread for t in threads["small"]] == [True, False, True]
        assert not any(t == loop_thread for t in threads["large"])  # over inline_route_bytes: always the workers

    asyncio.run(scenario())


# --- in a real server --------------------------------------------------------------------------------------

BATCHED_N, BATCHED_DIM = 3000, 384
"""4.6 MB of embeddings, routed on the worker thread (``inline_route_bytes = 0``)."""


def test_server_batches_concurrent_routes_and_answers_each_as_the_router_would(tmp_path, monkeypatch):
    """Hold the server's first batch on its worker until 8 more requests have queued: they must go in one
    batch of 8, and every answer must equal the in-process Router's decision for that request."""
    path = tmp_path / "bank"
    make_bank(path, n_questions=BATCHED_N, dim=BATCHED_DIM)
    queries = queries_for(path, 9)
    batches: list[int] = []
    arrived = threading.Semaphore(0)
    release, held = threading.Event(), threading.Event()
    original_many, original_route = Router.route_many, RouteBatcher.route

    def route_many(self, calls):  # type: ignore[no-untyped-def]
        batches.append(len(calls))
        if len(batches) == 1:
            held.set()
            assert release.wait(PATIENCE_S)
        return original_many(self, calls)

    async def counted_route(self, router, call):  # type: ignore[no-untyped-def]
        arrived.release()
        return await original_route(self, router, call)

    overrides = {"k": 3, "n_base": 120, "gamma": 0.9, "n": 4}
    own_policy = msgspec.structs.replace(POLICY, **overrides)
    with running_server(path, make_config(inline_route_bytes=0)) as handle:
        monkeypatch.setattr(router_module.Router, "route_many", route_many)  # after the start-up warm-up route
        monkeypatch.setattr(RouteBatcher, "route", counted_route)

        async def scenario() -> list[object]:
            async with AsyncClient(handle.target, retries=0, timeout=PATIENCE_S) as client:
                first = asyncio.ensure_future(client.route(embedding=queries[0], seed=100, include_support=True))
                await asyncio.to_thread(arrived.acquire, True, PATIENCE_S)
                assert await asyncio.to_thread(held.wait, PATIENCE_S), "the first route never reached a worker"
                rest = [
                    asyncio.ensure_future(client.route(embedding=q, seed=100 + i, include_support=True, **(overrides if i % 2 else {})))
                    for i, q in enumerate(queries[1:], start=1)
                ]
                for _ in rest:
                    assert await asyncio.to_thread(arrived.acquire, True, PATIENCE_S), "a request never reached the batcher"
                release.set()
                return await asyncio.gather(first, *rest)

        decisions = asyncio.run(scenario())
    assert batches == [1, 8]
    router = Router(Bank.open(path), POLICY)
    for i, (query, decision) in enumerate(zip(queries, decisions)):
        want = router.route(query, seed=100 + i, policy=own_policy if i % 2 else None)
        assert decision.referencers == want.referencers and decision.subsets == want.subsets
        assert decision.support_rows == want.support_rows
        np.testing.assert_array_equal(np.float32(decision.support_similarities), np.float32(want.support_similarities))


def test_the_service_asks_the_router_for_the_support_set_only_when_the_request_does(tmp_path, monkeypatch):
    """A plain Route routes with ``support=False`` (the router builds no support lists); ``include_support``
    and ``debug`` route with it, and answer the support set the in-process router gives."""
    path = tmp_path / "bank"
    make_bank(path)
    query = queries_for(path, 1)[0]
    asked: list[bool] = []
    original_many = Router.route_many

    def route_many(self, calls):  # type: ignore[no-untyped-def]
        asked.extend(call.support for call in calls)
        return original_many(self, calls)

    with running_server(path) as handle:
        monkeypatch.setattr(router_module.Router, "route_many", route_many)  # after the start-up warm-up route

        async def scenario() -> list[object]:
            async with AsyncClient(handle.target, retries=0, timeout=PATIENCE_S) as client:
                return [
                    await client.route(embedding=query, seed=5, **options)
                    for options in ({}, {"include_support": True}, {"debug": True})
                ]

        lean, full, debug = asyncio.run(scenario())
    assert asked == [False, True, True]
    want = Router(Bank.open(path), POLICY).route(query, seed=5)
    assert lean.support_rows == lean.support_ids == lean.support_similarities == []
    for decision in (lean, full, debug):
        assert (decision.referencers, decision.votes, decision.subsets) == (want.referencers, want.votes, want.subsets)
    for decision in (full, debug):
        assert decision.support_rows == want.support_rows and decision.support_rows
        np.testing.assert_array_equal(np.float32(decision.support_similarities), np.float32(want.support_similarities))
