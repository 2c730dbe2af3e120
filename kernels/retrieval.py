"""Retrieval-based prior selection, Eqs (2)–(5), and the fused route kernel.

Notation (DESIGN.md §3): bank embeddings E ∈ R^{N×d} (float32, rows L2-normalised), capability matrix
M ∈ {−1, 0, 1}^{R×N} (int8, −1 = not evaluated), query q ∈ R^d.

The fused kernel makes one pass over E that computes Ŝ_i = max(E_i·q, 0) into an N-float buffer and, on
the fly, a histogram of Ŝ over [0, 1]. The histogram locates the bin holding the N_base-th largest value,
so exact selection only partitions that one bin instead of sorting N values; the support set and the
votes then touch only the buffer and the |I| support columns of M. The pass over E is the only O(N·d)
work, which is why the kernel runs at the speed of reading the bank once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from numba import njit, prange

from . import _checks

N_BINS = 4096
"""Histogram bins over [0, 1] used to locate the N_base-th largest similarity."""

PARALLEL_MIN_BYTES = 6 << 20
"""Banks smaller than this are scanned on one thread: below it waking the sleeping workers costs more than
the second thread saves (measured on the 2-core CI machine: a whole route at 4.4 MiB took 122 µs on one
thread and 132 µs on two, at 7.3 MiB 191 and 168 µs)."""


@njit(cache=True, nogil=True, inline="always")
def _bin_of(v: float) -> int:
    if v >= 1.0:  # before the multiply: int() of a huge product overflows int64 (negative bin index)
        return N_BINS - 1
    return int(v * N_BINS)


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _clipped_dots(embeddings, i, k, query):
    """(Ŝ_i, Ŝ_k) = (max(E_i·q, 0), max(E_k·q, 0)) in float32, two rows in one loop over q.

    Every scan computes every Ŝ here (a row left over is paired with itself), so all of them give the
    same bits for a row: both sums sit in one vectorised loop, with the same vector width, interleave
    and final reduction. Each q_j is loaded once for two rows, which is what bounds a scan of a bank in
    cache; the scans pair rows half a chunk apart, as two rows side by side read at half speed from DRAM
    on the Zen 4 CI machine. Measured there (one thread, 1000 × 1024: 64 → 53 µs; two threads, 10,000 ×
    384: 261 → 190 µs; from DRAM within ±2 %).
    """
    a = np.float32(0.0)
    b = np.float32(0.0)
    for j in range(query.shape[0]):
        x = query[j]
        a += embeddings[i, j] * x
        b += embeddings[k, j] * x
    return (a if a > np.float32(0.0) else np.float32(0.0)), (b if b > np.float32(0.0) else np.float32(0.0))


@njit(cache=True, nogil=True, inline="always")
def _count_bins(sims, start, stop, hist):
    """Count ``sims[start:stop]`` into ``hist``.

    A pass of its own after the dot products, not one increment per dot: the increments' loads and
    stores held back the overlap of one row's dot product with the next, and re-reading the chunk's
    similarities from L1/L2 is cheaper (measured on the 2-core CI machine, one thread: a 1000 × 1024 scan
    69 → 55 µs, 10,000 × 384 323 → 255 µs; no change once the bank comes from DRAM).
    """
    for i in range(start, stop):
        hist[_bin_of(sims[i])] += 1


@njit(cache=True, nogil=True, fastmath=True)
def _scan_block(embeddings, query, start, stop, out, hist):
    """Ŝ_i for rows [start, stop) into ``out``, counted into ``hist``."""
    h = (stop - start) // 2
    for i in range(start, start + h):
        a, b = _clipped_dots(embeddings, i, i + h, query)
        out[i] = a
        out[i + h] = b
    if (stop - start) % 2:
        out[stop - 1] = _clipped_dots(embeddings, stop - 1, stop - 1, query)[0]
    _count_bins(out, start, stop, hist)


@njit(cache=True, nogil=True, fastmath=True)
def _scan_rows_block(embeddings, rows, query, start, stop, out, hist):
    """Ŝ of bank rows ``rows[start:stop]`` into ``out[start:stop]``, counted into ``hist``."""
    h = (stop - start) // 2
    for t in range(start, start + h):
        a, b = _clipped_dots(embeddings, rows[t], rows[t + h], query)
        out[t] = a
        out[t + h] = b
    if (stop - start) % 2:
        out[stop - 1] = _clipped_dots(embeddings, rows[stop - 1], rows[stop - 1], query)[0]
    _count_bins(out, start, stop, hist)


@njit(cache=True, nogil=True, fastmath=True)
def _scan_many_block(embeddings, queries, start, stop, out, hists):
    """Ŝ of rows [start, stop) against every query (``out[b, i]``, counted into ``hists[b]``): each pair of
    rows is read from memory once and dotted with all the queries while it sits in L1."""
    h = (stop - start) // 2
    for i in range(start, start + h):
        for b in range(queries.shape[0]):
            x, y = _clipped_dots(embeddings, i, i + h, queries[b])
            out[b, i] = x
            out[b, i + h] = y
    if (stop - start) % 2:
        for b in range(queries.shape[0]):
            out[b, stop - 1] = _clipped_dots(embeddings, stop - 1, stop - 1, queries[b])[0]
    for b in range(queries.shape[0]):
        _count_bins(out[b], start, stop, hists[b])


@njit(cache=True, nogil=True)
def _scan_many(embeddings, queries, n_chunks):
    """(Ŝ of every row for each query, B × N; their histograms, B × N_BINS); n_chunks = 1 scans on the
    calling thread, more in that many row chunks on numba's pool."""
    n = embeddings.shape[0]
    n_queries = queries.shape[0]
    sims = np.empty((n_queries, n), dtype=np.float32)
    if n_chunks == 1:
        hist = np.zeros((n_queries, N_BINS), dtype=np.int64)
        _scan_many_block(embeddings, queries, 0, n, sims, hist)
        return sims, hist
    hists = np.zeros((n_chunks, n_queries, N_BINS), dtype=np.int64)
    _scan_many_parallel(embeddings, queries, sims, hists)
    return sims, hists.sum(axis=0)


