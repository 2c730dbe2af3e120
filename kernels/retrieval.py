"""Retrieval-based prior selection, Eqs (2)–(5), and the fused route kernel.

Notation (docs/design.md, The algorithm): bank embeddings E ∈ R^{N×d} (float32, rows L2-normalised), capability matrix
M ∈ {−1, 0, 1}^{R×N} (int8, −1 = not evaluated), query q ∈ R^d.

The fused kernel makes one pass over E that computes Ŝ_i = max(E_i·q, 0) into an N-float buffer and, on
the fly, a histogram of Ŝ over [0, 1]. The histogram locates the bin holding the N_base-th largest value,
so exact selection only partitions that one bin instead of sorting N values; the support set and the
votes then touch only the buffer and the |I| support columns of M. The pass over E is the only O(N·d)
work, which is why the kernel runs at the speed of reading the bank once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
from numba import njit, prange

from . import _checks
from .lanes import fma8, fold8, zeros8

N_BINS = 4096
"""Histogram bins over [0, 1] used to locate the N_base-th largest similarity."""

PARALLEL_MIN_BYTES = 6 << 20
"""Banks smaller than this are scanned on one thread: a parallel scan first wakes numba's sleeping workers,
a fixed cost that the second thread's share of a small bank does not win back; above this size it does
(measurements: docs/performance.md, "Threads on a small machine")."""


@njit(cache=True, nogil=True, inline="always")
def _bin_of(v: float) -> int:
    if v >= 1.0:  # before the multiply: int() of a huge product overflows int64 (negative bin index)
        return N_BINS - 1
    return int(v * N_BINS)


@njit(cache=True, nogil=True, inline="always")
def _lanes16(lo, hi, row, vector, j):
    """One step of a dot product's 16 lanes: ``lo`` takes ``row[j:j+8]·vector[j:j+8]`` and ``hi`` the next 8,
    one fused multiply-add per lane. Every scan sums every Ŝ through this step and ``_clipped``."""
    return fma8(lo, row, j, vector, j), fma8(hi, row, j + 8, vector, j + 8)


@njit(cache=True, nogil=True, inline="always")
def _clipped(lo, hi, row, query, whole):
    """max(row·q, 0) in float32 from the 16-lane partial sums ``lo``, ``hi`` of ``row[:whole]·query[:whole]``
    (``whole``: d rounded down to 16), the rest of q added one element at a time after the lanes."""
    s = fold8(lo) + fold8(hi)
    for j in range(whole, query.shape[0]):
        s += row[j] * query[j]
    return s if s > np.float32(0.0) else np.float32(0.0)


@njit(cache=True, nogil=True, inline="always")
def _clipped_dots(embeddings, i, k, query):
    """(Ŝ_i, Ŝ_k) = (max(E_i·q, 0), max(E_k·q, 0)) in float32, two rows in one loop over q.

    Each dot product is summed in 16 lanes (two ``lanes.F32x8``, one fused multiply-add per lane and 16
    elements) and folded in a fixed order (``_clipped``), so every scan gives a row the same bits,
    whichever rows and queries it computes beside it (``_four_clipped_dots``). Each q_j is loaded once for
    two rows, which is what bounds a scan of a bank in cache; the scans pair rows half a chunk apart, as
    two rows side by side read from DRAM at a fraction of the speed of one (measurements:
    docs/performance.md, "Kernel details").
    """
    row_i = embeddings[i]
    row_k = embeddings[k]
    whole = query.shape[0] - query.shape[0] % 16
    i_lo = zeros8()
    i_hi = i_lo
    k_lo = i_lo
    k_hi = i_lo
    for j in range(0, whole, 16):
        i_lo, i_hi = _lanes16(i_lo, i_hi, row_i, query, j)
        k_lo, k_hi = _lanes16(k_lo, k_hi, row_k, query, j)
    return _clipped(i_lo, i_hi, row_i, query, whole), _clipped(k_lo, k_hi, row_k, query, whole)


@njit(cache=True, nogil=True, inline="always")
def _four_clipped_dots(a, p, b, q, c, r, d, s):
    """(max(a·p, 0), max(b·q, 0), max(c·r, 0), max(d·s, 0)) in float32, in one loop over the vectors: 8
    accumulators, so 8 independent chains of fused multiply-adds hide their latency (one pair of rows has
    4), and a row or query given twice is loaded once per step. The scans give it four rows and one query
    (a lone query) or two rows and two queries (register-blocked batches: one load of E or q per FMA,
    where a pair of rows per query takes 1.5). The same lanes and folds as ``_clipped_dots``, so the same
    bits."""
    whole = p.shape[0] - p.shape[0] % 16
    a_lo = zeros8()
    a_hi = a_lo
    b_lo = a_lo
    b_hi = a_lo
    c_lo = a_lo
    c_hi = a_lo
    d_lo = a_lo
    d_hi = a_lo
    for j in range(0, whole, 16):
        a_lo, a_hi = _lanes16(a_lo, a_hi, a, p, j)
        b_lo, b_hi = _lanes16(b_lo, b_hi, b, q, j)
        c_lo, c_hi = _lanes16(c_lo, c_hi, c, r, j)
        d_lo, d_hi = _lanes16(d_lo, d_hi, d, s, j)
    return (
        _clipped(a_lo, a_hi, a, p, whole),
        _clipped(b_lo, b_hi, b, q, whole),
        _clipped(c_lo, c_hi, c, r, whole),
        _clipped(d_lo, d_hi, d, s, whole),
    )


@njit(cache=True, nogil=True, inline="always")
def _count_bins(sims, start, stop, hist):
    """Count ``sims[start:stop]`` into ``hist``.

    A pass of its own after the dot products, not one increment per dot: the increments' loads and
    stores held back the overlap of one row's dot product with the next, and re-reading the chunk's
    similarities from L1/L2 is cheaper; a bank read from DRAM does not notice either way (measurements:
    docs/performance.md, "Kernel details").
    """
    for i in range(start, stop):
        hist[_bin_of(sims[i])] += 1


@njit(cache=True, nogil=True)
def _scan_block(embeddings, rows, queries, start, stop, sims, hists):
    """Eq (2) for positions [start, stop) and every query: ``sims[b, t] = max(E_i·q_b, 0)`` with i =
    ``rows[t]`` (t itself when ``rows`` is None), each query's block counted into ``hists[b]``.

    A lone query (a route) takes positions four at a time, a quarter of the block apart
    (``_four_clipped_dots``). Several queries take them in pairs half the block apart; each pair of rows
    is read from memory once and dotted with every query while it sits in L1, two queries at a time
    (``_four_clipped_dots``, the last one alone when B is odd), so B queries cost one read of the rows.
    Rows far apart, as two rows side by side read from DRAM at a fraction of the speed of one; the lone
    query's loop of its own, as the loop over queries slowed a single query's scan of a bank in cache
    (measurements: docs/performance.md, "Kernel details"). ``rows is None`` is settled when numba
    compiles the call, so a scan of the whole bank reads no index. Every loop sums each Ŝ in the same
    lanes (``kernels.lanes``), so they all give the same bits.
    """
    n_queries = queries.shape[0]
    if n_queries == 1:
        query = queries[0]
        out = sims[0]
        g = (stop - start) // 4
        for t in range(start, start + g):
            w, x, y, z = _four_clipped_dots(
                embeddings[_row(rows, t)], query, embeddings[_row(rows, t + g)], query,
                embeddings[_row(rows, t + 2 * g)], query, embeddings[_row(rows, t + 3 * g)], query,
            )
            out[t] = w
            out[t + g] = x
            out[t + 2 * g] = y
            out[t + 3 * g] = z
        for t in range(start + 4 * g, stop):
            i = _row(rows, t)
            out[t] = _clipped_dots(embeddings, i, i, query)[0]
    else:
        h = (stop - start) // 2
        for t in range(start, start + h):
            i = _row(rows, t)
            k = _row(rows, t + h)
            for b in range(0, n_queries - 1, 2):
                query, other = queries[b], queries[b + 1]
                x, y, u, v = _four_clipped_dots(embeddings[i], query, embeddings[k], query, embeddings[i], other, embeddings[k], other)
                sims[b, t] = x
                sims[b, t + h] = y
                sims[b + 1, t] = u
                sims[b + 1, t + h] = v
            if n_queries % 2:
                x, y = _clipped_dots(embeddings, i, k, queries[n_queries - 1])
                sims[n_queries - 1, t] = x
                sims[n_queries - 1, t + h] = y
        if (stop - start) % 2:
            last = _row(rows, stop - 1)
            for b in range(n_queries):
                sims[b, stop - 1] = _clipped_dots(embeddings, last, last, queries[b])[0]
    for b in range(n_queries):
        _count_bins(sims[b], start, stop, hists[b])


@njit(cache=True, nogil=True, inline="always")
def _row(rows, t):
    """The bank row at scan position t: ``rows[t]``, or t itself when ``rows`` is None."""
    return t if rows is None else rows[t]


@njit(cache=True, nogil=True, parallel=True)
def _scan_chunks(embeddings, rows, queries, sims, hists):
    """``_scan_block`` over ``len(hists)`` chunks of positions on numba's pool, chunk c counted into
    ``hists[c]``: the one parallel region of a parallel scan (see ``_scan``)."""
    n = sims.shape[1]
    n_chunks = hists.shape[0]
    for c in prange(n_chunks):
        _scan_block(embeddings, rows, queries, c * n // n_chunks, (c + 1) * n // n_chunks, sims, hists[c])


@njit(cache=True, nogil=True)
def _scan(embeddings, rows, queries, n_chunks):
    """Eq (2) for the B rows of ``queries`` over the bank rows ``rows``, in that order (None: every row):
    (Ŝ, B × n; their histograms, B × N_BINS). ``n_chunks`` = 1 scans on the calling thread, more in that
    many chunks on numba's pool.

    This driver is not itself ``parallel=True``: there numba makes every allocation and reduction a
    parallel region of its own, and each region wakes the sleeping workers (``OMP_WAIT_POLICY=PASSIVE``)
    again. Allocating and merging here leaves one region, one wake-up, per scan; the merge is a plain
    loop (``_merged_hists``), as numba's ``sum(axis=0)`` costs a small bank's scan more (measurements:
    docs/performance.md, "Kernel details").
    """
    n = embeddings.shape[0] if rows is None else rows.shape[0]
    n_queries = queries.shape[0]
    sims = np.empty((n_queries, n), dtype=np.float32)
    if n_chunks == 1:
        hist = np.zeros((n_queries, N_BINS), dtype=np.int64)
        _scan_block(embeddings, rows, queries, 0, n, sims, hist)
        return sims, hist
    hists = np.zeros((n_chunks, n_queries, N_BINS), dtype=np.int64)
    _scan_chunks(embeddings, rows, queries, sims, hists)
    return sims, _merged_hists(hists)


@njit(cache=True, nogil=True, inline="always")
def _merged_hists(chunk_hists):
    """The per-chunk histograms (chunks × B × N_BINS) of a parallel pass added into one per query (B ×
    N_BINS), by a plain loop: numba's ``sum(axis=0)`` costs a small bank's scan more."""
    hist = chunk_hists[0].copy()
    for c in range(1, chunk_hists.shape[0]):
        for b in range(chunk_hists.shape[1]):
            for k in range(chunk_hists.shape[2]):
                hist[b, k] += chunk_hists[c, b, k]
    return hist


@njit(cache=True, nogil=True)
def _histogram(sims):
    hist = np.zeros(N_BINS, dtype=np.int64)
    _count_bins(sims, 0, sims.shape[0], hist)
    return hist


@njit(cache=True, nogil=True, inline="always")
def _rank_bin(hist, k):
    """(b, above): the histogram bin b holding the k-th largest value (1 ≤ k ≤ the values counted), and how
    many values lie in the bins above it."""
    above = 0
    b = N_BINS - 1
    while above + hist[b] < k:
        above += hist[b]
        b -= 1
    return b, above


@njit(cache=True, nogil=True, inline="always")
def _in_bin(v, lo, hi, last):
    """Whether Ŝ = ``v`` lies in the histogram bin [lo, hi) (``last``: the last bin, [lo, ∞]).

    Two compares instead of computing v's bin: ``_bin_of(v) = b`` exactly when b/N_BINS ≤ v < (b + 1)/N_BINS,
    as v·N_BINS is exact, and two compares cost less than the multiply and conversion in a pass over every
    Ŝ. The last bin has no upper edge: it holds every Ŝ ≥ its lower edge, an infinite one too (``_bin_of``).
    """
    x = np.float64(v)
    return x >= lo and (last or x < hi)


@njit(cache=True, nogil=True, inline="always")
def _bin_edges(b):
    """(lo, hi, last): histogram bin b's edges in float64, and whether it is the last bin (no upper edge)."""
    return np.float64(b) / N_BINS, np.float64(b + 1) / N_BINS, b == N_BINS - 1


