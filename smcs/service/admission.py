"""Admission control: at most ``max_concurrent_rpcs`` RouterService calls at once, the rest queue briefly.

gRPC's own ``maximum_concurrent_rpcs`` refuses the call that finds every slot taken at once, with
RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!": a burst a little above the limit is refused although
the slots free within milliseconds. Here a call that finds every slot taken waits, first come first
served, for at most ``[server] admission_wait_s`` (and at most half of its own remaining deadline, so that a
caller with a short deadline still has time to retry elsewhere); a call still waiting then is refused with
RESOURCE_EXHAUSTED, a message naming the limit and both settings, and the trailing metadata
``grpc-retry-pushback-ms``: when to try again (gRPC's retry pushback, which the smcs clients honour).

Only RouterService calls take slots: health checks and reflection are always served. A streaming Answer
holds its slot until its stream ends. Everything here runs on the server's event loop (no locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .calls import wrap_router_call

PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""The trailing metadata of gRPC's retry pushback (gRFC A6): milliseconds until the caller may retry."""
DEADLINE_SHARE = 0.5
"""The most of a call's remaining deadline it spends waiting for a slot."""
MIN_PUSHBACK_S = 0.05
"""The least pushback sent (with ``admission_wait_s = 0`` the wait itself would say "retry at once")."""


class Admission:
    """``limit`` slots and a first-come-first-served queue of the calls waiting for one."""

    def __init__(self, limit: int, wait_s: float) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.wait_s = wait_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def waiting(self) -> int:
        """Calls queued for a slot now."""
        return len(self._waiters)

    def wait_for(self, time_remaining: float | None) -> float:
        """How long a call whose deadline is ``time_remaining`` seconds away (None: none) may wait."""
        if time_remaining is None:
            return self.wait_s
        return max(0.0, min(self.wait_s, DEADLINE_SHARE * time_remaining))

    async def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds behind the calls queued before; False when none
        freed in time. A caller that gets True must ``release`` once."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        if timeout <= 0:
            return False
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(granted)
        expiry = loop.call_later(timeout, self._expire, granted)
        try:
            return await granted
        except asyncio.CancelledError:  # the call was cancelled while it waited
            if granted.done() and not granted.cancelled() and granted.result():
                self.release()  # a slot was handed over just before the cancellation: pass it on
            self._forget(granted)
            raise
        finally:
            expiry.cancel()

    def release(self) -> None:
        """Give a slot back: to the first call still waiting, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on: in_flight stays
                return
        self.in_flight -= 1

    def pushback_ms(self) -> int:
        """When a refused call may retry: about the admission wait (at least ``MIN_PUSHBACK_S``), jittered
        by ±50 % so that the calls refused together do not all come back together."""
        return round(1000 * max(self.wait_s, MIN_PUSHBACK_S) * random.uniform(0.5, 1.5))

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            waiter.set_result(False)
        self._forget(waiter)

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):
    """Runs each RouterService call once ``admission`` gives it a slot, or refuses it (see the module).

    Put it after authentication (a refused token never waits) and before the decode guard in the
    interceptor list, so that undecodable requests are refused without taking a slot."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return wrap_router_call(await continuation(details), details, self._unary, self._unary_stream)

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        """Return once the call holds a slot; end it with RESOURCE_EXHAUSTED when none frees in time."""
        admission = self._admission
        wait_s = admission.wait_for(context.time_remaining())
        if await admission.acquire(wait_s):
            return
        pushback = admission.pushback_ms()
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"server busy: all {admission.limit} slots ([server] max_concurrent_rpcs = {admission.limit}) stayed "
            f"taken for {wait_s:.3g} s ([server] admission_wait_s = {admission.wait_s:g}, at most half the "
            f"call's remaining deadline); retry in {pushback} ms ({PUSHBACK_KEY})",
            trailing_metadata=((PUSHBACK_KEY, str(pushback)),),
        )

    def _unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def admitted(request: object, context: grpc.aio.ServicerContext) -> Any:
            await self._admit(context)
            try:
                return await behavior(request, context)
            finally:
                self._admission.release()

        return admitted

    def _unary_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def admitted(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._admit(context)
            try:
                async for message in behavior(request, context):
                    yield message
            finally:
                self._admission.release()

        return admitted
