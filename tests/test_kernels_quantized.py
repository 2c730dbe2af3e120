"""The int8 route kernel (``smcs.kernels.quantized``): quantisation, its error bounds, and exact decisions.

``route_quantized`` claims more than an approximation: the same rows, order, float32 similarities and
votes as ``route``, bit for bit. The tests hold it to that on random, clustered and adversarial banks, and
check separately that the bounds it prunes with really bound (both the exact-arithmetic bound (B1),
verified in rational arithmetic, and the float32-aware bounds (B3) against the exact kernel's output).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_strategies import FAST, MEDIUM, BankCase, assert_route_equal, dyadic_banks, gammas, normal_banks

from smcs import kernels
from smcs.kernels import quantized, reference
from smcs.synthetic import clustered_bank, queries_near

THREADS = (1, 2, None)

# --- adversarial banks ----------------------------------------------------------------------------------------

ROW_KINDS = ("normal", "one_hot", "constant", "zeros", "ties", "exact", "tiny", "huge", "spiky", "duplicate", "negated")


def _row(kind: str, d: int, rng: np.random.Generator, previous: np.ndarray | None) -> np.ndarray:
    """One float32 row of ``kind``: the shapes that stress a per-row int8 quantiser."""
    if kind == "one_hot":  # everything in one code; the residual is the rounding of 1/127 only
        row = np.zeros(d)
        row[rng.integers(d)] = rng.choice([-1.0, 1.0])
    elif kind == "constant":  # every entry at the maximum: codes all ±127
        row = np.full(d, rng.choice([-1.0, 1.0]) / np.sqrt(d))
    elif kind == "zeros":  # s = 0: no codes at all, residual = the row itself (0)
        row = np.zeros(d)
    elif kind == "ties":  # entries at exact half-steps of the scale: rint's ties (to even)
        half_steps = rng.integers(-254, 255, d).astype(np.float64)
        half_steps[0] = 254.0
        row = half_steps * 2.0**-10  # max 254·2^-10 → s = 2^-9 exactly, e/s = half_steps/2
    elif kind == "exact":  # e = s·ẽ exactly (r = 0): only the float32 rounding slack of (B2) separates
        # the exact kernel's Ŝ from the approximation, since s (12 significant bits) times a code is exact
        # but s·s_q·ẽ_j·q̃_j is not representable in float32.
        codes = rng.integers(-127, 128, d).astype(np.float64)
        codes[rng.integers(d)] = rng.choice([-127.0, 127.0])
        row = codes * (float(rng.integers(2**11, 2**12)) * 2.0 ** -int(rng.integers(16, 22)))
    elif kind == "tiny":  # near the bottom of float32 (subnormal products in the float32 kernel)
        row = rng.standard_normal(d) * 1e-38
    elif kind == "huge":  # large enough for float32 dot products to overflow: must be re-scored anyway
        row = rng.standard_normal(d) * 1e19
    elif kind == "spiky":  # one large entry among small ones: big scale, most codes 0, large residual
        row = rng.standard_normal(d) * 1e-3
        row[rng.integers(d)] = 1.0
    elif kind == "duplicate" and previous is not None:  # exact ties between rows
        return previous.copy()
    elif kind == "negated" and previous is not None:  # negative cosines, clipped to 0 by Eq (2)
        return (-previous).astype(np.float32)
    else:
        row = rng.standard_normal(d)
        row /= max(np.linalg.norm(row), 1e-30)
    return row.astype(np.float32)


@st.composite
def adversarial_banks(draw, max_n: int = 60, max_d: int = 48, huge: bool = True) -> BankCase:
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    r = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = [k for k in ROW_KINDS if huge or k != "huge"]
    rows: list[np.ndarray] = []
    for _ in range(n):
        rows.append(_row(str(rng.choice(kinds)), d, rng, rows[-1] if rows else None))
    embeddings = np.stack(rows).astype(np.float32)
    query_kind = draw(st.sampled_from(("normal", "row", "one_hot", "constant", "ties", "exact", "spiky")))
    if query_kind == "row":  # the query is a bank row: its similarity is the largest possible
        query = embeddings[rng.integers(n)].copy()
    else:
        query = _row(query_kind, d, rng, None)
    if not np.any(query):
        query[0] = 1.0
    capability = rng.integers(-1, 2, size=(r, n)).astype(np.int8)
    return BankCase(embeddings, query, capability, draw(st.integers(1, n + 3)), draw(gammas))


def _clustered_case(n: int, d: int, r: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, capability, 6 queries near bank rows)."""
    embeddings, capability, _ = clustered_bank(n, d, r, seed=seed)
    return embeddings, capability, queries_near(embeddings, 6, seed=seed + 1)