@njit(cache=True, nogil=True)
def _kth_largest(sims, hist, k):
    """max_k(Ŝ), 1 ≤ k ≤ N, for Ŝ ≥ 0: walk the histogram down to the bin holding rank k, then select inside it."""
    b, above = _rank_bin(hist, k)
    return _value_at_rank(sims, hist, b, hist[b] - (k - above))


@njit(cache=True, nogil=True)
def _value_at_rank(sims, hist, b, pos):
    """The value at ascending position ``pos`` among the Ŝ of histogram bin b: one pass collects the bin's
    values (``_in_bin``), a partition selects inside them."""
    lo, hi, last = _bin_edges(b)
    in_bin = np.empty(hist[b], dtype=np.float32)
    c = 0
    for i in range(sims.shape[0]):
        if _in_bin(sims[i], lo, hi, last):
            in_bin[c] = sims[i]
            c += 1
    return _rank_in_bin(in_bin, pos)


@njit(cache=True, nogil=True, inline="always")
def _rank_in_bin(in_bin, pos):
    """The value at ascending position ``pos`` of a bin's values: the wanted rank inside the bin."""
    return np.partition(in_bin, pos)[pos]


SPARSE_MAX_SHARE = 1 / 8
"""Eq (3)'s candidates (``_support``) under this share of the positions are gathered in one pass, behind a
branch that is rarely taken; more take the branch-free passes (measurements: docs/performance.md, "Large
support sets")."""


