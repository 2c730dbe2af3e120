"""What the service's interceptors share: which calls are RouterService's, and wrapping their handlers."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .._proto import router_pb2 as pb

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RouterService"].full_name
SERVICE_PREFIX = f"/{SERVICE_NAME}/"
"""The start of every RouterService method's path (health and reflection are other services)."""

Unary = Callable[..., Awaitable[Any]]
Streaming = Callable[..., AsyncIterator[Any]]


def wrap_router_call(
    handler: grpc.RpcMethodHandler | None,
    details: grpc.HandlerCallDetails,
    unary: Callable[[str, Unary], Unary],
    unary_stream: Callable[[str, Streaming], Streaming],
) -> grpc.RpcMethodHandler | None:
    """``handler`` of a RouterService call with its behaviour wrapped: ``unary(method, behavior)`` for a
    unary call, ``unary_stream(method, behavior)`` for a server-streaming one (an async generator), the
    method's name given; any other handler (other services, none at all) as it is."""
    if handler is None or not details.method.startswith(SERVICE_PREFIX):
        return handler
    method = details.method[len(SERVICE_PREFIX):]
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary(method, handler.unary_unary))
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        return handler._replace(unary_stream=unary_stream(method, handler.unary_stream))
    return handler  # no other shapes in smcs.v1.RouterService
