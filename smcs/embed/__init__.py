"""Embedders: texts to unit-norm float32 vectors (docs/design.md, Layout and layers: an I/O edge).

- ``OnnxEmbedder``: the default; all-MiniLM-L6-v2 (int8, 384-d) on the CPU via ONNX Runtime. Blocking.
- ``RemoteEmbedder``: an OpenAI-compatible ``/v1/embeddings`` server over aiohttp. Async.
- ``as_async`` / ``as_sync``: either shape from the other, so callers await (or call) both alike.
- ``EmbedderConfig`` + ``make_embedder``: the choice as a config table.
- ``check_compatible``: refuse to query a bank built by another embedder.

    from . import EmbedderConfig, as_async, check_compatible, make_embedder
    embedder = as_async(make_embedder(EmbedderConfig()))
    check_compatible(embedder.info, bank)
    vectors = await embedder.embed(["What is the capital of France?"])

``OnnxEmbedder`` and ``RemoteEmbedder`` are imported on first use, so that importing this package does
not load onnxruntime or aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AsyncEmbedder, BlockingEmbedder, Embedder, ThreadedEmbedder, as_async, as_sync, is_async
from .compat import UNSPECIFIED, check_compatible
from .config import EmbedderConfig, make_embedder
from .errors import (
    EmbedderAuthError,
    EmbedderConnectionError,
    EmbedderError,
    EmbedderMalformedResponse,
    EmbedderRateLimited,
    EmbedderRequestError,
    EmbedderServerError,
    EmbedderSetupError,
    EmbedderTimeout,
)

if TYPE_CHECKING:
    from .onnx import OnnxEmbedder
    from .remote import RemoteEmbedder

__all__ = [
    "UNSPECIFIED",
    "AsyncEmbedder",
    "BlockingEmbedder",
    "Embedder",
    "EmbedderAuthError",
    "EmbedderConfig",
    "EmbedderConnectionError",
    "EmbedderError",
    "EmbedderMalformedResponse",
    "EmbedderRateLimited",
    "EmbedderRequestError",
    "EmbedderServerError",
    "EmbedderSetupError",
    "EmbedderTimeout",
    "OnnxEmbedder",
    "RemoteEmbedder",
    "ThreadedEmbedder",
    "as_async",
    "as_sync",
    "check_compatible",
    "is_async",
    "make_embedder",
]


def __getattr__(name: str) -> Any:
    """Import ``OnnxEmbedder`` / ``RemoteEmbedder`` (and their heavy libraries) when first asked for."""
    if name == "OnnxEmbedder":
        from .onnx import OnnxEmbedder

        return OnnxEmbedder
    if name == "RemoteEmbedder":
        from .remote import RemoteEmbedder

        return RemoteEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
