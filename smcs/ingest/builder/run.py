"""``build_bank``: embed the questions, ask every model every question, check each answer, write the bank.

The build is resumable: each checked answer goes to the journal (``smcs.ingest.builder.journal``) before it
counts, and a restarted build asks only the (model, question) pairs the journal does not hold. The bank
itself is written once, at the end, as its first version (``Bank.create``: atomic), with 1/0 for every
recorded outcome and -1 where a call failed; rerunning the build retries those.

Calls go out ``concurrency`` at a time over all models (each backend keeps its own ``max_concurrency``
too). Each call's sampling seed is derived from (model, question id), so a rebuild asks the same thing. A
model whose failures say it cannot be reached at all (setup or auth errors) is given up after its first
such failure rather than called for every question.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
import numpy as np

from smcs.bank import Bank, ModelInfo
from smcs.grading.checkers import CheckResult, check_answer
from smcs.core.messages import Completion
from smcs.core.pipeline import CallFailed, ModelCall
from smcs.core.query_text import DEFAULT_QUERY_TEXT_RULE, query_texts
from smcs.backends.pool import ModelPool
from smcs.embed import AsyncEmbedder

from smcs.ingest.builder.journal import Journal, JournalEntry
from smcs.ingest.builder.questions import BuildQuestion, question_prompt
from smcs.errors import InputError

FATAL_KINDS = frozenset({"setup", "auth"})
"""Failure kinds after which a model is not called again in this build."""


class BuildReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a build did.

    Attributes:
        bank: the bank directory written (None: no ``out``, or calls failed without ``allow_missing``).
        version: its version.
        questions, models: the bank's size.
        calls: model calls made by this run (resumed pairs are not called again).
        resumed: outcomes taken from the journal of an earlier run.
        failures: per model, calls that failed in this run (their outcomes stay -1).
        given_up: per model, why it was not called any more (setup or auth failure).
        accuracy: per model, share correct among its recorded outcomes (NaN: none).
        elapsed_s: wall time of this run.
    """

    bank: str | None
    version: str | None
    questions: int
    models: list[str]
    calls: int
    resumed: int
    failures: dict[str, int]
    given_up: dict[str, str]
    accuracy: dict[str, float]
    elapsed_s: float


