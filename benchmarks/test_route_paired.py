"""Interleaved route timings: smcs, the router, numpy, faiss and the floor called in turn, ratios taken round
by round.

``test_route.py`` times each competitor's rounds back to back, as pytest-benchmark does, so two of its
medians are taken up to a minute apart. On a shared machine the memory bandwidth and the CPU share drift
over such spans, enough to move a "×floor" ratio by half (measurements: docs/performance.md, "The route
kernel"). Here the competitors take turns in short blocks, in an order
rotated each round, and each ratio is the median over rounds of that round's quotient: a drift slower
than a round cancels out. A block, not a single call, is the unit because the libraries' thread pools
disturb each other: OpenBLAS's threads keep spinning after a numpy call, so a numba scan right after
one runs on a shared core. Each block's time is the median of the second half of its calls, once the
previous competitor's pool has gone quiet. ``report.py`` prints these ratios in a table of their own.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from bench_data import COMPETITORS, Bank, Expected, checked_run, faiss

PAIRED = ("smcs", "smcs-unordered", "router", "router-lean", "smcs-1thread", "numpy", "faiss-flat", "floor", "floor-1thread")
"""The competitors of ``bench_data.COMPETITORS`` called in each round."""
RATIOS = (
    ("smcs", "floor"),
    ("smcs-unordered", "floor"),
    ("router", "floor"),
    ("router-lean", "floor"),
    ("smcs-1thread", "floor-1thread"),
    ("numpy", "smcs"),
    ("numpy", "smcs-unordered"),
    ("numpy", "router"),
    ("numpy", "router-lean"),
    ("faiss-flat", "smcs"),
)
"""(numerator, denominator) pairs reported: smcs, its unordered decision and the router (with and without the
support set) over their floors, then the baselines over them."""
BLOCK_S = 0.25
"""Wall time of one competitor's block in a round."""
BLOCK_CALLS = 4
"""Fewest calls in a block, however long they take."""
ROUNDS = int(os.environ.get("SMCS_PAIRED_ROUNDS", "5"))
"""Rounds per bank: each competitor runs ``ROUNDS`` blocks (``SMCS_PAIRED_ROUNDS`` overrides it: more rounds
narrow the ratios on a machine other processes share)."""


def _runs(bank: Bank, expected: Expected) -> dict[str, Callable[[], object]]:
    """The callables of ``PAIRED`` on ``bank`` (faiss's left out without faiss), each checked first."""
    return {
        name: checked_run(name, bank, expected)
        for name in PAIRED
        if not (COMPETITORS[name].needs_faiss and faiss is None)
    }


def _paired_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float | None:
    """Median over rounds of ``top``'s time over ``bottom``'s in the same round (None if one is missing)."""
    if top not in times or bottom not in times:
        return None
    return statistics.median(a / b for a, b in zip(times[top], times[bottom]))


def _block(run: Callable[[], object]) -> float:
    """Call ``run`` for ``BLOCK_S`` (at least ``BLOCK_CALLS`` times); the median of the later half of the calls."""
    times = []
    end = time.perf_counter() + BLOCK_S
    while len(times) < BLOCK_CALLS or time.perf_counter() < end:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times[len(times) // 2 :])


def test_route_paired(benchmark, bank: Bank, expected: Expected, threads: int) -> None:
    """One round = one block of each competitor; the rounds' block times give medians and ratios."""
    runs = _runs(bank, expected)
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}

    def one_round() -> None:
        shift = len(times[names[0]]) % len(names)  # rotate who goes first: no one always follows the same pool
        for name in names[shift:] + names[:shift]:
            times[name].append(_block(runs[name]))

    benchmark.group = f"route paired {bank.size.label}"
    rounds = 1 if benchmark.disabled else ROUNDS  # the smoke run (--benchmark-disable) runs one round
    benchmark.pedantic(one_round, rounds=rounds)
    benchmark.extra_info.update(
        paired=True,
        n=bank.size.n,
        d=bank.size.d,
        kind=bank.size.kind,
        threads=threads,
        support=int(expected.route.rows.size),
        rounds=rounds,
        block_s=BLOCK_S,
        medians_s={name: statistics.median(t) for name, t in times.items()},
        rounds_s=times,
        ratios={f"{top}/{bottom}": _paired_ratio(times, top, bottom) for top, bottom in RATIOS},
    )
