"""What the OpenAI-compatible HTTP clients share: one attempt, what its failure was, retries with backoff.

Used by the remote embedder (``smcs.embed.remote``) and the chat backend (``smcs.backends.openai``); each
keeps its own error classes and its own choice of URL, and gets from here:

- ``post_once``: one POST over an ``aiohttp.ClientSession``, bounded by ``timeout_s`` from sending the
  request to having read the whole body; the 2xx ``HttpReply``, or ``AttemptFailed`` carrying a
  ``Failure`` that says what went wrong; ``post_streaming`` the same up to the 2xx headers, leaving the
  body (a stream of server-sent events) to the caller;
- ``new_session``: the session a client makes for itself (inside the running loop: a session belongs
  to the loop it was made in);
- ``retrying``: attempts until one succeeds, a failure is not worth retrying, the retries run out or the
  server asks (``Retry-After``) for a longer wait than ``max_backoff_s``; ``Backoff`` holds the policy;
- ``error_for``: the caller's error class for a ``Failure`` (both error families have the same kinds);
- ``AsyncClosing``: ``async with`` for a client with ``aclose``;
- ``parse_retry_after``, ``excerpt``, ``endpoint``, ``bearer``: the small pieces.

How an attempt's outcome is classified:

==========================================  ================  =========  ==========================
what the attempt ran into                   ``Failure.kind``  retryable  message (``detail``)
==========================================  ================  =========  ==========================
cannot connect (refused, DNS, connect       ``connection``    yes        ``cannot connect to URL:
timeout)                                                                 ...``
connection reset or closed before the       ``connection``    yes        ``connection to URL broke
answer; body cut short of its                                            during the request: ...``
``Content-Length``
no whole answer within ``timeout_s``        ``timeout``       no [#]_    ``URL did not answer
                                                                         within timeout_s=T s``
429                                         ``rate_limited``  yes        ``URL answered 429: BODY``
5xx                                         ``server_error``  yes        ``URL answered 5xx: BODY``
401, 403                                    ``auth``          no         ... plus whether a key
                                                                         was sent
any other non-2xx                           ``bad_request``   no         ``URL answered 4xx: BODY``
==========================================  ================  =========  ==========================

.. [#] by default; a caller may retry a timeout elsewhere (the chat backend does when another replica is
   usable), never on the same server, where it would only multiply the wait.

In aiohttp's terms: ``ClientConnectorError`` (refused, DNS, TLS) and ``ConnectionTimeoutError`` (no
connection within ``connect_timeout_s``) cannot connect; ``asyncio.timeout(timeout_s)`` around the
attempt (or any other of aiohttp's ``TimeoutError`` subclasses) is a timeout; ``ServerDisconnectedError``,
``ClientOSError`` (reset), ``ClientPayloadError`` (body cut short), ``ClientResponseError`` (malformed
HTTP) and any other ``ClientError`` broke the connection. Redirects are not followed (a POST must not be
silently re-sent elsewhere).

Retry ``k`` (k = 0, 1, ...) waits ``backoff_s · 2^k``, jittered into [½, 1] of that and capped at
``max_backoff_s``, or the server's ``Retry-After`` if that is longer. BODY is the start of the response
body on one line (``excerpt``); headers, and so the API key, never appear in a message.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from itertools import count
from types import TracebackType
from typing import Literal, Self, TypeVar

import aiohttp

from .errors import SmcsError

FailureKind = Literal["connection", "timeout", "rate_limited", "auth", "bad_request", "server_error"]
"""What went wrong in one attempt; the names are the ``kind`` of the embedder and backend errors."""

BODY_EXCERPT = 200
"""How much of an error response's body a message quotes."""
BODY_KEPT = 4096
"""How much of an error response's body a ``Failure`` keeps for the caller to inspect."""

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


@dataclass(frozen=True, slots=True)
class Failure:
    """One attempt that did not end in a 2xx.

    Attributes:
        kind: what went wrong (see the module docstring).
        detail: a message naming ``url`` (and the status and body, where there was an answer).
        url: the URL the attempt was sent to.
        retryable: whether another attempt may succeed.
        status: the HTTP status, if the server answered.
        retry_after: the server's ``Retry-After`` in seconds, if it sent a readable one.
        body: the start (``BODY_KEPT`` bytes) of the body of an error answer, decoded.
    """

    kind: FailureKind
    detail: str
    url: str
    retryable: bool
    status: int | None = None
    retry_after: float | None = None
    body: str = ""


