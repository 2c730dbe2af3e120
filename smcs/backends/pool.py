"""The pool of configured models: a backend and default generation settings per model name, one call at a
time sent with the call's seed (and its ``generation`` overrides) and a timeout, every failure turned into
a ``CallFailed``; ``stream`` gives a call's text as it is generated."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

import msgspec

from ..core.pipeline import CallFailed, CallResult, ModelCall
from ..http_retry import AsyncClosing
from .base import ChatBackend, GenerationSettings
from .config import ModelConfig
from .errors import BackendError
from .factory import make_backend
from ..errors import InputError


class ModelPool(AsyncClosing):
    """The models requests can be sent to: a backend and its default generation settings per model name.

    ``async with pool:`` closes every backend at the end.
    """

    def __init__(self, backends: Mapping[str, ChatBackend], settings: Mapping[str, GenerationSettings]) -> None:
        """``backends`` and ``settings`` keyed by model name (the same keys)."""
        if set(backends) != set(settings):
            raise InputError("backends and settings must name the same models")
        self._backends = dict(backends)
        self._settings = dict(settings)

    @classmethod
    def from_config(cls, models: Mapping[str, ModelConfig], environ: Mapping[str, str] | None = None) -> ModelPool:
        """A pool of the ``[models]`` tables; ``BackendSetupError`` naming the model whose backend cannot be built."""
        env = os.environ if environ is None else environ
        backends: dict[str, ChatBackend] = {}
        for name, config in models.items():
            backends[name] = make_backend(name, config, env)
        return cls(backends, {name: config.generation() for name, config in models.items()})

    @property
    def names(self) -> tuple[str, ...]:
        """The models of the pool, in configuration order."""
        return tuple(self._backends)

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    async def call(self, call: ModelCall, timeout_s: float | None = None) -> CallResult:
        """Send one call; a ``Completion``, or a ``CallFailed`` for a model with no backend, a backend
        error, or no answer within ``timeout_s`` (None: the backend's own timeouts only)."""
        start = time.perf_counter()
        backend = self._backends.get(call.model)
        if backend is None:
            return CallFailed(kind="setup", message=f"no backend is configured for model {call.model!r}")
        try:
            settings = self.settings_for(call)
        except InputError as exc:
            return CallFailed(kind="bad_request", message=f"model {call.model!r}: {exc}")
        try:
            async with asyncio.timeout(timeout_s):
                return await backend.complete(call.messages, settings)
        except BackendError as exc:
            return CallFailed(kind=exc.kind, message=str(exc), latency_s=time.perf_counter() - start)
        except TimeoutError:
            return CallFailed(
                kind="timeout",
                message=f"{call.model} did not answer within {timeout_s:g} s",
                latency_s=time.perf_counter() - start,
            )

    def settings_for(self, call: ModelCall) -> GenerationSettings:
        """The settings ``call`` is sent with: its model's, with the call's seed and ``generation`` overrides;
        ``InputError`` naming a value the overrides got wrong."""
        changes = call.generation.changes() if call.generation is not None else {}
        return msgspec.structs.replace(self._settings[call.model], seed=call.seed, **changes)

    async def stream(self, call: ModelCall) -> AsyncIterator[str | CallResult]:
        """``call``'s answer as it is generated: its text in pieces (``str``) as they arrive, then, last, the
        whole ``Completion`` or a ``CallFailed`` (failures after some pieces included). A backend with a
        ``stream`` method (the OpenAI-compatible one) streams; any other gives its whole text as one piece.
        No timeout here: the caller bounds the iteration. Closing the iterator early (or cancelling the
        task iterating it) abandons the request."""
        start = time.perf_counter()
        backend = self._backends.get(call.model)
        if backend is None:
            yield CallFailed(kind="setup", message=f"no backend is configured for model {call.model!r}")
            return
        try:
            settings = self.settings_for(call)
        except InputError as exc:
            yield CallFailed(kind="bad_request", message=f"model {call.model!r}: {exc}")
            return
        streaming = getattr(backend, "stream", None)
        try:
            if streaming is None:
                completion = await backend.complete(call.messages, settings)
                if completion.text:
                    yield completion.text
                yield completion
                return
            async with aclosing(streaming(call.messages, settings)) as pieces:
                async for piece in pieces:
                    yield piece
        except BackendError as exc:
            yield CallFailed(kind=exc.kind, message=str(exc), latency_s=time.perf_counter() - start)

    async def aclose(self) -> None:
        """Close every backend."""
        await asyncio.gather(*(backend.aclose() for backend in self._backends.values()))
