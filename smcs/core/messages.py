"""What the pipeline sends to models and gets back: chat messages and completions.

They live in the core, not in ``smcs.backends``, because the sans-I/O pipeline builds the messages and
scores the completions; the backends (an outer layer) import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

Role = Literal["system", "user", "assistant"]


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a chat: ``role`` and its text."""

    role: Role
    content: str


class Completion(msgspec.Struct, frozen=True, kw_only=True):
    """What a model returned for one request.

    Attributes:
        text: the generated text (the assistant message's content).
        token_logprobs: natural-log probability of each generated token, in order.
        logprobs_missing: True when the server returned no logprobs (``token_logprobs`` is then empty).
        prompt_tokens: tokens of the prompt, as the server counted them (0 if it did not say).
        completion_tokens: tokens generated (0 if the server did not say).
        finish_reason: why generation stopped (``stop``, ``length``, ...), None if not given.
        latency_s: wall time of the call, retries and waits included.
        url: the base URL that answered; None for a local model.
    """

    text: str
    token_logprobs: list[float]
    logprobs_missing: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    latency_s: float = 0.0
    url: str | None = None


class Generation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Sampling settings of one request that override a model's configured ones (``ModelCall.generation``);
    a field left None keeps the model's. The backends check the values (``GenerationSettings``).

    Attributes:
        temperature: sampling temperature (>= 0).
        max_tokens: most tokens to generate (>= 1).
        top_p: nucleus sampling mass in (0, 1].
        stop: strings that end generation.
        presence_penalty: OpenAI-style presence penalty in [-2, 2].
    """

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None

    def changes(self) -> dict[str, object]:
        """The fields that are set, by name (what replaces the model's settings)."""
        return {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not None}


def with_system_prompt(system_prompt: str | None, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """``messages`` with a model's ``system_prompt`` put first: joined to a leading system message (the
    model's first, a blank line, then the given one), or as a new system message before them. None or
    "" adds nothing."""
    merged = list(messages)
    if not system_prompt:
        return merged
    if merged and merged[0].role == "system":
        return [ChatMessage("system", f"{system_prompt}\n\n{merged[0].content}"), *merged[1:]]
    return [ChatMessage("system", system_prompt), *merged]
