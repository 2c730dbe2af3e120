"""Fitting the scorers on a bank (``smcs bank fit``): hyper-parameters, the logistic head, Platt calibration,
the out-of-bank threshold, and the cross-validated choice of the default scorer. Pure numpy, no I/O.

Everything is measured on the bank alone, never on queries. Bank rows (all of them, or a ``sample`` of
them on a large bank, split into ``folds`` folds) are scored as queries: a row never retrieves itself,
and the outcomes its source and kNN probabilities are computed from leave out its whole fold (*fold
masking*). Leaving out only the row itself would encode its outcome (a neighbourhood's rate less the
row's own outcome moves against it), and a head learning on such features reads the outcome back: on
coin-flip outcomes in small tight clusters its cross-validated top-1 came out 0.77 against 0.47 by
chance. For the head's cross-validation, the training rows' features leave out the held-out fold too,
so no held-out outcome reaches a feature or the model. Then:

1. ``source``: a source classifier (``fit_logistic`` one-vs-rest on q, normalised by a softmax) with
   held-out predictions from ``folds``-fold cross-validation, then refitted on every training row; with
   one source, the k_s = ``SOURCE_K`` nearest questions' sources. Pseudo-count a = ``SOURCE_SMOOTHING``.
   Measured on RouterDC (bank = its six train files, queries = the test files): the classifier finds the
   query's source for 95 % of queries against 87 % for the nearest 20 questions, and the source scorer's
   top-1 rises from 0.614 to 0.619 (the true source's lookup table: 0.620).
2. ``knn``: (k, α) over ``KNN_GRID`` × ``ALPHA_GRID``, the pair whose leave-one-out top-1 is best.
3. ``head``: a ridge-penalised logistic regression per model on [the ``HEAD_COMPONENTS`` leading principal
   components of q, p^knn, p^source], the penalty chosen from ``L2_GRID`` by ``folds``-fold
   cross-validation, then refitted on every training row; the projection is folded into weights over
   the raw features (``smcs.core.scorers.head_features``). On RouterDC 32 components route better than
   16, 64 or all 384 (0.610 against 0.608, 0.607 and 0.595 top-1 on the queries).
4. Calibration: a Platt pair (a, b) per scorer, fitted on its held-out predictions (leave-one-out for
   vote, source and knn; the folds' for the head).
5. Scores per scorer on those held-out predictions: top-1 (an unknown outcome of the chosen model counted
   at that model's accuracy, so partially evaluated models are not avoided), top-3 coverage (of the three
   referencers the router would pick: for scorers other than vote in cover order, with cover orders
   counted without the row's fold), ECE, Brier.
   The default is the scorer with the best top-1, ties to the simpler one (``SCORERS`` order).
6. Out of bank: the ``OUT_OF_BANK_QUANTILE`` quantile of the training rows' nearest-question similarity.
7. Cover orders (``cover_orders``): per source and first referencer, the greedy order in which further
   models answer most of what the chosen ones miss on that source's bank questions. The default
   policy picks referencers after the first by it (``Policy.cover``): on RouterDC it lifts top-3 coverage
   from 0.755 (the three most probable) to 0.770.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ..bank import Bank, FittedScorer, Head, Platt, ScorerScore
from .policy import Policy
from .scorers import (
    SCORERS,
    BankStats,
    Evidence,
    bank_stats,
    calibrated,
    covering_referencers,
    knn_probability,
    logit,
    neighbour_sources,
    sigmoid,
    softmax,
    source_probability,
    vote_probability,
)
from ..errors import InputError

KIND = "smcs-scorer/1"
SOURCE_K = 20
HEAD_COMPONENTS = 32
SOURCE_L2 = 1e-3
SOURCE_SMOOTHING = 10.0
KNN_GRID = (10, 25, 50, 100, 200)
ALPHA_GRID = (1.0, 3.0, 10.0, 30.0)
L2_GRID = (1e-3, 1e-2, 1e-1)
OUT_OF_BANK_QUANTILE = 0.005
COVER_DEPTH = 15
"""Models kept per cover order (the largest K a cover order serves; past it, referencers follow p)."""
DEFAULT_SAMPLE = 10_000
DEFAULT_FOLDS = 5
ECE_BINS = 10
_BLOCK_ELEMENTS = 1 << 23
"""Queries per block × bank rows: each block's similarities take 32 MiB (float32), one block per core."""
_GD_STEPS = 200

