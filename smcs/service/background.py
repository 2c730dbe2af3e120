"""A server on a background thread, for embedding the service in a synchronous program (tests, benchmarks,
notebooks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from ..config import Config
from .server import RunningServer, start_server

T = TypeVar("T")


class BackgroundServer:
    """Runs ``start_server(config, bank_path)`` on its own event loop in a daemon thread.

        with BackgroundServer(config, bank_path) as server:
            Client(server.target).route(...)

    Entering returns once the server is SERVING; leaving stops it (``grace_s`` for requests in flight)
    and joins the thread.
    """

    def __init__(self, config: Config, bank_path: Path, *, grace_s: float = 1.0, start_timeout_s: float = 120.0) -> None:
        self._config = config
        self._bank_path = bank_path
        self._grace_s = grace_s
        self._start_timeout_s = start_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smcs-server", daemon=True)
        self.running: RunningServer | None = None

    @property
    def target(self) -> str:
        """host:port that clients connect to."""
        assert self.running is not None, "the server is not started"
        return f"{self._config.server.host}:{self.running.port}"

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        try:
            self.running = self.call(start_server(self._config, self._bank_path), self._start_timeout_s)
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.running is not None:
                self.call(self.running.stop(self._grace_s), self._grace_s + 30.0)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30.0)
        if not self._thread.is_alive():
            self._loop.close()
