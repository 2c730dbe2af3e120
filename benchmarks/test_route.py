"""The route benchmark: every competitor of ``bench_data.COMPETITORS`` on every bank size.

One test, parametrised by (size, competitor); pytest-benchmark groups the results per size
(``route N=… d=…``) so its table compares the competitors directly. Before anything is timed the
competitor's result is checked against ``smcs.kernels.route`` (the floor excepted), so all of them do the
same work. See ``report.py`` for how to run it and summarise the JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from bench_data import COMPETITORS, DISTURBANCES, Bank, Expected, checked_run, faiss

DISTURBED_BUDGET_S = 1.0
"""Wall time one disturbed (``pedantic``) benchmark aims for, setup calls included."""
DISTURBED_ROUNDS = (5, 200)
"""Bounds on its number of rounds."""


def _rounds(run: Callable[[], object], disturb: Callable[[], None]) -> int:
    """Rounds of a disturbed benchmark that fit ``DISTURBED_BUDGET_S``, from one timed pair of calls."""
    start = time.perf_counter()
    disturb()
    run()
    per_round = time.perf_counter() - start
    lo, hi = DISTURBED_ROUNDS
    return max(lo, min(hi, int(DISTURBED_BUDGET_S / max(per_round, 1e-9))))


@pytest.mark.parametrize("name", list(COMPETITORS))
def test_route(benchmark, bank: Bank, expected: Expected, threads: int, name: str) -> None:
    """Time one competitor on one bank, after checking that it computes the route smcs does."""
    competitor = COMPETITORS[name]
    if competitor.needs_faiss and faiss is None:
        pytest.skip("faiss is not installed")
    run = checked_run(name, bank, expected)

    benchmark.group = f"route {bank.size.label}"
    benchmark.extra_info.update(
        competitor=name,
        n=bank.size.n,
        d=bank.size.d,
        kind=bank.size.kind,
        threads=competitor.threads or threads,
        floor=competitor.floor,
        support=int(expected.route.rows.size),
        summary=competitor.summary,
    )
    if competitor.disturbed_by is None:
        benchmark(run)
    else:
        disturb = DISTURBANCES[competitor.disturbed_by](bank)
        benchmark.extra_info["disturbed_by"] = competitor.disturbed_by
        rounds = 1 if benchmark.disabled else _rounds(run, disturb)
        benchmark.pedantic(run, setup=disturb, rounds=rounds, warmup_rounds=1)
