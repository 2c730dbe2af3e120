"""Synthetic banks, the competitors of the route benchmark, and the floor kernel.

Everything the benchmark compares lives here so ``test_route.py`` stays a thin pytest-benchmark driver:

* ``make_bank``: a deterministic synthetic bank shaped like real question embeddings (topic clusters of
  uneven size around a shared "anisotropy" direction, rows L2-normalised float32, C order), a capability
  matrix whose correctness depends on the cluster (so the retrieval prior means something), and a query
  that is a perturbed bank row. Its ``concentrated`` kind is a bank of one domain instead: every row is
  one shared direction plus noise, and so is the query, so the similarities sit in a narrow band and
  γ·max_{N_base}(Ŝ) admits a large share of the bank into the support set (Eq 3).
* ``COMPETITORS``: each one turns a ``Bank`` into a zero-argument callable doing one whole route
  (Eqs 2–5 of docs/design.md: similarities, support set, votes, top-K). ``smcs`` is the fused kernel as
  the router calls it (the capability bits prepared once per bank, the support set in Eq (3)'s order),
  ``smcs-unordered`` the same decision without ordering the support set, ``router`` the whole
  ``Router.route`` (Eq 6's subsets and the decision's Python lists included), ``router-lean`` the same
  with ``support=False`` (a service Route that does not ask for the support set); the others are the
  baselines it has to beat (plain numpy, faiss) and the ``floor``: one parallel pass that only sums every
  float of E, i.e. the cost of reading the bank once, which no exact route can undercut.
* ``check_route``: asserts that a competitor computed the same route as ``smcs.kernels.route`` (same
  top-K; same support set except rows within ``BOUNDARY_TOL`` of the threshold, where float32 rounding of
  a different summation order may legitimately flip the ``≥``).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

import smcs.kernels as sk

try:  # faiss is an optional baseline (the ``bench``/``test`` extras); its competitors skip without it.
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

N_MODELS = 15
"""R: models in the capability matrix."""
N_BASE = 400
"""N_base of Eq (3)."""
GAMMA = 0.95
"""γ of Eq (3)."""
TOP_K = 7
"""K of Eq (5)."""
UNKNOWN_SHARE = 0.10
"""Share of capability entries set to −1 (not evaluated)."""
ROWS_PER_CLUSTER = 50
"""Mean topic-cluster size: a bank of N rows has N // 50 cluster centres."""
CONCENTRATED_WEIGHT = 0.75
"""A ``concentrated`` bank's share of each row's squared norm along the one shared direction (the rest is
noise): cosines between rows and queries sit in a narrow band around 0.75, and the support set of Eq (3)
holds 40–55 % of the bank (42,505 rows of 1e5 × 384 for the benchmark's query; every table reports it)."""
BOUNDARY_TOL = 1e-5
"""Support rows closer than this to the threshold may differ between competitors (rounding)."""
SEED = 20240607
"""Root seed; every array of a bank is drawn from a generator seeded by (SEED, N, d, purpose, chunk)."""

# Geometry of the synthetic embeddings: row = A·g + B·c_cluster + C·noise (g, c, noise ~unit norm),
# then normalised. With these weights unrelated questions have cosine ≈ 0.25 and questions of one topic
# ≈ 0.7, roughly what sentence embedders (e5, bge) give; the query is a bank row plus QUERY_NOISE.
_GLOBAL_WEIGHT = 0.5
_CENTRE_WEIGHT = 0.7
_NOISE_WEIGHT = 0.55
_QUERY_NOISE = 0.3
_GEN_CHUNK_ROWS = 32_768


def bench_threads() -> int:
    """Threads every competitor gets: 2 (the benchmark machine's cores), fewer if numba allows fewer.

    ``SMCS_BENCH_THREADS`` overrides it.
    """
    wanted = int(os.environ.get("SMCS_BENCH_THREADS", "2"))
    return max(1, min(wanted, numba.config.NUMBA_NUM_THREADS))


