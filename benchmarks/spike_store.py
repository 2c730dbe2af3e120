"""The measured spike of issue 24: which bank store lets writes cost O(what they write)?

Run (not a pytest module: pytest collects only ``test_*.py``)::

    .venv/bin/python benchmarks/spike_store.py --sizes 1e4,1e5,1e6 --json results.json
    .venv/bin/python benchmarks/spike_store.py --report results.json --markdown   # the tables again

It needs ``pylance`` (``.venv/bin/pip install pylance``; deliberately not a dependency of smcs). The results
and the recommendation are in docs/storage.md. The stores below are built over the same synthetic bank (random unit rows, d = 384, R = 15, a third of the outcomes unknown)
and measured side by side, the designs interleaved within every repeat so that a shared machine's noise
falls on all of them alike:

* ``today``: ``smcs.bank.Bank`` as it is (every write is a new full version).
* ``segments`` (design B, prototyped here, not in smcs/; ``segments-nofsync`` is the same without its fsyncs,
  measured for its writes only): append-only files whose committed prefix each
  version's manifest records: ``embeddings.f32`` (raw float32 rows, preallocated capacity, so every
  process maps it once and keeps mapping it as it grows), ``questions.jsonl``, a capability base
  ``cap-<g>.npy`` plus an append-only outcome log ``outcomes-<g>.log`` (8-byte records row, model,
  value) that ``fold`` turns into a new base, and ``journal.jsonl`` (SHA-256 of every extent written).
  A write appends its extents, fdatasyncs them, writes ``manifests/v<n>.json`` and replaces ``CURRENT``.
* ``lance-cols`` (design A, outcomes as a column per model): one Lance dataset id, text, source, label,
  embedding (fixed-size list of float32) and one int8 column per model; a record is ``update`` (the row is
  deleted and rewritten into a new fragment), an added model an all-null column (metadata only).
* ``lance-out`` (design A, outcomes in their own dataset): the questions dataset is append-only; outcomes
  are ``(key = row << 16 | model, value)`` rows of a second dataset, upserted by ``merge_insert`` on a
  BTREE-indexed key; the model list is that dataset's schema metadata.

Measured per size: write time and bytes on disk (append 1 / 100, record 1 / 100, add a model), the open of a
fresh process with the bank's files evicted from the page cache, the memory of a second process opening
the same bank, incremental reload after one append (and after one record), route speed
(``smcs.kernels.route`` and ``Router.route``) on each design's matrices, compaction; and, once, the
SIGKILL experiment and a sustained run of single appends and records. Times are median [min-max].
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import hashlib
import json
import math
import mmap
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Compile the kernels into a cache of our own: the repository's kernels/__pycache__ is shared with whoever
# edits and tests the kernels meanwhile, and a cache entry built against another version of a module it
# inlines can crash the process.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "smcs-spike-numba-cache"))

import msgspec  # noqa: E402
import numpy as np  # noqa: E402

DIM = 384
MODELS = 15
N_BASE, GAMMA = 400, 0.95
UNKNOWN = -1
BUDGET_S = 300.0
"""A design whose measurements at one size pass this (writes and reads together) skips the rest there."""

# ------------------------------------------------------------------------------------------- helpers


def unit_rows(rng: np.random.Generator, m: int, d: int = DIM) -> np.ndarray:
    """m random L2-normalised float32 rows (generated in chunks to bound the float64 temporaries)."""
    out = np.empty((m, d), dtype=np.float32)
    for start in range(0, m, 65536):
        block = rng.standard_normal((min(65536, m - start), d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def model_names(r: int) -> list[str]:
    return [f"m{i}" for i in range(r)]


def question_line(qid: str) -> bytes:
    return json.dumps({"id": qid, "text": f"synthetic question {qid}", "source": "spike"}).encode() + b"\n"


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (st_blocks: what a write really costs, sparse holes excluded)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def evict(path: Path) -> None:
    """Drop ``path``'s files from the page cache (POSIX_FADV_DONTNEED after fsync; pages some process has
    mapped stay, which is what a replica whose reader maps the old data would see)."""
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def memory() -> dict[str, int]:
    """This process's resident memory (bytes): RSS, its anonymous and file-backed parts, and PSS."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    with contextlib.suppress(OSError), open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Pss", "Pss_Anon", "Pss_File"):
                out[key] = int(value.split()[0]) * 1024
    return out


def fsync_dir(path: Path, sync: bool = True) -> None:
    if not sync:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_synced(path: Path, data: bytes, sync: bool = True) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent, sync)


@contextlib.contextmanager
def flocked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def apply_records(cap: np.ndarray, rows: np.ndarray, models: np.ndarray, values: np.ndarray, *, unique: bool) -> None:
    """cap[models, rows] = values for the records inside cap; the last record of a cell wins unless
    ``unique`` says no cell repeats."""
    keep = (rows < cap.shape[1]) & (models < cap.shape[0])
    rows, models, values = rows[keep], models[keep], values[keep]
    if not len(rows):
        return
    if not unique:
        keys = models.astype(np.int64) * cap.shape[1] + rows
        _, first_reversed = np.unique(keys[::-1], return_index=True)
        last = len(keys) - 1 - first_reversed
        rows, models, values = rows[last], models[last], values[last]
    cap[models, rows] = values


# ------------------------------------------------------------------------------------- design: today


class Today:
    """``smcs.bank.Bank`` unchanged: every write is a new full version (the baseline)."""

    name = "today"

    @staticmethod
    def create(path: Path, emb: np.ndarray, cap: np.ndarray, ids: Sequence[str], models: Sequence[str]) -> None:
        from smcs.bank import Bank, ModelInfo, Question

        Bank.create(
            path, embeddings=emb, capability=cap, models=[ModelInfo(m) for m in models],
            questions=[Question(id=q, text=f"synthetic question {q}", source="spike") for q in ids],
        )

    class Writer:
        def __init__(self, path: Path) -> None:
            from smcs.bank import Bank

            self.bank = Bank.open(path)

        @property
        def n(self) -> int:
            return self.bank.n_questions

        @property
        def models(self) -> list[str]:
            return list(self.bank.model_names)

        def append(self, emb: np.ndarray, ids: Sequence[str], outcomes: np.ndarray) -> None:
            from smcs.bank import Question

            qs = [Question(id=q, text=f"synthetic question {q}", source="spike") for q in ids]
            self.bank = self.bank.append_questions(emb, qs, outcomes)

        def record(self, triples: Sequence[tuple[str, str, int]]) -> None:
            self.bank = self.bank.record_outcomes(triples)

        def add_model(self, name: str) -> None:
            from smcs.bank import ModelInfo

            self.bank = self.bank.add_model(ModelInfo(name))

        def housekeeping(self) -> None:
            self.bank.prune(2)  # untimed: keeps the disk of the 1e6 run bounded

        def compact(self) -> None:
            return None

        def close(self) -> None:
            self.bank = None  # type: ignore[assignment]

    class Reader:
        def __init__(self, path: Path) -> None:
            from smcs.bank import Bank

            self.bank = Bank.open(path)

        def matrices(self) -> tuple[np.ndarray, np.ndarray]:
            return self.bank.embeddings, self.bank.capability

        def reload(self) -> str:
            new = self.bank.latest()
            if new is self.bank:
                return "none"
            self.bank = new
            return "full"  # a new version: new files, every page read again by the next route

        def ids(self) -> list[str]:
            return [q.id for q in self.bank.questions]


# ---------------------------------------------------------------------------------- design B: segments

REC = np.dtype([("row", "<i4"), ("model", "<i2"), ("value", "i1"), ("pad", "i1")])
EMB = "embeddings.f32"
QUESTIONS = "questions.jsonl"
JOURNAL = "journal.jsonl"


class _Id(msgspec.Struct):
    id: str


_ID_DECODER = msgspec.json.Decoder(_Id)
"""Decodes only the ids of questions.jsonl lines (the writer's id -> row index; other fields are skipped)."""


