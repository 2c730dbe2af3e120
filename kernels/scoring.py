"""Exploitation, Eq (7): similarity and perplexity scores of the n aggregations and the hybrid choice."""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks


@njit(cache=True, nogil=True, fastmath=True)
def _mean_pairwise_similarity(candidates):
    n, d = candidates.shape
    unit = np.empty((n, d), dtype=np.float64)
    for i in range(n):
        norm = 0.0
        for j in range(d):
            norm += candidates[i, j] * candidates[i, j]
        norm = np.sqrt(norm)
        for j in range(d):
            unit[i, j] = candidates[i, j] / norm
    out = np.zeros(n, dtype=np.float64)
    for i in range(n):
        for k in range(i, n):
            dot = 0.0
            for j in range(d):
                dot += unit[i, j] * unit[k, j]
            out[i] += dot
            if k != i:
                out[k] += dot
    return out / n


@njit(cache=True, nogil=True)
def _perplexity(logprobs, offsets):
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        acc = 0.0
        for t in range(offsets[i], offsets[i + 1]):
            acc += logprobs[t]
        out[i] = np.exp(-acc / (offsets[i + 1] - offsets[i]))
    return out


@njit(cache=True, nogil=True)
def _select_best(scores):
    best = 0
    for i in range(1, scores.shape[0]):
        if scores[i] > scores[best]:
            best = i
    return best


def mean_pairwise_similarity(candidates: np.ndarray) -> np.ndarray:
    """S^sim_i = (1/n) Σ_{j=1..n} cos(G_i, G_j) over the n candidate embeddings (the sum includes j = i)."""
    g = _checks.finite("candidates", _checks.float_matrix("candidates", candidates, dtype=np.float64))
    if g.shape[0] == 0:
        raise ValueError("candidates must hold at least one embedding")
    zero = np.flatnonzero(~np.any(g != 0, axis=1))
    if zero.size:
        raise ValueError(f"candidates row {int(zero[0])} is a zero vector (cosine undefined)")
    return _mean_pairwise_similarity(g)


def perplexity(logprobs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """PPL_i = exp(−mean token logprob of candidate i); ragged: candidate i owns logprobs[offsets[i]:offsets[i+1]]."""
    lp = _checks.finite("logprobs", _checks.float_vector("logprobs", logprobs))
    off = np.asarray(offsets)
    if off.ndim != 1 or off.shape[0] < 2 or not np.issubdtype(off.dtype, np.integer):
        raise ValueError("offsets must be a 1-D integer array of n + 1 positions (n >= 1)")
    off = np.ascontiguousarray(off, dtype=np.int64)
    if off[0] != 0 or off[-1] != lp.shape[0]:
        raise ValueError(f"offsets must start at 0 and end at len(logprobs) = {lp.shape[0]}")
    empty = np.flatnonzero(np.diff(off) <= 0)
    if empty.size:
        raise ValueError(f"offsets give candidate {int(empty[0])} no tokens (perplexity undefined)")
    return _perplexity(lp, off)


def hybrid_scores(sim: np.ndarray, ppl: np.ndarray, lam: float) -> np.ndarray:
    """Eq (7): S^total_i = S^sim_i + λ·S^PPL_i with S^PPL_i = 1 − PPL_i."""
    s = _checks.finite("sim", _checks.float_vector("sim", sim))
    p = _checks.finite("ppl", _checks.float_vector("ppl", ppl, length=s.shape[0]))
    if not np.isfinite(lam):
        raise ValueError(f"lam must be finite, got {lam!r}")
    return s + float(lam) * (1.0 - p)


def select_best(scores: np.ndarray) -> int:
    """argmax_i S^total_i, ties to the lowest index."""
    s = _checks.finite("scores", _checks.float_vector("scores", scores))
    if s.shape[0] == 0:
        raise ValueError("scores must not be empty")
    return int(_select_best(s))
