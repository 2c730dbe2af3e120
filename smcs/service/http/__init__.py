"""The OpenAI-compatible HTTP gateway beside the gRPC service (``smcs serve --http-port``): ``gateway``
serves ``/v1/chat/completions`` and ``/v1/models``, ``request`` checks the bodies, ``errors`` answers in
OpenAI's error shape."""

from .errors import ApiError
from .gateway import Gateway, start_gateway

__all__ = ["ApiError", "Gateway", "start_gateway"]
