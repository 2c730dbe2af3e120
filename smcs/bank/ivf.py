"""An inverted-file (IVF) index over one bank version's rows: approximate retrieval for large banks.

The index splits the bank's unit rows into ``nlist`` lists by their most similar centroid (spherical
k-means, trained with faiss on a sample of the rows). A query probes the ``nprobe`` lists whose centroids
are most similar to it, and the route kernel then scores exactly the rows of those lists
(``kernels.route_rows``): one pass over a few percent of the bank instead of all of it, with each
similarity equal to the exact kernel's. The index keeps a copy of the rows in list order (``vectors``),
so that each probed list is read as one contiguous block rather than row by row across the bank. The
support set is exact whenever every row above the threshold lies in a probed list;
``benchmarks/test_approximate.py`` measures how often that holds.

An index belongs to a bank version and is stored in its directory beside the data files, hashed in its
manifest (``Manifest.index`` describes it)::

    ivf_centroids.npy  float32 nlist x d, unit rows
    ivf_offsets.npy    int64 nlist + 1: list c holds rows[offsets[c]:offsets[c + 1]]
    ivf_rows.npy       int64 N: every bank row once, grouped by list, ascending within a list
    ivf_vectors.npy    float32 N x d: vectors[i] is the bank's row rows[i] (written by the bank store)

Appends assign the new rows to their nearest centroid (no faiss needed), so an index follows a growing
bank; once the bank has grown to ``REBUILD_GROWTH`` times the rows the centroids were trained on,
``needs_rebuild`` says so and ``train`` should be run again (``smcs bank index``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError

CENTROIDS = "ivf_centroids.npy"
OFFSETS = "ivf_offsets.npy"
ROWS = "ivf_rows.npy"
VECTORS = "ivf_vectors.npy"
FILES = (CENTROIDS, OFFSETS, ROWS, VECTORS)
"""The index's files in a version directory."""

REBUILD_GROWTH = 2.0
"""``needs_rebuild`` once the bank holds this many times the rows the centroids were trained on."""

POINTS_PER_CENTROID = 64
"""Training sample per list (faiss warns below 39; its own cap is 256): training time grows with the
sample and the lists, and 64 is the setting docs/sizing.md measured recall with (training times:
docs/performance.md, "The int8 scan and the IVF index")."""

MIN_NPROBE = 8
"""Fewest lists ``default_nprobe`` probes."""

_BLOCK_ROWS = 16384
"""Rows per block when assigning (bounds the similarity block to 16384 x nlist floats) or comparing vectors."""


