"""The chat backend for OpenAI-compatible servers: ``POST /v1/chat/completions`` (vLLM, SGLang, TGI,
llama.cpp's server, OpenAI itself).

One request per ``complete`` call, not streamed (``stream`` streams, below), asking for the log-probability of every generated token
(``logprobs: true`` and ``top_logprobs: 0``: llama.cpp's server returns null logprobs without the
latter). The model's ``system_prompt`` is put first: as its own system message, or joined (a blank line
between) with the system message the caller's messages start with.

**Replicas.** A model may have several ``base_urls``. Each attempt goes to the URL with the lowest
expected wait, ``(in_flight + 1)`` of this backend's requests times the URL's smoothed seconds per output
token, among those not cooling down and, with health probes on, healthy (ties: fewer in flight, a URL not
yet measured, the first listed); when none is healthy, among those not cooling down all the same; when
all are cooling down, to the one whose cooldown ends first (``smcs.backends.fleet`` says how latency is
smoothed and probes are run). A URL cools down for ``cooldown_s`` after a connection error, a timeout
or a 5xx. With ``health_interval_s > 0`` and more than one URL, every URL is probed (``GET /v1/models``)
that often from the first ``complete`` until ``aclose``, and one that fails its probe is skipped until a
probe succeeds. At most ``max_concurrency`` requests are in flight over all URLs; more wait (a retry
waits too, so backing off holds no slot). The wait counts in ``latency_s`` but not in ``timeout_s``.

**Attempts.** An attempt is bounded by ``timeout_s`` from sending the request to having read the whole
body, and ``connect_timeout_s`` for opening the connection (``smcs.http_retry.post_once``). What happens
on failure:

==========================================  ======================================  =========================
what the attempt ran into                   then                                    error at the end
==========================================  ======================================  =========================
cannot connect; connection reset or         URL cools down; retried                 ``BackendConnectionError``
closed before the answer; body cut short
of its ``Content-Length``
timeout                                     URL cools down; retried only if         ``BackendTimeout``
                                            another URL is usable (see below)
429                                         retried after ``Retry-After`` (or the   ``BackendRateLimited``
                                            backoff); given up at once if the
                                            server asks for more than
                                            ``max_backoff_s``
5xx                                         URL cools down; retried, honouring      ``BackendServerError``
                                            ``Retry-After`` as for 429
401, 403                                    not retried                             ``BackendAuthError``
400, 413, 422 saying the prompt does not    not retried                             ``BackendContextOverflow``
fit (``CONTEXT_OVERFLOW_MARKERS``)
other non-2xx                               not retried                             ``BackendRequestError``
2xx that is not a chat completion (not      not retried                             ``BackendMalformedResponse``
JSON, no ``choices[0].message.content``,
a mistyped field, a non-finite logprob)
==========================================  ======================================  =========================

Retries (``retries`` of them, on whichever URL is best then) wait ``backoff_s · 2^k``, jittered into
[½, 1] and capped at ``max_backoff_s``. A timeout is retried only on another URL that is not cooling
down: a hung server is most likely hung for the next attempt too, and waiting for it again would
multiply the wait a caller sees, while another replica may well answer. With one URL (or the others
cooling down) a timeout fails at once.

A 2xx without logprobs (``logprobs`` or its ``content`` null or absent, or an empty list for a non-empty
text) is not an error: the completion has ``logprobs_missing=True`` and no token logprobs.

Every error names the model and the endpoint that failed; its ``url`` is that endpoint's base URL, as
``Completion.url`` is the base URL that answered. The API key is never shown, not even in ``repr``.
Cancelling ``complete`` closes the connection of the attempt in flight.

The HTTP client is aiohttp: one ``ClientSession``, made on the first request in the running loop (a
session belongs to its loop), so a backend may be built outside any loop; the health probe, started by
that first request too, keeps a small session of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
import msgspec
import numpy as np

from ..http_retry import (
    AsyncClosing,
    AttemptFailed,
    Backoff,
    Failure,
    HttpReply,
    bearer,
    by_kind,
    endpoint,
    error_for,
    new_session,
    post_once,
    post_streaming,
    retrying,
)

from ..core.messages import with_system_prompt
from .base import ChatMessage, Completion, GenerationSettings
from .config import OpenAIModelConfig
from .errors import (
    BackendAuthError,
    BackendConnectionError,
    BackendContextOverflow,
    BackendError,
    BackendMalformedResponse,
    BackendRateLimited,
    BackendRequestError,
    BackendServerError,
    BackendTimeout,
)
from .fleet import HealthProbe, Replica, ReplicaStatus, choose
from ..errors import InputError

CONTEXT_OVERFLOW_MARKERS = (
    # vLLM, OpenAI: "This model's maximum context length is N tokens. However, you requested M tokens ...";
    # SGLang: "The input (N tokens) is longer than the model's context length (M tokens)."
    "context length",
    "context_length_exceeded",  # OpenAI's error code
    "maximum context",
    # vLLM V1: "The decoder prompt (length N) is longer than the maximum model length of M."
    "maximum model length",
    # llama.cpp's server: "the request exceeds the available context size, try increasing it", type
    # "exceed_context_size_error"
    "context size",
    "exceed_context_size_error",
    "too many tokens",
    "prompt is too long",
    # TGI (422): "`inputs` tokens + `max_new_tokens` must be <= N", "`inputs` must have less than N tokens"
    "`inputs` tokens + `max_new_tokens`",
    "`inputs` must have less than",
)
"""Lower-case phrases by which a 400, 413 or 422 body says the prompt does not fit the context window."""
CONTEXT_OVERFLOW_STATUSES = frozenset({400, 413, 422})
"""The statuses whose body is searched for ``CONTEXT_OVERFLOW_MARKERS``."""
COOLING_KINDS = frozenset({"connection", "timeout", "server_error"})
"""The failures after which a URL cools down."""

_ERRORS = by_kind(
    BackendConnectionError,
    BackendTimeout,
    BackendRateLimited,
    BackendServerError,
    BackendAuthError,
    BackendRequestError,
)
"""The error raised for each kind of failed attempt (``smcs.http_retry``)."""


# ----------------------------------------------------------------------------------- the response


class _TokenLogprob(msgspec.Struct):
    """One element of ``logprobs.content``; ``token``, ``bytes`` and ``top_logprobs`` are ignored."""

    logprob: float


class _Logprobs(msgspec.Struct):
    """``choices[i].logprobs``."""

    content: list[_TokenLogprob] | None = None


class _Message(msgspec.Struct):
    """``choices[i].message``; ``role``, ``tool_calls`` and the rest are ignored."""

    content: str | None = None


class _Choice(msgspec.Struct):
    """One element of ``choices``."""

    message: _Message | None = None
    logprobs: _Logprobs | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    """``usage``; ``total_tokens`` is ignored."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Response(msgspec.Struct):
    """The part of a chat completion we use; ``id``, ``model``, ``created`` ... are ignored."""

    choices: list[_Choice] | None = None
    usage: _Usage | None = None


