"""The body of ``POST /v1/chat/completions``, checked: OpenAI's fields and smcs's extra keys.

OpenAI's fields the gateway reads: ``model``, ``messages`` (roles ``system``, ``developer`` (taken as
``system``), ``user``, ``assistant``; content a string or an array of ``text`` parts),
``max_completion_tokens`` / ``max_tokens`` (the first when both are set), ``temperature`` (0–2),
``top_p`` (0 < p ≤ 1), ``presence_penalty`` (−2–2), ``stop`` (a string or up to ``MAX_STOP`` strings),
``seed`` (0 ≤ seed < 2**63), ``n`` (1 only), ``stream``, ``stream_options.include_usage`` and ``user``.
Every other OpenAI field (``tools``, ``logprobs``, ``response_format``, ``frequency_penalty`` …) is ignored,
as OpenAI-compatible servers do; a field of the wrong type or value is a 400 naming it (``param``).

smcs's extra keys (what the ``openai`` SDK sends through ``extra_body``): every routing policy field a
request may set (``smcs.core.policy.OVERRIDABLE``: ``k``, ``n_base``, ``gamma``, ``k_drop``, ``lam``,
``aggregator``, ``min_references``, ``retrieval``, ``nprobe``, ``scorer``, ``cover``, and whatever that
list gains), except that the policy's ``n`` (exploration subsets) is ``n_explore``, since ``n`` is
OpenAI's; ``allowed_models`` (the models the answer may use), ``task`` (the prompt template of
``smcs.core.prompts``) and ``strategy_options`` (an object: a strategy's options, as ``smcs ask
--option``).

The routed question is the last ``user`` message's text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from ...core.messages import ChatMessage, Generation
from ...core.policy import OVERRIDABLE, Policy
from .errors import ApiError, bad_request

MAX_SUBSETS = 4096
"""Most exploration subsets (``n_explore``) a request may ask for, as over gRPC: drawing and sending n
subsets costs O(n); the paper's n is 8."""
MAX_STOP = 16
"""Most stop strings a request may give."""
POLICY_KEYS: dict[str, str] = {("n_explore" if name == "n" else name): name for name in OVERRIDABLE}
"""Body key -> ``Policy`` field, for the policy fields a request may set."""
KEY_OF: dict[str, str] = {name: key for key, name in POLICY_KEYS.items()}
"""``Policy`` field -> body key."""
MAX_SEED = 2**63
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completions request.

    Attributes:
        model: the model asked for (``smcs``, ``smcs-route``, ``smcs/<strategy>`` or a bank model).
        messages: the conversation, as the models are sent it.
        question_index: the position in ``messages`` of the last user message, the routed question.
        generation: the request's sampling settings (None fields: each model's own).
        seed: the request seed (None: drawn, and reported).
        stream: whether to answer with server-sent events.
        include_usage: in a stream, whether to end with a chunk carrying ``usage``.
        user: OpenAI's end-user identifier (accepted, not used).
        policy: the server's policy with the request's overrides.
        allowed_models: the models the answer may use (empty: every model with a backend).
        task: the prompt template (None: the default instruction template).
        strategy_options: the strategy's options.
    """

    model: str
    messages: list[ChatMessage]
    question_index: int
    generation: Generation
    seed: int | None
    stream: bool
    include_usage: bool
    user: str | None
    policy: Policy
    allowed_models: list[str] = field(default_factory=list)
    task: str | None = None
    strategy_options: dict[str, object] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The routed question: the last user message's text."""
        return self.messages[self.question_index].content


def decode_body(raw: bytes) -> dict[str, object]:
    """The JSON object ``raw`` holds; 400 when it is not JSON (UTF-8) or not an object."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # not JSON, not UTF-8, an integer beyond 64 bits
        raise bad_request(f"the body is not valid JSON: {exc}", None, "invalid_json") from None
    except RecursionError:
        raise bad_request("the body nests too deeply", None, "invalid_json") from None
    if not isinstance(value, dict):
        raise bad_request(f"the body must be a JSON object, got {_kind(value)}", None, "invalid_json")
    return value


def parse_chat(body: dict[str, object], default: Policy) -> ChatRequest:
    """The ``ChatRequest`` in ``body`` (``decode_body``'s), its policy ``default`` with the request's
    overrides; ``ApiError`` 400 naming the first field that is wrong."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(f"model must be a non-empty string, got {_show(model)}", "model", "invalid_type")
    messages, question_index = _messages(body.get("messages"))
    n = _integer(body, "n", 1)
    if n is not None and n != 1:
        raise bad_request(f"n must be 1 (smcs writes one answer), got {n}", "n", "unsupported_value")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    generation = Generation(
        temperature=_number(body, "temperature", 0.0, 2.0),
        max_tokens=max_tokens,
        top_p=_number(body, "top_p", 0.0, 1.0, open_below=True),
        stop=_stop(body.get("stop")),
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0),
    )
    seed = _integer(body, "seed", 0)
    if seed is not None and seed >= MAX_SEED:
        raise bad_request(f"seed must be below 2**63, got {seed}", "seed")
    stream = _boolean(body, "stream") or False
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request(f"stream_options must be an object, got {_show(options)}", "stream_options", "invalid_type")
        include_usage = _boolean(options, "include_usage", "stream_options.include_usage") or False
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"user must be a string, got {_show(user)}", "user", "invalid_type")
    allowed = body.get("allowed_models")
    if allowed is not None and not (isinstance(allowed, list) and all(isinstance(m, str) for m in allowed)):
        raise bad_request(f"allowed_models must be an array of model names, got {_show(allowed)}", "allowed_models", "invalid_type")
    task = body.get("task")
    if task is not None and not isinstance(task, str):
        raise bad_request(f"task must be a string, got {_show(task)}", "task", "invalid_type")
    strategy_options = body.get("strategy_options")
    if strategy_options is not None and not isinstance(strategy_options, dict):
        raise bad_request(f"strategy_options must be an object, got {_show(strategy_options)}", "strategy_options", "invalid_type")
    return ChatRequest(
        model=model, messages=messages, question_index=question_index, generation=generation, seed=seed,
        stream=stream, include_usage=include_usage, user=user, policy=_policy(body, default),
        allowed_models=list(allowed or []), task=task, strategy_options=dict(strategy_options or {}),
    )


