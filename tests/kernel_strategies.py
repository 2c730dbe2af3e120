"""Hypothesis strategies and comparison helpers shared by the kernel tests (tests/test_kernels_*.py).

Imported as ``from kernel_strategies import ...``: tests/ has no ``__init__.py``, so pytest's default
``prepend`` import mode puts tests/ on ``sys.path``.

Two kinds of retrieval inputs:

* *dyadic* banks: embeddings and queries are small integers scaled by a power of two, so every product
  and every partial sum of E·q is exactly representable in float32 and any summation order (BLAS,
  a vectorised fastmath loop, FMA) gives the same bits. The kernels must then equal the reference
  exactly: same support rows in the same order, same votes, same top-K.
* *normal* banks: L2-normalised Gaussian rows, where the summation order matters in the last bits; the
  comparison there is tolerance-aware (``assert_route_close``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from smcs.kernels import reference

# Keep the whole kernel suite well under a minute on two cores.
FEW = settings(max_examples=25, deadline=None)
FAST = settings(max_examples=100, deadline=None)
MEDIUM = settings(max_examples=200, deadline=None)

SIM_TOLERANCE = 1e-5
"""Largest |kernel − reference| allowed for a float32 similarity of normalised vectors (d ≤ 64)."""


@dataclass(frozen=True)
class BankCase:
    embeddings: np.ndarray  # float32 N×d
    query: np.ndarray  # float32 d
    capability: np.ndarray  # int8 R×N, entries −1/0/1
    n_base: int
    gamma: float

    @property
    def n(self) -> int:
        return self.embeddings.shape[0]


gammas = st.one_of(st.sampled_from([0.0, 0.5, 0.95, 1.0]), st.floats(0.0, 1.0))


def _capability(draw, rng: np.random.Generator | None, r: int, n: int) -> np.ndarray:
    if rng is None:
        return draw(arrays(np.int8, (r, n), elements=st.integers(-1, 1)))
    return rng.integers(-1, 2, size=(r, n)).astype(np.int8)


@st.composite
def dyadic_banks(
    draw, max_n: int = 48, max_d: int = 64, max_r: int = 8, min_n: int = 0, rng_only: bool = False
) -> BankCase:
    """Banks whose dot products are exact in float32 in any summation order (see module docstring).

    ``rng_only`` skips the hypothesis-built arrays (too slow to generate for thousands of rows).
    """
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    r = draw(st.integers(1, max_r))
    if not rng_only and draw(st.booleans()):  # hypothesis-built arrays: shrinkable, and full of repeated values (ties)
        rng = None
        e_int = draw(arrays(np.int8, (n, d), elements=st.integers(-4, 4)))
        q_int = draw(arrays(np.int8, (d,), elements=st.integers(-4, 4)))
    else:  # dense random integers from a drawn seed: fast, and varied
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        e_int = rng.integers(-4, 5, size=(n, d))
        q_int = rng.integers(-4, 5, size=d)
    # |product| ≤ 16·2^-(a+b), |sum of 64| ≤ 1024·2^-(a+b): at most 11 significant bits, exact in float32.
    e_scale = draw(st.sampled_from([2.0**-3, 2.0**-5, 2.0**-6]))
    q_scale = draw(st.sampled_from([2.0**-3, 2.0**-4]))
    embeddings = (e_int.astype(np.float64) * e_scale).astype(np.float32)
    query = (q_int.astype(np.float64) * q_scale).astype(np.float32)
    capability = _capability(draw, rng, r, n)
    n_base = draw(st.integers(1, n + 5))
    return BankCase(embeddings, query, capability, n_base, draw(gammas))


def normal_bank(seed: int, n: int, d: int, r: int, n_base: int, gamma: float) -> BankCase:
    """L2-normalised Gaussian embeddings and query (float32), random −1/0/1 capability."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, d))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    q = rng.standard_normal(d)
    q /= np.linalg.norm(q)
    m = rng.integers(-1, 2, size=(r, n)).astype(np.int8)
    return BankCase(e.astype(np.float32), q.astype(np.float32), m, n_base, gamma)


@st.composite
def normal_banks(draw, max_n: int = 300, max_d: int = 64, max_r: int = 8) -> BankCase:
    n = draw(st.integers(0, max_n))
    return normal_bank(
        seed=draw(st.integers(0, 2**32 - 1)),
        n=n,
        d=draw(st.integers(1, max_d)),
        r=draw(st.integers(1, max_r)),
        n_base=draw(st.integers(1, n + 5)),
        gamma=draw(gammas),
    )


