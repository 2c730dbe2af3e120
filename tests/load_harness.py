"""Processes and a load driver for the loopback load test (tests/test_load.py); ``SmcsServe`` also runs
the replicas of tests/test_replicas.py.

Imported as ``from load_harness import ...`` (tests/ is on ``sys.path``, as for service_harness.py).

``SmcsServe`` runs ``smcs serve`` as a subprocess, so that its resident memory (``VmRSS`` of
``/proc/PID/status``) and its open file descriptors (``/proc/PID/fd``) can be read while clients load
it. ``stdin_server`` runs a loopback helper server that prints its base URL(s) on one line and serves
until its stdin closes: ``benchmarks/model_server.py`` (fixed-delay chat completions) or this module
run as a script, a keep-alive ``/v1/embeddings`` server (``python tests/load_harness.py DIM``) that
answers at once with a deterministic unit vector per input text. ``drive`` runs concurrent clients
against a target for a bounded time, in a warm-up phase and a measured phase, and samples the server
between them and at the end, each time with every client idle between two requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from smcs import AsyncClient, Client

REPO = Path(__file__).resolve().parent.parent
SERVING_LINE = re.compile(r"smcs: serving bank \S+ on [\d.]+:(\d+)$")
METRICS_LINE = re.compile(r"smcs: metrics on http://[\d.]+:(\d+)/metrics$")
"""Printed before ``SERVING_LINE`` when the config sets ``[metrics] port`` (0 included: the port bound)."""
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
MIB = 1 << 20

OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
"""Channel option: a connection of the channel's own (gRPC otherwise shares one between channels to one address)."""


