"""Real smcs gRPC servers for the service tests (tests/test_service*.py).

Imported as ``from service_harness import ...``: tests/ has no ``__init__.py``, so pytest's default
``prepend`` import mode puts tests/ on ``sys.path`` (as for kernel_strategies.py).

``running_server`` starts ``smcs.service.start_server`` on 127.0.0.1, port 0, in a background thread that
runs its own asyncio event loop (there is no pytest-asyncio), yields a ``ServerHandle`` (the port, the
``RunningServer``, clients) and always stops the server and the loop when the block ends, whatever
happened inside. The fixtures at the bottom are built on it: a module-wide read-only server over a small
synthetic bank, and a per-test server over a bank of its own for tests that write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from smcs import Bank, Policy
from smcs._proto import router_pb2_grpc as pb_grpc
from smcs.client import Client
from smcs.config import AuthConfig, Config, ServerConfig
from smcs.embed import EmbedderConfig
from smcs.service import RunningServer, start_server
from smcs.synthetic import create_clustered_bank, queries_near

N_QUESTIONS = 1000
DIM = 32
N_MODELS = 6
POLICY = Policy(k=4, n_base=50, n=5)
"""The servers' default policy (the paper's k = 7 exceeds the 6 models of the test banks)."""
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 1.0

T = TypeVar("T")


def make_bank(path: Path, n_questions: int = N_QUESTIONS, dim: int = DIM, n_models: int = N_MODELS, seed: int = 0) -> Bank:
    """Create a clustered synthetic bank at ``path``: question ids ``q0…``, models ``model-00…``."""
    return create_clustered_bank(path, n_questions, dim, n_models, seed=seed)


def queries_for(bank_path: Path, n: int, seed: int = 1) -> np.ndarray:
    """``n`` float32 query embeddings near rows of the bank at ``bank_path``."""
    return queries_near(np.asarray(Bank.open(bank_path).embeddings), n, seed=seed)


NO_EMBEDDER = EmbedderConfig(kind="none")
"""The test banks are 32-d synthetic vectors: no text embedder can query them."""


def make_config(
    *, policy: Policy = POLICY, auth: AuthConfig | None = None, embedder: EmbedderConfig | None = NO_EMBEDDER, **server: Any
) -> Config:
    """A Config listening on 127.0.0.1, port 0 (a free port); ``server`` overrides ServerConfig fields."""
    return Config(
        server=ServerConfig(**{"host": "127.0.0.1", "port": 0, **server}),
        auth=auth if auth is not None else AuthConfig(),
        policy=policy,
        embedder=embedder,
    )


class LoopThread:
    """An asyncio event loop running in a daemon thread; ``close`` cancels what is left and ends it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="smcs-test-loop", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait for its result (at most ``timeout`` seconds)."""
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self.run(cancel_the_rest(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ServerHandle:
    """A server started by ``running_server``."""

    port: int
    running: RunningServer
    loop: LoopThread
    bank_path: Path
    config: Config
    stopped: bool = field(default=False)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> Client:
        """A blocking client of this server (close it, or use it as a context manager)."""
        return Client(self.target, **kwargs)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop the server gracefully (idempotent)."""
        if not self.stopped:
            self.stopped = True
            self.loop.run(self.running.stop(grace_s), 30)


@contextlib.contextmanager
def running_server(bank_path: Path, config: Config | None = None) -> Iterator[ServerHandle]:
    """Serve ``bank_path`` (default config: ``make_config()``) until the block ends, then stop."""
    config = config if config is not None else make_config()
    with LoopThread() as loop:
        running = loop.run(start_server(config, Path(bank_path)), START_TIMEOUT_S)
        handle = ServerHandle(running.port, running, loop, Path(bank_path), config)
        try:
            yield handle
        finally:
            handle.stop()


@contextlib.contextmanager
def raw_stub(target: str) -> Iterator[pb_grpc.RouterServiceStub]:
    """A bare RouterServiceStub (no retries, no client-side checks) for requests ``Client`` would not build."""
    channel = grpc.insecure_channel(target)
    try:
        yield pb_grpc.RouterServiceStub(channel)
    finally:
        channel.close()


def expect_rpc_error(call: Callable[[], object], code: grpc.StatusCode, *fragments: str) -> grpc.RpcError:
    """Run ``call``; assert it fails with ``code`` and a message containing every fragment."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    for fragment in fragments:
        assert fragment in (error.details() or ""), f"{fragment!r} not in {error.details()!r}"
    return error


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bank that no test writes to (module-wide)."""
    path = tmp_path_factory.mktemp("shared") / "bank"
    make_bank(path)
    return path


@pytest.fixture(scope="module")
def shared_server(shared_bank: Path) -> Iterator[ServerHandle]:
    """A server over ``shared_bank`` (module-wide); tests must not change its bank."""
    with running_server(shared_bank) as handle:
        yield handle


@pytest.fixture()
def fresh_bank(tmp_path: Path) -> Path:
    """A bank of this test's own."""
    path = tmp_path / "bank"
    make_bank(path)
    return path


@pytest.fixture()
def fresh_server(fresh_bank: Path) -> Iterator[ServerHandle]:
    """A server over ``fresh_bank``, for tests that write to the bank."""
    with running_server(fresh_bank) as handle:
        yield handle