@njit(cache=True, nogil=True, parallel=True)
def _scan_many_parallel(embeddings, queries, sims, hists):
    n = embeddings.shape[0]
    n_chunks = hists.shape[0]
    for c in prange(n_chunks):
        _scan_many_block(embeddings, queries, c * n // n_chunks, (c + 1) * n // n_chunks, sims, hists[c])


@njit(cache=True, nogil=True)
def _scan_serial(embeddings, query):
    n = embeddings.shape[0]
    sims = np.empty(n, dtype=np.float32)
    hist = np.zeros(N_BINS, dtype=np.int64)
    _scan_block(embeddings, query, 0, n, sims, hist)
    return sims, hist


@njit(cache=True, nogil=True, parallel=True)
def _scan_chunks(embeddings, query, sims, hists):
    """Ŝ of every row into ``sims``, in ``len(hists)`` row chunks on numba's pool, chunk c counted into
    ``hists[c]``: the one parallel region of a scan (see ``_scan_parallel``)."""
    n = embeddings.shape[0]
    n_chunks = hists.shape[0]
    for c in prange(n_chunks):
        _scan_block(embeddings, query, c * n // n_chunks, (c + 1) * n // n_chunks, sims, hists[c])


@njit(cache=True, nogil=True, parallel=True)
def _scan_rows_chunks(embeddings, rows, query, sims, hists):
    """``_scan_chunks`` over the bank rows ``rows`` (in that order)."""
    n = rows.shape[0]
    n_chunks = hists.shape[0]
    for c in prange(n_chunks):
        _scan_rows_block(embeddings, rows, query, c * n // n_chunks, (c + 1) * n // n_chunks, sims, hists[c])


@njit(cache=True, nogil=True)
def _merged(hists):
    """The histogram of all chunks: the sum of the rows of ``hists``."""
    hist = np.zeros(hists.shape[1], dtype=np.int64)
    for c in range(hists.shape[0]):
        for b in range(hists.shape[1]):
            hist[b] += hists[c, b]
    return hist


@njit(cache=True, nogil=True)
def _scan_parallel(embeddings, query, n_chunks):
    """(Ŝ of every row, their histogram), scanned in ``n_chunks`` chunks on numba's pool.

    Not itself ``parallel=True``: there, numba turns each array allocation and reduction into a parallel
    region of its own, and with sleeping workers (``OMP_WAIT_POLICY=PASSIVE``) every region pays their
    wake-up again (≈ 45 µs each on the 2-core CI machine). Allocating and merging here leaves one region
    per scan, which took the parallel scan of a 1000 × 384 bank from 139 to 65 µs.
    """
    sims = np.empty(embeddings.shape[0], dtype=np.float32)
    hists = np.zeros((n_chunks, N_BINS), dtype=np.int64)
    _scan_chunks(embeddings, query, sims, hists)
    return sims, _merged(hists)


@njit(cache=True, nogil=True)
def _scan_rows(embeddings, rows, query, n_chunks):
    """Ŝ of the bank rows ``rows`` (in that order) and their histogram, in ``n_chunks`` parallel chunks."""
    sims = np.empty(rows.shape[0], dtype=np.float32)
    hists = np.zeros((n_chunks, N_BINS), dtype=np.int64)
    _scan_rows_chunks(embeddings, rows, query, sims, hists)
    return sims, _merged(hists)


@njit(cache=True, nogil=True)
def _scan_rows_serial(embeddings, rows, query):
    sims = np.empty(rows.shape[0], dtype=np.float32)
    hist = np.zeros(N_BINS, dtype=np.int64)
    _scan_rows_block(embeddings, rows, query, 0, rows.shape[0], sims, hist)
    return sims, hist


@njit(cache=True, nogil=True)
def _histogram(sims):
    hist = np.zeros(N_BINS, dtype=np.int64)
    _count_bins(sims, 0, sims.shape[0], hist)
    return hist


@njit(cache=True, nogil=True)
def _kth_largest(sims, hist, k):
    """max_k(Ŝ), 1 ≤ k ≤ N: walk the histogram down to the bin holding rank k, then select inside it."""
    above = 0
    b = N_BINS - 1
    while above + hist[b] < k:
        above += hist[b]
        b -= 1
    in_bin = np.empty(hist[b], dtype=np.float32)
    c = 0
    for i in range(sims.shape[0]):
        if _bin_of(sims[i]) == b:
            in_bin[c] = sims[i]
            c += 1
    pos = hist[b] - (k - above)  # ascending position of the wanted rank inside the bin
    return np.partition(in_bin, pos)[pos]


@njit(cache=True, nogil=True)
def _support(sims, hist, n_base, gamma):
    """Eq (3): rows with Ŝ_i ≥ γ·max_{N_base}(Ŝ), most similar first, ties to the lower row."""
    n = sims.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    threshold = gamma * np.float64(_kth_largest(sims, hist, min(n_base, n)))
    # one int64 key per support row that sorts ascending as (Ŝ descending, row ascending): a non-negative
    # float32's bits read as int32 grow with its value (the sign bit cleared turns a −0.0 into +0.0), and
    # the row (< 2^32) fills the low 32 bits; built in the threshold pass, one integer sort, one decode
    bits = sims.view(np.int32)
    keys = np.empty(n, dtype=np.int64)
    c = 0
    for i in range(n):
        if sims[i] >= threshold:
            keys[c] = ((np.int64(0x7FFFFFFF) - np.int64(bits[i] & np.int32(0x7FFFFFFF))) << 32) | i
            c += 1
    keys = keys[:c]
    keys.sort()
    rows = np.empty(c, dtype=np.int64)
    support_sims = np.empty(c, dtype=np.float32)
    for t in range(c):
        row = keys[t] & np.int64(0xFFFFFFFF)
        rows[t] = row
        support_sims[t] = sims[row]
    return rows, support_sims


@njit(cache=True, nogil=True)
def _prior_vote(capability, rows, sims):
    """Eq (4): V_r = Σ_{t} Ŝ_{rows[t]}·[M_{r,rows[t]} = 1]; unknown (−1) and wrong (0) add nothing."""
    n_models = capability.shape[0]
    votes = np.zeros(n_models, dtype=np.float64)
    for t in range(rows.shape[0]):  # rows outer: the R sums are independent, each still in row order
        s = np.float64(sims[t])
        col = rows[t]
        for r in range(n_models):  # a branch, not s·[M = 1]: an overflowed Ŝ = inf times 0 would be NaN
            if capability[r, col] == 1:
                votes[r] += s
    return votes


@njit(cache=True, nogil=True)
def _select_and_vote(sims, hist, capability, n_base, gamma):
    """Eqs (3)–(4) from one query's scan: (support rows, their Ŝ, votes)."""
    rows, support_sims = _support(sims, hist, n_base, gamma)
    return rows, support_sims, _prior_vote(capability, rows, support_sims)


@njit(cache=True, nogil=True)
def _route_serial(embeddings, query, capability, n_base, gamma):
    sims, hist = _scan_serial(embeddings, query)
    return _select_and_vote(sims, hist, capability, n_base, gamma)


@njit(cache=True, nogil=True)
def _route_parallel(embeddings, query, capability, n_base, gamma, n_chunks):
    sims, hist = _scan_parallel(embeddings, query, n_chunks)
    return _select_and_vote(sims, hist, capability, n_base, gamma)


@njit(cache=True, nogil=True)
def _route_rows(embeddings, rows, labels, query, capability, n_base, gamma, n_chunks):
    """Eqs (2)–(4) over the rows ``rows`` of ``embeddings`` only; support rows are bank rows (``labels`` of
    them, or themselves when ``labels`` is empty), ties to the lower bank row."""
    if n_chunks == 1:
        sims, hist = _scan_rows_serial(embeddings, rows, query)
    else:
        sims, hist = _scan_rows(embeddings, rows, query, n_chunks)
    local, support_sims = _support(sims, hist, n_base, gamma)
    support_rows = rows[local]
    if labels.shape[0] > 0:
        support_rows = labels[support_rows]
    # _support orders ties by position in ``rows``; re-order them by bank row: sort by row, then stably by Ŝ
    by_row = np.argsort(support_rows)
    support_rows, support_sims = support_rows[by_row], support_sims[by_row]
    order = np.argsort(-support_sims, kind="mergesort")
    support_rows, support_sims = support_rows[order], support_sims[order]
    return support_rows, support_sims, _prior_vote(capability, support_rows, support_sims)


@njit(cache=True, nogil=True)
def _top_k(votes, k):
    return np.argsort(-votes, kind="mergesort")[:k].copy()


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


def similarities(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Eq (2): Ŝ = max(E·q, 0) in float32 (the paper's S ∈ [0, 1]: negative cosines clip to 0)."""
    e = _checks.finite("embeddings", _checks.float_matrix("embeddings", embeddings))
    q = _query(query, e.shape[1])
    return _scan_serial(e, q)[0]


def support_set(sims: np.ndarray, n_base: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq (3): I = {i : Ŝ_i ≥ γ·max_{N_base}(Ŝ)}, max_k the k-th largest with N_base clamped to N.

    Returns (rows int64, similarities float32), most similar first, ties to the lower row.
    """
    s = _checks.finite("sims", _checks.float_vector("sims", sims, dtype=np.float32))
    if s.size and s.min() < 0:
        raise ValueError("sims must be non-negative (clip negative cosines to 0 first, as Eq (2) does)")
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    return _support(s, _histogram(s), n_base, gamma)


def prior_vote(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Eq (4): V = M_I·Ŝ_I over known entries, V_r = Σ_{i ∈ I, M_ri ≠ −1} Ŝ_i·M_ri (float64, length R)."""
    m = np.asarray(capability)
    if m.ndim != 2:
        raise ValueError(f"capability must be a 2-D array (models x questions), got shape {m.shape}")
    m = _checks.capability_matrix("capability", m, m.shape[1])
    r = _checks.row_indices("rows", rows, m.shape[1])
    s = _checks.finite("sims", _checks.float_vector("sims", sims, dtype=np.float32, length=r.shape[0]))
    return _prior_vote(m, r, s)


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eqs (2)–(4) fused in one pass over the bank: (support rows, their Ŝ, votes V).

    ``embeddings`` (float32, C order, finite) and ``capability`` (int8) are trusted as the bank wrote
    them and only their shapes are checked; the query is fully checked. ``threads``: None picks one
    thread for banks under ``PARALLEL_MIN_BYTES`` and numba's thread count above; 1 forces the serial
    kernel; n > 1 scans in n chunks on numba's pool.
    """
    e, m = _bank_arrays(embeddings, capability)
    q = _query(query, e.shape[1])
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    threads = _threads(threads, e.nbytes)
    if threads == 1:
        return _route_serial(e, q, m, n_base, gamma)
    return _route_parallel(e, q, m, n_base, gamma, threads)


def route_many(
    embeddings: np.ndarray,
    queries: np.ndarray,
    capability: np.ndarray,
    n_base: Sequence[int],
    gamma: Sequence[float],
    threads: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``route`` for B queries in one pass over the bank: element b is ``route(embeddings, queries[b],
    capability, n_base[b], gamma[b])``, bit for bit.

    Each bank row is read once and dotted with all B queries (rows of ``queries``, B × d), so a batch
    costs one read of the bank plus B × N·d multiply-adds instead of B reads: on a bank that does not
    fit in cache it is several times cheaper than B calls. ``n_base`` and ``gamma`` give each query's
    Eq (3) parameters (one per query). ``threads`` as in ``route``, sized by the bank's bytes.
    """
    e, m = _bank_arrays(embeddings, capability)
    q = _checks.float_matrix("queries", queries, dtype=np.float32)
    if q.shape[1] != e.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but the bank's embeddings have dimension {e.shape[1]}")
    q = _checks.finite("queries", q)
    if len(n_base) != q.shape[0] or len(gamma) != q.shape[0]:
        raise ValueError(f"n_base and gamma need one value per query ({q.shape[0]}), got {len(n_base)} and {len(gamma)}")
    parameters = [_checks.support_parameters(nb, g) for nb, g in zip(n_base, gamma)]
    if q.shape[0] == 0:
        return []
    threads = _threads(threads, e.nbytes)
    sims, hists = _scan_many(e, q, threads)
    return [_select_and_vote(sims[b], hists[b], m, nb, g) for b, (nb, g) in enumerate(parameters)]


def route_rows(
    embeddings: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    threads: int | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    """
    e, m = _bank_arrays(embeddings, capability)
    r = _checks.row_indices("rows", rows, e.shape[0])
    q = _query(query, e.shape[1])
    n_base, gamma = _checks.support_parameters(n_base, gamma)
    threads = _threads(threads, r.shape[0] * e.shape[1] * e.itemsize)
    return _route_rows(e, r, _labels(labels, e.shape[0]), q, m, n_base, gamma, threads)


_NO_LABELS = np.empty(0, dtype=np.int64)


def _labels(labels: np.ndarray | None, n_rows: int) -> np.ndarray:
    """``labels`` as the int64 vector ``_route_rows`` reads (empty: the identity), after its shape check."""
    if labels is None:
        return _NO_LABELS
    out = np.asarray(labels)
    if out.shape != (n_rows,) or out.dtype != np.int64:
        raise ValueError(f"labels must be an int64 vector of the {n_rows} embedding rows' bank rows, got {out.dtype} {out.shape}")
    return np.ascontiguousarray(out)
