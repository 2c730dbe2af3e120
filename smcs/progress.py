"""A progress line for long CLI work (bank builds, imports): count, rate and ETA on stderr.

On a terminal the line is rewritten in place (``\\r``); elsewhere (a log file, CI) a plain line is
written at most every ``interval_s`` seconds and once at the end, so logs stay short.

``Steps`` is the short form for work of known size in bytes (verifying a bank's hashes): one line per
tenth done, and none at all for work too small to wait for.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

STEPS_MIN_BYTES = 256 << 20
"""``Steps`` stays silent for work smaller than this (verifying it takes a fraction of a second)."""


class Progress:
    """``Progress(total, "embedding")``; call ``update(done)`` as work completes and ``close()`` at the end."""

    def __init__(self, total: int, label: str, *, out: TextIO | None = None, interval_s: float | None = None) -> None:
        self.total = total
        self.label = label
        self._out = sys.stderr if out is None else out
        self._tty = self._out.isatty()
        self._interval_s = (0.1 if self._tty else 10.0) if interval_s is None else interval_s
        self._start = time.monotonic()
        self._last_shown = -float("inf")
        self._shown_done: int | None = None
        self._done = 0
        self._first = 0

    def start_at(self, done: int) -> None:
        """Work already done before this run (a resumed build): counted, but not in the rate."""
        self._done = self._first = done

    def update(self, done: int, note: str = "") -> None:
        """Set the count of completed items to ``done`` and show the line if it is due."""
        self._done = done
        now = time.monotonic()
        if now - self._last_shown >= self._interval_s:
            self._last_shown = now
            self._show(now, note, final=False)

    def close(self, note: str = "") -> None:
        """Show the final line (and end it with a newline on a terminal); in a log, not again when the
        last line shown already had the final count."""
        if self._tty or self._shown_done != self._done:
            self._show(time.monotonic(), note, final=True)

    def line(self, now: float | None = None, note: str = "") -> str:
        """The progress text: ``label done/total (pct) rate/s ETA``."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        fresh = self._done - self._first
        rate = fresh / elapsed if elapsed > 0 else 0.0
        left = self.total - self._done
        eta = _duration(left / rate) if rate > 0 and left > 0 else ("done" if left <= 0 else "?")
        share = f" ({100 * self._done / self.total:.0f}%)" if self.total else ""
        text = f"{self.label} {self._done}/{self.total}{share}  {rate:.1f}/s  ETA {eta}  elapsed {_duration(elapsed)}"
        return f"{text}  {note}" if note else text

    def _show(self, now: float, note: str, *, final: bool) -> None:
        self._shown_done = self._done
        text = self.line(now, note)
        if self._tty:
            self._out.write(f"\r\x1b[K{text}" + ("\n" if final else ""))
        else:
            self._out.write(text + "\n")
        self._out.flush()


class Steps:
    """A line per ``step`` (a tenth by default) of work measured in bytes: ``Steps("verifying bank X")``
    is a ``progress(done, total)`` callback (``Bank.verify``'s) that writes ``LABEL: 30% of 1.2 GiB`` as
    each step is passed, through ``write`` (default: a line on stderr; a server passes its logger), and
    nothing when ``total`` is under ``min_bytes``."""

    def __init__(
        self, label: str, write: Callable[[str], None] | None = None, *, min_bytes: int = STEPS_MIN_BYTES, step: float = 0.1
    ) -> None:
        self.label = label
        self._write = write if write is not None else _to_stderr
        self._min_bytes = min_bytes
        self._step = step
        self._next = 0.0  # the fraction at which the next line is due

    def __call__(self, done: int, total: int) -> None:
        if total < self._min_bytes or total <= 0:
            return
        fraction = done / total
        if fraction + 1e-12 < self._next:
            return
        self._write(f"{self.label}: {100 * fraction:.0f}% of {_size(total)}")
        self._next = (int(fraction / self._step + 1e-9) + 1) * self._step


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _size(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``3.4 MiB``, ``1.2 GiB``."""
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