@st.composite
def nonneg_sims(draw, max_n: int = 64) -> np.ndarray:
    """Non-negative finite float32 similarity vectors: spread over [0, 1], packed into one histogram bin,
    full of exact ties, or far above 1 (the wrapper accepts any finite non-negative value)."""
    n = draw(st.integers(0, max_n))
    kind = draw(st.sampled_from(["unit", "one_bin", "ties", "any"]))
    if kind == "unit":
        elems = st.floats(0.0, 1.0, width=32)
    elif kind == "one_bin":  # 0.5 + k·2^-20: many distinct values inside one 1/4096-wide bin
        elems = st.integers(0, 200).map(lambda k: 0.5 + k * 2.0**-20)
    elif kind == "ties":
        elems = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
    else:
        elems = st.floats(0.0, float(np.finfo(np.float32).max), width=32)
    return draw(arrays(np.float32, (n,), elements=elems))


def vote_vectors(min_size: int = 1, max_size: int = 12, ties: bool = True):
    """Finite non-negative float64 votes; with ``ties`` half the examples are small integers (many ties)."""
    # Zero or ≥ 1e-6 (votes are sums of similarities): a spread below ~1e-154 underflows the variance,
    # a known limitation documented by an xfail test in test_kernels_sampling.py.
    elems = st.one_of(st.just(0.0), st.floats(1e-6, 1e4))
    plain = arrays(np.float64, st.integers(min_size, max_size), elements=elems)
    if not ties:
        return plain
    tied = arrays(np.float64, st.integers(min_size, max_size), elements=st.integers(0, 3).map(float))
    return st.one_of(plain, tied)


@st.composite
def distributions(draw, min_k: int = 1, max_k: int = 9) -> np.ndarray:
    """Probability vectors (non-negative, positive sum), some with zero entries."""
    k = draw(st.integers(min_k, max_k))
    w = draw(arrays(np.float64, (k,), elements=st.one_of(st.just(0.0), st.floats(1e-6, 1.0))))
    if w.sum() == 0:
        w[draw(st.integers(0, k - 1))] = 1.0
    return w / w.sum()


@st.composite
def uniform_matrices(draw, n: int, keep: int) -> np.ndarray:
    """n × keep uniforms in [0, 1), including the endpoints' neighbourhoods."""
    elems = st.one_of(
        st.floats(0.0, 1.0, exclude_max=True),
        st.sampled_from([0.0, 0.5, float(np.nextafter(1.0, 0.0))]),
    )
    return draw(arrays(np.float64, (n, keep), elements=elems))


def assert_support_order(rows: np.ndarray, sims: np.ndarray) -> None:
    """Support rows are distinct, by similarity descending, equal similarities by ascending row."""
    assert rows.dtype == np.int64 and sims.dtype == np.float32
    assert rows.shape == sims.shape
    assert len(set(rows.tolist())) == rows.size
    for a in range(rows.size - 1):
        assert sims[a] > sims[a + 1] or (sims[a] == sims[a + 1] and rows[a] < rows[a + 1]), (a, rows, sims)


def assert_route_equal(got: tuple, want: tuple) -> None:
    """Bit-for-bit equality of two (rows, sims, votes) triples."""
    rows, sims, votes = got
    w_rows, w_sims, w_votes = want
    assert rows.dtype == np.int64 and sims.dtype == np.float32 and votes.dtype == np.float64
    np.testing.assert_array_equal(rows, w_rows)
    np.testing.assert_array_equal(sims, np.asarray(w_sims, dtype=np.float32))
    np.testing.assert_array_equal(votes, w_votes)


def assert_route_close(case: BankCase, got: tuple) -> None:
    """Tolerance-aware comparison with the reference for inputs whose float sums are order-dependent.

    The support sets must agree except on rows whose reference similarity lies within ``SIM_TOLERANCE`` of
    the reference threshold; the kernel's own order must be the spec's order on its own similarities; each
    vote may differ by at most the similarity error of its support rows plus the similarity of every row
    on which the two support sets differ.
    """
    rows, sims, votes = got
    ref_s = reference.similarities(case.embeddings, case.query)
    ref_rows, _, ref_votes = reference.route(
        case.embeddings, case.query, case.capability, case.n_base, case.gamma
    )
    assert_support_order(rows, sims)
    np.testing.assert_allclose(sims, ref_s[rows], rtol=0, atol=SIM_TOLERANCE)
    assert votes.shape == (case.capability.shape[0],)
    if case.n == 0:
        assert rows.size == 0 and not votes.any()
        return
    threshold = case.gamma * reference.kth_largest(ref_s, case.n_base)
    near = set(np.flatnonzero(np.abs(ref_s.astype(np.float64) - threshold) <= SIM_TOLERANCE).tolist())
    differ = set(rows.tolist()) ^ set(ref_rows.tolist())
    assert differ <= near, (sorted(differ - near), threshold)
    slack = SIM_TOLERANCE * max(rows.size, ref_rows.size) + sum(float(ref_s[i]) + SIM_TOLERANCE for i in differ)
    assert np.all(np.abs(votes - ref_votes) <= slack + 1e-9), (votes, ref_votes, slack)