def set_threads(n: int) -> dict[str, str]:
    """Give numba's pool, faiss's OpenMP pool and (through threadpoolctl, if installed) BLAS ``n`` threads.

    Returns a description of what was set, for the benchmark header. numpy's OpenBLAS (a pthreads pool)
    can only be limited through threadpoolctl or ``OPENBLAS_NUM_THREADS`` before numpy is imported; it is
    left at its default otherwise (one thread per core, i.e. 2 on the benchmark machine).
    """
    numba.set_num_threads(n)
    info = {"numba": f"{n} ({numba.config.THREADING_LAYER} layer)"}
    if faiss is not None:
        faiss.omp_set_num_threads(n)
        info["faiss"] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        env = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
        info["blas"] = f"default (threadpoolctl missing; OPENBLAS_NUM_THREADS={env})"
    else:
        threadpool_limits(n)
        info["blas"] = f"{n} (threadpoolctl)"
    return info


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class BankSize:
    """One benchmark bank: N questions of dimension d, in topic clusters of ``cluster_rows`` rows on average
    (``kind="topics"``), or all around one direction (``kind="concentrated"``, see ``make_bank``)."""

    n: int
    d: int
    cluster_rows: int = ROWS_PER_CLUSTER
    kind: str = "topics"

    @property
    def label(self) -> str:
        """``N=1e5 d=1024`` (powers of ten written as 1eX), plus ``topic-rows=R`` for non-default cluster sizes
        and ``concentrated`` for that kind."""
        topics = "" if self.cluster_rows == ROWS_PER_CLUSTER else f" topic-rows={self.cluster_rows}"
        kind = "" if self.kind == "topics" else f" {self.kind}"
        return f"N={_short(self.n)} d={self.d}{topics}{kind}"

    @property
    def id(self) -> str:
        """``N=1e5-d=1024``: the pytest parameter id."""
        return self.label.replace(" ", "-")

    @property
    def nbytes(self) -> int:
        """Bytes of the float32 embedding matrix."""
        return self.n * self.d * 4


def _short(n: int) -> str:
    exp = round(math.log10(n)) if n > 0 else 0
    return f"1e{exp}" if 10**exp == n else str(n)


DEFAULT_SIZES: tuple[BankSize, ...] = (
    *(BankSize(n, d) for n in (1_000, 10_000, 100_000) for d in (384, 1024)),
    BankSize(100_000, 384, kind="concentrated"),
)
"""Banks of the default run: topic banks of three sizes and two dimensions, and a concentrated bank."""
LARGE_SIZES: tuple[BankSize, ...] = tuple(BankSize(1_000_000, d) for d in (384, 1024))
"""Extra sizes of ``--bench-large``."""


@dataclass(frozen=True)
class Bank:
    """A synthetic bank and one query against it."""

    size: BankSize
    embeddings: np.ndarray
    """E, N×d float32, C order, rows L2-normalised."""
    capability: np.ndarray
    """M, R×N int8 in {−1, 0, 1}."""
    query: np.ndarray
    """q, d float32, normalised."""
    stored: object | None = None
    """The smcs bank these arrays were written to (``stored_bank``; its mapped file is ``embeddings``), or None."""


def _rng(size: BankSize, purpose: int, chunk: int = 0) -> np.random.Generator:
    topics = [] if size.cluster_rows == ROWS_PER_CLUSTER else [size.cluster_rows]  # the default banks stay as they were
    kind = [] if size.kind == "topics" else [sum(size.kind.encode())]
    return np.random.default_rng([SEED, size.n, size.d, *topics, *kind, purpose, chunk])


def _normalise_rows(a: np.ndarray) -> None:
    a /= np.linalg.norm(a, axis=1, keepdims=True)


