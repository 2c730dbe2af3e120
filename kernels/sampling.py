"""Exploration, Eq (6): the prior-weighted drop distribution and successive unequal-probability sampling.

The random stream is numpy's ``default_rng(seed).random`` from a per-request seed (``subset_uniforms``,
computed by ``pcg64`` without building a ``Generator``) handed to the sampling kernel as uniforms, so the
kernel stays a pure function and the same seed gives the same subsets in the kernel and in its numpy
reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from . import _checks, pcg64

MAX_DRAWS_PER_SUBSET = 64
"""Distinct mode (``draw_distinct_subsets``) stops after 64·n draws even when distinct subsets remain
undrawn (each remaining one then has probability below about 1/(64·n) per draw)."""
EXACT_DROP_MAX_K = 16
"""``drop_probabilities`` sums over the 2^K sets of referencers drawn first: it is exact for K up to this."""


@njit(cache=True, nogil=True)
def _drop_distribution(votes):
    k = votes.shape[0]
    if votes.max() == votes.min():
        return np.full(k, 1.0 / k)
    v = votes / np.abs(votes).max()  # z is scale-free; scaling first keeps tiny or huge spreads representable
    mean = v.mean()
    std = np.sqrt(np.mean((v - mean) ** 2))
    z = (v - mean) / std
    e = np.exp(z - z.max())
    return e / e.sum()


@njit(cache=True, nogil=True)
def _sample_subsets(distribution, keep, uniforms):
    n = uniforms.shape[0]
    k = distribution.shape[0]
    out = np.empty((n, keep), dtype=np.int64)
    taken = np.zeros(k, dtype=np.bool_)
    for t in range(n):
        taken[:] = False
        for j in range(keep):
            total = 0.0
            for i in range(k):
                if not taken[i]:
                    total += distribution[i]
            target = uniforms[t, j] * total
            cumulative = 0.0
            pick = -1
            last = -1
            for i in range(k):
                if not taken[i]:
                    cumulative += distribution[i]
                    last = i
                    if cumulative > target:
                        pick = i
                        break
            taken[last if pick < 0 else pick] = True
        c = 0
        for i in range(k):
            if taken[i]:
                out[t, c] = i
                c += 1
    return out


def drop_distribution(votes: np.ndarray) -> np.ndarray:
    """Eq (6): D = softmax(z), z = (V − mean V)/std V with the population std (ddof = 0).

    ``votes`` are the K referencers' priors; when they are all equal (zero variance) D is uniform.
    """
    return _drop_distribution(_votes(votes))


def _votes(votes: np.ndarray) -> np.ndarray:
    """``votes`` as a float64 vector, finite and not empty (``ValueError`` naming votes otherwise)."""
    v = _checks.finite("votes", _checks.float_vector("votes", votes))
    if v.shape[0] == 0:
        raise ValueError("votes must not be empty")
    return v


def subset_uniforms(seed: int, n: int, keep: int) -> np.ndarray:
    """The n × keep uniforms in [0, 1) that ``sample_subsets`` consumes: ``np.random.default_rng(seed).random((n,
    keep))``, bit for bit, for an int ``seed`` in [0, 2^64)."""
    out = np.empty((n, keep))
    pcg64.fill_uniforms(_stream(seed), out)
    return out


def _stream(seed: int) -> np.ndarray:
    """The PCG64 state of ``default_rng(seed)`` (``pcg64``), after checking ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return pcg64.state_of(int(seed))


def sample_subsets(distribution: np.ndarray, keep: int, uniforms: np.ndarray) -> np.ndarray:
    """Successive unequal-probability sampling without replacement, D renormalised after each draw.

    Row t of the result keeps ``keep`` of the K items (K − K_drop in SMCS): draw j takes the first
    remaining item whose cumulative remaining weight exceeds ``uniforms[t, j]`` × the remaining total.
    Items within a row are in ascending order, i.e. descending prior when items are ranked by prior.
    """
    d = _checks.finite("distribution", _checks.float_vector("distribution", distribution))
    if d.shape[0] == 0 or d.min() < 0 or d.sum() <= 0:
        raise ValueError("distribution must be non-empty, non-negative and not all zero")
    keep = _checks.positive_int("keep", keep)
    if keep > d.shape[0]:
        raise ValueError(f"keep={keep} exceeds the {d.shape[0]} items to sample from")
    u = _checks.finite("uniforms", _checks.float_matrix("uniforms", uniforms, dtype=np.float64))
    if u.shape[1] != keep:
        raise ValueError(f"uniforms must have {keep} columns (one per draw), got {u.shape[1]}")
    if u.size and (u.min() < 0 or u.max() >= 1):
        raise ValueError("uniforms must lie in [0, 1)")
    return _sample_subsets(d, keep, u)


@njit(cache=True, nogil=True)
def _drop_probabilities(distribution, keep):
    k = distribution.shape[0]
    reach = np.zeros(1 << k)  # reach[mask]: P(the first popcount(mask) draws are exactly the items of mask)
    reach[0] = 1.0
    dropped = np.zeros(k)
    for mask in range(1 << k):  # every successor mask | bit is larger, so reach[mask] is final here
        p = reach[mask]
        if p == 0.0:
            continue
        count = 0
        total = 0.0
        for i in range(k):
            if (mask >> i) & 1:
                count += 1
            else:
                total += distribution[i]
        for i in range(k):
            if not (mask >> i) & 1:
                if count == keep:
                    dropped[i] += p
                else:
                    reach[mask | (1 << i)] += p * distribution[i] / total
    return dropped


def _plan(votes: np.ndarray, k_drop: int) -> tuple[np.ndarray, int]:
    """Eq (6)'s D of ``votes`` and the references each subset keeps, K − ``k_drop`` (checked)."""
    v, keep = _checked(votes, k_drop)
    return _drop_distribution(v), keep


def _checked(votes: np.ndarray, k_drop: int) -> tuple[np.ndarray, int]:
    """``votes`` as a checked float64 vector and the references each subset keeps, K − ``k_drop``."""
    v = _votes(votes)
    k = v.shape[0]
    if isinstance(k_drop, bool) or not isinstance(k_drop, (int, np.integer)) or not 0 <= k_drop < k:
        raise ValueError(f"k_drop must be an integer with 0 <= k_drop < K (K = {k}), got {k_drop!r}")
    return v, k - int(k_drop)


def draw_subsets(votes: np.ndarray, k_drop: int, n: int, seed: int) -> np.ndarray:
    """The n exploration subsets of SMCS: drop ``k_drop`` of the K referencers, prior-weighted by Eq (6).

    Returns an n × (K − k_drop) array of referencer positions (0 = highest prior), deterministic in ``seed``.
    """
    distribution, keep = _plan(votes, k_drop)
    return _sample_subsets(distribution, keep, subset_uniforms(seed, _checks.positive_int("n", n), keep))


def draw_distinct_subsets(votes: np.ndarray, k_drop: int, n: int, seed: int) -> tuple[np.ndarray, int]:
    """``draw_subsets`` keeping only distinct subsets: draws go on until n distinct subsets exist, every one
    of the C(K, K − k_drop) possible has been drawn, or ``MAX_DRAWS_PER_SUBSET``·n draws were made.

    The draws are those of ``draw_subsets`` (the same uniforms, then the stream continued), so the first
    n draws are its subsets; each subset is kept at its first draw, in draw order. Returns (the m ≤ n
    distinct subsets, m × (K − k_drop), and the number of draws dropped as duplicates).
    """
    distribution, keep = _plan(votes, k_drop)
    return _distinct_subsets(distribution, keep, _checks.positive_int("n", n), seed)


class Exploration(NamedTuple):
    """Eq (6) for one question: its subsets, the draws dropped as repeats, each referencer's drop probability."""

    subsets: np.ndarray
    """n × (K − k_drop) referencer positions (0 = highest prior); 0 rows when n = 0"""
    duplicates: int
    """draws dropped as repeats of an earlier subset (distinct mode; 0 otherwise)"""
    drop_probabilities: np.ndarray
    """K: P(r ∉ subset) (``drop_probabilities``); empty when K > ``EXACT_DROP_MAX_K``"""


def explore(votes: np.ndarray, k_drop: int, n: int, seed: int, *, distinct: bool = False) -> Exploration:
    """``draw_subsets`` (``draw_distinct_subsets`` when ``distinct``; none when n = 0) and
    ``drop_probabilities`` (empty above ``EXACT_DROP_MAX_K`` referencers) from one D of Eq (6): what a
    route's decision reports."""
    v, keep = _checked(votes, k_drop)
    n = _checks.non_negative_int("n", n)
    exact = v.shape[0] <= EXACT_DROP_MAX_K
    if n and distinct:
        distribution = _drop_distribution(v)
        subsets, duplicates = _distinct_subsets(distribution, keep, n, seed)
        drops = _drop_probabilities(distribution, keep) if exact else np.empty(0)
        return Exploration(subsets, duplicates, drops)
    stream = _stream(seed)  # checked even when n = 0, as the draws would check it
    subsets, drops = _explore(v, keep, n, stream, exact)
    return Exploration(subsets, 0, drops)


@njit(cache=True, nogil=True)
def _explore(votes, keep, n, stream, exact):
    """``explore``'s independent draws in one compiled call: D, the n subsets from the uniforms of ``stream``
    (``pcg64``), and the drop probabilities when ``exact`` (else empty). A route calls this after milliseconds
    of scanning, with the interpreter's caches cold, where one call costs less than the six it replaces."""
    distribution = _drop_distribution(votes)
    uniforms = np.empty((n, keep))
    pcg64.fill_uniforms(stream, uniforms)
    subsets = _sample_subsets(distribution, keep, uniforms)
    drops = _drop_probabilities(distribution, keep) if exact else np.empty(0)
    return subsets, drops


def _distinct_subsets(distribution: np.ndarray, keep: int, n: int, seed: int) -> tuple[np.ndarray, int]:
    target = min(n, math.comb(distribution.shape[0], keep))
    stream = _stream(seed)
    uniforms = np.empty((n, keep))
    found: dict[bytes, np.ndarray] = {}
    draws = 0
    while len(found) < target and draws < MAX_DRAWS_PER_SUBSET * n:
        pcg64.fill_uniforms(stream, uniforms)
        for row in _sample_subsets(distribution, keep, uniforms):
            draws += 1
            found.setdefault(row.tobytes(), row)
            if len(found) == target:
                break
    subsets = np.array(list(found.values()), dtype=np.int64).reshape(len(found), keep)
    return subsets, draws - len(found)


def drop_probabilities(votes: np.ndarray, k_drop: int) -> np.ndarray:
    """Each referencer's probability of being dropped from a subset: P(r ∉ subset) under Eq (6)'s
    successive sampling of K − k_drop items from D, Σ over the ordered draws that leave r out of
    Π_j D_{s_j} / Σ_{i not yet drawn} D_i. The drops sum to k_drop. Exact for K ≤ ``EXACT_DROP_MAX_K``
    (a sum over the 2^K sets drawn first); ``ValueError`` above.
    """
    distribution, keep = _plan(votes, k_drop)
    if distribution.shape[0] > EXACT_DROP_MAX_K:
        raise ValueError(f"drop probabilities are computed for K <= {EXACT_DROP_MAX_K}, got K = {distribution.shape[0]}")
    return _drop_probabilities(distribution, keep)
