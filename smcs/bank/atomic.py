"""Crash-safe file and directory writing on POSIX.

The bank's durability rests on three facts of POSIX filesystems: ``os.rename`` of a directory and
``os.replace`` of a file are atomic, data reaches the disk only after ``fsync`` of the file, and a new or
renamed directory entry reaches the disk only after ``fsync`` of the directory holding it. The helpers
here package those steps so that the store reads as a sequence of intentions (write, publish, point)
and no step forgets a flush.

Everything named ``.tmp-*`` (see ``TEMP_PREFIX``) is scratch: a crash may leave it behind, and the next
writer, holding the lock, deletes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"
"""Name prefix of scratch files and directories; anything carrying it may be deleted under the lock."""


class HashingWriter:
    """A write-only binary stream that passes bytes to a file and keeps their SHA-256."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._sha = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        """Write ``data`` through to the file and add it to the running hash; return the byte count."""
        self._sha.update(data)
        return self._file.write(data)

    def hexdigest(self) -> str:
        """SHA-256 (hex) of everything written so far."""
        return self._sha.hexdigest()


Fill = Callable[[HashingWriter], None]
"""Writes the bytes of one new file (``write_synced``)."""


def fsync_dir(path: Path) -> None:
    """Flush directory ``path``'s entries (creations, renames, deletions inside it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, fill: Fill) -> str:
    """Create the new file ``path``, let ``fill`` write its bytes, fsync it; return its SHA-256 (hex).

    The file is opened exclusively (it must not exist). The caller fsyncs the directory once all its
    files are written; this function only makes the file's own bytes durable.
    """
    with open(path, "xb") as f:
        writer = HashingWriter(f)
        fill(writer)
        f.flush()
        os.fsync(f.fileno())
    return writer.hexdigest()


def replace_synced(path: Path, data: bytes) -> None:
    """Atomically replace the small file ``path`` with ``data``, durably.

    Writes ``<name>.tmp`` next to it, fsyncs it, ``os.replace``s it over ``path`` and fsyncs the
    directory: a reader (or a crash) sees either the old content or the new one, never a mixture.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def make_temp_dir(parent: Path) -> Path:
    """Create a fresh scratch directory ``parent/.tmp-<random>`` and return its path."""
    return Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))


def publish_dir(tmp: Path, final: Path) -> None:
    """Durably rename the fully written directory ``tmp`` to ``final`` (which must not exist).

    Fsyncs ``tmp`` first (so its entries are on disk before it becomes visible under its final name),
    then renames, then fsyncs the parent so the rename itself survives a crash.
    """
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def discard_dir(path: Path) -> None:
    """Delete the directory ``path`` so that a crash midway never leaves a half-deleted ``path``.

    The directory is first renamed to a scratch name (atomic), then removed; a crash during removal
    leaves only scratch, which the next writer deletes.
    """
    scratch = make_temp_dir(path.parent)
    os.rename(path, scratch / path.name)
    fsync_dir(path.parent)
    shutil.rmtree(scratch)


def remove_scratch(parent: Path) -> None:
    """Delete every ``.tmp-*`` file or directory in ``parent`` (left by crashed or failed writers).

    Call only while holding the writers' lock: an unlocked call could delete another writer's work.
    """
    for entry in parent.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the duration of the block.

    The lock belongs to this open file description, so it excludes other processes and other threads
    of this process alike, and the kernel releases it when the holder dies, so a crash never leaves the
    lock held.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the description releases the flock
