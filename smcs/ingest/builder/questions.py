"""The questions file of ``smcs bank build``: one JSON object a line, decoded into ``BuildQuestion``.

Example line::

    {"id": "arith-17", "question": "What is 17 + 25?", "answer": "42", "task": "numeric", "source": "arithmetic"}
    {"id": "geo-3", "question": "Which is the largest ocean?", "choices": ["Atlantic", "Pacific", "Indian"],
     "answer": "B", "task": "multiple_choice"}

``answer`` is what the task's checker compares with: the letter for ``multiple_choice``, the value for
``math``/``numeric``/``exact``, the entry-point function name for ``code`` (whose ``tests`` are run).
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import Annotated

import msgspec

from smcs.bank import Question
from smcs.core.costs import TOKENS_KEY
from smcs.core.messages import ChatMessage
from smcs.core.prompts import Task, question_messages
from smcs.jsonl import decode_lines
from smcs.errors import InputError


class BuildQuestion(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One question to ask every model: its text, reference answer and task (which picks the prompt
    template and the checker).

    Attributes:
        id: unique in the file; becomes the bank question's id.
        question: the text (without the choices, which are listed after it in the prompt).
        answer: the reference answer (see the module docstring for its form per task).
        task: one of ``smcs.core.prompts.TASKS``.
        source: the dataset the question comes from.
        choices: the options of a multiple-choice question, lettered A, B, … in this order.
        tests: Python test code a ``code`` answer must pass.
    """

    id: Annotated[str, msgspec.Meta(min_length=1)]
    question: Annotated[str, msgspec.Meta(min_length=1)]
    answer: str
    task: Task
    source: str = ""
    choices: list[str] | None = None
    tests: str | None = None

    def __post_init__(self) -> None:
        if self.task == "instruction":
            raise InputError("task: instruction-following answers cannot be checked yet, so they cannot be built into a bank")
        if self.choices is not None and self.task != "multiple_choice":
            raise InputError(f"choices: only multiple_choice questions have choices, not {self.task}")
        if self.tests is not None and self.task != "code":
            raise InputError(f"tests: only code questions have tests, not {self.task}")
        if self.task == "multiple_choice":
            if not self.choices or len(self.choices) < 2:
                raise InputError("choices: a multiple_choice question needs at least two")
            if len(self.choices) > len(string.ascii_uppercase):
                raise InputError(f"choices: at most {len(string.ascii_uppercase)}, got {len(self.choices)}")
            letters = string.ascii_uppercase[: len(self.choices)]
            if self.answer.strip().upper() not in letters or not self.answer.strip():
                raise InputError(f"answer must be one of the choice letters {', '.join(letters)}, got {self.answer!r}")
        if self.task == "code" and not self.tests:
            raise InputError("tests: a code question needs the tests its answer must pass")

    def bank_question(self, tokens: dict[str, dict[str, int]] | None = None) -> Question:
        """The bank record of this question (its task and choices kept in the metadata, and ``tokens``, the
        tokens each model used on it, under ``metadata["tokens"]``: what ``smcs.core.costs`` prices)."""
        metadata: dict[str, object] = {"task": self.task}
        if self.choices is not None:
            metadata["choices"] = list(self.choices)
        if tokens:
            metadata[TOKENS_KEY] = tokens
        return Question(id=self.id, text=self.question, source=self.source, label=self.answer, metadata=metadata)


def question_prompt(question: BuildQuestion) -> list[ChatMessage]:
    """The messages a model is asked: the question (choices listed as ``(A) …`` lines after it) framed by
    its task's template (SMCS Fig. 8)."""
    text = question.question
    if question.choices:
        text += "\n" + "\n".join(f"({letter}) {choice}" for letter, choice in zip(string.ascii_uppercase, question.choices))
    return question_messages(text, question.task)


def read_questions(path: str | Path) -> tuple[list[BuildQuestion], str]:
    """The questions of ``path`` (blank lines skipped) and the file's SHA-256 (hex); ``ValueError``
    naming ``FILE:LINE`` and the field on the first bad line or repeated id."""
    path = Path(path)
    data = path.read_bytes()
    questions: list[BuildQuestion] = []
    first_line: dict[str, int] = {}
    for number, question in decode_lines(data, BuildQuestion, path):
        if question.id in first_line:
            raise InputError(f"{path}:{number}: id {question.id!r} repeats line {first_line[question.id]}")
        first_line[question.id] = number
        questions.append(question)
    return questions, hashlib.sha256(data).hexdigest()
