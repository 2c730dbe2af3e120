"""Evaluation measures of the paper: the pairwise ranking score, Eq (8), and OCA/MCA (§4.7)."""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _checks


@njit(cache=True, nogil=True)
def _pairwise_ranking_counts(prior, outcomes):
    hits = 0
    pairs = 0
    for q in range(prior.shape[0]):
        for j in range(prior.shape[1]):
            if outcomes[q, j] != 1:
                continue
            for k in range(prior.shape[1]):
                if outcomes[q, k] == 0:
                    pairs += 1
                    if prior[q, j] > prior[q, k]:
                        hits += 1
    return hits, pairs


def pairwise_ranking_score(prior: np.ndarray, outcomes: np.ndarray) -> float:
    """Eq (8): Σ_i Σ_{j ∈ P_i} Σ_{k ∈ N_i} 1{V_i[j] > V_i[k]} / Σ_i |P_i|·|N_i|.

    ``prior`` is Q × R (V_i from Eq (4) per test question), ``outcomes`` Q × R with 1 correct (P_i),
    0 wrong (N_i), −1 unknown (left out). NaN when no (correct, wrong) pair exists.
    """
    v = _checks.finite("prior", _checks.float_matrix("prior", prior, dtype=np.float64))
    o = _checks.capability_matrix("outcomes", outcomes, v.shape[1])
    if o.shape[0] != v.shape[0]:
        raise ValueError(f"outcomes has {o.shape[0]} rows but prior has {v.shape[0]}")
    hits, pairs = _pairwise_ranking_counts(v, o)
    return hits / pairs if pairs else float("nan")


def oca_mca(correct: np.ndarray) -> tuple[float, float]:
    """§4.7 over Q questions × n aggregations: OCA = share of questions with at least one correct
    aggregation (diversity), MCA = share with at least two (quality). NaN when Q = 0."""
    c = np.asarray(correct)
    if c.ndim != 2:
        raise ValueError(f"correct must be a 2-D array (questions x aggregations), got shape {c.shape}")
    if c.shape[0] == 0:
        return float("nan"), float("nan")
    counts = c.astype(bool).sum(axis=1)
    return float(np.mean(counts >= 1)), float(np.mean(counts >= 2))