_DECODER = msgspec.json.Decoder(_Response)


class _Delta(msgspec.Struct):
    """``choices[i].delta`` of a streamed chunk; ``role`` and the rest are ignored."""

    content: str | None = None


class _StreamChoice(msgspec.Struct):
    """One element of a streamed chunk's ``choices``."""

    delta: _Delta | None = None
    logprobs: _Logprobs | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """One ``chat.completion.chunk`` event of a stream (``error``: what a server sends when it fails midway)."""

    choices: list[_StreamChoice] | None = None
    usage: _Usage | None = None
    error: object = None


_CHUNK_DECODER = msgspec.json.Decoder(_Chunk)


# ------------------------------------------------------------------------------------- the backend


class OpenAIBackend(AsyncClosing):
    """A ``ChatBackend`` over one model's OpenAI-compatible chat-completions servers (module docstring).

    It opens its connection pool (an ``aiohttp.ClientSession`` with room for ``max_concurrency``
    connections) on the first request, in the running loop, and closes it in ``aclose`` (``async with
    backend:`` closes it at the end of the block). Pass ``client`` to send with an
    ``aiohttp.ClientSession`` you own instead: it is never closed here, and ``timeout_s`` and
    ``connect_timeout_s`` override its own timeouts per request. Use a backend from one event loop.
    """

    def __init__(
        self,
        name: str,
        config: OpenAIModelConfig,
        *,
        api_key: str | None = None,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        """Configure the backend; nothing is sent until the first ``complete``.

        Args:
            name: the model's name in the configuration (sent as ``model`` unless ``config.served_model``).
            config: the model's table: URLs, timeouts, retries, generation settings, system prompt.
            api_key: sent as ``Authorization: Bearer <api_key>``; None sends no credentials.
            client: an ``aiohttp.ClientSession`` to send with (owned by the caller); None makes our own
                on the first request.
        """
        self.name = name
        self.config = config
        self.model = config.served_model or name
        """The model name sent in requests."""
        self._replicas = [Replica(url, endpoint(url, "chat/completions")) for url in config.base_urls]
        self._by_endpoint = {replica.endpoint: replica for replica in self._replicas}
        self._headers = bearer(api_key)
        self._probe = self._health_probe()
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._backoff = Backoff(config.retries, config.backoff_s, config.max_backoff_s)
        self._owns_client = client is None
        self._client = client
        self._closed = False

    def __repr__(self) -> str:
        urls = [replica.base_url for replica in self._replicas]
        return f"OpenAIBackend({self.name!r}, model={self.model!r}, base_urls={urls!r})"  # never the key

    @property
    def replicas(self) -> tuple[ReplicaStatus, ...]:
        """What the balancer knows about each base URL now, in configuration order."""
        now = time.monotonic()
        return tuple(replica.status(now) for replica in self._replicas)

    # -------------------------------------------------------------------------------------- lifecycle

    def _health_probe(self) -> HealthProbe | None:
        """The health probe of the URLs, if ``health_interval_s`` turns it on and there is a choice to make."""
        if self.config.health_interval_s == 0 or len(self._replicas) < 2:
            return None
        return HealthProbe(
            self.name,
            self._replicas,
            headers=self._headers,
            interval_s=self.config.health_interval_s,
            timeout_s=self.config.health_timeout_s,
        )

    async def aclose(self) -> None:
        """Stop the health probe and close our connection pool, if a request opened one (a client given by
        the caller is left open); ``complete`` then refuses. Closing again does nothing."""
        self._closed = True
        if self._probe is not None:
            await self._probe.aclose()
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # --------------------------------------------------------------------------------------- complete

    async def complete(
        self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None
    ) -> Completion:
        """The model's reply to ``messages`` with ``settings`` (None: the model's own); ``BackendError``
        subclasses on failure, as the module docstring says."""
        if self._closed:
            raise RuntimeError(f"the backend of model {self.name!r} is closed")
        start = time.monotonic()
        body = msgspec.json.encode(self.request_body(messages, settings))
        if self._probe is not None:
            self._probe.start()
        try:
            replica, response, attempt_s = await retrying(lambda: self._attempt(body), self._backoff, self._retryable)
        except AttemptFailed as failed:
            raise self._error(failed.failure) from None
        now = time.monotonic()
        completion = self._parse(response.content, replica, now - start)
        replica.record(attempt_s, completion.completion_tokens or len(completion.token_logprobs), now)
        return completion

    async def stream(
        self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None
    ) -> AsyncIterator[str | Completion]:
        """The model's reply to ``messages`` as it is generated: each piece of text (``str``) as its
        server-sent event arrives, then the whole ``Completion`` (text, logprobs, usage, finish reason).

        The request is ``request_body`` with ``stream: true`` and ``stream_options.include_usage``. Opening
        the stream is retried, cooled down and balanced like ``complete``'s attempts (up to the response
        headers); a failure after that (the connection broke, ``timeout_s`` passed since the request was
        sent, the server sent an ``error`` event or a chunk that is not one) is raised as it is, never
        retried, since text was already given out. The concurrency slot is held until the stream ends.
        Closing the iterator early (or cancelling its task) closes the connection."""
        if self._closed:
            raise RuntimeError(f"the backend of model {self.name!r} is closed")
        start = time.monotonic()
        body = msgspec.json.encode(
            {**self.request_body(messages, settings), "stream": True, "stream_options": {"include_usage": True}}
        )
        if self._probe is not None:
            self._probe.start()
        try:
            replica, response, sent = await retrying(lambda: self._open_stream(body), self._backoff, self._retryable)
        except AttemptFailed as failed:
            raise self._error(failed.failure) from None
        finished = False
        try:
            pieces: list[str] = []
            reader = _ChunkReader(self, replica, response, sent + self.config.timeout_s)
            while (chunk := await reader.next()) is not None:
                if chunk:
                    pieces.append(chunk)
                    yield chunk
            now = time.monotonic()
            text = "".join(pieces)
            logprobs = reader.logprobs
            missing = reader.logprobs_missing or (not logprobs and bool(text))
            completion = Completion(
                text=text,
                token_logprobs=[] if missing else logprobs,
                logprobs_missing=missing,
                prompt_tokens=reader.prompt_tokens,
                completion_tokens=reader.completion_tokens,
                finish_reason=reader.finish_reason,
                latency_s=now - start,
                url=replica.base_url,
            )
            replica.record(now - sent, completion.completion_tokens or len(pieces), now)
            finished = True
        finally:
            if finished:
                response.release()  # back to the pool for the next request (closed if its body is not all read)
            else:
                response.close()  # closed early, cancelled or failed: the server must see the request go
            replica.in_flight -= 1
            self._slots.release()
        yield completion

    async def _open_stream(self, body: bytes) -> tuple[Replica, aiohttp.ClientResponse, float]:
        """One streaming POST to the best URL; the URL, the open 2xx response and when it was sent. On
        success the concurrency slot and the URL's in-flight count stay taken: ``stream`` gives them back."""
        await self._slots.acquire()
        try:
            sent = time.monotonic()
            replica = choose(self._replicas, sent)
            client = self._session()
            replica.in_flight += 1
            try:
                response = await post_streaming(
                    client,
                    replica.endpoint,
                    body,
                    headers=self._headers,
                    timeout_s=self.config.timeout_s,
                    connect_timeout_s=self.config.connect_timeout_s,
                )
            except BaseException as exc:
                replica.in_flight -= 1
                if isinstance(exc, AttemptFailed) and exc.failure.kind in COOLING_KINDS:
                    replica.cool_until = time.monotonic() + self.config.cooldown_s
                raise
        except BaseException:
            self._slots.release()
            raise
        return replica, response, sent

    def request_body(
        self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None
    ) -> dict[str, object]:
        """The JSON object ``complete`` sends for ``messages`` and ``settings`` (None: the model's own)."""
        if not messages:
            raise InputError("messages must not be empty")
        settings = self.config.generation() if settings is None else settings
        body: dict[str, object] = {
            "model": self.model,
            "messages": with_system_prompt(self.config.system_prompt, messages),
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "presence_penalty": settings.presence_penalty,
            "logprobs": True,
            "top_logprobs": 0,
            "stream": False,
        }
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed
        return body

    # ---------------------------------------------------------------------------------------- attempts

    async def _attempt(self, body: bytes) -> tuple[Replica, HttpReply, float]:
        """One POST to the best URL, within the concurrency bound; the URL, its 2xx response and the
        seconds the attempt took."""
        async with self._slots:
            sent = time.monotonic()
            replica = choose(self._replicas, sent)
            client = self._session()
            replica.in_flight += 1
            try:
                response = await post_once(
                    client,
                    replica.endpoint,
                    body,
                    headers=self._headers,
                    timeout_s=self.config.timeout_s,
                    connect_timeout_s=self.config.connect_timeout_s,
                )
            except AttemptFailed as failed:
                if failed.failure.kind in COOLING_KINDS:
                    replica.cool_until = time.monotonic() + self.config.cooldown_s
                raise
            finally:
                replica.in_flight -= 1
        return replica, response, time.monotonic() - sent

    def _session(self) -> aiohttp.ClientSession:
        """The session to send with: the caller's, ours, or (the first request) a new one of ours, made
        here because a session belongs to the running loop."""
        if self._client is None:
            if self._closed:  # a retry that outlived aclose must not reopen the pool
                raise RuntimeError(f"the backend of model {self.name!r} is closed")
            self._client = new_session(self.config.max_concurrency)
        return self._client

    def _retryable(self, failure: Failure) -> bool:
        """Whether to try again after ``failure``: as ``http_retry`` says, and a timeout if another URL
        is usable (not cooling down)."""
        if failure.kind != "timeout":
            return failure.retryable
        now = time.monotonic()
        return any(replica.endpoint != failure.url and not replica.cooling(now) for replica in self._replicas)

    # ------------------------------------------------------------------------------------------ errors

    def _error(self, failure: Failure) -> BackendError:
        """The ``BackendError`` for the last failed attempt."""
        base_url = self._by_endpoint[failure.url].base_url
        message = f"model {self.name!r}: {failure.detail}"
        if failure.kind == "bad_request" and is_context_overflow(failure.status, failure.body):
            return BackendContextOverflow(message, model=self.name, url=base_url)
        return error_for(failure, _ERRORS, message, model=self.name, url=base_url)

    def _malformed(self, replica: Replica, what: str) -> BackendMalformedResponse:
        """The error for a 2xx body that is not a chat completion; ``what`` names the field."""
        return BackendMalformedResponse(
            f"model {self.name!r}: malformed response from {replica.endpoint}: {what}",
            model=self.name,
            url=replica.base_url,
        )

    # ----------------------------------------------------------------------------------------- parsing

    def _parse(self, content: bytes, replica: Replica, latency_s: float) -> Completion:
        """The ``Completion`` in a 2xx body from ``replica``; ``BackendMalformedResponse`` naming the field."""
        try:
            response = _decode(content)
        except msgspec.DecodeError as exc:  # not JSON, a mistyped field (the message gives its path), ...
            raise self._malformed(replica, str(exc)) from None
        if not response.choices:
            raise self._malformed(replica, "$.choices is missing or empty")
        choice = response.choices[0]
        if choice.message is None or choice.message.content is None:
            raise self._malformed(replica, "$.choices[0].message.content is missing or null")
        text = choice.message.content
        logprobs = self._token_logprobs(choice, replica)
        missing = logprobs is None or (not logprobs and bool(text))
        usage = response.usage or _Usage()
        return Completion(
            text=text,
            token_logprobs=[] if logprobs is None or missing else logprobs,
            logprobs_missing=missing,
            prompt_tokens=usage.prompt_tokens or 0,
            completion_tokens=usage.completion_tokens or 0,
            finish_reason=choice.finish_reason,
            latency_s=latency_s,
            url=replica.base_url,
        )

    def _token_logprobs(self, choice: _Choice, replica: Replica) -> list[float] | None:
        """The logprob of each generated token (None if the server gave none); non-finite ones are malformed."""
        if choice.logprobs is None or choice.logprobs.content is None:
            return None
        values = [token.logprob for token in choice.logprobs.content]
        finite = np.isfinite(values)
        if not finite.all():
            i = int(np.argmin(finite))
            raise self._malformed(replica, f"$.choices[0].logprobs.content[{i}].logprob is {values[i]!r}")
        return values


class _ChunkReader:
    """Reads the server-sent events of one streamed chat completion: ``next`` gives each chunk's text
    (possibly empty) until the stream ends (None), gathering logprobs, usage and the finish reason."""

    def __init__(self, backend: OpenAIBackend, replica: Replica, response: aiohttp.ClientResponse, deadline: float) -> None:
        self._backend = backend
        self._replica = replica
        self._response = response
        self._deadline = deadline
        self._done = False
        self.logprobs: list[float] = []
        self.logprobs_missing = False
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    async def next(self) -> str | None:
        """The text of the next chunk ("" for one without text), None at the end of the stream."""
        while not self._done:
            data = await self._event()
            if data is None:  # the connection closed: an end only if the answer was finished
                if self.finish_reason is None:
                    raise self._broken("the stream ended before the answer did")
                self._done = True
                return None
            if data == b"[DONE]":
                self._done = True
                return None
            text = self._chunk(data)
            if text is not None:
                return text
        return None

    async def _event(self) -> bytes | None:
        """The data of the next server-sent event (its ``data:`` lines joined), None at the end of the body."""
        data: list[bytes] = []
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    line = await self._response.content.readline()
            except TimeoutError:
                raise self._failed(BackendTimeout, f"the stream did not end within timeout_s={self._backend.config.timeout_s:g} s") from None
            except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a line beyond aiohttp's limit
                raise self._broken(f"the connection broke during the stream: {exc}") from None
            if not line:
                return b"\n".join(data) if data else None
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    return b"\n".join(data)
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)

    def _chunk(self, data: bytes) -> str | None:
        """The text of one chunk (None: it has none), recording its logprobs, usage and finish reason."""
        try:
            chunk = _CHUNK_DECODER.decode(data)
        except msgspec.DecodeError as exc:
            raise self._backend._malformed(self._replica, f"a streamed chunk: {exc}") from None
        if chunk.error is not None:
            raise self._failed(BackendServerError, f"the server failed during the stream: {str(chunk.error)[:200]}")
        if chunk.usage is not None:
            self.prompt_tokens = chunk.usage.prompt_tokens or self.prompt_tokens
            self.completion_tokens = chunk.usage.completion_tokens or self.completion_tokens
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        text = choice.delta.content if choice.delta is not None else None
        if choice.logprobs is not None and choice.logprobs.content is not None:
            values = [token.logprob for token in choice.logprobs.content]
            if not np.isfinite(values).all():
                raise self._backend._malformed(self._replica, "a streamed chunk has a non-finite logprob")
            self.logprobs.extend(values)
        elif text:
            self.logprobs_missing = True
        return text

    def _broken(self, what: str) -> BackendError:
        """A ``BackendConnectionError`` for a stream that broke off; the URL cools down."""
        return self._failed(BackendConnectionError, what)

    def _failed(self, kind: type[BackendError], what: str) -> BackendError:
        if kind.kind in COOLING_KINDS:
            self._replica.cool_until = time.monotonic() + self._backend.config.cooldown_s
        name = self._backend.name
        extra: dict[str, object] = {"status": self._response.status} if kind is BackendServerError else {}
        return kind(f"model {name!r}: {self._replica.endpoint}: {what}", model=name, url=self._replica.base_url, **extra)


def _decode(content: bytes) -> _Response:
    """The chat completion in ``content``; ``msgspec.DecodeError`` (naming the path where there is one).

    Strict JSON first. A body that is not (``NaN``, ``-Infinity``: what Python's ``json`` writes for a
    non-finite float) is read leniently, so that the non-finite value is then reported by its path.
    """
    try:
        return _DECODER.decode(content)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as strict:
        try:
            value = json.loads(content)
        except ValueError:
            raise strict from None
        return msgspec.convert(value, _Response)


def is_context_overflow(status: int | None, body: str) -> bool:
    """Whether a ``status`` answer with ``body`` says the prompt (plus ``max_tokens``) exceeds the context."""
    if status not in CONTEXT_OVERFLOW_STATUSES:
        return False
    text = body.lower()
    return any(marker.lower() in text for marker in CONTEXT_OVERFLOW_MARKERS)
