"""A real, scriptable OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1, for backend tests.

Imported as ``from fault_server import FaultServer, Reply`` (tests/ is on ``sys.path``).

It speaks HTTP/1.1 over a real socket on a free port, one response per connection (``Connection:
close``), from an asyncio loop in a background thread, so that sync tests, ``asyncio.run`` and other
event loops can all talk to it. Use it as a context manager (or a fixture around one)::

    with FaultServer([Reply.error(503), Reply.ok(delay_s=0.1)]) as server:
        config = OpenAIModelConfig(base_urls=[server.base_url])
        ...
        assert len(server.requests) == 2

Each request takes the next ``Reply`` of the script; once the script is used up every request gets
``default`` (a normal answer unless set otherwise). ``push`` appends to the script while it runs.

What it records: every request (``requests``: method, path, headers, JSON body, arrival time, whether
the client disconnected before the answer was sent) and the most requests it held at once
(``peak_in_flight``). Leaving the ``with`` block (``stop``) closes the socket, releases any request that
hangs or waits and joins the thread, so no server outlives its test.

A normal answer (``Reply.ok``) is a chat completion whose content is the reply's ``text``, with one
logprob per whitespace-separated token (``logprobs``, or -0.01, -0.02, ...), ``finish_reason`` and a
``usage`` that counts words. A request with ``"stream": true`` gets it as server-sent events instead, as
OpenAI streams: one ``chat.completion.chunk`` per token (the first with the role), ``token_delay_s``
apart, then one with the ``finish_reason``, one with the ``usage`` when ``stream_options.include_usage``,
and ``data: [DONE]``; a client that disconnects between tokens is recorded (``disconnected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType

from http_wire import read_request, to_json, write_response, write_stream_head

HANG_LIMIT_S = 30.0
"""The longest a ``hang`` (or a delay) holds a request if neither the client nor ``stop`` ends it first."""

VLLM_CONTEXT_OVERFLOW = json.dumps(
    {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens "
        "(1000 in the messages, 8000 in the completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
).encode()
"""The 400 body vLLM's OpenAI server sends when prompt plus ``max_tokens`` exceed ``max_model_len``."""

DEFAULT_TEXT = "Paris is the capital of France."


