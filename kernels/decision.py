"""Eqs (5)–(6) for the vote scorer in one compiled call: what a route decides once Eq (4)'s sums are known.

``Router.route`` with the default policy over a bank without a fitted scorer or costs decides through
``route_decide``: ``route``'s scan, then ``vote_decision``'s probabilities, top K, exploration subsets and
drop probabilities in one more compiled call. The Python around a route runs after milliseconds of
scanning, with the interpreter's caches cold, where each Python-level numpy or numba call costs several
times its warm time: the two calls replace a dozen, and the arguments are the caller's to vouch for, as
re-checking them would be more such calls (measurements: docs/performance.md, "The router's Python runs
cold").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from . import _checks, pcg64
from .retrieval import _route, _threads, _top_k
from .sampling import EXACT_DROP_MAX_K, _explore, _stream


class VoteDecision(NamedTuple):
    """Eqs (5)–(6) for one question ranked by its votes."""

    referencers: np.ndarray
    """K model indices, highest vote first, ties to the lower index (Eq 5)"""
    votes: np.ndarray
    """K: their votes"""
    probabilities: np.ndarray
    """R: V_r / K_r, or the model's accuracy where K_r = 0 (nothing known in the support set)"""
    subsets: np.ndarray
    """n × (K − k_drop') referencer positions (0 = highest vote), Eq (6); k_drop' = min(k_drop, K − 1)"""
    drop_probabilities: np.ndarray
    """K: P(r ∉ subset); empty when K > ``EXACT_DROP_MAX_K``"""


def vote_decision(
    votes: np.ndarray, known: np.ndarray, accuracy: np.ndarray, k: int, k_drop: int, n: int, seed: int
) -> VoteDecision:
    """Eq (5) and Eq (6) from the votes V and known weights K of Eq (4) (``route(..., return_known=True)``):
    the probabilities V_r / K_r (``accuracy``_r where K_r = 0), the top ``k`` by V, and ``explore``'s
    independent draws over their votes with min(``k_drop``, k − 1) dropped, n subsets from ``seed``.
    ``ValueError`` names a bad argument."""
    v = _checks.finite("votes", _checks.float_vector("votes", votes))
    weights = _checks.float_vector("known", known)
    fallback = _checks.float_vector("accuracy", accuracy)
    if weights.shape != v.shape or fallback.shape != v.shape:
        raise ValueError(f"votes, known and accuracy must have one length, got {v.shape[0]}, {weights.shape[0]}, {fallback.shape[0]}")
    k = _checks.top_k_count(k, v.shape[0])
    k_drop = _checks.non_negative_int("k_drop", k_drop)
    n = _checks.non_negative_int("n", n)
    _stream(seed)  # checks the seed
    found = decide_votes(v, weights, fallback, k, k_drop, n, int(seed))
    assert found is not None  # the votes were checked finite
    return found


def decide_votes(
    votes: np.ndarray, known: np.ndarray, accuracy: np.ndarray, k: int, k_drop: int, n: int, seed: int
) -> VoteDecision | None:
    """``vote_decision`` for arguments the caller vouches for (float64 vectors of one length, 1 ≤ k ≤ R,
    k_drop ≥ 0, n ≥ 0, seed in [0, 2^64)): one compiled call, no checks. None when a vote is not
    finite (``vote_decision`` would raise)."""
    found = _decide(votes, known, accuracy, k, k_drop, n, *pcg64.seed_words(seed), k <= EXACT_DROP_MAX_K)
    return VoteDecision(*found) if found[0].shape[0] == k else None


def route_decide(
    embeddings: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    capability_bits: np.ndarray,
    n_base: int,
    gamma: float,
    threads: int | None,
    accuracy: np.ndarray,
    k: int,
    k_drop: int,
    n: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, VoteDecision | None]:
    """``route(embeddings, query, capability, n_base, gamma, threads, capability_bits=capability_bits,
    ordered=False, return_known=True)`` and ``decide_votes`` on its votes, two compiled calls and nothing
    else: (support rows in ascending order, their Ŝ, votes, known weights, the decision or None as
    ``decide_votes``). Two calls, not one fused: a cached compiled function that calls the parallel scan
    is one more place for numba's cache of parallel code to go wrong (numba issues 8578 and 10128).

    Nothing is checked: the caller vouches for the bank arrays (as ``route`` trusts them), for ``query``
    (a finite float32 vector of the bank's dimension, C order), ``capability_bits(capability)``, 1 ≤
    ``n_base``, 0 ≤ ``gamma`` ≤ 1, and the arguments of ``decide_votes``."""
    found = _route(
        embeddings, None, None, query, capability, capability_bits, n_base, gamma, _threads(threads, embeddings.nbytes), False, True
    )
    return (*found, decide_votes(found[2], found[3], accuracy, k, k_drop, n, seed))


@njit(cache=True, nogil=True)
def _decide(votes, known, accuracy, k, k_drop, n, seed_low, seed_high, n_words, exact):
    """``decide_votes`` compiled: (referencers, their votes, probabilities, subsets, drop probabilities); no
    referencers when a vote is not finite."""
    probabilities = np.empty(votes.shape[0])
    for r in range(votes.shape[0]):
        probabilities[r] = votes[r] / known[r] if known[r] > 0 else accuracy[r]
    if not np.all(np.isfinite(votes)):
        return np.empty(0, dtype=np.int64), np.empty(0), probabilities, np.empty((0, 0), dtype=np.int64), np.empty(0)
    referencers = _top_k(votes, k)
    ranking = votes[referencers]
    stream = pcg64.seeded_state(seed_low, seed_high, n_words)
    subsets, drops = _explore(ranking, k - min(k_drop, k - 1), n, stream, exact)
    return referencers, ranking, probabilities, subsets, drops