FitProgress = Callable[[str], None]
"""Called with a short description as each stage of the fit starts."""


def fit_scorer(
    bank: Bank,
    policy: Policy = Policy(),
    *,
    folds: int = DEFAULT_FOLDS,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    progress: FitProgress | None = None,
) -> FittedScorer:
    """Fit every scorer on ``bank`` (see the module docstring) and return what ``Bank.with_scorer`` stores.

    ``policy`` gives the N_base and γ of the vote scorer's support set; ``folds`` (≥ 2) the head's
    cross-validation; ``sample`` (≥ 2·folds) bounds the rows trained on; ``seed`` draws the sample and
    the folds. ``ValueError`` for a bank with fewer than 2·``folds`` rows with a known outcome.
    """
    started = time.perf_counter()
    say = progress or (lambda _: None)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InputError(f"folds must be an integer >= 2, got {folds!r}")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2 * folds:
        raise InputError(f"sample must be an integer >= 2 * folds ({2 * folds}), got {sample!r}")
    cap = np.asarray(bank.capability)
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero((cap >= 0).any(axis=0))
    if rows.size < 2 * folds:
        raise InputError(f"the bank has {rows.size} question(s) with a known outcome; fitting needs at least {2 * folds}")
    if rows.size > sample:
        rows = np.sort(rng.choice(rows, size=sample, replace=False))
    row_sources = [q.source for q in bank.questions]
    sources = sorted(set(row_sources))
    stats = bank_stats(cap, row_sources, sources)
    say(f"retrieving the neighbours of {rows.size} bank questions (leave-one-out)")
    evidence = leave_one_out_evidence(bank.embeddings, cap, rows, max(KNN_GRID[-1], SOURCE_K), policy.n_base, policy.gamma)
    outcomes = cap[:, rows].T
    value = expected_outcomes(outcomes, stats.accuracy)

    folds_of = rng.permutation(rows.size) % folds
    say(f"fitting the source classifier over {len(sources)} sources ({folds}-fold cross-validation)")
    classifier, pi = _fit_source_classifier(evidence, stats, rows, folds_of)
    masked = _FoldMasking(cap, row_sources, sources, rows, folds_of, evidence, pi)
    held_out: dict[str, np.ndarray] = {"vote": vote_probability(evidence, stats)}
    held_out["source"] = masked.source()
    say("tuning the kNN scorer")
    knn_k, knn_alpha, held_out["knn"] = _tune_knn(masked, value)

    say(f"fitting the head ({folds}-fold cross-validation over {len(L2_GRID)} penalties)")
    head, held_out["head"] = _fit_head(masked, knn_k, knn_alpha, outcomes, value)

    say("calibrating and scoring")
    calibration = {name: platt(p, outcomes) for name, p in held_out.items()}
    rankings = {name: (evidence.votes if name == "vote" else p) for name, p in held_out.items()}
    covered = _held_out_cover(masked, stats.row_source, len(sources), held_out)
    cv = {
        name: score(calibrated(held_out[name], calibration[name]), rankings[name], outcomes, value, covered.get(name))
        for name in held_out
    }
    default = max(SCORERS, key=lambda name: (round(cv[name].top1, 12), -SCORERS.index(name)))
    nearest = evidence.similarities[:, 0]
    return FittedScorer(
        kind=KIND,
        default=default,
        models=list(bank.model_names),
        sources=sources,
        data=bank.fitted_data(),
        fitted_rows=int(rows.size),
        folds=folds,
        source_k=SOURCE_K,
        source_smoothing=SOURCE_SMOOTHING,
        knn_k=knn_k,
        knn_alpha=knn_alpha,
        out_of_bank=float(np.quantile(nearest, OUT_OF_BANK_QUANTILE)),
        calibration=calibration,
        cv=cv,
        head=head,
        source_classifier=classifier,
        cover=cover_orders(cap, stats.row_source, len(sources), COVER_DEPTH),
        seconds=time.perf_counter() - started,
    )


