"""Schema 2 of the bank: shared append-only segment files, of which every version holds a committed prefix.

::

    <bank>/segments/
      embeddings.f32          raw little-endian float32 rows, d values per row, append-only
      questions.jsonl         one Question per line in row order, append-only
      capability-000001.npy   a capability base: int8 R_b x N_b, written whole by create, migrate or a fold
      outcomes-000001.log     the outcome log over that base: 8-byte records (row, model, value), append-only
      journal.jsonl           one ``Extent`` per line: every extent a write appended, with its SHA-256

A version's manifest records, in ``Segments``, how many bytes of each file it holds. Bytes below a committed
length are never written again, so each version stays an immutable snapshot while later versions grow the
same files: a write costs what it appends, and a reader that holds a version learns what changed since by
comparing lengths. The capability matrix of a version is its base, widened with -1 (unknown) to R x N, with
the log's records applied in order (the last record of a cell wins).

A writer, under the bank's lock, first cuts off whatever a crashed writer appended past the committed ends
(``Appender``), then appends its extents and flushes them (``fdatasync``), then the journal lines naming
them; only then does the store publish the version that commits the new lengths. Readers never look past
the lengths of the version they hold, so a crash at any point leaves every committed version intact.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
import numpy as np

from . import atomic
from .errors import BankFormatError
from .schema import Segments

DIRECTORY = "segments"
"""The bank's subdirectory holding the segment files."""
EMBEDDINGS = "embeddings.f32"
QUESTIONS = "questions.jsonl"
JOURNAL = "journal.jsonl"
RECORD = np.dtype([("row", "<i4"), ("model", "<i2"), ("value", "i1"), ("pad", "i1")])
"""One outcome: ``capability[model, row] = value`` (value in {-1, 0, 1}; ``pad`` is 0)."""
DIGESTS = ("embeddings", "capability")
"""The running digests of a version (``Segments.digests``)."""

_BASE_RE = re.compile(r"capability-(\d{6,})\.npy")
_LOG_RE = re.compile(r"outcomes-(\d{6,})\.log")
_CHUNK_BYTES = 1 << 22


class Extent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of ``journal.jsonl``: ``length`` bytes appended to ``file`` at ``offset``, with their SHA-256."""

    file: str
    offset: int
    length: int
    sha256: str


_EXTENT_DECODER = msgspec.json.Decoder(Extent)


class _Id(msgspec.Struct):
    id: str


_ID_DECODER = msgspec.json.Decoder(_Id)
"""Decodes only the id of a question line (the other fields are skipped, not checked)."""


def base_name(generation: int) -> str:
    """The file name of capability base number ``generation``."""
    return f"capability-{generation:06d}.npy"


def log_name(generation: int) -> str:
    """The file name of the outcome log over base number ``generation``."""
    return f"outcomes-{generation:06d}.log"


def generations(directory: Path) -> list[int]:
    """The numbers of every capability base and outcome log in ``directory``, sorted (with repeats)."""
    found = []
    for entry in directory.iterdir():
        match = _BASE_RE.fullmatch(entry.name) or _LOG_RE.fullmatch(entry.name)
        if match:
            found.append(int(match.group(1)))
    return sorted(found)


def is_segment_file(name: str) -> bool:
    """Whether ``name`` is a file this layout writes into ``segments/`` (scratch included)."""
    return (
        name in (EMBEDDINGS, QUESTIONS, JOURNAL)
        or name.startswith(atomic.TEMP_PREFIX)
        or bool(_BASE_RE.fullmatch(name) or _LOG_RE.fullmatch(name))
    )


def chained(digest: str, *parts: object) -> str:
    """The next link of a running digest: SHA-256 of ``digest`` and ``parts``, joined by ``|``."""
    return hashlib.sha256("|".join([digest, *map(str, parts)]).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ reading


def read_range(path: Path, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` of the file ``path``; ``BankFormatError`` naming it when it is missing or
    shorter than ``end`` (the manifest committed more than the file holds)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    try:
        return read_at(fd, start, end, path)
    finally:
        os.close(fd)


def read_at(fd: int, start: int, end: int, path: Path) -> bytes:
    """Bytes ``start`` to ``end`` of the open file ``fd`` (at ``path``, for the message when it is shorter)."""
    data = os.pread(fd, end - start, start) if end > start else b""
    if len(data) != end - start:
        raise BankFormatError(f"{path} holds {start + len(data)} bytes but the manifest commits {end}")
    return data


def map_rows(path: Path, n: int, dim: int) -> np.ndarray:
    """The first ``n`` rows of the embeddings segment ``path``, memory-mapped read-only as float32 (n, dim)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    if size < n * dim * 4:
        raise BankFormatError(f"{path} holds {size} bytes but the manifest commits {n} rows of {dim} float32")
    if n == 0:
        rows = np.empty((0, dim), dtype=np.float32)
        rows.flags.writeable = False
        return rows
    return np.memmap(path, dtype="<f4", mode="r", shape=(n, dim))