@dataclass(frozen=True)
class IVFIndex:
    """Centroids and inverted lists over the first ``n_rows`` rows of a bank (arrays may be memory maps).

    ``vectors`` is the list-ordered copy of the rows: memory-mapped when the index comes with a bank
    version, None for one just trained or extended (the bank store writes it on commit; ``with_vectors``
    makes one in memory)."""

    centroids: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    trained_rows: int
    seed: int
    vectors: np.ndarray | None = None

    @property
    def nlist(self) -> int:
        """Number of lists (centroids)."""
        return int(self.centroids.shape[0])

    @property
    def n_rows(self) -> int:
        """Bank rows indexed."""
        return int(self.rows.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension of the centroids."""
        return int(self.centroids.shape[1])

    @property
    def needs_rebuild(self) -> bool:
        """Whether the bank has outgrown the centroids (``REBUILD_GROWTH`` x the rows they were trained on)."""
        return self.n_rows >= REBUILD_GROWTH * max(self.trained_rows, 1)

    @property
    def default_nprobe(self) -> int:
        """Lists a query probes when the policy does not say: 1/64 of them, at least ``MIN_NPROBE`` (all of a
        smaller index). At 1e6 × 384 with the default 4096 lists that is 64 lists, about 2 % of the rows."""
        return min(self.nlist, max(MIN_NPROBE, self.nlist // 64))

    def positions(self, query: np.ndarray, nprobe: int) -> np.ndarray:
        """Positions in ``rows`` (and ``vectors``) of the ``nprobe`` lists whose centroids are most similar
        to the unit ``query`` (all lists when ``nprobe`` ≥ ``nlist``), as one int64 vector."""
        if nprobe >= self.nlist:
            return np.arange(self.n_rows, dtype=np.int64)
        sims = self.centroids @ np.asarray(query, dtype=np.float32)
        lists = np.argpartition(-sims, nprobe - 1)[:nprobe]
        return np.concatenate([np.arange(self.offsets[c], self.offsets[c + 1]) for c in lists.tolist()])

    def probe(self, query: np.ndarray, nprobe: int) -> np.ndarray:
        """Bank rows of the ``nprobe`` lists whose centroids are most similar to the unit ``query``."""
        return np.asarray(self.rows)[self.positions(query, nprobe)]

    def with_vectors(self, embeddings: np.ndarray) -> IVFIndex:
        """This index with its list-ordered copy of ``embeddings`` (the bank's rows) made in memory."""
        _check_dim(embeddings, self.dim)
        return replace(self, vectors=np.ascontiguousarray(np.asarray(embeddings)[np.asarray(self.rows)], dtype=np.float32))

    def list_sizes(self) -> np.ndarray:
        """Rows per list."""
        return np.diff(np.asarray(self.offsets))

    def extend(self, embeddings: np.ndarray) -> IVFIndex:
        """This index with the unit rows ``embeddings`` appended as bank rows ``n_rows``, ``n_rows + 1``, …
        (each to its most similar centroid); the centroids are unchanged."""
        if len(embeddings) == 0:
            return self
        _check_dim(embeddings, self.dim)
        lists = np.empty(self.n_rows + len(embeddings), dtype=np.int64)
        lists[np.asarray(self.rows)] = np.repeat(np.arange(self.nlist), self.list_sizes())
        lists[self.n_rows :] = assign(self.centroids, embeddings)
        offsets, rows = _inverted_lists(lists, self.nlist)
        return IVFIndex(np.asarray(self.centroids), offsets, rows, self.trained_rows, self.seed)

    def list_arrays(self) -> dict[str, np.ndarray]:
        """The centroids and the lists by file name (the vectors are the bank store's to write)."""
        return {CENTROIDS: self.centroids, OFFSETS: self.offsets, ROWS: self.rows}


def default_nlist(n_rows: int) -> int:
    """Lists for a bank of ``n_rows``: the power of two nearest 4·√N, or N / ``POINTS_PER_CENTROID`` when
    that is smaller (every list gets its full training sample); 1024 at 1e5 rows, 4096 at 1e6, at least 1.

    Finer than the textbook √N: at 1e6 × 384 (docs/sizing.md), 4096 lists probed 64 at a time found
    0.991 of the exact support set where 1024 lists probed 32 at a time found 0.987, and in less time,
    because coarse lists follow the uneven topics and a query lands in a big one. Training costs more
    (times of both: docs/performance.md, "The int8 scan and the IVF index").
    """
    if n_rows < 1:
        raise InputError(f"an index needs at least one row, got {n_rows}")
    target = max(1.0, min(4.0 * math.sqrt(n_rows), n_rows / POINTS_PER_CENTROID))
    return 2 ** round(math.log2(target))  # ≤ 2·N/64 < N, or 1


def train(embeddings: np.ndarray, nlist: int | None = None, *, seed: int = 0, niter: int = 20) -> IVFIndex:
    """Train an index over the unit rows ``embeddings`` (N x d float32): spherical k-means with faiss on
    at most ``POINTS_PER_CENTROID`` x ``nlist`` rows drawn with ``seed``, then every row assigned to its
    most similar centroid. ``nlist`` defaults to ``default_nlist(N)``."""
    import faiss  # a dependency, imported here: only training needs it, routing over an index does not
    n = len(embeddings)
    nlist = default_nlist(n) if nlist is None else nlist
    if isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= max(n, 1):
        raise InputError(f"nlist must be an integer in [1, {n}] (the bank's rows), got {nlist!r}")
    if niter < 1:
        raise InputError(f"niter must be >= 1, got {niter}")
    rng = np.random.default_rng(seed)
    sample_size = min(n, POINTS_PER_CENTROID * nlist)
    sample = np.sort(rng.choice(n, size=sample_size, replace=False)) if sample_size < n else np.arange(n)
    points = np.ascontiguousarray(embeddings[sample], dtype=np.float32)
    kmeans = faiss.Kmeans(points.shape[1], nlist, niter=niter, seed=seed % 2**31, spherical=True, verbose=False)
    kmeans.train(points)
    centroids = _unit_rows(np.asarray(kmeans.centroids, dtype=np.float32))
    offsets, rows = _inverted_lists(assign(centroids, embeddings), nlist)
    return IVFIndex(centroids, offsets, rows, trained_rows=n, seed=seed)


def assign(centroids: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Index of the most similar centroid of each row of ``embeddings`` (ties to the lower index)."""
    out = np.empty(len(embeddings), dtype=np.int64)
    c = np.asarray(centroids, dtype=np.float32)
    for start in range(0, len(embeddings), _BLOCK_ROWS):
        block = np.asarray(embeddings[start : start + _BLOCK_ROWS], dtype=np.float32)
        out[start : start + len(block)] = np.argmax(block @ c.T, axis=1)
    return out


def from_arrays(
    centroids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, vectors: np.ndarray, trained_rows: int, seed: int
) -> IVFIndex:
    """An index from stored arrays, after checking they fit together (``ValueError`` naming the array)."""
    nlist = centroids.shape[0] if centroids.ndim == 2 else -1
    if centroids.ndim != 2 or centroids.dtype != np.float32 or nlist < 1:
        raise InputError(f"{CENTROIDS} must be a float32 nlist x d matrix, got {centroids.dtype} {centroids.shape}")
    if offsets.dtype != np.int64 or offsets.shape != (nlist + 1,):
        raise InputError(f"{OFFSETS} must be int64 of length nlist + 1 = {nlist + 1}, got {offsets.dtype} {offsets.shape}")
    if rows.dtype != np.int64 or rows.ndim != 1:
        raise InputError(f"{ROWS} must be an int64 vector, got {rows.dtype} {rows.shape}")
    if offsets[0] != 0 or offsets[-1] != rows.shape[0] or np.any(np.diff(offsets) < 0):
        raise InputError(f"{OFFSETS} must rise from 0 to the {rows.shape[0]} indexed rows")
    if vectors.shape != (rows.shape[0], centroids.shape[1]) or vectors.dtype != np.float32:
        raise InputError(f"{VECTORS} must be float32 {rows.shape[0]} x {centroids.shape[1]}, got {vectors.dtype} {vectors.shape}")
    return IVFIndex(centroids, offsets, rows, trained_rows, seed, vectors)


def check_covers(index: IVFIndex, n_rows: int) -> None:
    """Raise ``ValueError`` unless ``index.rows`` holds each of the rows 0 … n_rows-1 exactly once (O(N))."""
    if index.n_rows != n_rows:
        raise InputError(f"the index covers {index.n_rows} rows but the bank has {n_rows}")
    seen = np.zeros(n_rows, dtype=np.bool_)
    rows = np.asarray(index.rows)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise InputError(f"{ROWS} holds rows outside 0..{n_rows - 1}")
    seen[rows] = True
    if not seen.all():
        raise InputError(f"{ROWS} misses {int((~seen).sum())} bank rows (and repeats as many)")


def check_vectors(index: IVFIndex, embeddings: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``index.vectors`` is the list-ordered copy of ``embeddings`` (O(N·d))."""
    if index.vectors is None:
        raise InputError(f"the index has no {VECTORS}")
    rows = np.asarray(index.rows)
    for start in range(0, index.n_rows, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, index.n_rows)
        if not np.array_equal(index.vectors[start:stop], embeddings[rows[start:stop]]):
            raise InputError(f"{VECTORS} differs from the bank's rows in positions {start}..{stop - 1}")


def _inverted_lists(lists: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, rows) of the lists given each row's list id: rows grouped by list, ascending within each."""
    rows = np.argsort(lists, kind="stable").astype(np.int64)
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(lists, minlength=nlist), out=offsets[1:])
    return offsets, rows


def _check_dim(embeddings: np.ndarray, dim: int) -> None:
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise InputError(f"embeddings must be m x {dim} (the index's dimension), got shape {embeddings.shape}")


def _unit_rows(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return (a / np.where(norms > 0, norms, 1.0)).astype(np.float32)
