"""The CLI progress line: counts, rate, ETA; in place on a terminal, sparse plain lines in a log."""

from __future__ import annotations

import io

from smcs.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_are_sparse_and_the_final_count_is_written_once() -> None:
    out = io.StringIO()
    progress = Progress(10, "answers", out=out, interval_s=3600)
    for done in range(1, 11):
        progress.update(done)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("answers 1/10 (10%)") and lines[1].startswith("answers 10/10 (100%)")
    assert "ETA done" in lines[1]


def test_a_terminal_line_is_rewritten_in_place_and_ended_at_close() -> None:
    out = Terminal()
    progress = Progress(4, "embedding", out=out, interval_s=0)
    progress.update(2, "half")
    progress.close()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "embedding 2/4 (50%)" in text and "half" in text


def test_resumed_work_counts_toward_the_total_but_not_the_rate() -> None:
    progress = Progress(100, "answers", out=io.StringIO())
    progress.start_at(40)
    progress.update(40)
    line = progress.line()
    assert "40/100 (40%)" in line and "0.0/s" in line and "ETA ?" in line