def map_base(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The capability base ``path``, memory-mapped read-only; ``BankFormatError`` unless it is int8 ``shape``."""
    try:
        base = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    except Exception as e:  # a damaged header fails in numpy's parser in many ways
        raise BankFormatError(f"{path} is not a readable .npy file: {type(e).__name__}: {e}") from None
    if base.dtype != np.int8 or base.shape != shape or not base.flags.c_contiguous:
        raise BankFormatError(f"{path} holds {base.dtype} {base.shape}, expected C-ordered int8 {shape} per the manifest")
    return base




def apply_records(capability: np.ndarray, records: np.ndarray, path: Path) -> None:
    """Set ``capability[model, row] = value`` for each record, the last record of a cell winning;
    ``BankFormatError`` naming the log ``path`` for a record outside the matrix or a value not in {-1, 0, 1}."""
    if not len(records):
        return
    rows, models, values = (records[f].astype(np.int64) for f in ("row", "model", "value"))
    bad = (rows < 0) | (rows >= capability.shape[1]) | (models < 0) | (models >= capability.shape[0])
    bad |= (values < -1) | (values > 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise BankFormatError(f"{path} record {i} (row {rows[i]}, model {models[i]}, value {values[i]}) is not a valid outcome")
    cells = models * capability.shape[1] + rows
    _, last_reversed = np.unique(cells[::-1], return_index=True)
    last = len(cells) - 1 - last_reversed
    capability[models[last], rows[last]] = values[last]


class Outcomes:
    """A version's capability matrix in parts: its base, memory-mapped, and its outcome log, held open (so a
    prune cannot take either away) until ``matrix`` folds them."""

    def __init__(self, directory: Path, seg: Segments, shape: tuple[int, int]) -> None:
        if seg.base_models > shape[0] or seg.base_rows > shape[1]:
            raise BankFormatError(f"{directory / seg.base}: the manifest's base is larger than the matrix {shape}")
        if seg.log_bytes % RECORD.itemsize:
            raise BankFormatError(f"{directory / seg.log}: the manifest commits {seg.log_bytes} bytes, not whole records")
        self.seg, self.shape = seg, shape
        self.base = map_base(directory / seg.base, (seg.base_models, seg.base_rows))
        self.log = directory / seg.log
        try:
            self._fd = os.open(self.log, os.O_RDONLY)
        except FileNotFoundError:
            raise BankFormatError(f"{self.log} is missing") from None
        weakref.finalize(self, os.close, self._fd)

    def records(self, start: int = 0) -> np.ndarray:
        """The log's records from byte ``start`` to the version's committed end."""
        return np.frombuffer(read_at(self._fd, start, self.seg.log_bytes, self.log), dtype=RECORD)

    def matrix(self) -> np.ndarray:
        """The read-only matrix: the base's memory map itself when the log is empty and the shapes agree
        (O(1)); otherwise the base widened with -1 and the log applied (O(R·N + log))."""
        if self.seg.log_bytes == 0 and self.base.shape == self.shape:
            return self.base
        return grown(self.base, self.shape, self.records(), self.log)

    def after(self, previous: np.ndarray, previous_log_bytes: int) -> np.ndarray:
        """The matrix from ``previous``, the matrix of an earlier version over the same base and log, and the
        records appended since its ``previous_log_bytes``: O(R·N) copying, O(new records) reading."""
        return grown(previous, self.shape, self.records(previous_log_bytes), self.log)


def grown(previous: np.ndarray, shape: tuple[int, int], records: np.ndarray, log: Path) -> np.ndarray:
    """A new read-only ``shape`` matrix: ``previous`` in its top-left corner, -1 elsewhere, ``records`` applied."""
    out = np.full(shape, -1, dtype=np.int8)
    out[: previous.shape[0], : previous.shape[1]] = previous
    apply_records(out, records, log)
    out.flags.writeable = False
    return out


def journal(directory: Path, seg: Segments) -> list[Extent]:
    """The extents journalled up to this version (the committed prefix of ``journal.jsonl``)."""
    path = directory / JOURNAL
    extents = []
    for lineno, line in enumerate(read_range(path, 0, seg.journal).splitlines(), start=1):
        try:
            extents.append(_EXTENT_DECODER.decode(line))
        except msgspec.DecodeError as e:
            raise BankFormatError(f"{path} line {lineno} is not a valid extent: {e}") from None
    return extents


def committed(seg: Segments) -> dict[str, int]:
    """The committed length of each journalled segment of a version."""
    return {EMBEDDINGS: seg.embeddings, QUESTIONS: seg.questions, seg.log: seg.log_bytes}


def verify(directory: Path, seg: Segments, progress: Callable[[int], None]) -> None:
    """Check the SHA-256 of the base and of every journalled extent of a version, and that the extents of each
    segment cover its committed bytes exactly; ``BankFormatError`` naming the first file that differs.
    ``progress(bytes)`` is called after each chunk hashed."""
    actual = _sha256_range(directory / seg.base, 0, None, progress)
    if actual != seg.base_sha256:
        raise BankFormatError(f"{directory / seg.base} has SHA-256 {actual} but the manifest records {seg.base_sha256}")
    ends = committed(seg)
    covered = dict.fromkeys(ends, 0)
    for extent in journal(directory, seg):
        if extent.file not in ends:
            continue  # the log of an earlier base
        path = directory / extent.file
        if extent.offset != covered[extent.file]:
            raise BankFormatError(f"{directory / JOURNAL} has an extent of {extent.file} at {extent.offset}, expected {covered[extent.file]}")
        covered[extent.file] = end = extent.offset + extent.length
        actual = _sha256_range(path, extent.offset, end, progress)
        if actual != extent.sha256:
            raise BankFormatError(
                f"{path} has SHA-256 {actual} at bytes {extent.offset}..{end} but the journal records {extent.sha256}"
            )
    for file, end in ends.items():
        if covered[file] != end:
            raise BankFormatError(f"{directory / JOURNAL} covers {covered[file]} bytes of {file} but the manifest commits {end}")


def verified_bytes(directory: Path, seg: Segments) -> int:
    """How many bytes ``verify`` hashes."""
    try:
        base = (directory / seg.base).stat().st_size
    except FileNotFoundError:
        raise BankFormatError(f"{directory / seg.base} is missing") from None
    return base + sum(committed(seg).values())


def _sha256_range(path: Path, start: int, end: int | None, progress: Callable[[int], None]) -> str:
    """SHA-256 (hex) of bytes ``start`` to ``end`` (None: the end of the file) of ``path``, streamed."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            offset = start
            while end is None or offset < end:
                chunk = os.pread(f.fileno(), _CHUNK_BYTES if end is None else min(_CHUNK_BYTES, end - offset), offset)
                if not chunk:
                    break
                digest.update(chunk)
                offset += len(chunk)
                progress(len(chunk))
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- question ids