def leave_one_out_evidence(
    embeddings: np.ndarray, capability: np.ndarray, rows: np.ndarray, k: int, n_base: int, gamma: float
) -> Evidence:
    """The ``Evidence`` of bank ``rows`` scored as queries, each with itself left out of retrieval."""
    e = np.asarray(embeddings, dtype=np.float32)
    return batch_evidence(e, capability, e[rows], k, n_base, gamma, exclude=rows)


def batch_evidence(
    embeddings: np.ndarray,
    capability: np.ndarray,
    queries: np.ndarray,
    k: int,
    n_base: int,
    gamma: float,
    *,
    exclude: np.ndarray | None = None,
) -> Evidence:
    """The ``Evidence`` of Q unit ``queries``: each one's ``k`` nearest bank rows and its Eq (4) votes over
    the support set of Eq (3) (float32 similarities and sums, so votes may differ from the kernel's in the
    last bits). ``exclude`` (Q bank rows): query q never retrieves row ``exclude[q]`` (leave-one-out; N_base
    and k then clamp to N − 1). Blocks of queries run on every core, each with one BLAS thread."""
    e = np.asarray(embeddings, dtype=np.float32)
    cap = np.asarray(capability)
    queries = np.asarray(queries, dtype=np.float32)
    n = e.shape[0] - (0 if exclude is None else 1)
    k, n_base = min(k, n), min(n_base, n)
    depth = max(k, n_base)
    indicators = np.ascontiguousarray(np.concatenate([cap == 1, cap >= 0]).T, dtype=np.float32)  # N × 2R
    n_models, q_total = cap.shape[0], queries.shape[0]
    neighbours = np.empty((q_total, k), dtype=np.int64)
    similarities = np.empty((q_total, k))
    sums = np.empty((q_total, 2 * n_models))
    step = max(1, _BLOCK_ELEMENTS // max(e.shape[0], 1))

    def block(start: int) -> None:
        stop = min(start + step, q_total)
        sims = queries[start:stop] @ e.T
        np.maximum(sims, np.float32(0.0), out=sims)
        if exclude is not None:
            sims[np.arange(stop - start), exclude[start:stop]] = -np.inf
        top = np.argpartition(sims, e.shape[0] - depth, axis=1)[:, e.shape[0] - depth :]  # the depth largest
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -top_sims), axis=1)
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        neighbours[start:stop], similarities[start:stop] = top[:, :k], top_sims[:, :k]
        threshold = np.float32(gamma) * top_sims[:, n_base - 1]
        sims[sims < threshold[:, None]] = 0.0
        sums[start:stop] = sims @ indicators

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(block, range(0, q_total, step)))
    return Evidence(queries, neighbours, similarities, sums[:, :n_models], sums[:, n_models:])


def _threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cover_orders(capability: np.ndarray, row_source: np.ndarray, n_sources: int, depth: int) -> list[list[list[int]]]:
    """Per source s and first model f: up to ``depth`` further models in greedy cover order on the rows of
    source s: each next model the one known correct on most rows that no model chosen so far is known
    correct on (ties to the model more accurate on s, then the lower index)."""
    correct = np.asarray(capability) == 1
    n_models = correct.shape[0]
    orders = []
    for source in range(n_sources):
        rows = correct[:, row_source == source].astype(np.float32)  # R × n_s
        known = (np.asarray(capability)[:, row_source == source] >= 0).sum(axis=1)
        accuracy = rows.sum(axis=1) / np.maximum(known, 1)
        covered = rows.copy()  # row f: what first model f covers
        chosen = np.eye(n_models, dtype=bool)
        picks = []
        for _ in range(min(depth, n_models - 1)):
            gains = (1.0 - covered) @ rows.T + 0.5 * accuracy[None, :]  # F × R; accuracy < 1 breaks ties only
            gains[chosen] = -1.0
            pick = np.argmax(gains, axis=1)
            picks.append(pick)
            chosen[np.arange(n_models), pick] = True
            covered = np.maximum(covered, rows[pick])
        orders.append(np.stack(picks, axis=1).tolist() if picks else [[] for _ in range(n_models)])
    return orders