@dataclass(frozen=True)
class Reply:
    """What the server does with one request; build one with the class methods.

    ``kind``: ``ok`` (a chat completion), ``no_logprobs`` (one with ``logprobs`` null, or absent when
    ``absent``), ``error`` (``status`` with ``body`` and ``headers``), ``raw`` (200 with ``body`` as it
    is), ``hang`` (never answer), ``reset`` (read the request, then reset the connection),
    ``malformed_json`` (200, a body that is not JSON), ``truncated`` (200, ``Content-Length`` larger
    than the body sent, then close). ``delay_s`` waits before answering (a client that disconnects
    meanwhile is recorded and gets nothing).
    """

    kind: str = "ok"
    text: str = DEFAULT_TEXT
    logprobs: tuple[float, ...] | None = None
    finish_reason: str = "stop"
    delay_s: float = 0.0
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    absent: bool = False
    token_delay_s: float = 0.0

    @classmethod
    def ok(
        cls,
        text: str = DEFAULT_TEXT,
        *,
        logprobs: Iterable[float] | None = None,
        delay_s: float = 0.0,
        finish_reason: str = "stop",
        token_delay_s: float = 0.0,
    ) -> Reply:
        """A normal answer: ``text`` with ``logprobs`` (None: -0.01 per token position), after ``delay_s``;
        streamed (when the request asks) with ``token_delay_s`` between tokens."""
        values = None if logprobs is None else tuple(logprobs)
        return cls("ok", text=text, logprobs=values, delay_s=delay_s, finish_reason=finish_reason, token_delay_s=token_delay_s)

    @classmethod
    def no_logprobs(cls, text: str = DEFAULT_TEXT, *, absent: bool = False) -> Reply:
        """An answer without logprobs: ``"logprobs": null`` (or no ``logprobs`` field when ``absent``)."""
        return cls("no_logprobs", text=text, absent=absent)

    @classmethod
    def error(cls, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """An error answer: ``status`` with ``body`` and extra ``headers``."""
        return cls("error", status=status, body=body, headers=MappingProxyType(dict(headers or {})))

    @classmethod
    def rate_limited(cls, retry_after: str | None = None, body: bytes = b'{"error": "rate limited"}') -> Reply:
        """429, with ``Retry-After: <retry_after>`` when given (seconds or an HTTP date)."""
        return cls.error(429, body, {} if retry_after is None else {"Retry-After": retry_after})

    @classmethod
    def context_overflow(cls, body: bytes = VLLM_CONTEXT_OVERFLOW, status: int = 400) -> Reply:
        """vLLM's 400 for a prompt that does not fit (or another server's ``body`` and ``status``)."""
        return cls.error(status, body)

    @classmethod
    def unauthorized(cls) -> Reply:
        """401, as vLLM started with ``--api-key`` answers a missing or wrong key."""
        return cls.error(401, b'{"error": "Unauthorized"}')

    @classmethod
    def raw(cls, body: bytes) -> Reply:
        """200 with ``body`` exactly (a response of your own: a wrong field, an odd value)."""
        return cls("raw", body=body)

    @classmethod
    def hang(cls) -> Reply:
        """Never answer (until the client gives up, ``stop``, or ``HANG_LIMIT_S``)."""
        return cls("hang")

    @classmethod
    def reset(cls) -> Reply:
        """Read the request, then reset the connection (RST) without answering."""
        return cls("reset")

    @classmethod
    def malformed_json(cls) -> Reply:
        """200 with a body that is not JSON."""
        return cls("malformed_json")

    @classmethod
    def truncated(cls) -> Reply:
        """200 whose ``Content-Length`` claims more than is sent before the connection closes."""
        return cls("truncated")


@dataclass
class Received:
    """One request as the server received it.

    Attributes:
        method, path: of the request line.
        headers: lower-cased names.
        json: the decoded body (None if empty).
        at: ``time.monotonic()`` when the request had been read.
        reply: what the server did with it.
        ended: ``time.monotonic()`` when the server started to answer or gave up on it (None before):
            the client cannot have seen the end of the request earlier.
        disconnected: the client closed the connection before the answer was sent (a cancelled or
            timed-out request).
        answered: the whole answer was written.
    """

    method: str
    path: str
    headers: dict[str, str]
    json: object
    at: float
    reply: Reply
    ended: float | None = None
    disconnected: bool = False
    answered: bool = False


class FaultServer:
    """A chat-completions server following a script of ``Reply`` s (module docstring)."""

    def __init__(
        self, script: Iterable[Reply] = (), *, default: Reply | None = None,
        responder: Callable[[dict], Reply] | None = None,
    ) -> None:
        """``script``: the replies of the first requests, in order; ``default``: the reply to every later
        one, or ``responder``, which chooses it from the request's JSON body (called on the server thread)."""
        self.default = default or Reply.ok()
        self.responder = responder
        self.base_url = ""
        """``http://127.0.0.1:<port>``, once started."""
        self._script = list(script)
        self._requests: list[Received] = []
        self._in_flight = 0
        self._peak = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> FaultServer:
        """Listen on a free port of 127.0.0.1 (``base_url``) from a background thread."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="fault-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._startup_error is not None:
            raise RuntimeError("the fault server did not start") from self._startup_error
        return self

    @property
    def alive(self) -> bool:
        """Whether the server thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Close the socket, release waiting requests and join the thread (again: nothing)."""
        if self.alive and self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    # ----------------------------------------------------------------------------------------- script

    def push(self, *replies: Reply) -> None:
        """Append ``replies`` to the script (they come before ``default``)."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self, body: dict | None) -> Reply:
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return self.responder(body or {}) if self.responder is not None else self.default

    # ------------------------------------------------------------------------------------ what it saw

    @property
    def requests(self) -> list[Received]:
        """The requests received so far, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[dict]:
        """The JSON bodies of ``requests``."""
        return [r.json for r in self.requests if isinstance(r.json, dict)]

    @property
    def in_flight(self) -> int:
        """Requests read and not yet finished with."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most requests in flight at once so far (from a request read to its answer begun)."""
        with self._lock:
            return self._peak

    def wait_until(self, condition: Callable[[FaultServer], bool], timeout_s: float = 5.0) -> bool:
        """Poll ``condition(self)`` until it holds (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # ----------------------------------------------------------------------------------------- serving

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            task.add_done_callback(handlers.discard)
            await self._handle(reader, writer)

        try:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            raise
        self.base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            if handlers:
                await asyncio.wait(set(handlers), timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, headers, body = await read_request(reader)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return
        request = json.loads(body) if body else None
        reply = self._next_reply(request)
        received = Received(method, path, headers, request, time.monotonic(), reply)
        with self._lock:
            self._requests.append(received)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        try:
            await self._respond(reply, received, reader, writer)
        except ConnectionError:
            received.disconnected = True
        finally:
            self._end(received)
            if not writer.is_closing():
                writer.close()

    def _end(self, received: Received) -> None:
        """``received`` is no longer in flight (called before its answer is written, and again after)."""
        with self._lock:
            if received.ended is None:
                received.ended = time.monotonic()
                self._in_flight -= 1

    async def _respond(
        self, reply: Reply, received: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Carry out ``reply`` for ``received``."""
        wait_s = HANG_LIMIT_S if reply.kind == "hang" else reply.delay_s
        if wait_s > 0 and not await self._wait(reader, wait_s):
            received.disconnected = True
            return
        self._end(received)
        if reply.kind == "hang":
            return  # released by stop (or HANG_LIMIT_S): close unanswered
        if reply.kind == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        status, body, headers, claimed = 200, b"", dict(reply.headers), None
        if reply.kind in ("ok", "no_logprobs") and isinstance(received.json, dict) and received.json.get("stream") is True:
            await self._stream(reply, received, reader, writer)
            return
        if reply.kind in ("ok", "no_logprobs"):
            body = to_json(_completion(reply, received.json))
        elif reply.kind == "error":
            status, body = reply.status, reply.body
        elif reply.kind == "raw":
            body = reply.body
        elif reply.kind == "malformed_json":
            body = b'{"choices": [{"message": {"content": "Par'
        elif reply.kind == "truncated":
            full = to_json(_completion(reply, received.json))
            body, claimed = full[: len(full) // 2], len(full)
        else:
            raise ValueError(f"unknown reply kind {reply.kind!r}")
        await write_response(writer, status, body, headers, claimed)
        received.answered = claimed is None

    async def _stream(
        self, reply: Reply, received: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer ``received`` with ``reply`` as server-sent events (module docstring)."""
        request = received.json if isinstance(received.json, dict) else {}
        whole = _completion(reply, request)
        choice = whole["choices"][0]  # type: ignore[index]
        tokens = re.findall(r"\S+\s*", reply.text)
        logprobs = choice.get("logprobs")
        entries = logprobs["content"] if isinstance(logprobs, dict) else None
        head = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}

        async def send(choices: list[object], **extra: object) -> None:
            writer.write(b"data: " + to_json({**head, "choices": choices, **extra}) + b"\n\n")
            await writer.drain()

        await write_stream_head(writer, reply.headers)
        for i, token in enumerate(tokens):
            if i and reply.token_delay_s > 0 and not await self._wait(reader, reply.token_delay_s):
                received.disconnected = True
                return
            delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
            piece = {"content": [entries[i]]} if entries is not None and i < len(entries) else None
            await send([{"index": 0, "delta": delta, "logprobs": piece, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}])
        options = request.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            await send([], usage=whole["usage"])
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        received.answered = True

    async def _wait(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Wait ``seconds`` (or until ``stop``); False if the client disconnected first."""
        assert self._stopping is not None
        eof = asyncio.ensure_future(reader.read(1))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({eof, stopping}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (eof, stopping):
                task.cancel()
        if eof in done:
            with contextlib.suppress(ConnectionError):
                eof.result()
            return False  # EOF or reset: the client went away (it sends nothing more on this connection)
        return True


def _completion(reply: Reply, request: object) -> dict[str, object]:
    """The chat-completion body of an ``ok`` / ``no_logprobs`` reply to ``request``."""
    tokens = re.findall(r"\S+\s*", reply.text)
    values = reply.logprobs if reply.logprobs is not None else [-0.01 * (i + 1) for i in range(len(tokens))]
    choice: dict[str, object] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.text},
        "finish_reason": reply.finish_reason,
    }
    if reply.kind == "ok":
        choice["logprobs"] = {
            "content": [
                {"token": token, "logprob": value, "bytes": list(token.encode()), "top_logprobs": []}
                for token, value in zip(tokens, values, strict=False)
            ]
        }
    elif not reply.absent:
        choice["logprobs"] = None
    messages = request.get("messages", []) if isinstance(request, dict) else []
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    model = request.get("model", "fake") if isinstance(request, dict) else "fake"
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        },
    }


def peak_over(*servers: FaultServer) -> int:
    """The most requests that were in flight at once over all ``servers`` together (finished requests
    only: from each one's arrival to its ``ended``)."""
    edges = sorted(
        (moment, step)
        for server in servers
        for r in server.requests
        if r.ended is not None
        for moment, step in ((r.at, 1), (r.ended, -1))
    )  # at equal moments an end (-1) sorts before a start (+1)
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak
