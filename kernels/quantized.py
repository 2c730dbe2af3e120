"""Int8-quantised retrieval with an exact float32 re-score: ``route``'s decision, reading 4× fewer bytes.

The exact kernel (``retrieval.route``) reads the whole float32 bank once per query. Here each bank row is
stored a second time as int8 codes with its own scale, and a query is answered in two passes:

1. *Bound pass*, the only O(N·d) work, over the int8 codes (d bytes a row instead of 4d): an approximate
   similarity and a rigorous lower and upper bound on the exact kernel's Ŝ_i for every row.
2. *Re-score*: the exact float32 similarity of only the rows that the bounds cannot rule out, scanned by
   ``retrieval._scan`` over those rows — the exact kernel's own compiled function, hence the same
   instructions and the same bits — then the exact selection, support set and votes of Eqs (3)–(4),
   again the exact kernel's code.

The result is not an approximation: it equals ``retrieval.route`` bit for bit (same rows in the same order,
same float32 similarities, same votes). Quantisation only decides how many rows are re-scored.

Quantisation (per row, e ∈ float32^d):
    s = fl32(max_j |e_j| / 127),   ẽ_j = rint(e_j·fl64(1/s)) ∈ [−127, 127] (half to even),   ẽ = 0 if s = 0;
    r = ‖e − s·ẽ‖₂  (the residual norm),   c = ‖s·ẽ‖₂  (the code norm),
both computed in float64 and rounded *up* to float32, so the stored r and c are upper bounds of the
exact real values. The query is quantised the same way: (s_q, q̃, r_q, c_q), and ‖q‖ is bounded above.

Error bound (Cauchy–Schwarz). With e = sẽ + δ_e and q = s_q q̃ + δ_q:
    e·q − s s_q (ẽ·q̃) = δ_e·q + sẽ·δ_q,   so   |e·q − s s_q (ẽ·q̃)| ≤ r‖q‖ + c r_q =: ε.        (B1)
ẽ·q̃ is an integer accumulated in int32 — exact, as |ẽ·q̃| ≤ d·127² < 2^31 for d ≤ ``MAX_DIM``.
The exact kernel does not return e·q but its float32 evaluation f (16 lanes of FMAs, ``kernels.lanes``).
The classical inner-product bound holds for every order, with or without FMA:
|f − e·q| ≤ γ_d Σ_j |e_j q_j| + η ≤ γ_d (c + r)‖q‖ + η, γ_d = d·u/(1 − d·u), u = 2^-24, where
η = 2(d+1)·2^-126 covers underflow (gradual, or flushed to zero) in the ≤ 2d operations.            (B2)
No partial sum can overflow: |partial sums| ≤ (1 + γ_d) Σ|e_j q_j| < 2^101 below ``OVERFLOW_GUARD``.
The bound pass evaluates a_i = s_i s_q (ẽ_i·q̃) and ε_i in float64; its own rounding is a few 2^-53
relative to M_i = (c_i + r_i)(‖q‖ + c_q + r_q), which bounds every term, so τ = γ_d + 2^-40 covers (B2)
and all float64 rounding with a wide margin:
    lo_i = max(a_i − ε_i − τ M_i − η, 0) ≤ Ŝ_i = max(f_i, 0) ≤ max(a_i + ε_i + τ M_i + η, 0) = hi_i,   (B3)
stored in float32 rounded down (lo) and up (hi). Rows with M_i ≥ ``OVERFLOW_GUARD`` (never a normalised
bank) get lo = 0, hi = +∞: float32 could overflow there, and 0 ≤ Ŝ_i ≤ +∞ always holds.

Candidate set. Let k = min(N_base, N), T = max_k(Ŝ) the exact k-th largest and L = the k-th largest lo_i.
The k rows holding the k largest lo_i each have Ŝ_i ≥ lo_i ≥ L, so L ≤ T (and symmetrically T ≤ U_(k),
the k-th largest hi_i). Re-score
    C = {i : hi_i ≥ fl64(γ·L)}.                                                                      (C)
C ⊇ {i : Ŝ_i ≥ T}: such a row has hi_i ≥ Ŝ_i ≥ T ≥ L ≥ fl64(γL) (γ ≤ 1). So C holds at least k rows, and
every row at or above the k-th largest, hence the k-th largest of Ŝ over C is T itself.
C ⊇ I = {i : Ŝ_i ≥ fl64(γ·T)} (Eq 3 as the exact kernel evaluates it): hi_i ≥ Ŝ_i ≥ fl64(γT) ≥ fl64(γL),
rounding being monotone and L ≤ T. Clipping hi at 0 like Eq (2) keeps rows with Ŝ_i = 0 in C when the
threshold is 0 (γ = 0 or L = 0).
So the support set over C, with the same N_base clamped to |C| ≥ k, is the exact support set; C is kept
in ascending row order, so equal similarities still go to the lower row. When C holds more than
``RESCORE_MAX_SHARE`` of the bank (γ near 0, N_base near N, tiny banks), re-scoring it costs about as much
as the exact kernel, which then runs instead — the result is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import _checks
from .lanes import isum8, izeros8, madd16
from .retrieval import (
    N_BINS,
    _bank_arrays,
    _batch_arguments,
    _bits,
    _count_bins,
    _kth_largest,
    _merged_hists,
    _query,
    _route,
    _routed,
    _threads,
)

MAX_DIM = 131072
"""Largest embedding dimension: d·127² < 2^31, so the int32 accumulator of ẽ·q̃ cannot overflow."""

RESCORE_MAX_SHARE = 0.25
"""When more than this share of the rows are candidates, the exact kernel runs instead (same result)."""

OVERFLOW_GUARD = 2.0**100
"""Rows with (c_i + r_i)(‖q‖ + c_q + r_q) at or above this are always re-scored (float32 could overflow)."""

_U32 = 2.0**-24  # unit roundoff of float32
_F64_SLACK = 2.0**-40  # ≫ the few 2^-53 relative roundings of the float64 bound arithmetic
_TINY = 2.0**-126  # per-operation underflow error of float32 (gradual or flush-to-zero)


class QuantizedBank(NamedTuple):
    """The int8 copy of a bank (``quantize_rows``): e_i ≈ scales[i]·codes[i], with rigorous error norms."""

    codes: np.ndarray
    """int8 N×d, ẽ_i = rint(e_i·(1/s_i)) ∈ [−127, 127]."""
    scales: np.ndarray
    """float32 N, s_i = max_j |e_ij| / 127 (0 for an all-zero row)."""
    residual_norms: np.ndarray
    """float32 N, an upper bound (rounded up) of r_i = ‖e_i − s_i ẽ_i‖₂."""
    code_norms: np.ndarray
    """float32 N, an upper bound (rounded up) of c_i = ‖s_i ẽ_i‖₂."""


# --- quantisation -----------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _round_up_f32(x):
    """The smallest float32 ≥ x (x float64; +∞ above the float32 range). Used once per row when quantising."""
    f = np.float32(x)
    if np.float64(f) < x:
        f = np.nextafter(f, np.float32(np.inf))
    return f


@njit(cache=True, nogil=True, inline="always")
def _f32_at_least(x):
    """A float32 ≥ x for x ≥ 0, within 2 ulp, branch-free (the bound pass runs it on every row).

    fl32 rounds to nearest: fl32(y) ≥ y − y·2^-24 − 2^-150 (the last term in the subnormal range). With
    y = x(1 + 2^-23) + 2^-140: fl32(y) ≥ x(1 + 2^-23)(1 − 2^-24) + 2^-140(1 − 2^-24) − 2^-150 ≥ x, and the
    two float64 roundings in y (≤ 2^-52 relative) are far inside the 2^-24 margin.
    """
    return np.float32(x * (1.0 + 2.0**-23) + 2.0**-140)


@njit(cache=True, nogil=True, inline="always")
def _f32_at_most(x):
    """A float32 ≤ x for x ≥ 0, never negative, branch-free (the mirror of ``_f32_at_least``):
    fl32(y) ≤ y + y·2^-24 + 2^-150 ≤ x for y = x(1 − 2^-23) − 2^-140 ≥ 0, and y < 0 gives 0."""
    y = x * (1.0 - 2.0**-23) - 2.0**-140
    return np.float32(y if y > 0.0 else 0.0)


_ROUND = 6755399441055744.0  # 1.5·2^52: (x + _ROUND) − _ROUND = rint(x) (half to even) for |x| < 2^51


@njit(cache=True, nogil=True)
def _max_abs_bits(bits):
    """max_j |src_j| as float32 bits: for |x| (sign bit cleared) the integer order of the bits is the float
    order, with ±∞ and NaN above every finite value, so one integer reduction (which vectorises, unlike a
    float max without fastmath) gives both the maximum and whether the vector is finite (< 0x7F800000)."""
    m = np.int32(0)
    for j in range(bits.shape[0]):
        b = bits[j] & np.int32(0x7FFFFFFF)
        m = b if b > m else m
    return m


@njit(cache=True, nogil=True)
def _encode(src, inv, codes):
    """ẽ_j = rint(e_j·(1/s)) clipped to ±127. No fastmath: the rounding trick needs the two additions as
    written. (1/s is rounded, so e_j·(1/s) may exceed 127 by a hair; the clip keeps the code in range.)"""
    for j in range(src.shape[0]):
        c = (np.float64(src[j]) * inv + _ROUND) - _ROUND
        c = min(max(c, -127.0), 127.0)
        codes[j] = np.int8(c)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _square_sums(src, s, codes):
    """(Σ_j (e_j − s·ẽ_j)², Σ_j ẽ_j²) in float64 and int32.

    Reassociation (any summation order) and contraction (FMA) are safe here: the error bound of a sum of
    non-negative terms, ≤ (d − 1)·2^-53 relative, holds for every order, and FMA only removes roundings.
    s·ẽ_j (24 + 8 significant bits) is exact in float64, so each residual entry carries one rounding at
    most. Σẽ² ≤ d·127² < 2^31 is exact in int32.
    """
    sq = 0.0
    cc = np.int32(0)
    for j in range(src.shape[0]):
        c = np.int32(codes[j])
        diff = np.float64(src[j]) - s * np.float64(c)
        sq += diff * diff
        cc = np.int32(cc + c * c)
    return sq, cc


@njit(cache=True, nogil=True)
def _quantize_row(src, bits, codes, scratch):
    """Quantise one float32 vector ``src`` (``bits``: the same memory as int32) into ``codes`` (int8).

    Returns (s, r, c, finite) as in the module docstring; ``scratch`` is a 1-element int32 buffer.
    s = fl32(max|e_j| / 127) and ẽ_j = rint(e_j·fl64(1/s)). r and c are computed in float64 and inflated
    before rounding up to float32: each squared residual entry carries ≤ 3·2^-53 relative error (the
    subtraction, squared, and the square), the sum adds ≤ (d − 1)·2^-53, the sqrt halves that and adds
    2^-53, so the factor 1 + (d + 8)·2^-52 makes r an upper bound;
    c = s·sqrt(Σẽ²) has an exact integer sum and two roundings, covered by 1 + 2^-50.
    """
    d = src.shape[0]
    top = _max_abs_bits(bits)
    scratch[0] = top
    scale = np.float32(np.float64(scratch.view(np.float32)[0]) / 127.0)
    s = np.float64(scale)
    finite = top < np.int32(0x7F800000)
    if s > 0.0 and finite:
        _encode(src, 1.0 / s, codes)
    else:  # an all-zero row, one whose max underflows to s = 0, or garbage the wrapper will reject
        codes[:] = 0
    sq_resid, sq_codes = _square_sums(src, s, codes)
    resid = _round_up_f32(np.sqrt(sq_resid) * (1.0 + (d + 8) * 2.0**-52))
    code_norm = _round_up_f32(s * np.sqrt(np.float64(sq_codes)) * (1.0 + 2.0**-50))
    return scale, resid, code_norm, finite


@njit(cache=True, nogil=True)
def _quantize_block(embeddings, start, stop, codes, scales, resid, cnorms):
    bits = embeddings.view(np.int32)
    scratch = np.empty(1, dtype=np.int32)
    finite = True
    for i in range(start, stop):
        s, r, c, ok = _quantize_row(embeddings[i], bits[i], codes[i], scratch)
        scales[i] = s
        resid[i] = r
        cnorms[i] = c
        finite = finite and ok
    return finite


@njit(cache=True, nogil=True, parallel=True)
def _quantize_chunks(embeddings, codes, scales, resid, cnorms, finite):
    """``_quantize_block`` in ``len(finite)`` row chunks on numba's pool; ``finite[c]``: chunk c was finite.

    Every ``parallel=True`` function here holds only its ``prange`` loop: the callers allocate and
    reduce, since numba makes each allocation or reduction inside such a function a parallel region of
    its own, and each region wakes the sleeping workers again (``retrieval._scan``).
    """
    n = embeddings.shape[0]
    n_chunks = finite.shape[0]
    for c in prange(n_chunks):
        finite[c] = _quantize_block(embeddings, c * n // n_chunks, (c + 1) * n // n_chunks, codes, scales, resid, cnorms)


# --- pass 1: bounds over the int8 codes ------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _quantize_query(query):
    """(q̃ widened to int16, s_q, r_q, c_q, an upper bound of ‖q‖) for the bound pass."""
    d = query.shape[0]
    codes = np.empty(d, dtype=np.int8)
    scale, resid, cnorm, _ = _quantize_row(query, query.view(np.int32), codes, np.empty(1, dtype=np.int32))
    sq = 0.0
    for j in range(d):
        sq += np.float64(query[j]) * np.float64(query[j])
    norm = _round_up_f32(np.sqrt(sq) * (1.0 + (d + 8) * 2.0**-52))
    return codes.astype(np.int16), np.float64(scale), np.float64(resid), np.float64(cnorm), np.float64(norm)


_BLOCK = 4096
"""Rows per step of one query's bound pass: their int32 dot products wait in a small buffer for the bound loop."""
_SHARED_BLOCK_BYTES = 128 << 10
"""Codes per step of a batch's bound pass: a block that stays in L2 while every query of the batch reads it."""


