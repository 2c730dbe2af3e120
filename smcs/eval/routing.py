"""Offline evaluation of retrieval-based prior selection: route every query whose outcomes are known.

No model is called. For each query (a question of a second bank, or, with no queries, every bank question
in turn by leave-one-out) the prior of Eq (4) is computed over the bank and compared with the query's
recorded outcomes: top-1 accuracy of the routed model against the best single model, a uniformly random
model and the oracle; top-K coverage against the oracle and the best static K-set; the pairwise ranking
score of Eq (8); a kNN baseline; sweeps over N_base, γ and K; a breakdown by source dataset; and, when the
bank records costs, accuracy against mean cost with the non-dominated set.

Two sides, never mixed: the *bank* (what routing may look at, and what everything tuned here is tuned on,
by leave-one-out) and the *queries* (whose outcomes are only ever used to score). In leave-one-out mode the
query's own row is masked out of retrieval (its similarity set to −∞ before the threshold of Eq (3) is
taken) and out of every bank statistic it is scored with (the per-model accuracy of the best single model,
of the static K-set and of the blended prior), so no query sees its own outcome; the tuned rows are then
tuned and scored on the same questions, which flatters them, and the report says so.

Unknown outcomes (−1), the rule every metric follows:
  * bank side (what routing sees): the prior of Eq (4) sums only known-correct entries (unknown add
    nothing); model accuracy is correct / known (``smcs.core.model_accuracy``); the normalised vote and the
    kNN vote average over known entries only.
  * query side (scoring): a routed choice counts as correct only when its outcome is known to be 1, so an
    unknown outcome counts as wrong; every method row reports the share of queries whose choice was
    unknown (``unknown``) so the effect is visible. The same rule gives the random baseline (mean over
    models of the share known correct), the oracle (some model known correct) and top-K coverage (some
    referencer known correct). The pairwise ranking score leaves unknown outcomes out, as Eq (8) does
    (``smcs.kernels.pairwise_ranking_score``); ties in a prior count as misordered there (strict >).
  * tuning (on the bank, by leave-one-out): the objective is top-1 accuracy with an unknown outcome of
    the chosen model counted as that model's accuracy on the rest of the bank (its expected value), so
    that tuning does not learn to steer away from partially evaluated models.

Method rows ("look for what closes more of the gap to the oracle"):
  * ``smcs``: the paper's prior, Eq (4), at the policy's N_base and γ; the routed model is its top-1.
  * ``smcs-normalised``: V_r / Σ_{i∈I, M_ri known} Ŝ_i, the similarity-weighted accuracy of model r on
    the support set over its known entries. With a complete capability matrix the denominator is the
    same for every model, so this ranks exactly as ``smcs``; it differs only for partially evaluated models.
  * ``smcs-blend``: the normalised vote plus β·acc_r (acc_r = the model's bank accuracy), β tuned on the
    bank by leave-one-out; β = 0 is ``smcs-normalised``, β → ∞ the best single model. Per-source
    calibration is not offered: it needs the query's source, which a router does not know.
  * ``smcs-tuned``: Eq (4) at the (N_base, γ) that routes the bank best by leave-one-out, searched one at
    a time from the policy's (N_base over its grid at the policy's γ, γ over its grid at its N_base).
  * ``knn``: the mean known outcome of each model over the k nearest bank questions (raw cosine), k
    tuned on the bank by leave-one-out; with complete outcomes this is the plain majority vote.
  * ``smcs-source``, ``smcs-knn``, ``smcs-head``: the scorers beyond the paper (``smcs.core.scorers``),
    calibrated, from the bank's fresh fit or one made here on the bank (``smcs.eval.scoring``); the
    ``smcs`` row is the ``vote`` scorer. ``default_method`` names the row the default policy
    (``scorer="auto"``) routes by: the scorer the fit picked by cross-validation on the bank.
  * ``per-source``: the best model of the query's own source on the bank (a lookup table that needs the
    source, which a router is not told; the overall best where the bank lacks the source).
  * ``best-single`` (the most accurate model on the bank), ``best-single-on-queries`` (the most accurate
    on the queries themselves: a bound, not a method), ``random`` (its expected accuracy) and ``oracle``
    (some model correct) bound the others.
  * ``ece``: expected calibration error of a method's p_r against the queries' known outcomes (10 equal
    bins), for the rows that have probabilities; ``calibration`` holds their reliability diagrams.

Ties everywhere go to the lower model index, as in Eq (5) (``smcs.kernels.top_k``).

Costs: a question's ``metadata["cost"][model]`` when any question of either bank records one (a missing
entry takes the model's mean over the bank's recorded ones), else the model's
``cost_per_input_token + cost_per_output_token`` (a relative cost: equal token counts are assumed);
with neither, the cost part is skipped and the report says so. Routing by cost (``smcs-cost``) uses only
the bank's expected cost per model, never a query's own; a query's realised cost is used only to score.
The oracle's cheapest correct choice is listed as a bound, outside the non-dominated comparison. With
held-out queries the router's own ``willingness_to_pay`` sweep is added (``smcs W=...`` points, routed by
``Router`` under the policy: ``smcs.eval.cost_curve``), and ``aiq`` gives RouterBench's AIQ of that sweep
and of each single model over the cost range of all the points.

OCA/MCA (§4.7) need the recorded responses of the exploration step, which a bank does not hold: they are
not computed here.

Implementation: similarities are a float32 matrix product of a block of queries against the bank, the
N_base-th largest per row comes from ``np.partition``, and the votes of every (N_base, γ) of interest are a
matrix product of the thresholded similarities with the capability indicators. The reference semantics
are the kernels' (``smcs.kernels.support_set``, ``prior_vote``, ``top_k``): N_base clamped to the
candidates, threshold γ·max_{N_base}(Ŝ) compared with ≥ in float64, negatives clipped to 0. Similarities
are rounded to multiples of 2⁻³⁰ before voting (a no-op for Ŝ ≥ 2⁻⁶), which makes every vote an exact
sum, so models with the same outcomes on the support set tie exactly and go to the lower index.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from .. import kernels
from ..bank import Bank, FittedScorer, Question
from ..core import Policy, model_accuracy
from ..core.costs import cost_matrix
from .cost_curve import aiq, router_choices, sweep_choices, willingness_grid
from .scoring import Calibration, calibration, method_name, per_source_scores, run_scorers
from ..errors import InputError

N_BASE_GRID = (10, 25, 50, 100, 200, 400, 800, 1600, 3200)
"""N_base values of the sweep and of the ``smcs-tuned`` search (clamped to the bank size)."""
GAMMA_GRID = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)
"""γ values of the sweep and of the ``smcs-tuned`` search."""
KNN_GRID = (1, 5, 10, 20, 50, 100, 200)
"""k values the kNN baseline is tuned over (clamped to the bank size)."""
BETA_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
"""β values of ``smcs-blend``."""
COST_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""λ values of ``smcs-cost``: score = normalised vote − λ·(expected cost / the largest expected cost)."""

