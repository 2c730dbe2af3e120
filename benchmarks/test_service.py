"""Route over loopback against a real ``smcs serve`` process: one client's latency, eight clients' throughput.

The bank is 15,000 × 384 with R = 15 (the size of the SMCS paper's unified bank), the embedding is sent
by the client, and the paper's default policy routes. The standard health check on the same server is
timed beside it as the floor: a bare grpcio unary call on this machine. Run with the other benchmarks
(see ``report.py``); ``extra_info`` carries p99 and the 8-client QPS.

``test_route_vs_health`` is the interleaved form of the 8-client measurement: health checks, Routes and
Routes asking for their support set (``include_support``) take turns in bursts on the same server and
clients, in an order rotated each round, and each ratio is the median of the rounds' own quotients, so a
drift of the shared machine's speed between bursts cancels out.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from smcs import Client
from smcs.synthetic import create_clustered_bank, queries_near

N_QUESTIONS, DIM, N_MODELS = 15_000, 384, 15
CLIENTS = 8
CALLS_PER_CLIENT = 250
PAIRED_METHODS = ("health", "route", "route-support")
"""The calls of ``test_route_vs_health``'s rounds: a bare unary call, a Route, a Route with its support set."""
PAIRED_ROUNDS = 5
READY = re.compile(r"serving bank \S+ on \S+:(\d+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, np.ndarray]]:
    """A ``smcs serve`` subprocess over a fresh synthetic bank; yields (target, query embeddings)."""
    path = tmp_path_factory.mktemp("service-bank") / "bank"
    embeddings = np.asarray(create_clustered_bank(path, N_QUESTIONS, DIM, N_MODELS).embeddings)
    process = subprocess.Popen(
        [sys.executable, "-m", "smcs.cli", "serve", "--bank", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _wait_for_port(process, timeout_s=120.0)
        yield f"127.0.0.1:{port}", queries_near(embeddings, 64)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_port(process: subprocess.Popen[str], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"smcs serve exited with status {process.wait()} before it was ready")
        match = READY.search(line)
        if match:
            return int(match.group(1))
    raise RuntimeError("smcs serve did not become ready in time")


def _calls(client: Client, queries: np.ndarray) -> dict[str, Callable[[int], object]]:
    """Call ``i`` of each method on ``client``: the health check, a Route (query ``i`` of ``queries``, seed
    ``i``), the same Route asking for its support set."""
    return {
        "health": lambda i: client.health(),
        "route": lambda i: client.route(embedding=queries[i % len(queries)], seed=i),
        "route-support": lambda i: client.route(embedding=queries[i % len(queries)], seed=i, include_support=True),
    }


def _latencies(call, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out[i] = time.perf_counter() - start
    return out


@pytest.mark.parametrize("method", ["health", "route"])
def test_one_client(benchmark, server: tuple[str, np.ndarray], method: str) -> None:
    """p50/p99 of one client's sequential calls; ``health`` is the bare-unary-call floor."""
    target, queries = server
    with Client(target, retries=0) as client:
        call = _calls(client, queries)[method]
        for i in range(20):
            call(i)  # connection set-up and warm caches stay out of the numbers
        latencies = _latencies(call, 50 if benchmark.disabled else 2000)
        benchmark.group = "service: one client"
        benchmark.extra_info.update(
            p50_ms=round(1e3 * float(np.median(latencies)), 3), p99_ms=round(1e3 * float(np.quantile(latencies, 0.99)), 3)
        )
        benchmark(call, 0)


@pytest.mark.parametrize("method", ["health", "route"])
def test_eight_clients_qps(benchmark, server: tuple[str, np.ndarray], method: str) -> None:
    """Requests per second with eight concurrent clients (one channel each, sequential calls)."""
    target, queries = server
    clients = [Client(target, retries=0) for _ in range(CLIENTS)]
    calls_per_client = 20 if benchmark.disabled else CALLS_PER_CLIENT
    try:

        def burst() -> None:
            def work(client: Client) -> None:
                for i in range(calls_per_client):
                    if method == "health":
                        client.health()
                    else:
                        client.route(embedding=queries[i % len(queries)], seed=i)

            threads = [threading.Thread(target=work, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        burst()  # warm every channel
        benchmark.group = "service: 8 clients"
        benchmark.pedantic(burst, rounds=1 if benchmark.disabled else 3)
        seconds = benchmark.stats.stats.median if benchmark.stats else None
        if seconds:
            benchmark.extra_info["qps"] = round(CLIENTS * calls_per_client / seconds)
    finally:
        for c in clients:
            c.close()


def _burst(calls: list[Callable[[int], object]], per_client: int) -> tuple[float, np.ndarray]:
    """Each of ``calls`` (one per client) called ``per_client`` times on its own thread, the threads started
    together: (wall seconds of the whole burst, every call's latency)."""
    latencies = np.empty((len(calls), per_client))
    start = threading.Barrier(len(calls) + 1)

    def work(c: int) -> None:
        start.wait()
        latencies[c] = _latencies(calls[c], per_client)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(len(calls))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began, latencies.ravel()


def test_route_vs_health(benchmark, server: tuple[str, np.ndarray]) -> None:
    """Eight clients' QPS of each of ``PAIRED_METHODS`` in interleaved bursts; the median per-round ratio of
    each Route's QPS to the health check's, and each method's p50 latency under that load."""
    target, queries = server
    clients = [Client(target, retries=0) for _ in range(CLIENTS)]
    per_client = 20 if benchmark.disabled else CALLS_PER_CLIENT
    qps: dict[str, list[float]] = {m: [] for m in PAIRED_METHODS}
    latencies: dict[str, list[np.ndarray]] = {m: [] for m in PAIRED_METHODS}
    try:
        calls = {m: [_calls(c, queries)[m] for c in clients] for m in PAIRED_METHODS}
        for method in PAIRED_METHODS:
            _burst(calls[method], 5)  # connections up, caches warm

        def one_round() -> None:
            shift = len(qps["health"]) % len(PAIRED_METHODS)  # rotate who goes first
            for method in PAIRED_METHODS[shift:] + PAIRED_METHODS[:shift]:
                seconds, times = _burst(calls[method], per_client)
                qps[method].append(CLIENTS * per_client / seconds)
                latencies[method].append(times)

        benchmark.group = "service: route vs health"
        rounds = 1 if benchmark.disabled else PAIRED_ROUNDS
        benchmark.pedantic(one_round, rounds=rounds)
    finally:
        for c in clients:
            c.close()
    benchmark.extra_info.update(
        service_paired=True,
        n=N_QUESTIONS,
        d=DIM,
        clients=CLIENTS,
        calls_per_client=per_client,
        rounds=rounds,
        qps={m: round(statistics.median(v)) for m, v in qps.items()},
        p50_ms={m: round(1e3 * float(np.median(np.concatenate(v))), 3) for m, v in latencies.items()},
        ratios={
            f"{m}/health": round(statistics.median(a / b for a, b in zip(qps[m], qps["health"])), 3)
            for m in PAIRED_METHODS
            if m != "health"
        },
    )