@njit(cache=True, nogil=True)
def _support(sims, hist, n_base, gamma):
    """Eq (3) in position order: (the positions t with Ŝ_t ≥ τ = γ·max_{N_base}(Ŝ), ascending; their Ŝ).

    τ is formed in float64. Its rank bin [lo, hi) bounds it before the bin's values are read: lo ≤
    max_{N_base} and a product rounds monotonically, so fl(γ·lo) ≤ τ, and no Ŝ below fl(γ·lo) is in the
    support set. The others, the candidates, lie in the bins from ``_bin_of(fl(γ·lo))`` up, which the
    histogram counts. When they are few (``SPARSE_MAX_SHARE``), one pass gathers them behind a branch,
    with the rank bin's values among them (γ ≤ 1), and τ then drops the few below it
    (``_sparse_support``). Otherwise a pass collects the rank bin's values for τ, a second counts the
    support set (no branch, vectorised), so the outputs are allocated at their size, and the third writes
    them with no data-dependent branch: every position is written and the test only decides whether the
    write cursor moves on, so a support set holding any share of the bank costs no mispredicted branches.
    """
    n = sims.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    k = min(n_base, n)
    b, above = _rank_bin(hist, k)
    pos = hist[b] - (k - above)  # ascending position of max_k inside its bin
    cut = gamma * _bin_edges(b)[0]
    n_candidates = 0
    for j in range(_bin_of(cut), N_BINS):
        n_candidates += hist[j]
    if n_candidates < SPARSE_MAX_SHARE * n:
        return _sparse_support(sims, hist, b, pos, cut, n_candidates, gamma)
    threshold = gamma * np.float64(_value_at_rank(sims, hist, b, pos))
    m = 0
    for t in range(n):
        m += np.int64(sims[t] >= threshold)
    positions = np.empty(m + 1, dtype=np.int64)  # one spare slot: the cursor writes a rejected tail row there
    support_sims = np.empty(m + 1, dtype=np.float32)
    c = 0
    for t in range(n):
        v = sims[t]
        positions[c] = t
        support_sims[c] = v
        c += np.int64(v >= threshold)
    return positions[:m], support_sims[:m]


@njit(cache=True, nogil=True)
def _sparse_support(sims, hist, b, pos, cut, n_candidates, gamma):
    """``_support``'s one-pass form for few candidates: the positions with Ŝ ≥ ``cut`` = fl(γ·lo) and the
    values of the rank bin b in one pass, τ = γ·(the value at ascending position ``pos`` of the bin),
    then the candidates below τ dropped in place (position order kept)."""
    lo, hi, last = _bin_edges(b)
    positions = np.empty(n_candidates, dtype=np.int64)
    values = np.empty(n_candidates, dtype=np.float32)
    in_bin = np.empty(hist[b], dtype=np.float32)
    w = 0
    c = 0
    for t in range(sims.shape[0]):
        v = sims[t]
        if v >= cut:
            positions[w] = t
            values[w] = v
            w += 1
            if _in_bin(v, lo, hi, last):  # the rank bin lies among the candidates: γ ≤ 1
                in_bin[c] = v
                c += 1
    threshold = gamma * np.float64(_rank_in_bin(in_bin, pos))
    m = 0
    for i in range(w):
        v = values[i]
        positions[m] = positions[i]
        values[m] = v
        m += np.int64(v >= threshold)
    return positions[:m], values[:m]