@njit(cache=True, nogil=True, inline="always")
def _int_dot_tail(row, q16, whole, acc):
    """``acc`` plus ẽ·q̃ over the elements from ``whole`` on (those after the last whole 16), in int32."""
    for j in range(whole, q16.shape[0]):
        acc = np.int32(acc + np.int32(row[j]) * np.int32(q16[j]))
    return acc


@njit(cache=True, nogil=True)
def _int_dots(codes, q16, start, stop, out):
    """out[i − start] = ẽ_i·q̃ for rows [start, stop), accumulated in int32 (exact: |ẽ_i·q̃| ≤ d·127² < 2^31).

    Four rows a quarter of the block apart per loop, each summed 16 codes at a time in 8 int32 lanes
    (``lanes.madd16``: one pairwise multiply-add instruction on AVX2), the elements after the last whole
    16 one at a time; the block's last (stop − start) mod 4 rows one by one. Four rows far apart keep four
    streams of loads in flight (measurements: docs/performance.md, "The int8 bound pass in vector lanes").
    """
    whole = q16.shape[0] - q16.shape[0] % 16
    g = (stop - start) // 4
    for t in range(start, start + g):
        a = codes[t]
        b = codes[t + g]
        c = codes[t + 2 * g]
        e = codes[t + 3 * g]
        a_acc = izeros8()
        b_acc = a_acc
        c_acc = a_acc
        e_acc = a_acc
        for j in range(0, whole, 16):
            a_acc = madd16(a_acc, a, j, q16, j)
            b_acc = madd16(b_acc, b, j, q16, j)
            c_acc = madd16(c_acc, c, j, q16, j)
            e_acc = madd16(e_acc, e, j, q16, j)
        out[t - start] = _int_dot_tail(a, q16, whole, isum8(a_acc))
        out[t + g - start] = _int_dot_tail(b, q16, whole, isum8(b_acc))
        out[t + 2 * g - start] = _int_dot_tail(c, q16, whole, isum8(c_acc))
        out[t + 3 * g - start] = _int_dot_tail(e, q16, whole, isum8(e_acc))
    for t in range(start + 4 * g, stop):
        row = codes[t]
        acc = izeros8()
        for j in range(0, whole, 16):
            acc = madd16(acc, row, j, q16, j)
        out[t - start] = _int_dot_tail(row, q16, whole, isum8(acc))


