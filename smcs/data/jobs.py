"""The resumable batch runner every ``smcs data`` job shares.

Input: a JSON Lines file of instructions, ``{"id"?, "instruction"}`` a line (other fields are ignored;
``id`` is a string or an integer and defaults to the line number; ids are compared as strings and must
be unique). Output: JSON Lines, one record per instruction, each appended with a single ``os.write`` to
an ``O_APPEND`` file and fsynced before it counts, so a job killed at any moment loses at most the
instructions in flight. Rerunning the same command skips every id already in the output (and in the
job's *skipped* file, when it has one: instructions that were judged and gave no record, which a rerun
would only judge again the same way); a partial last line, the trace of a kill during a write, is cut
off first. An instruction whose work failed (every model call failed, a strategy's quorum was not met)
is reported and not recorded, so a rerun retries it.

Work items run ``concurrency`` at a time (each backend keeps its own ``max_concurrency`` too) and a
``smcs.progress.Progress`` line on stderr counts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import msgspec

from ..core.pipeline import QuorumNotMet
from ..errors import InputError
from ..jsonl import decode_lines
from ..progress import Progress


class InstructionLine(msgspec.Struct, frozen=True):
    """One line of an instructions file (unknown fields are allowed and ignored)."""

    instruction: Annotated[str, msgspec.Meta(min_length=1)]
    id: str | int | None = None


@dataclass(frozen=True)
class Instruction:
    """An instruction to work on: its ``id`` (a string), text, and the line it came from."""

    id: str
    instruction: str
    line: int


def read_instructions(path: Path) -> list[Instruction]:
    """The instructions of ``path``; ``ValueError`` ``"PATH:LINE: why"`` for a line that is not a
    ``{"instruction": ...}`` object, a blank instruction or an id used twice."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the instructions file ({exc.strerror or exc})") from None
    items: list[Instruction] = []
    seen: dict[str, int] = {}
    for number, line in decode_lines(data, InstructionLine, path):
        if not line.instruction.strip():
            raise InputError(f"{path}:{number}: the instruction is blank")
        ident = str(number) if line.id is None else str(line.id)
        if ident in seen:
            raise InputError(f"{path}:{number}: id {ident!r} is used again (first on line {seen[ident]})")
        seen[ident] = number
        items.append(Instruction(ident, line.instruction, number))
    return items


def item_seed(base: int, ident: str) -> int:
    """The request seed of instruction ``ident`` under the job's ``--seed`` ``base``: stable across runs,
    so a rerun sends the same requests (31 bits, which every server accepts)."""
    digest = hashlib.blake2b(f"{base}\0{ident}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class _IdOnly(msgspec.Struct):
    id: str | int


class RecordLog:
    """An output JSON Lines file opened for appending: ``done`` holds the ids of its records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.done: set[str] = self._load()
        except BaseException:
            os.close(self._fd)
            raise
        self._encoder = msgspec.json.Encoder()

    def _load(self) -> set[str]:
        """The ids of the complete records; a last line without its newline (a cut write) is cut off."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        complete = data.rfind(b"\n") + 1
        if complete < size:
            os.ftruncate(self._fd, complete)
            os.fsync(self._fd)
        decoder = msgspec.json.Decoder(_IdOnly)
        done = set()
        for number, raw in enumerate(data[:complete].splitlines(), start=1):
            if raw.strip():
                try:
                    done.add(str(decoder.decode(raw).id))
                except msgspec.MsgspecError as exc:
                    raise InputError(f"{self.path}:{number}: not a record of this job ({exc}); move the file away to start over") from None
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` (which has an ``id``) as one line and make it durable before returning."""
        line = self._encoder.encode(record) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
        os.fsync(self._fd)
        self.done.add(str(record["id"]))

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class Outcome:
    """What the work on one instruction gave: a ``record`` for the output, or a ``skipped`` record (with
    ``id`` and ``reason``) for the skipped file."""

    record: dict[str, Any] | None = None
    skipped: dict[str, Any] | None = None


@dataclass
class JobReport:
    """What a run did: instructions in the file, resumed (already recorded), written and skipped now,
    and the failures (id, why) a rerun retries."""

    total: int
    resumed: int
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, label: str) -> str:
        return (f"{label}: {self.written} written, {self.skipped} skipped, {len(self.failed)} failed, "
                f"{self.resumed} already done, of {self.total}")


Work = Callable[[Instruction], Awaitable[Outcome]]


def skipped_path(out: Path) -> Path:
    """Where a job that can skip instructions records them: ``OUT.skipped.jsonl`` beside ``OUT.jsonl``."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".skipped.jsonl")


async def run_job(
    items: Sequence[Instruction],
    work: Work,
    out: RecordLog,
    *,
    skipped: RecordLog | None = None,
    concurrency: int = 4,
    progress: Progress | None = None,
) -> JobReport:
    """Run ``work`` on every instruction not yet in ``out`` (or ``skipped``), ``concurrency`` at a time,
    appending each outcome as it comes; a ``QuorumNotMet`` (every call the instruction's result depends on
    failed) is counted as a failure a rerun retries, any other error cancels the rest and propagates."""
    if concurrency < 1:
        raise InputError(f"--concurrency must be >= 1, got {concurrency}")
    done = out.done | (skipped.done if skipped is not None else set())
    pending = [item for item in items if item.id not in done]
    report = JobReport(total=len(items), resumed=len(items) - len(pending))
    if progress is not None:
        progress.start_at(report.resumed)
    queue: Iterator[Instruction] = iter(pending)

    async def worker() -> None:
        for item in queue:  # shared: each instruction goes to exactly one worker
            try:
                outcome = await work(item)
            except QuorumNotMet as exc:
                report.failed.append((item.id, str(exc)))
                note = f"{item.id}: failed"
            else:
                if outcome.record is not None:
                    out.append(outcome.record)
                    report.written += 1
                    note = f"{item.id}: written"
                else:
                    if skipped is None or outcome.skipped is None:
                        raise RuntimeError(f"the work on {item.id} gave neither a record nor a skipped record")
                    skipped.append(outcome.skipped)
                    report.skipped += 1
                    note = f"{item.id}: skipped"
            if progress is not None:
                progress.update(report.resumed + report.written + report.skipped + len(report.failed), note)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, max(len(pending), 1))):
            group.create_task(worker())
    return report


def print_report(report: JobReport, label: str, err: TextIO | None = None) -> int:
    """The report on stderr (each failure on a line of its own); exit status 0, or 1 when some failed."""
    stream = sys.stderr if err is None else err
    print(report.summary(label), file=stream)
    for ident, why in report.failed:
        print(f"failed {ident}: {why}", file=stream)
    if report.failed:
        print("run the same command again to retry the failed instructions", file=stream)
    return 1 if report.failed else 0
