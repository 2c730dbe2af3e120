"""Writer process for ``test_bank_crash``: commits deterministic changes to a bank until it is killed.

Usage: ``python tests/bank_crash_worker.py BANK``. Prints ``ready`` once the bank is open, then, after
each write returns, ``<version> <n_questions>`` (flushed), so the parent knows which versions were
committed before it sent SIGKILL.

The content of every version is a function of its question count alone: row j is ``expected_rows``'s
row j, question j has id ``q<j>``, and model r's outcome on question j is ``expected_outcomes``'s cell
(r, j). Writes alternate between appending a batch of 1-5 such questions (with their outcomes) and
re-recording the outcomes of the last batch (same values: a new version with unchanged content), so
both write paths are interrupted.
"""

from __future__ import annotations

import sys

import numpy as np

from smcs.bank import Bank, ModelInfo, Question

DIM = 8
MODELS = (ModelInfo("m0"), ModelInfo("m1"), ModelInfo("m2"))


def expected_rows(start: int, stop: int) -> np.ndarray:
    """Unnormalised embeddings of questions start..stop-1: [1, sin(0.37·(j+1)·k) for k = 1..DIM-1]."""
    j = np.arange(start, stop, dtype=np.float64)[:, None] + 1.0
    k = np.arange(1, DIM, dtype=np.float64)[None, :]
    return np.hstack([np.ones((stop - start, 1)), np.sin(0.37 * j * k)])


def expected_outcomes(start: int, stop: int) -> np.ndarray:
    """Outcomes of every model on questions start..stop-1: ((7j + 3r) mod 3) - 1."""
    j = np.arange(start, stop)[None, :]
    r = np.arange(len(MODELS))[:, None]
    return (7 * j + 3 * r) % 3 - 1


def expected_questions(start: int, stop: int) -> list[Question]:
    """Questions start..stop-1."""
    return [Question(id=f"q{j}", text=f"question {j}", source="crash-test") for j in range(start, stop)]


def _append(bank: Bank, size: int) -> Bank:
    start, stop = bank.n_questions, bank.n_questions + size
    return bank.append_questions(
        expected_rows(start, stop), expected_questions(start, stop), expected_outcomes(start, stop)
    )


def _rerecord(bank: Bank, size: int) -> Bank:
    start, stop = bank.n_questions - size, bank.n_questions
    values = expected_outcomes(start, stop)
    return bank.record_outcomes(
        (model.name, f"q{start + c}", int(values[r, c])) for r, model in enumerate(MODELS) for c in range(stop - start)
    )


def main(path: str) -> None:
    """Write forever, reporting each committed version."""
    bank = Bank.open(path)
    print("ready", flush=True)
    step = 0
    while True:
        size = 1 + step % 5
        bank = _append(bank, size) if step % 2 == 0 else _rerecord(bank, min(size, bank.n_questions))
        print(bank.version, bank.n_questions, flush=True)
        step += 1


if __name__ == "__main__":
    main(sys.argv[1])