@njit(cache=True, nogil=True)
def _radix_sorted(keys, top):
    """``keys`` (value·2^32 + position, values in [0, ``top``] below 2^31, fewer than 2^32 keys) sorted by
    value, equal values keeping their order (``keys`` may be reused as scratch).

    An LSD radix sort, a digit of ⌈log2(len)⌉ bits (4 to 11) a pass and only as many passes as ``top`` has
    digits: a support set of any size is ordered in a few linear passes, where a comparison sort grows as
    |I|·log|I| and dominated a route whose support set holds a large share of the bank; on a few hundred
    keys the two cost the same (measurements: docs/performance.md, "Kernel details").
    """
    m = keys.shape[0]
    width = 4
    while width < 11 and (np.int64(1) << width) < m:
        width += 1
    mask = (np.int64(1) << width) - 1
    count = np.empty(np.int64(1) << width, dtype=np.int64)
    other = np.empty(m, dtype=np.int64)
    shift = 32
    while (top >> (shift - 32)) > 0:
        count[:] = 0
        for t in range(m):
            count[(keys[t] >> shift) & mask] += 1
        total = np.int64(0)
        for b in range(count.shape[0]):
            n_b = count[b]
            count[b] = total
            total += n_b
        for t in range(m):
            b = (keys[t] >> shift) & mask
            other[count[b]] = keys[t]
            count[b] += 1
        keys, other = other, keys
        shift += width
    return keys


@njit(cache=True, nogil=True)
def _stable_order(values):
    """The permutation that sorts ``values`` (non-negative, below 2^31) ascending, equal values keeping
    their order (``_radix_sorted``)."""
    m = values.shape[0]
    keys = np.empty(m, dtype=np.int64)
    top = np.int64(0)
    for t in range(m):
        v = np.int64(values[t])
        keys[t] = (v << 32) | t
        top = max(top, v)
    keys = _radix_sorted(keys, top)
    for t in range(m):
        keys[t] &= np.int64(0xFFFFFFFF)
    return keys


@njit(cache=True, nogil=True)
def _by_similarity(rows, sims):
    """``rows`` and ``sims`` (Ŝ ≥ 0) stably sorted by Ŝ descending. A non-negative float32's bits read as an
    integer grow with its value (the sign bit cleared turns a −0.0 into +0.0), so the key is top − bits,
    top the largest bits, and the least similar row's key tells the sort how many digits to look at."""
    m = sims.shape[0]
    bits = sims.view(np.int32)
    top = np.int32(0)
    low = np.int32(0x7FFFFFFF)
    for t in range(m):
        b = bits[t] & np.int32(0x7FFFFFFF)
        top = max(top, b)
        low = min(low, b)
    keys = np.empty(m, dtype=np.int64)
    for t in range(m):
        keys[t] = ((np.int64(top) - np.int64(bits[t] & np.int32(0x7FFFFFFF))) << 32) | t
    keys = _radix_sorted(keys, np.int64(top) - np.int64(low))
    out_rows = np.empty(m, dtype=np.int64)
    out_sims = np.empty(m, dtype=np.float32)
    for t in range(m):
        at = keys[t] & np.int64(0xFFFFFFFF)
        out_rows[t] = rows[at]
        out_sims[t] = sims[at]
    return out_rows, out_sims


@njit(cache=True, nogil=True)
def _descending(rows, sims):
    """The support set (bank rows and their Ŝ) ordered as Eq (3) lists it: Ŝ descending, ties to the lower
    row. Two stable sorts: by row (skipped when ``rows`` already ascend, as a scan's positions do), then
    by Ŝ."""
    for t in range(rows.shape[0] - 1):
        if rows[t] >= rows[t + 1]:
            by_row = _stable_order(rows)
            return _by_similarity(rows[by_row], sims[by_row])
    return _by_similarity(rows, sims)


@njit(cache=True, nogil=True)
def _exact_in_any_order(sims):
    """Whether float64 sums of any subset of ``sims`` (float32, ≥ 0), added in any order, are exact, so that
    Eq (4)'s votes have the same bits whatever the order of the support set.

    Let m be the least positive value and e = max(⌊log2 m⌋, −126): every float32 ≥ m is an integer
    multiple of u = 2^(e − 23) (a normal x = M·2^(E − 23) with E ≥ e; subnormals are multiples of
    2^−149). A partial sum of any subset, in any order, is then k·u with 0 ≤ k ≤ n·max/u. When
    n·max ≤ 2^52·u, k < 2^53, so every partial sum is a float64: each addition is exact and every order
    gives the exact sum. (n·max is formed in float64, one rounding, which the factor 2 of headroom
    covers.) Zeros add nothing; an infinite Ŝ fails the test. On a bank of unit rows (Ŝ ≤ 1) a threshold
    of 1/4 or more passes up to 2^27 support rows; the test fails in practice only when the threshold is
    near 0 (γ = 0, or N_base beyond the rows with Ŝ > 0) and a tiny Ŝ joins large ones.
    """
    bits = sims.view(np.int32)
    largest = np.float32(0.0)
    least = np.int32(0x7F800000)  # the bits of +inf, above those of every finite value
    for t in range(sims.shape[0]):
        b = bits[t] & np.int32(0x7FFFFFFF)
        largest = max(largest, sims[t])
        least = min(least, b if b > 0 else np.int32(0x7F800000))
    if not np.isfinite(largest):
        return False
    if largest == 0:
        return True
    e = max(np.int64(least >> 23), np.int64(1)) - 127  # ⌊log2 m⌋ of a normal m: its exponent field − 127
    return np.float64(sims.shape[0]) * np.float64(largest) <= math.ldexp(1.0, e - 23 + 52)


