"""Route over loopback against a real ``smcs serve`` process: one client's latency, eight clients' throughput.

The bank is 15,000 × 384 with R = 15 (the size of the SMCS paper's unified bank), the embedding is sent
by the client, and the paper's default policy routes. The standard health check on the same server is
timed beside it as the floor: a bare grpcio unary call on this machine. Run with the other benchmarks
(see ``report.py``); ``extra_info`` carries p99 and the 8-client QPS.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from smcs import Client
from smcs.synthetic import create_clustered_bank, queries_near

N_QUESTIONS, DIM, N_MODELS = 15_000, 384, 15
CLIENTS = 8
CALLS_PER_CLIENT = 250
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
        calls = {
            "health": lambda i: client.health(),
            "route": lambda i: client.route(embedding=queries[i % len(queries)], seed=i),
        }
        call = calls[method]
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