_ID_INDEXES: dict[tuple[str, int, int], tuple[int, dict[str, int]]] = {}
"""Per questions segment (the bank's lineage, device, inode): the bytes indexed so far and the id → row map
of those bytes."""
_ID_INDEXES_LOCK = threading.Lock()


def question_rows(directory: Path, seg: Segments) -> dict[str, int]:
    """Question id → row of the questions a version holds (the committed prefix of the questions segment).

    Kept per process and extended by the bytes committed since the last call, so a writer pays O(N) once and
    then O(what was appended). The map is shared: read it, never change it, and only under the bank's lock."""
    path = directory / QUESTIONS
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BankFormatError(f"{path} is missing") from None
    key = (seg.lineage, st.st_dev, st.st_ino)
    with _ID_INDEXES_LOCK:
        done, rows = _ID_INDEXES.get(key, (0, {}))
        if seg.questions < done:  # an older version than the one indexed: index it on its own
            return _indexed(path, 0, seg.questions, {})
        rows = _indexed(path, done, seg.questions, rows)
        _ID_INDEXES[key] = (seg.questions, rows)
        return rows


def _indexed(path: Path, start: int, end: int, rows: dict[str, int]) -> dict[str, int]:
    """``rows`` extended (in place) by the ids of the question lines in bytes ``start`` to ``end`` of ``path``;
    decoded first, so a bad line leaves ``rows`` as it was."""
    try:
        ids = [q.id for q in _ID_DECODER.decode_lines(read_range(path, start, end))]
    except msgspec.DecodeError as e:
        raise BankFormatError(f"{path} has a line that is not a valid question: {e}") from None
    rows.update(zip(ids, range(len(rows), len(rows) + len(ids))))
    return rows


