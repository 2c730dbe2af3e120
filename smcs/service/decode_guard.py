"""INVALID_ARGUMENT, not UNKNOWN, for a request whose bytes are not the method's message.

grpc.aio answers a request its deserializer cannot parse (invalid UTF-8 in a string field, a lone
surrogate, bytes that are not protobuf) with UNKNOWN "Unexpected DecodeError". This interceptor wraps
every method's deserializer so that such bytes become an ``Undecodable`` marker, and the handler ends
that call with INVALID_ARGUMENT saying why, without running the method.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc


class Undecodable:
    """The request of a call whose bytes did not parse; ``reason`` is the parser's message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _guarded(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def guarded(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError (its class depends on the backend), UnicodeDecodeError
            return Undecodable(str(exc) or type(exc).__name__)

    return guarded


async def _refuse(request: Undecodable, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message of this method: {request.reason}")


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    """Put it last among the interceptors, so that the ones before it (metrics) see the refusal."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler with a deserializer that cannot raise."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        deserializer = _guarded(handler.request_deserializer)
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    return await _refuse(request, context)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=deserializer, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _guarded_stream(handler.unary_stream), request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _guarded_stream(stream: Callable[..., Any]) -> Callable[..., Any]:
    """A server-streaming behaviour that refuses an ``Undecodable`` request, in the same form as
    ``stream``: an async generator, or a coroutine that writes with ``context.write`` (as the standard
    health service's Watch does)."""
    if inspect.isasyncgenfunction(stream):

        async def generating(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _refuse(request, context)
                return
            async for message in stream(request, context):
                yield message

        return generating

    async def writing(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            return await _refuse(request, context)
        return await stream(request, context)

    return writing