@njit(cache=True, nogil=True)
def _prior_sums(capability, rows, sims, least):
    """Σ_t Ŝ_{rows[t]}·[M_{r,rows[t]} ≥ ``least``] for every model r, each sum in the order of ``rows``:
    Eq (4)'s votes V for ``least`` = 1 (wrong and unknown add nothing), the known weights
    K_r = Σ_{i∈I} Ŝ_i·[M_ri known] for ``least`` = 0."""
    n_models = capability.shape[0]
    sums = np.zeros(n_models, dtype=np.float64)
    for t in range(rows.shape[0]):  # rows outer: the R sums are independent, each still in row order
        s = np.float64(sims[t])
        col = rows[t]
        for r in range(n_models):  # a branch, not s·[M ≥ least]: an overflowed Ŝ = inf times 0 would be NaN
            if capability[r, col] >= least:
                sums[r] += s
    return sums


@njit(cache=True, nogil=True)
def _vote_bits(bits, n_models, rows, sims, planes):
    """Eq (4)'s votes V_r = Σ_{i∈I} Ŝ_i·[M_ri = 1] (row 0) and, with ``planes`` = 2, the known weights
    K_r = Σ_{i∈I} Ŝ_i·[M_ri known] (row 1) from the question-major bits (``capability_bits``), for a
    support set whose sums are exact in any order (``_exact_in_any_order``, which also rules out an
    infinite Ŝ). One pass over the support rows reads each row's words once (both planes sit side by
    side) instead of R bytes N apart, and adds s·bit instead of branching, so the sums vectorise (over a
    multiple of 4 lanes, so no lane is left to a scalar tail; the models past R have no bits, and the
    caller keeps the first R). s·1 = s and s·0 = 0 are exact, and adding a zero changes no sum (each
    starts at +0)."""
    lanes = (n_models + 3) & ~3
    sums = np.zeros((planes, lanes), dtype=np.float64)
    n_words = bits.shape[1] // 2
    for t in range(rows.shape[0]):
        s = np.float64(sims[t])
        row = rows[t]
        for p in range(planes):
            out = sums[p]
            for w in range(n_words):
                word = bits[row, p * n_words + w]
                first = 64 * w
                for r in range(min(64, lanes - first)):
                    out[first + r] += s * np.float64((word >> r) & 1)
    return sums


VOTE_TABLE_MIN_ROWS = 2048
"""Support sets of at least this many rows sum Eq (4) through byte tables (``_vote_tables``), smaller ones
lane by lane (``_vote_bits``): the tables' fixed cost (zeroing and folding 2 × ⌈R/8⌉ tables of 4 × 256
sums) is won back from about this size (measurements: docs/performance.md, "Large support sets")."""


VOTE_PARALLEL_MIN_ROWS = 16384
"""Support sets of at least this many rows fill their byte tables on numba's pool when the scan ran there
(each thread its share of the rows into tables of its own, then added): below, waking the workers again
costs more than the second thread saves (measurements: docs/performance.md, "Large support sets")."""


@njit(cache=True, nogil=True)
def _vote_tables(bits, n_models, rows, sims, planes, n_chunks):
    """``_vote_bits``'s sums (same shape, same bits) for a large support set, through byte tables.

    Each byte of a support row's words (8 models) is a table index: the pass adds Ŝ to entry ``byte`` of
    that byte's table, one add per 8 models instead of one per model, and the tables then fold into the
    R sums (entry v adds to each model whose bit is set in v). With ``n_chunks`` > 1 and at least
    ``VOTE_PARALLEL_MIN_ROWS`` rows, that many threads fill tables of their own from their share of the
    rows, added before the fold. Regrouping the sums this way is exact only because every partial sum is
    (``_exact_in_any_order``, which the caller checks): the sums are those of any order.
    """
    n_bytes = (n_models + 7) >> 3
    m = rows.shape[0]
    if n_chunks > 1 and m >= VOTE_PARALLEL_MIN_ROWS:
        chunk_tables = np.zeros((n_chunks, planes * n_bytes, 4, 256), dtype=np.float64)
        _fill_table_chunks(bits, rows, sims, planes, n_bytes, chunk_tables)
        tables = chunk_tables[0]
        for c in range(1, n_chunks):
            tables += chunk_tables[c]
    else:
        tables = np.zeros((planes * n_bytes, 4, 256), dtype=np.float64)
        _fill_tables(bits, rows, sims, 0, m, planes, n_bytes, tables)
    lanes = (n_models + 3) & ~3
    sums = np.zeros((planes, lanes), dtype=np.float64)
    for p in range(planes):
        for j in range(n_bytes):
            table = tables[p * n_bytes + j]
            for v in range(1, 256):
                x = table[0, v] + table[1, v] + table[2, v] + table[3, v]
                for b in range(min(8, lanes - 8 * j)):
                    if (v >> b) & 1:
                        sums[p, 8 * j + b] += x
    return sums


