"""The plan's size under a quality target and a cost limit: how many referencers and aggregations to spend.

Pure functions over one question's ranked referencers; the router applies them after ranking (Eq 5) and
before drawing the exploration subsets (Eq 6).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InputError


class Plan(NamedTuple):
    """How much of the policy's plan one question gets: K referencers (the first K in rank order), k_drop,
    n aggregations (0: the answer is the first referencer's own), its expected cost (NaN when costs are
    unknown) and what was cut, one note each."""

    k: int
    k_drop: int
    n: int
    expected_cost: float
    notes: list[str]


def covering_k(probabilities: np.ndarray, target: float) -> int:
    """The smallest K whose first K of ``probabilities`` (referencers in rank order) give
    1 − Π(1 − p_r) ≥ ``target``; all of them when none does."""
    missed = np.cumprod(1.0 - np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0))
    reached = np.flatnonzero(1.0 - missed >= target)
    return int(reached[0]) + 1 if reached.size else len(missed)


def plan_cost(reference_costs: np.ndarray, k: int, n: int, aggregation_cost: float) -> float:
    """The expected cost of calling the first ``k`` referencers and ``n`` aggregations."""
    return float(reference_costs[:k].sum()) + n * aggregation_cost


def budget_plan(
    *,
    k: int,
    k_drop: int,
    n: int,
    probabilities: np.ndarray,
    reference_costs: np.ndarray,
    aggregation_cost: float,
    coverage_target: float | None,
    max_cost: float | None,
) -> Plan:
    """The plan for referencers with ``probabilities`` and ``reference_costs`` (both in rank order, k of
    them): K lowered to the smallest that meets ``coverage_target`` (``covering_k``), then, over
    ``max_cost``, n lowered (to 1 at least), then K (to 1), then no aggregation. Raises ``InputError``
    naming ``max_cost`` when even one referencer's call is expected to cost more."""
    notes: list[str] = []
    if coverage_target is not None:
        covered = covering_k(probabilities[:k], coverage_target)
        if covered < k:
            notes.append(f"coverage_target={coverage_target:g}: met by the first {covered} of {k} referencers, K {k} -> {covered}")
            k = covered
    if max_cost is not None:
        k, n = _within(max_cost, k, n, reference_costs, aggregation_cost, notes)
    return Plan(k, min(k_drop, k - 1), n, plan_cost(reference_costs, k, n, aggregation_cost), notes)


def _within(max_cost: float, k: int, n: int, costs: np.ndarray, aggregation: float, notes: list[str]) -> tuple[int, int]:
    """(K, n) cut to fit ``max_cost``, in the order of ``budget_plan``; a note for each cut."""
    asked = plan_cost(costs, k, n, aggregation)
    if asked <= max_cost:
        return k, n
    fits_n = [m for m in range(n, 0, -1) if plan_cost(costs, k, m, aggregation) <= max_cost]
    if fits_n:
        notes.append(f"max_cost={max_cost:g}: the plan was expected to cost {asked:.6g}, n {n} -> {fits_n[0]}")
        return k, fits_n[0]
    fits_k = [j for j in range(k, 0, -1) if plan_cost(costs, j, 1, aggregation) <= max_cost]
    if fits_k:
        notes.append(f"max_cost={max_cost:g}: the plan was expected to cost {asked:.6g}, n {n} -> 1, K {k} -> {fits_k[0]}")
        return fits_k[0], 1
    if plan_cost(costs, 1, 0, aggregation) <= max_cost:
        notes.append(f"max_cost={max_cost:g}: the plan was expected to cost {asked:.6g}, K {k} -> 1 and no aggregation")
        return 1, 0
    raise InputError(
        f"max_cost={max_cost:g} is below the cheapest plan, one call to the first referencer, expected to cost {float(costs[0]):.6g}"
    )


def ranked_by_value(probabilities: np.ndarray, costs: np.ndarray, willingness_to_pay: float) -> np.ndarray:
    """R: p_r − c_r / W, the expected accuracy a model buys net of its cost at W cost units per +1.0."""
    return np.asarray(probabilities, dtype=np.float64) - np.asarray(costs, dtype=np.float64) / willingness_to_pay

