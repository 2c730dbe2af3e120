"""What every importer shares: the ``ImportedBank`` it produces, how input is read and located, and
the collector that turns (question, model, outcome) facts into a capability matrix.

Error messages follow one shape, so that a user can go straight to the fault: ``PATH:LINE: ...`` for
CSV and JSON Lines input (lines count from 1, the CSV header being line 1), ``PATH: item I: ...`` for
the records of a JSON array (items count from 0, as do the default question ids), followed by the field
(``field 'scores['gpt-4']': Expected `float`, got `str```) where one is at fault.
"""

from __future__ import annotations

import csv
import math
import re
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np

from smcs.bank.schema import ModelInfo, Question
from smcs.errors import InputError

Where = Callable[[int], str]
"""Turns a location (a line number or an item index) into the ``PATH:LINE`` / ``PATH: item I`` prefix."""

T = TypeVar("T")


@dataclass
class ImportedBank:
    """What a reader produces: questions, models and outcomes, with nothing embedded yet.

    ``outcomes`` is int8 ``[R, N]`` (1 correct, 0 wrong, -1 not evaluated), rows in the order of
    ``models`` and columns in the order of ``questions``. ``embeddings`` (float32 ``[N, d]``) is set only
    when the file carries vectors, and ``embedder_id`` names the embedder that made them when known.
    ``repeats`` counts the input rows that repeated an earlier row's question id and were merged into it.
    """

    questions: list[Question]
    models: list[ModelInfo]
    outcomes: np.ndarray
    embeddings: np.ndarray | None = None
    embedder_id: str | None = None
    repeats: int = 0

    def __post_init__(self) -> None:
        shape = (len(self.models), len(self.questions))
        if self.outcomes.dtype != np.int8 or self.outcomes.shape != shape:
            raise InputError(f"outcomes must be int8 {shape} (models x questions), got {self.outcomes.dtype} {self.outcomes.shape}")
        if self.embeddings is not None and (self.embeddings.ndim != 2 or len(self.embeddings) != len(self.questions)):
            raise InputError(f"embeddings must have one row per question ({len(self.questions)}), got shape {self.embeddings.shape}")


# ------------------------------------------------------------------------------------------ messages