def _messages(value: object) -> tuple[list[ChatMessage], int]:
    """The conversation and the index of its last user message."""
    if not isinstance(value, list) or not value:
        raise bad_request(f"messages must be a non-empty array of messages, got {_show(value)}", "messages", "invalid_type")
    messages = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object, got {_show(item)}", where, "invalid_type")
        role = item.get("role")
        if role in ("tool", "function"):
            raise bad_request(f"{where}.role is {role!r}: smcs calls no tools", f"{where}.role", "unsupported_value")
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}, got {_show(role)}", f"{where}.role")
        messages.append(ChatMessage(ROLES[role], _content(item.get("content"), f"{where}.content")))  # type: ignore[arg-type]
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise bad_request("messages must hold a user message: the last one is the question", "messages")
    return messages, users[-1]


def _content(value: object, where: str) -> str:
    """A message's text: a string, or the text of an array of ``text`` parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else None
                why = f"parts of type {kind!r} are not supported" if isinstance(kind, str) and kind != "text" else "must be a text part"
                raise bad_request(f"{where}[{j}] {why} ({{\"type\": \"text\", \"text\": ...}})", f"{where}[{j}]", "unsupported_value")
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{where} must be a string or an array of text parts, got {_show(value)}", where, "invalid_type")


def _policy(body: dict[str, object], default: Policy) -> Policy:
    """``default`` with the request's policy keys; 400 naming the key whose value the policy refuses."""
    changes = {name: body[key] for key, name in POLICY_KEYS.items() if body.get(key) is not None}
    if not changes:
        return default
    subsets = changes.get("n")
    if isinstance(subsets, int) and subsets > MAX_SUBSETS:
        raise bad_request(f"n_explore is {subsets}; the limit is {MAX_SUBSETS} exploration subsets", "n_explore")
    try:
        return msgspec.convert({**msgspec.structs.asdict(default), **changes}, Policy)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        message = str(exc)
        at = message.rfind(" - at `$.")
        if at >= 0:
            name = message[at + len(" - at `$."):].rstrip("`").split(".")[0].split("[")[0]
            key = KEY_OF.get(name, name)
            raise bad_request(f"{key}: {message[:at]}", key, "invalid_type") from None
        name = next((n for n in sorted(changes, key=len, reverse=True) if message.startswith(n)), None)
        key = KEY_OF.get(name, name) if name is not None else None
        if name is not None and key != name:  # the policy says "n must ...": the body key is n_explore
            message = key + message[len(name):]
        raise bad_request(message, key) from None


def _integer(body: dict[str, object], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer, got {_show(value)}", name, "invalid_type")
    if value < minimum:
        raise bad_request(f"{name} must be >= {minimum}, got {value}", name)
    return value


def _number(body: dict[str, object], name: str, low: float, high: float, *, open_below: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number, got {_show(value)}", name, "invalid_type")
    if not (low < value <= high if open_below else low <= value <= high):
        interval = f"({low:g}, {high:g}]" if open_below else f"[{low:g}, {high:g}]"
        raise bad_request(f"{name} must be in {interval}, got {value!r}", name)
    return float(value)


def _boolean(body: dict[str, object], name: str, param: str | None = None) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"{param or name} must be true or false, got {_show(value)}", param or name, "invalid_type")
    return value


def _stop(value: object) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request(f"stop must be a non-empty string or an array of them, got {_show(value)}", "stop", "invalid_type")
    if len(stops) > MAX_STOP:
        raise bad_request(f"stop has {len(stops)} strings; the limit is {MAX_STOP}", "stop")
    return list(stops)


def _kind(value: object) -> str:
    """The JSON type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """``value`` for a message: its JSON type and, when short, the value itself (never a huge string)."""
    if isinstance(value, str):
        text = repr(value[:41])
    elif isinstance(value, (bool, int, float)):
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else "…"
    else:
        return _kind(value)  # a container, never repr'd: it may be huge or deeply nested
    return f"{_kind(value)} {text}" if len(text) <= 40 else _kind(value)


__all__ = ["ApiError", "ChatRequest", "KEY_OF", "MAX_SUBSETS", "POLICY_KEYS", "decode_body", "parse_chat"]
