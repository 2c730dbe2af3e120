"""Cancelling a Route call in flight: the client sees CANCELLED, the server-side handler is cancelled
(it sends no response), and the server goes on serving the next request correctly.

The route is made slow by wrapping ``Router.route_many`` (what the servicer calls for a batch of routes
on its worker thread): the first call announces that it started and then
waits, in small steps, until the test releases it (after the cancellation has been observed), so nothing
depends on how fast this machine is. Routing runs on the worker thread (``inline_route_bytes = 0``: the
test bank is far smaller than the size above which the servicer leaves the event loop), so the loop stays
free to notice the cancellation while the kernel "runs".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from service_harness import POLICY, ServerHandle, make_bank, make_config, queries_for, raw_stub, running_server, wait_until
from smcs import Bank, Router
from smcs._proto import router_pb2 as pb
from smcs.client import AsyncClient
from smcs.core import router as router_module
from smcs.service import servicer as servicer_module
from smcs.wire.decision import decision_from_response

PATIENCE_S = 60.0
"""Bound on every wait: generous, as the suite may run on a loaded 2-core machine. Nothing waits this long
when the behaviour is right."""
STEP_S = 0.01


@dataclass
class SlowRoute:
    """State shared between the test and the wrapped ``Router.route_many`` / ``RouterService.Route``."""

    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    slow_calls_left: int = 0
    """Armed (set to 1) once the server has started: its start-up warms the kernels with a route."""
    completed: list[bool] = field(default_factory=list)
    """One entry per slow route: True when it ran to completion (returned a decision)."""
    handler_outcomes: list[str] = field(default_factory=list)
    """One entry per Route handler call: "returned" (a response was sent) or "cancelled"."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture()
def slow(monkeypatch: pytest.MonkeyPatch) -> SlowRoute:
    state = SlowRoute()
    original_route = router_module.Router.route_many
    original_handler = servicer_module.RouterService.Route

    def route(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with state.lock:
            slow_call = state.slow_calls_left > 0
            state.slow_calls_left -= slow_call
        if not slow_call:
            return original_route(self, *args, **kwargs)
        state.started.set()
        deadline = time.monotonic() + PATIENCE_S
        try:
            while not state.release.is_set() and time.monotonic() < deadline:
                time.sleep(STEP_S)
            decision = original_route(self, *args, **kwargs)
            state.completed.append(True)
            return decision
        except BaseException:
            state.completed.append(False)
            raise
        finally:
            state.finished.set()

    async def handler(self, request, context):  # type: ignore[no-untyped-def]
        try:
            response = await original_handler(self, request, context)
        except asyncio.CancelledError:
            state.handler_outcomes.append("cancelled")
            raise
        except BaseException as exc:
            state.handler_outcomes.append(f"raised {type(exc).__name__}")
            raise
        state.handler_outcomes.append("returned")
        return response

    monkeypatch.setattr(router_module.Router, "route_many", route)
    # the handler is looked up when the server registers the service: patch before the server starts
    monkeypatch.setattr(servicer_module.RouterService, "Route", handler)
    return state


@pytest.fixture()
def bank_path(tmp_path: Path) -> Path:
    path = tmp_path / "bank"
    make_bank(path)
    return path


@pytest.fixture()
def server(bank_path: Path, slow: SlowRoute) -> Iterator[ServerHandle]:
    with running_server(bank_path, make_config(inline_route_bytes=0)) as handle:  # route on the worker thread
        with slow.lock:
            slow.slow_calls_left = 1
        yield handle
        slow.release.set()  # never leave the worker thread waiting, whatever the test did


def _request(query: np.ndarray, seed: int = 1) -> pb.RouteRequest:
    return pb.RouteRequest(embedding=pb.Embedding(values=query.tolist()), seed=seed, include_support=True)


def _cancel_with_a_future(handle: ServerHandle, query: np.ndarray, slow: SlowRoute) -> None:
    with raw_stub(handle.target) as stub:
        future = stub.Route.future(_request(query), timeout=PATIENCE_S)
        assert slow.started.wait(PATIENCE_S), "the server never started routing"
        assert future.cancel(), "the call finished before it could be cancelled"
        assert future.cancelled()
        with pytest.raises(grpc.FutureCancelledError):
            future.result(timeout=PATIENCE_S)
        assert future.code() == grpc.StatusCode.CANCELLED


def _cancel_with_the_async_client(handle: ServerHandle, query: np.ndarray, slow: SlowRoute) -> None:
    async def scenario() -> None:
        async with AsyncClient(handle.target, retries=0, timeout=PATIENCE_S) as client:
            call = asyncio.ensure_future(client.route(embedding=query, seed=1))
            started = await asyncio.get_running_loop().run_in_executor(None, slow.started.wait, PATIENCE_S)
            assert started, "the server never started routing"
            assert not call.done()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    asyncio.run(scenario())


@pytest.mark.parametrize("cancel", [_cancel_with_a_future, _cancel_with_the_async_client], ids=["future", "async-client"])
def test_a_cancelled_route_stops_its_handler_and_the_server_keeps_serving(server, bank_path, slow, cancel):
    query = queries_for(bank_path, 1)[0]
    cancel(server, query, slow)

    # the server noticed: the handler was cancelled while the route was still running, and sent nothing
    wait_until(lambda: bool(slow.handler_outcomes), PATIENCE_S, what="the Route handler to end")
    assert slow.handler_outcomes == ["cancelled"]
    assert not slow.finished.is_set(), "the slow route ended before it was released"

    # the worker thread finishes the abandoned route (a kernel cannot be interrupted); its result is dropped
    slow.release.set()
    assert slow.finished.wait(PATIENCE_S)
    assert slow.completed == [True]

    # the next request is served, correctly, and its handler returns normally
    with raw_stub(server.target) as stub:
        response = stub.Route(_request(query, seed=1), timeout=PATIENCE_S)
    remote = decision_from_response(response)
    local = Router(Bank.open(bank_path), POLICY).route(query, seed=1)
    assert (remote.referencers, remote.votes, remote.aggregator, remote.subsets, remote.support_rows) == (
        local.referencers, local.votes, local.aggregator, local.subsets, local.support_rows
    )
    assert slow.handler_outcomes == ["cancelled", "returned"]
    assert slow.completed == [True]  # the second route was not a slow one