class AttemptFailed(SmcsError):
    """Raised by ``post_once`` (and passed through ``retrying``) when an attempt fails; ``failure`` says how.
    Its callers turn it into their own layer's error (``EmbedderError``, ``BackendError``)."""

    def __init__(self, failure: Failure) -> None:
        """Wrap ``failure``; the exception's text is its ``detail``."""
        super().__init__(failure.detail)
        self.failure = failure


@dataclass(frozen=True)
class Backoff:
    """The retry policy: ``retries`` further attempts, waits from ``backoff_s`` doubling up to ``max_backoff_s``."""

    retries: int
    backoff_s: float
    max_backoff_s: float
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    """Only spreads retries out; no result depends on it."""

    def delay(self, attempt: int) -> float:
        """The wait before retry ``attempt + 1``: ``backoff_s · 2^attempt`` capped, jittered into [½, 1]."""
        return min(self.max_backoff_s, self.backoff_s * 2.0**attempt) * (0.5 + 0.5 * self.rng.random())

    def wait(self, attempt: int, failure: Failure, retryable: bool) -> float | None:
        """Seconds to wait before retrying after ``failure`` in attempt ``attempt`` (0-based); None: give up.

        Gives up when ``retryable`` is False, when this was the last attempt, or when the server's
        ``Retry-After`` is longer than ``max_backoff_s``.
        """
        if not retryable or attempt >= self.retries:
            return None
        if failure.retry_after is None:
            return self.delay(attempt)
        if failure.retry_after > self.max_backoff_s:
            return None  # the server wants longer than we may wait
        return max(self.delay(attempt), failure.retry_after)


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    backoff: Backoff,
    retryable: Callable[[Failure], bool] | None = None,
) -> T:
    """Await ``attempt()`` until it returns, retrying after ``AttemptFailed`` as ``backoff`` says.

    ``retryable`` decides whether a failure is worth another attempt (default: ``Failure.retryable``).
    The last ``AttemptFailed`` propagates when no retry is left.
    """
    for k in count():
        try:
            return await attempt()
        except AttemptFailed as failed:
            failure = failed.failure
            wait = backoff.wait(k, failure, failure.retryable if retryable is None else retryable(failure))
            if wait is None:
                raise
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A server's answer to one POST, its body read whole."""

    status: int
    headers: Mapping[str, str]
    """Case-insensitive (aiohttp's ``CIMultiDictProxy``)."""
    content: bytes


def new_session(max_connections: int) -> aiohttp.ClientSession:
    """A session keeping up to ``max_connections`` keep-alive connections and no cookies; call it in the
    running loop, and close it there."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections), cookie_jar=aiohttp.DummyCookieJar()
    )


async def post_once(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout_s: float,
    connect_timeout_s: float | None = None,
) -> HttpReply:
    """POST the JSON ``body`` to ``url`` once; the 2xx reply with its body read, else ``AttemptFailed``.

    ``timeout_s`` bounds the whole attempt, request sent to body read; ``connect_timeout_s`` (None:
    ``timeout_s``) bounds opening the connection. Cancelling the caller closes the connection.
    """
    try:
        async with asyncio.timeout(timeout_s):  # the whole attempt, the body's read included
            response = await post_streaming(
                client, url, body, headers=headers, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s
            )
            try:
                return HttpReply(response.status, response.headers, await response.read())
            finally:
                response.release()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise AttemptFailed(transport_failure(exc, url, timeout_s)) from None


async def post_streaming(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout_s: float,
    connect_timeout_s: float | None = None,
) -> aiohttp.ClientResponse:
    """POST the JSON ``body`` to ``url`` once and return the 2xx response with its body still to read (a
    stream: the caller reads it and releases the response); else ``AttemptFailed`` as ``post_once`` says,
    a non-2xx's body read first. ``timeout_s`` bounds the wait for the status line and headers."""
    connect_s = timeout_s if connect_timeout_s is None else connect_timeout_s
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s)
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=timeout,
                allow_redirects=False,
            )
            if 200 <= response.status < 300:
                return response
            try:
                reply = HttpReply(response.status, response.headers, await response.read())
            finally:
                response.release()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise AttemptFailed(transport_failure(exc, url, timeout_s)) from None
    failure = status_failure(reply, url, key_sent=any(name.lower() == "authorization" for name in headers))
    assert failure is not None  # a non-2xx
    raise AttemptFailed(failure)