_AT = re.compile(r"(?P<what>.*?) - at `\$(?P<path>[^`]*)`", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")


def describe(exc: msgspec.MsgspecError, field: str = "") -> str:
    """msgspec's message reworded to name the field first: ``field 'scores': Expected ...``.

    ``field`` is where the decoded value sits within the record (empty: the record itself); msgspec's
    own path inside that value (`` - at `$.x` ``) is appended to it.
    """
    message = str(exc)
    if match := _AT.fullmatch(message):
        message, field = match["what"], (field + match["path"]) if field else match["path"].removeprefix(".")
    if match := _MISSING.fullmatch(message):
        name = f"{field}.{match['name']}" if field else match["name"]
        return f"field {name!r} is missing"
    return f"field {field!r}: {message}" if field else message


def convert(value: object, kind: type[T], where: str, field: str) -> T:
    """``value`` (already decoded JSON) converted to ``kind``; ``ValueError`` at ``where`` naming ``field``."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise InputError(f"{where}: {describe(exc, field)}") from None


def number(value: object, where: str, field: str) -> float | None:
    """A JSON score: a finite number (``bool`` is not one), or ``None`` for null; else ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: field {field!r}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{where}: field {field!r}: {value!r} is not finite")
    return float(value)


def cell_outcome(cell: str, where: str, column: str) -> int:
    """A CSV outcome cell: blank -1 (not evaluated); ``true``/``false``; a number in [0, 1], >= 0.5 correct."""
    text = cell.strip()
    if not text:
        return -1
    lowered = text.lower()
    if lowered in ("true", "false"):
        return int(lowered == "true")
    value = cell_number(text, where, column)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{where}: column {column!r}: {text!r} is not an outcome between 0 and 1")
    return int(value >= 0.5)


def cell_number(cell: str, where: str, column: str) -> float:
    """A CSV number cell, finite; ``ValueError`` naming the column otherwise."""
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: column {column!r}: {cell.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: column {column!r}: {cell.strip()!r} is not finite")
    return value


# ---------------------------------------------------------------------------------------- file input


def read_bytes(path: Path) -> bytes:
    """The file's content; ``ValueError`` naming it when it is empty (or only white space)."""
    data = path.read_bytes()
    if not data.strip():
        raise InputError(f"{path}: empty file")
    return data


def json_records(path: Path, kind: type[T]) -> tuple[Where, Iterator[tuple[int, T]]]:
    """The records of a JSON array (``[...]``) or a JSON Lines file at ``path``, each decoded as ``kind``.

    Returns the location formatter and an iterator of (location, record): item indices for an array,
    line numbers for JSON Lines (blank lines skipped). Malformed JSON is reported with its line; a record
    that does not fit ``kind`` with its location and field.
    """
    data = read_bytes(path)
    decoder = msgspec.json.Decoder(kind)
    if data.lstrip()[:1] == b"[":
        try:
            items = msgspec.json.decode(data, type=list[msgspec.Raw])
        except msgspec.DecodeError as exc:
            raise InputError(f"{path}:{_line_of_error(data, exc)}: {exc}") from None
        where: Where = lambda i: f"{path}: item {i}"  # noqa: E731
        return where, _decoded(enumerate(items), decoder, where)
    where = lambda n: f"{path}:{n}"  # noqa: E731
    lines = ((n, line) for n, line in enumerate(data.splitlines(), start=1) if line.strip())
    return where, _decoded(lines, decoder, where)


def _decoded(items: Iterator[tuple[int, bytes]], decoder: msgspec.json.Decoder, where: Where) -> Iterator[tuple[int, Any]]:
    for location, raw in items:
        try:
            yield location, decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            raise InputError(f"{where(location)}: {describe(exc)}") from None


def _line_of_error(data: bytes, exc: msgspec.DecodeError) -> int:
    """The line of the byte offset msgspec names in ``exc`` (its last line when it names none)."""
    match = re.search(r"\(byte (\d+)\)", str(exc))
    offset = int(match.group(1)) if match else len(data)
    return data.count(b"\n", 0, offset) + 1


def csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], Where, Iterator[tuple[int, list[str]]]]:
    """The header, the location formatter and the (line, fields) rows of the CSV file at ``path``.

    ``required`` columns must be in the header; every row must have as many fields as the header.
    Quoted fields may hold newlines (a row's line is the one it starts on); blank lines are skipped.
    The file is streamed, never held in memory whole.
    """
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # model responses can exceed the 128 KiB default
    where: Where = lambda n: f"{path}:{n}"  # noqa: E731
    records = _csv_records(path, where)
    try:
        line, header = next(records)
    except StopIteration:
        raise InputError(f"{path}: empty file") from None
    missing = [name for name in required if name not in header]
    if missing:
        raise InputError(f"{where(line)}: the header lacks column {missing[0]!r} (it has: {', '.join(map(repr, header))})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{where(line)}: the header repeats column {repeated[0]!r}")

    def rows() -> Iterator[tuple[int, list[str]]]:
        for line, fields in records:
            if len(fields) != len(header):
                raise InputError(f"{where(line)}: {len(fields)} fields, but the header has {len(header)}")
            yield line, fields

    return header, where, rows()


def _csv_records(path: Path, where: Where) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each non-blank CSV record of ``path``; ``ValueError`` at the line on a fault."""
    with open(path, "rb") as handle:
        reader = csv.reader(_text_lines(handle, where))
        start = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"{where(start)}: {exc}") from None
            if fields:
                yield start, fields
            start = reader.line_num + 1


def _text_lines(handle: Any, where: Where) -> Iterator[str]:
    """The lines of the binary ``handle`` decoded as UTF-8 (a BOM dropped), each with its line ending."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where(number)}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)") from None


# ----------------------------------------------------------------------------------------- collecting


