"""Scorers: the retrieval evidence of a question turned into p_r(q), the probability that model r answers it
correctly (docs/design.md, Scorers: beyond the paper). Pure numpy, vectorised over a batch of Q questions.

Notation as in docs/design.md (The algorithm), plus: the k nearest bank questions n_1 … n_k of q (the support set's most
similar rows, Eq 3 sorts them first), their Ŝ_j, acc_r the model's bank accuracy (correct / known),
c_sr and m_sr the correct and known outcomes of model r on the bank questions of source s.

  vote    the paper's prior. p_r = V_r / Σ_{i∈I} Ŝ_i·[M_ri known] (the normalised vote of Eq 4: the
          similarity-weighted accuracy on the support set); models rank by V_r itself, so the decision
          is Eq (5)'s bit for bit.
  source  the per-source prior with fallback. π(q) is the query's source distribution (a router is not
          told the source): softmax(W_s·q + b_s), a source classifier fitted on the bank; on a bank with
          one source, π_s(q) = Σ_{j≤k_s} Ŝ_j·[source(n_j) = s] / Σ_j Ŝ_j over the nearest questions. Then
          p_r = Σ_s π_s(q)·(c_sr + a·acc_r) / (m_sr + a): a source's accuracy, shrunk to the model's overall
          accuracy by a pseudo-count a; with no evidence, acc_r.
  knn     similarity-weighted kNN shrunk to the source prior:
          p_r = (Σ_{j≤k} Ŝ_j·[M_r,n_j = 1] + α·p^source_r) / (Σ_{j≤k} Ŝ_j·[M_r,n_j known] + α).
  head    a logistic head per model: p_r = σ(w_r·x(q) + b_r), x(q) = [q, p^knn(q), p^source(q)]; fitted
          on the bank by ``smcs bank fit`` (``smcs.core.fit``: on the leading principal components of q).

Every scorer's p then goes through the Platt calibration that the fit learned for it on held-out folds,
p ← σ(a·logit(p) + b) (none without a fit). Out of bank: when the nearest bank question is less similar
than the fit's threshold, p_r = acc_r for every scorer and the decision says ``out_of_bank``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..bank import FittedScorer, Head, Platt
from .policy import SCORER_CHOICES
from ..errors import InputError

SCORERS: tuple[str, ...] = tuple(name for name in SCORER_CHOICES if name != "auto")
"""The scorers by name; ``"auto"`` (a policy's default) is the one the bank's fit chose, else ``"vote"``."""
EPS = 1e-4
"""Probabilities are kept in [EPS, 1 − EPS] before a logit."""


class BankStats(NamedTuple):
    """What scoring reads of a bank snapshot besides its embeddings: computed once per snapshot."""

    capability: np.ndarray
    """R × N int8, 1 correct, 0 wrong, −1 unknown"""
    row_source: np.ndarray
    """N int64: each row's index into ``sources`` (−1: a source the fit does not know)"""
    source_correct: np.ndarray
    """S × R: c_sr"""
    source_known: np.ndarray
    """S × R: m_sr"""
    accuracy: np.ndarray
    """R: acc_r (0.5 where a model has no known outcome)"""


class Evidence(NamedTuple):
    """What retrieval found for Q questions (row q of every array is question q)."""

    queries: np.ndarray
    """Q × d unit query embeddings"""
    neighbours: np.ndarray
    """Q × k bank rows, most similar first (−1 pads a question with fewer)"""
    similarities: np.ndarray
    """Q × k Ŝ of ``neighbours`` (0 at pads)"""
    votes: np.ndarray
    """Q × R: Eq (4)"""
    known: np.ndarray
    """Q × R: Σ_{i∈I} Ŝ_i·[M_ri known], the normalised vote's denominator (``kernels.known_weights``; the
    route kernels sum it beside the votes)"""


def bank_stats(capability: np.ndarray, row_sources: Sequence[str] | None, sources: Sequence[str]) -> BankStats:
    """The ``BankStats`` of a bank whose row i has source ``row_sources[i]`` (None: no row's source is
    known); ``sources`` (the fit's) index them."""
    cap = np.asarray(capability)
    index = {source: i for i, source in enumerate(sources)}
    if row_sources is None:
        row_source = np.full(cap.shape[1], -1, dtype=np.int64)
    else:
        row_source = np.array([index.get(s, -1) for s in row_sources], dtype=np.int64)
    correct = np.zeros((len(sources), cap.shape[0]))
    known = np.zeros((len(sources), cap.shape[0]))
    mapped = row_source >= 0
    np.add.at(correct, row_source[mapped], (cap[:, mapped] == 1).T)
    np.add.at(known, row_source[mapped], (cap[:, mapped] >= 0).T)
    n_known = (cap >= 0).sum(axis=1)
    accuracy = np.where(n_known > 0, (cap == 1).sum(axis=1) / np.maximum(n_known, 1), 0.5)
    return BankStats(cap, row_source, correct, known, accuracy)


def vote_probability(evidence: Evidence, stats: BankStats) -> np.ndarray:
    """Q × R: the normalised vote V_r / known_r; acc_r where nothing is known."""
    return normalised_votes(evidence.votes, evidence.known, stats.accuracy)


def normalised_votes(votes: np.ndarray, known: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """V_r / known_r, and ``accuracy``_r where nothing is known (any leading shape over the R models)."""
    positive = known > 0
    return np.where(positive, votes / np.where(positive, known, 1.0), accuracy)


class Linear(NamedTuple):
    """A fitted ``Head`` as arrays: its logits are ``features @ weights_t + bias``."""

    weights_t: np.ndarray
    """F × J"""
    bias: np.ndarray
    """J"""

    @classmethod
    def of(cls, head: Head) -> Linear:
        """``head``'s lists as float64 arrays (converting a 15 × 414 head per route cost more than scoring)."""
        return cls(np.ascontiguousarray(np.asarray(head.weights, dtype=np.float64).T), np.asarray(head.bias, dtype=np.float64))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Q × J: the logits of each row of ``features``."""
        return np.asarray(features, dtype=np.float64) @ self.weights_t + self.bias


class Scoring(NamedTuple):
    """What the fitted scorers read for one bank snapshot, prepared once: its ``BankStats`` and its fit, with
    the fit's heads as arrays."""

    stats: BankStats
    fitted: FittedScorer
    head: Linear | None
    source_classifier: Linear | None

    @classmethod
    def of(cls, stats: BankStats, fitted: FittedScorer) -> Scoring:
        """The ``Scoring`` of ``fitted`` over a snapshot whose ``BankStats`` are ``stats``."""
        def prepared(head: Head | None) -> Linear | None:
            return None if head is None else Linear.of(head)

        return cls(stats, fitted, prepared(fitted.head), prepared(fitted.source_classifier))


def source_distribution(evidence: Evidence, scoring: Scoring) -> np.ndarray:
    """Q × S: π(q), the query's source distribution: the fit's source classifier (a softmax over its
    sources of a linear function of q) when it has one, else ``neighbour_sources``."""
    if scoring.source_classifier is None:
        return neighbour_sources(evidence, scoring.stats, scoring.fitted.source_k)
    return softmax(scoring.source_classifier(evidence.queries))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def neighbour_sources(evidence: Evidence, stats: BankStats, k: int) -> np.ndarray:
    """Q × S: the Ŝ-weighted sources of the ``k`` nearest bank questions (zero rows: no evidence)."""
    n_sources = stats.source_correct.shape[0]
    rows = evidence.neighbours[:, :k]
    weights = np.where(rows >= 0, evidence.similarities[:, :k], 0.0).astype(np.float64)
    sources = stats.row_source[np.maximum(rows, 0)]
    weights = np.where(sources >= 0, weights, 0.0)
    out = np.zeros((rows.shape[0], n_sources))
    np.add.at(out, (np.repeat(np.arange(rows.shape[0]), rows.shape[1]), np.maximum(sources, 0).ravel()), weights.ravel())
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def source_probability(stats: BankStats, pi: np.ndarray, smoothing: float) -> np.ndarray:
    """Q × R: the per-source prior Σ_s π_s·(c_sr + a·acc_r)/(m_sr + a) under the source distribution
    ``pi`` (Q × S), acc_r where ``pi`` is empty."""
    rates = (stats.source_correct + smoothing * stats.accuracy[None, :]) / (stats.source_known + smoothing)  # S × R
    mixed = pi @ rates
    empty = pi.sum(axis=1) == 0
    return np.where(empty[:, None], stats.accuracy[None, :], mixed)


def knn_probability(evidence: Evidence, stats: BankStats, k: int, alpha: float, prior: np.ndarray) -> np.ndarray:
    """Q × R: (Σ_{j≤k} Ŝ_j·[M = 1] + α·prior) / (Σ_{j≤k} Ŝ_j·[M known] + α) over the ``k`` nearest."""
    rows = evidence.neighbours[:, :k]
    weights = np.where(rows >= 0, evidence.similarities[:, :k], 0.0).astype(np.float64)
    outcomes = stats.capability[:, np.maximum(rows, 0)]  # R × Q × k
    correct = np.einsum("qk,rqk->qr", weights, outcomes == 1)
    known = np.einsum("qk,rqk->qr", weights, outcomes >= 0)
    return (correct + alpha * prior) / (known + alpha)


def head_features(evidence: Evidence, knn: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Q × F: the head's raw features [q, p^knn, p^source]."""
    return np.hstack([evidence.queries.astype(np.float64), knn, source])


def raw_probabilities(evidence: Evidence, scoring: Scoring, scorer: str, pi: np.ndarray | None = None) -> np.ndarray:
    """Q × R: the uncalibrated p of ``scorer`` (one of ``SCORERS``) under the fit's settings; ``pi`` is the
    questions' ``source_distribution`` when the caller has it already."""
    stats, fitted = scoring.stats, scoring.fitted
    if scorer == "vote":
        return vote_probability(evidence, stats)
    pi = source_distribution(evidence, scoring) if pi is None else pi
    source = source_probability(stats, pi, fitted.source_smoothing)
    if scorer == "source":
        return source
    knn = knn_probability(evidence, stats, fitted.knn_k, fitted.knn_alpha, source)
    if scorer == "knn":
        return knn
    if scorer == "head":
        if scoring.head is None:
            raise InputError("scorer 'head' needs a fitted head, and the bank's fit has none")
        return sigmoid(scoring.head(head_features(evidence, knn, source)))
    raise InputError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")


def covering_referencers(p: np.ndarray, cover: Sequence[Sequence[int]], k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """The k referencers for coverage: the model f of highest ``p`` (of ``allowed``, ties to the lower index),
    then the allowed models of ``cover[f]`` (the fit's cover order after f on the question's source: each
    the one that answers most of what those before it miss), then the rest by ``p``."""
    candidates = np.arange(p.shape[0]) if allowed is None else np.sort(np.asarray(allowed))
    by_p = candidates[np.argsort(-p[candidates], kind="stable")]
    first = int(by_p[0])
    permitted = set(candidates.tolist())
    chosen = [first]
    for model in cover[first]:
        if len(chosen) == k:
            break
        if model in permitted and model not in chosen:
            chosen.append(model)
    chosen.extend(m for m in by_p.tolist() if m not in chosen)
    return np.array(chosen[:k], dtype=np.int64)


def calibrated(p: np.ndarray, platt: Platt) -> np.ndarray:
    """Platt scaling: σ(a·logit(p) + b)."""
    return sigmoid(platt.a * logit(p) + platt.b)


def probabilities(
    evidence: Evidence, scoring: Scoring, scorer: str, pi: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(Q × R calibrated p of ``scorer``, Q bool out of bank). Out-of-bank questions get p_r = acc_r.
    ``pi`` as for ``raw_probabilities``."""
    stats, fitted = scoring.stats, scoring.fitted
    p = raw_probabilities(evidence, scoring, scorer, pi)
    platt = fitted.calibration.get(scorer)
    if platt is not None:
        p = calibrated(p, platt)
    nearest = np.where(evidence.neighbours[:, 0] >= 0, evidence.similarities[:, 0], 0.0) if evidence.neighbours.shape[1] else np.zeros(len(p))
    outside = nearest < fitted.out_of_bank
    return np.where(outside[:, None], stats.accuracy[None, :], p), outside


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−z), without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)) of ``p`` clipped to [EPS, 1 − EPS]."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q / (1 - q))