def expected_outcomes(outcomes: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Q × R: the known outcome, else the model's bank accuracy (what top-1 credits an unknown choice with)."""
    return np.where(outcomes >= 0, outcomes, accuracy[None, :]).astype(np.float64)


def top1(ranking: np.ndarray, value: np.ndarray) -> float:
    """Mean ``value`` of each row's highest-ranked model (ties to the lower index)."""
    choice = np.argmax(ranking, axis=1)
    return float(value[np.arange(len(choice)), choice].mean())


def score(
    p: np.ndarray, ranking: np.ndarray, outcomes: np.ndarray, value: np.ndarray, first3: np.ndarray | None = None
) -> ScorerScore:
    """The ``ScorerScore`` of calibrated ``p`` whose models rank by ``ranking``; top-3 coverage of ``first3``
    (Q × 3 model indices: the referencers the router would pick) when given, else of the three ranked first."""
    order = np.argsort(-ranking, axis=1, kind="stable")[:, :3] if first3 is None else first3
    known = outcomes >= 0
    return ScorerScore(
        top1=top1(ranking, value),
        top3=float((np.take_along_axis(outcomes, order, axis=1) == 1).any(axis=1).mean()),
        ece=expected_calibration_error(p[known], outcomes[known]),
        brier=float(np.mean((p[known] - outcomes[known]) ** 2)),
    )


def expected_calibration_error(p: np.ndarray, outcomes: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: Σ_b (n_b / n)·|mean p − mean outcome| over ``bins`` equal-width bins of p (known outcomes only)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    if p.size == 0:
        return float("nan")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, p, bins) - np.bincount(which, y, bins))
    return float(gap.sum() / p.size) if count.any() else float("nan")


def platt(p: np.ndarray, outcomes: np.ndarray, steps: int = 50) -> Platt:
    """The Platt pair (a, b) maximising the likelihood of the known ``outcomes`` under σ(a·logit(p) + b)
    (Newton's method on the two parameters, with a tiny ridge for separable data)."""
    known = outcomes >= 0
    x, y = logit(p[known]), (outcomes[known] == 1).astype(np.float64)
    theta = np.array([1.0, 0.0])
    design = np.column_stack([x, np.ones_like(x)])
    for _ in range(steps):
        q = sigmoid(design @ theta)
        gradient = design.T @ (q - y) + 1e-6 * theta
        hessian = (design * (q * (1 - q))[:, None]).T @ design + 1e-6 * np.eye(2)
        delta = np.linalg.solve(hessian, gradient)
        theta -= delta
        if np.abs(delta).max() < 1e-10:
            break
    return Platt(a=float(theta[0]), b=float(theta[1]))


class _FoldMasking:
    """The training rows' source and kNN probabilities with the outcomes of whole folds left out."""

    def __init__(
        self,
        capability: np.ndarray,
        row_sources: Sequence[str],
        sources: Sequence[str],
        rows: np.ndarray,
        folds_of: np.ndarray,
        evidence: Evidence,
        pi: np.ndarray,
    ) -> None:
        self.capability, self.row_sources, self.sources = capability, row_sources, sources
        self.rows, self.folds_of, self.evidence, self.pi = rows, folds_of, evidence, pi
        self.folds = int(folds_of.max()) + 1
        self._stats: dict[frozenset[int], BankStats] = {}

    def stats(self, masked: frozenset[int]) -> BankStats:
        """The bank's ``BankStats`` with the outcomes of the training rows of the ``masked`` folds unknown."""
        if masked not in self._stats:
            without = self.capability.copy()
            without[:, self.rows[np.isin(self.folds_of, list(masked))]] = -1
            self._stats[masked] = bank_stats(without, self.row_sources, self.sources)
        return self._stats[masked]

    def source(self, extra: int | None = None) -> np.ndarray:
        """Q × R: each row's source probability with its own fold masked, and the fold ``extra`` too when
        given (that fold's rows are left NaN)."""
        return self._probabilities(extra, None)

    def knn(self, k: int, alpha: float, extra: int | None = None) -> np.ndarray:
        """Q × R: each row's kNN probability at ``k``, ``alpha``, masked as ``source`` is."""
        return self._probabilities(extra, (k, alpha))

    def _probabilities(self, extra: int | None, knn: tuple[int, float] | None) -> np.ndarray:
        out = np.full((self.rows.size, self.capability.shape[0]), np.nan)
        for fold in range(self.folds):
            if fold == extra:
                continue
            inside = self.folds_of == fold
            stats = self.stats(frozenset({fold} if extra is None else {fold, extra}))
            prior = source_probability(stats, self.pi[inside], SOURCE_SMOOTHING)
            if knn is not None:
                here = Evidence(*(field[inside] for field in self.evidence))
                prior = knn_probability(here, stats, knn[0], knn[1], prior)
            out[inside] = prior
        return out