@njit(cache=True, nogil=True)
def _store_bounds(dots, scales, resid, cnorms, s_q, r_q, q_norm, q_mag, tau, eta, start, stop, lo, hi):
    """Eq (B3) for rows [start, stop) from their exact integer ẽ_i·q̃ in ``dots``: lo_i, hi_i as float32.

    Compiled without fastmath: the float64 operations round as written, in this order (elementwise, so
    the loop vectorises without any reassociation).
    """
    for i in range(start, stop):
        s = np.float64(scales[i])
        r = np.float64(resid[i])
        c = np.float64(cnorms[i])
        mag = (c + r) * q_mag  # M_i ≥ ‖e_i‖·‖q‖, and bounds |a_i| and ε_i
        a = np.float64(dots[i - start]) * (s * s_q)  # s·s_q is exact in float64 (two 24-bit significands)
        bound = r * q_norm + c * r_q + tau * mag + eta  # (B1) + (B2) + the float64 slack
        up = a + bound
        dn = a - bound
        guard = mag >= OVERFLOW_GUARD  # float32 could overflow: always a candidate
        hi[i] = np.float32(np.inf) if guard else _f32_at_least(up if up > 0.0 else 0.0)
        lo[i] = np.float32(0.0) if guard else _f32_at_most(dn if dn > 0.0 else 0.0)