def assert_same_as_route(case: BankCase, threads: int | None = None) -> int:
    """route_quantized == route bit for bit (for every thread count of route); returns the re-scored rows."""
    qb = kernels.quantize_rows(case.embeddings)
    *got, rescored = kernels.route_quantized_stats(
        qb, case.embeddings, case.query, case.capability, case.n_base, case.gamma, threads=threads
    )
    for route_threads in (1, 2):
        want = kernels.route(case.embeddings, case.query, case.capability, case.n_base, case.gamma, route_threads)
        assert_route_equal(tuple(got), want)
    assert 0 <= rescored <= case.n
    return rescored


# --- exact decisions ---------------------------------------------------------------------------------------------


@FAST
@given(dyadic_banks(max_n=40, max_d=32))
def test_dyadic_banks_give_routes_exact_decision(case):
    for threads in (1, 2):
        assert_same_as_route(case, threads)


@MEDIUM
@given(normal_banks(max_n=300, max_d=64))
def test_normal_banks_give_routes_exact_decision(case):
    assert_same_as_route(case, threads=1)
    assert_same_as_route(case, threads=2)


@MEDIUM
@given(adversarial_banks())
def test_adversarial_banks_give_routes_exact_decision(case):
    assert_same_as_route(case, threads=1)
    assert_same_as_route(case, threads=3)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize(
    ("n_base", "gamma"),
    [(400, 0.95), (1, 0.95), (1, 1.0), (50, 1.0), (50, 0.0), (5000, 0.95), (20, 0.5), (3, 0.99)],
)
def test_clustered_banks_give_routes_exact_decision(threads, n_base, gamma):
    embeddings, capability, queries = _clustered_case(4000, 48, 7, seed=5)
    for query in queries:
        assert_same_as_route(BankCase(embeddings, query, capability, n_base, gamma), threads)


@pytest.mark.parametrize("threads", (1, 2))
def test_the_candidate_path_is_taken_and_prunes_most_rows(threads):
    # Without this the equality tests could pass by always falling back to the exact kernel.
    embeddings, capability, queries = _clustered_case(20000, 64, 5, seed=11)
    for query in queries:
        rescored = assert_same_as_route(BankCase(embeddings, query, capability, 100, 0.95), threads)
        assert rescored < 0.05 * len(embeddings)


@pytest.mark.parametrize("threads", (1, 2))
def test_many_candidates_at_the_embedders_dimension(threads):
    # d = 383 (odd, near a real embedder's 384: the float32 dot's vector remainder is exercised) and
    # thousands of candidates, re-scored in parallel chunks when threads > 1.
    embeddings, capability, queries = _clustered_case(20000, 383, 5, seed=11)
    rescored = [assert_same_as_route(BankCase(embeddings, q, capability, 2000, 0.95), threads) for q in queries]
    assert any(2048 <= r < 0.25 * len(embeddings) for r in rescored), rescored


def test_fallback_to_the_exact_kernel_when_most_rows_are_candidates():
    # γ = 0 keeps every row in I (Ŝ ≥ 0), so every row is a candidate and the exact kernel runs.
    embeddings, capability, queries = _clustered_case(3000, 32, 4, seed=2)
    rescored = assert_same_as_route(BankCase(embeddings, queries[0], capability, 100, 0.0))
    assert rescored == len(embeddings)


def test_duplicate_rows_tie_to_the_lower_row():
    embeddings, capability, queries = _clustered_case(2000, 32, 4, seed=8)
    embeddings = np.concatenate([embeddings, embeddings, embeddings[:500]])  # every row two or three times
    capability = np.concatenate([capability, capability, capability[:, :500]], axis=1)
    for query in queries:
        for n_base in (1, 2, 7, 30):
            assert_same_as_route(BankCase(embeddings, query, capability, n_base, 0.95))


def test_negative_cosines_clip_to_zero_exactly():
    # Query opposite to a cluster: most similarities clip to 0, ties everywhere at the bottom.
    embeddings, capability, queries = _clustered_case(3000, 32, 4, seed=4)
    for n_base, gamma in ((10, 0.95), (2900, 0.95), (3000, 0.5), (1, 1.0)):
        assert_same_as_route(BankCase(embeddings, -queries[0], capability, n_base, gamma))


