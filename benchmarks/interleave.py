"""Competitors timed in interleaved rounds, so that a drift of the machine's speed falls on all of them alike.

In each round every competitor runs one block (the same queries, ``passes`` times, after ``warm`` untimed
calls), in an order rotated round by round; a block's time is the median of its calls. A ratio between two
competitors is the median over rounds of that round's quotient, so drift slower than a round cancels out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

Block = Callable[[int], list[float]]
"""``passes`` → the time of every call over that many passes."""


def timed_calls(route: Callable[[np.ndarray], object], queries: Sequence[np.ndarray], warm: int = 2) -> Block:
    """A block of ``route`` over ``queries``: ``warm`` untimed calls, then each call of ``passes`` passes timed."""

    def calls(passes: int) -> list[float]:
        for q in queries[:warm]:
            route(q)
        times = []
        for _ in range(passes):
            for q in queries:
                start = time.perf_counter()
                route(q)
                times.append(time.perf_counter() - start)
        return times

    return calls


def passes_for(block: Block, block_s: float) -> int:
    """Passes per block so that one block of ``block`` takes about ``block_s`` seconds."""
    start = time.perf_counter()
    block(1)
    return max(1, round(block_s / (time.perf_counter() - start)))


def one_round(blocks: dict[str, Block], times: dict[str, list[float]], passes: int) -> None:
    """One block of each competitor, in an order rotated by the rounds already run; appends the block medians."""
    names = list(blocks)
    shift = len(times[names[0]]) % len(names)
    for name in names[shift:] + names[:shift]:
        times[name].append(statistics.median(blocks[name](passes)))


def paired_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """Median over rounds of ``top``'s block time over ``bottom``'s in the same round."""
    return statistics.median(a / b for a, b in zip(times[top], times[bottom]))


def paired_difference(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """Median over rounds of ``top``'s block time minus ``bottom``'s in the same round: the seconds ``top`` adds."""
    return statistics.median(a - b for a, b in zip(times[top], times[bottom]))