def _capacity_rows(n: int) -> int:
    return max(1024, 1 << math.ceil(math.log2(n + 1)))


class Segments:
    """Design B: immutable extents of append-only files, listed by each version's manifest.

    ``CURRENT`` names ``manifests/v<n>.json``, which records every file's committed length (bytes below
    it are never rewritten), N, d, the model names, the capability base and the outcome log of its
    generation. A write, under the ``.lock`` flock: drops what a crashed writer left past the committed
    lengths (truncation; the embeddings file keeps its sparse capacity and is simply overwritten), appends
    its extents and fdatasyncs them, appends their SHA-256 to the journal, writes the next manifest
    (fsync, rename, fsync dir) and replaces ``CURRENT`` the same way. A reader holding version v knows
    what changed by comparing lengths: it reads only bytes past v's lengths.
    """

    name = "segments"

    @staticmethod
    def create(path: Path, emb: np.ndarray, cap: np.ndarray, ids: Sequence[str], models: Sequence[str]) -> None:
        path.mkdir(parents=True)
        (path / "manifests").mkdir()
        n, d = emb.shape
        with open(path / EMB, "wb") as f:
            os.ftruncate(f.fileno(), _capacity_rows(n) * d * 4)  # sparse capacity past the rows
            f.write(memoryview(np.ascontiguousarray(emb)).cast("B"))
            os.fdatasync(f.fileno())
        qbytes = b"".join(question_line(q) for q in ids)
        with open(path / QUESTIONS, "wb") as f:
            f.write(qbytes)
            os.fdatasync(f.fileno())
        base = "cap-000001.npy"
        with open(path / base, "wb") as f:
            np.save(f, np.ascontiguousarray(cap))
            f.flush()
            os.fsync(f.fileno())
        log = "outcomes-000001.log"
        open(path / log, "wb").close()
        journal = json.dumps({"v": 1, "file": EMB, "offset": 0, "length": n * d * 4}).encode() + b"\n"
        with open(path / JOURNAL, "wb") as f:
            f.write(journal)
            os.fdatasync(f.fileno())
        fsync_dir(path)
        manifest = {
            "version": 1, "parent": None, "n": n, "d": d, "models": list(models),
            "base": {"file": base, "models": len(models), "rows": n}, "log": log,
            "files": {EMB: n * d * 4, QUESTIONS: len(qbytes), JOURNAL: len(journal), log: 0},
        }
        Segments._commit(path, manifest)

    # ------------------------------------------------------------------ shared by writer and reader

    @staticmethod
    def read_manifest(path: Path, version: int | None = None) -> dict[str, Any]:
        if version is None:
            version = int((path / "CURRENT").read_text().strip()[1:])
        return json.loads((path / "manifests" / f"v{version:06d}.json").read_bytes())

    @staticmethod
    def _commit(path: Path, manifest: dict[str, Any], sync: bool = True) -> None:
        name = f"v{manifest['version']:06d}"
        tmp = path / "manifests" / f".tmp-{name}.json"
        with open(tmp, "wb") as f:
            f.write(json.dumps(manifest).encode())
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.rename(tmp, path / "manifests" / f"{name}.json")
        fsync_dir(path / "manifests", sync)
        replace_synced(path / "CURRENT", f"{name}\n".encode(), sync)

    class Writer:
        sync = True
        """fsync what a write adds before committing it (False: the segments-nofsync variant)."""

        def __init__(self, path: Path) -> None:
            self.path = path
            self._ids: dict[str, int] = {}
            self._ids_bytes = 0  # questions.jsonl bytes indexed into _ids
            with flocked(path / ".lock"):
                self._sync_ids(Segments.read_manifest(path))

        @property
        def n(self) -> int:
            return Segments.read_manifest(self.path)["n"]

        @property
        def models(self) -> list[str]:
            return Segments.read_manifest(self.path)["models"]

        def _sync_ids(self, m: dict[str, Any]) -> None:
            """Index the questions committed since the last call (O(new bytes))."""
            end = m["files"][QUESTIONS]
            if end > self._ids_bytes:
                with open(self.path / QUESTIONS, "rb") as f:
                    f.seek(self._ids_bytes)
                    data = f.read(end - self._ids_bytes)
                for qid in _ID_DECODER.decode_lines(data):
                    self._ids[qid.id] = len(self._ids)
                self._ids_bytes = end

        @contextlib.contextmanager
        def _writing(self) -> Iterator[dict[str, Any]]:
            with flocked(self.path / ".lock"):
                m = Segments.read_manifest(self.path)
                for entry in (self.path / "manifests").iterdir():  # scratch and orphans of a crashed writer
                    stem = entry.name.removesuffix(".json")
                    if entry.name.startswith(".tmp-") or int(stem[1:]) > m["version"]:
                        entry.unlink()
                self._sync_ids(m)
                new = json.loads(json.dumps(m))
                new["version"], new["parent"] = m["version"] + 1, m["version"]
                self._extents: list[bytes] = []
                yield new
                journal = b"".join(self._extents)
                if journal:
                    self._extend(new, JOURNAL, journal, hashed=False)
                Segments._commit(self.path, new, self.sync)

        def _extend(self, m: dict[str, Any], name: str, data: bytes, *, hashed: bool = True) -> None:
            """Append ``data`` at the committed end of ``name`` (dropping a crashed writer's bytes past it)."""
            end = m["files"].get(name, 0)
            fd = os.open(self.path / name, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if name == EMB:
                    need = end + len(data)
                    size = os.fstat(fd).st_size
                    if need > size:  # grow the sparse capacity; mappings of the old size stay valid
                        os.ftruncate(fd, _capacity_rows(need // (m["d"] * 4)) * m["d"] * 4)
                else:
                    os.ftruncate(fd, end)
                os.pwrite(fd, data, end)
                if self.sync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
            m["files"][name] = end + len(data)
            if hashed:
                line = {"v": m["version"], "file": name, "offset": end, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                self._extents.append(json.dumps(line).encode() + b"\n")

        def _log(self, m: dict[str, Any], rows: np.ndarray, models: np.ndarray, values: np.ndarray) -> None:
            recs = np.zeros(len(rows), dtype=REC)
            recs["row"], recs["model"], recs["value"] = rows, models, values
            self._extend(m, m["log"], recs.tobytes())

        def append(self, emb: np.ndarray, ids: Sequence[str], outcomes: np.ndarray) -> None:
            with self._writing() as m:
                if any(q in self._ids for q in ids):
                    raise ValueError("duplicate question id")
                n = m["n"]
                self._extend(m, EMB, np.ascontiguousarray(emb, dtype=np.float32).tobytes())
                self._extend(m, QUESTIONS, b"".join(question_line(q) for q in ids))
                r, j = np.nonzero(outcomes != UNKNOWN)
                if len(r):
                    self._log(m, n + j, r, outcomes[r, j])
                m["n"] = n + len(ids)
            for i, q in enumerate(ids):
                self._ids[q] = n + i
            self._ids_bytes = m["files"][QUESTIONS]

        def record(self, triples: Sequence[tuple[str, str, int]]) -> None:
            with self._writing() as m:
                index = {name: i for i, name in enumerate(m["models"])}
                rows = np.array([self._ids[q] for _, q, _ in triples], dtype=np.int32)
                models = np.array([index[mod] for mod, _, _ in triples], dtype=np.int16)
                values = np.array([v for _, _, v in triples], dtype=np.int8)
                self._log(m, rows, models, values)

        def add_model(self, name: str) -> None:
            with self._writing() as m:
                m["models"].append(name)  # the new row starts unknown: nothing but the manifest changes

        def housekeeping(self) -> None:
            return None

        def compact(self) -> None:
            """Fold the outcome log into a new capability base (O(R·N), off the read path)."""
            with self._writing() as m:
                cap = Segments.Reader.build_cap(self.path, m)
                gen = m["version"]
                base, log = f"cap-{gen:06d}.npy", f"outcomes-{gen:06d}.log"
                with open(self.path / base, "wb") as f:
                    np.save(f, cap)
                    f.flush()
                    os.fsync(f.fileno())
                open(self.path / log, "wb").close()
                fsync_dir(self.path)
                del m["files"][m["log"]]
                m["base"] = {"file": base, "models": cap.shape[0], "rows": cap.shape[1]}
                m["log"], m["files"][log] = log, 0

        def close(self) -> None:
            return None

    class Reader:
        def __init__(self, path: Path, version: int | None = None) -> None:
            self.path = path
            self.m = Segments.read_manifest(path, version)
            self._mm: mmap.mmap | None = None
            self._map()
            self.cap = self.build_cap(path, self.m)

        def _map(self) -> None:
            n, d = self.m["n"], self.m["d"]
            need = n * d * 4
            if self._mm is None or len(self._mm) < need:
                with open(self.path / EMB, "rb") as f:  # the whole file: its capacity covers later appends
                    self._mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            self.emb = np.frombuffer(self._mm, dtype=np.float32, count=n * d).reshape(n, d)

        @staticmethod
        def _read_log(path: Path, name: str, start: int, end: int) -> np.ndarray:
            if end <= start:
                return np.zeros(0, dtype=REC)
            with open(path / name, "rb") as f:
                f.seek(start)
                return np.frombuffer(f.read(end - start), dtype=REC)

        @staticmethod
        def build_cap(path: Path, m: dict[str, Any]) -> np.ndarray:
            cap = np.full((len(m["models"]), m["n"]), UNKNOWN, dtype=np.int8)
            base = np.load(path / m["base"]["file"], mmap_mode="r")
            cap[: base.shape[0], : base.shape[1]] = base
            recs = Segments.Reader._read_log(path, m["log"], 0, m["files"][m["log"]])
            apply_records(cap, recs["row"], recs["model"], recs["value"], unique=False)
            return cap

        def matrices(self) -> tuple[np.ndarray, np.ndarray]:
            return self.emb, self.cap

        def reload(self) -> str:
            new = Segments.read_manifest(self.path)
            old = self.m
            if new["version"] == old["version"]:
                return "none"
            self.m = new
            self._map()  # O(1): the same mapping, a longer view, unless the capacity grew
            if new["base"] == old["base"] and new["log"] == old["log"]:
                cap = np.full((len(new["models"]), new["n"]), UNKNOWN, dtype=np.int8)
                cap[: self.cap.shape[0], : self.cap.shape[1]] = self.cap  # a copy: the old snapshot stays
                recs = self._read_log(self.path, new["log"], old["files"][old["log"]], new["files"][new["log"]])
                apply_records(cap, recs["row"], recs["model"], recs["value"], unique=False)
                self.cap = cap
                return "incremental"
            self.cap = self.build_cap(self.path, new)  # a fold happened: the new base, O(R·N)
            return "base"

        def ids(self) -> list[str]:
            with open(self.path / QUESTIONS, "rb") as f:
                data = f.read(self.m["files"][QUESTIONS])
            return [q.id for q in _ID_DECODER.decode_lines(data)]


class SegmentsNoSync(Segments):
    """Design B without its fsyncs: what the same writes cost when durability is left to the page cache
    (as Lance leaves it on a local disk: it never calls fsync). Writes only; it reads like ``segments``."""

    name = "segments-nofsync"
    WRITES_ONLY = True

    class Writer(Segments.Writer):
        sync = False


# ------------------------------------------------------------------------------ design A: Lance, shared


def _lance_table(emb: np.ndarray, ids: Sequence[str]) -> Any:
    import pyarrow as pa

    d = emb.shape[1]
    return pa.table({
        "id": pa.array(list(ids), pa.string()),
        "text": pa.array([f"synthetic question {q}" for q in ids], pa.string()),
        "source": pa.array(["spike"] * len(ids), pa.string()),
        "label": pa.array([None] * len(ids), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1)), d),
    })


class _Rows:
    """A growable contiguous float32 buffer: appending m rows costs O(m) (amortised), and ``view`` is a
    C-contiguous N x d prefix, so an older snapshot's view is never touched by later appends."""

    def __init__(self, d: int, capacity: int) -> None:
        # twice the rows: the headroom is virtual memory only (np.empty touches no page) until appends use it
        self.buf = np.empty((max(1024, 2 * capacity), d), dtype=np.float32)
        self.n = 0

    def extend_batches(self, batches: Iterator[Any]) -> None:
        for batch in batches:
            col = batch.column(0)
            m = len(col)
            if m == 0:
                continue
            flat = col.values.to_numpy(zero_copy_only=False)
            if col.offset:
                flat = flat[col.offset * self.buf.shape[1] :]
            if self.n + m > len(self.buf):
                grown = np.empty((max(2 * len(self.buf), self.n + m), self.buf.shape[1]), dtype=np.float32)
                grown[: self.n] = self.buf[: self.n]
                self.buf = grown
            self.buf[self.n : self.n + m] = flat[: m * self.buf.shape[1]].reshape(m, -1)
            self.n += m

    @property
    def view(self) -> np.ndarray:
        return self.buf[: self.n]


FIXED = ("id", "text", "source", "label", "embedding")


class LanceCols:
    """Design A1: one Lance dataset, an int8 outcome column per model; a record rewrites its row."""

    name = "lance-cols"

    @staticmethod
    def uri(path: Path) -> str:
        return str(path / "bank.lance")

    @staticmethod
    def create(path: Path, emb: np.ndarray, cap: np.ndarray, ids: Sequence[str], models: Sequence[str]) -> None:
        import lance
        import pyarrow as pa

        path.mkdir(parents=True)
        table = _lance_table(emb, ids)
        for r, name in enumerate(models):
            table = table.append_column(name, pa.array(cap[r], pa.int8()))
        ds = lance.write_dataset(table, LanceCols.uri(path))
        ds.create_scalar_index("id", "BTREE")

    class Writer:
        def __init__(self, path: Path) -> None:
            import lance

            self.path, self.uri = path, LanceCols.uri(path)
            self._lance = lance

        def _ds(self) -> Any:
            return self._lance.dataset(self.uri)

        @property
        def n(self) -> int:
            return self._ds().count_rows()

        @property
        def models(self) -> list[str]:
            return [f for f in self._ds().schema.names if f not in FIXED]

        def append(self, emb: np.ndarray, ids: Sequence[str], outcomes: np.ndarray) -> None:
            import pyarrow as pa

            with flocked(self.path / ".lock"):
                table = _lance_table(emb, ids)
                for r, name in enumerate(self.models):
                    table = table.append_column(name, pa.array(outcomes[r], pa.int8()))
                self._lance.write_dataset(table, self.uri, mode="append")

        def record(self, triples: Sequence[tuple[str, str, int]]) -> None:
            """A merge_insert of (id, the touched model columns) on the BTREE-indexed id: Lance rewrites those
            columns of the fragments holding the rows (``update`` would instead delete each row and rewrite it,
            embedding included, at the end of the dataset, reordering the rows)."""
            import pyarrow as pa

            touched = sorted({m for m, _, _ in triples})
            qids = sorted({q for _, q, _ in triples})
            with flocked(self.path / ".lock"):
                ds = self._ds()
                where = "id IN (" + ", ".join(f"'{q}'" for q in qids) + ")"
                current = ds.to_table(columns=["id", *touched], filter=where)
                pos = {q: i for i, q in enumerate(current.column("id").to_pylist())}
                cols = {m: current.column(m).fill_null(UNKNOWN).to_numpy().copy() for m in touched}
                for m, q, v in triples:
                    cols[m][pos[q]] = v
                source = pa.table({"id": current.column("id"), **{m: pa.array(cols[m], pa.int8()) for m in touched}})
                ds.merge_insert("id").when_matched_update_all().execute(source)

        def add_model(self, name: str) -> None:
            import pyarrow as pa

            with flocked(self.path / ".lock"):
                self._ds().add_columns(pa.field(name, pa.int8()))  # all null (= unknown), metadata only

        def housekeeping(self) -> None:
            return None

        def compact(self) -> None:
            ds = self._ds()
            ds.optimize.compact_files()
            self._ds().cleanup_old_versions(retain_versions=1, delete_unverified=True)

        def close(self) -> None:
            return None

    class Reader:
        """Follows the dataset by fragment: a new fragment is read and appended; a fragment whose data files
        changed without touching the embedding (a column rewrite by merge_insert) has its outcome columns
        re-read; a changed deletion file (rows moved or deleted) or a new model column means a full re-read."""

        def __init__(self, path: Path) -> None:
            import lance

            self._lance = lance
            self.uri = LanceCols.uri(path)
            self.ds = lance.dataset(self.uri)
            self._full()

        @staticmethod
        def _models(ds: Any) -> list[str]:
            return [f for f in ds.schema.names if f not in FIXED]

        @staticmethod
        def _frags(ds: Any) -> dict[int, tuple[Any, frozenset[str], int]]:
            return {
                f.fragment_id: (f.metadata.deletion_file.id if f.metadata.deletion_file else None,
                                frozenset(x.path for x in f.data_files()), f.count_rows())
                for f in ds.get_fragments()
            }

        def _outcomes(self, ds: Any, fragments: list[Any] | None) -> np.ndarray:
            models = self._models(ds)
            tab = ds.scanner(columns=models, fragments=fragments).to_table()
            out = np.full((len(models), tab.num_rows), UNKNOWN, dtype=np.int8)
            for r, name in enumerate(models):
                out[r] = tab.column(name).fill_null(UNKNOWN).to_numpy()
            return out

        def _full(self) -> None:
            n = self.ds.count_rows()
            self.rows = _Rows(self.ds.schema.field("embedding").type.list_size, n)
            self.rows.extend_batches(self.ds.scanner(columns=["embedding"], batch_size=65536).to_batches())
            self.cap = self._outcomes(self.ds, None)
            self.held = self._frags(self.ds)
            self.order = [f.fragment_id for f in self.ds.get_fragments()]
            self.models = self._models(self.ds)

        def matrices(self) -> tuple[np.ndarray, np.ndarray]:
            return self.rows.view, self.cap

        def reload(self) -> str:
            ds = self._lance.dataset(self.uri)
            if ds.version == self.ds.version:
                return "none"
            frags = self._frags(ds)
            emb_field = ds.lance_schema.field("embedding").id()
            rewritten = []
            full = self._models(ds) != self.models
            for fid, (dele, files, rows) in self.held.items():
                now = frags.get(fid)
                if now is None or now[0] != dele or now[2] != rows:
                    full = True
                elif now[1] != files:
                    new_files = [x for x in ds.get_fragment(fid).data_files() if x.path not in files]
                    full |= any(emb_field in x.fields for x in new_files)
                    rewritten.append(fid)
            self.ds = ds
            if full:
                self._full()
                return "full"
            cap = self.cap.copy() if rewritten else self.cap  # never change what the old snapshot holds
            offsets = dict(zip(self.order, np.cumsum([0] + [self.held[f][2] for f in self.order])[:-1].tolist()))
            for fid in rewritten:  # only the outcome columns of this fragment changed
                off, rows = offsets[fid], self.held[fid][2]
                cap[:, off : off + rows] = self._outcomes(ds, [ds.get_fragment(fid)])
            new = [f for f in ds.get_fragments() if f.fragment_id not in self.held]
            if new:
                self.rows.extend_batches(ds.scanner(columns=["embedding"], fragments=new, batch_size=65536).to_batches())
                cap = np.concatenate([cap, self._outcomes(ds, new)], axis=1)
                self.order += [f.fragment_id for f in new]
            self.cap, self.held = np.ascontiguousarray(cap), frags
            return "columns" if rewritten else "incremental"

        def ids(self) -> list[str]:
            return self.ds.to_table(columns=["id"]).column("id").to_pylist()


class LanceOut:
    """Design A2: an append-only questions dataset and an outcomes dataset keyed by (row, model).

    An append writes its outcomes first (merge_insert: they overwrite what a crashed append may have left
    for those rows) and then the rows, whose commit makes them visible; readers ignore outcomes of rows
    they do not have. Writers serialise on ``.lock`` (the two datasets are two commits)."""

    name = "lance-out"

    @staticmethod
    def uris(path: Path) -> tuple[str, str]:
        return str(path / "questions.lance"), str(path / "outcomes.lance")

    @staticmethod
    def _outcome_table(rows: np.ndarray, models: np.ndarray, values: np.ndarray) -> Any:
        import pyarrow as pa

        keys = (rows.astype(np.int64) << 16) | models.astype(np.int64)
        return pa.table({"key": pa.array(keys, pa.int64()), "value": pa.array(values.astype(np.int8), pa.int8())})

    @staticmethod
    def create(path: Path, emb: np.ndarray, cap: np.ndarray, ids: Sequence[str], models: Sequence[str]) -> None:
        import lance

        path.mkdir(parents=True)
        qs, outs = LanceOut.uris(path)
        lance.write_dataset(_lance_table(emb, ids), qs)
        r, j = np.nonzero(cap != UNKNOWN)
        table = LanceOut._outcome_table(j, r, cap[r, j]).replace_schema_metadata({"models": json.dumps(list(models))})
        ds = lance.write_dataset(table, outs)
        ds.create_scalar_index("key", "BTREE")

    class Writer:
        def __init__(self, path: Path) -> None:
            import lance

            self._lance = lance
            self.path = path
            self.qs, self.outs = LanceOut.uris(path)
            self._ids: dict[str, int] = {}
            self._sync_ids(lance.dataset(self.qs))

        def _sync_ids(self, ds: Any) -> None:
            n = ds.count_rows()
            if n > len(self._ids):
                tab = ds.to_table(columns=["id"], offset=len(self._ids), limit=n - len(self._ids))
                for qid in tab.column("id").to_pylist():
                    self._ids[qid] = len(self._ids)

        @property
        def n(self) -> int:
            return self._lance.dataset(self.qs).count_rows()

        @property
        def models(self) -> list[str]:
            return json.loads(self._lance.dataset(self.outs).schema.metadata[b"models"])

        def _upsert(self, table: Any) -> None:
            ds = self._lance.dataset(self.outs)
            ds.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(table)

        def append(self, emb: np.ndarray, ids: Sequence[str], outcomes: np.ndarray) -> None:
            with flocked(self.path / ".lock"):
                ds = self._lance.dataset(self.qs)
                self._sync_ids(ds)
                if any(q in self._ids for q in ids):
                    raise ValueError("duplicate question id")
                n = ds.count_rows()
                r, j = np.indices(outcomes.shape).reshape(2, -1)  # every cell, unknown too: overwrite leftovers
                self._upsert(LanceOut._outcome_table(n + j, r, outcomes[r, j]))
                self._lance.write_dataset(_lance_table(emb, ids), self.qs, mode="append")
            for i, q in enumerate(ids):
                self._ids[q] = n + i

        def record(self, triples: Sequence[tuple[str, str, int]]) -> None:
            with flocked(self.path / ".lock"):
                self._sync_ids(self._lance.dataset(self.qs))
                index = {name: i for i, name in enumerate(self.models)}
                rows = np.array([self._ids[q] for _, q, _ in triples])
                models = np.array([index[m] for m, _, _ in triples])
                values = np.array([v for _, _, v in triples])
                self._upsert(LanceOut._outcome_table(rows, models, values))

        def add_model(self, name: str) -> None:
            with flocked(self.path / ".lock"):
                ds = self._lance.dataset(self.outs)
                ds.update_schema_metadata({"models": json.dumps([*self.models, name])})

        def housekeeping(self) -> None:
            return None

        def compact(self) -> None:
            for uri in (self.qs, self.outs):
                self._lance.dataset(uri).optimize.compact_files()
                self._lance.dataset(uri).cleanup_old_versions(retain_versions=1, delete_unverified=True)

        def close(self) -> None:
            return None

    class Reader:
        def __init__(self, path: Path) -> None:
            import lance

            self._lance = lance
            self.qs_uri, self.outs_uri = LanceOut.uris(path)
            self.qs = lance.dataset(self.qs_uri)
            self.outs = lance.dataset(self.outs_uri)
            n = self.qs.count_rows()
            self.rows = _Rows(self.qs.schema.field("embedding").type.list_size, n)
            self.rows.extend_batches(self.qs.scanner(columns=["embedding"], batch_size=65536).to_batches())
            self.cap = np.full((len(self._models(self.outs)), n), UNKNOWN, dtype=np.int8)
            self._apply(self.outs.to_table(columns=["key", "value"]), self.cap)
            self.held = max((f.fragment_id for f in self.outs.get_fragments()), default=-1)

        @staticmethod
        def _models(ds: Any) -> list[str]:
            return json.loads(ds.schema.metadata[b"models"])

        @staticmethod
        def _apply(tab: Any, cap: np.ndarray) -> None:
            keys = tab.column("key").to_numpy()
            values = tab.column("value").to_numpy()
            apply_records(cap, (keys >> 16).astype(np.int64), (keys & 0xFFFF).astype(np.int64), values, unique=True)

        def matrices(self) -> tuple[np.ndarray, np.ndarray]:
            return self.rows.view, self.cap

        def reload(self) -> str:
            qs = self._lance.dataset(self.qs_uri)
            outs = self._lance.dataset(self.outs_uri)
            if qs.version == self.qs.version and outs.version == self.outs.version:
                return "none"
            n_old, n = self.rows.n, qs.count_rows()
            if n > n_old:  # the questions dataset only grows: the new rows are the tail
                self.rows.extend_batches(qs.scanner(columns=["embedding"], offset=n_old, limit=n - n_old).to_batches())
            cap = np.full((len(self._models(outs)), n), UNKNOWN, dtype=np.int8)
            cap[: self.cap.shape[0], : self.cap.shape[1]] = self.cap  # a copy: the old snapshot stays intact
            new = [f for f in outs.get_fragments() if f.fragment_id > self.held]  # upserts and compactions
            if new:
                old_rows = cap[:, :n_old]
                self._apply(outs.scanner(columns=["key", "value"], fragments=new).to_table(), old_rows)
            if n > n_old:  # the new rows' outcomes, whichever fragment holds them (BTREE on key)
                tab = outs.to_table(columns=["key", "value"], filter=f"key >= {n_old << 16} AND key < {n << 16}")
                self._apply(tab, cap)
            self.cap, self.qs, self.outs = cap, qs, outs
            self.held = max((f.fragment_id for f in outs.get_fragments()), default=-1)
            return "incremental"

        def ids(self) -> list[str]:
            return self.qs.to_table(columns=["id"]).column("id").to_pylist()[: self.rows.n]


DESIGNS: dict[str, Any] = {d.name: d for d in (Today, Segments, SegmentsNoSync, LanceCols, LanceOut)}

# ------------------------------------------------------------------------------------- child processes


def _warm_kernels() -> None:
    import smcs.kernels as sk

    sk.configure_threads()
    rng = np.random.default_rng(1)
    e = unit_rows(rng, 2048, 16)
    c = rng.integers(-1, 2, (3, 2048), dtype=np.int8)
    e_ro, c_ro = e.copy(), c.copy()
    e_ro.setflags(write=False)
    c_ro.setflags(write=False)
    # numba compiles read-only arrays (memory maps) apart from writable ones (Lance's decoded copies)
    for ee, cc in ((e, c), (e_ro, c_ro), (e_ro, c), (e, c_ro)):
        sk.route(ee, e[0].copy(), cc, 40, GAMMA, threads=1)  # queries are always fresh writable vectors
        sk.route(ee, e[0].copy(), cc, 40, GAMMA, threads=2)


def _query(d: int) -> np.ndarray:
    return unit_rows(np.random.default_rng(7), 1, d)[0]


def _route_once(emb: np.ndarray, cap: np.ndarray) -> float:
    import smcs.kernels as sk

    q = _query(emb.shape[1])
    t0 = time.perf_counter()
    sk.route(emb, q, cap, N_BASE, GAMMA)
    return time.perf_counter() - t0


def child_reader(design: str, path: str) -> None:
    """Open the bank, report the open's phases and memory, then serve reload/mem/quit commands."""
    _warm_kernels()
    import smcs.bank  # noqa: F401 - the libraries are imported before the clock starts
    if design.startswith("lance"):
        import lance  # noqa: F401
    cls = DESIGNS[design]
    t0 = time.perf_counter()
    reader = cls.Reader(Path(path))
    t1 = time.perf_counter()
    emb, cap = reader.matrices()
    assert emb.dtype == np.float32 and emb.flags.c_contiguous and cap.dtype == np.int8 and cap.flags.c_contiguous
    t2 = time.perf_counter()
    first = _route_once(emb, cap)
    warm = statistics.median(_route_once(emb, cap) for _ in range(5))
    print(json.dumps({"open": t1 - t0, "materialise": t2 - t1, "first_route": first, "warm_route": warm, "n": len(emb), "mem": memory()}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "reload":
            t0 = time.perf_counter()
            kind = reader.reload()
            emb, cap = reader.matrices()
            t1 = time.perf_counter()
            first = _route_once(emb, cap)
            print(json.dumps({"reload": t1 - t0, "first_route": first, "kind": kind, "n": len(emb), "r": cap.shape[0]}), flush=True)
        elif cmd == "mem":
            print(json.dumps({"mem": memory()}), flush=True)
        elif cmd == "check":  # does the incrementally followed snapshot equal a fresh open of the bank?
            fresh_emb, fresh_cap = cls.Reader(Path(path)).matrices()
            emb, cap = reader.matrices()
            same = bool(np.array_equal(emb, fresh_emb) and np.array_equal(cap, fresh_cap))
            print(json.dumps({"same": same}), flush=True)
        else:
            break


def child_route(paths: dict[str, str], reps: int) -> None:
    """Route over every design's matrices, interleaved, with the kernel and with a Router."""
    from smcs.bank import Bank, EmbedderInfo, Manifest, ModelInfo
    from smcs.bank.schema import SCHEMA_VERSION
    from smcs.core import Policy, Router

    _warm_kernels()
    import smcs.kernels as sk

    readers = {name: DESIGNS[name].Reader(Path(p)) for name, p in paths.items()}
    routers, mats = {}, {}
    for name, reader in readers.items():
        emb, cap = reader.matrices()
        mats[name] = (emb, cap)
        manifest = Manifest(
            schema_version=SCHEMA_VERSION, embedder=EmbedderInfo("spike", emb.shape[1]), n_questions=len(emb),
            n_models=cap.shape[0], created="", parent=None, files={},
        )
        fd = os.open(os.devnull, os.O_RDONLY)
        bank = Bank(Path(paths[name]), "spike", manifest, emb, cap, tuple(ModelInfo(f"r{i}") for i in range(cap.shape[0])), fd)
        routers[name] = Router(bank, Policy())
    q = _query(DIM)
    times: dict[str, dict[str, list[float]]] = {name: {"kernel": [], "router": []} for name in readers}
    order = list(readers)
    for rep in range(reps):
        random.Random(rep).shuffle(order)
        for name in order:
            emb, cap = mats[name]
            t0 = time.perf_counter()
            sk.route(emb, q, cap, N_BASE, GAMMA)
            t1 = time.perf_counter()
            routers[name].route(q, seed=0)
            t2 = time.perf_counter()
            times[name]["kernel"].append(t1 - t0)
            times[name]["router"].append(t2 - t1)
    print(json.dumps(times), flush=True)


def crash_rows(start: int, stop: int, d: int) -> np.ndarray:
    j = np.arange(start, stop, dtype=np.float64)[:, None] + 1.0
    k = np.arange(1, d, dtype=np.float64)[None, :]
    rows = np.hstack([np.ones((stop - start, 1)), np.sin(0.37 * j * k)])
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def crash_outcomes(start: int, stop: int, r: int) -> np.ndarray:
    j = np.arange(start, stop)[None, :]
    m = np.arange(r)[:, None]
    return ((7 * j + 3 * m) % 3 - 1).astype(np.int8)


CRASH_D, CRASH_R, CRASH_N0 = 64, 3, 8


def child_crash_writer(design: str, path: str) -> None:
    """Append 1-5 deterministic questions, then re-record their outcomes, forever; print N after each commit."""
    writer = DESIGNS[design].Writer(Path(path))
    models = writer.models
    print("ready", flush=True)
    step, n = 0, writer.n
    while True:
        size = 1 + step % 5
        if step % 2 == 0:
            writer.append(crash_rows(n, n + size, CRASH_D), [f"q{j}" for j in range(n, n + size)], crash_outcomes(n, n + size, CRASH_R))
            n += size
        else:
            size = min(size, n)
            values = crash_outcomes(n - size, n, CRASH_R)
            writer.record([(models[r], f"q{n - size + c}", int(values[r, c])) for r in range(CRASH_R) for c in range(size)])
        print(n, flush=True)
        step += 1


# -------------------------------------------------------------------------------------------- parent


def stats(xs: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def ask(proc: subprocess.Popen[str], cmd: str | None = None) -> dict[str, Any]:
    if cmd is not None:
        assert proc.stdin is not None
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child failed: {proc.stderr.read() if proc.stderr else ''}")
    return json.loads(line)


def finish(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.write("quit\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Clock:
    """Time spent per design at one size, against ``BUDGET_S``."""

    def __init__(self, budget: float) -> None:
        self.spent: dict[str, float] = {}
        self.budget = budget
        self.skipped: dict[str, str] = {}

    def over(self, name: str, what: str) -> bool:
        if self.spent.get(name, 0.0) > self.budget:
            self.skipped.setdefault(name, what)
            return True
        return False

    @contextlib.contextmanager
    def charge(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0


def run_size(n: int, designs: list[str], reps: int, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    log(f"N={n}: generating the bank")
    emb = unit_rows(rng, n)
    cap = rng.integers(-1, 2, (MODELS, n), dtype=np.int8)
    ids = [f"q{j}" for j in range(n)]
    models = model_names(MODELS)
    res: dict[str, Any] = {"n": n, "designs": {}}
    clock = Clock(BUDGET_S)
    paths = {name: workdir / f"{name}-{n}" for name in designs}
    for name in designs:
        out = res["designs"][name] = {}
        t0 = time.perf_counter()
        DESIGNS[name].create(paths[name], emb, cap, ids, models)
        out["create_s"] = time.perf_counter() - t0
        out["create_bytes"] = disk_bytes(paths[name])
        log(f"  {name}: created in {out['create_s']:.1f} s, {out['create_bytes'] / 1e6:.1f} MB")
    del emb, cap
    gc.collect()

    # (1) writes, interleaved: every repeat runs each operation on every design in turn
    writers = {name: DESIGNS[name].Writer(paths[name]) for name in designs}
    counter = [0]

    def fresh_ids(m: int) -> list[str]:
        counter[0] += m
        return [f"a{counter[0] - m + i}" for i in range(m)]

    def op_args(op: str, w: Any) -> tuple[Callable[[], None], int]:
        r = len(w.models)
        if op.startswith("append"):
            m = int(op.removeprefix("append"))
            e, o, q = unit_rows(rng, m), rng.integers(-1, 2, (r, m), dtype=np.int8), fresh_ids(m)
            return (lambda: w.append(e, q, o)), m
        if op.startswith("record"):
            m = int(op.removeprefix("record"))
            cells = set()
            while len(cells) < m:
                cells.add((int(rng.integers(r)), int(rng.integers(n))))
            triples = [(w.models[i], f"q{j}", int(rng.integers(0, 2))) for i, j in sorted(cells)]
            return (lambda: w.record(triples)), m
        name = fresh_ids(1)[0].replace("a", "x")
        return (lambda: w.add_model(name)), 1

    for op in ("append1", "record1", "add_model", "append100", "record100"):  # the pair first
        for rep in range(reps):
            for name in designs:
                if clock.over(name, f"{op} rep {rep}"):
                    continue
                w = writers[name]
                fn, _ = op_args(op, w)
                before = disk_bytes(paths[name])
                with clock.charge(name):
                    t0 = time.perf_counter()
                    fn()
                    dt = time.perf_counter() - t0
                res["designs"][name].setdefault(op, {"s": [], "bytes": []})
                res["designs"][name][op]["s"].append(dt)
                res["designs"][name][op]["bytes"].append(disk_bytes(paths[name]) - before)
                w.housekeeping()
        log(f"  writes {op}: " + ", ".join(
            f"{name} {statistics.median(res['designs'][name][op]['s']) * 1e3:.1f} ms" for name in designs if op in res["designs"][name]))

    # a one-shot writer (a CLI process): its open, id index included
    for name in designs:
        writers[name].close()
        if clock.over(name, "writer open"):
            continue
        ts = []
        for _ in range(3):
            with clock.charge(name):
                t0 = time.perf_counter()
                w = DESIGNS[name].Writer(paths[name])
                ts.append(time.perf_counter() - t0)
            w.close()
            del w
        res["designs"][name]["writer_open_s"] = ts
    writers = {}
    gc.collect()

    # (2)+(3) cold open in a fresh process, a second process's memory, incremental reload
    readers = [name for name in designs if not getattr(DESIGNS[name], "WRITES_ONLY", False)]
    for name in readers:
        out = res["designs"][name]
        if clock.over(name, "open/reload"):
            continue
        with clock.charge(name):
            evict(paths[name])
            a = spawn("reader", name, str(paths[name]))
            out["open_cold"] = ask(a)
            b = spawn("reader", name, str(paths[name]))
            out["open_second"] = ask(b)
            out["mem_first_with_second"] = ask(a, "mem")["mem"]
            finish(b)
            writer = DESIGNS[name].Writer(paths[name])
            for what in ("append", "record"):
                for evicted in (False, True):
                    key = f"reload_{what}_{'evicted' if evicted else 'hot'}"
                    for rep in range(max(2, reps - 1)):
                        if clock.over(name, key):
                            break
                        fn, _ = op_args("append1" if what == "append" else "record1", writer)
                        fn()
                        expected_n = writer.n
                        writer.housekeeping()
                        if evicted:
                            gc.collect()
                            evict(paths[name])
                        got = ask(a, "reload")
                        assert got["n"] == expected_n, (name, got, expected_n)
                        out.setdefault(key, []).append(got)
            if n <= 100_000:
                out["reload_matches_fresh_open"] = ask(a, "check")["same"]
            writer.close()
            del writer
            finish(a)
        log(f"  {name}: cold open {sum(out['open_cold'][k] for k in ('open', 'materialise', 'first_route')):.2f} s, "
            f"reload after append (evicted) {statistics.median(g['reload'] + g['first_route'] for g in out.get('reload_append_evicted', [{'reload': math.nan, 'first_route': 0}])) * 1e3:.1f} ms")

    # (4) route speed on each design's matrices, one process, interleaved
    live = [name for name in readers if not clock.over(name, "route")]
    if live:
        proc = spawn("route", json.dumps({name: str(paths[name]) for name in live}), str(max(7, 3 * reps)))
        times = ask(proc)
        proc.wait()
        for name, t in times.items():
            res["designs"][name]["route"] = t
        log("  route: " + ", ".join(f"{name} {statistics.median(t['kernel']) * 1e3:.1f} ms" for name, t in times.items()))

    # compaction (B's fold, Lance's compact_files + cleanup) after everything above
    for name in readers:
        if clock.over(name, "compaction"):
            continue
        before = disk_bytes(paths[name])
        w = DESIGNS[name].Writer(paths[name])
        with clock.charge(name):
            t0 = time.perf_counter()
            w.compact()
            res["designs"][name]["compact_s"] = time.perf_counter() - t0
        res["designs"][name]["compact_bytes"] = disk_bytes(paths[name]) - before
        if name == "lance-out":  # compaction must keep the questions' row order (outcomes are keyed by row)
            ids_after = LanceOut.Reader(paths[name]).ids()
            assert ids_after[:n] == [f"q{j}" for j in range(n)], "compaction reordered the questions"
        w.close()
    res["spent_s"] = clock.spent
    res["skipped"] = clock.skipped
    for p in paths.values():
        shutil.rmtree(p, ignore_errors=True)
    return res


def run_sustained(designs: list[str], n: int, steps: int, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """``steps`` rounds of (append 1, record 1) on an n-row bank: do single writes stay O(1) as versions,
    fragments and the log pile up? Then compaction, and one more round."""
    rng = np.random.default_rng(11)
    emb = unit_rows(rng, n)
    cap = rng.integers(-1, 2, (MODELS, n), dtype=np.int8)
    ids = [f"q{j}" for j in range(n)]
    out: dict[str, Any] = {}
    for name in designs:
        path = workdir / f"sustained-{name}"
        DESIGNS[name].create(path, emb, cap, ids, model_names(MODELS))
        w = DESIGNS[name].Writer(path)
        app, rec = [], []
        for s in range(steps):
            e, o = unit_rows(rng, 1), rng.integers(-1, 2, (MODELS, 1), dtype=np.int8)
            t0 = time.perf_counter()
            w.append(e, [f"s{s}"], o)
            t1 = time.perf_counter()
            w.record([(f"m{s % MODELS}", f"q{(s * 7919) % n}", s % 2)])
            t2 = time.perf_counter()
            app.append(t1 - t0)
            rec.append(t2 - t1)
            w.housekeeping()
        res = {"append_first": stats(app[:20]), "append_last": stats(app[-20:]), "record_first": stats(rec[:20]), "record_last": stats(rec[-20:])}
        res["metadata_bytes"] = _metadata_bytes(name, path)
        t0 = time.perf_counter()
        w.compact()
        res["compact_s"] = time.perf_counter() - t0
        after_a, after_r = [], []
        for s in range(10):
            e, o = unit_rows(rng, 1), rng.integers(-1, 2, (MODELS, 1), dtype=np.int8)
            t0 = time.perf_counter()
            w.append(e, [f"t{s}"], o)
            t1 = time.perf_counter()
            w.record([(f"m{s % MODELS}", f"q{(s * 104729) % n}", s % 2)])
            after_a.append(t1 - t0)
            after_r.append(time.perf_counter() - t1)
        res["append_after_compact"], res["record_after_compact"] = stats(after_a), stats(after_r)
        w.close()
        out[name] = res
        log(f"  sustained {name}: append {res['append_first']['median'] * 1e3:.1f} -> {res['append_last']['median'] * 1e3:.1f} ms, "
            f"record {res['record_first']['median'] * 1e3:.1f} -> {res['record_last']['median'] * 1e3:.1f} ms, metadata {res['metadata_bytes']} B")
        shutil.rmtree(path, ignore_errors=True)
    return out


def _metadata_bytes(name: str, path: Path) -> int:
    """Bytes a reader must fetch to learn the latest version: manifest (+ CURRENT)."""
    if name == "today":
        from smcs.bank import Bank

        return os.path.getsize(path / Bank.open(path).version / "manifest.json")
    if name.startswith("segments"):
        return os.path.getsize(path / "manifests" / f"{(path / 'CURRENT').read_text().strip()}.json")
    total = 0
    for sub in ("bank.lance", "questions.lance", "outcomes.lance"):
        versions = path / sub / "_versions"
        if versions.is_dir():
            # v2 manifest paths: _versions/<u64::MAX - version>.manifest, so the latest has the smallest name
            total += os.path.getsize(min(versions.glob("*.manifest"), key=lambda p: int(p.stem)))
    return total


def run_crash(designs: list[str], kills: int, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """SIGKILL a writer (appends and records in a loop) at random moments; reopen; check every commit."""
    out: dict[str, Any] = {}
    rnd = random.Random(24)
    for name in designs:
        path = workdir / f"crash-{name}"
        DESIGNS[name].create(path, crash_rows(0, CRASH_N0, CRASH_D), crash_outcomes(0, CRASH_N0, CRASH_R),
                             [f"q{j}" for j in range(CRASH_N0)], model_names(CRASH_R))
        res = {"kills": 0, "opened": 0, "content_ok": 0, "commits": 0, "leftovers": 0, "errors": []}
        for _ in range(kills):
            proc = spawn("crashwriter", name, str(path))
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if ready == "ready\n":
                time.sleep(rnd.uniform(0.05, 0.5))
            proc.kill()
            proc.wait()
            outs = proc.stdout.read().split("\n")[:-1]
            err = proc.stderr.read() if proc.stderr else ""
            if ready != "ready\n" or proc.returncode != -signal.SIGKILL:
                res["errors"].append(f"writer failed: {err[-500:]}")
                continue
            res["kills"] += 1
            res["commits"] += len(outs)
            reported = int(outs[-1]) if outs else 0
            res["leftovers"] += _leftovers(name, path)
            try:
                reader = DESIGNS[name].Reader(path)
                res["opened"] += 1
                emb, cap = reader.matrices()
                qids = reader.ids()
                order = np.array([int(q[1:]) for q in qids])
                nn = len(order)
                ok = (
                    nn >= reported and len(emb) == nn and cap.shape[1] == nn
                    and sorted(order.tolist()) == list(range(nn))
                    and np.allclose(emb, crash_rows(0, nn, CRASH_D)[order], atol=1e-6)
                    and np.array_equal(cap[:CRASH_R], crash_outcomes(0, nn, CRASH_R)[:, order])
                )
                res["content_ok"] += int(ok)
                if not ok:
                    res["errors"].append(f"content differs after a kill at N={nn} (reported {reported})")
            except Exception as e:  # noqa: BLE001 - what failed is the finding
                res["errors"].append(f"{type(e).__name__}: {e}")
        out[name] = res
        log(f"  crash {name}: {res['opened']}/{res['kills']} opened, {res['content_ok']} content ok, "
            f"{res['commits']} commits, {res['leftovers']} kills left debris, errors: {res['errors'][:2]}")
        shutil.rmtree(path, ignore_errors=True)
    return out


def _leftovers(name: str, path: Path) -> int:
    """1 when the kill landed inside a write (scratch, orphan, bytes past the committed end, stray files)."""
    if name == "today":
        current = (path / "CURRENT").read_text().strip()
        return int(any(e.name.startswith(".tmp-") or (e.name.startswith("v") and e.name > current) for e in path.iterdir()))
    if name == "segments":
        m = Segments.read_manifest(path)
        past = any(os.path.getsize(path / f) > size for f, size in m["files"].items() if f != EMB)
        stray = any(e.name.startswith(".tmp-") or int(e.name[1:7]) > m["version"] for e in (path / "manifests").iterdir()
                    if e.name.startswith((".tmp-", "v")))
        return int(past or stray)
    import lance

    stray = 0
    for sub in ("bank.lance", "questions.lance", "outcomes.lance"):
        if not (path / sub).is_dir():
            continue
        ds = lance.dataset(str(path / sub))
        used = {f.path for frag in ds.get_fragments() for f in frag.data_files()}
        present = {p.name for p in (path / sub / "data").iterdir()}
        stray += len(present - used)
    return int(stray > 0)


# ------------------------------------------------------------------------------------------- report


def _num(x: float) -> str:
    """x with 3 significant digits, never in exponent notation."""
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_s(xs: Sequence[float] | None, unit: str | None = None) -> str:
    """Median [min-max] of times in seconds, in ms below a second and in s above."""
    if not xs:
        return "-"
    med = statistics.median(xs)
    unit = unit or ("s" if med >= 1.0 else "ms")
    scale = {"ms": 1e3, "s": 1.0}[unit]
    if len(xs) == 1:
        return f"{_num(med * scale)} {unit}"
    return f"{_num(med * scale)} [{_num(min(xs) * scale)}-{_num(max(xs) * scale)}] {unit}"


def fmt_b(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.0f} B"


def table(res: dict[str, Any], markdown: bool = False) -> str:
    names = list(res["designs"])
    rows: list[tuple[str, list[str]]] = []
    d = res["designs"]

    def row(label: str, f: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for name in names:
            try:
                cells.append(f(d[name]))
            except (KeyError, TypeError, ValueError, statistics.StatisticsError):
                cells.append("-")
        rows.append((label, cells))

    row("create", lambda x: f"{fmt_s([x['create_s']])}, {fmt_b(x['create_bytes'])}")
    for op, label in (("append1", "append 1 question"), ("append100", "append 100 questions"), ("record1", "record 1 outcome"),
                      ("record100", "record 100 outcomes"), ("add_model", "add 1 model")):
        row(f"{label}: time", lambda x, op=op: fmt_s(x[op]["s"]))
        row(f"{label}: disk", lambda x, op=op: fmt_b(statistics.median(x[op]["bytes"])))
    row("writer open (id index)", lambda x: fmt_s(x["writer_open_s"]))
    row("cold open: open", lambda x: fmt_s([x["open_cold"]["open"]]))
    row("cold open: contiguous E, C", lambda x: fmt_s([x["open_cold"]["materialise"]]))
    row("cold open: first route", lambda x: fmt_s([x["open_cold"]["first_route"]]))
    row("cold open: total", lambda x: fmt_s([x["open_cold"]["open"] + x["open_cold"]["materialise"] + x["open_cold"]["first_route"]]))
    row("2nd process: open+E,C+route", lambda x: fmt_s([x["open_second"]["open"] + x["open_second"]["materialise"] + x["open_second"]["first_route"]]))
    row("2nd process: RSS anon / file", lambda x: f"{fmt_b(x['open_second']['mem']['RssAnon'])} / {fmt_b(x['open_second']['mem']['RssFile'])}")
    row("2nd process: PSS (1st alive)", lambda x: fmt_b(x["open_second"]["mem"].get("Pss")))
    for key, label in (("reload_append_hot", "reload after append (hot)"), ("reload_append_evicted", "reload after append (evicted)"),
                       ("reload_record_hot", "reload after record (hot)"), ("reload_record_evicted", "reload after record (evicted)")):
        row(f"{label}", lambda x, key=key: fmt_s([g["reload"] for g in x[key]]) + " (" + x[key][0]["kind"] + ")")
        row("  + first route after it", lambda x, key=key: fmt_s([g["first_route"] for g in x[key]]))
    row("followed snapshot == fresh open", lambda x: str(x["reload_matches_fresh_open"]))
    row("route kernel (warm)", lambda x: fmt_s(x["route"]["kernel"]))
    row("Router.route (warm)", lambda x: fmt_s(x["route"]["router"]))
    row("compaction: time, disk", lambda x: "none (every write copies)" if x is d.get("today") else f"{fmt_s([x['compact_s']])}, {fmt_b(x['compact_bytes'])}")
    if markdown:
        lines = [f"N = {res['n']:,} (d = {DIM}, R = {MODELS})", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += ["| " + label.strip() + " | " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for label, cells in rows]
        if res.get("skipped"):
            lines += ["", "Skipped (over the time budget): " + ", ".join(f"{k} from {v}" for k, v in res["skipped"].items())]
        lines += ["", "Time spent per design after creating it (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.get("spent_s", {}).items())]
        return "\n".join(lines)
    width = max(len(label) for label, _ in rows)
    colw = [max(len(name), *(len(cells[i]) for _, cells in rows)) for i, name in enumerate(names)]
    lines = [f"N = {res['n']:,}  (d = {DIM}, R = {MODELS})"]
    lines.append(" | ".join([" " * width, *(name.ljust(w) for name, w in zip(names, colw))]))
    lines.append("-|-".join(["-" * width, *("-" * w for w in colw)]))
    for label, cells in rows:
        lines.append(" | ".join([label.ljust(width), *(c.ljust(w) for c, w in zip(cells, colw))]))
    if res.get("skipped"):
        lines.append("skipped (over the time budget): " + ", ".join(f"{k} from {v}" for k, v in res["skipped"].items()))
    lines.append("time spent per design (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res.get("spent_s", {}).items()))
    return "\n".join(lines)


def report(results: dict[str, Any], markdown: bool = False) -> None:
    """Print the tables of a run (``results`` as ``--json`` saves them)."""
    print(results["header"])
    print("times: median [min-max] over the repeats; disk: allocated bytes added (median)")
    for res in results["sizes"]:
        print()
        print(table(res, markdown))
    if "sustained" in results:
        print()
        print(f"sustained: {results.get('sustained_rounds', 200)} rounds of (append 1, record 1) at N = {results['sizes'][0]['n']:,}; median of the first / last 20")
        for name, r in results["sustained"].items():
            print(f"  {name:10} append {fmt_s([r['append_first']['median']])} -> {fmt_s([r['append_last']['median']])}, "
                  f"record {fmt_s([r['record_first']['median']])} -> {fmt_s([r['record_last']['median']])}; "
                  f"latest manifest {fmt_b(r['metadata_bytes'])}; compaction {r['compact_s']:.2f} s; after it: append "
                  f"{fmt_s([r['append_after_compact']['median']])}, record {fmt_s([r['record_after_compact']['median']])}")
    if "crash" in results:
        print()
        print("crash: SIGKILL of a writer looping (append 1-5, re-record them) after 0.05-0.5 s, then reopen and check")
        for name, r in results["crash"].items():
            print(f"  {name:10} {r['opened']}/{r['kills']} reopened, {r['content_ok']} with every reported commit intact, "
                  f"{r['commits']} commits, {r['leftovers']} kills left debris; errors: {r['errors'][:3]}")


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        role = sys.argv[2]
        if role == "reader":
            child_reader(sys.argv[3], sys.argv[4])
        elif role == "route":
            child_route(json.loads(sys.argv[3]), int(sys.argv[4]))
        elif role == "crashwriter":
            child_crash_writer(sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1e4,1e5", help="bank sizes N, comma-separated (e.g. 1e4,1e5,1e6)")
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"subset of {', '.join(DESIGNS)}")
    parser.add_argument("--reps", type=int, default=5, help="repeats per write (3 at N >= 1e6)")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per design in the crash experiment (0: skip)")
    parser.add_argument("--sustained", type=int, default=200, help="rounds of (append 1, record 1) at the smallest size (0: skip)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one under /tmp)")
    parser.add_argument("--json", default=None, help="also write the raw measurements here")
    parser.add_argument("--report", default=None, help="measure nothing: print the tables of a --json file again")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args()
    if args.report:
        report(json.loads(Path(args.report).read_text()), args.markdown)
        return
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    designs = [d for d in args.designs.split(",") if d]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="spike-store-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        import lance
    except ImportError:
        parser.error("the spike needs pylance: .venv/bin/pip install pylance (not a dependency of smcs)")

    header = (f"CPU: {cpu_name()} ({os.cpu_count()} cores); numpy {np.__version__}, pylance {lance.__version__}; "
              f"python {sys.version.split()[0]}; command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    results: dict[str, Any] = {"header": header, "sizes": [], "sustained_rounds": args.sustained}
    try:
        if args.kills:
            log("crash experiment")
            results["crash"] = run_crash([d for d in designs if not getattr(DESIGNS[d], "WRITES_ONLY", False)], args.kills, workdir, log)
        if args.sustained:
            log(f"sustained writes at N={sizes[0]}")
            results["sustained"] = run_sustained(designs, sizes[0], args.sustained, workdir, log)
        for n in sizes:
            reps = args.reps if n < 1_000_000 else min(args.reps, 3)
            results["sizes"].append(run_size(n, designs, reps, workdir, log))
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report(results, args.markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