def transport_failure(exc: TimeoutError | aiohttp.ClientError, url: str, timeout_s: float) -> Failure:
    """The ``Failure`` an attempt to ``url`` that raised ``exc`` before a whole answer is (module docstring)."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return Failure("connection", f"cannot connect to {url}: {exc}", url, True)
    if isinstance(exc, TimeoutError):  # the whole attempt's (or any other of aiohttp's)
        return Failure("timeout", f"{url} did not answer within timeout_s={timeout_s:g} s", url, False)
    # disconnected, reset, body cut short, malformed HTTP
    return Failure("connection", f"connection to {url} broke during the request: {exc}", url, True)


def status_failure(reply: HttpReply, url: str, *, key_sent: bool) -> Failure | None:
    """The ``Failure`` a non-2xx ``reply`` from ``url`` is (None for a 2xx); ``key_sent``: whether
    credentials went with the request (an auth failure says so)."""
    status = reply.status
    if 200 <= status < 300:
        return None
    detail = f"{url} answered {status}: {excerpt(reply)}"
    kind: FailureKind
    if status == 429:
        kind, retryable = "rate_limited", True
    elif status >= 500:
        kind, retryable = "server_error", True
    elif status in (401, 403):
        kind, retryable = "auth", False
        detail += " (check the API key)" if key_sent else " (no API key was sent)"
    else:
        kind, retryable = "bad_request", False
    return Failure(
        kind,
        detail,
        url,
        retryable,
        status=status,
        retry_after=parse_retry_after(reply.headers.get("Retry-After")),
        body=reply.content[:BODY_KEPT].decode("utf-8", "replace"),
    )


def by_kind(*classes: Callable[..., E]) -> dict[str, Callable[..., E]]:
    """A table for ``error_for``: each error class under its ``kind``."""
    return {cls.kind: cls for cls in classes}  # type: ignore[attr-defined]


def error_for(
    failure: Failure, classes: Mapping[str, Callable[..., E]], message: str | None = None, **common: object
) -> E:
    """The error of ``classes`` (a ``by_kind`` table) for ``failure``, with ``message`` (None: its detail).

    ``common`` goes to every constructor (``url=``, ``model=``); ``status`` and ``retry_after`` go to the
    kinds that carry them.
    """
    extra: dict[str, object] = {}
    if failure.kind in ("bad_request", "server_error"):
        extra["status"] = failure.status
    elif failure.kind == "rate_limited":
        extra["retry_after"] = failure.retry_after
    return classes[failure.kind](failure.detail if message is None else message, **common, **extra)


class AsyncClosing:
    """``async with client:`` for a client with ``aclose``: entering gives the client, leaving closes it."""

    async def __aenter__(self) -> Self:
        """The client itself."""
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """``aclose``."""
        await self.aclose()

    async def aclose(self) -> None:
        """Release the client's connections (subclasses say which)."""


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def excerpt(reply: HttpReply) -> str:
    """The start of an error reply's body, on one line, quoted, for a message."""
    text = " ".join(reply.content[:BODY_EXCERPT].decode("utf-8", "replace").split())
    return repr(text + ("..." if len(reply.content) > BODY_EXCERPT else "")) if text else "(empty body)"


def endpoint(base_url: str, path: str) -> str:
    """``base_url`` + ``/v1/`` + ``path``; a base URL already ending in ``/v1`` does not get it twice."""
    root = base_url.rstrip("/")
    return f"{root}/{path}" if root.endswith("/v1") else f"{root}/v1/{path}"


def bearer(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``api_key``; none for None or an empty key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
