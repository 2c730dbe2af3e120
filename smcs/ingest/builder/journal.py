"""The build journal: what an interrupted ``smcs bank build`` has already done, on disk as it happens.

A journal is a directory::

    meta.json        the questions file's SHA-256 and the embedder id the build was started with
    embeddings.RULE.npy  the question embeddings under query-text rule RULE (written once, atomically;
                     another rule's build embeds again but keeps the outcomes)
    outcomes.jsonl   one JournalEntry a line, appended and fsynced as each answer is checked

An entry is made durable (``os.write`` of the whole line to an ``O_APPEND`` file, then ``fsync``) before
the build counts it, so a build killed at any point loses at most the calls in flight, never a recorded
outcome. A kill during the write can leave a partial last line; opening the journal drops it (truncating
the file back to the last complete line) so that the next append starts on a line of its own.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import msgspec
import numpy as np

from smcs.errors import InputError
from smcs.bank import atomic

META = "meta.json"
OUTCOMES = "outcomes.jsonl"


class JournalMismatch(InputError):
    """The journal directory was started for another questions file or embedder."""


class JournalMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``meta.json``: what the journal's outcomes and embeddings belong to."""

    questions_sha256: str
    embedder_id: str


class JournalEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One checked answer: ``model``'s response to question ``id`` was ``correct`` (or not).

    ``extracted`` is the answer the checker found (None: none), ``reason`` why it judged so,
    ``response`` the raw text when the build keeps responses (None otherwise), and the tokens the call
    used as the backend reported them (0: not reported; journals written before they were kept).
    """

    model: str
    id: str
    correct: bool
    extracted: str | None = None
    reason: str = ""
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Journal:
    """An open journal: ``done`` holds the outcomes recorded so far; ``record`` adds one durably."""

    def __init__(self, path: Path, entries: list[JournalEntry], fd: int) -> None:
        self.path = path
        self.entries = entries
        self.done: dict[tuple[str, str], bool] = {(e.model, e.id): e.correct for e in entries}
        self._fd = fd
        self._encoder = msgspec.json.Encoder()

    @classmethod
    def open(cls, path: str | os.PathLike[str], questions_sha256: str, embedder_id: str) -> Journal:
        """Open (or start) the journal at ``path`` for this questions file and embedder.

        ``JournalMismatch`` when it was started for others: mixing outcomes of two question sets would
        put answers under the wrong questions.
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        meta = JournalMeta(questions_sha256, embedder_id)
        meta_path = root / META
        if meta_path.exists():
            found = msgspec.json.decode(meta_path.read_bytes(), type=JournalMeta)
            if found != meta:
                what = "questions file" if found.questions_sha256 != questions_sha256 else f"embedder ({found.embedder_id})"
                raise JournalMismatch(
                    f"journal {root} belongs to another {what}; remove it to start over, or pass another --journal"
                )
        else:
            atomic.replace_synced(meta_path, msgspec.json.encode(meta))
            atomic.fsync_dir(root)
        fd = os.open(root / OUTCOMES, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            entries = _read_and_trim(fd, root / OUTCOMES)
        except BaseException:
            os.close(fd)
            raise
        return cls(root, entries, fd)

    def record(self, entry: JournalEntry) -> None:
        """Append ``entry`` and make it durable before returning."""
        line = self._encoder.encode(entry) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"short write to {self.path / OUTCOMES}: {written} of {len(line)} bytes")
        os.fsync(self._fd)
        self.entries.append(entry)
        self.done[(entry.model, entry.id)] = entry.correct

    def load_embeddings(self, n: int, dim: int, query_text: str) -> np.ndarray | None:
        """The embeddings stored under query-text rule ``query_text`` if they are there with shape ``(n, dim)``, else None."""
        path = self.path / embeddings_file(query_text)
        if not path.exists():
            return None
        try:
            rows = np.load(path, allow_pickle=False)
        except (ValueError, EOFError) as exc:  # not an .npy file, or a damaged one
            raise InputError(f"{path}: damaged embeddings file ({exc}); remove it to embed again") from None
        return rows if rows.shape == (n, dim) and rows.dtype == np.float32 else None

    def save_embeddings(self, rows: np.ndarray, query_text: str) -> None:
        """Store the question embeddings made under ``query_text`` atomically (a crash leaves the old file or none)."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)
        atomic.replace_synced(self.path / embeddings_file(query_text), buffer.getvalue())
        atomic.fsync_dir(self.path)

    def close(self) -> None:
        """Close the outcomes file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embeddings_file(query_text: str) -> str:
    """The name of the journal's embeddings made under query-text rule ``query_text``."""
    return f"embeddings.{query_text}.npy"


def _read_and_trim(fd: int, path: Path) -> list[JournalEntry]:
    """The complete entries of the outcomes file; an incomplete or undecodable last line (a write cut
    short by a crash) is cut off. A bad line anywhere else is a ``ValueError``: the journal is damaged."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    decoder = msgspec.json.Decoder(JournalEntry)
    entries: list[JournalEntry] = []
    good_end = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last:
            break  # the text after the final newline: empty, or a line the crash cut short
        try:
            entries.append(decoder.decode(raw))
        except msgspec.MsgspecError as exc:
            if number == len(lines) - 1 and not lines[-1]:
                break  # a complete-looking last line that does not decode: also a cut write
            raise InputError(f"{path}:{number}: damaged journal line ({exc})") from None
        good_end += len(raw) + 1
    if good_end < size:
        os.ftruncate(fd, good_end)
        os.fsync(fd)
    return entries