# ------------------------------------------------------------------------------------------ writing


def create(directory: Path, fills: Mapping[str, atomic.Fill], shape: tuple[int, int], digests: Mapping[str, str] | None) -> Segments:
    """Write the segments of a new bank into the empty directory ``directory`` (scratch: the caller publishes it).

    ``fills`` write the embeddings, the questions and ``base_name(1)``, a capability base of ``shape``;
    the log starts empty. ``digests`` start the running digests (None: the embeddings' and the base's SHA-256).
    The bank gets a new random lineage."""
    hashes = {name: atomic.write_synced(directory / name, fill) for name, fill in fills.items()}
    base, log = base_name(1), log_name(1)
    atomic.write_synced(directory / log, lambda out: None)
    sizes = {name: (directory / name).stat().st_size for name in (EMBEDDINGS, QUESTIONS)}
    lines = b"".join(msgspec.json.encode(Extent(name, 0, sizes[name], hashes[name])) + b"\n" for name in sizes if sizes[name])
    atomic.write_synced(directory / JOURNAL, lambda out: out.write(lines))
    atomic.fsync_dir(directory)
    return Segments(
        embeddings=sizes[EMBEDDINGS], questions=sizes[QUESTIONS], journal=len(lines), base=base, base_models=shape[0],
        base_rows=shape[1], base_sha256=hashes[base], log=log, log_bytes=0, lineage=uuid.uuid4().hex,
        digests=dict(digests) if digests is not None else {"embeddings": hashes[EMBEDDINGS], "capability": hashes[base]},
    )


def encode_records(rows: np.ndarray, models: np.ndarray, values: np.ndarray) -> bytes:
    """The log bytes of outcomes ``capability[models[i], rows[i]] = values[i]``."""
    records = np.zeros(len(rows), dtype=RECORD)
    records["row"], records["model"], records["value"] = rows, models, values
    return records.tobytes()


def cut(directory: Path, seg: Segments) -> dict[str, int]:
    """Cut every appendable segment back to the version's committed length (what a crashed or failed writer
    appended past it goes); return those lengths, the journal's included. Caller holds the bank's lock."""
    ends = committed(seg) | {JOURNAL: seg.journal}
    for file, end in ends.items():
        path = directory / file
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BankFormatError(f"{path} is missing") from None
        if size > end:
            os.truncate(path, end)
    return ends


class Appender:
    """Appends extents past the committed ends of a version's segments; the caller holds the bank's lock.

    Creating one cuts every segment back to its committed length, dropping what a crashed writer left
    past it (no reader looks there). ``append`` writes and flushes one extent; ``finish`` journals them and
    returns the ``Segments`` that commit them, for the caller to publish in the next version's manifest.
    """

    def __init__(self, directory: Path, seg: Segments) -> None:
        self._directory = directory
        self._seg = seg
        self._ends = cut(directory, seg)
        self._extents: list[Extent] = []

    def append(self, file: str, data: bytes) -> str:
        """Append ``data`` to the segment ``file`` and flush it; return its SHA-256 (hex)."""
        offset = self._ends[file]
        _write_at(self._directory / file, data, offset)
        self._ends[file] = offset + len(data)
        sha = hashlib.sha256(data).hexdigest()
        self._extents.append(Extent(file, offset, len(data), sha))
        return sha

    def finish(self, digests: Mapping[str, str]) -> Segments:
        """Journal the extents appended (flushed) and return the segments of the version that holds them,
        with the running ``digests``."""
        lines = b"".join(msgspec.json.encode(extent) + b"\n" for extent in self._extents)
        if lines:
            _write_at(self._directory / JOURNAL, lines, self._ends[JOURNAL])
        seg = self._seg
        return msgspec.structs.replace(
            seg, embeddings=self._ends[EMBEDDINGS], questions=self._ends[QUESTIONS], journal=self._ends[JOURNAL] + len(lines),
            log_bytes=self._ends[seg.log], digests=dict(digests),
        )


def _write_at(path: Path, data: bytes, offset: int) -> None:
    """Write ``data`` into the existing file ``path`` at ``offset`` and flush it to disk."""
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fdatasync(fd)
    finally:
        os.close(fd)
