"""SIGKILL a writing process at random moments: the bank must always open, validate, and hold every commit.

The worker cycles through every write path (append, record, add a model, and on a schema 2 bank the fold
of the outcome log), on a bank of either layout."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bank_crash_worker import MODELS, expected_outcomes, expected_questions, expected_rows, model_list

from smcs.bank import Bank, segments

WORKER = Path(__file__).with_name("bank_crash_worker.py")
KILLS = 32
MAX_DELAY_S = 0.2
INITIAL_QUESTIONS = 4


def _run_and_kill(path: Path, delay: float) -> list[tuple[str, int, int]]:
    """Start the worker, SIGKILL it ``delay`` seconds after it is ready; return the commits it reported."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready = proc.stdout.readline()
        if ready == "ready\n":
            time.sleep(delay)
    finally:
        proc.kill()
        proc.wait()
    with proc.stdout, proc.stderr:
        out, err = proc.stdout.read(), proc.stderr.read()
    assert ready == "ready\n" and proc.returncode == -signal.SIGKILL, f"the worker failed on its own:\n{err}"
    complete_lines = out.split("\n")[:-1]  # a line cut short by the kill has no newline yet
    return [(version, int(n), int(r)) for version, n, r in (line.split() for line in complete_lines)]


def _assert_content(bank: Bank) -> None:
    """The bank holds exactly the worker's deterministic content for its question and model counts."""
    n, r = bank.n_questions, bank.n_models
    expected = expected_rows(0, n)
    np.testing.assert_allclose(bank.embeddings, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(bank.capability, expected_outcomes(0, n, r))
    assert list(bank.questions) == expected_questions(0, n)
    assert bank.models == model_list(r)


def _assert_sound(path: Path, reported: list[tuple[str, int, int]]) -> None:
    """After a kill: the bank opens and validates, and every reported commit is present, valid and right."""
    current = Bank.open(path)
    current.validate()
    _assert_content(current)
    committed = Bank.versions(path)
    for version, n, r in reported:
        assert version in committed
        bank = Bank.open(path, version)
        assert (bank.n_questions, bank.n_models) == (n, r)
        bank.validate()
        _assert_content(bank)
    if reported:
        assert int(current.version[1:]) >= int(reported[-1][0][1:])


def _interrupted_mid_write(path: Path, current: Bank) -> bool:
    """Whether the kill left scratch, an orphan version, or bytes past the committed ends of the segments
    behind (i.e. it landed inside a commit)."""
    if any(e.name.startswith(".tmp-") or (e.name.startswith("v") and e.name > current.version) for e in path.iterdir()):
        return True
    seg = current.segments
    if seg is None:
        return False
    directory = path / segments.DIRECTORY
    ends = segments.committed(seg) | {segments.JOURNAL: seg.journal}
    return any((directory / file).stat().st_size > end for file, end in ends.items()) or any(
        e.name.startswith(".tmp-") for e in directory.iterdir()
    )


@pytest.mark.slow
@pytest.mark.parametrize("schema_version", [1, 2])
def test_sigkill_at_random_moments_never_corrupts_the_bank(tmp_path: Path, schema_version: int) -> None:
    path = tmp_path / "bank"
    Bank.create(
        path,
        embeddings=expected_rows(0, INITIAL_QUESTIONS),
        capability=expected_outcomes(0, INITIAL_QUESTIONS),
        questions=expected_questions(0, INITIAL_QUESTIONS),
        models=MODELS,
        schema_version=schema_version,
    )
    rng = random.Random(20240607)
    total_commits = mid_write = 0
    for _ in range(KILLS):
        reported = _run_and_kill(path, rng.uniform(0.0, MAX_DELAY_S))
        total_commits += len(reported)
        _assert_sound(path, reported)
        current = Bank.open(path)
        mid_write += _interrupted_mid_write(path, current)
        current.prune(keep=1)  # clears scratch and orphans too; bounds the disk used by the test
        layout = set() if schema_version == 1 else {segments.DIRECTORY}
        assert {e.name for e in path.iterdir()} - {"CURRENT.tmp"} == {".lock", "CURRENT", current.version} | layout
        if schema_version == 2:  # and the bases and logs no version holds any more
            seg = current.segments
            kept = {segments.EMBEDDINGS, segments.QUESTIONS, segments.JOURNAL, seg.base, seg.log}
            assert {e.name for e in (path / segments.DIRECTORY).iterdir()} == kept
    assert Bank.open(path).n_questions > INITIAL_QUESTIONS
    assert mid_write > 0, "no kill landed inside a commit: the test did not exercise recovery"
    print(f"{KILLS} kills, {total_commits} commits, {mid_write} kills landed inside a commit")
