"""Accuracy against cost: the router's own willingness-to-pay sweep and RouterBench's AIQ.

The sweep routes every query once with the router (``Router.route_many``) and reads the decision's p_r
and c_r of every model (``model_probabilities``, ``model_costs``); the model the router picks at
willingness to pay W is then the top-1 of p_r − c_r / W (ties to the lower model index), exactly as
``Policy(willingness_to_pay=W)`` ranks. W runs over a geometric grid relative to the most expensive
model's expected cost, from where cost dominates to where quality alone does.

AIQ (Hu et al., RouterBench, 2024): the area under a method's non-decreasing accuracy-cost curve over a
common cost range [c_lo, c_hi], divided by c_hi − c_lo. A method's curve is the upper convex hull of its
points (mixing two routings at random reaches every point between them), flat at its best accuracy
beyond its most accurate point, and 0 below its cheapest point; a single model is a single point, so
its curve is a step at its cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..bank import Bank
from ..core import Policy, RouteCall, Router

WILLINGNESS_EXPONENTS = tuple(np.round(np.linspace(-2.0, 3.0, 26), 2).tolist())
"""W = (the largest expected model cost) × 10^u for each u here: u = −2 picks by cost almost alone,
u = 3 by quality almost alone."""
ROUTE_BATCH = 64
"""Queries per ``route_many`` call of the sweep."""


def router_choices(bank: Bank, embeddings: np.ndarray, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """(p, c), each Q × R: every model's probability and expected cost for each query row of
    ``embeddings``, as the router's decisions under ``policy`` give them."""
    router = Router(bank, policy)
    p, c = [], []
    for start in range(0, embeddings.shape[0], ROUTE_BATCH):
        calls = [RouteCall(np.asarray(row), seed=0) for row in embeddings[start:start + ROUTE_BATCH]]
        for decision in router.route_many(calls):
            if isinstance(decision, Exception):
                raise decision
            p.append(decision.model_probabilities)
            c.append(decision.model_costs)
    return np.asarray(p, dtype=np.float64), np.asarray(c, dtype=np.float64)


def willingness_grid(costs: np.ndarray) -> list[float]:
    """The W values of the sweep for expected costs ``costs`` (any shape); [] when every cost is 0."""
    top = float(np.nanmax(costs)) if np.isfinite(costs).any() else 0.0
    return [top * 10.0**u for u in WILLINGNESS_EXPONENTS] if top > 0 else []


def sweep_choices(p: np.ndarray, c: np.ndarray, willingness: float) -> np.ndarray:
    """Q: the model each query goes to at willingness to pay ``willingness``: top-1 of p − c / W."""
    return np.argmax(p - c / willingness, axis=1).astype(np.int64)  # the first maximum: ties to the lower index


def upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-decreasing upper convex hull of (cost, accuracy) ``points``, by cost: from the cheapest
    point (the most accurate among equally cheap) to the most accurate (the cheapest among equally accurate)."""
    ordered = sorted(set(points), key=lambda p: (p[0], -p[1]))
    hull: list[tuple[float, float]] = []
    for point in ordered:
        if hull and point[1] <= hull[-1][1]:
            continue  # no more accurate than a cheaper point: below the non-decreasing curve
        while len(hull) >= 2 and _turns_up(hull[-2], hull[-1], point):
            hull.pop()
        hull.append(point)
    return hull


def _turns_up(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> bool:
    """Whether ``b`` lies on or below the segment from ``a`` to ``c`` (so it is not a hull vertex)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) >= 0


def aiq(points: Sequence[tuple[float, float]], low: float, high: float) -> float:
    """AIQ of (cost, accuracy) ``points`` over [``low``, ``high``] (see the module docstring); ``high`` >
    ``low`` else ``ValueError``."""
    if not high > low:
        raise ValueError(f"the cost range must be increasing, got [{low}, {high}]")
    hull = upper_hull(points)
    if not hull:
        return 0.0
    xs = np.array([p[0] for p in hull] + [max(high, hull[-1][0])])
    ys = np.array([p[1] for p in hull] + [hull[-1][1]])
    grid = np.unique(np.clip(np.concatenate([xs, [low, high]]), low, high))
    values = np.interp(grid, xs, ys)
    starts = grid[:-1] >= xs[0]  # segments left of the cheapest point count 0
    area = np.sum(np.where(starts, (grid[1:] - grid[:-1]) * (values[:-1] + values[1:]) / 2, 0.0))
    return float(area / (high - low))
