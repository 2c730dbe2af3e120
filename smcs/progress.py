"""A progress line for long CLI work (bank builds, imports): count, rate and ETA on stderr.

On a terminal the line is rewritten in place (``\\r``); elsewhere (a log file, CI) a plain line is
written at most every ``interval_s`` seconds and once at the end, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
