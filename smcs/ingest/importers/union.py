"""The SMCS paper's unified bank: a JSON array (or JSON Lines) of one record per question.

Each record is ``{"question": str, "src"?: str, "id"?: str | int, "label"?: str | number,
"model_res": {model: {"is_correct": bool | 0 | 1 | null, ...}}, "embedding"?: [float, ...]}``; other
keys, in the record and in each model's result, are ignored. ``src`` defaults to the file stem, ``id``
to ``f"{file stem}-{index}"`` (index of the record in the file, from 0); ``is_correct`` null or a model
missing from ``model_res`` is -1 (not evaluated).

Stored embeddings are all or nothing: when one record carries ``embedding`` every record must, all of
one dimension. The file does not say which embedder made them, so the caller does (option
``embedder_id``; ``smcs bank import union --stored-embedder ID``); without it, or when it is not the
id of the embedder importing the bank, the questions are embedded afresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from smcs.bank.schema import Question
from smcs.ingest.importers.records import Collector, ImportedBank, convert, json_records
from smcs.errors import InputError


class _Result(msgspec.Struct):
    is_correct: bool | Literal[0, 1] | None


class _Record(msgspec.Struct):
    question: str
    model_res: dict[str, Any]  # values converted one by one, so that a bad one is named by its model
    src: str | None = None
    id: str | int | None = None
    label: str | int | float | None = None
    embedding: list[float] | None = None


def read_union(path: Path, *, embedder_id: str | None = None) -> ImportedBank:
    """Read a unified-bank file; ``embedder_id`` names the embedder that made its stored embeddings."""
    where, records = json_records(path, _Record)
    collector = Collector(path, where)
    vectors: list[np.ndarray] = []
    first: tuple[int, bool] | None = None  # the first record's location and whether it carries an embedding
    for index, (location, record) in enumerate(records):
        here = where(location)
        if first is None:
            first = (location, record.embedding is not None)
        elif (record.embedding is not None) != first[1]:
            state = "missing" if first[1] else "present"
            raise InputError(f"{here}: field 'embedding' is {state}, unlike at {where(first[0])} (stored embeddings are all or none)")
        if record.embedding is not None:
            vectors.append(_vector(record.embedding, here, vectors[0].shape[0] if vectors else None))
        question_id = collector.default_id(index) if record.id is None else str(record.id)
        label = None if record.label is None else str(record.label)
        question = Question(id=question_id, text=record.question, source=record.src or path.stem, label=label)
        column = collector.add_question(location, question, "question")
        for model, value in record.model_res.items():
            result = convert(value, _Result, here, f"model_res[{model!r}]")
            outcome = -1 if result.is_correct is None else int(result.is_correct)
            collector.add_outcome(location, collector.model(model), column, outcome)
    if not vectors:
        return collector.finish()
    return collector.finish(np.stack(vectors), embedder_id)


def _vector(values: list[float], where: str, dim: int | None) -> np.ndarray:
    """One stored embedding as float32, checked: non-empty, finite, not all zero, of dimension ``dim``."""
    row = np.asarray(values, dtype=np.float32)
    if dim is not None and len(row) != dim:
        raise InputError(f"{where}: field 'embedding' has {len(row)} values, but the first record's has {dim}")
    if not len(row) or not np.isfinite(row).all() or not row.any():
        raise InputError(f"{where}: field 'embedding' must be a non-empty list of finite numbers, not all zero")
    return row
