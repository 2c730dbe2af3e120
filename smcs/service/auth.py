"""Bearer-token authentication as a server interceptor.

Every call to the RouterService must carry ``authorization: Bearer <token>``. Query tokens may call the
read-only methods; bank writes and Reload need an admin token. A token configured with an ``expires``
instant is refused from then on ("bearer token expired"). Health checks and reflection stay open so
load balancers and tooling work without credentials. Tokens are compared in constant time and never
appear in logs or error messages.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import NamedTuple

import grpc

from ..config import AuthConfig, ExpiringToken
from .calls import SERVICE_PREFIX

ADMIN_METHODS = frozenset(
    SERVICE_PREFIX + m for m in ("AppendQuestions", "RecordOutcomes", "AddModel", "Reload")
)


class _Credential(NamedTuple):
    token: bytes
    expires: datetime | None  # None: never


class _Match(NamedTuple):
    """Whether a presented token equals a configured one (``known``), and one that has not expired (``live``)."""

    known: bool
    live: bool


def _utc_now() -> datetime:
    """The current time, aware (UTC)."""
    return datetime.now(timezone.utc)


class Verdict(NamedTuple):
    """What a presented token may do: ``refusal`` (None: accepted; else why it is refused: missing,
    invalid, expired) and whether it is a live admin token."""

    refusal: str | None
    admin: bool


class TokenCheck:
    """Checks a presented bearer token against the configured query and admin tokens, in constant time;
    the gRPC interceptor and the HTTP gateway share it. ``clock`` gives the current time (aware)."""

    def __init__(self, auth: AuthConfig, clock: Callable[[], datetime] = _utc_now) -> None:
        self._query = _credentials(auth.query_tokens)
        self._admin = _credentials(auth.admin_tokens)
        self._clock = clock

    def verdict(self, token: bytes | None, missing: str = "missing bearer token") -> Verdict:
        """The verdict on ``token`` (None: none was presented, refused with ``missing``)."""
        if token is None:
            return Verdict(missing, False)
        now = self._clock()
        admin, query = _match(token, self._admin, now), _match(token, self._query, now)
        if not (admin.live or query.live):
            return Verdict("bearer token expired" if admin.known or query.known else "invalid bearer token", False)
        return Verdict(None, admin.live)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses RouterService calls without a valid token (UNAUTHENTICATED: missing, wrong or expired) or admin
    calls with a query token (PERMISSION_DENIED). ``clock`` gives the current time (aware) for expiries."""

    def __init__(self, auth: AuthConfig, clock: Callable[[], datetime] = _utc_now) -> None:
        self._check = TokenCheck(auth, clock)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        verdict = self._check.verdict(
            _bearer_token(details.invocation_metadata), "missing bearer token (authorization metadata)"
        )
        if verdict.refusal is not None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, verdict.refusal)
        if details.method in ADMIN_METHODS and not verdict.admin:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, f"{details.method} needs an admin token")
        return handler


def _credentials(entries: Sequence[str | ExpiringToken]) -> list[_Credential]:
    """The configured tokens, encoded, with their expiries."""
    return [
        _Credential(e.encode(), None) if isinstance(e, str) else _Credential(e.token.encode(), e.expires)
        for e in entries
    ]


def _bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            return bearer_token(value.decode() if isinstance(value, bytes) else value)
    return None


def bearer_token(authorization: str | None) -> bytes | None:
    """The token of an ``authorization`` value ``Bearer <token>`` (None: absent, another scheme, or empty)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip().encode("utf-8", "surrogatepass") if scheme.lower() == "bearer" and token.strip() else None


def _match(token: bytes, allowed: list[_Credential], now: datetime) -> _Match:
    """How ``token`` matches the ``allowed`` credentials at ``now``, comparing it with every one of them."""
    known = live = False
    for candidate in allowed:  # no early exit: the time taken does not depend on which token matched
        same = hmac.compare_digest(token, candidate.token)
        unexpired = candidate.expires is None or now < candidate.expires
        known |= same
        live |= same and unexpired
    return _Match(known, live)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts with ``code``."""

    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            abort, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
