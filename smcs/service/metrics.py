"""Prometheus metrics of one server: request counts and latencies, Route stage latencies, the live bank.

Each server records into a private ``CollectorRegistry`` (never prometheus_client's global one), so several
servers in one process keep separate counts. Recording is always on and cheap; the HTTP exposition
(``/metrics``) listens only when ``[metrics] port`` is set (0: on a free port, reported at start).

Metrics:
    smcs_requests_total{method, code}: Router calls ended, by gRPC status name (OK included). Counted by
        ``MetricsInterceptor``, so refusals before the servicer (auth) count too.
    smcs_request_seconds{method}: whole-call latency as the server sees it (the handler, from the
        interceptor's hand-over to its last message or status).
    smcs_route_stage_seconds{stage}: the stages of Route: embed (question text to a vector; only for text
        queries), route (``Router.route``), respond (building the response message); a stage that fails is
        timed too (a remote embedder's timeout shows in ``embed``).
    smcs_in_flight: Router calls being handled now.
    smcs_bank_questions, smcs_bank_models, smcs_bank_version_info{version}: the live bank snapshot, read
        at scrape time (so they follow every reload and bank write); absent while the bank loads.
    smcs_bank_mean_pairwise_cosine, smcs_bank_near_duplicate_share, smcs_bank_degenerate: how distinct the
        live bank's embeddings are (``smcs.bank.distinctness``, measured on a sample when the version
        loads); degenerate is 1 when retrieval cannot tell the questions apart, else 0.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.context_managers import Timer
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import MetricsConfig
from .calls import wrap_router_call
from .state import ServiceState

STAGES = ("embed", "route", "respond")
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
"""Seconds; from 100 µs (a small bank routes in well under a millisecond) to 30 s (a slow remote embedder)."""


class Metrics:
    """The metrics of one server, in a registry of its own (``registry``)."""

    def __init__(self, state: ServiceState) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "smcs_requests", "Router calls ended, by method and gRPC status code.", ("method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "smcs_request_seconds", "Whole-call latency of Router calls, in seconds.", ("method",),
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        stages = Histogram(
            "smcs_route_stage_seconds", "Latency of the stages of Route (embed, route, respond), in seconds.",
            ("stage",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._stages = {name: stages.labels(name) for name in STAGES}
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, Any]] = {}
        self.in_flight = Gauge("smcs_in_flight", "Router calls being handled now.", registry=self.registry)
        self.registry.register(_BankCollector(state))

    def stage(self, name: str) -> Timer:
        """A context manager that records the time spent in its block as Route stage ``name``."""
        return self._stages[name].time()

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Record one ended call of ``method`` (a bare name, e.g. ``Route``)."""
        children = self._children.get((method, code))
        if children is None:  # labels() takes a lock and builds the key; the children are kept instead
            children = self._children[method, code] = (self.requests.labels(method, code.name), self.latency.labels(method))
        children[0].inc()
        children[1].observe(seconds)


class _BankCollector(Collector):
    """The live snapshot's bank, read at scrape time."""

    def __init__(self, state: ServiceState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        live = self._state.live
        if live is None:
            return
        bank = live.bank
        yield GaugeMetricFamily("smcs_bank_questions", "Questions in the live bank version.", value=bank.n_questions)
        yield GaugeMetricFamily("smcs_bank_models", "Models in the live bank version.", value=bank.n_models)
        info = InfoMetricFamily("smcs_bank_version", "The live bank version.")
        info.add_metric([], {"version": bank.version})
        yield info
        distinct = live.distinctness
        yield GaugeMetricFamily(
            "smcs_bank_mean_pairwise_cosine", "Mean cosine between sampled rows of the live bank's embeddings.",
            value=distinct.mean_pairwise_cosine,
        )
        yield GaugeMetricFamily(
            "smcs_bank_near_duplicate_share",
            "Share of sampled bank rows whose nearest other row is near-identical (cosine >= 0.999) with another text.",
            value=distinct.near_duplicate_share,
        )
        yield GaugeMetricFamily(
            "smcs_bank_degenerate", "1 when the live bank's embeddings are too alike to retrieve by, else 0.",
            value=int(distinct.degenerate),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: nothing to check for name clashes at registration


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every Router call (health and reflection are not counted).

    The status code is read from the context after the handler ends: the code it aborted with
    (``context.abort`` raises ``grpc.aio.AbortError`` after setting it) or set with ``set_code``; OK when
    it returned without one; CANCELLED when the call was cancelled; UNKNOWN for an escaping exception,
    as grpc itself reports it. Put it first among the interceptors so that it sees their refusals too.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return wrap_router_call(await continuation(details), details, self._unary, self._unary_stream)

    def _unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def measured(request: object, context: grpc.aio.ServicerContext) -> Any:
            self._metrics.in_flight.inc()
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(request, context)
                code = _code(context, grpc.StatusCode.OK)
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:  # AbortError included: abort set the code first
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                self._metrics.in_flight.dec()
                self._metrics.observe(method, code, time.perf_counter() - start)

        return measured

    def _unary_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def measured(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self._metrics.in_flight.inc()
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                async for message in behavior(request, context):
                    yield message
                code = _code(context, grpc.StatusCode.OK)
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                self._metrics.in_flight.dec()
                self._metrics.observe(method, code, time.perf_counter() - start)

        return measured


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    """The code the handler set (abort sets it before raising), else ``default``."""
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else default


class MetricsHTTPServer:
    """The ``/metrics`` listener of one server (prometheus_client's WSGI server on a daemon thread).

    ``port`` is the port bound: ``config.port``, or the free one the system picked when that is 0.
    """

    def __init__(self, config: MetricsConfig, registry: CollectorRegistry) -> None:
        if config.port is None:
            raise ValueError("[metrics] port is not set: no metrics listener to start")
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(config.port, addr=config.host, registry=registry)
        self.port: int = self._httpd.server_address[1]

    def close(self) -> None:
        """Stop listening and free the port (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