def make_bank(size: BankSize) -> Bank:
    """Build the deterministic synthetic bank of ``size`` (the same arrays on every call).

    Rows are drawn in chunks, each from its own seeded generator, on a small thread pool (numpy's
    generators release the GIL), so the 4 GB of 1e6×1024 are not drawn on one core.
    """
    if size.kind == "concentrated":
        return _concentrated_bank(size)
    n, d = size.n, size.d
    rng = _rng(size, purpose=0)
    n_clusters = max(1, n // size.cluster_rows)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    centres = rng.standard_normal((n_clusters, d))
    _normalise_rows(centres)
    cluster_weights = rng.lognormal(0.0, 1.0, n_clusters)  # uneven topic sizes, like real benchmarks
    labels = rng.choice(n_clusters, size=n, p=cluster_weights / cluster_weights.sum())
    base = (_GLOBAL_WEIGHT * direction + _CENTRE_WEIGHT * centres).astype(np.float32)

    embeddings = np.empty((n, d), dtype=np.float32)
    noise_scale = np.float32(_NOISE_WEIGHT / math.sqrt(d))

    def fill(chunk: int) -> None:
        lo, hi = chunk * _GEN_CHUNK_ROWS, min(n, (chunk + 1) * _GEN_CHUNK_ROWS)
        block = _rng(size, purpose=1, chunk=chunk).standard_normal((hi - lo, d), dtype=np.float32)
        block *= noise_scale
        block += base[labels[lo:hi]]
        _normalise_rows(block)
        embeddings[lo:hi] = block

    with ThreadPoolExecutor(max_workers=bench_threads()) as pool:
        list(pool.map(fill, range(-(-n // _GEN_CHUNK_ROWS))))

    # Capability: P(model r right on cluster k) = sigmoid(skill_r − difficulty_k + affinity_rk), so models
    # have strengths by topic and neighbours in embedding space share outcomes.
    rng = _rng(size, purpose=2)
    logits = (
        rng.normal(0.5, 1.0, (N_MODELS, 1))
        - rng.normal(0.0, 1.0, (1, n_clusters))
        + rng.normal(0.0, 1.0, (N_MODELS, n_clusters))
    )
    p_right = 1.0 / (1.0 + np.exp(-logits))
    capability = (rng.random((N_MODELS, n)) < p_right[:, labels]).astype(np.int8)
    capability[rng.random((N_MODELS, n)) < UNKNOWN_SHARE] = -1

    query = perturbed_rows(embeddings, size, 1)[0]
    return Bank(size, embeddings, np.ascontiguousarray(capability), query)


def _concentrated_direction(size: BankSize) -> np.ndarray:
    direction = _rng(size, purpose=0).standard_normal(size.d)
    return direction / np.linalg.norm(direction)


def _concentrated_rows(size: BankSize, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` unit rows √w·g + √(1 − w)·z, g the bank's direction, z Gaussian noise of norm ≈ 1."""
    rows = rng.standard_normal((count, size.d), dtype=np.float32)
    rows *= np.float32(math.sqrt((1.0 - CONCENTRATED_WEIGHT) / size.d))
    rows += (math.sqrt(CONCENTRATED_WEIGHT) * _concentrated_direction(size)).astype(np.float32)
    _normalise_rows(rows)
    return rows


def _concentrated_bank(size: BankSize) -> Bank:
    """A bank of one domain: every row, and the query, drawn as ``_concentrated_rows``; model r is right on
    row i with probability sigmoid(skill_r − difficulty_i)."""
    n = size.n
    embeddings = np.empty((n, size.d), dtype=np.float32)
    for chunk, lo in enumerate(range(0, n, _GEN_CHUNK_ROWS)):
        hi = min(n, lo + _GEN_CHUNK_ROWS)
        embeddings[lo:hi] = _concentrated_rows(size, hi - lo, _rng(size, purpose=1, chunk=chunk))
    rng = _rng(size, purpose=2)
    logits = rng.normal(0.5, 1.0, (N_MODELS, 1)) - rng.normal(0.0, 1.0, (1, n))
    capability = (rng.random((N_MODELS, n)) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int8)
    capability[rng.random((N_MODELS, n)) < UNKNOWN_SHARE] = -1
    query = perturbed_rows(embeddings, size, 1)[0]
    return Bank(size, embeddings, np.ascontiguousarray(capability), query)


def perturbed_rows(embeddings: np.ndarray, size: BankSize, count: int, purpose: int = 3) -> np.ndarray:
    """``count`` queries (count x d float32, unit rows): random bank rows plus noise of relative size
    ``_QUERY_NOISE``, drawn deterministically from (size, purpose); for a concentrated bank, new rows drawn
    as its rows are."""
    if size.kind == "concentrated":
        return _concentrated_rows(size, count, _rng(size, purpose=purpose))
    rng = _rng(size, purpose=purpose)
    d = embeddings.shape[1]
    jitter = rng.standard_normal((count, d)).astype(np.float32) * np.float32(_QUERY_NOISE / math.sqrt(d))
    queries = embeddings[rng.integers(embeddings.shape[0], size=count)] + jitter
    _normalise_rows(queries)
    return queries.astype(np.float32)


# ------------------------------------------------------------------------------------ route results


class Route(NamedTuple):
    """One route's outputs: support rows (most similar first), their Ŝ, and the top-K models."""

    rows: np.ndarray
    sims: np.ndarray
    top: np.ndarray


@dataclass(frozen=True)
class Expected:
    """The reference outcome on a bank: the kernel's route plus what ``check_route`` needs to judge."""

    route: Route
    all_sims: np.ndarray
    """Ŝ for every bank row (the kernel's own scan)."""
    threshold: float
    """γ·max_{N_base}(Ŝ)."""


def expected_route(bank: Bank) -> Expected:
    """``smcs.kernels.route`` + ``top_k`` on ``bank``: the outcome every competitor must reproduce."""
    rows, sims, votes = sk.route(bank.embeddings, bank.query, bank.capability, N_BASE, GAMMA)
    all_sims = sk.similarities(bank.embeddings, bank.query)
    k = min(N_BASE, all_sims.shape[0])
    kth = np.partition(all_sims, all_sims.shape[0] - k)[all_sims.shape[0] - k]
    return Expected(Route(rows, sims, sk.top_k(votes, TOP_K)), all_sims, GAMMA * float(kth))


def check_route(name: str, expected: Expected, got: Route, tol: float = BOUNDARY_TOL) -> None:
    """Assert that ``got`` is the route of ``expected``: same top-K, same support set up to boundary rows.

    Rows in only one of the two support sets must have Ŝ within ``tol`` of the threshold; rows in both
    must have Ŝ within ``tol`` of the kernel's.
    """
    want = expected.route
    np.testing.assert_array_equal(
        np.asarray(got.top), want.top, err_msg=f"{name}: top-{TOP_K} differs from smcs"
    )
    only = np.setxor1d(want.rows, got.rows)
    far = only[np.abs(expected.all_sims[only].astype(np.float64) - expected.threshold) > tol]
    assert far.size == 0, (
        f"{name}: {far.size} support rows differ from smcs away from the threshold "
        f"{expected.threshold:.7f} (e.g. row {far[0]}, Ŝ = {expected.all_sims[far[0]]:.7f})"
    )
    common, i_want, i_got = np.intersect1d(want.rows, got.rows, return_indices=True)
    np.testing.assert_allclose(
        got.sims[i_got], want.sims[i_want], rtol=0, atol=tol, err_msg=f"{name}: Ŝ differs"
    )
    assert common.size > 0, f"{name}: empty support set"


# --------------------------------------------------------------------------------------- competitors

RouteFn = Callable[[], Route]
"""One whole route on a prepared bank."""
Builder = Callable[[Bank], Callable[[], object]]
"""Prepares a bank (untimed) and returns the timed call."""


def votes_and_top(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Eqs (4)–(5) in numpy: V_r = Σ_{i∈I} Ŝ_i·[M_ri = 1], then argtop_K (ties to the lower r)."""
    votes = (capability[:, rows] == 1) @ sims.astype(np.float64)
    return np.argsort(-votes, kind="stable")[:TOP_K]


def smcs_route(threads: int | None, ordered: bool = True) -> Callable[[Bank], RouteFn]:
    """``smcs.kernels.route`` then ``top_k`` with ``threads`` (None = the kernel's automatic choice), as the
    router calls it: with the capability bits built once per bank (``capability_bits``, untimed), and the
    support set in Eq (3)'s order unless ``ordered`` is False."""

    def build(bank: Bank) -> RouteFn:
        e, q, m = bank.embeddings, bank.query, bank.capability
        bits = sk.capability_bits(m)

        def run() -> Route:
            rows, sims, votes = sk.route(e, q, m, N_BASE, GAMMA, threads=threads, capability_bits=bits, ordered=ordered)
            return Route(rows, sims, sk.top_k(votes, TOP_K))

        return run

    return build


_BANK_DIRS: list[str] = []


@atexit.register
def _remove_bank_dirs() -> None:
    for path in _BANK_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def router_route(bank: Bank) -> Callable[[], _DecisionRoute]:
    """``Router.route`` (default policy: the paper's, threads the kernel's choice) over ``bank`` written as
    an smcs bank in a temporary directory (untimed): Eqs 2–6 and the ``RouteDecision`` with its Python
    lists, what an in-process user of smcs gets."""
    router, index = _router_of(bank)
    q = bank.query

    def run() -> _DecisionRoute:
        return _DecisionRoute(router.route(q, seed=0), index)

    return run


def router_lean_route(bank: Bank) -> Callable[[], object]:
    """``Router.route(..., support=False)``, what the service runs for a Route that does not ask for the
    support set: the decision without the support lists, the support set unsorted. Checked here (untimed)
    against the full route's referencers, votes and subsets, since it has no support set to check."""
    router, _ = _router_of(bank)
    q = bank.query
    full, lean = router.route(q, seed=0), router.route(q, seed=0, support=False)
    assert (lean.referencers, lean.votes, lean.subsets) == (full.referencers, full.votes, full.subsets), "router-lean differs"
    assert lean.support_rows == [] and full.support_rows

    def run() -> object:
        return router.route(q, seed=0, support=False)

    return run


def stored_bank(bank: Bank) -> Bank:
    """``bank`` written as an smcs bank in a temporary directory (untimed, removed at exit), with its
    embeddings read back from that bank's mapped file: what every competitor then reads, the router
    included. A route reads the memory its bank lives in, and two copies of the same rows can sit in
    pages that stream at different speeds (a ±10 % spread between an anonymous array and the mapped file,
    either way, in one process on the 2-core machine), so the router's scan is compared with a floor,
    numpy and faiss over the same pages, not over another copy."""
    from smcs.bank import Bank as SmcsBank
    from smcs.bank import ModelInfo, Question

    path = tempfile.mkdtemp(prefix="smcs-bench-bank-")
    _BANK_DIRS.append(path)
    stored = SmcsBank.create(
        os.path.join(path, "bank"),
        embeddings=bank.embeddings,
        capability=bank.capability,
        questions=[Question(id=f"q{i}", text="") for i in range(bank.embeddings.shape[0])],
        models=[ModelInfo(name=f"m{r:02d}") for r in range(bank.capability.shape[0])],
    )
    return replace(bank, embeddings=stored.embeddings, stored=stored)


def _router_of(bank: Bank) -> tuple[object, dict[str, int]]:
    """A ``Router`` (the paper's policy at the benchmark's K, N_base and γ) over ``bank``'s smcs bank
    (``stored_bank``'s, written now when ``bank`` has none), and its model indices by name."""
    from smcs.core import Policy, Router

    stored = bank.stored if bank.stored is not None else stored_bank(bank).stored
    router = Router(stored, Policy(k=TOP_K, n_base=N_BASE, gamma=GAMMA))  # type: ignore[arg-type]
    return router, {name: r for r, name in enumerate(stored.model_names)}  # type: ignore[union-attr]


class _DecisionRoute:
    """A ``RouteDecision`` read as a ``Route`` for ``check_route``: its lists become arrays only when read,
    outside the timed call."""

    def __init__(self, decision: object, index: dict[str, int]) -> None:
        self._decision = decision
        self._index = index

    @property
    def rows(self) -> np.ndarray:
        return np.asarray(self._decision.support_rows, dtype=np.int64)  # type: ignore[attr-defined]

    @property
    def sims(self) -> np.ndarray:
        return np.asarray(self._decision.support_similarities, dtype=np.float32)  # type: ignore[attr-defined]

    @property
    def top(self) -> np.ndarray:
        return np.array([self._index[name] for name in self._decision.referencers], dtype=np.int64)  # type: ignore[attr-defined]


def numpy_route(bank: Bank) -> RouteFn:
    """The best plain-numpy route: BLAS gemv, clip, ``np.partition`` for max_k, the threshold, the mask and
    the votes as one product (the support set in row order: the decision does not need another)."""
    e, q, m = bank.embeddings, bank.query, bank.capability
    n = e.shape[0]
    pos = n - min(N_BASE, n)
    buf = np.empty(n, dtype=np.float32)

    def run() -> Route:
        s = np.matmul(e, q, out=buf)
        np.maximum(s, np.float32(0.0), out=s)
        threshold = np.float64(GAMMA) * np.float64(np.partition(s, pos)[pos])
        rows = np.flatnonzero(s >= threshold)  # float64 comparison, as the kernel's
        sims = s[rows]
        return Route(rows, sims, votes_and_top(m, rows, sims))

    return run


def faiss_route(bank: Bank) -> RouteFn:
    """faiss ``IndexFlatIP`` (built here, outside the timing): ``search`` for max_k, then ``range_search``.

    faiss keeps inner products strictly greater than the radius, so the radius is the float32 just below
    γ·max_k and the result is filtered with ``≥`` in float64, as the kernel compares. Negative cosines
    are clipped to 0 like the kernel's (when max_k clips to 0 every row is in the support set).
    """
    if faiss is None:
        raise ImportError("faiss is not installed (pip install faiss-cpu)")
    e, q, m = bank.embeddings, bank.query[None, :], bank.capability
    k = min(N_BASE, e.shape[0])
    index = faiss.IndexFlatIP(e.shape[1])
    index.add(e)

    def run() -> Route:
        top_sims, _ = index.search(q, k)
        threshold = np.float64(GAMMA) * max(np.float64(top_sims[0, k - 1]), 0.0)
        radius = -math.inf
        if threshold > 0:  # the largest float32 strictly below every float32 that is ≥ threshold
            radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
        _, sims, rows = index.range_search(q, radius)
        np.maximum(sims, np.float32(0.0), out=sims)
        keep = sims >= threshold
        rows, sims = rows[keep], sims[keep]  # in row order, as numpy's
        return Route(rows, sims, votes_and_top(m, rows, sims))

    return run


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _sum_rows(embeddings: np.ndarray, start: int, stop: int) -> float:
    """Σ of rows [start, stop) of E, one row at a time.

    fastmath lets LLVM split each row's sum over d into several interleaved vector accumulators. One row
    at a time, not two interleaved: two rows read side by side ran at a fraction of the speed once the
    bank came from DRAM, which made an earlier floor slower than the kernel it bounds (measurements:
    docs/performance.md, "The route kernel"). This way it reads at least as fast as the kernel's own scan.
    """
    d = embeddings.shape[1]
    total = np.float32(0.0)
    for i in range(start, stop):
        row = np.float32(0.0)
        for j in range(d):
            row += embeddings[i, j]
        total += row
    return np.float64(total)


@njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _floor_parallel(embeddings: np.ndarray, n_chunks: int) -> float:
    n = embeddings.shape[0]
    total = 0.0
    for c in prange(n_chunks):
        total += _sum_rows(embeddings, c * n // n_chunks, (c + 1) * n // n_chunks)
    return total


@njit(cache=True, nogil=True, fastmath=True)
def _floor_serial(embeddings: np.ndarray) -> float:
    return _sum_rows(embeddings, 0, embeddings.shape[0])


def floor_pass(threads: int | None) -> Callable[[Bank], Callable[[], float]]:
    """The floor: sum every float of E once (``threads`` chunks on numba's pool; None = all its threads)."""

    def build(bank: Bank) -> Callable[[], float]:
        e = bank.embeddings
        n = threads or numba.get_num_threads()
        return (lambda: _floor_serial(e)) if n == 1 else (lambda: _floor_parallel(e, n))

    return build


def _wake_blas(bank: Bank) -> Callable[[], None]:
    """A numpy gemv on the bank: leaves numpy's OpenBLAS threads spinning, as a preceding request might."""
    e, q = bank.embeddings, bank.query

    def wake() -> None:
        e @ q

    return wake


def _wake_faiss(bank: Bank) -> Callable[[], None]:
    """A faiss route on the bank: leaves faiss's own libgomp pool (a different one from numba's) spinning."""
    run = faiss_route(bank)

    def wake() -> None:
        run()

    return wake


DISTURBANCES: dict[str, Callable[[Bank], Callable[[], None]]] = {"numpy": _wake_blas, "faiss": _wake_faiss}
"""Untimed calls run before each timed round of the ``smcs-after-*`` variants, by the pool they wake."""


@dataclass(frozen=True)
class Competitor:
    """One contestant of the route benchmark."""

    name: str
    build: Builder
    summary: str
    threads: int | None = None
    """1 for the serial variants; None = the pools' setting (``bench_threads()``)."""
    checked: bool = True
    """Whether its result must equal ``smcs.kernels.route``'s (everything but the floor)."""
    needs_faiss: bool = False
    disturbed_by: str | None = None
    """A key of ``DISTURBANCES``: run it (untimed) before every timed round, to measure pool interference."""

    @property
    def floor(self) -> str:
        """The floor this competitor is compared with: the one with the same thread count."""
        return "floor-1thread" if self.threads == 1 else "floor"


def _with_serial(
    name: str, factory: Callable[[int | None], Builder], summary: str, **kw: bool
) -> tuple[Competitor, Competitor]:
    """``name`` on the pools' threads and ``name-1thread`` on one thread."""
    return (
        Competitor(name, factory(None), summary, **kw),
        Competitor(f"{name}-1thread", factory(1), f"{summary}, 1 thread", threads=1, **kw),
    )


COMPETITORS: dict[str, Competitor] = {
    c.name: c
    for c in (
        *_with_serial("smcs", smcs_route, "fused route kernel (threads: its automatic choice)"),
        Competitor("smcs-unordered", smcs_route(None, ordered=False), "fused route kernel, support set unordered"),
        Competitor("router", router_route, "Router.route: the kernel, top-K, subsets, the decision's lists"),
        Competitor("router-lean", router_lean_route, "Router.route(support=False): the decision without the support set", checked=False),
        Competitor("numpy", numpy_route, "gemv + clip + partition + mask + gather vote"),
        Competitor("faiss-flat", faiss_route, "IndexFlatIP search(N_base) + range_search", needs_faiss=True),
        *_with_serial("floor", floor_pass, "sum of every float of E", checked=False),
        *(
            Competitor(
                f"smcs-after-{pool}",
                smcs_route(None),
                f"smcs right after a {pool} call",
                disturbed_by=pool,
                needs_faiss=pool == "faiss",
            )
            for pool in DISTURBANCES
        ),
    )
}
"""Every competitor, by name (the benchmark's parameter)."""


def checked_run(name: str, bank: Bank, expected: Expected) -> Callable[[], object]:
    """Competitor ``name`` built on ``bank`` and called once, its route checked against ``expected``
    (unless it is a floor): the timed call of a benchmark, known to do the work smcs does."""
    competitor = COMPETITORS[name]
    run = competitor.build(bank)
    result = run()
    if competitor.checked:
        check_route(name, expected, result)
    return run