@njit(cache=True, nogil=True)
def _fill_tables(bits, rows, sims, start, stop, planes, n_bytes, tables):
    """Add Ŝ of the support rows [start, stop) to their byte tables (``_vote_tables``): a pass per plane and
    byte, consecutive rows taking the 4 copies of a table in turn, so rows sharing a byte value do not
    wait on each other's adds."""
    n_words = bits.shape[1] // 2
    for p in range(planes):
        for j in range(n_bytes):  # a pass per byte: four short dependency chains, no inner loop per row
            col = p * n_words + (j >> 3)
            shift = (j & 7) << 3
            table = tables[p * n_bytes + j]
            t = start
            while t + 4 <= stop:
                table[0, (bits[rows[t], col] >> shift) & 0xFF] += np.float64(sims[t])
                table[1, (bits[rows[t + 1], col] >> shift) & 0xFF] += np.float64(sims[t + 1])
                table[2, (bits[rows[t + 2], col] >> shift) & 0xFF] += np.float64(sims[t + 2])
                table[3, (bits[rows[t + 3], col] >> shift) & 0xFF] += np.float64(sims[t + 3])
                t += 4
            while t < stop:
                table[0, (bits[rows[t], col] >> shift) & 0xFF] += np.float64(sims[t])
                t += 1


