"""Wall time of ``smcs bank fit`` on a synthetic bank, stage by stage.

    .venv/bin/python benchmarks/fit_time.py [--rows 100000] [--dim 384] [--models 15] [--sources 10] [--profile] [--out DIR]

Builds a synthetic bank (``scoring_bank``: topic clusters grouped into ``--sources`` sources, each row's
``Question.source`` set, outcomes that depend on the model, the source and the topic) in a temporary
directory, then does what ``smcs bank fit BANK`` does: ``smcs.core.fit.fit_scorer`` with the default
settings (a progress callback timestamps each stage as it starts), then ``Bank.with_scorer``. It prints
each stage's wall and CPU time (CPU over wall: how many cores the stage kept busy), the total, and the
fitted cross-validated table. The issue's target: under two minutes at 1e5 rows on two cores.

``--profile`` runs the fit under cProfile and prints the functions that took the time. The threads are
the route benchmark's (``bench_data.bench_threads``: 2, or ``SMCS_BENCH_THREADS``), set for numba and BLAS.

``scoring_bank`` also makes the banks of ``test_route_scoring.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from bench_data import N_MODELS, ROWS_PER_CLUSTER, SEED, UNKNOWN_SHARE, bench_threads, set_threads

from smcs.bank import Bank, ModelInfo, Question
from smcs.core.fit import cv_table, fit_scorer

N_SOURCES = 10
"""Synthetic sources (datasets) of a scoring bank: each a group of topic clusters."""

# Geometry as bench_data's banks (row = A·g + B·c_topic + C·noise, normalised), with each topic centre
# drawn near its source's centre, so that the source of a question can be told from its embedding.
_GLOBAL_WEIGHT = 0.5
_CENTRE_WEIGHT = 0.7
_NOISE_WEIGHT = 0.55
_SOURCE_SHARE = 0.6
"""Weight of the source centre in a topic centre (the rest is the topic's own direction)."""
_CHUNK_ROWS = 32_768


class ScoringBank(NamedTuple):
    """The arrays of a synthetic scoring bank."""

    embeddings: np.ndarray
    """N × d float32, unit rows"""
    capability: np.ndarray
    """R × N int8 in {−1, 0, 1}"""
    topic: np.ndarray
    """N int64: each row's topic cluster"""
    source: np.ndarray
    """N int64: each row's source (the source of its topic)"""


def _rng(rows: int, dim: int, models: int, sources: int, purpose: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([SEED, rows, dim, models, sources, 77, purpose, chunk])


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def scoring_bank(rows: int, dim: int, models: int = N_MODELS, sources: int = N_SOURCES) -> ScoringBank:
    """A deterministic synthetic bank for the scorers: ``rows // 50`` topic clusters of uneven size, each in
    one of ``sources`` sources; P(model r right on a question of topic t in source s) =
    σ(skill_r + affinity_rs − difficulty_t + affinity_rt), so outcomes depend on the source (what the
    source scorer can learn) and on the topic (what only the neighbours know)."""
    rng = _rng(rows, dim, models, sources, purpose=0)
    n_topics = max(1, rows // ROWS_PER_CLUSTER)
    direction = _unit(rng.standard_normal(dim))
    source_centres = _unit(rng.standard_normal((sources, dim)))
    topic_source = rng.integers(0, sources, n_topics)
    topic_centres = _unit(_SOURCE_SHARE * source_centres[topic_source] + math.sqrt(1 - _SOURCE_SHARE**2) * _unit(rng.standard_normal((n_topics, dim))))
    weights = rng.lognormal(0.0, 1.0, n_topics)
    topic = rng.choice(n_topics, size=rows, p=weights / weights.sum())
    base = (_GLOBAL_WEIGHT * direction + _CENTRE_WEIGHT * topic_centres).astype(np.float32)

    embeddings = np.empty((rows, dim), dtype=np.float32)
    noise_scale = np.float32(_NOISE_WEIGHT / math.sqrt(dim))

    def fill(chunk: int) -> None:
        lo, hi = chunk * _CHUNK_ROWS, min(rows, (chunk + 1) * _CHUNK_ROWS)
        block = _rng(rows, dim, models, sources, purpose=1, chunk=chunk).standard_normal((hi - lo, dim), dtype=np.float32)
        block *= noise_scale
        block += base[topic[lo:hi]]
        embeddings[lo:hi] = _unit(block)

    with ThreadPoolExecutor(max_workers=bench_threads()) as pool:
        list(pool.map(fill, range(-(-rows // _CHUNK_ROWS))))

    rng = _rng(rows, dim, models, sources, purpose=2)
    logits = (
        rng.normal(0.2, 0.5, (models, 1))  # skill
        + rng.normal(0.0, 0.7, (models, sources))[:, topic_source]  # strengths by source
        - rng.normal(0.0, 1.0, (1, n_topics))  # difficulty
        + rng.normal(0.0, 0.5, (models, n_topics))  # strengths by topic
    )  # the best model overall is right on ~0.70 of questions, the best per source ~0.75, per topic ~0.80
    p_right = 1.0 / (1.0 + np.exp(-logits))
    capability = (rng.random((models, rows)) < p_right[:, topic]).astype(np.int8)
    capability[rng.random((models, rows)) < UNKNOWN_SHARE] = -1
    return ScoringBank(embeddings, np.ascontiguousarray(capability), topic, topic_source[topic])


def create_scoring_bank(path: Path, rows: int, dim: int, models: int = N_MODELS, sources: int = N_SOURCES) -> Bank:
    """``scoring_bank`` written as a bank at ``path``: questions ``q0, q1, …`` with sources ``source-0`` …,
    models ``model-00`` …. Returns its first version (no fitted scorer)."""
    data = scoring_bank(rows, dim, models, sources)
    return Bank.create(
        path,
        embeddings=data.embeddings,
        capability=data.capability,
        questions=[
            Question(id=f"q{i}", text=f"synthetic question {i} on topic {t}", source=f"source-{s}")
            for i, (t, s) in enumerate(zip(data.topic.tolist(), data.source.tolist()))
        ],
        models=[ModelInfo(name=f"model-{r:02d}") for r in range(models)],
    )


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, all) CPU ticks of the whole machine since boot (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def foreign_share(start: tuple[int, int] | None, own_cpu_s: float) -> float | None:
    """Share of the machine's CPU time used by other processes since ``start`` (``own_cpu_s``: ours)."""
    end = cpu_ticks()
    if start is None or end is None or end[1] <= start[1]:
        return None
    busy, total = end[0] - start[0], end[1] - start[1]
    return max(0.0, (busy - own_cpu_s * os.sysconf("SC_CLK_TCK")) / total)


@dataclass
class Stage:
    """One stage of the fit: its description and when it started (wall and process CPU seconds)."""

    name: str
    wall: float
    cpu: float


class StageClock:
    """The progress callback of ``fit_scorer``: timestamps each stage as it starts (``start`` before the
    call, ``stop`` after it return the time before the first stage and after the last one's)."""

    def __init__(self, echo: bool = True) -> None:
        self.stages: list[Stage] = []
        self.echo = echo

    def _mark(self, name: str) -> None:
        self.stages.append(Stage(name, time.perf_counter(), time.process_time()))

    def start(self) -> None:
        self._mark("(setup: sample, source tables)")

    def __call__(self, stage: str) -> None:
        self._mark(stage)
        if self.echo:
            elapsed = self.stages[-1].wall - self.stages[0].wall
            print(f"  [{elapsed:7.1f} s] fit: {stage}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._mark("(end)")

    def durations(self) -> list[tuple[str, float, float]]:
        """(stage, wall seconds, CPU seconds) of every stage, in order."""
        return [(a.name, b.wall - a.wall, b.cpu - a.cpu) for a, b in zip(self.stages, self.stages[1:])]

    @property
    def total(self) -> float:
        return self.stages[-1].wall - self.stages[0].wall


def timed_fit(bank: Bank, echo: bool = True, profile: cProfile.Profile | None = None):  # noqa: ANN201 - (FittedScorer, StageClock)
    """``fit_scorer(bank)`` with the default settings, its stages timed."""
    clock = StageClock(echo)
    clock.start()
    if profile is not None:
        profile.enable()
    fitted = fit_scorer(bank, progress=clock)
    if profile is not None:
        profile.disable()
    clock.stop()
    return fitted, clock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="bank questions N (default 100000)")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension d (default 384)")
    parser.add_argument("--models", type=int, default=N_MODELS, help=f"models R (default {N_MODELS})")
    parser.add_argument("--sources", type=int, default=N_SOURCES, help=f"sources (default {N_SOURCES})")
    parser.add_argument("--profile", action="store_true", help="run the fit under cProfile and print where the time went")
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile (default 25)")
    parser.add_argument("--out", type=Path, help="create the bank here (a new or empty directory) and keep it, fitted; "
                        "default: a temporary directory, removed at the end")
    args = parser.parse_args(argv)

    threads = bench_threads()
    info = set_threads(threads)
    print(f"threads: {', '.join(f'{k} {v}' for k, v in info.items())}")
    with tempfile.TemporaryDirectory(prefix="smcs-fit-time-") as tmp:
        started = time.perf_counter()
        bank = create_scoring_bank(args.out or Path(tmp) / "bank", args.rows, args.dim, args.models, args.sources)
        print(f"bank: N={bank.n_questions} d={bank.dim} R={bank.n_models} sources={args.sources}, "
              f"made in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        bank = Bank.open(bank.path)  # what `smcs bank fit` starts from: a bank opened cold
        _ = bank.questions
        opened = time.perf_counter() - started
        profile = cProfile.Profile() if args.profile else None
        ticks, cpu = cpu_ticks(), time.process_time()
        fitted, clock = timed_fit(bank, profile=profile)
        foreign = foreign_share(ticks, time.process_time() - cpu)
        started = time.perf_counter()
        committed = bank.with_scorer(fitted)
        commit = time.perf_counter() - started

    print()
    print(f"{'stage':<72} {'wall s':>8} {'CPU s':>8} {'CPU/wall':>8}")
    for name, wall, cpu in [("Bank.open + questions", opened, math.nan), *clock.durations(), ("Bank.with_scorer (commit)", commit, math.nan)]:
        ratio = cpu / wall if wall > 0 and not math.isnan(cpu) else math.nan
        print(f"{name:<72} {wall:8.2f} {cpu:8.2f} {ratio:8.2f}")
    print(f"{'fit_scorer total':<72} {clock.total:8.2f}")
    print(f"{'bank fit total (open + fit + commit)':<72} {opened + clock.total + commit:8.2f}")
    print(f"fitted.seconds = {fitted.seconds:.2f}; {fitted.fitted_rows} rows fitted; committed {committed.version}")
    if foreign is not None:
        print(f"other processes used {foreign:.0%} of the machine's {os.cpu_count()} CPUs during the fit")
    print()
    print("\n".join(cv_table(fitted)))
    print(f"kNN k {fitted.knn_k} alpha {fitted.knn_alpha:g}; head l2 {fitted.head.l2 if fitted.head else '–'}; "
          f"out of bank below {fitted.out_of_bank:.3f}")

    if profile is not None:
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
            print(f"\n--- cProfile of fit_scorer, by {key} ---")
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
