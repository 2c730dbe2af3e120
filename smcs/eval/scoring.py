"""The scorers of ``smcs.core.scorers`` evaluated on the queries, with their calibration, the per-source
lookup baseline, and the method the default policy uses.

The scorers come from the bank's own fit when it is fresh (``smcs bank fit``), else from a fit made here in
memory on the bank alone, the same ``smcs.core.fit.fit_scorer``; either way the queries' outcomes are only
ever used to score. In leave-one-out mode every bank row is a query scored without its own outcome, but the
head was trained on the other rows' outcomes and the fit chose its settings on them: the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from ..bank import Bank, FittedScorer, Question
from ..core import Policy
from ..core.fit import ECE_BINS, batch_evidence, expected_calibration_error, fit_scorer, leave_one_out_evidence
from ..core.scorers import (
    SCORERS,
    Scoring,
    bank_stats,
    covering_referencers,
    probabilities,
    source_distribution,
    vote_probability,
)


class ReliabilityBin(msgspec.Struct, frozen=True, kw_only=True):
    """One bin of a reliability diagram: predictions with p in [low, high)."""

    low: float
    high: float
    count: int
    mean_p: float
    observed: float
    """share of those predictions whose outcome was correct"""


class Calibration(msgspec.Struct, frozen=True, kw_only=True):
    """How well a method's p_r match the queries' known outcomes: ECE and its reliability diagram."""

    method: str
    ece: float
    bins: list[ReliabilityBin]


class ScorerRun(NamedTuple):
    """Every scorer on the queries: Q × R probabilities, rankings and referencer orders (the router's, cover
    included), out-of-bank flags, the fit used."""

    probabilities: dict[str, np.ndarray]
    rankings: dict[str, np.ndarray]
    orders: dict[str, np.ndarray]
    out_of_bank: np.ndarray
    fitted: FittedScorer | None
    """None when the bank could not be fitted (then only "vote", uncalibrated)"""
    origin: str

    @property
    def default(self) -> str:
        """The scorer the default policy uses: the fit's pick, "vote" without a fit."""
        return self.fitted.default if self.fitted is not None else "vote"


def method_name(scorer: str) -> str:
    """The report's method row of ``scorer``: the paper's prior is ``smcs``, the others ``smcs-<scorer>``."""
    return "smcs" if scorer == "vote" else f"smcs-{scorer}"


def run_scorers(bank: Bank, queries: np.ndarray | None, policy: Policy) -> ScorerRun:
    """Every scorer's p on ``queries`` (Q × d unit rows; None: every bank row by leave-one-out)."""
    cap = np.asarray(bank.capability)
    if bank.scorer is not None and not bank.scorer_stale:
        fitted, origin = bank.scorer, f"the bank's fit ({bank.version}, {bank.scorer.fitted_rows} questions)"
    else:
        try:
            fitted = fit_scorer(bank, policy)
        except ValueError as exc:
            return _unfitted(bank, cap, queries, policy, f"not fitted ({exc}): only the paper's vote, uncalibrated")
        origin = f"fitted here on the bank ({fitted.fitted_rows} questions, {fitted.seconds:.0f} s): the bank has no fresh fit"
    scoring = Scoring.of(bank_stats(cap, [q.source for q in bank.questions], fitted.sources), fitted)
    width = max(fitted.knn_k, fitted.source_k)
    if queries is None:
        evidence = leave_one_out_evidence(bank.embeddings, cap, np.arange(bank.n_questions), width, policy.n_base, policy.gamma)
    else:
        evidence = batch_evidence(bank.embeddings, cap, queries, width, policy.n_base, policy.gamma)
    found: dict[str, np.ndarray] = {}
    rankings: dict[str, np.ndarray] = {}
    orders: dict[str, np.ndarray] = {}
    outside = np.zeros(evidence.queries.shape[0], dtype=bool)
    pi = source_distribution(evidence, scoring)
    source = np.argmax(pi, axis=1)
    for name in SCORERS:
        if name == "head" and fitted.head is None:
            continue
        found[name], outside = probabilities(evidence, scoring, name, pi)
        rankings[name] = evidence.votes if name == "vote" else found[name]
        orders[name] = np.argsort(-rankings[name], axis=1, kind="stable")
        if name != "vote" and policy.cover and fitted.cover:
            for q in np.flatnonzero(~outside):
                orders[name][q] = covering_referencers(found[name][q], fitted.cover[source[q]], bank.n_models)
    return ScorerRun(found, rankings, orders, outside, fitted, origin)


def _unfitted(bank: Bank, cap: np.ndarray, queries: np.ndarray | None, policy: Policy, origin: str) -> ScorerRun:
    """The ``ScorerRun`` of a bank that cannot be fitted: the vote scorer alone, its p the normalised vote."""
    if queries is None:
        evidence = leave_one_out_evidence(bank.embeddings, cap, np.arange(bank.n_questions), 1, policy.n_base, policy.gamma)
    else:
        evidence = batch_evidence(bank.embeddings, cap, queries, 1, policy.n_base, policy.gamma)
    p = vote_probability(evidence, bank_stats(cap, None, ()))
    order = np.argsort(-evidence.votes, axis=1, kind="stable")
    return ScorerRun({"vote": p}, {"vote": evidence.votes}, {"vote": order}, np.zeros(len(p), dtype=bool), None, origin)


def calibration(method: str, p: np.ndarray, outcomes: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """ECE and the reliability diagram of ``p`` against the known ``outcomes`` (Q × R each)."""
    known = outcomes >= 0
    flat_p, flat_y = p[known], (outcomes[known] == 1).astype(np.float64)
    which = np.minimum((flat_p * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        here = which == b
        if here.any():
            rows.append(ReliabilityBin(low=b / bins, high=(b + 1) / bins, count=int(here.sum()),
                                       mean_p=float(flat_p[here].mean()), observed=float(flat_y[here].mean())))
    return Calibration(method=method, ece=expected_calibration_error(flat_p, flat_y, bins), bins=rows)


def per_source_scores(bank: Bank, questions: Sequence[Question], bank_accuracy: np.ndarray) -> np.ndarray:
    """Q × R: the bank accuracy of each model on the query's own source (the lookup table a router would
    need the source for), or its overall bank accuracy where the bank has no question of that source."""
    cap = np.asarray(bank.capability)
    bank_sources = np.array([q.source for q in bank.questions], dtype=object)
    table: dict[str, np.ndarray] = {}
    for source in sorted(set(bank_sources.tolist())):
        here = cap[:, bank_sources == source]
        known = (here >= 0).sum(axis=1)
        table[source] = np.where(known > 0, (here == 1).sum(axis=1) / np.maximum(known, 1), np.nan)
    return np.array([table.get(q.source, bank_accuracy) for q in questions], dtype=np.float64).reshape(len(questions), -1)