BLOCK_ELEMENTS = 1 << 23
"""Queries per block × bank questions: bounds each block's float64 work arrays to 64 MiB."""
MAX_BLOCK_ROWS = 1024
_QUANTUM = 2.0**30
"""Similarities are rounded to multiples of 1/_QUANTUM, so that votes are exact sums (N < 2²³)."""
_FLOOR = -1e300
"""The score of a model with no evidence (NaN): below any real score, and finite for Eq (8)."""

UNKNOWN_RULE = (
    "unknown outcomes (-1): the prior and bank accuracies use known entries only; a routed choice whose "
    "outcome is unknown counts as wrong (column 'unknown' gives their share); pairwise leaves them out"
)


class Method(msgspec.Struct, frozen=True, kw_only=True):
    """One routing method scored on the queries.

    ``accuracy``: share of queries whose routed model is known correct; ``unknown``: share whose routed
    model's outcome is unknown (counted as wrong); ``pairwise``: Eq (8) of the method's scores (None where
    the method has none); ``params``: the settings used, tuned ones included.
    """

    name: str
    description: str
    accuracy: float
    unknown: float
    pairwise: float | None
    params: dict[str, str | int | float] = {}
    ece: float | None = None
    """expected calibration error of the method's probabilities (None: it has none)"""


class CoverageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Top-K coverage: share of queries where at least one of K models is known correct."""

    k: int
    smcs: float
    """the top-K of the paper's prior (Eq 5)"""
    best_static: float
    """the K models most accurate on the bank, the same for every query"""
    oracle: float
    default: float
    """the top-K of the default policy's scorer (``RoutingReport.default_method``)"""
    per_source: float
    """the K models most accurate on the query's source in the bank"""


class SweepRow(msgspec.Struct, frozen=True, kw_only=True):
    """The paper's prior at one (N_base, γ): ``parameter`` is the one swept, ``value`` its value."""

    parameter: str
    value: float
    n_base: int
    gamma: float
    accuracy: float
    coverage: list[float]
    """coverage@K for K = 1..R"""
    pairwise: float | None
    mean_support: float
    """mean size |I| of the support set"""


class SourceRow(msgspec.Struct, frozen=True, kw_only=True):
    """Top-1 accuracy of every method on the queries of one source dataset (``Question.source``)."""

    source: str
    n: int
    accuracy: dict[str, float]


class CostPoint(msgspec.Struct, frozen=True, kw_only=True):
    """Accuracy against mean cost per query of one way of routing; ``dominated`` when another point is at
    least as accurate and at most as costly, and better in one."""

    name: str
    accuracy: float
    mean_cost: float
    dominated: bool
    bound: bool = False
    """the oracle's cheapest-correct routing: a bound, left out of the dominance comparison"""


class RoutingReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``evaluate_routing`` measured; encodes to the JSON of ``smcs eval route --json``."""

    mode: str
    """``held-out`` (queries given) or ``leave-one-out`` (every bank question against the rest)"""
    bank: str
    bank_version: str
    queries: str | None
    queries_version: str | None
    n_bank: int
    n_queries: int
    models: list[str]
    n_base: int
    gamma: float
    k: int
    unknown_rule: str
    default_method: str
    """the method row the default policy (``Policy(scorer="auto")``) routes by"""
    scorer_fit: str
    """where the scorers' fit came from"""
    methods: list[Method]
    coverage: list[CoverageRow]
    sweeps: list[SweepRow]
    by_source: list[SourceRow]
    costs: list[CostPoint] | None
    """None when neither bank records costs"""
    cost_basis: str | None
    aiq: dict[str, float]
    """RouterBench's AIQ of the router's willingness-to-pay sweep ("smcs W sweep") and of each single model
    ("model NAME"), over the cost range of every cost point; empty without costs or held-out queries"""
    calibration: list[Calibration]
    """ECE and the reliability diagram of every method with probabilities"""
    notes: list[str]
    seconds: float


# ------------------------------------------------------------------------------------------- scanning


class Votes(NamedTuple):
    """Eq (4) for a set of queries at one (N_base, γ), each Q × R (Q for ``support``)."""

    votes: np.ndarray
    """V_r = Σ_{i∈I} Ŝ_i·[M_ri = 1]"""
    known: np.ndarray
    """Σ_{i∈I} Ŝ_i·[M_ri known], the denominator of the normalised vote"""
    support: np.ndarray
    """|I| per query"""

    def normalised(self) -> np.ndarray:
        """V_r / known_r: the similarity-weighted accuracy on the support set (NaN where nothing is known)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.known > 0, self.votes / np.where(self.known > 0, self.known, 1.0), np.nan)


class Scan(NamedTuple):
    votes: dict[tuple[int, float], Votes]
    """per requested (N_base, γ)"""
    knn: dict[int, np.ndarray]
    """per requested k: Q × R mean known outcome over the k nearest bank questions (NaN: none known)"""


def block_rows(n_bank: int) -> int:
    """Queries per similarity block for a bank of ``n_bank`` questions."""
    return max(1, min(MAX_BLOCK_ROWS, BLOCK_ELEMENTS // max(n_bank, 1)))


def scan(
    bank_embeddings: np.ndarray,
    capability: np.ndarray,
    query_embeddings: np.ndarray,
    configs: Iterable[tuple[int, float]],
    knn_ks: Iterable[int] = (),
    *,
    leave_one_out: bool = False,
    rows_per_block: int | None = None,
) -> Scan:
    """The prior of Eqs (2)–(4) and the kNN votes of every query, for every (N_base, γ) in ``configs``.

    ``bank_embeddings`` N × d and ``query_embeddings`` Q × d unit rows, ``capability`` R × N in {1, 0, −1}.
    With ``leave_one_out`` the queries are the bank itself (Q = N) and query i never retrieves bank row i.
    Same semantics as ``smcs.kernels.support_set`` + ``prior_vote`` on the similarities this computes
    (a float32 matrix product, so they may differ from the kernel's scan in the last bit).
    """
    e = np.ascontiguousarray(bank_embeddings, dtype=np.float32)
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    cap = np.asarray(capability)
    n, n_models = e.shape[0], cap.shape[0]
    if leave_one_out and queries.shape[0] != n:
        raise InputError("leave_one_out needs the bank's own embeddings as the queries")
    candidates = n - 1 if leave_one_out else n
    configs = list(dict.fromkeys((int(nb), float(g)) for nb, g in configs))
    knn_ks = sorted({min(int(k), candidates) for k in knn_ks})
    if candidates < 1 and (configs or knn_ks):
        raise InputError("the bank has no questions to retrieve from")
    indicators = np.ascontiguousarray(np.concatenate([cap == 1, cap >= 0]).T, dtype=np.float64)  # N × 2R
    q_total = queries.shape[0]
    out_votes = {c: [np.empty((q_total, n_models)), np.empty((q_total, n_models)), np.empty(q_total, np.int64)] for c in configs}
    out_knn = {k: np.empty((q_total, n_models)) for k in knn_ks}
    step = rows_per_block or block_rows(n)
    columns = sorted({n - min(nb, candidates) for nb, _ in configs})  # of max_{N_base} in ascending order
    kth_index = {nb: columns.index(n - min(nb, candidates)) for nb, _ in configs}
    for start in range(0, q_total, step):
        stop = min(start + step, q_total)
        own = (np.arange(stop - start), np.arange(start, stop)) if leave_one_out else None
        raw = queries[start:stop] @ e.T
        if own is not None:
            raw[own] = -np.inf
        if configs:
            sims = np.maximum(raw, np.float32(0.0))
            if own is not None:
                sims[own] = -np.inf
            kth = np.partition(sims, columns, axis=1)[:, columns].astype(np.float64)
            exact = sims.astype(np.float64)
            rounded = np.multiply(exact, _QUANTUM)
            np.rint(rounded, out=rounded)
            rounded /= _QUANTUM
            if own is not None:
                rounded[own] = 0.0  # never inside the support set; 0 · −∞ would be NaN
            weights = np.empty_like(rounded)
            for config in configs:
                n_base, gamma = config
                threshold = gamma * kth[:, kth_index[n_base]]
                inside = exact >= threshold[:, None]
                sums = np.multiply(inside, rounded, out=weights) @ indicators
                votes, known, support = out_votes[config]
                votes[start:stop] = sums[:, :n_models]
                known[start:stop] = sums[:, n_models:]
                support[start:stop] = np.count_nonzero(inside, axis=1)
        if knn_ks:
            _knn_block(raw, cap, knn_ks, start, stop, out_knn)
    return Scan({c: Votes(*v) for c, v in out_votes.items()}, out_knn)


def _knn_block(raw: np.ndarray, cap: np.ndarray, ks: list[int], start: int, stop: int, out: dict[int, np.ndarray]) -> None:
    """Mean known outcome per model over the k most similar bank rows (ties to the lower row, except that
    ``np.argpartition`` picks arbitrarily among rows tied exactly at the largest k)."""
    k_max = ks[-1]
    nearest = np.argpartition(-raw, k_max - 1, axis=1)[:, :k_max]
    order = np.lexsort((nearest, -np.take_along_axis(raw, nearest, axis=1)), axis=1)
    nearest = np.take_along_axis(nearest, order, axis=1)
    outcomes = cap.T[nearest]  # block × k_max × R
    correct = np.cumsum(outcomes == 1, axis=1)
    known = np.cumsum(outcomes >= 0, axis=1)
    for k in ks:
        c, m = correct[:, k - 1].astype(np.float64), known[:, k - 1]
        out[k][start:stop] = np.divide(c, m, out=np.full(c.shape, np.nan), where=m > 0)


# -------------------------------------------------------------------------------------------- scoring


def ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Per query, the indices of the ``k`` highest scores, highest first, ties to the lower index (Eq 5);
    NaN (no evidence) ranks last."""
    s = np.where(np.isnan(scores), _FLOOR, scores)
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def correct_at(outcomes: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Per query: whether the chosen model is known correct."""
    return outcomes[np.arange(outcomes.shape[0]), choice] == 1


def coverage_curve(outcomes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Coverage@K for K = 1..order.shape[1]: share of queries with a known-correct model in the first K."""
    hits = np.take_along_axis(outcomes, order, axis=1) == 1
    return np.logical_or.accumulate(hits, axis=1).mean(axis=0) if outcomes.shape[0] else np.full(order.shape[1], np.nan)


def pairwise(scores: np.ndarray, outcomes: np.ndarray) -> float | None:
    """Eq (8) of ``scores`` (NaN as the lowest score); None when no (correct, wrong) pair exists."""
    value = kernels.pairwise_ranking_score(np.where(np.isnan(scores), _FLOOR, scores), outcomes)
    return None if math.isnan(value) else value


def loo_accuracy(capability: np.ndarray) -> np.ndarray:
    """N × R: each model's bank accuracy without question i (correct / known; NaN where nothing is left)."""
    cap = np.asarray(capability)
    correct = (cap == 1).sum(axis=1)[None, :] - (cap.T == 1)
    known = (cap >= 0).sum(axis=1)[None, :] - (cap.T >= 0)
    return np.divide(correct, known, out=np.full(correct.shape, np.nan), where=known > 0)


def non_dominated(accuracy: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Per point, whether another is at least as accurate and at most as costly, and better in one."""
    return [
        any(a2 >= a and c2 <= c and (a2 > a or c2 < c) for a2, c2 in zip(accuracy, cost))
        for a, c in zip(accuracy, cost)
    ]


def _best(values: Sequence[float], preferred: int = 0) -> int:
    """Index of the largest value; ``preferred`` wins a tie with it, else the first."""
    top = max(values)
    return preferred if values[preferred] == top else list(values).index(top)


# --------------------------------------------------------------------------------------- the evaluation


class _Side(NamedTuple):
    """The questions being routed and scored."""

    embeddings: np.ndarray
    outcomes: np.ndarray  # Q × R int8, bank model order
    questions: tuple[Question, ...]
    accuracy: np.ndarray  # Q × R: bank accuracy each query may see (leave-one-out: without itself)


def _check_compatible(bank: Bank, queries: Bank) -> np.ndarray:
    """Rows of ``queries.capability`` in the bank's model order; ``ValueError`` on another embedder or
    query-text rule, or a model on one side only (models are matched by name)."""
    if bank.manifest.embedder.id != queries.manifest.embedder.id or bank.dim != queries.dim:
        raise InputError(
            f"the queries were embedded by {queries.manifest.embedder.id!r} (dim {queries.dim}) but the bank by "
            f"{bank.manifest.embedder.id!r} (dim {bank.dim}); both must share one embedder"
        )
    if bank.manifest.embedder.query_text != queries.manifest.embedder.query_text:
        raise InputError(
            f"the queries were embedded under query-text rule {queries.manifest.embedder.query_text!r} but the bank "
            f"under {bank.manifest.embedder.query_text!r}; re-import the queries with --query-text "
            f"{bank.manifest.embedder.query_text}"
        )
    missing = [m for m in bank.model_names if m not in queries.model_names]
    extra = [m for m in queries.model_names if m not in bank.model_names]
    if missing or extra:
        parts = ([f"the queries lack {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"the bank lacks {', '.join(map(repr, extra))}"] if extra else []
        )
        raise InputError(f"the banks must have the same models: {'; '.join(parts)}")
    return np.array([queries.model_index(m) for m in bank.model_names], dtype=np.int64)


def _side(bank: Bank, queries: Bank | None) -> _Side:
    if queries is None:
        cap = np.asarray(bank.capability)
        return _Side(np.asarray(bank.embeddings), np.ascontiguousarray(cap.T), bank.questions, loo_accuracy(cap))
    order = _check_compatible(bank, queries)
    outcomes = np.ascontiguousarray(np.asarray(queries.capability)[order].T)
    accuracy = np.broadcast_to(model_accuracy(bank.capability)[0], outcomes.shape)
    return _Side(np.asarray(queries.embeddings), outcomes, queries.questions, accuracy)


def evaluate_routing(
    bank: Bank,
    queries: Bank | None = None,
    policy: Policy = Policy(),
    *,
    sweeps: bool = True,
    tune: bool = True,
    n_base_grid: Sequence[int] = N_BASE_GRID,
    gamma_grid: Sequence[float] = GAMMA_GRID,
    knn_grid: Sequence[int] = KNN_GRID,
    beta_grid: Sequence[float] = BETA_GRID,
    cost_weights: Sequence[float] = COST_WEIGHTS,
    rows_per_block: int | None = None,
) -> RoutingReport:
    """Route every query of ``queries`` (None: every bank question by leave-one-out) over ``bank`` and score
    the choices against the recorded outcomes; see the module docstring for each metric.

    ``policy`` gives N_base, γ and K (K ≤ the bank's models, else ``ValueError``); ``sweeps`` adds the
    N_base and γ sweeps over ``n_base_grid`` / ``gamma_grid`` (one varied at a time from the policy's);
    ``tune`` adds ``smcs-tuned`` (the best of those points by leave-one-out on the bank, which costs a
    pass over the bank per point). The banks must share the embedder and the model names, else
    ``ValueError`` naming what differs.
    """
    started = time.perf_counter()
    policy.check_models(bank.model_names)
    held_out = queries is not None
    if bank.n_questions < 2:
        raise InputError(f"the bank has {bank.n_questions} question(s); evaluation needs at least 2")
    side = _side(bank, queries)
    if side.outcomes.shape[0] == 0:
        raise InputError("the queries bank has no questions")
    cap = np.asarray(bank.capability)
    bank_emb = np.asarray(bank.embeddings)
    n_models = bank.n_models
    n_cand = bank.n_questions - (0 if held_out else 1)
    default = (min(policy.n_base, n_cand), float(policy.gamma))
    n_bases = sorted({min(int(v), n_cand) for v in n_base_grid})
    gammas = sorted({float(g) for g in gamma_grid})
    knn_ks = sorted({min(int(k), bank.n_questions - 1) for k in knn_grid})  # tuned by leave-one-out
    one_at_a_time = [(nb, default[1]) for nb in n_bases] + [(default[0], g) for g in gammas]
    tune_grid = [default] + one_at_a_time if tune else [default]
    sweep_grid = one_at_a_time if sweeps else []
    notes: list[str] = []

    # Tuning, on the bank alone (leave-one-out): N_base and γ, kNN's k, the blend's β.
    bank_scan = scan(bank_emb, cap, bank_emb, tune_grid + ([] if held_out else sweep_grid), knn_ks,
                     leave_one_out=True, rows_per_block=rows_per_block)
    tuned, knn_k, beta = _tune(cap, bank_scan, tune_grid, knn_ks, beta_grid)
    if not held_out:
        tuned_rows = "smcs-tuned, smcs-blend, knn" if tune else "smcs-blend, knn"
        notes.append(f"leave-one-out: the tuned rows ({tuned_rows}) are tuned and scored on the same bank questions")

    query_scan = bank_scan if not held_out else scan(
        bank_emb, cap, side.embeddings, [default, tuned] + sweep_grid, [knn_k], rows_per_block=rows_per_block
    )
    outcomes = side.outcomes
    prior = query_scan.votes[default]
    scores = {
        "smcs": prior.votes,
        "smcs-normalised": prior.normalised(),
        "smcs-blend": prior.normalised() + beta * side.accuracy,
        "smcs-tuned": query_scan.votes[tuned].votes,
        "knn": query_scan.knn[knn_k],
        "best-single": side.accuracy,
    }
    if not tune:
        del scores["smcs-tuned"]
    bank_accuracy = np.nan_to_num(model_accuracy(cap)[0], nan=-1.0)
    scored = run_scorers(bank, side.embeddings if held_out else None, policy)
    default_method = method_name(scored.default)
    probabilities = {method_name(name): p for name, p in scored.probabilities.items()}
    scores.update({method_name(name): r for name, r in scored.rankings.items() if name != "vote"})
    scores["per-source"] = per_source_scores(bank, side.questions, bank_accuracy)
    query_accuracy = np.where(outcomes >= 0, outcomes == 1, np.nan)
    with np.errstate(invalid="ignore"):
        scores["best-single-on-queries"] = np.broadcast_to(np.nanmean(query_accuracy, axis=0), outcomes.shape)
    notes.append(f"scorers: {scored.origin}; {int(scored.out_of_bank.sum())} queries out of bank")
    if not held_out:
        notes.append("leave-one-out: the fitted scorers (smcs-source, smcs-knn, smcs-head) chose their settings on these questions")
    descriptions = {
        "smcs": "paper prior, Eq 4",
        "smcs-normalised": "vote / known support weight per model",
        "smcs-blend": "normalised vote + beta * bank accuracy",
        "smcs-tuned": "Eq 4 at (N_base, gamma) tuned on the bank",
        "knn": "mean outcome of the k nearest bank questions",
        "best-single": "most accurate model on the bank",
        "smcs-source": "per-source prior, the source predicted from the nearest questions",
        "smcs-knn": "similarity-weighted kNN shrunk to the per-source prior",
        "smcs-head": "logistic head per model on embedding + kNN + source",
        "per-source": "best model of the query's source on the bank (needs the source)",
        "best-single-on-queries": "most accurate model on the queries (a bound)",
    }
    params: dict[str, dict[str, str | int | float]] = {
        "smcs": {"n_base": default[0], "gamma": default[1]},
        "smcs-normalised": {"n_base": default[0], "gamma": default[1]},
        "smcs-blend": {"n_base": default[0], "gamma": default[1], "beta": beta},
        "smcs-tuned": {"n_base": tuned[0], "gamma": tuned[1]},
        "knn": {"k": knn_k},
        "best-single": {"model": bank.model_names[int(np.argmax(bank_accuracy))]},
        **_scorer_params(scored.fitted),
        "per-source": {},
        "best-single-on-queries": {"model": bank.model_names[int(np.argmax(np.nan_to_num(scores["best-single-on-queries"][0], nan=-1.0)))]},
    }
    calibrations = {name: calibration(name, p, outcomes) for name, p in probabilities.items()}
    choices = {name: ranked(s, 1)[:, 0] for name, s in scores.items()}
    rows = np.arange(outcomes.shape[0])
    methods = [
        Method(
            name=name,
            description=descriptions[name],
            accuracy=float(correct_at(outcomes, choice).mean()),
            unknown=float((outcomes[rows, choice] == -1).mean()),
            pairwise=pairwise(scores[name], outcomes),
            params=params[name],
            ece=calibrations[name].ece if name in calibrations else None,
        )
        for name, choice in choices.items()
    ]
    known_correct = outcomes == 1
    oracle = known_correct.any(axis=1)
    methods.append(Method(name="random", description="uniformly random model (expected)",
                          accuracy=float(known_correct.mean()), unknown=float((outcomes == -1).mean()), pairwise=None))
    methods.append(Method(name="oracle", description="some model correct", accuracy=float(oracle.mean()),
                          unknown=0.0, pairwise=None))

    smcs_curve = coverage_curve(outcomes, ranked(prior.votes, n_models))
    static_curve = coverage_curve(outcomes, ranked(side.accuracy, n_models))
    default_curve = coverage_curve(outcomes, scored.orders[scored.default])
    source_curve = coverage_curve(outcomes, ranked(scores["per-source"], n_models))
    coverage = [
        CoverageRow(k=k + 1, smcs=float(smcs_curve[k]), best_static=float(static_curve[k]), oracle=float(oracle.mean()),
                    default=float(default_curve[k]), per_source=float(source_curve[k]))
        for k in range(n_models)
    ]
    sweep_rows = [
        _sweep_row(parameter, config, query_scan.votes[config], outcomes)
        for parameter, grid in (("n_base", sweep_grid[: len(n_bases)]), ("gamma", sweep_grid[len(n_bases):]))
        for config in grid
    ]

    sweep = router_choices(bank, side.embeddings, policy) if held_out else None
    costs, cost_basis, aiqs = _cost_points(bank, side, choices, prior.normalised(), cost_weights, sweep, notes)
    return RoutingReport(
        mode="held-out" if held_out else "leave-one-out",
        bank=str(bank.path),
        bank_version=bank.version,
        queries=str(queries.path) if queries is not None else None,
        queries_version=queries.version if queries is not None else None,
        n_bank=bank.n_questions,
        n_queries=int(outcomes.shape[0]),
        models=list(bank.model_names),
        n_base=default[0],
        gamma=default[1],
        k=policy.k,
        unknown_rule=UNKNOWN_RULE,
        default_method=default_method,
        scorer_fit=scored.origin,
        methods=methods,
        coverage=coverage,
        sweeps=sweep_rows,
        by_source=_by_source(side, choices),
        costs=costs,
        cost_basis=cost_basis,
        aiq=aiqs,
        calibration=list(calibrations.values()),
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def _scorer_params(fitted: FittedScorer | None) -> dict[str, dict[str, str | int | float]]:
    """The settings rows of the fitted scorers (none without a fit)."""
    if fitted is None:
        return {}
    params: dict[str, dict[str, str | int | float]] = {
        "smcs-source": {"classifier": "yes" if fitted.source_classifier is not None else f"k={fitted.source_k}",
                        "a": fitted.source_smoothing},
        "smcs-knn": {"k": fitted.knn_k, "alpha": fitted.knn_alpha},
    }
    if fitted.head is not None:
        params["smcs-head"] = {"l2": fitted.head.l2}
    return params


def _tune(
    cap: np.ndarray, bank_scan: Scan, grid: list[tuple[int, float]], knn_ks: list[int], beta_grid: Sequence[float]
) -> tuple[tuple[int, float], int, float]:
    """(N_base, γ), kNN's k and the blend's β that route the bank best by leave-one-out (ties to the first).

    The objective is top-1 accuracy with an unknown outcome of the chosen model counted at that model's
    accuracy on the rest of the bank (its expected value), so tuning does not learn to avoid partially
    evaluated models.
    """
    accuracy = loo_accuracy(cap)
    value = np.where(cap.T >= 0, cap.T, np.nan_to_num(accuracy, nan=0.0))
    rows = np.arange(value.shape[0])

    def objective(scores: np.ndarray) -> float:
        return float(value[rows, ranked(scores, 1)[:, 0]].mean())

    tuned = grid[_best([objective(bank_scan.votes[c].votes) for c in grid])]
    knn_k = knn_ks[_best([objective(bank_scan.knn[k]) for k in knn_ks])]
    normalised = bank_scan.votes[grid[0]].normalised()
    beta = float(beta_grid[_best([objective(normalised + b * accuracy) for b in beta_grid])])
    return tuned, knn_k, beta


def _by_source(side: _Side, choices: dict[str, np.ndarray]) -> list[SourceRow]:
    """Top-1 accuracy of each method's choices, and of random and the oracle, per ``Question.source``."""
    outcomes = side.outcomes
    sources = np.array([q.source for q in side.questions], dtype=object)
    rows = []
    for source in sorted(set(sources.tolist())):
        here = sources == source
        accuracy = {name: float(correct_at(outcomes[here], choice[here]).mean()) for name, choice in choices.items()}
        accuracy["random"] = float((outcomes[here] == 1).mean())
        accuracy["oracle"] = float((outcomes[here] == 1).any(axis=1).mean())
        rows.append(SourceRow(source=source, n=int(here.sum()), accuracy=accuracy))
    return rows


def _sweep_row(parameter: str, config: tuple[int, float], votes: Votes, outcomes: np.ndarray) -> SweepRow:
    order = ranked(votes.votes, outcomes.shape[1])
    return SweepRow(
        parameter=parameter,
        value=float(config[0] if parameter == "n_base" else config[1]),
        n_base=config[0],
        gamma=config[1],
        accuracy=float(correct_at(outcomes, order[:, 0]).mean()),
        coverage=coverage_curve(outcomes, order).tolist(),
        pairwise=pairwise(votes.votes, outcomes),
        mean_support=float(votes.support.mean()),
    )


# ------------------------------------------------------------------------------------------------ costs


def cost_matrices(bank: Bank, side_questions: Sequence[Question]) -> tuple[np.ndarray, np.ndarray, str] | str:
    """(realised cost Q × R of each query under each model, expected cost per model from the bank alone,
    the basis in words), or why there is none. See the module docstring for the rule."""
    names = bank.model_names
    recorded = cost_matrix(side_questions, bank.models)
    in_bank = cost_matrix(bank.questions, bank.models)
    if np.isfinite(recorded).any() or np.isfinite(in_bank).any():
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(in_bank).sum(axis=0)
            expected = np.where(counts > 0, np.nansum(in_bank, axis=0) / np.maximum(counts, 1), np.nan)
        lacking = [m for m, e in zip(names, expected) if not np.isfinite(e)]
        if lacking:
            return f"no bank question records metadata['cost'] or metadata['tokens'] for {', '.join(map(repr, lacking))}"
        return np.where(np.isfinite(recorded), recorded, expected[None, :]), expected, "metadata['cost'] (or tokens x prices) per question"
    prices = np.array([m.cost_per_input_token + m.cost_per_output_token for m in bank.models])
    if not prices.any():
        return "none recorded (no ModelInfo prices, no metadata['cost'])"
    return np.broadcast_to(prices, (len(side_questions), len(names))), prices, "model price per token (equal token counts assumed)"


def _cost_points(
    bank: Bank,
    side: _Side,
    choices: dict[str, np.ndarray],
    normalised: np.ndarray,
    weights: Sequence[float],
    sweep: tuple[np.ndarray, np.ndarray] | None,
    notes: list[str],
) -> tuple[list[CostPoint] | None, str | None, dict[str, float]]:
    """The cost points of every model and method, the cost basis and the AIQs (module docstring); ``sweep``
    is the router's (p, c) per query (``router_choices``), None in leave-one-out."""
    found = cost_matrices(bank, side.questions)
    if isinstance(found, str):
        notes.append(f"costs: {found}: cost analysis skipped")
        return None, None, {}
    realised, expected, basis = found
    outcomes = side.outcomes
    rows = np.arange(outcomes.shape[0])
    known_correct = outcomes == 1
    points: list[tuple[str, float, float]] = [
        (f"model {name}", float(known_correct[:, r].mean()), float(realised[:, r].mean())) for r, name in enumerate(bank.model_names)
    ]
    points.append(("random", float(known_correct.mean()), float(realised.mean())))
    for name in ("smcs", "smcs-blend", "knn"):
        choice = choices[name]
        points.append((name, float(correct_at(outcomes, choice).mean()), float(realised[rows, choice].mean())))
    relative = expected / expected.max() if expected.max() > 0 else expected
    for weight in weights:
        choice = ranked(normalised - weight * relative[None, :], 1)[:, 0]
        points.append((f"smcs-cost lambda={weight:g}", float(correct_at(outcomes, choice).mean()), float(realised[rows, choice].mean())))
    swept = _sweep_points(sweep, outcomes, realised, notes)
    points.extend(swept)
    dominated = non_dominated([p[1] for p in points], [p[2] for p in points])
    result = [CostPoint(name=n, accuracy=a, mean_cost=c, dominated=d) for (n, a, c), d in zip(points, dominated)]
    cheapest_correct = np.where(known_correct, realised, np.inf).min(axis=1)
    oracle_cost = np.where(np.isfinite(cheapest_correct), cheapest_correct, realised.min(axis=1))
    result.append(CostPoint(name="oracle (cheapest correct)", accuracy=float(known_correct.any(axis=1).mean()),
                            mean_cost=float(oracle_cost.mean()), dominated=False, bound=True))
    return result, basis, _aiqs(points, swept, bank.model_names)


def _sweep_points(
    sweep: tuple[np.ndarray, np.ndarray] | None, outcomes: np.ndarray, realised: np.ndarray, notes: list[str]
) -> list[tuple[str, float, float]]:
    """(name, accuracy, mean realised cost) of the router at each W of the sweep."""
    if sweep is None:
        notes.append("costs: the router's willingness-to-pay sweep needs held-out queries (--queries)")
        return []
    p, c = sweep
    if not np.isfinite(c).all():
        notes.append("costs: the router's willingness-to-pay sweep needs every model's expected cost from the bank")
        return []
    rows = np.arange(outcomes.shape[0])
    points = []
    for willingness in willingness_grid(c):
        choice = sweep_choices(p, c, willingness)
        points.append((f"smcs W={willingness:.3g}", float(correct_at(outcomes, choice).mean()), float(realised[rows, choice].mean())))
    return points


def _aiqs(points: list[tuple[str, float, float]], swept: list[tuple[str, float, float]], models: Sequence[str]) -> dict[str, float]:
    """AIQ of the router's sweep and of each single model over the cost range of ``points``."""
    costs = [c for _, _, c in points]
    low, high = min(costs), max(costs)
    if not swept or not high > low:
        return {}
    curves = {"smcs W sweep": swept, **{f"model {m}": [p for p in points if p[0] == f"model {m}"] for m in models}}
    return {name: aiq([(c, a) for _, a, c in curve], low, high) for name, curve in curves.items()}
