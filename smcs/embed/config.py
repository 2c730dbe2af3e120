"""Choosing an embedder in the configuration file: one Struct, one factory.

Example (the ``[embedder]`` table, once wired into ``smcs.config``)::

    [embedder]                # the default: the bundled ONNX model on the CPU
    kind = "onnx"
    threads = 1

    [embedder]                # or a remote OpenAI-compatible server
    kind = "remote"
    base_url = "http://gpu1:8000"
    model = "BAAI/bge-m3"
    api_key_env = "SMCS_EMBEDDER_API_KEY"
    dim = 1024

The key itself never sits in the file: ``api_key_env`` names the environment variable that holds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import msgspec

from .base import AsyncEmbedder, Embedder
from .errors import EmbedderSetupError
from ..errors import InputError

_REMOTE_ONLY = ("base_url", "model", "api_key_env", "dim", "id")


class EmbedderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which embedder turns questions into vectors, and its settings.

    A bank records the embedder it was built with (``id`` and ``dim``); the server refuses to query it
    with another (``smcs.embed.check_compatible``).

    Attributes:
        kind: ``"onnx"``, the bundled all-MiniLM-L6-v2 (int8, 384-d) run locally by ONNX Runtime; or
            ``"remote"``, an OpenAI-compatible ``/v1/embeddings`` endpoint; or ``"none"``: no embedder
            (a service then takes embeddings only).
        threads: onnx only: CPU threads per embedding call (1 suits a server answering concurrent
            requests; more threads speed up one large batch).
        batch_size: most texts per model run (onnx) or per HTTP request (remote).
        base_url: remote only, required: the server, e.g. ``http://gpu1:8000`` (``/v1/embeddings`` is
            appended; a trailing ``/v1`` is not repeated).
        model: remote only, required: the served model name sent with each request.
        api_key_env: remote only: environment variable holding the bearer API key; None sends none.
        dim: remote only: the model's dimension; None learns it from the first response.
        id: remote only: the embedder id recorded in banks; None uses ``model``. Set it when the same
            model is served under another name, so that banks built with it still match.
        timeout_s: remote only: limit for one HTTP attempt, request to whole response, in seconds.
        retries: remote only: further attempts after a connection error, 429 or 5xx.
        backoff_s: remote only: first wait between attempts, in seconds; doubles each retry.
        max_backoff_s: remote only: longest wait between attempts; a longer ``Retry-After`` fails at once.
    """

    kind: Literal["onnx", "remote", "none"] = "onnx"
    threads: int = 1
    batch_size: int = 32
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    dim: int | None = None
    id: str | None = None
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.timeout_s > 0:
            raise InputError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise InputError(f"retries must be >= 0, got {self.retries}")
        if not self.backoff_s >= 0 or not self.max_backoff_s >= 0:
            raise InputError(f"backoff_s and max_backoff_s must be >= 0, got {self.backoff_s}, {self.max_backoff_s}")
        if self.dim is not None and self.dim < 1:
            raise InputError(f"dim must be >= 1, got {self.dim}")
        if self.kind in ("onnx", "none"):
            for name in _REMOTE_ONLY:
                if getattr(self, name) is not None:
                    raise InputError(f"{name} applies only to kind = 'remote'")
        else:
            for name in ("base_url", "model"):
                if not getattr(self, name):
                    raise InputError(f"{name} is required when kind = 'remote'")
            if self.threads != 1:
                raise InputError("threads applies only to kind = 'onnx'")


def make_embedder(config: EmbedderConfig, environ: Mapping[str, str] | None = None) -> Embedder | AsyncEmbedder:
    """Build the embedder ``config`` describes: an ``OnnxEmbedder`` (blocking) or a ``RemoteEmbedder`` (async).

    ``environ`` (default ``os.environ``) supplies the API key named by ``api_key_env``; an unset or empty
    variable is an ``EmbedderSetupError`` naming it. Wrap the result with ``as_async`` to await either.
    """
    if config.kind == "none":
        raise EmbedderSetupError("kind = 'none' configures no embedder")
    if config.kind == "onnx":
        from .onnx import OnnxEmbedder  # onnxruntime loads only when the local model is chosen

        return OnnxEmbedder(threads=config.threads, batch_size=config.batch_size)

    from .remote import RemoteEmbedder

    api_key = None
    if config.api_key_env is not None:
        api_key = (os.environ if environ is None else environ).get(config.api_key_env)
        if not api_key:
            raise EmbedderSetupError(
                f"api_key_env names the environment variable {config.api_key_env!r}, which is not set or empty"
            )
    assert config.base_url is not None and config.model is not None  # checked in __post_init__
    return RemoteEmbedder(
        config.base_url,
        config.model,
        api_key=api_key,
        dim=config.dim,
        embedder_id=config.id,
        batch_size=config.batch_size,
        timeout_s=config.timeout_s,
        retries=config.retries,
        backoff_s=config.backoff_s,
        max_backoff_s=config.max_backoff_s,
    )
