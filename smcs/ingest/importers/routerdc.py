"""RouterDC's score files: a JSON array of ``{"question": str, "scores": {model: float}, ...}``.

As published with RouterDC (Chen et al., NeurIPS 2024), one file per dataset (``mmlu_train.json``,
``gsm8k-train.json``, ...). Other keys (``cluster_id``) are ignored. The file stem is the prefix of each
question's id (``mmlu_train-0``, ``mmlu_train-1``, ... in file order) and, less a split suffix
(``_train``, ``-test``, ``_dev``, ``_val``), its ``source``: ``mmlu_train`` and ``mmlu_test`` are both
``mmlu``, so a held-out evaluation's breakdown by source lines up with the bank's. Models are
the score keys in first-seen order; a question that lacks a model's score, or gives it as null, is -1
(not evaluated) for that model.

Scores become outcomes by a rule: ``"positive"`` (correct = score > 0) suits the multiple-choice files,
whose score is 0 when wrong and otherwise the probability put on the right option; ``"half"`` (correct =
score >= 0.5) suits the generative ones, whose score is the fraction of correct samples. ``"auto"`` (the
default) picks by the file stem, as the data's documentation does: ``half`` for a stem starting with
gsm8k, mbpp, humaneval, javascript or MATH (in any case), ``positive`` for every other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from smcs.bank.schema import Question
from smcs.ingest.importers.records import Collector, ImportedBank, json_records, number
from smcs.errors import InputError

RULES = ("auto", "positive", "half")
GENERATIVE_SOURCES = ("gsm8k", "mbpp", "humaneval", "javascript", "math")
"""Stem prefixes (lower case) whose scores are fractions of correct generations: the ``half`` rule."""

_CORRECT: dict[str, Callable[[float], bool]] = {"positive": lambda s: s > 0, "half": lambda s: s >= 0.5}


class _Record(msgspec.Struct):
    question: str
    scores: dict[str, Any]  # values checked one by one, so that a bad one is named by its model


def dataset_of(stem: str) -> str:
    """The dataset a file stem names: the stem less a trailing split (``_train``, ``-test``, ``_dev``, ``_val``)."""
    return re.sub(r"[_-](train|test|dev|val|validation)$", "", stem, flags=re.IGNORECASE) or stem


def rule_for(source: str) -> str:
    """The rule ``"auto"`` picks for a file of this stem: ``"half"`` for generative sources, else ``"positive"``."""
    return "half" if source.lower().startswith(GENERATIVE_SOURCES) else "positive"


def read_routerdc(path: Path, *, rule: str = "auto") -> ImportedBank:
    """Read a RouterDC score file; ``rule`` is ``"auto"``, ``"positive"`` (score > 0) or ``"half"`` (score >= 0.5)."""
    if rule not in RULES:
        raise InputError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    correct = _CORRECT[rule_for(path.stem) if rule == "auto" else rule]
    source = dataset_of(path.stem)
    where, records = json_records(path, _Record)
    collector = Collector(path, where)
    for index, (location, record) in enumerate(records):
        question = Question(id=collector.default_id(index), text=record.question, source=source)
        column = collector.add_question(location, question, "question")
        for model, value in record.scores.items():
            score = number(value, where(location), f"scores[{model!r}]")
            collector.add_outcome(location, collector.model(model), column, -1 if score is None else int(correct(score)))
    return collector.finish()