def test_empty_bank():
    qb = kernels.quantize_rows(np.zeros((0, 5), np.float32))
    assert qb.codes.shape == (0, 5) and qb.scales.shape == (0,)
    empty, capability = np.zeros((0, 5), np.float32), np.zeros((3, 0), np.int8)
    rows, sims, votes = kernels.route_quantized(qb, empty, np.ones(5), capability, 4, 0.9)
    assert rows.size == 0 and sims.size == 0 and not votes.any() and votes.shape == (3,)


def test_hand_bank_matches_the_hand_computed_route():
    # retrieval's hand example (tests/test_kernels_retrieval.py): Ŝ = (0.5, 1.0, 0.0, 0.5).
    e = np.array([[0.5, 0.5, 0.5, -0.5], [0.5, 0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, 0.5], [1.0, 0, 0, 0]], np.float32)
    m = np.array([[1, 0, 1, 1], [0, 1, -1, -1], [1, 1, 1, -1]], dtype=np.int8)
    rows, sims, votes = kernels.route_quantized(kernels.quantize_rows(e), e, np.full(4, 0.5), m, 2, 0.95)
    np.testing.assert_array_equal(rows, [1, 0, 3])
    np.testing.assert_array_equal(sims, np.array([1.0, 0.5, 0.5], np.float32))
    np.testing.assert_array_equal(votes, [1.0, 1.0, 1.5])


# --- the bounds ----------------------------------------------------------------------------------------------------


def _fractions(a: np.ndarray) -> list[Fraction]:
    return [Fraction(float(x)) for x in a.astype(np.float64)]


@FAST
@given(adversarial_banks(max_n=12, max_d=24, huge=False))
def test_quantisation_bound_holds_in_exact_arithmetic(case):
    """(B1) in rationals: stored r_i, c_i, ‖q‖ bound the exact norms, and |e·q − s s_q ẽ·q̃| ≤ r‖q‖ + c r_q."""
    qb = kernels.quantize_rows(case.embeddings)
    q16, s_q, r_q, c_q, q_norm = quantized._quantize_query(case.query)
    q = _fractions(case.query)
    q_codes = [int(v) for v in q16]
    assert Fraction(q_norm) ** 2 >= sum(v * v for v in q)
    assert Fraction(r_q) ** 2 >= sum((qj - Fraction(s_q) * cj) ** 2 for qj, cj in zip(q, q_codes))
    assert Fraction(c_q) ** 2 >= sum((Fraction(s_q) * cj) ** 2 for cj in q_codes)
    for i in range(case.n):
        e = _fractions(case.embeddings[i])
        codes = [int(v) for v in qb.codes[i]]
        s, r, c = (Fraction(float(x)) for x in (qb.scales[i], qb.residual_norms[i], qb.code_norms[i]))
        assert r**2 >= sum((ej - s * cj) ** 2 for ej, cj in zip(e, codes))
        assert c**2 >= sum((s * cj) ** 2 for cj in codes)
        exact = sum(ej * qj for ej, qj in zip(e, q))
        approx = s * Fraction(s_q) * sum(a * b for a, b in zip(codes, q_codes))
        assert abs(exact - approx) <= r * Fraction(q_norm) + c * Fraction(r_q), i