@njit(cache=True, nogil=True)
def _bound_block(codes, scales, resid, cnorms, queries, start, stop, lo, hi, hists):
    """Bounds (B3) of rows [start, stop) for every query b into lo[b], hi[b], counting lo[b] into ``hists[b]``
    (the bins of ``retrieval``); ``queries`` as ``_quantized_queries`` returns them.

    The rows go in blocks: one query takes ``_BLOCK`` rows at a time, several take blocks of about
    ``_SHARED_BLOCK_BYTES`` of codes, which stay in cache while every query's products are taken from
    them, so a batch reads the int8 bank from memory once.
    """
    q16, s_q, r_q, q_norm, q_mag, tau, eta = queries
    n_queries, d = q16.shape
    step = _BLOCK if n_queries == 1 else max(16, _SHARED_BLOCK_BYTES // max(d, 1))
    dots = np.empty(step, dtype=np.int32)
    for first in range(start, stop, step):
        last = min(first + step, stop)
        for b in range(n_queries):
            _int_dots(codes, q16[b], first, last, dots)
            _store_bounds(dots, scales, resid, cnorms, s_q[b], r_q[b], q_norm[b], q_mag[b], tau, eta, first, last, lo[b], hi[b])
            _count_bins(lo[b], first, last, hists[b])


@njit(cache=True, nogil=True)
def _tau(d):
    """τ = γ_d + 2^-40 of (B3): γ_d = d·u/(1 − d·u), u = 2^-24, the float32 inner-product error factor."""
    du = d * _U32
    return du / (1.0 - du) + _F64_SLACK


@njit(cache=True, nogil=True)
def _quantized_queries(queries):
    """Each query row quantised for the bound pass: (q̃ as int16 B×d, s_q, r_q, ‖q‖'s upper bound, M_i's query
    factor ‖q‖ + c_q + r_q, each of length B; τ and η of (B3))."""
    n_queries, d = queries.shape
    q16 = np.empty((n_queries, d), dtype=np.int16)
    s_q = np.empty(n_queries)
    r_q = np.empty(n_queries)
    q_norm = np.empty(n_queries)
    q_mag = np.empty(n_queries)
    for b in range(n_queries):
        codes, s_q[b], r_q[b], c_q, q_norm[b] = _quantize_query(queries[b])
        q16[b] = codes
        q_mag[b] = q_norm[b] + c_q + r_q[b]
    return q16, s_q, r_q, q_norm, q_mag, _tau(d), 2.0 * (d + 1) * _TINY


@njit(cache=True, nogil=True)
def _bounds_many(codes, scales, resid, cnorms, queries, n_chunks):
    """Pass 1 for every row of ``queries``: (lo B×N, hi B×N, their histograms of lo B×N_BINS); n_chunks = 1
    runs on the calling thread, more split the rows in that many chunks on numba's pool."""
    n = codes.shape[0]
    quantized = _quantized_queries(queries)
    n_queries = queries.shape[0]
    lo = np.empty((n_queries, n), dtype=np.float32)
    hi = np.empty((n_queries, n), dtype=np.float32)
    if n_chunks == 1:
        hists = np.zeros((n_queries, N_BINS), dtype=np.int64)
        _bound_block(codes, scales, resid, cnorms, quantized, 0, n, lo, hi, hists)
        return lo, hi, hists
    chunk_hists = np.zeros((n_chunks, n_queries, N_BINS), dtype=np.int64)
    _bounds_chunks(codes, scales, resid, cnorms, quantized, lo, hi, chunk_hists)
    return lo, hi, _merged_hists(chunk_hists)


@njit(cache=True, nogil=True, parallel=True)
def _bounds_chunks(codes, scales, resid, cnorms, queries, lo, hi, hists):
    """``_bound_block`` in ``len(hists)`` row chunks on numba's pool, chunk c counted into ``hists[c]``."""
    n = codes.shape[0]
    n_chunks = hists.shape[0]
    for c in prange(n_chunks):
        _bound_block(codes, scales, resid, cnorms, queries, c * n // n_chunks, (c + 1) * n // n_chunks, lo, hi, hists[c])


# --- candidates and the exact re-score ---------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _count_block(hi, threshold, start, stop):
    count = 0
    for i in range(start, stop):
        if np.float64(hi[i]) >= threshold:
            count += 1
    return count


@njit(cache=True, nogil=True)
def _fill_block(hi, threshold, start, stop, out, pos):
    for i in range(start, stop):
        if np.float64(hi[i]) >= threshold:
            out[pos] = i
            pos += 1


@njit(cache=True, nogil=True, parallel=True)
def _count_chunks(hi, threshold, counts):
    """``counts[c + 1]``: the candidates of chunk c of ``len(counts) − 1`` row chunks, on numba's pool."""
    n = hi.shape[0]
    n_chunks = counts.shape[0] - 1
    for c in prange(n_chunks):
        counts[c + 1] = _count_block(hi, threshold, c * n // n_chunks, (c + 1) * n // n_chunks)


@njit(cache=True, nogil=True, parallel=True)
def _fill_chunks(hi, threshold, out, offsets):
    """The candidates of each chunk into ``out`` from ``offsets[c]`` (the counts' running sum), on numba's pool."""
    n = hi.shape[0]
    n_chunks = offsets.shape[0] - 1
    for c in prange(n_chunks):
        _fill_block(hi, threshold, c * n // n_chunks, (c + 1) * n // n_chunks, out, offsets[c])


@njit(cache=True, nogil=True)
def _candidates(hi, threshold, n_chunks):
    """Eq (C): ascending rows with hi_i ≥ threshold."""
    n = hi.shape[0]
    if n_chunks == 1:
        out = np.empty(_count_block(hi, threshold, 0, n), dtype=np.int64)
        _fill_block(hi, threshold, 0, n, out, 0)
        return out
    counts = np.zeros(n_chunks + 1, dtype=np.int64)
    _count_chunks(hi, threshold, counts)
    offsets = np.cumsum(counts)
    out = np.empty(offsets[n_chunks], dtype=np.int64)
    _fill_chunks(hi, threshold, out, offsets)
    return out


@njit(cache=True, nogil=True)
def _rescored(lo, hi, hist, embeddings, query, capability, bits, n_base, gamma, n_chunks, ordered, known):
    """Pass 2 from one query's bounds: ((rows, Ŝ of rows, votes, known weights), rows re-scored in float32).

    The re-score is the exact kernel's scan over the candidate rows (``retrieval._route`` with those rows):
    the same compiled dot products, hence the same Ŝ bits, and the same selection and votes; over
    ``RESCORE_MAX_SHARE`` of the bank the exact kernel scans it all instead (N re-scored).
    """
    n = lo.shape[0]
    lower = _kth_largest(lo, hist, min(n_base, n))  # L ≤ T, the exact k-th largest Ŝ
    cand = _candidates(hi, gamma * np.float64(lower), n_chunks)
    m = cand.shape[0]
    if m > RESCORE_MAX_SHARE * n:
        return _route(embeddings, None, None, query, capability, bits, n_base, gamma, n_chunks, ordered, known), n
    chunks = min(n_chunks, max(1, m // 1024))
    return _route(embeddings, cand, cand, query, capability, bits, n_base, gamma, chunks, ordered, known), m


@njit(cache=True, nogil=True)
def _route_quantized_many(codes, scales, resid, cnorms, embeddings, queries, capability, bits, n_base, gamma, n_chunks, ordered, known):
    """Both passes for every row b of ``queries`` with N_base = ``n_base[b]``, γ = ``gamma[b]``: a list of
    ((rows, Ŝ of rows, votes, known weights), rows re-scored), one bound pass over the int8 bank for all.

    n_chunks = 1 keeps every step on the calling thread; above, the bound pass, the candidate scans and the
    re-scores split the work in n_chunks on numba's pool.
    """
    n = codes.shape[0]
    found = []
    if n == 0:
        for b in range(queries.shape[0]):
            found.append((_route(embeddings, None, None, queries[b], capability, bits, n_base[b], gamma[b], 1, ordered, known), 0))
        return found
    lo, hi, hists = _bounds_many(codes, scales, resid, cnorms, queries, n_chunks)
    for b in range(queries.shape[0]):
        found.append(_rescored(lo[b], hi[b], hists[b], embeddings, queries[b], capability, bits, n_base[b], gamma[b], n_chunks, ordered, known))
    return found


# --- Python wrappers -----------------------------------------------------------------------------------------


def _check_dim(name: str, d: int) -> None:
    if d > MAX_DIM:
        raise ValueError(f"{name} has dimension {d}; the int8 kernel supports at most {MAX_DIM} (int32 accumulation)")


def quantize_rows(embeddings: np.ndarray, threads: int | None = None) -> QuantizedBank:
    """Quantise every row to int8 with its own scale: e_i ≈ s_i·ẽ_i (see the module docstring).

    Returns a ``QuantizedBank`` (codes int8 N×d, scales, residual norms r_i and code norms ‖s_i ẽ_i‖ as
    float32 N, the norms rounded up). Runs once per bank snapshot, in parallel above ``PARALLEL_MIN_BYTES``
    (``threads`` as in ``route``). Raises ``ValueError`` on a non-2-D, non-real or non-finite array.
    """
    e = _checks.float_matrix("embeddings", embeddings)
    n, d = e.shape
    _check_dim("embeddings", d)
    threads = _threads(threads, e.nbytes)
    # Allocated by numpy, not inside the kernel: numpy asks for transparent huge pages on large arrays,
    # and the bound pass streams the codes faster from them (measurements: docs/performance.md, "Kernel details").
    codes = np.empty((n, d), dtype=np.int8)
    scales, resid, cnorms = (np.empty(n, dtype=np.float32) for _ in range(3))
    if threads == 1 or n < 2:
        finite = _quantize_block(e, 0, n, codes, scales, resid, cnorms)
    else:
        chunks_finite = np.zeros(min(threads, n), dtype=np.bool_)
        _quantize_chunks(e, codes, scales, resid, cnorms, chunks_finite)
        finite = bool(chunks_finite.all())
    if not finite:
        raise ValueError("embeddings contains NaN or infinity")
    return QuantizedBank(codes, scales, resid, cnorms)


def _quantized_arrays(quantized: object, n: int, d: int) -> QuantizedBank:
    """O(1) checks of a ``QuantizedBank`` against the bank's shape; the values are trusted (it built them)."""
    try:
        codes, scales, resid, cnorms = quantized  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError("quantized must be a QuantizedBank (codes, scales, residual_norms, code_norms)") from None
    codes = np.asarray(codes)
    if codes.dtype != np.int8 or codes.shape != (n, d):
        raise ValueError(f"quantized codes must be int8 of shape {(n, d)}, got {codes.dtype} {codes.shape}")
    out = [np.ascontiguousarray(codes)]
    for field, a in (("scales", scales), ("residual_norms", resid), ("code_norms", cnorms)):
        a = np.asarray(a)
        if a.dtype != np.float32 or a.shape != (n,):
            raise ValueError(f"quantized {field} must be float32 of shape {(n,)}, got {a.dtype} {a.shape}")
        out.append(np.ascontiguousarray(a))
    return QuantizedBank(*out)


def route_quantized_stats(
    quantized: QuantizedBank,
    embeddings: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    threads: int | None = None,
    *,
    capability_bits: np.ndarray | None = None,
    ordered: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``route_quantized``'s (rows, Ŝ, votes) and the number of rows re-scored in float32 (|C| of Eq (C),
    or N when the exact kernel ran instead)."""
    found, rescored = _quantized_route(
        quantized, embeddings, query, capability, n_base, gamma, threads, capability_bits, ordered, False
    )
    return (*found[:3], rescored)


def _quantized_route(
    quantized: QuantizedBank,
    embeddings: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    threads: int | None,
    capability_bits: np.ndarray | None,
    ordered: bool,
    known: bool,
) -> tuple[tuple[np.ndarray, ...], int]:
    """The checked arguments' ``_route_quantized_many`` for one query: ((rows, Ŝ, votes, known weights),
    rows re-scored)."""
    qb, e, m = _checked_bank(quantized, embeddings, capability)
    q = _query(query, e.shape[1])
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    n_bases, gammas = np.array([n_base], dtype=np.int64), np.array([gamma], dtype=np.float64)
    return _routes(qb, e, m, q[None, :], n_bases, gammas, threads, capability_bits, ordered, known)[0]


def _checked_bank(quantized: QuantizedBank, embeddings: np.ndarray, capability: np.ndarray) -> tuple[QuantizedBank, np.ndarray, np.ndarray]:
    """(the int8 bank, E, M) after the O(1) checks of their shapes and dtypes against each other."""
    e, m = _bank_arrays(embeddings, capability)
    n, d = e.shape
    _check_dim("embeddings", d)
    return _quantized_arrays(quantized, n, d), e, m


def _routes(
    qb: QuantizedBank,
    e: np.ndarray,
    m: np.ndarray,
    queries: np.ndarray,
    n_bases: np.ndarray,
    gammas: np.ndarray,
    threads: int | None,
    capability_bits: np.ndarray | None,
    ordered: bool,
    known: bool,
) -> list[tuple[tuple[np.ndarray, ...], int]]:
    """``_route_quantized_many`` over checked arrays: for each query ((rows, Ŝ, votes, known weights), rows
    re-scored)."""
    bits = _bits(capability_bits, m)
    threads = _threads(threads, qb.codes.nbytes)
    found = _route_quantized_many(*qb, e, queries, m, bits, n_bases, gammas, threads, bool(ordered), bool(known))
    return [(routed, int(rescored)) for routed, rescored in found]


def route_quantized(
    quantized: QuantizedBank,
    embeddings: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    threads: int | None = None,
    *,
    capability_bits: np.ndarray | None = None,
    ordered: bool = True,
    return_known: bool = False,
) -> tuple[np.ndarray, ...]:
    """Eqs (2)–(4) over the int8 bank with an exact float32 re-score: (support rows, their Ŝ, votes V).

    Identical to ``route(embeddings, query, capability, n_base, gamma)`` bit for bit (module docstring:
    bounds (B1)–(B3), candidate set (C)); it reads the int8 ``quantized`` = ``quantize_rows(embeddings)``
    once and the float32 ``embeddings`` only at the candidate rows. ``quantized``, ``embeddings`` and
    ``capability`` are trusted as built and only their shapes and dtypes are checked; the query is fully
    checked. ``threads`` as in ``route``, counted on the int8 bank's size; ``capability_bits``,
    ``ordered`` (unordered, the support set comes in ascending row order) and ``return_known`` as in
    ``route``.
    """
    known = bool(return_known)
    found, _ = _quantized_route(quantized, embeddings, query, capability, n_base, gamma, threads, capability_bits, ordered, known)
    return _routed(found, known)


def route_quantized_many(
    quantized: QuantizedBank,
    embeddings: np.ndarray,
    queries: np.ndarray,
    capability: np.ndarray,
    n_base: Sequence[int],
    gamma: Sequence[float],
    threads: int | None = None,
    *,
    capability_bits: np.ndarray | None = None,
    ordered: bool = True,
    return_known: bool = False,
) -> list[tuple[np.ndarray, ...]]:
    """``route_quantized`` for B queries with one bound pass over the int8 bank: element b is
    ``route_quantized(quantized, embeddings, queries[b], capability, n_base[b], gamma[b])``, bit for bit
    (hence ``route``'s).

    The codes are read in blocks that stay in cache while every query takes its products from them, so a
    batch reads the int8 bank once instead of B times (the re-scores stay one per query). Arguments as in
    ``route_quantized`` and, for the queries (B × d) and their ``n_base`` and ``gamma``, ``route_many``.
    """
    qb, e, m = _checked_bank(quantized, embeddings, capability)
    q, n_bases, gammas = _batch_arguments(queries, e.shape[1], n_base, gamma)
    if q.shape[0] == 0:
        return []
    known = bool(return_known)
    return [_routed(routed, known) for routed, _ in _routes(qb, e, m, q, n_bases, gammas, threads, capability_bits, ordered, known)]