def call_seed(model: str, question_id: str) -> int:
    """The sampling seed of ``model`` on ``question_id``: stable across runs and machines (31 bits, which
    every server accepts)."""
    digest = hashlib.blake2b(f"{model}\0{question_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


async def build_bank(
    questions: Sequence[BuildQuestion],
    models: Sequence[ModelInfo],
    pool: ModelPool,
    embedder: AsyncEmbedder,
    journal: Journal,
    out: Path | None,
    *,
    concurrency: int = 8,
    keep_responses: bool = False,
    allow_missing: bool = False,
    provenance: dict[str, str] | None = None,
    check: Callable[..., CheckResult] = check_answer,
    on_progress: Callable[[int, int, str], None] | None = None,
    query_text: str = DEFAULT_QUERY_TEXT_RULE,
) -> BuildReport:
    """Build the bank of ``questions`` x ``models`` into ``out`` (a new or empty directory; None: only
    fill the journal).

    ``on_progress(done, total, note)`` is called after each recorded outcome (``done`` counts the
    journal's too). Every model must be in ``pool``. The bank is written only when every call
    succeeded, or with ``allow_missing`` (failed pairs are then -1, "not evaluated"); otherwise the
    report counts the failures and a rerun retries just those. ``provenance`` goes to the manifest.
    The questions are embedded under the query-text rule ``query_text``, which the manifest records.
    """
    if concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {concurrency}")
    if out is not None:
        Bank.require_creatable(out)  # before any model is asked, not after the whole build
    missing = [m.name for m in models if m.name not in pool]
    if missing:
        raise InputError(f"models without a backend in the configuration: {', '.join(missing)}")
    started = time.monotonic()
    embeddings = await _embeddings(questions, embedder, journal, query_text)
    total = len(questions) * len(models)
    resumed = sum((m.name, q.id) in journal.done for m in models for q in questions)
    failures = {m.name: 0 for m in models}
    given_up: dict[str, str] = {}
    calls = 0
    lock = asyncio.Lock()  # one journal write at a time, in arrival order

    async def ask(model: str, question: BuildQuestion) -> None:
        nonlocal calls
        if model in given_up:
            return
        result = await pool.call(ModelCall(model=model, messages=question_prompt(question), seed=call_seed(model, question.id)))
        calls += 1
        if isinstance(result, CallFailed):
            failures[model] += 1
            if result.kind in FATAL_KINDS:
                given_up.setdefault(model, f"{result.kind}: {result.message}")
            return
        checked = await _checked(check, question, result)
        entry = JournalEntry(
            model=model, id=question.id, correct=checked.correct, extracted=checked.extracted, reason=checked.reason,
            response=result.text if keep_responses else None,
            prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        )
        async with lock:
            journal.record(entry)
        if on_progress is not None:
            on_progress(len(journal.done), total, f"{model}: {checked.reason}")

    pending = ((m.name, q) for q in questions for m in models if (m.name, q.id) not in journal.done)
    await _run_bounded(pending, ask, concurrency)
    capability = _capability(questions, models, journal)
    tokens = _tokens(journal)
    accuracy = {m.name: _share_correct(row) for m, row in zip(models, capability)}
    bank = None
    complete = not any(failures.values())
    if out is not None and (complete or allow_missing):
        bank = Bank.create(
            out, embeddings=embeddings, capability=capability, questions=[q.bank_question(tokens.get(q.id)) for q in questions],
            models=list(models), embedder=msgspec.structs.replace(embedder.info, query_text=query_text),
            provenance=provenance,
        )
    return BuildReport(
        bank=str(bank.path) if bank else None, version=bank.version if bank else None, questions=len(questions),
        models=[m.name for m in models], calls=calls, resumed=resumed, failures=failures, given_up=given_up,
        accuracy=accuracy, elapsed_s=time.monotonic() - started,
    )


async def _embeddings(questions: Sequence[BuildQuestion], embedder: AsyncEmbedder, journal: Journal, rule: str) -> np.ndarray:
    """The question embeddings under query-text ``rule``: from the journal when an earlier run stored them,
    else computed and stored."""
    rows = journal.load_embeddings(len(questions), embedder.info.dim, rule)
    if rows is None:
        rows = await embedder.embed(query_texts([q.question for q in questions], rule))
        journal.save_embeddings(rows, rule)
    return rows


async def _checked(check: Callable[..., CheckResult], question: BuildQuestion, completion: Completion) -> CheckResult:
    """The checker's verdict; code answers are run (in a subprocess) off the event loop."""
    args = (question.task, completion.text, question.answer)
    options = {"choices": question.choices, "tests": question.tests}
    if question.task == "code":
        return await asyncio.to_thread(check, *args, **options)
    return check(*args, **options)


async def _run_bounded(
    pending: Iterator[tuple[str, BuildQuestion]], ask: Callable[[str, BuildQuestion], object], concurrency: int
) -> None:
    """Run ``ask`` on every pair of ``pending`` with at most ``concurrency`` in flight; the first error
    cancels the rest and propagates."""

    async def worker() -> None:
        for model, question in pending:  # a shared iterator: each pair goes to exactly one worker
            await ask(model, question)  # type: ignore[misc]

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


def _capability(questions: Sequence[BuildQuestion], models: Sequence[ModelInfo], journal: Journal) -> np.ndarray:
    """R x N int8: 1/0 for each outcome in the journal, -1 elsewhere."""
    matrix = np.full((len(models), len(questions)), -1, dtype=np.int8)
    for r, model in enumerate(models):
        for j, question in enumerate(questions):
            outcome = journal.done.get((model.name, question.id))
            if outcome is not None:
                matrix[r, j] = int(outcome)
    return matrix


def _tokens(journal: Journal) -> dict[str, dict[str, dict[str, int]]]:
    """Per question id, the tokens each model used on it (``smcs.core.costs.TOKENS_KEY``'s form), for the
    calls whose backend reported them."""
    used: dict[str, dict[str, dict[str, int]]] = {}
    for entry in journal.entries:
        if entry.prompt_tokens or entry.completion_tokens:
            used.setdefault(entry.id, {})[entry.model] = {"prompt": entry.prompt_tokens, "completion": entry.completion_tokens}
    return used


def _share_correct(row: np.ndarray) -> float:
    known = row >= 0
    return float((row[known] == 1).mean()) if known.any() else float("nan")