@pytest.mark.parametrize("d", [1, 7, 15, 16, 17, 33, 100, 384, 1024])
@pytest.mark.parametrize("start, stop", [(0, 0), (0, 1), (0, 3), (0, 41), (5, 38), (3, 4)])
def test_int_dots_are_the_exact_integer_dot_products(d, start, stop):
    """The bound pass's ẽ_i·q̃ (int8 codes times int16 query codes, in vector lanes four rows at a time)
    equal numpy's int64 products on every row of [start, stop) and leave the rest of ``out`` alone, for
    dimensions with and without a tail after the last whole 16, blocks of any length, and codes at ±127."""
    rng = np.random.default_rng(d * 100 + stop)
    codes = rng.integers(-127, 128, size=(41, d), dtype=np.int8)
    codes[0] = 127
    codes[1] = -127
    q16 = rng.integers(-127, 128, size=d).astype(np.int16)
    q16[: d // 2] = -127  # with rows 0 and 1: the largest magnitudes the codes can reach, both signs
    out = np.full(stop - start + 2, -1, dtype=np.int32)
    quantized._int_dots(codes, q16, start, stop, out)
    expected = codes[start:stop].astype(np.int64) @ q16.astype(np.int64)
    np.testing.assert_array_equal(out[: stop - start], expected)
    assert np.all(out[stop - start :] == -1)


def _bounds(qb: kernels.QuantizedBank, query: np.ndarray, chunks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bound pass for one query (a batch of one): its (lo, hi, histogram of lo)."""
    lo, hi, hists = quantized._bounds_many(*qb, query[None, :], chunks)
    return lo[0], hi[0], hists[0]


@MEDIUM
@given(st.one_of(adversarial_banks(max_n=80), normal_banks(max_n=200)), st.sampled_from([1, 2, 5]))
def test_bounds_enclose_the_exact_kernels_similarities(case, chunks):
    """(B3): lo_i ≤ Ŝ_i ≤ hi_i for the float32 Ŝ the exact kernel returns, on every row, any chunking."""
    if case.n == 0:
        return
    qb = kernels.quantize_rows(case.embeddings)
    lo, hi, hist = _bounds(qb, case.query, chunks)
    exact = kernels.similarities(case.embeddings, case.query)
    assert np.all(lo <= exact), np.flatnonzero(lo > exact)
    assert np.all(exact <= hi), np.flatnonzero(exact > hi)
    assert np.all(lo >= 0) and hist.sum() == case.n
    lo1, hi1, hist1 = _bounds(qb, case.query, 1)
    np.testing.assert_array_equal(lo, lo1)
    np.testing.assert_array_equal(hi, hi1)
    np.testing.assert_array_equal(hist, hist1)


def test_bounds_are_tight_enough_to_prune_on_normalised_rows():
    # d = 384 unit rows: ε ≈ (r_i + r_q) is a few 1e-2 at most; the interval must not be vacuous.
    embeddings, _, queries = _clustered_case(2000, 384, 2, seed=3)
    qb = kernels.quantize_rows(embeddings)
    lo, hi, _ = _bounds(qb, queries[0], 1)
    assert np.max(hi - lo) < 0.05


def test_rows_that_could_overflow_float32_are_always_candidates():
    rng = np.random.default_rng(0)
    e = (rng.standard_normal((50, 16)) * 1e19).astype(np.float32)
    e[:25] /= np.float32(1e19)  # half ordinary, half with products beyond float32's range
    q = (rng.standard_normal(16) * 1e19).astype(np.float32)
    lo, hi, _ = _bounds(kernels.quantize_rows(e), q, 1)
    assert np.all(np.isinf(hi[25:])) and np.all(lo[25:] == 0)
    assert np.all(np.isfinite(hi[:25]))


# --- quantize_rows against its numpy twin -------------------------------------------------------------------------


def assert_quantisation_matches_reference(e: np.ndarray, threads: int | None = None) -> None:
    got = kernels.quantize_rows(e, threads=threads)
    codes, scales, resid, cnorms = reference.quantize_rows(e)
    assert got.codes.dtype == np.int8 and got.codes.flags.c_contiguous
    assert all(a.dtype == np.float32 for a in (got.scales, got.residual_norms, got.code_norms))
    np.testing.assert_array_equal(got.codes, codes)
    np.testing.assert_array_equal(got.scales, scales)
    np.testing.assert_array_equal(got.code_norms, cnorms)  # an exact integer sum: the same bits
    # The residual's float64 sum runs in another order; after inflation and rounding up they differ by
    # at most one float32 ulp, and both bound the exact norm (test_quantisation_bound_holds_...).
    np.testing.assert_allclose(got.residual_norms, resid, rtol=2**-22, atol=0)


@FAST
@given(st.one_of(adversarial_banks(), normal_banks(max_n=100)))
def test_quantize_rows_matches_reference(case):
    assert_quantisation_matches_reference(case.embeddings, threads=1)
    assert_quantisation_matches_reference(case.embeddings, threads=2)


@pytest.mark.parametrize("threads", THREADS)
def test_quantize_rows_matches_reference_on_a_clustered_bank(threads):
    embeddings, _, _ = clustered_bank(30000, 40, 2, seed=1)  # 4.8 MB: the parallel kernel under None
    assert_quantisation_matches_reference(embeddings, threads)


def test_quantisation_by_hand():
    # max |e| = 127·2^-7 → s = 2^-7 exactly, so e/s is exact: 127, −63.5 (a tie → even −64),
    # −62.5 (→ −62), 0, 1, 0.49 (→ 0); the residual is (0.5, 0.5, 0.49)·2^-7 at the last three codes.
    e = (np.array([[127.0, -63.5, -62.5, 0.0, 1.0, 0.49]]) * 2.0**-7).astype(np.float32)
    qb = kernels.quantize_rows(e)
    assert qb.scales[0] == np.float32(2.0**-7)
    np.testing.assert_array_equal(qb.codes[0], [127, -64, -62, 0, 1, 0])
    residual = np.sqrt(2 * 2.0**-16 + float(e[0, 5]) ** 2)
    assert residual <= qb.residual_norms[0] <= residual * (1 + 2**-20)
    one_hot = kernels.quantize_rows(np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(one_hot.codes, 127 * np.eye(3, dtype=np.int8))
    assert np.all(one_hot.residual_norms < 1e-7) and np.all(np.abs(one_hot.code_norms - 1) < 1e-6)
    zero = kernels.quantize_rows(np.zeros((1, 4), np.float32))
    assert zero.scales[0] == 0 and not zero.codes.any() and zero.residual_norms[0] == 0 and zero.code_norms[0] == 0


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        (np.zeros(5, np.float32), "embeddings"),
        (np.full((2, 3), np.nan, np.float32), "embeddings contains NaN"),
        (np.array([[1.0, np.inf]], np.float32), "embeddings contains NaN"),
        (np.zeros((2, 2), np.complex64), "embeddings"),
        (np.zeros((1, quantized.MAX_DIM + 1), np.float32), "embeddings has dimension"),
    ],
)
def test_quantize_rows_rejects_bad_input(embeddings, message):
    with pytest.raises(ValueError, match=message):
        kernels.quantize_rows(embeddings)


def test_quantize_rows_rejects_non_finite_on_the_parallel_path():
    e = np.ones((5000, 300), np.float32)
    e[4321, 17] = np.nan
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        kernels.quantize_rows(e, threads=2)


def test_quantize_rows_rejects_bad_threads():
    with pytest.raises(ValueError, match="threads"):
        kernels.quantize_rows(np.ones((2, 2), np.float32), threads=0)


def _good():
    e = np.eye(4, 6, dtype=np.float32)
    return kernels.quantize_rows(e), e, np.ones(6, np.float32), np.zeros((2, 4), np.int8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda qb, e, q, m: ((qb.codes, qb.scales), e, q, m, 2, 0.9), "quantized must be"),
        (lambda qb, e, q, m: (None, e, q, m, 2, 0.9), "quantized must be"),
        (lambda qb, e, q, m: (qb._replace(codes=qb.codes[:3]), e, q, m, 2, 0.9), "quantized codes"),
        (lambda qb, e, q, m: (qb._replace(codes=qb.codes.astype(np.int16)), e, q, m, 2, 0.9), "quantized codes"),
        (lambda qb, e, q, m: (qb._replace(scales=qb.scales.astype(np.float64)), e, q, m, 2, 0.9), "quantized scales"),
        (lambda qb, e, q, m: (qb._replace(residual_norms=qb.residual_norms[:2]), e, q, m, 2, 0.9), "residual_norms"),
        (lambda qb, e, q, m: (qb._replace(code_norms=qb.code_norms[:, None]), e, q, m, 2, 0.9), "code_norms"),
        (lambda qb, e, q, m: (qb, e, q[:5], m, 2, 0.9), "query has dimension 5"),
        (lambda qb, e, q, m: (qb, e, q * np.nan, m, 2, 0.9), "query contains NaN"),
        (lambda qb, e, q, m: (qb, e, q, m[:, :3], 2, 0.9), "capability"),
        (lambda qb, e, q, m: (qb, e[0], q, m, 2, 0.9), "embeddings"),
        (lambda qb, e, q, m: (qb, e, q, m, 0, 0.9), "n_base"),
        (lambda qb, e, q, m: (qb, e, q, m, 2, 1.5), "gamma"),
    ],
)
def test_route_quantized_rejects_bad_input_naming_it(change, message):
    with pytest.raises(ValueError, match=message):
        kernels.route_quantized(*change(*_good()))


def test_route_quantized_rejects_bad_threads():
    qb, e, q, m = _good()
    with pytest.raises(ValueError, match="threads"):
        kernels.route_quantized(qb, e, q, m, 2, 0.9, threads=0)