class Collector:
    """Accumulates questions, models (first-seen order) and outcomes, then builds the ``ImportedBank``.

    Question ids must be unique (a repeat is an error naming both locations) unless the reader merges
    repeats (``add_or_repeat``); a (model, question) pair given twice must agree (a disagreement is an
    error naming both locations and the model).
    """

    def __init__(self, path: Path, where: Where) -> None:
        self.path = path
        self.where = where
        self.questions: list[Question] = []
        self._question_at: dict[str, tuple[int, int]] = {}  # id -> (column, location)
        self._models: dict[str, int] = {}
        self.repeats = 0
        self._rows, self._cols, self._values, self._locations = array("i"), array("i"), array("b"), array("q")

    def default_id(self, index: int) -> str:
        """The id of a question the file gives none: ``f"{file stem}-{index}"``."""
        return f"{self.path.stem}-{index}"

    def model(self, name: str) -> int:
        """The row of model ``name``, added after the others on first sight."""
        return self._models.setdefault(name, len(self._models))

    def find(self, question_id: str) -> tuple[int, int] | None:
        """(column, location) of the question with ``question_id``, if already added."""
        return self._question_at.get(question_id)

    def add_question(self, location: int, question: Question, text_field: str) -> int:
        """Append ``question`` (read at ``location``) and return its column.

        ``text_field`` names the input field holding the text, for the message when it is blank.
        """
        where = self.where(location)
        if not question.text.strip():
            raise InputError(f"{where}: field {text_field!r} is empty: the question text is required")
        if not question.id:
            raise InputError(f"{where}: the question id is empty")
        if (first := self._question_at.get(question.id)) is not None:
            raise InputError(f"{where}: question id {question.id!r} repeats {self.where(first[1])}")
        self._question_at[question.id] = (len(self.questions), location)
        self.questions.append(question)
        return len(self.questions) - 1

    def add_or_repeat(self, location: int, question: Question, text_field: str) -> int:
        """The column of ``question``: a new one (as ``add_question``), or, when its id was added before,
        that question's, counted in ``repeats``. A repeat adds only outcomes: the first text and metadata
        stay, outcomes known in either are kept, and outcomes that disagree fail ``finish``."""
        found = self.find(question.id)
        if found is None:
            return self.add_question(location, question, text_field)
        self.repeats += 1
        return found[0]

    def add_outcome(self, location: int, row: int, column: int, value: int) -> None:
        """Record that model ``row`` got question ``column`` right (1) or wrong (0); -1 records nothing."""
        if value >= 0:
            self._rows.append(row)
            self._cols.append(column)
            self._values.append(value)
            self._locations.append(location)

    def finish(self, embeddings: np.ndarray | None = None, embedder_id: str | None = None) -> ImportedBank:
        """The ``ImportedBank`` of everything added; ``ValueError`` when no question was found."""
        if not self.questions:
            raise InputError(f"{self.path}: no questions found")
        n = len(self.questions)
        rows, cols = np.frombuffer(self._rows, dtype=np.int32), np.frombuffer(self._cols, dtype=np.int32)
        values = np.frombuffer(self._values, dtype=np.int8)
        keys = rows.astype(np.int64) * n + cols
        order = np.argsort(keys, kind="stable")
        repeats = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        clashes = repeats[values[order][repeats] != values[order][repeats + 1]]
        if clashes.size:  # name the pair's first mention and the first that disagrees with the one before it
            second = order[clashes[0] + 1]
            first = order[np.searchsorted(keys[order], keys[second])]
            names = list(self._models)
            raise InputError(
                f"{self.where(self._locations[second])}: model {names[rows[second]]!r} on question "
                f"{self.questions[cols[second]].id!r} is {values[second]}, but {self.where(self._locations[first])} says {values[first]}"
            )
        outcomes = np.full((len(self._models), n), -1, dtype=np.int8)
        outcomes[rows, cols] = values
        models = [ModelInfo(name=name) for name in self._models]
        return ImportedBank(self.questions, models, outcomes, embeddings, embedder_id, self.repeats)


# ------------------------------------------------------------------------------------------- merging


def merge(parts: Sequence[ImportedBank], names: Sequence[str]) -> ImportedBank:
    """One ``ImportedBank`` of ``parts`` (read from the files ``names``), questions in order.

    Models are unioned in first-seen order; a model a part lacks is -1 (not evaluated) on its questions.
    A question id found in two parts is an error naming both files. Stored embeddings are kept only when
    every part has them, from the same embedder and of the same dimension; otherwise the merge has none.
    """
    if len(parts) == 1:
        return parts[0]
    models: dict[str, ModelInfo] = {}
    for part in parts:
        for model in part.models:
            models.setdefault(model.name, model)
    row_of = {name: r for r, name in enumerate(models)}
    seen: dict[str, str] = {}
    questions: list[Question] = []
    blocks = []
    for part, name in zip(parts, names, strict=True):
        for q in part.questions:
            if q.id in seen:
                raise InputError(f"{name}: question id {q.id!r} is also in {seen[q.id]}")
            seen[q.id] = name
        questions.extend(part.questions)
        block = np.full((len(models), len(part.questions)), -1, dtype=np.int8)
        block[[row_of[m.name] for m in part.models]] = part.outcomes
        blocks.append(block)
    embeddings, embedder_id = None, parts[0].embedder_id
    stored = [p.embeddings for p in parts]
    if all(e is not None for e in stored) and len({e.shape[1] for e in stored}) == 1 and all(p.embedder_id == embedder_id for p in parts):
        embeddings = np.concatenate(stored)
    return ImportedBank(
        questions, list(models.values()), np.concatenate(blocks, axis=1), embeddings,
        embedder_id if embeddings is not None else None, sum(p.repeats for p in parts),
    )
