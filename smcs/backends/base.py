"""The model-backend interface: chat messages in, a completion with per-token logprobs out (docs/design.md, Layout and layers: an I/O edge).

One async method, ``complete``, so that nothing above this layer (the pipeline host, the strategies, the
service) knows whether a model answers over HTTP from a GPU server or from the embedded CPU model. Every
backend promises:

- ``messages`` is a non-empty sequence of ``ChatMessage``; ``settings`` (None: the backend's own) say how
  to sample;
- the result is a ``Completion`` (defined in ``smcs.core.messages``, since the pipeline consumes it):
  the generated text, the log-probability of each generated token (empty only when the server gives
  none: then ``logprobs_missing`` is True and perplexity cannot be computed), token usage and wall time;
- failures are ``BackendError`` subclasses (``smcs.backends.errors``) whose ``kind`` says what went wrong;
- cancelling the coroutine abandons the request (an HTTP backend closes its connection).

A backend may also offer ``stream(messages, settings)``, an async iterator of the reply's text pieces as
they are generated and then the whole ``Completion`` (the OpenAI-compatible backend does);
``ModelPool.stream`` falls back to ``complete`` (the whole text as one piece) for a backend without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ..core.messages import ChatMessage, Completion, Role
from ..errors import InputError

__all__ = ["ChatBackend", "ChatMessage", "Completion", "GenerationSettings", "Role"]


class GenerationSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How a model samples; the defaults are the SMCS paper's (A.3).

    Attributes:
        temperature: sampling temperature, >= 0 (0: greedy).
        max_tokens: most tokens to generate, >= 1.
        presence_penalty: OpenAI-style presence penalty, in [-2, 2].
        top_p: nucleus sampling mass in (0, 1]; None: the server's default.
        stop: strings that end generation.
        seed: sampling seed passed to the server; None: the server's own randomness.
    """

    temperature: float = 0.7
    max_tokens: int = 8192
    presence_penalty: float = 1.05
    top_p: float | None = None
    stop: list[str] = []
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature!r}")
        if isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise InputError(f"max_tokens must be >= 1, got {self.max_tokens!r}")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise InputError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p!r}")


@runtime_checkable
class ChatBackend(Protocol):
    """A model that answers chat requests. ``name`` is the model's name in the bank and the config."""

    @property
    def name(self) -> str:
        """The model's name (a plain attribute satisfies this too)."""
        ...

    async def complete(
        self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None
    ) -> Completion:
        """Generate the assistant's reply to ``messages``; ``BackendError`` subclasses on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or model memory; the backend is unusable afterwards."""
        ...
