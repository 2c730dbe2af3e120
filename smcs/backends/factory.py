"""``make_backend``: the ``ChatBackend`` a ``[models."NAME"]`` table describes."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .base import ChatBackend
from .config import LocalModelConfig, ModelConfig, OpenAIModelConfig
from .errors import BackendSetupError
from .openai import OpenAIBackend


def make_backend(name: str, config: ModelConfig, environ: Mapping[str, str] | None = None) -> ChatBackend:
    """Build the backend of model ``name``: an ``OpenAIBackend`` or the embedded ``LocalBackend``.

    ``environ`` (default ``os.environ``) supplies the API key named by ``api_key_env``; an unset or empty
    variable is a ``BackendSetupError`` naming it. The local backend is imported only when a table asks
    for it; without the ``smcs[local]`` extra that is a ``BackendSetupError`` saying how to install it.
    """
    if isinstance(config, OpenAIModelConfig):
        return OpenAIBackend(name, config, api_key=_api_key(name, config, os.environ if environ is None else environ))
    if isinstance(config, LocalModelConfig):
        try:
            from .local import LocalBackend  # llama-cpp-python loads only when a local model is configured
        except ImportError as exc:
            raise BackendSetupError(
                f"model {name!r} has kind = 'local', but the local backend cannot be imported ({exc}); "
                "install it with: pip install 'smcs[local]'",
                model=name,
            ) from exc
        return LocalBackend(name, config)
    raise TypeError(f"model {name!r}: not a model table: {type(config).__name__}")


def _api_key(name: str, config: OpenAIModelConfig, environ: Mapping[str, str]) -> str | None:
    """The key in the variable ``config.api_key_env`` names (None if it names none); ``BackendSetupError`` if unset."""
    if config.api_key_env is None:
        return None
    key = environ.get(config.api_key_env)
    if not key:
        raise BackendSetupError(
            f"model {name!r}: api_key_env names the environment variable {config.api_key_env!r}, "
            "which is not set or empty",
            model=name,
        )
    return key
