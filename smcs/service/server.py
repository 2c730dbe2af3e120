"""Building, starting and stopping the gRPC server (grpc.aio), with health checking, reflection (v1 and
v1alpha) and admission control."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .._proto import router_pb2_grpc as pb_grpc
from ..config import Config, TLSConfig
from ..backends.pool import ModelPool
from ..bank import remote
from ..embed import AsyncEmbedder, EmbedderConfig, EmbedderError, as_async, make_embedder
from ..http_retry import AsyncClosing
from .admission import Admission, AdmissionInterceptor
from .auth import BearerTokenInterceptor
from .batching import RouteBatcher, service_batcher
from .calls import SERVICE_NAME
from .decode_guard import DecodeGuardInterceptor
from .http import Gateway, start_gateway
from .metrics import Metrics, MetricsHTTPServer, MetricsInterceptor
from .reflection import enable_server_reflection
from .servicer import RouterService
from .state import EmbedderChoice, ServiceState

log = logging.getLogger(__name__)

GRACE_S = 5.0
"""How long a stopping server lets requests in flight finish."""


class RunningServer:
    """A started server: its port, its live state, its metrics, and how to stop it.

    ``port`` is the gRPC port, ``metrics_port`` the port of the ``/metrics`` listener (None when
    ``[metrics]`` leaves it off) and ``http_port`` the HTTP gateway's (None when ``[http]`` leaves it off),
    all as bound: a configured 0 reads here as the port the system picked.
    """

    def __init__(self, server: grpc.aio.Server, port: int, state: ServiceState, health: health.aio.HealthServicer,
                 executors: list[ThreadPoolExecutor], watcher: asyncio.Task[None] | None, metrics: Metrics,
                 exposition: MetricsHTTPServer | None, pool: ModelPool, batcher: RouteBatcher,
                 gateway: Gateway | None = None) -> None:
        self.server = server
        self.port = port
        self.state = state
        self.metrics = metrics
        self.metrics_port = exposition.port if exposition is not None else None
        self.gateway = gateway
        self.http_port = gateway.port if gateway is not None else None
        self._exposition = exposition
        self._health = health
        self._executors = executors
        self._watcher = watcher
        self._pool = pool
        self._batcher = batcher

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """Report NOT_SERVING, let requests in flight finish (up to ``grace_s``), then stop."""
        await self._health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.gateway is not None:  # with gRPC: each lets its requests in flight finish
            await asyncio.gather(self.server.stop(grace_s), self.gateway.stop())
        else:
            await self.server.stop(grace_s)
        self._batcher.close()
        await self.state.close()
        _shut_down(self._executors)
        await self._pool.aclose()
        await _close_embedder(self.state.embedder)
        if self._exposition is not None:
            self._exposition.close()


async def start_server(config: Config, bank_path: Path, *, verify: bool = True, bank_url: str | None = None) -> RunningServer:
    """Start serving ``bank_path`` as ``config`` says; returns once the bank is loaded and kernels are warm.

    The port is open (and health says NOT_SERVING) while the bank loads; health turns SERVING after.
    ``verify`` (the default) checks the SHA-256 of every file of the version it starts with against the
    manifest (one read of the bank, logged per tenth on a large bank) and refuses a damaged one with a
    ``BankFormatError`` naming the file. Versions committed later were hashed by their writer and are
    loaded in O(1). The HTTP gateway (``[http] port`` set) is open while the bank loads too, answering 503
    until it has; it shares the gRPC calls' admission slots.

    ``bank_url`` (``s3://bucket/prefix``): ``bank_path`` is this server's copy of the bank published there,
    brought up to date (``smcs.bank.remote.sync``) before the bank loads and then every ``[server]
    bank_sync_interval_s``; the server is then a read-only replica (bank writes are refused, and the index,
    scorer and outcome log are left to the publisher).
    """
    options = [
        ("grpc.max_receive_message_length", config.server.max_message_bytes),
        ("grpc.max_send_message_length", config.server.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not silently share its traffic
    ]
    executors = [
        ThreadPoolExecutor(max_workers=config.server.workers, thread_name_prefix="smcs-bank"),  # loads and writes; routes: the batcher's
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="smcs-embed"),
    ]
    embedder = EmbedderChoice(None, strict=False)
    try:
        embedder = await _embedder_choice(config.embedder, executors[1])
        pool = ModelPool.from_config(config.models)  # builds clients only: a model that is down does not stop start-up
    except BaseException:
        _shut_down(executors)
        await _close_embedder(embedder)
        raise
    read_only = "" if bank_url is None else (
        f"this server is a read-only replica of the bank at {bank_url}: write to the bank it is published from, "
        f"then `smcs bank publish` it"
    )
    state = ServiceState(bank_path, config.policy, executors[0], embedder, rebuild_index=config.server.rebuild_index,
                         refit_scorer_interval_s=config.server.refit_scorer_interval_s, read_only=read_only)
    metrics = Metrics(state)
    # metrics first: it then counts the refusals of the interceptors after it (auth) too
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)]
    if config.auth.enabled:
        interceptors.append(BearerTokenInterceptor(config.auth))
    # then the decode guard (undecodable bytes are refused after auth, and counted) and admission (a call
    # waits for a slot only once it is known to be decodable); grpc's own maximum_concurrent_rpcs is not
    # used: it refuses at once, where admission queues briefly and sends a retry pushback
    interceptors.append(DecodeGuardInterceptor())
    admission = Admission(config.server.max_concurrent_rpcs, config.server.admission_wait_s)  # the HTTP gateway's too
    interceptors.append(AdmissionInterceptor(admission))
    server = grpc.aio.server(interceptors=interceptors, options=options)
    batcher = service_batcher(config.server, admission)  # the HTTP gateway's too
    pb_grpc.add_RouterServiceServicer_to_server(
        RouterService(state, config.server, metrics, pool, config.answer, batcher), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    address = f"{config.server.host}:{config.server.port}"
    try:
        port = _bind(server, address, config.server.tls)
    except BaseException:
        batcher.close()
        _shut_down(executors)
        await pool.aclose()
        await _close_embedder(embedder)
        raise
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    exposition = None
    gateway = None
    try:
        if config.http.port is not None:
            gateway = await start_gateway(config, state, pool, metrics, admission, batcher, GRACE_S)
        if bank_url is not None:
            client = await asyncio.to_thread(remote.s3_client, config.server.s3_endpoint_url)
            await asyncio.to_thread(remote.sync, bank_url, bank_path, client=client)
        await state.reload(verify=verify)
        if config.metrics.port is not None:
            exposition = MetricsHTTPServer(config.metrics, metrics.registry)
    except BaseException:
        await server.stop(0)
        if gateway is not None:
            await gateway.stop()
        batcher.close()
        _shut_down(executors)
        await pool.aclose()
        await _close_embedder(embedder)
        raise
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    loops = []
    if config.server.reload_interval_s > 0:
        loops.append(state.watch(config.server.reload_interval_s))
    if bank_url is not None:
        loops.append(state.sync_from(bank_url, config.server.bank_sync_interval_s, config.server.s3_endpoint_url))
    watcher = asyncio.get_running_loop().create_task(_together(loops)) if loops else None
    log.info("smcs serving %s on %s:%d", bank_path, config.server.host, port)
    if exposition is not None:
        log.info("smcs metrics on http://%s:%d/metrics", config.metrics.host, exposition.port)
    return RunningServer(server, port, state, health_servicer, executors, watcher, metrics, exposition, pool, batcher, gateway)


async def serve(
    config: Config, bank_path: Path, ready: asyncio.Event | None = None, *, verify: bool = True, bank_url: str | None = None,
) -> None:
    """Run a server until SIGINT or SIGTERM, then stop gracefully (``verify``, ``bank_url``: see ``start_server``).

    Once started it prints ``smcs: metrics on http://HOST:PORT/metrics`` (when ``[metrics] port`` is set),
    ``smcs: http on http://HOST:PORT/v1`` (when ``[http] port`` is set) and then ``smcs: serving bank
    VERSION on HOST:PORT``, with the ports actually bound (a configured 0 becomes the free port the system
    picked).
    """
    running = await start_server(config, bank_path, verify=verify, bank_url=bank_url)
    if running.metrics_port is not None:  # before the serving line: whoever waits for that one has every port
        print(f"smcs: metrics on http://{config.metrics.host}:{running.metrics_port}/metrics", flush=True)
    if running.http_port is not None:
        print(f"smcs: http on http://{config.http.host}:{running.http_port}/v1", flush=True)
    print(f"smcs: serving bank {running.state.live.bank.version} on {config.server.host}:{running.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    await running.stop()


async def _embedder_choice(config: EmbedderConfig | None, executor: ThreadPoolExecutor) -> EmbedderChoice:
    """Load the configured embedder (strict), or the bundled default (lenient: if it cannot load, the
    server takes embeddings only)."""
    if config is not None and config.kind == "none":
        return EmbedderChoice(None, strict=True, reason='the embedder is configured as kind = "none"')
    try:
        loaded = await asyncio.get_running_loop().run_in_executor(executor, make_embedder, config or EmbedderConfig())
        embedder = await _opened(as_async(loaded, executor))
    except EmbedderError as exc:
        if config is not None:
            raise
        log.warning("the default embedder cannot load (%s); serving embeddings only", exc)
        return EmbedderChoice(None, strict=False, reason=f"the default embedder cannot load: {exc}")
    return EmbedderChoice(embedder, strict=config is not None)


async def _opened(embedder: AsyncEmbedder) -> AsyncEmbedder:
    """``embedder`` with its connection pool open for the server's lifetime (closed by ``stop``), and its
    dimension learnt now rather than on the first request (a remote embedder without a configured dim)."""
    closing = isinstance(embedder, AsyncClosing)
    if closing:
        await embedder.__aenter__()
    try:
        probe = getattr(embedder, "probe", None)
        if probe is not None:
            await probe()
    except BaseException:
        if closing:
            await embedder.aclose()
        raise
    return embedder


async def _close_embedder(choice: EmbedderChoice) -> None:
    """Close the embedder's connection pool, if it keeps one."""
    if isinstance(choice.embedder, AsyncClosing):
        await choice.embedder.aclose()


async def _together(loops: list[Coroutine[Any, Any, None]]) -> None:
    """Run the background ``loops`` until cancelled (cancelling this cancels every one)."""
    await asyncio.gather(*loops)


def _shut_down(executors: list[ThreadPoolExecutor]) -> None:
    for executor in executors:
        executor.shutdown(wait=False)


def _bind(server: grpc.aio.Server, address: str, tls: TLSConfig | None) -> int:
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
                root_certificates=Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None,
                require_client_auth=tls.client_ca_file is not None,
            )
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises this (older versions returned 0) when the address cannot be bound
        port = 0
    if port == 0:
        if tls is not None:  # grpcio only logs why the credentials were refused; name the files to check
            raise OSError(
                f"cannot listen on {address} with TLS (address in use, not an address of this machine, or "
                f"{tls.cert_file} / {tls.key_file} is not a PEM certificate chain / its private key)"
            )
        raise OSError(f"cannot listen on {address} (address in use, or not an address of this machine)")
    return port
