"""The query text: what of a question is embedded (docs/design.md, Query text).

Real prompts put long shared text before a short question: few-shot blocks, system prompts, templates.
Embedded whole, every such prompt looks alike (and an encoder that truncates keeps only the shared head),
so retrieval finds nothing. A *rule* turns a question's text into what gets embedded; a bank records its
rule beside its embedder (``EmbedderInfo.query_text``), and every question embedded to build or query that
bank goes through ``query_texts(texts, rule)`` first. Question records keep the full text.

Rules:

``"raw"``
    The text unchanged. Every bank made before rules existed was embedded so, and a manifest that names
    no rule means it; it is also the paper's behaviour.

``"question-v1"`` (``DEFAULT_QUERY_TEXT_RULE``)
    1. *Tidy*: line endings become ``\\n``, blanks at the end of each line go, the text is stripped.
    2. *Cut few-shot examples.* The text is split into blocks at blank lines. Its last line is the *cue*
       when it holds a letter (``Answer:``, ``A:``, ``Print only the letter. Answer:``). A block before the
       last one is an *example* when one of its lines starts with the cue and goes on, either on the same
       line (``Answer: B``) or on the next line of the block (``Answer:`` then ``B``). With examples, the
       question is the blocks after the last example, less the cue line and less every line that occurs
       in the cut text at least as often as there are examples (an instruction repeated before each
       example); if that would leave no letter, the blocks after the last example are kept whole.
    3. *Keep head and tail.* The encoder reads a bounded number of tokens and drops the rest (256 for the
       bundled MiniLM). The text is counted in *units*: a CJK character, a run of letters and digits, or
       one other non-blank character (each is at least one of the encoder's tokens). A question of more
       than ``MAX_UNITS`` (200) units keeps its first ``HEAD_UNITS`` (60) and last ``TAIL_UNITS`` (140),
       each with the text between its units, joined by ``"\\n...\\n"``: the end of a long text (where
       the question usually is) is embedded, not only its start.

    A short question without blank-line blocks is left as it is but for step 1.

``last_user_message`` picks the text of a chat (the last user turn) before a rule applies.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import InputError

RAW = "raw"
QUESTION_V1 = "question-v1"
DEFAULT_QUERY_TEXT_RULE = QUESTION_V1
"""The rule new banks are built and imported with."""
RULES: tuple[str, ...] = (RAW, QUESTION_V1)
"""Every rule ``query_text`` knows."""

MAX_UNITS = 200
HEAD_UNITS = 60
TAIL_UNITS = MAX_UNITS - HEAD_UNITS
ELLIPSIS = "\n...\n"

_BLOCK_BREAK = re.compile(r"\n{2,}")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_UNIT = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]|_")
_LETTER = re.compile(r"[^\W\d_]")


def check_rule(rule: str) -> str:
    """``rule`` when ``query_text`` knows it; else a ``ValueError`` naming it and the known rules."""
    if rule not in RULES:
        raise InputError(f"unknown query-text rule {rule!r} (this smcs knows: {', '.join(RULES)}); upgrade smcs or rebuild the bank")
    return rule


def query_text(text: str, rule: str) -> str:
    """What is embedded for the question ``text`` under ``rule`` (see the module docstring)."""
    if check_rule(rule) == RAW:
        return text
    return _head_and_tail(_question(_tidy(text)))


def query_texts(texts: Iterable[str], rule: str) -> list[str]:
    """``query_text`` of each of ``texts`` under ``rule``: the one step before embedding questions."""
    check_rule(rule)
    return [query_text(text, rule) for text in texts]


def last_user_message(messages: Sequence[Mapping[str, Any] | Any]) -> str:
    """The content of the last ``user`` message of a chat: ``{"role", "content"}`` dicts or
    ``ChatMessage``s. ``ValueError`` naming the field when there is none or its content is not text."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
        if role != "user":
            continue
        content = message.get("content") if isinstance(message, Mapping) else getattr(message, "content", None)
        if not isinstance(content, str):
            raise InputError(f"messages[{index}].content must be text, got {type(content).__name__}")
        return content
    raise InputError("messages holds no message with role 'user'")


def _tidy(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _question(text: str) -> str:
    """Step 2: the text after its few-shot examples, less their template lines (the text when it has none)."""
    blocks = [block for block in _BLOCK_BREAK.split(text) if block.strip()]
    if len(blocks) < 2:
        return text
    cue = blocks[-1].split("\n")[-1].strip()
    examples = [i for i in range(len(blocks) - 1) if _answers(blocks[i], cue)] if _LETTER.search(cue) else []
    if not examples:
        return text
    last = examples[-1]
    kept = "\n\n".join(blocks[last + 1 :])
    cut_lines = Counter(line.strip() for block in blocks[: last + 1] for line in block.split("\n"))
    template = {line for line, count in cut_lines.items() if count >= len(examples)}
    question = _tidy("\n".join(line for line in kept.split("\n")[:-1] if line.strip() not in template))
    return question if _LETTER.search(question) else kept


def _answers(block: str, cue: str) -> bool:
    """Whether a line of ``block`` starts with ``cue`` and is answered: on that line or on the next one."""
    lines = [line.strip() for line in block.split("\n")]
    return any(line.startswith(cue) and (len(line) > len(cue) or i + 1 < len(lines)) for i, line in enumerate(lines))


def _head_and_tail(text: str) -> str:
    """Step 3: ``text`` when it has at most ``MAX_UNITS`` units, else its head and tail around ``ELLIPSIS``."""
    units = [match.span() for match in _UNIT.finditer(text)]
    if len(units) <= MAX_UNITS:
        return text
    head_end = units[HEAD_UNITS - 1][1]
    tail_start = units[len(units) - TAIL_UNITS][0]
    return text[:head_end] + ELLIPSIS + text[tail_start:]
