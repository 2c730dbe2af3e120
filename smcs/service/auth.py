"""Bearer-token authentication as a server interceptor.

Every call to the Router service must carry ``authorization: Bearer <token>``. Query tokens may call the
read-only methods; bank writes and Reload need an admin token. Health checks and reflection stay open so
load balancers and tooling work without credentials. Tokens are compared in constant time and never
appear in logs or error messages.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

from ..config import AuthConfig

SERVICE_PREFIX = "/smcs.v1.Router/"
ADMIN_METHODS = frozenset(
    SERVICE_PREFIX + m for m in ("AppendQuestions", "RecordOutcomes", "AddModel", "Reload")
)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses Router calls without a valid token (UNAUTHENTICATED) or admin calls with a query token
    (PERMISSION_DENIED)."""

    def __init__(self, auth: AuthConfig) -> None:
        self._query = [t.encode() for t in auth.query_tokens]
        self._admin = [t.encode() for t in auth.admin_tokens]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        token = _bearer_token(details.invocation_metadata)
        if token is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "missing bearer token (authorization metadata)")
        is_admin = _matches(token, self._admin)
        if not is_admin and not _matches(token, self._query):
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        if details.method in ADMIN_METHODS and not is_admin:
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, f"{details.method} needs an admin token")
        return handler


def _bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _matches(token: bytes, allowed: list[bytes]) -> bool:
    found = False
    for candidate in allowed:  # no early exit: the time taken does not depend on which token matched
        found |= hmac.compare_digest(token, candidate)
    return found


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts with ``code``."""

    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            abort, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
