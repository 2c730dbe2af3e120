"""A real, scriptable OpenAI-compatible ``/v1/embeddings`` server on 127.0.0.1, for the remote embedder's tests.

Imported as ``from embedding_server import ...`` (tests/ is on ``sys.path``, as for service_harness.py).

It speaks HTTP/1.1 over a real socket (asyncio streams), one response per connection (``Connection:
close``). Each request takes the next step of its *script* (the last step repeats), so a test can say
"429, then 200" or "500 twice, then 200". It lives inside the test's event loop, in an ``async with``
block: leaving the block closes the listening socket, releases any handler that hangs (which otherwise
gives up after ``HANG_LIMIT_S``) and waits for the handlers, so no server outlives its test.

The embedding it returns for a text is a deterministic function of the text (``vector_for``), not unit
norm, so that tests can check order and normalisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from http_wire import read_request, to_json, write_response

HANG_LIMIT_S = 5.0
"""How long a ``hang`` step waits before closing the connection unanswered."""


def vector_for(text: str, dim: int) -> list[float]:
    """The (unnormalised, nonzero) embedding the server returns for ``text``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return (rng.normal(size=dim) * (1 + 10 * rng.random())).tolist()


def unit(rows: list[list[float]]) -> np.ndarray:
    """``rows`` with L2-normalised rows (float64), for comparing with an embedder's output."""
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@dataclass
class Step:
    """What the server does with one request.

    ``kind``:
      ``ok`` (200, items in order), ``reversed`` (200, items in reverse order with their ``index``),
      ``no_index`` (200, in order, no ``index`` fields), ``status`` (``status`` with ``body`` and
      ``headers``), ``hang`` (never answer), ``close`` (close the connection without answering),
      ``malformed_json`` (200, body not JSON), ``truncated`` (200, ``Content-Length`` larger than the
      body sent, then close), ``wrong_dim`` (200, the last item one value longer), ``missing_data``
      (200, no ``data``), ``zero_vector`` (200, first item all zeros), ``wrong_count`` (200, one item
      too few), ``dup_index`` (200, every ``index`` 0).
    """

    kind: str = "ok"
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    json: object


class EmbeddingServer:
    """``async with EmbeddingServer(script, dim=8) as server:`` then ``server.base_url``."""

    def __init__(self, script: list[Step] | None = None, *, dim: int = 8) -> None:
        self.script = list(script or [Step()])
        self.dim = dim
        self.requests: list[Request] = []
        self.base_url = ""
        """``http://127.0.0.1:<port>``, once started."""
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> EmbeddingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop listening, release hanging handlers and wait for every handler to finish."""
        assert self._server is not None
        self._server.close()
        self._closing.set()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=HANG_LIMIT_S)

    def _next_step(self) -> Step:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            await self._respond(self._next_step(), request, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away (e.g. it timed out): nothing to answer
        finally:
            writer.close()

    async def _respond(self, step: Step, request: Request, writer: asyncio.StreamWriter) -> None:
        texts = request.json["input"] if isinstance(request.json, dict) else []
        items = [{"object": "embedding", "index": i, "embedding": vector_for(t, self.dim)} for i, t in enumerate(texts)]
        kind = step.kind
        if kind == "hang":  # until the test ends (or HANG_LIMIT_S), then close unanswered
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), HANG_LIMIT_S)
        elif kind == "close":
            pass
        elif kind == "status":
            await write_response(writer, step.status, step.body, step.headers)
        elif kind == "malformed_json":
            await write_response(writer, 200, b'{"data": [{"embedding": [0.1, 0.2')
        elif kind == "truncated":
            body = to_json({"object": "list", "data": items})
            await write_response(writer, 200, body[: len(body) // 2], content_length=len(body))
        else:
            await write_response(writer, 200, to_json(_payload(kind, items, self.dim)))


def _payload(kind: str, items: list[dict], dim: int) -> dict[str, object]:
    """The 200 body of step ``kind`` for the correct ``items``."""
    if kind == "reversed":
        items = items[::-1]
    elif kind == "no_index":
        for item in items:
            del item["index"]
    elif kind == "wrong_dim":
        items[-1]["embedding"].append(1.0)
    elif kind == "zero_vector":
        items[0]["embedding"] = [0.0] * dim
    elif kind == "wrong_count":
        items = items[:-1]
    elif kind == "dup_index":
        for item in items:
            item["index"] = 0
    elif kind not in ("ok", "missing_data"):
        raise ValueError(f"unknown step kind {kind!r}")
    payload: dict[str, object] = {"object": "list", "model": "fake", "usage": {"prompt_tokens": 1}}
    if kind != "missing_data":
        payload["data"] = items
    return payload


async def _read_request(reader: asyncio.StreamReader) -> Request:
    """Parse one HTTP/1.1 request (request line, headers, ``Content-Length`` body)."""
    method, path, headers, body = await read_request(reader)
    return Request(method, path, headers, json.loads(body) if body else None)
