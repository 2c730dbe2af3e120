"""The bank store: versioned, crash-safe, memory-mapped (docs/design.md, The bank).

A bank is a directory of immutable versions and a ``CURRENT`` file naming the live one::

    <bank>/
      CURRENT            "v000012\\n"
      .lock              writers' flock
      v000012/
        manifest.json    Manifest: schema version, embedder, N, R, created, parent, SHA-256 per data file
        embeddings.npy   float32 N x d, rows L2-normalised
        capability.npy   int8 R x N: 1 correct, 0 wrong, -1 not evaluated
        questions.jsonl  one Question per line, in row order
        models.json      JSON array of ModelInfo, in matrix-row order
        ivf_*.npy        optional: the version's IVF index (``smcs.bank.ivf``), hashed like the rest
        scorer.json      optional: the FittedScorer ``smcs bank fit`` learned (``smcs.core.fit``), hashed
                         too; every later write carries it over (stale once the data differ)

Readers take no lock: ``Bank.open`` reads ``CURRENT`` once and then sees one complete version for as
long as it holds the ``Bank`` (the arrays are memory maps of files that are never modified in place, and
the questions file is held open from the start, so even ``prune`` cannot take the snapshot away).

Writers serialise on an exclusive ``flock`` of ``<bank>/.lock``. Under the lock a writer deletes
leftover scratch (``.tmp-*``) and *orphans* (version directories newer than ``CURRENT``: a crash between
publishing a version and pointing ``CURRENT`` at it), re-opens the latest version, applies its change
to that (never to the possibly stale ``Bank`` it was called on, so concurrent writers do not lose each
other's updates), builds the new version in a scratch directory, fsyncs it, renames it to the next
version name and finally replaces ``CURRENT`` atomically. Version numbers are one more than the highest
version directory present, orphans included, so a name that may have been seen is never reused for
different content. A crash at any point leaves ``CURRENT`` naming a complete version.

Errors: ``BankError`` (an ``InputError``, so a ``ValueError``) for bad input to an operation, ``BankFormatError`` when the
directory is not a valid bank; both name the offending field or file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import os
import re
import shutil
import threading
import weakref
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from . import atomic, ivf, segments
from .errors import BankError, BankFormatError
from .schema import SCHEMA_VERSION, SCHEMA_VERSIONS, EmbedderInfo, FittedScorer, IndexInfo, Manifest, ModelInfo, Question, Segments

CURRENT = "CURRENT"
LOCK = ".lock"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
CAPABILITY = "capability.npy"
QUESTIONS = "questions.jsonl"
MODELS = "models.json"
DATA_FILES = (EMBEDDINGS, CAPABILITY, QUESTIONS, MODELS)
"""The files of every version; the manifest records their SHA-256 (and the index's, when it has one)."""
SCORER = "scorer.json"
"""The fitted scorer of a version that has one."""
FITTED_DATA = (EMBEDDINGS, CAPABILITY)
"""The files whose content a fitted scorer depends on: it is stale once their hashes differ from its ``data``."""
INDEX_KIND = "ivf-flat"

NORM_TOLERANCE = 1e-3
"""``validate`` accepts an embedding row whose L2 norm is within this of 1."""

_VERSION_RE = re.compile(r"v(\d{6,})")
_GATHER_ROWS = 16384
"""Rows gathered per block when writing an index's list-ordered vectors."""
_CHUNK_BYTES = 1 << 22
"""Streaming granularity for copying, hashing and scanning files (bounds the extra memory used)."""
FOLD_MIN_LOG_BYTES = 1 << 20
"""An outcome log shorter than this never needs a fold (``Bank.needs_fold``)."""
_OPEN_RETRIES = 3
"""How often ``Bank.open`` follows ``CURRENT`` when the version it read vanishes under a concurrent prune."""

_QUESTION_DECODER = msgspec.json.Decoder(Question)
_MODELS_DECODER = msgspec.json.Decoder(tuple[ModelInfo, ...])
_MANIFEST_DECODER = msgspec.json.Decoder(Manifest)
_SCORER_DECODER = msgspec.json.Decoder(FittedScorer)

_NPY_HEADER_LOCK = threading.Lock()
"""One ``np.load`` at a time: it parses the header with ``ast.literal_eval``, and CPython 3.11 can fail two
parses running in threads at once ("SystemError: AST constructor recursion depth mismatch"), seen when a
server's index retraining opened the bank while a request's reload did."""

Fill = atomic.Fill
VerifyProgress = Callable[[int, int], None]
"""``progress(done, total)``: how far ``Bank.verify`` is, in bytes."""


@dataclasses.dataclass(frozen=True)
class _QuestionsFile:
    """Where a version's questions are: after the ``parsed`` ones, bytes ``start`` to ``end`` (None: the end of
    the file) of ``path``, held open as ``fd`` so that a prune cannot take them away."""

    path: Path
    fd: int
    start: int = 0
    end: int | None = None
    parsed: tuple[Question, ...] = ()


class Bank:
    """One immutable version of a bank: memory-mapped arrays plus the records that label their rows.

    Obtain one with ``Bank.open`` or ``Bank.create``. Reading is lock-free and the snapshot never
    changes; every write method returns a *new* ``Bank`` for the version it committed and leaves this
    one (and the files behind it) untouched.
    """

    path: Path
    version: str
    manifest: Manifest
    embeddings: np.ndarray
    models: tuple[ModelInfo, ...]
    index: ivf.IVFIndex | None
    scorer: FittedScorer | None
    """What ``smcs bank fit`` learned, carried over by later writes (see ``scorer_stale``); None when unfitted."""

    def __init__(
        self,
        path: Path,
        version: str,
        manifest: Manifest,
        embeddings: np.ndarray,
        capability: np.ndarray | Callable[[], np.ndarray],
        models: tuple[ModelInfo, ...],
        questions: _QuestionsFile,
        index: ivf.IVFIndex | None = None,
        scorer: FittedScorer | None = None,
    ) -> None:
        """Assemble a snapshot from parts already read and checked; use ``open`` or ``create`` instead.
        ``capability`` may be a function computing it, called once on first use."""
        self.path = path
        self.version = version
        self.manifest = manifest
        self.embeddings = embeddings
        self._capability = capability if isinstance(capability, np.ndarray) else None
        self._capability_source = None if isinstance(capability, np.ndarray) else capability
        self._capability_lock = threading.Lock()
        self.models = models
        self.index = index
        self._model_index = {m.name: i for i, m in enumerate(models)}
        self.scorer = scorer
        self._questions: tuple[Question, ...] | None = None
        self._questions_lock = threading.Lock()
        self._questions_file = questions
        self._close_questions_fd = weakref.finalize(self, os.close, questions.fd)

    def __repr__(self) -> str:
        return f"Bank({str(self.path)!r}, {self.version}, N={self.n_questions}, R={self.n_models}, d={self.dim})"

    # ----------------------------------------------------------------------------------------- reading

    @property
    def capability(self) -> np.ndarray:
        """The R x N int8 outcomes (read-only): 1 correct, 0 wrong, -1 not evaluated. Schema 2 folds the
        outcome log into its base on first access (O(R·N), once)."""
        with self._capability_lock:
            if self._capability is None:
                assert self._capability_source is not None
                self._capability = self._capability_source()
                self._capability_source = None
            return self._capability

    @property
    def questions(self) -> tuple[Question, ...]:
        """The questions in row order, parsed from ``questions.jsonl`` on first access (O(N)), then cached."""
        with self._questions_lock:
            if self._questions is None:
                source = self._questions_file
                data = _pread_range(source.fd, source.start, source.end)
                self._questions = source.parsed + _decode_questions(data, source.path, self.n_questions - len(source.parsed))
                self._close_questions_fd()
            return self._questions

    @property
    def segments(self) -> Segments | None:
        """What this version holds of the bank's segments (schema 2); None for a schema 1 version."""
        return self.manifest.segments

    @property
    def model_names(self) -> tuple[str, ...]:
        """Model names in matrix-row order."""
        return tuple(self._model_index)

    @property
    def n_questions(self) -> int:
        """N, the number of bank questions (rows of ``embeddings``, columns of ``capability``)."""
        return self.manifest.n_questions

    @property
    def n_models(self) -> int:
        """R, the number of models (rows of ``capability``)."""
        return self.manifest.n_models

    @property
    def dim(self) -> int:
        """d, the embedding dimension."""
        return self.manifest.embedder.dim

    @property
    def scorer_stale(self) -> bool:
        """Whether the fitted scorer was fitted on other data (embeddings or outcomes) or other models than
        this version's; False when there is none."""
        fitted = self.scorer
        if fitted is None:
            return False
        return tuple(fitted.models) != self.model_names or any(
            fitted.data.get(file) != digest for file, digest in self.fitted_data().items()
        )

    def fitted_data(self) -> dict[str, str]:
        """The digests of the data a scorer fitted on this version depends on (its ``FittedScorer.data``): the
        SHA-256 of the embeddings and capability files (schema 1), their running digests (schema 2)."""
        seg = self.manifest.segments
        if seg is None:
            return {file: self.manifest.files[file] for file in FITTED_DATA}
        return {file: seg.digests[key] for file, key in zip(FITTED_DATA, segments.DIGESTS, strict=True)}

    def outcome_columns(self, known: Sequence[Mapping[str, int]], where: Callable[[int], str]) -> np.ndarray:
        """R × len(``known``) int8 outcomes of new questions in this bank's model order: column j holds
        ``known[j]`` (model name → 1 or 0), −1 elsewhere; ``BankError`` starting with ``where(j)`` when
        ``known[j]`` names a model the bank lacks."""
        outcomes = np.full((self.n_models, len(known)), -1, dtype=np.int8)
        for j, row in enumerate(known):
            for model, value in row.items():
                if model not in self._model_index:
                    raise BankError(f"{where(j)}: unknown model {model!r} (the bank's models: {', '.join(self.model_names)})")
                outcomes[self._model_index[model], j] = value
        return outcomes

    def outcome_row(self, known: Mapping[str, int], field: str) -> np.ndarray:
        """N int8 outcomes of a new model in this bank's question order: ``known`` (question id → 1 or 0)
        where given, −1 elsewhere; ``BankError`` naming ``field`` and the id when ``known`` names a question
        the bank lacks."""
        rows = {q.id: i for i, q in enumerate(self.questions)}
        outcomes = np.full(self.n_questions, -1, dtype=np.int8)
        for qid, value in known.items():
            if qid not in rows:
                raise BankError(f"{field} names unknown question id {qid!r}")
            outcomes[rows[qid]] = value
        return outcomes

    def model_index(self, name: str) -> int:
        """Row of model ``name`` in ``capability``; ``BankError`` naming the model if the bank lacks it."""
        try:
            return self._model_index[name]
        except KeyError:
            known = ", ".join(map(repr, self._model_index)) or "none"
            raise BankError(f"unknown model {name!r}; the bank's models are: {known}") from None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], version: str | None = None, *, verify: bool = False,
        progress: VerifyProgress | None = None,
    ) -> Bank:
        """Open the current version of the bank at ``path`` (or the committed ``version``), in O(1) of N.

        Reads ``CURRENT``, the manifest and ``models.json``, memory-maps the two ``.npy`` files and
        checks their shapes and dtypes against the manifest. It does not hash files or read the
        questions (see ``validate`` and ``questions``). A version newer than ``CURRENT`` was never
        committed and is refused.

        ``verify=True`` also checks the SHA-256 of every file of the version against its manifest
        (``verify``: one read of every file, O(N·d); ``progress`` is called as it goes), so that a
        damaged file is refused now, naming it, rather than routed over.
        """
        bank = cls._open(Path(path).absolute(), version)
        if verify:
            bank.verify(progress)
        return bank

    @classmethod
    def _open(cls, root: Path, version: str | None) -> Bank:
        if version is not None:
            _require_committed(root, version)
            return cls._load(root, version)
        name = _read_current(root)
        for _ in range(_OPEN_RETRIES):
            try:
                return cls._load(root, name)
            except BankFormatError:
                newer = _read_current(root)
                if newer == name:
                    raise
                name = newer  # a writer moved on and a prune removed what we read; follow it
        return cls._load(root, name)

    @staticmethod
    def require_creatable(path: str | os.PathLike[str]) -> None:
        """``BankError`` unless ``create`` could make a bank at ``path`` (absent, or a directory holding
        nothing but leftovers of a failed create): for callers with long work to do before creating."""
        root = Path(path)
        if root.is_dir():
            _require_empty(root)
        elif root.exists():
            raise BankError(f"path {root} is not a directory; a bank is created in a new or empty directory")

    @staticmethod
    def versions(path: str | os.PathLike[str]) -> list[str]:
        """Names of the committed versions of the bank at ``path``, oldest first (orphans excluded)."""
        root = Path(path)
        current = _version_number(_read_current(root))
        return [name for number, name in sorted(_version_dirs(root).items()) if number <= current]

    def is_current(self) -> bool:
        """Whether ``CURRENT`` still names this version (one small file read)."""
        return _read_current(self.path) == self.version

    def latest(self) -> Bank:
        """This bank if it is still current, else the current version (``refresh``)."""
        return self.refresh()

    def refresh(self) -> Bank:
        """The bank's current version, read incrementally from this one: this bank if it is still current.

        When both versions are in schema 2 and of one lineage, only what changed is read: the new version's
        manifest and model list, the outcome records logged since (folded into a copy of this version's
        capability matrix when it was computed), and the question lines appended since (parsed only when
        this version's questions were); the embeddings are mapped again over the same file, whose pages the
        process already holds. Otherwise (schema 1, a fold, another bank at the path) the current version
        is opened afresh, as ``Bank.open`` does."""
        name = _read_current(self.path)
        if name == self.version:
            return self
        try:
            return self._followed(name)
        except BankFormatError:
            return Bank.open(self.path)  # pruned meanwhile, or damaged: open says which

    def _followed(self, name: str) -> Bank:
        """Version ``name`` of this bank, read incrementally from this one where the layouts allow."""
        vdir = self.path / name
        manifest = _read_manifest(vdir / MANIFEST)
        old, new = self.segments, manifest.segments
        if old is None or new is None or new.lineage != old.lineage or new.questions < old.questions or new.embeddings < old.embeddings:
            return Bank._load(self.path, name)
        directory = self.path / segments.DIRECTORY
        shape = (manifest.n_models, manifest.n_questions)
        outcomes = segments.Outcomes(directory, new, shape)
        with self._capability_lock:
            previous = self._capability
        capability: np.ndarray | Callable[[], np.ndarray] = outcomes.matrix
        if previous is not None and (new.base, new.log) == (old.base, old.log) and new.log_bytes >= old.log_bytes:
            capability = functools.partial(outcomes.after, previous, old.log_bytes)
        with self._questions_lock:
            parsed = self._questions
        path = directory / segments.QUESTIONS
        questions = (
            _QuestionsFile(path, _open_questions(path), old.questions, new.questions, parsed)
            if parsed is not None
            else _QuestionsFile(path, _open_questions(path), 0, new.questions)
        )
        return Bank(
            self.path, name, manifest, segments.map_rows(directory / segments.EMBEDDINGS, manifest.n_questions, manifest.embedder.dim),
            capability, _read_models(vdir / MODELS, manifest.n_models), questions, _map_index(vdir, manifest),
            _read_scorer(vdir, manifest),
        )

    def verify(self, progress: VerifyProgress | None = None) -> None:
        """Check the SHA-256 of every file of this version (data, index, fitted scorer) against its
        manifest, and in schema 2 of its capability base and of every extent the journal lists for the
        segments' committed bytes; ``BankFormatError`` naming the first file that differs or is missing.

        One read of every file, O(N·d) (about a second per GiB on one core). ``progress(done, total)``,
        when given, is called with the bytes hashed so far and the bytes to hash, before the first read and
        after every 4 MiB."""
        vdir = self.path / self.version
        files = sorted(self.manifest.files.items())
        sizes = []
        for name, _ in files:
            try:
                sizes.append((vdir / name).stat().st_size)
            except FileNotFoundError:
                raise BankFormatError(f"{vdir / name} is missing") from None
        seg, directory = self.segments, self.path / segments.DIRECTORY
        total = sum(sizes) + (segments.verified_bytes(directory, seg) if seg is not None else 0)
        done = 0
        if progress is not None:
            progress(0, total)

        def hashed(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        for name, expected in files:
            actual = _sha256_of(vdir / name, hashed)
            if actual != expected:
                raise BankFormatError(f"{vdir / name} has SHA-256 {actual} but the manifest records {expected}")
        if seg is not None:
            segments.verify(directory, seg, hashed)

    def validate(self) -> None:
        """Check this version on disk completely; ``BankFormatError`` naming the file on the first fault.

        Verifies the SHA-256 of every data file against the manifest (``verify``), shapes and dtypes, that capability
        values are in {-1, 0, 1}, that every embedding row is finite with L2 norm within
        ``NORM_TOLERANCE`` of 1, that question ids and model names are unique, that the counts
        agree, and that an index holds every row once and its vectors are the rows in list order. Costs one read of every file (O(N·d)).
        """
        vdir = self.path / self.version
        self.verify()
        fresh = Bank._load(self.path, self.version)
        seg, directory = self.segments, self.path / segments.DIRECTORY
        _check_unit_rows(fresh.embeddings, vdir / EMBEDDINGS if seg is None else directory / segments.EMBEDDINGS)
        _check_capability_values(fresh.capability, vdir / CAPABILITY if seg is None else directory / seg.base)
        _check_unique_stored((q.id for q in fresh.questions), "question id", fresh._questions_file.path)
        _check_unique_stored((m.name for m in fresh.models), "model name", vdir / MODELS)
        if fresh.index is not None:
            try:
                ivf.check_covers(fresh.index, fresh.n_questions)
                ivf.check_vectors(fresh.index, fresh.embeddings)
            except ValueError as e:
                raise BankFormatError(f"{vdir}: the index: {e}") from None

    @classmethod
    def _load(cls, root: Path, name: str) -> Bank:
        """Open version ``name`` of ``root`` and check it against its manifest (no hashing, no questions)."""
        vdir = root / name
        if not vdir.is_dir():
            raise BankFormatError(f"{root / CURRENT} names {name} but {vdir} does not exist")
        manifest = _read_manifest(vdir / MANIFEST)
        models = _read_models(vdir / MODELS, manifest.n_models)
        index = _map_index(vdir, manifest)
        scorer = _read_scorer(vdir, manifest)
        seg = manifest.segments
        if seg is None:
            embeddings = _map_npy(vdir / EMBEDDINGS, np.float32, (manifest.n_questions, manifest.embedder.dim))
            capability: np.ndarray | Callable[[], np.ndarray] = _map_npy(
                vdir / CAPABILITY, np.int8, (manifest.n_models, manifest.n_questions)
            )
            questions = _QuestionsFile(vdir / QUESTIONS, _open_questions(vdir / QUESTIONS))
        else:
            directory = root / segments.DIRECTORY
            embeddings = segments.map_rows(directory / segments.EMBEDDINGS, manifest.n_questions, manifest.embedder.dim)
            capability = segments.Outcomes(directory, seg, (manifest.n_models, manifest.n_questions)).matrix
            path = directory / segments.QUESTIONS
            questions = _QuestionsFile(path, _open_questions(path), 0, seg.questions)
        return cls(root, name, manifest, embeddings, capability, models, questions, index, scorer)

    # ----------------------------------------------------------------------------------------- writing

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        embeddings: object,
        capability: object,
        questions: Iterable[Question],
        models: Iterable[ModelInfo],
        embedder: EmbedderInfo | None = None,
        provenance: Mapping[str, str] | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> Bank:
        """Create a new bank at ``path`` (a new or empty directory) and return its first version.

        ``embeddings`` is N x d (rows are L2-normalised on write), ``capability`` R x N integers in
        {-1, 0, 1}, ``questions`` N records in row order, ``models`` R records in row order. ``embedder``
        defaults to ``EmbedderInfo("unspecified", d)``; ``provenance`` (text to text) says how the bank
        was made, for the manifest of this and every later version. Empty banks (N = 0 with a d-column array, or
        R = 0) are allowed. ``schema_version`` picks the layout: 2, shared segments whose writes cost what
        they write (the default), or 1, full files in every version (what earlier releases wrote). Every
        input is checked before anything is written.
        """
        if schema_version not in SCHEMA_VERSIONS:
            raise BankError(f"schema_version must be one of {', '.join(map(str, SCHEMA_VERSIONS))}, got {schema_version!r}")
        rows = _unit_rows(embeddings)
        questions, models = tuple(questions), tuple(models)
        question_lines = _encode_questions(questions, n_rows=len(rows), taken=())
        _check_models(models)
        capability_values = _outcome_values(capability, (len(models), len(rows)), "capability", ("models", "questions"))
        embedder = _check_embedder(embedder, rows.shape[1])
        provenance = _check_provenance(provenance)
        root = Path(path).absolute()
        root.mkdir(parents=True, exist_ok=True)
        with atomic.exclusive_lock(root / LOCK):
            _require_empty(root)
            atomic.remove_scratch(root)
            fills = {MODELS: _bytes_fill(_encode_json(models))}
            seg = None
            if schema_version == 1:
                fills |= {
                    EMBEDDINGS: _npy_fill(np.float32, rows.shape, [rows]),
                    CAPABILITY: _npy_fill(np.int8, capability_values.shape, [capability_values]),
                    QUESTIONS: _bytes_fill(question_lines),
                }
            else:
                seg = _create_segments(root, {
                    segments.EMBEDDINGS: _raw_fill(np.float32, [rows]),
                    segments.QUESTIONS: _bytes_fill(question_lines),
                    segments.base_name(1): _npy_fill(np.int8, capability_values.shape, [capability_values]),
                }, capability_values.shape, None)
            return _write_version(root, _version_name(1), None, embedder, len(rows), len(models), fills, provenance, seg=seg)

    def append_questions(self, embeddings: object, questions: Iterable[Question], outcomes: object = None) -> Bank:
        """Append m questions (with their embeddings, m x d) to the latest version; return the new version.

        ``outcomes`` is R x m integers in {-1, 0, 1} for the bank's R models (default all -1, unknown).
        New rows are L2-normalised; ids must be new to the bank and unique within the call. Cost is O(m)
        on a schema 2 bank (its segments grow by the new rows, lines and known outcomes; a process parses the
        existing ids once, on its first write), plus O(N·d) when the bank has an IVF index (its files are
        rewritten); O(N) on a schema 1 bank (every file is copied into the new version).
        """
        rows = _unit_rows(embeddings)
        if len(rows) == 0:
            raise BankError("embeddings has no rows: there is nothing to append")
        questions = tuple(questions)
        question_lines = _encode_questions(questions, n_rows=len(rows), taken=())
        with _writing(self.path) as (base, number):
            if rows.shape[1] != base.dim:
                raise BankError(f"embeddings have dimension {rows.shape[1]} but the bank's dimension is {base.dim}")
            n, m = base.n_questions, len(rows)
            seg = base.segments
            _check_new_ids(questions, {q.id for q in base.questions} if seg is None else _question_rows(base))
            new = _outcome_values(outcomes, (base.n_models, m), "outcomes", ("models", "new questions"))
            fills: dict[str, Fill] = {}
            if seg is None:
                old = base.path / base.version
                fills = {
                    EMBEDDINGS: _npy_fill(np.float32, (n + m, base.dim), [base.embeddings, rows]),
                    CAPABILITY: _npy_fill(
                        np.int8, (base.n_models, n + m), [part for r in range(base.n_models) for part in (base.capability[r], new[r])]
                    ),
                    QUESTIONS: _copy_fill(old / QUESTIONS, question_lines),
                }
            else:
                appender = segments.Appender(self.path / segments.DIRECTORY, seg)
                rows_sha = appender.append(segments.EMBEDDINGS, rows.astype("<f4").tobytes())
                appender.append(segments.QUESTIONS, question_lines)
                known_models, known_rows = np.nonzero(new >= 0)
                log_sha = _append_outcomes(appender, seg, n + known_rows, known_models, new[known_models, known_rows])
                seg = appender.finish({
                    "embeddings": segments.chained(seg.digests["embeddings"], rows_sha),
                    "capability": segments.chained(seg.digests["capability"], "append", m, log_sha),
                })
            index = base.index.extend(rows) if base.index is not None else None
            rows_after = [base.embeddings, rows]
            return _commit(base, number, n + m, base.n_models, fills, index, base.scorer, rows_after, seg=seg)

    def record_outcomes(self, outcomes: Iterable[tuple[str, str, int]]) -> Bank:
        """Set capability entries of the latest version from (model name, question id, value) triples.

        Values are 1 (correct), 0 (wrong) or -1 (forget: not evaluated). Every model and question must
        already be in the bank, and a (model, question) pair may appear only once per call. Cost is O(m)
        on a schema 2 bank (the outcome log grows by 8 bytes per triple; a process parses the existing ids once,
        on its first write); O(N) on a schema 1 bank (the id index is built and the unchanged files copied).
        """
        items = list(outcomes)
        if not items:
            raise BankError("outcomes is empty: there is nothing to record")
        triples = [_outcome_triple(item, i) for i, item in enumerate(items)]
        with _writing(self.path) as (base, number):
            seg = base.segments
            columns = {q.id: j for j, q in enumerate(base.questions)} if seg is None else _question_rows(base)
            models, cols, values = _outcome_cells(base, triples, columns)
            fills: dict[str, Fill] = {}
            if seg is None:
                capability = np.array(base.capability)
                capability[models, cols] = values
                fills = {CAPABILITY: _npy_fill(np.int8, capability.shape, [capability])}
            else:
                appender = segments.Appender(self.path / segments.DIRECTORY, seg)
                log_sha = _append_outcomes(appender, seg, cols, models, values)
                seg = appender.finish(seg.digests | {"capability": segments.chained(seg.digests["capability"], "record", log_sha)})
            return _commit(base, number, base.n_questions, base.n_models, fills, base.index, base.scorer, seg=seg)

    def add_model(self, model: ModelInfo, outcomes: object = None) -> Bank:
        """Add ``model`` as a new last row of the latest version's capability matrix; return the new version.

        ``outcomes`` is N integers in {-1, 0, 1}, one per bank question in row order (default all -1).
        The name must be new to the bank. Cost is O(R) plus the known outcomes on a schema 2 bank (the model
        list is rewritten, the known outcomes logged); O(N) on a schema 1 bank (the unchanged files are copied).
        """
        _check_record(model, ModelInfo, "model")
        with _writing(self.path) as (base, number):
            if model.name in base._model_index:
                raise BankError(f"model.name {model.name!r} is already in the bank")
            row = _outcome_values(outcomes, (base.n_questions,), "outcomes", ("questions",))
            fills = {MODELS: _bytes_fill(_encode_json((*base.models, model)))}
            seg = base.segments
            if seg is None:
                fills[CAPABILITY] = _npy_fill(np.int8, (base.n_models + 1, base.n_questions), [base.capability, row])
            else:
                appender = segments.Appender(self.path / segments.DIRECTORY, seg)
                known = np.flatnonzero(row >= 0)
                log_sha = _append_outcomes(appender, seg, known, np.full(len(known), base.n_models), row[known])
                seg = appender.finish(seg.digests | {"capability": segments.chained(seg.digests["capability"], "model", model.name, log_sha)})
            return _commit(base, number, base.n_questions, base.n_models + 1, fills, base.index, base.scorer, seg=seg)

    def with_index(self, index: ivf.IVFIndex | None) -> Bank:
        """Commit the latest version's data unchanged with ``index`` (None: without an index); return it.

        ``index`` must have been built over this bank (``ivf.train(bank.embeddings)``), possibly over an
        earlier version: rows appended since are assigned to its lists here, so an index trained off the
        lock on a snapshot can be swapped in while the bank grows. Cost is O(N·d) (the index's files are
        written; a schema 1 bank also copies its data files).
        """
        with _writing(self.path) as (base, number):
            if index is not None:
                if index.dim != base.dim:
                    raise BankError(f"index has dimension {index.dim} but the bank's dimension is {base.dim}")
                if index.n_rows > base.n_questions:
                    raise BankError(f"index covers {index.n_rows} rows but the bank has only {base.n_questions}")
                index = index.extend(base.embeddings[index.n_rows :])
            return _commit(base, number, base.n_questions, base.n_models, {}, index, base.scorer, [base.embeddings], seg=base.segments)

    def with_scorer(self, fitted: FittedScorer | None) -> Bank:
        """Commit the latest version's data (and index) unchanged with ``fitted`` as its scorer (None: without
        one); return it. ``fitted`` may come from an earlier version: the new version then holds it stale
        (see ``scorer_stale``), and a later fit replaces it. Cost is O(1) of N on a schema 2 bank; O(N·d) on
        a schema 1 bank (the files are copied)."""
        if fitted is not None:
            _check_record(fitted, FittedScorer, "fitted")
        with _writing(self.path) as (base, number):
            return _commit(base, number, base.n_questions, base.n_models, {}, base.index, fitted, seg=base.segments)

    @property
    def needs_fold(self) -> bool:
        """Whether this version's outcome log has outgrown its capability base (schema 2): at least
        ``FOLD_MIN_LOG_BYTES`` and at least the base's R·N bytes. Folding then (``fold``) keeps the log an open
        reads at most about as large as the base, for an amortised O(1) per outcome recorded."""
        seg = self.segments
        return seg is not None and seg.log_bytes >= max(FOLD_MIN_LOG_BYTES, seg.base_models * seg.base_rows)

    def fold(self) -> Bank:
        """Compact the outcome log of the latest version (schema 2): its capability matrix becomes a new base
        with an empty log, committed as a new version with the same content; return it.

        The O(R·N) work (folding and writing the new base) happens off the writers' lock; under it, the
        records committed meanwhile are carried into the new log, so a fold holds writers up for one small
        write only, and readers not at all. The latest version is returned as it is when there is nothing to
        fold (an empty log, a schema 1 bank) or another fold committed first."""
        start = Bank.open(self.path)
        seg = start.segments
        if seg is None or seg.log_bytes == 0:
            return start
        directory = self.path / segments.DIRECTORY
        scratch = directory / f"{atomic.TEMP_PREFIX}fold-{os.getpid()}-{threading.get_ident()}.npy"
        matrix = start.capability
        try:
            sha = atomic.write_synced(scratch, _npy_fill(np.int8, matrix.shape, [matrix]))
            with _writing(self.path) as (base, number):
                now = base.segments
                if now is None or (now.base, now.log) != (seg.base, seg.log):
                    return base  # another fold committed first
                generation = max(segments.generations(directory)) + 1
                tail = segments.read_range(directory / now.log, seg.log_bytes, now.log_bytes)
                folded = msgspec.structs.replace(
                    now, base=segments.base_name(generation), base_models=start.n_models, base_rows=start.n_questions,
                    base_sha256=sha, log=segments.log_name(generation), log_bytes=0,
                )
                atomic.write_synced(directory / folded.log, _bytes_fill(b""))
                try:
                    os.rename(scratch, directory / folded.base)
                except FileNotFoundError:
                    raise BankError(f"a concurrent prune removed the fold's scratch file {scratch}; fold again") from None
                atomic.fsync_dir(directory)
                appender = segments.Appender(directory, folded)
                if tail:
                    appender.append(folded.log, tail)
                return _commit(base, number, base.n_questions, base.n_models, {}, base.index, base.scorer, seg=appender.finish(now.digests))
        finally:
            scratch.unlink(missing_ok=True)

    def migrate(self) -> Bank:
        """Convert the bank to schema 2 as a new version of the latest one's content; return it.

        Costs one O(N·d) copy of the latest version, under the writers' lock; its index and fitted scorer are
        carried over, and so is the freshness of the fit. Earlier versions stay readable until pruned. A bank
        already in schema 2 is returned as it is (its latest version)."""
        with _writing(self.path) as (base, number):
            if base.segments is not None:
                return base
            _require_no_segments_in_use(self.path)
            vdir = self.path / base.version
            seg = _create_segments(self.path, {
                segments.EMBEDDINGS: _raw_fill(np.float32, [base.embeddings]),
                segments.QUESTIONS: _copy_fill(vdir / QUESTIONS),
                segments.base_name(1): _copy_fill(vdir / CAPABILITY),
            }, (base.n_models, base.n_questions), {"embeddings": base.manifest.files[EMBEDDINGS], "capability": base.manifest.files[CAPABILITY]})
            return _commit(base, number, base.n_questions, base.n_models, {}, base.index, base.scorer, [base.embeddings], seg=seg)

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` (>= 1) committed versions; return the deleted names, oldest first.

        The current version is the newest committed one, so it is never deleted. Readers holding a
        deleted version keep working (their files stay alive until they let go of them). Scratch and
        orphans are cleared as by any writer, and so are the capability bases and outcome logs (schema 2)
        that no remaining version holds.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise BankError(f"keep must be an integer >= 1, got {keep!r}")
        with atomic.exclusive_lock(self.path / LOCK):
            _clear_leftovers(self.path)
            committed = Bank.versions(self.path)
            doomed, kept = committed[:-keep], committed[-keep:]
            for name in doomed:
                atomic.discard_dir(self.path / name)
            _remove_unused_segments(self.path, kept)
            return doomed


# ------------------------------------------------------------------------------------- layout helpers


def _version_name(number: int) -> str:
    """``v`` and the number, zero-padded to six digits (more when it grows past them)."""
    return f"v{number:06d}"


def _version_number(name: str) -> int | None:
    """The number of version name ``name``, or ``None`` if it is not a version name."""
    match = _VERSION_RE.fullmatch(name)
    return int(match.group(1)) if match else None


def _version_dirs(root: Path) -> dict[int, str]:
    """Every version directory in ``root`` (committed or orphan), by number."""
    found = {}
    for entry in root.iterdir():
        number = _version_number(entry.name)
        if number is not None and entry.is_dir():
            found[number] = entry.name
    return found


def _read_current(root: Path) -> str:
    """The version name in ``root/CURRENT``; ``BankFormatError`` if it is missing or malformed."""
    path = root / CURRENT
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing: {root} is not a bank") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BankFormatError(f"{path} cannot be read: {e}") from None
    name = text.removesuffix("\n")
    if _version_number(name) is None:
        raise BankFormatError(f"{path} holds {text!r}, not a version name such as 'v000001'")
    return name


def _require_committed(root: Path, version: str) -> None:
    """``BankError`` unless ``version`` is a committed version of ``root``."""
    if version not in Bank.versions(root):
        raise BankError(f"version {version!r} is not a committed version of {root}")


def _require_empty(root: Path) -> None:
    """``BankError`` unless ``root`` holds nothing but the lock and scratch (a fresh or failed create), or
    segments that a failed create left (nothing but segment files, and no ``CURRENT``)."""
    ignorable = {LOCK, CURRENT + ".tmp"}
    found = sorted(
        e.name for e in root.iterdir()
        if e.name not in ignorable and not e.name.startswith(atomic.TEMP_PREFIX) and not _left_by_a_create(root, e)
    )
    if found:
        raise BankError(
            f"path {root} is not empty (holds {', '.join(found)}); a bank is created in a new or empty directory"
        )


def _left_by_a_create(root: Path, entry: Path) -> bool:
    """Whether ``entry`` of ``root`` is the segments directory of a create that failed before its ``CURRENT``."""
    return (
        entry.name == segments.DIRECTORY and entry.is_dir() and not entry.is_symlink() and not (root / CURRENT).exists()
        and all(segments.is_segment_file(e.name) and e.is_file() for e in entry.iterdir())
    )


def _clear_leftovers(root: Path) -> int:
    """Delete scratch and orphan versions of ``root`` (under the lock); return the next version number.

    The number is one past the highest version directory seen, orphans included, so a name that a
    crashed writer published is not reused by the next one.
    """
    atomic.remove_scratch(root)
    current = _version_number(_read_current(root))
    found = _version_dirs(root)
    for number, name in found.items():
        if number > current:
            atomic.discard_dir(root / name)
    return max(found, default=0) + 1


@contextlib.contextmanager
def _writing(root: Path) -> Iterator[tuple[Bank, int]]:
    """Hold the writers' lock on ``root``; yield the latest version and the number the new one gets. When the
    write fails before it commits, what it appended to the segments is cut off again."""
    with atomic.exclusive_lock(root / LOCK):
        number = _clear_leftovers(root)
        base = Bank._load(root, _read_current(root))
        try:
            yield base, number
        except BaseException:
            if base.segments is not None and _read_current(root) == base.version:
                segments.cut(root / segments.DIRECTORY, base.segments)  # what the failed write appended goes
            raise


def _commit(
    base: Bank,
    number: int,
    n_questions: int,
    n_models: int,
    fills: dict[str, Fill],
    index: ivf.IVFIndex | None,
    scorer: FittedScorer | None,
    rows: Sequence[np.ndarray] = (),
    *,
    seg: Segments | None,
) -> Bank:
    """Write version ``number`` derived from ``base`` (same root and embedder) from the ``fills`` of the files
    that change, with ``index`` and fitted ``scorer`` (None: none), over the segments ``seg`` (None: schema 1),
    and make it current. Every other file of the new version is ``base``'s, unchanged: copied from a schema 1
    version, hard-linked from a schema 2 one (its files are immutable too, so the versions can share them).
    Another index is written with its list-ordered copy of ``rows``, the new version's embeddings as
    consecutive blocks, and another scorer as its JSON."""
    kept = [file for file in (DATA_FILES if seg is None else (MODELS,)) if file not in fills]
    if index is not None:
        if index is base.index:
            kept += ivf.FILES
        else:
            fills = fills | _index_fills(index, rows)
    if scorer is not None:
        if scorer is base.scorer:
            kept.append(SCORER)
        else:
            fills = fills | {SCORER: _bytes_fill(_encode_json(scorer))}
    links: dict[str, str] = {}
    if base.segments is None:
        fills = fills | _copied(base, kept)
    else:
        links = {file: base.manifest.files[file] for file in kept}
    return _write_version(
        base.path, _version_name(number), base.version, base.manifest.embedder, n_questions, n_models, fills,
        base.manifest.provenance, index, None if scorer is None else scorer.default, links=links, seg=seg,
    )


def _copied(base: Bank, files: Sequence[str]) -> dict[str, Fill]:
    """Fills copying ``files`` of ``base`` unchanged."""
    old = base.path / base.version
    return {file: _copy_fill(old / file) for file in files}


def _index_fills(index: ivf.IVFIndex, rows: Sequence[np.ndarray]) -> dict[str, Fill]:
    """Fills of ``index``'s files: its lists, and the list-ordered copy of ``rows`` (consecutive blocks)."""
    fills = {file: _npy_fill(array.dtype.type, array.shape, [array]) for file, array in index.list_arrays().items()}
    fills[ivf.VECTORS] = _npy_fill(np.float32, (index.n_rows, index.dim), _gathered(rows, index.rows))
    return fills


def _gathered(parts: Sequence[np.ndarray], order: np.ndarray) -> Iterator[np.ndarray]:
    """Blocks of the rows of ``parts`` (concatenated) taken in ``order``: row i of the result is row
    ``order[i]``; bounded memory, whatever the bank's size."""
    bounds = np.cumsum([0, *(len(part) for part in parts)])
    for start in range(0, len(order), _GATHER_ROWS):
        wanted = np.asarray(order[start : start + _GATHER_ROWS])
        block = np.empty((len(wanted), parts[0].shape[1]), dtype=np.float32)
        for part, low, high in zip(parts, bounds[:-1], bounds[1:], strict=True):
            mask = (wanted >= low) & (wanted < high)
            block[mask] = part[wanted[mask] - low]
        yield block


def _map_index(vdir: Path, manifest: Manifest) -> ivf.IVFIndex | None:
    """Memory-map the version's index when its manifest has one; ``BankFormatError`` naming a bad file."""
    info = manifest.index
    if info is None:
        return None
    if info.kind != INDEX_KIND:
        raise BankFormatError(f"{vdir / MANIFEST} has an index of kind {info.kind!r}; this code reads {INDEX_KIND!r}")
    dim, n = manifest.embedder.dim, manifest.n_questions
    centroids = _map_npy(vdir / ivf.CENTROIDS, np.float32, (info.nlist, dim))
    offsets = _map_npy(vdir / ivf.OFFSETS, np.int64, (info.nlist + 1,))
    rows = _map_npy(vdir / ivf.ROWS, np.int64, (n,))
    vectors = _map_npy(vdir / ivf.VECTORS, np.float32, (n, dim))
    try:
        return ivf.from_arrays(centroids, offsets, rows, vectors, info.trained_rows, info.seed)
    except ValueError as e:
        raise BankFormatError(f"{vdir}: {e}") from None


def _write_version(
    root: Path,
    name: str,
    parent: str | None,
    embedder: EmbedderInfo,
    n_questions: int,
    n_models: int,
    fills: dict[str, Fill],
    provenance: dict[str, str],
    index: ivf.IVFIndex | None = None,
    scorer: str | None = None,
    *,
    links: Mapping[str, str] | None = None,
    seg: Segments | None = None,
) -> Bank:
    """Write version ``name`` of ``root`` from ``fills``, make it current and return it opened; caller holds the lock.
    ``scorer`` names the default of the fitted scorer whose file is among ``fills`` or ``links`` (None: none
    is). ``links`` (file → its SHA-256) are hard-linked from the ``parent`` version. ``seg``: the segments
    a schema 2 version holds (None: schema 1).

    Order: every file into a scratch directory (each fsynced), the manifest with their hashes, fsync
    and rename the directory to its version name, fsync the bank directory, then replace ``CURRENT``.
    On failure the scratch, or the published but not yet current version, is removed and the error
    re-raised, so the bank is left as it was.
    """
    info = None
    if index is not None:  # its files are among ``fills``
        info = IndexInfo(kind=INDEX_KIND, nlist=index.nlist, trained_rows=index.trained_rows, seed=index.seed)
    scratch = atomic.make_temp_dir(root)
    try:
        hashes = {file: atomic.write_synced(scratch / file, fill) for file, fill in fills.items()}
        for file, digest in (links or {}).items():
            assert parent is not None
            _link_or_copy(root / parent / file, scratch / file)
            hashes[file] = digest
        manifest = Manifest(
            schema_version=1 if seg is None else 2,
            embedder=embedder,
            n_questions=n_questions,
            n_models=n_models,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            parent=parent,
            files=hashes,
            provenance=provenance,
            index=info,
            scorer=scorer,
            segments=seg,
        )
        atomic.write_synced(scratch / MANIFEST, _bytes_fill(_encode_json(manifest)))
        atomic.publish_dir(scratch, root / name)
        atomic.replace_synced(root / CURRENT, f"{name}\n".encode("ascii"))
    except BaseException:
        _undo_commit(root, scratch, name)
        raise
    return Bank._load(root, name)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link the file ``source`` as ``target``; copy it (fsynced) where the file system has no hard links."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise BankFormatError(f"{source} is missing") from None
    except OSError:
        atomic.write_synced(target, _copy_fill(source))


def _create_segments(root: Path, fills: Mapping[str, Fill], shape: tuple[int, int], digests: Mapping[str, str] | None) -> Segments:
    """Write the segments of a new schema 2 bank under ``root`` (``segments.create``), replacing what a failed
    create or migrate left there, and publish them; caller holds the lock."""
    scratch = atomic.make_temp_dir(root)
    try:
        seg = segments.create(scratch, fills, shape, digests)
        if (root / segments.DIRECTORY).exists():
            atomic.discard_dir(root / segments.DIRECTORY)
        atomic.publish_dir(scratch, root / segments.DIRECTORY)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return seg


def _schema2_versions(root: Path, names: Iterable[str]) -> list[Segments]:
    """The segments held by those of the versions ``names`` of ``root`` that are in schema 2."""
    held = []
    for name in names:
        seg = _read_manifest(root / name / MANIFEST).segments
        if seg is not None:
            held.append(seg)
    return held


def _require_no_segments_in_use(root: Path) -> None:
    """``BankFormatError`` when a committed version of ``root`` holds segments (a migrate must not replace them)."""
    if (root / segments.DIRECTORY).exists() and _schema2_versions(root, Bank.versions(root)):
        raise BankFormatError(f"{root / CURRENT} names a schema 1 version but earlier versions hold {root / segments.DIRECTORY}")


def _remove_unused_segments(root: Path, kept: Sequence[str]) -> None:
    """Delete the capability bases and outcome logs (and scratch) of ``root``'s segments that none of the
    versions ``kept`` holds; caller holds the lock."""
    directory = root / segments.DIRECTORY
    held = _schema2_versions(root, kept)
    if not held:
        return
    needed = {segments.EMBEDDINGS, segments.QUESTIONS, segments.JOURNAL} | {s.base for s in held} | {s.log for s in held}
    for entry in directory.iterdir():
        if entry.name not in needed and segments.is_segment_file(entry.name):
            entry.unlink()
    atomic.fsync_dir(directory)


def _undo_commit(root: Path, scratch: Path, name: str) -> None:
    """Remove what a failed ``_commit`` left: its scratch, and its version unless ``CURRENT`` names it."""
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        committed = (root / CURRENT).read_text(encoding="ascii") == f"{name}\n"
    except FileNotFoundError:
        committed = False
    if not committed:
        shutil.rmtree(root / name, ignore_errors=True)


# --------------------------------------------------------------------------------------- file readers


def _read_manifest(path: Path) -> Manifest:
    """Decode and sanity-check ``manifest.json``; ``BankFormatError`` naming it on any fault."""
    manifest: Manifest = _decoded(path, _MANIFEST_DECODER, "manifest")
    if manifest.schema_version not in SCHEMA_VERSIONS:
        readable = " and ".join(map(str, SCHEMA_VERSIONS))
        raise BankFormatError(f"{path} has schema_version {manifest.schema_version}; this code reads {readable}")
    if (manifest.schema_version == 1) != (manifest.segments is None):
        raise BankFormatError(f"{path}: schema_version {manifest.schema_version} {'has no' if manifest.segments is None else 'has'} segments")
    own = DATA_FILES if manifest.segments is None else (MODELS,)
    expected = sorted(own + (ivf.FILES if manifest.index is not None else ()) + ((SCORER,) if manifest.scorer is not None else ()))
    if sorted(manifest.files) != expected:
        raise BankFormatError(f"{path} lists files {sorted(manifest.files)}, expected {expected}")
    return manifest


def _read_scorer(vdir: Path, manifest: Manifest) -> FittedScorer | None:
    """Decode the version's ``scorer.json`` when its manifest names one; ``BankFormatError`` naming a bad file."""
    if manifest.scorer is None:
        return None
    path = vdir / SCORER
    fitted: FittedScorer = _decoded(path, _SCORER_DECODER, "fitted scorer")
    if fitted.default != manifest.scorer:
        raise BankFormatError(f"{path} picks scorer {fitted.default!r} but the manifest records {manifest.scorer!r}")
    return fitted


def _decoded(path: Path, decoder: msgspec.json.Decoder[Any], what: str) -> Any:
    """The JSON file ``path`` decoded (and validated) by ``decoder``; ``BankFormatError`` naming the file,
    as ``what``, when it is missing or invalid."""
    try:
        return decoder.decode(path.read_bytes())
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    except (OSError, msgspec.DecodeError) as e:
        raise BankFormatError(f"{path} is not a valid {what}: {e}") from None


def _read_models(path: Path, n_models: int) -> tuple[ModelInfo, ...]:
    """Decode ``models.json`` and check it lists ``n_models`` models."""
    try:
        models = _MODELS_DECODER.decode(path.read_bytes())
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    except (OSError, msgspec.DecodeError) as e:
        raise BankFormatError(f"{path} is not a valid model list: {e}") from None
    if len(models) != n_models:
        raise BankFormatError(f"{path} lists {len(models)} models but the manifest says {n_models}")
    return models


def _map_npy(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map the ``.npy`` file ``path`` read-only and check its dtype, shape and C order."""
    try:
        with _NPY_HEADER_LOCK:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    except Exception as e:  # a damaged header fails in numpy's parser in many ways (ValueError, TokenError, …)
        raise BankFormatError(f"{path} is not a readable .npy file: {type(e).__name__}: {e}") from None
    if array.dtype != np.dtype(dtype) or array.shape != shape or not array.flags.c_contiguous:
        raise BankFormatError(
            f"{path} holds {array.dtype} {array.shape}, expected C-ordered {np.dtype(dtype)} {shape} per the manifest"
        )
    return array


def _open_questions(path: Path) -> int:
    """A read-only descriptor of the questions file ``path``; ``BankFormatError`` when it is missing."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None


def _pread_range(fd: int, start: int, end: int | None) -> bytes:
    """Bytes ``start`` to ``end`` (None: the end) of the open file ``fd``, by positional reads (safe to share
    the fd across threads)."""
    chunks, offset = [], start
    while end is None or offset < end:
        chunk = os.pread(fd, _CHUNK_BYTES if end is None else min(_CHUNK_BYTES, end - offset), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _decode_questions(data: bytes, path: Path, n_questions: int) -> tuple[Question, ...]:
    """Parse ``questions.jsonl`` content; ``BankFormatError`` naming the file and line on any fault."""
    questions = []
    for lineno, line in enumerate(data.splitlines(), start=1):
        try:
            questions.append(_QUESTION_DECODER.decode(line))
        except msgspec.DecodeError as e:
            raise BankFormatError(f"{path} line {lineno} is not a valid question: {e}") from None
    if len(questions) != n_questions:
        raise BankFormatError(f"{path} holds {len(questions)} questions but the manifest says {n_questions}")
    return tuple(questions)


def _sha256_of(path: Path, progress: Callable[[int], None]) -> str:
    """SHA-256 (hex) of the file ``path``, streamed; ``progress(bytes)`` with the size of every chunk hashed."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256()
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
                progress(len(chunk))
            return digest.hexdigest()
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None


def _check_unit_rows(embeddings: np.ndarray, path: Path) -> None:
    """``BankFormatError`` unless every stored row is finite with L2 norm within ``NORM_TOLERANCE`` of 1."""
    step = max(1, _CHUNK_BYTES // max(1, embeddings.shape[1] * 4))
    for start in range(0, len(embeddings), step):
        block = np.asarray(embeddings[start : start + step], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            raise BankFormatError(f"{path} row {start + int(np.argmin(finite))} is not finite")
        off = np.abs(np.sqrt(np.einsum("ij,ij->i", block, block)) - 1.0) > NORM_TOLERANCE
        if off.any():
            raise BankFormatError(f"{path} row {start + int(np.argmax(off))} is not unit-norm")


def _check_capability_values(capability: np.ndarray, path: Path) -> None:
    """``BankFormatError`` unless every stored capability entry is -1, 0 or 1."""
    bad = np.argwhere((capability < -1) | (capability > 1))
    if bad.size:
        r, j = (int(i) for i in bad[0])
        raise BankFormatError(f"{path} entry [{r}, {j}] is {int(capability[r, j])}, not one of -1, 0, 1")


def _check_unique_stored(keys: Iterable[str], what: str, path: Path) -> None:
    """``BankFormatError`` naming the first repeated key."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise BankFormatError(f"{path} repeats {what} {key!r}")
        seen.add(key)


# ------------------------------------------------------------------------------------ input checking


def _unit_rows(embeddings: object) -> np.ndarray:
    """Check ``embeddings`` (2-D, real, finite, no zero row) and return its rows L2-normalised, float32.

    Normalises in float64 blocks, each row scaled by its largest magnitude first so that neither tiny
    nor huge rows lose precision or overflow.
    """
    array = _as_array(embeddings, "embeddings")
    if array.ndim != 2:
        raise BankError(f"embeddings must be a 2-D array (questions x dim), got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise BankError(f"embeddings must hold real numbers, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise BankError("embeddings must have at least one column")
    out = np.empty(array.shape, dtype=np.float32)
    step = max(1, _CHUNK_BYTES // (array.shape[1] * 8))
    for start in range(0, len(array), step):
        out[start : start + step] = _normalised_block(array[start : start + step], start)
    return out


def _as_array(values: object, field: str) -> np.ndarray:
    """``values`` as a numpy array; ``BankError`` naming ``field`` if it is ragged."""
    try:
        return np.asarray(values)
    except ValueError:
        raise BankError(f"{field} is not a rectangular array") from None


def _normalised_block(block: np.ndarray, first_row: int) -> np.ndarray:
    """Rows of ``block`` scaled to unit L2 norm (float64); ``BankError`` naming a non-finite or zero row."""
    rows = block.astype(np.float64)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        raise BankError(f"embeddings row {first_row + int(np.argmin(finite))} is not finite")
    scale = np.abs(rows).max(axis=1)
    if (scale == 0).any():
        raise BankError(f"embeddings row {first_row + int(np.argmin(scale))} is a zero vector")
    rows /= scale[:, None]
    rows /= np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    return rows


def _check_record(record: object, kind: type[msgspec.Struct], field: str) -> bytes:
    """Encode ``record`` as JSON and decode it back as ``kind``, so it is known to read back; return the JSON.

    msgspec does not check field types at construction, so the round trip is what catches a wrong type
    or a broken constraint; the ``BankError`` names ``field`` and the path inside the record.
    """
    if not isinstance(record, kind):
        raise BankError(f"{field} is a {type(record).__name__}, not a {kind.__name__}")
    try:
        data = msgspec.json.encode(record)
        msgspec.json.decode(data, type=kind)
    except (TypeError, msgspec.MsgspecError) as e:
        raise BankError(f"{field}: {e}") from None
    return data


def _encode_questions(questions: Sequence[Question], *, n_rows: int, taken: Container[str]) -> bytes:
    """Check ``questions`` (one per embedding row, valid, ids unique and not in ``taken``); return the JSONL."""
    if len(questions) != n_rows:
        raise BankError(f"questions has {len(questions)} entries but embeddings has {n_rows} rows")
    lines = [_check_record(q, Question, f"questions[{i}]") + b"\n" for i, q in enumerate(questions)]
    _check_new_ids(questions, taken)
    return b"".join(lines)


def _check_new_ids(questions: Sequence[Question], taken: Container[str]) -> None:
    """``BankError`` naming the first question id repeated within ``questions`` or already in ``taken``."""
    seen: set[str] = set()
    for i, q in enumerate(questions):
        if q.id in seen:
            raise BankError(f"questions[{i}].id {q.id!r} is a duplicate")
        if q.id in taken:
            raise BankError(f"questions[{i}].id {q.id!r} is already in the bank")
        seen.add(q.id)


def _check_models(models: Sequence[ModelInfo]) -> None:
    """``BankError`` naming the first invalid model record or repeated model name."""
    seen: set[str] = set()
    for i, model in enumerate(models):
        _check_record(model, ModelInfo, f"models[{i}]")
        if model.name in seen:
            raise BankError(f"models[{i}].name {model.name!r} is a duplicate")
        seen.add(model.name)


def _check_embedder(embedder: EmbedderInfo | None, dim: int) -> EmbedderInfo:
    """The embedder record for ``dim``-dimensional rows: ``embedder`` checked, or the unspecified default."""
    if embedder is None:
        return EmbedderInfo("unspecified", dim)
    _check_record(embedder, EmbedderInfo, "embedder")
    if embedder.dim != dim:
        raise BankError(f"embedder.dim {embedder.dim} does not match the embeddings' dimension {dim}")
    return embedder


def _check_provenance(provenance: Mapping[str, str] | None) -> dict[str, str]:
    """``provenance`` as a plain dict; ``BankError`` unless every key and value is a string."""
    items = dict(provenance or {})
    for key, value in items.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BankError(f"provenance must map strings to strings, got {key!r}: {value!r}")
    return items


def _outcome_values(values: object, shape: tuple[int, ...], field: str, axes: tuple[str, ...]) -> np.ndarray:
    """Check ``values`` (shape ``shape``, integers in {-1, 0, 1}) and return them as int8.

    ``None`` means all -1 (not evaluated). ``axes`` names what each axis counts, for the messages.
    """
    if values is None:
        return np.full(shape, -1, dtype=np.int8)
    array = _as_array(values, field)
    if array.ndim != len(shape):
        raise BankError(f"{field} must be {len(shape)}-D ({' x '.join(axes)}), got shape {array.shape}")
    for axis, (got, want, noun) in enumerate(zip(array.shape, shape, axes, strict=True)):
        if got != want:
            unit = ("rows", "columns")[axis] if len(shape) == 2 else "entries"
            raise BankError(f"{field} has {got} {unit} but there are {want} {noun}")
    if array.size and array.dtype.kind not in "iub":
        raise BankError(f"{field} must hold integers -1, 0, 1, got dtype {array.dtype}")
    bad = np.argwhere((array < -1) | (array > 1))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise BankError(f"{field}[{', '.join(map(str, index))}] is {array[index]}; allowed values are -1, 0, 1")
    return array.astype(np.int8)


def _outcome_triple(item: object, i: int) -> tuple[Any, Any, int]:
    """Unpack ``outcomes[i]`` as (model name, question id, value), checking the value is -1, 0 or 1."""
    try:
        model, question_id, value = item  # type: ignore[misc]
    except (TypeError, ValueError):
        raise BankError(f"outcomes[{i}] must be a (model name, question id, value) triple, got {item!r}") from None
    if not isinstance(value, (int, np.integer)) or value not in (-1, 0, 1):
        raise BankError(f"outcomes[{i}] value {value!r} is not one of -1, 0, 1")
    return model, question_id, int(value)


def _outcome_cells(
    base: Bank, triples: Sequence[tuple[Any, Any, int]], columns: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cells (model rows, question columns, values) that ``triples`` set in ``base``, given its question
    id → column map; ``BankError`` naming an unknown or repeated pair."""
    cells: dict[tuple[int, int], int] = {}
    for i, (model, question_id, value) in enumerate(triples):
        if model not in base._model_index:
            raise BankError(f"outcomes[{i}] names unknown model {model!r}")
        if question_id not in columns:
            raise BankError(f"outcomes[{i}] names unknown question id {question_id!r}")
        cell = (base._model_index[model], columns[question_id])
        if cell in cells:
            raise BankError(f"outcomes[{i}] repeats ({model!r}, {question_id!r})")
        cells[cell] = value
    models, cols = (np.array(axis, dtype=np.int64) for axis in zip(*cells)) if cells else (np.empty(0, np.int64),) * 2
    return models, cols, np.fromiter(cells.values(), dtype=np.int8, count=len(cells))


def _question_rows(base: Bank) -> dict[str, int]:
    """Question id → row of the schema 2 version ``base`` (O(what was appended since this process last asked))."""
    assert base.segments is not None
    return segments.question_rows(base.path / segments.DIRECTORY, base.segments)


def _append_outcomes(appender: segments.Appender, seg: Segments, rows: np.ndarray, models: np.ndarray, values: np.ndarray) -> str:
    """Log the outcomes ``capability[models[i], rows[i]] = values[i]``; the SHA-256 of the extent ("" for none)."""
    if not len(rows):
        return ""
    return appender.append(seg.log, segments.encode_records(rows, models, values))


# --------------------------------------------------------------------------------------- file writers


def _encode_json(value: object) -> bytes:
    """``value`` as indented JSON (the small, human-read files: manifest and model list)."""
    return msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n"


def _bytes_fill(data: bytes) -> Fill:
    """A fill writing ``data``."""

    def fill(out: atomic.HashingWriter) -> None:
        out.write(data)

    return fill


def _copy_fill(source: Path, tail: bytes = b"") -> Fill:
    """A fill copying the file ``source`` and then writing ``tail``."""

    def fill(out: atomic.HashingWriter) -> None:
        with open(source, "rb") as f:
            shutil.copyfileobj(f, out, _CHUNK_BYTES)
        out.write(tail)

    return fill


def _npy_fill(dtype: type, shape: tuple[int, ...], blocks: Iterable[np.ndarray]) -> Fill:
    """A fill writing an ``.npy`` of ``dtype`` and ``shape`` whose C-order data is ``blocks`` concatenated.

    Streams block by block (memory-mapped blocks are never loaded whole), so appending to a large bank
    costs one sequential copy rather than a concatenated array in memory.
    """
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype).newbyteorder("<"))
    header = {"descr": descr, "fortran_order": False, "shape": tuple(int(n) for n in shape)}

    raw = _raw_fill(dtype, blocks)

    def fill(out: atomic.HashingWriter) -> None:
        np.lib.format.write_array_header_1_0(out, header)
        raw(out)

    return fill


def _raw_fill(dtype: type, blocks: Iterable[np.ndarray]) -> Fill:
    """A fill writing the C-order data of ``blocks`` concatenated, as little-endian ``dtype``, headerless;
    block by block, in bounded chunks."""
    little = np.dtype(dtype).newbyteorder("<")

    def fill(out: atomic.HashingWriter) -> None:
        for block in blocks:
            flat = np.ascontiguousarray(block, dtype=little).reshape(-1)
            step = max(1, _CHUNK_BYTES // flat.itemsize)
            for start in range(0, len(flat), step):
                out.write(flat[start : start + step].tobytes())

    return fill