def _held_out_cover(
    masked: _FoldMasking, row_source: np.ndarray, n_sources: int, held_out: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per scorer other than vote, each training row's first three referencers in cover order, the cover
    orders counted without the row's fold and its source the classifier's held-out guess (``Policy.cover``)."""
    k = min(3, masked.capability.shape[0])
    out = {name: np.empty((masked.rows.size, k), dtype=np.int64) for name in held_out if name != "vote"}
    source = np.argmax(masked.pi, axis=1)
    for fold in range(masked.folds):
        orders = cover_orders(masked.stats(frozenset({fold})).capability, row_source, n_sources, k)
        for q in np.flatnonzero(masked.folds_of == fold):
            for name, first3 in out.items():
                first3[q] = covering_referencers(held_out[name][q], orders[source[q]], k)
    return out


def _tune_knn(masked: _FoldMasking, value: np.ndarray) -> tuple[int, float, np.ndarray]:
    """(k, α, their held-out p) of the best fold-masked top-1 over the grids, ties to the first."""
    best: tuple[float, int, float, np.ndarray] | None = None
    k_max = masked.evidence.neighbours.shape[1]
    for k in sorted({min(k, k_max) for k in KNN_GRID}):
        for alpha in ALPHA_GRID:
            p = masked.knn(k, alpha)
            objective = top1(p, value)
            if best is None or objective > best[0]:
                best = (objective, k, alpha, p)
    assert best is not None
    return best[1], best[2], best[3]


def _fit_source_classifier(
    evidence: Evidence, stats: BankStats, rows: np.ndarray, folds_of: np.ndarray
) -> tuple[Head | None, np.ndarray]:
    """The source classifier over every training row and its held-out π (Q × S); with fewer than two
    sources none, and π from the nearest questions' sources."""
    n_sources = stats.source_correct.shape[0]
    own = stats.row_source[rows]
    if n_sources < 2:
        return None, neighbour_sources(evidence, stats, SOURCE_K)
    onehot = (own[:, None] == np.arange(n_sources)[None, :]).astype(np.int8)
    held = np.empty((own.size, n_sources))
    for fold in np.unique(folds_of):
        train, test = folds_of != fold, folds_of == fold
        weights, bias = fit_logistic(evidence.queries[train], onehot[train], SOURCE_L2)
        held[test] = softmax(evidence.queries[test] @ weights.T + bias)
    return _head(*fit_logistic(evidence.queries, onehot, SOURCE_L2), SOURCE_L2), held


def _fit_head(
    masked: _FoldMasking, knn_k: int, knn_alpha: float, outcomes: np.ndarray, value: np.ndarray
) -> tuple[Head, np.ndarray]:
    """The head refitted on every row at the cross-validated penalty (its projection onto the leading
    principal components of q folded into the weights), and its held-out p at that penalty. In fold f's
    cross-validation the training rows' features mask fold f as well as their own."""
    queries = masked.evidence.queries.astype(np.float64)
    centre = queries.mean(axis=0)
    _, axes = np.linalg.eigh(np.cov((queries - centre).T))
    projection = axes[:, ::-1][:, : min(HEAD_COMPONENTS, queries.shape[1])]  # d × m, leading first
    projected = (queries - centre) @ projection

    def features(extra: int | None) -> np.ndarray:
        return np.hstack([projected, masked.knn(knn_k, knn_alpha, extra), masked.source(extra)])

    own = features(None)
    training = {fold: features(fold) for fold in range(masked.folds)}
    best: tuple[float, float, np.ndarray] | None = None
    for l2 in L2_GRID:
        held = np.empty(outcomes.shape)
        for fold, x in training.items():
            train, test = masked.folds_of != fold, masked.folds_of == fold
            weights, bias = fit_logistic(x[train], outcomes[train], l2)
            held[test] = sigmoid(own[test] @ weights.T + bias)
        objective = top1(held, value)
        if best is None or objective > best[0]:
            best = (objective, l2, held)
    assert best is not None
    _, l2, held = best
    weights, bias = fit_logistic(own, outcomes, l2)
    m = projection.shape[1]
    on_queries = weights[:, :m] @ projection.T  # R × d: the projection folded in
    raw = np.hstack([on_queries, weights[:, m:]])
    return _head(raw, bias - on_queries @ centre, l2), held


def _head(weights: np.ndarray, bias: np.ndarray, l2: float) -> Head:
    return Head(weights=weights.tolist(), bias=bias.tolist(), l2=l2)


def fit_logistic(features: np.ndarray, outcomes: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """A ridge logistic regression per column of ``outcomes`` (−1 entries left out): (J × F weights, J
    biases) over the raw ``features``.

    Minimises, per column, the mean log loss over its known rows + l2/2·‖w‖² in whitened coordinates
    (standardised features rotated onto their principal axes and scaled to unit variance), by Nesterov's
    accelerated gradient in float32 with step 1/L, L = λ_max/4 + l2 (whitened features have unit
    covariance, so a few hundred steps converge); standardising and whitening are folded into the
    returned weights and biases. BLAS runs on one thread here: the products are too narrow to gain from
    more, and waking OpenBLAS's threads for each of them costs more than it saves (measurements:
    docs/performance.md, "Threads on a small machine").
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_logistic(features, outcomes, l2)


def _fit_logistic(features: np.ndarray, outcomes: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    x = (features - mean) / scale
    eigenvalues, axes = np.linalg.eigh(x.T @ x / len(x))
    whiten = axes / np.sqrt(np.maximum(eigenvalues, 1e-3 * eigenvalues.max()))
    z = np.ascontiguousarray(x @ whiten, dtype=np.float32)
    known = outcomes >= 0
    target = (outcomes == 1).astype(np.float32)
    per_model = (known / np.maximum(known.sum(axis=0), 1.0)).astype(np.float32)
    base_rate = np.clip(target.sum(axis=0) / np.maximum(known.sum(axis=0), 1.0), 1e-3, 1 - 1e-3)
    w = np.zeros((z.shape[1], outcomes.shape[1]), dtype=np.float32)
    b = np.log(base_rate / (1 - base_rate)).astype(np.float32)
    w_prev, b_prev = w, b
    step = np.float32(1.0 / (0.25 * max(1.0, float(np.linalg.eigvalsh(z.T @ z / len(z)).max())) + l2))
    for t in range(1, _GD_STEPS + 1):
        momentum = np.float32((t - 1) / (t + 2))
        w_look, b_look = w + momentum * (w - w_prev), b + momentum * (b - b_prev)
        residual = (sigmoid32(z @ w_look + b_look) - target) * per_model
        w_prev, b_prev = w, b
        w = w_look - step * (z.T @ residual + np.float32(l2) * w_look)
        b = b_look - step * residual.sum(axis=0)
    weights = (whiten @ w.astype(np.float64)).T / scale  # J × F on the raw features
    return weights, b.astype(np.float64) - weights @ mean


def sigmoid32(z: np.ndarray) -> np.ndarray:
    """σ(z) in float32 (the solver's inner loop)."""
    return np.float32(0.5) * (np.float32(1.0) + np.tanh(np.float32(0.5) * z))


def cv_table(fitted: FittedScorer, names: Sequence[str] = SCORERS) -> list[str]:
    """Lines for people: each scorer's cross-validated scores on the bank, the default marked."""
    lines = [f"{'scorer':<8} {'top-1':>6} {'top-3':>6} {'ECE':>6} {'Brier':>6}"]
    for name in names:
        s = fitted.cv.get(name)
        if s is not None:
            mark = "  (default)" if name == fitted.default else ""
            lines.append(f"{name:<8} {s.top1:6.3f} {s.top3:6.3f} {s.ece:6.3f} {s.brier:6.3f}{mark}")
    return lines
