"""Writer process for ``test_bank_crash``: commits deterministic changes to a bank until it is killed.

Usage: ``python tests/bank_crash_worker.py BANK``. Prints ``ready`` once the bank is open, then, after
each write returns, ``<version> <n_questions> <n_models>`` (flushed), so the parent knows which versions
were committed before it sent SIGKILL.

The content of every version is a function of its question and model counts alone: row j is
``expected_rows``'s row j, question j has id ``q<j>``, model r is ``model_list``'s r-th, and model r's
outcome on question j is ``expected_outcomes``'s cell (r, j). The writes cycle through every write path:
appending a batch of 1-5 such questions (with their outcomes), re-recording the outcomes of the last
batch (same values: a new version with unchanged content), adding a model (with its outcomes on every
question) and, on a schema 2 bank, folding the outcome log (same content again).
"""

from __future__ import annotations

import sys

import numpy as np

from smcs.bank import Bank, ModelInfo, Question

DIM = 8
MODELS = (ModelInfo("m0"), ModelInfo("m1"), ModelInfo("m2"))


def model_list(n_models: int) -> tuple[ModelInfo, ...]:
    """The first ``n_models`` models: ``MODELS``, then ``e0, e1, …`` as the worker adds them."""
    return MODELS + tuple(ModelInfo(f"e{i}") for i in range(n_models - len(MODELS)))


def expected_rows(start: int, stop: int) -> np.ndarray:
    """Unnormalised embeddings of questions start..stop-1: [1, sin(0.37·(j+1)·k) for k = 1..DIM-1]."""
    j = np.arange(start, stop, dtype=np.float64)[:, None] + 1.0
    k = np.arange(1, DIM, dtype=np.float64)[None, :]
    return np.hstack([np.ones((stop - start, 1)), np.sin(0.37 * j * k)])


def expected_outcomes(start: int, stop: int, n_models: int = len(MODELS), first_model: int = 0) -> np.ndarray:
    """Outcomes of models first_model..n_models-1 on questions start..stop-1: ((7j + 3r + r²) mod 3) - 1."""
    j = np.arange(start, stop)[None, :]
    r = np.arange(first_model, n_models)[:, None]
    return (7 * j + 3 * r + r * r) % 3 - 1


def expected_questions(start: int, stop: int) -> list[Question]:
    """Questions start..stop-1."""
    return [Question(id=f"q{j}", text=f"question {j}", source="crash-test") for j in range(start, stop)]


def _append(bank: Bank, size: int) -> Bank:
    start, stop = bank.n_questions, bank.n_questions + size
    return bank.append_questions(
        expected_rows(start, stop), expected_questions(start, stop), expected_outcomes(start, stop, bank.n_models)
    )


def _rerecord(bank: Bank, size: int) -> Bank:
    start, stop = bank.n_questions - size, bank.n_questions
    values = expected_outcomes(start, stop, bank.n_models)
    return bank.record_outcomes(
        (model.name, f"q{start + c}", int(values[r, c])) for r, model in enumerate(bank.models) for c in range(stop - start)
    )


def _add_model(bank: Bank) -> Bank:
    r = bank.n_models
    return bank.add_model(model_list(r + 1)[r], expected_outcomes(0, bank.n_questions, r + 1, r)[0])


def main(path: str) -> None:
    """Write forever, reporting each committed version."""
    bank = Bank.open(path)
    print("ready", flush=True)
    step = 0
    while True:
        size = 1 + step % 5
        kind = step % 8
        if kind in (0, 2, 4, 6):
            bank = _append(bank, size)
        elif kind in (1, 5):
            bank = _rerecord(bank, min(size, bank.n_questions))
        elif kind == 3:
            bank = _add_model(bank)
        else:
            bank = bank.fold()
        print(bank.version, bank.n_questions, bank.n_models, flush=True)
        step += 1


if __name__ == "__main__":
    main(sys.argv[1])