@njit(cache=True, nogil=True, parallel=True)
def _fill_table_chunks(bits, rows, sims, planes, n_bytes, chunk_tables):
    """``_fill_tables`` in ``len(chunk_tables)`` row chunks on numba's pool, chunk c into ``chunk_tables[c]``."""
    m = rows.shape[0]
    n_chunks = chunk_tables.shape[0]
    for c in prange(n_chunks):
        _fill_tables(bits, rows, sims, c * m // n_chunks, (c + 1) * m // n_chunks, planes, n_bytes, chunk_tables[c])


@njit(cache=True, nogil=True)
def _select(sims, hist, rows, capability, bits, n_base, gamma, ordered, known, n_chunks):
    """Eqs (3)–(4) from one query's scan: (support rows, their Ŝ, votes V, known weights K).

    Position t of ``sims`` is bank row ``rows[t]`` (t itself when ``rows`` is None). ``ordered``: the
    support set most similar first, ties to the lower bank row, as Eq (3) lists it; otherwise in position
    order, unsorted. ``known``: also K_r = Σ_{i∈I} Ŝ_i·[M_ri known] (``_prior_sums``; otherwise K is
    empty). The sums are the same bits either way: when they are exact in any order
    (``_exact_in_any_order``) they stream through ``bits`` (when given) in position order, before any
    sort, V and K in one pass; otherwise they run in Eq (3)'s order, which is then sorted for them even
    when not asked for. ``n_chunks`` as the scan's: a large support set's byte tables fill on that many threads.
    """
    positions, support_sims = _support(sims, hist, n_base, gamma)
    support_rows = positions if rows is None else rows[positions]
    exact = _exact_in_any_order(support_sims)
    if exact and bits is not None:
        planes = 2 if known else 1
        if support_rows.shape[0] >= VOTE_TABLE_MIN_ROWS:
            sums = _vote_tables(bits, capability.shape[0], support_rows, support_sims, planes, n_chunks)
        else:
            sums = _vote_bits(bits, capability.shape[0], support_rows, support_sims, planes)
        if ordered:
            support_rows, support_sims = _descending(support_rows, support_sims)
        n_models = capability.shape[0]
        weights = sums[1, :n_models].copy() if known else np.empty(0, dtype=np.float64)
        return support_rows, support_sims, sums[0, :n_models].copy(), weights
    if ordered or not exact:
        support_rows, support_sims = _descending(support_rows, support_sims)
    votes = _prior_sums(capability, support_rows, support_sims, 1)
    weights = _prior_sums(capability, support_rows, support_sims, 0) if known else np.empty(0, dtype=np.float64)
    return support_rows, support_sims, votes, weights


@njit(cache=True, nogil=True)
def _route(embeddings, rows, bank_rows, query, capability, bits, n_base, gamma, n_chunks, ordered, known):
    """Eqs (2)–(4) for one query over the rows ``rows`` of ``embeddings`` (None: all), which are the bank
    rows ``bank_rows`` (None: the same numbers): (support rows, their Ŝ, votes, known weights)."""
    sims, hists = _scan(embeddings, rows, query.reshape((1, query.shape[0])), n_chunks)
    return _select(sims[0], hists[0], bank_rows, capability, bits, n_base, gamma, ordered, known, n_chunks)


@njit(cache=True, nogil=True)
def _route_batch(embeddings, queries, capability, bits, n_base, gamma, n_chunks, ordered, known):
    """``_route`` for each row b of ``queries`` with N_base = ``n_base[b]`` and γ = ``gamma[b]``, in one pass
    over the whole bank and one compiled call: a list of (support rows, their Ŝ, votes, known weights).

    One call, not a scan and then a selection per query from Python: a worker thread routing a batch
    beside a busy event loop waits for the GIL at every return to Python (measurements:
    docs/performance.md, "The lean Route and the service's cost per Route")."""
    sims, hists = _scan(embeddings, None, queries, n_chunks)
    found = []
    for b in range(queries.shape[0]):
        found.append(_select(sims[b], hists[b], None, capability, bits, n_base[b], gamma[b], ordered, known, n_chunks))
    return found


@njit(cache=True, nogil=True)
def _top_k(votes, k):
    return np.argsort(-votes, kind="mergesort")[:k].copy()


@njit(cache=True, nogil=True)
def _pack_bits(capability, bits):
    n_words = bits.shape[1] // 2
    for r in range(capability.shape[0]):  # models outer: each pass streams one row of M
        word = r >> 6
        bit = np.int64(1) << (r & 63)
        for i in range(capability.shape[1]):
            if capability[r, i] == 1:
                bits[i, word] |= bit
            if capability[r, i] >= 0:
                bits[i, n_words + word] |= bit


def _bank_arrays(embeddings: object, capability: object) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(embeddings)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (questions x dim), got shape {e.shape}")
    if e.dtype != np.float32 or not e.flags.c_contiguous:
        e = _checks.finite("embeddings", _checks.float_matrix("embeddings", e))
    return e, _checks.capability_matrix("capability", capability, e.shape[0])


def _query(query: object, dim: int) -> np.ndarray:
    q = _checks.float_vector("query", query, dtype=np.float32)
    if q.shape[0] != dim:
        raise ValueError(f"query has dimension {q.shape[0]} but the bank's embeddings have dimension {dim}")
    return _checks.finite("query", q)


def _threads(threads: int | None, nbytes: int) -> int:
    """The scan's thread count: ``threads``, or by size when None (one below ``PARALLEL_MIN_BYTES``)."""
    if threads is None:
        threads = 1 if nbytes < PARALLEL_MIN_BYTES else numba.get_num_threads()
    return _checks.positive_int("threads", threads)


def _bits(bits: np.ndarray | None, capability: np.ndarray) -> np.ndarray | None:
    """``capability_bits`` after an O(1) check of its shape and type against ``capability`` (R × N); its
    values are trusted as ``capability_bits(capability)`` built them."""
    if bits is None:
        return None
    n_models, n = capability.shape
    shape = (n, 2 * -(-n_models // 64))
    if type(bits) is not np.ndarray or bits.dtype is not _INT64 or bits.shape != shape or not bits.flags.c_contiguous:
        got = f"{bits.dtype} {bits.shape}" if isinstance(bits, np.ndarray) else type(bits).__name__
        raise ValueError(
            f"capability_bits must be capability_bits(capability): a C-ordered int64 array of shape {shape}, got {got}"
        )
    return bits


_INT64 = np.dtype(np.int64)


def capability_bits(capability: np.ndarray) -> np.ndarray:
    """The capability matrix M (R × N) by question, bit-packed, for Eq (4)'s sums: row i holds two planes
    of W = ⌈R/64⌉ int64 words, word w of the first holding [M_ri = 1] and word W + w [M_ri known] for the
    models r = 64w … 64w + 63, at bit r − 64w (int64, N × 2W).

    Built once per bank snapshot (one pass over M) and passed as ``capability_bits`` to ``route``,
    ``route_many``, ``route_rows`` and ``route_quantized``: their votes (and known weights) then read a
    row's words once per support row, where M gives R bytes N apart (same sums, bit for bit).
    """
    m = np.asarray(capability)
    if m.ndim != 2:
        raise ValueError(f"capability must be a 2-D array (models x questions), got shape {m.shape}")
    m = _checks.capability_matrix("capability", m, m.shape[1])
    bits = np.zeros((m.shape[1], 2 * -(-m.shape[0] // 64)), dtype=np.int64)
    _pack_bits(m, bits)
    return bits


def _routed(found: tuple, return_known: bool) -> tuple[np.ndarray, ...]:
    """A kernel's (rows, sims, votes, known) as the public functions return it: without the known weights
    unless ``return_known``."""
    return found if return_known else found[:3]


def similarities(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Eq (2): Ŝ = max(E·q, 0) in float32 (the paper's S ∈ [0, 1]: negative cosines clip to 0)."""
    e = _checks.finite("embeddings", _checks.float_matrix("embeddings", embeddings))
    q = _query(query, e.shape[1])
    return _scan(e, None, q[None, :], 1)[0][0]


def support_set(sims: np.ndarray, n_base: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq (3): I = {i : Ŝ_i ≥ γ·max_{N_base}(Ŝ)}, max_k the k-th largest with N_base clamped to N.

    Returns (rows int64, similarities float32), most similar first, ties to the lower row.
    """
    s = _checks.finite("sims", _checks.float_vector("sims", sims, dtype=np.float32))
    if s.size and s.min() < 0:
        raise ValueError("sims must be non-negative (clip negative cosines to 0 first, as Eq (2) does)")
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    return _descending(*_support(s, _histogram(s), n_base, gamma))


def order_support(rows: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A support set (bank rows, their Ŝ ≥ 0) in Eq (3)'s order: Ŝ descending, ties to the lower row, as
    ``route(..., ordered=True)`` returns it; for the support set an unordered route returned."""
    r = _checks.row_indices("rows", rows, 2**31)  # the sort keys hold a row in 31 bits
    s = _checks.float_vector("sims", sims, dtype=np.float32)
    if r.shape != s.shape:
        raise ValueError(f"rows and sims must have the same length, got {r.shape[0]} and {s.shape[0]}")
    if s.size and not s.min() >= 0:  # NaN fails too
        raise ValueError("sims must be non-negative and not NaN")
    return _descending(r, s)


def prior_vote(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Eq (4): V = M_I·Ŝ_I over known entries, V_r = Σ_{i ∈ I, M_ri ≠ −1} Ŝ_i·M_ri (float64, length R),
    each sum in the order of ``rows``."""
    return _checked_sums(capability, rows, sims, 1)


def known_weights(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """K_r = Σ_{i ∈ I} Ŝ_i·[M_ri known] (float64, length R), each sum in the order of ``rows``: the
    normalised vote's denominator (V_r / K_r, the similarity-weighted accuracy on the support set)."""
    return _checked_sums(capability, rows, sims, 0)


def _checked_sums(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray, least: int) -> np.ndarray:
    """``_prior_sums`` after checking every argument (the public ``prior_vote`` and ``known_weights``)."""
    m = np.asarray(capability)
    if m.ndim != 2:
        raise ValueError(f"capability must be a 2-D array (models x questions), got shape {m.shape}")
    m = _checks.capability_matrix("capability", m, m.shape[1])
    r = _checks.row_indices("rows", rows, m.shape[1])
    s = _checks.finite("sims", _checks.float_vector("sims", sims, dtype=np.float32, length=r.shape[0]))
    return _prior_sums(m, r, s, least)


def top_k(votes: np.ndarray, k: int) -> np.ndarray:
    """Eq (5): argtop_K(V), highest vote first, ties to the lower model index; K > R is an error."""
    v = _checks.finite("votes", _checks.float_vector("votes", votes))
    return _top_k(v, _checks.top_k_count(k, v.shape[0]))


def route(
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
    """Eqs (2)–(4) fused in one pass over the bank: (support rows, their Ŝ, votes V).

    ``embeddings`` (float32, C order, finite) and ``capability`` (int8) are trusted as the bank wrote
    them and only their shapes are checked; the query is fully checked. ``threads``: None picks one
    thread for banks under ``PARALLEL_MIN_BYTES`` and numba's thread count above; 1 forces the serial
    kernel; n > 1 scans in n chunks on numba's pool.

    ``capability_bits``: ``capability_bits(capability)``, built once per bank snapshot; the sums then
    stream it (same bits). ``ordered=False`` returns the support set in ascending row order instead of
    most similar first, and skips the sort that order costs; the votes are the same bits (``_select``).
    ``return_known=True`` appends K, the known weights Σ_{i∈I} Ŝ_i·[M_ri known] (``known_weights`` of
    the support set), summed in the votes' pass.
    """
    e, m = _bank_arrays(embeddings, capability)
    q = _query(query, e.shape[1])
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    bits = _bits(capability_bits, m)
    threads = _threads(threads, e.nbytes)
    known = bool(return_known)
    return _routed(_route(e, None, None, q, m, bits, n_base, gamma, threads, bool(ordered), known), known)


def route_many(
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
    """``route`` for B queries in one pass over the bank: element b is ``route(embeddings, queries[b],
    capability, n_base[b], gamma[b])``, bit for bit.

    Each bank row is read once and dotted with all B queries (rows of ``queries``, B × d), so a batch
    costs one read of the bank plus B × N·d multiply-adds instead of B reads: on a bank that does not
    fit in cache it is several times cheaper than B calls. ``n_base`` and ``gamma`` give each query's
    Eq (3) parameters (one per query). ``threads`` as in ``route``, sized by the bank's bytes;
    ``capability_bits``, ``ordered`` and ``return_known`` as in ``route``.
    """
    e, m = _bank_arrays(embeddings, capability)
    q, n_bases, gammas = _batch_arguments(queries, e.shape[1], n_base, gamma)
    if q.shape[0] == 0:
        return []
    bits = _bits(capability_bits, m)
    threads = _threads(threads, e.nbytes)
    known = bool(return_known)
    return [_routed(found, known) for found in _route_batch(e, q, m, bits, n_bases, gammas, threads, bool(ordered), known)]


def _batch_arguments(
    queries: object, dim: int, n_base: Sequence[int], gamma: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch's queries (finite float32 B × ``dim``) and its Eq (3) parameters, one per query, checked:
    (queries, N_base as int64, γ as float64)."""
    q = _checks.float_matrix("queries", queries, dtype=np.float32)
    if q.shape[1] != dim:
        raise ValueError(f"queries have dimension {q.shape[1]} but the bank's embeddings have dimension {dim}")
    q = _checks.finite("queries", q)
    if len(n_base) != q.shape[0] or len(gamma) != q.shape[0]:
        raise ValueError(f"n_base and gamma need one value per query ({q.shape[0]}), got {len(n_base)} and {len(gamma)}")
    parameters = [_checks.support_parameters(nb, g) for nb, g in zip(n_base, gamma)]
    return q, np.array([nb for nb, _ in parameters], dtype=np.int64), np.array([g for _, g in parameters], dtype=np.float64)


def route_rows(
    embeddings: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    threads: int | None = None,
    labels: np.ndarray | None = None,
    *,
    capability_bits: np.ndarray | None = None,
    ordered: bool = True,
    return_known: bool = False,
) -> tuple[np.ndarray, ...]:
    """Eqs (2)–(4) over the bank rows ``rows`` only (the approximate mode: the rows of an index's probed
    lists): (support rows, their Ŝ, votes V), as ``route`` over ``embeddings[rows]`` with rows mapped back.

    The support set is Eq (3) within ``rows``: the threshold is γ times the N_base-th largest Ŝ among
    them (N_base clamped to ``len(rows)``); support rows are bank row numbers, most similar first, ties
    to the lower bank row. Each Ŝ equals the exact kernel's value for that row bit for bit. ``rows``
    must be distinct (each is read once); out-of-range rows are an error. ``threads`` as in ``route``,
    sized by the bytes of the rows scanned.

    ``labels`` (None: row i of ``embeddings`` is bank row i) makes ``embeddings`` a reordered copy of the
    bank, such as an index's list-ordered vectors: row i is bank row ``labels[i]``, for the support rows,
    their ties and the capability columns. It must be a permutation of the bank's rows (as an index
    stores it; not checked here, ``Bank.validate`` does).

    ``capability_bits`` and ``return_known`` as in ``route``; ``ordered=False`` returns the support set
    in the order of ``rows``.
    """
    e, m = _bank_arrays(embeddings, capability)
    r = _checks.row_indices("rows", rows, e.shape[0])
    q = _query(query, e.shape[1])
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    bits = _bits(capability_bits, m)
    threads = _threads(threads, r.shape[0] * e.shape[1] * e.itemsize)
    bank_rows = r if labels is None else _labels(labels, e.shape[0])[r]
    known = bool(return_known)
    return _routed(_route(e, r, bank_rows, q, m, bits, n_base, gamma, threads, bool(ordered), known), known)


def _labels(labels: np.ndarray, n_rows: int) -> np.ndarray:
    """``labels`` as an int64 vector, after its shape check."""
    out = np.asarray(labels)
    if out.shape != (n_rows,) or out.dtype != np.int64:
        raise ValueError(f"labels must be an int64 vector of the {n_rows} embedding rows' bank rows, got {out.dtype} {out.shape}")
    return out