class LoadClient(AsyncClient):
    """An ``AsyncClient`` over a TCP connection of its own, as a separate client process would have."""

    @staticmethod
    def _insecure_channel(target: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """The client's plaintext channel, with ``OWN_CONNECTION`` added to its options."""
        return grpc.aio.insecure_channel(target, options=[*options, OWN_CONNECTION])


Call = Callable[[AsyncClient, int], Awaitable[str]]
"""One request of one client: (client, request number) -> an outcome label ("OK" or why not)."""


@dataclass(frozen=True)
class Sample:
    """The server process's resident memory and open file descriptors at one moment; ``peer_fds`` of
    the descriptors are TCP connections to the ports sampled for (the model servers)."""

    rss_bytes: int
    fds: int
    peer_fds: int = 0


class SmcsServe:
    """A ``smcs serve --config CONFIG --bank BANK --port 0`` subprocess on 127.0.0.1.

    ``port`` (the gRPC port) and ``metrics_port`` (the ``/metrics`` port, None when the config sets no
    ``[metrics] port``) are read from the lines the process prints at start, by ``wait_serving``.
    """

    def __init__(self, config_path: Path, bank_path: Path, log_path: Path) -> None:
        """Start the process; its stderr (the log) goes to ``log_path``."""
        self.log_path = log_path
        self._log = open(log_path, "w")  # closed in stop
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smcs.cli", "serve", "--config", str(config_path), "--bank", str(bank_path), "--port", "0"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=REPO,
        )
        self.port = 0
        self.metrics_port: int | None = None

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT`` once ``wait_serving`` returned."""
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for the start-up line that names the port (after the metrics line, if any), then for
        health SERVING."""
        lines = _line_reader(self.process)
        deadline = time.monotonic() + timeout_s
        while not self.port:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"smcs serve did not report its port within {timeout_s} s") from None
            if line is None:
                raise RuntimeError(f"smcs serve exited early (status {self.process.wait()}): {self.log_path.read_text()}")
            if metrics := METRICS_LINE.match(line.strip()):
                self.metrics_port = int(metrics.group(1))
            match = SERVING_LINE.match(line.strip())
            if match:
                self.port = int(match.group(1))
        with Client(self.target, retries=0, timeout=5.0) as client:
            while client.health() != "SERVING":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"smcs serve on {self.target} was not SERVING within {timeout_s} s")
                time.sleep(0.05)

    def sample(self, peer_ports: Collection[int] = ()) -> Sample:
        """The process's ``VmRSS``, its number of open file descriptors, and how many of them are TCP
        connections to ``peer_ports`` on this machine, now."""
        proc = Path(f"/proc/{self.process.pid}")
        rss_kib = int(next(line.split()[1] for line in (proc / "status").read_text().splitlines() if line.startswith("VmRSS:")))
        links = [_readlink(proc / "fd" / fd) for fd in os.listdir(proc / "fd")]
        sockets = {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
        return Sample(rss_kib * 1024, len(links), len(sockets & _tcp_inodes_to(proc, peer_ports)))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT_S``; idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        self._log.close()


def _readlink(path: Path) -> str:
    """Where the link ``path`` points ("" if it went away meanwhile)."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return ""


def _tcp_inodes_to(proc: Path, ports: Collection[int]) -> set[str]:
    """The socket inodes, in the network namespace of process ``proc``, of TCP connections whose remote
    port is one of ``ports`` (``/proc/PID/net/tcp`` and ``tcp6``: remote address in field 2, inode in 9)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for line in (proc / "net" / table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) in ports:
                inodes.add(fields[9])
    return inodes


def _line_reader(process: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """A queue of ``process``'s stdout lines (None at EOF), drained by a daemon thread so that the pipe
    never fills."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="load-stdout", daemon=True).start()
    return lines


@contextlib.contextmanager
def smcs_serve(config_path: Path, bank_path: Path, log_path: Path) -> Iterator[SmcsServe]:
    """A SERVING ``SmcsServe`` for the block; stopped (killed if need be) when it ends."""
    server = SmcsServe(config_path, bank_path, log_path)
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def stdin_server(*args: str) -> Iterator[list[str]]:
    """Run ``python ARGS``, a server that prints its base URLs on one line and serves until its stdin
    closes; yields the URLs. Closing stdin stops it (killed if it has not exited within ``STOP_TIMEOUT_S``)."""
    process = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        try:
            line = _line_reader(process).get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(f"{args[0]} printed no URLs within {START_TIMEOUT_S} s") from None
        if not line:
            raise RuntimeError(f"{args[0]} exited before printing its URLs (status {process.wait()})")
        yield line.split()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


@dataclass
class LoadResult:
    """What ``drive`` saw: outcome counts over both phases, the measured phase's requests and seconds,
    and the server sampled after the warm-up and at the end."""

    outcomes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    seconds: float = 0.0
    start: Sample = Sample(0, 0)
    end: Sample = Sample(0, 0)

    @property
    def qps(self) -> float:
        """Requests a second in the measured phase."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def summary(self, name: str) -> str:
        """One line: requests, QPS, outcome counts, RSS and fds at start and end."""
        counts = " ".join(f"{label}={count}" for label, count in sorted(self.outcomes.items()))
        peers = f" ({self.start.peer_fds} -> {self.end.peer_fds} to the models)" if self.start.peer_fds or self.end.peer_fds else ""
        return (
            f"{name}: {sum(self.outcomes.values())} requests, {self.requests} in the measured {self.seconds:.1f} s "
            f"({self.qps:.0f} QPS); {counts}; RSS {self.start.rss_bytes / MIB:.1f} -> {self.end.rss_bytes / MIB:.1f} MiB; "
            f"fds {self.start.fds} -> {self.end.fds}{peers}"
        )


def outcome_of(error: BaseException) -> str:
    """The label counted for a failed request: its gRPC status name, or the exception's type name."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    return type(error).__name__


async def _phase(clients: list[AsyncClient], call: Call, seconds: float, outcomes: Counter[str], numbers: Iterator[int]) -> int:
    """Every client calls ``call`` back to back until ``seconds`` have passed (the request in flight
    then finishes); returns the number of requests made."""
    stop_at = time.monotonic() + seconds
    made = 0

    async def one_client(client: AsyncClient) -> None:
        nonlocal made
        while time.monotonic() < stop_at:
            try:
                label = await call(client, next(numbers))
            except Exception as error:  # every failure is counted by its kind, and the load goes on
                label = outcome_of(error)
            outcomes[label] += 1
            made += 1

    await asyncio.gather(*(one_client(c) for c in clients))
    return made


async def _drive(
    server: SmcsServe, n_clients: int, seconds: float, warmup_s: float, call: Call, peer_ports: Collection[int]
) -> LoadResult:
    """``drive`` inside an event loop."""
    result = LoadResult()
    numbers = iter(range(1 << 62))
    clients: list[AsyncClient] = [LoadClient(server.target, retries=0) for _ in range(n_clients)]
    try:
        await _phase(clients, call, warmup_s, result.outcomes, numbers)
        result.start = server.sample(peer_ports)
        began = time.monotonic()
        result.requests = await _phase(clients, call, seconds, result.outcomes, numbers)
        result.seconds = time.monotonic() - began
        result.end = server.sample(peer_ports)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return result


def drive(
    server: SmcsServe, n_clients: int, seconds: float, warmup_s: float, call: Call, limit_s: float, peer_ports: Collection[int] = ()
) -> LoadResult:
    """Load ``server`` with ``n_clients`` concurrent clients (one connection each): ``warmup_s`` of
    requests, a sample, ``seconds`` more, a sample (counting connections to ``peer_ports`` apart). The
    whole run is cancelled after ``limit_s``."""
    return asyncio.run(asyncio.wait_for(_drive(server, n_clients, seconds, warmup_s, call, peer_ports), limit_s))


# ---------------------------------------------------------------------- the embeddings server (script)


def unit_vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim)
    return (vector / np.linalg.norm(vector)).tolist()


def embeddings_response(body: bytes, dim: int) -> bytes:
    """The whole HTTP response to one ``/v1/embeddings`` request body."""
    request = json.loads(body)
    texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
    data = [{"object": "embedding", "index": i, "embedding": unit_vector(t, dim)} for i, t in enumerate(texts)]
    payload = json.dumps({"object": "list", "model": request.get("model", "load"), "data": data}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode("latin-1") + payload


async def serve_embeddings(dim: int) -> None:
    """Serve ``/v1/embeddings`` on a free port of 127.0.0.1 (keep-alive) until stdin closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
                writer.write(embeddings_response(await reader.readexactly(length), dim))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(serve_embeddings(int(sys.argv[1])))
