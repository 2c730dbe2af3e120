"""Large support sets (|I| a large share of N): the route kernels against ``smcs.kernels.reference``.

A bank of one domain packs its similarities into a narrow band, and γ·max_{N_base}(Ŝ) then admits a large
share of it into Eq (3)'s support set. There the kernels take their large-|I| paths: the branch-free
threshold pass, the radix sort of the support set (``retrieval._stable_order``), and the vote of Eq (4)
streamed through the question-major bits (``kernels.capability_bits``) in row order, which gives the same bits
as the reference's sum only because every partial sum is exact (``retrieval._exact_in_any_order``; the
theorem is proved below). Each test compares every entry point (``route``, ``route_many``,
``route_rows``, ``route_quantized``; 1 and 2 threads; with and without the bits; ordered and not; with the
known weights Σ Ŝ·[M known] summed beside the votes and without) with the reference, bit for bit.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from kernel_strategies import FAST, FEW, MEDIUM, BankCase, assert_route_equal, dyadic_banks, gammas, normal_banks

from smcs import kernels
from smcs.kernels import reference, retrieval


def concentrated_bank(seed: int, n: int = 3000, d: int = 32, r: int = 15, n_base: int = 400, gamma: float = 0.95) -> BankCase:
    """A dyadic bank of one domain: every row and the query are one shared integer direction plus small integer
    noise, scaled by 2^-5, so every Ŝ is exact in float32 in any summation order (the reference's BLAS sum
    included) and the similarities sit in a narrow band: the support set holds a large share of the rows."""
    rng = np.random.default_rng(seed)
    direction = rng.integers(1, 5, size=d) * rng.choice([-1, 1], size=d)
    rows = direction * 4 + rng.integers(-2, 3, size=(n, d))
    query = direction * 4 + rng.integers(-2, 3, size=d)
    capability = rng.integers(-1, 2, size=(r, n)).astype(np.int8)
    return BankCase((rows * 2.0**-5).astype(np.float32), (query * 2.0**-5).astype(np.float32), capability, n_base, gamma)


def in_row_order(route: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (rows, sims, votes) triple with its support set put in ascending row order."""
    rows, sims, votes = route
    order = np.argsort(rows, kind="stable")
    return rows[order], sims[order], votes


def assert_every_entry_point_is_the_reference(case: BankCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """route, route_many, route_rows (all rows, in a shuffled order, and through a reordered copy with labels)
    and route_quantized equal the reference, ordered or not, with or without the bits, on 1 and 2 threads."""
    e, q, m, n_base, gamma = case.embeddings, case.query, case.capability, case.n_base, case.gamma
    want = reference.route(e, q, m, n_base, gamma)
    unordered = in_row_order(want)
    known = reference.known_weights(m, want[0], want[1])
    bits = kernels.capability_bits(m)
    shuffled = np.random.default_rng(case.n).permutation(case.n).astype(np.int64)
    copy = np.ascontiguousarray(e[shuffled])  # copy row i is bank row shuffled[i]
    positions = np.argsort(shuffled)[np.arange(case.n)]
    quantized = kernels.quantize_rows(e)
    for threads, extra in itertools.product((1, 2), ({}, {"capability_bits": bits})):
        assert_route_equal(kernels.route(e, q, m, n_base, gamma, threads, **extra), want)
        assert_route_equal(kernels.route_many(e, np.stack([q, q]), m, [n_base] * 2, [gamma] * 2, threads, **extra)[1], want)
        assert_route_equal(kernels.route_rows(e, shuffled, q, m, n_base, gamma, threads, **extra), want)
        assert_route_equal(kernels.route_rows(copy, positions, q, m, n_base, gamma, threads, shuffled, **extra), want)
        assert_route_equal(kernels.route_quantized(quantized, e, q, m, n_base, gamma, threads, **extra), want)
        got = kernels.route(e, q, m, n_base, gamma, threads, ordered=False, **extra)
        assert_route_equal(got, unordered)
        assert_route_equal(kernels.route_many(e, q[None, :], m, [n_base], [gamma], threads, ordered=False, **extra)[0], unordered)
        assert_route_equal(kernels.route_quantized(quantized, e, q, m, n_base, gamma, threads, ordered=False, **extra), unordered)
        assert_route_equal(in_row_order(kernels.route_rows(e, shuffled, q, m, n_base, gamma, threads, ordered=False, **extra)), unordered)
        for ordered in (True, False):  # the known weights, summed beside the votes: the reference's bits too
            options = {"ordered": ordered, "return_known": True, **extra}
            for got in (
                kernels.route(e, q, m, n_base, gamma, threads, **options),
                kernels.route_many(e, np.stack([q, q]), m, [n_base] * 2, [gamma] * 2, threads, **options)[1],
                kernels.route_rows(copy, positions, q, m, n_base, gamma, threads, shuffled, **options),
                kernels.route_quantized(quantized, e, q, m, n_base, gamma, threads, **options),
            ):
                assert_route_equal(got[:3] if ordered else in_row_order(got[:3]), want if ordered else unordered)
                np.testing.assert_array_equal(got[3], known)
    return want


# --- concentrated banks: |I| a large share of N -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concentrated_bank_routes_as_the_reference(seed):
    case = concentrated_bank(seed)
    rows, _, votes = assert_every_entry_point_is_the_reference(case)
    assert rows.size >= case.n // 4  # the support set is a large share of the bank (|I| ≫ N_base)
    for k in (1, 7, votes.shape[0]):  # K = R: the whole ranking
        np.testing.assert_array_equal(kernels.top_k(votes, k), reference.top_k(votes, k))


@pytest.mark.parametrize(("n_base", "gamma"), [(3000, 0.95), (10_000, 1.0), (10_000, 0.0), (1, 0.5), (400, 0.0)])
def test_concentrated_bank_at_the_extremes_of_eq3(n_base, gamma):
    """N_base = N and N_base > N (the threshold from the smallest Ŝ), γ = 0 (every row), γ = 1."""
    case = concentrated_bank(7, n_base=n_base, gamma=gamma)
    rows, _, _ = assert_every_entry_point_is_the_reference(case)
    if gamma == 0.0 or n_base >= case.n:
        assert rows.size >= case.n * (0.99 if gamma < 1.0 else 0.0)


def test_every_row_tied_every_vote_tied():
    """Identical rows: every Ŝ ties, so the support set is every row in row order; a capability of identical
    rows ties every vote, so top-K (K = R included) is the identity order and Eq (6)'s drop distribution has
    zero variance (uniform)."""
    n, r = 5000, 12
    embeddings = np.tile(np.array([[0.5, 0.25, -0.25, 0.5]], np.float32), (n, 1))
    capability = np.tile(np.random.default_rng(0).integers(-1, 2, size=(1, n)).astype(np.int8), (r, 1))
    case = BankCase(embeddings, np.array([0.5, 0.5, 0.5, 0.5], np.float32), capability, 400, 0.95)
    rows, sims, votes = assert_every_entry_point_is_the_reference(case)
    np.testing.assert_array_equal(rows, np.arange(n))
    assert np.all(sims == sims[0]) and np.all(votes == votes[0])
    np.testing.assert_array_equal(kernels.top_k(votes, r), np.arange(r))
    np.testing.assert_array_equal(kernels.drop_distribution(votes[:7]), reference.drop_distribution(votes[:7]))


def test_zero_similarities_everywhere():
    """A query orthogonal to (or opposite) every row: all Ŝ clip to 0, the threshold is 0, every row is in
    the support set and every vote is 0."""
    n = 3000
    embeddings = np.zeros((n, 8), np.float32)
    embeddings[:, 1] = np.where(np.arange(n) % 2, 1.0, -1.0)
    case = BankCase(embeddings, np.array([1.0] + [0.0] * 7, np.float32), np.ones((4, n), np.int8), 10, 0.95)
    rows, sims, votes = assert_every_entry_point_is_the_reference(case)
    np.testing.assert_array_equal(rows, np.arange(n))
    assert not sims.any() and not votes.any()


@pytest.mark.parametrize("threads", [1, 2])
def test_empty_support_sets(threads):
    """An empty bank, and no rows to scan: an empty support set and zero votes, ordered or not, with bits."""
    m = np.empty((3, 0), np.int8)
    for ordered in (True, False):
        rows, sims, votes, known = kernels.route(
            np.empty((0, 4), np.float32), np.ones(4), m, 400, 0.95, threads, capability_bits=kernels.capability_bits(m),
            ordered=ordered, return_known=True,
        )  # fmt: skip
        assert rows.size == 0 and sims.size == 0 and votes.shape == known.shape == (3,) and not votes.any() and not known.any()
    case = concentrated_bank(3, n=50)
    rows, sims, votes = kernels.route_rows(
        case.embeddings, np.empty(0, np.int64), case.query, case.capability, 4, 0.95, threads,
        capability_bits=kernels.capability_bits(case.capability), ordered=False,
    )  # fmt: skip
    assert rows.size == 0 and sims.size == 0 and not votes.any()


@FEW
@given(dyadic_banks(max_n=3000, rng_only=True))
def test_large_dyadic_banks_route_as_the_reference_on_every_path(case):
    assert_every_entry_point_is_the_reference(case)


# --- the vote without the sort: ordered or not, with bits or not, the same bits ------------------------------------


@MEDIUM
@given(normal_banks(max_n=300))
def test_unordered_votes_are_the_ordered_votes_bit_for_bit(case):
    """On Gaussian banks the float sums depend on their order; the vote streamed in row order must still give
    the bits of Eq (3)'s order, the theorem's condition deciding when it may."""
    args = (case.embeddings, case.query, case.capability, case.n_base, case.gamma)
    want = kernels.route(*args, threads=1)
    bits = kernels.capability_bits(case.capability)
    known = kernels.route(*args, threads=1, return_known=True)[3]
    np.testing.assert_array_equal(known, kernels.known_weights(case.capability, want[0], want[1]))
    for threads in (1, 2):
        assert_route_equal(kernels.route(*args, threads=threads, capability_bits=bits), want)
        assert_route_equal(in_row_order(kernels.route(*args, threads=threads, capability_bits=bits, ordered=False)), in_row_order(want))
        for ordered in (True, False):
            got = kernels.route(*args, threads=threads, capability_bits=bits, ordered=ordered, return_known=True)
            np.testing.assert_array_equal(got[3], known)


def test_votes_fall_back_to_eq3_order_when_the_sums_are_not_exact():
    """Ŝ = 1 on the last row and Ŝ ∈ [2^-60, 2^-59) with full mantissas on the others, all in the support set
    (γ = 0): in Eq (3)'s order each tiny Ŝ is lost against the 1 already summed, in row order they add up
    first, so the float64 sums depend on their order and the kernel must sum in Eq (3)'s order whether or not
    the order is asked for."""
    n = 4000
    rng = np.random.default_rng(0)
    embeddings = np.zeros((n, 2), np.float32)
    embeddings[:, 0] = np.ldexp(rng.integers(2**23, 2**24, size=n).astype(np.float64), -83).astype(np.float32)
    embeddings[n - 1, 0] = 1.0
    capability = np.ones((3, n), np.int8)
    capability[1, ::2] = 0
    query = np.array([1.0, 0.0], np.float32)
    sims = kernels.similarities(embeddings, query)
    assert not retrieval._exact_in_any_order(sims)
    want = kernels.route(embeddings, query, capability, 10, 0.0)
    assert want[0][0] == n - 1 and want[0].size == n
    np.testing.assert_array_equal(want[2], kernels.prior_vote(capability, want[0], want[1]))
    ascending = np.arange(n)
    assert not np.array_equal(kernels.prior_vote(capability, ascending, sims), want[2])  # the order matters here
    bits = kernels.capability_bits(capability)
    for threads, ordered in itertools.product((1, 2), (True, False)):
        got = kernels.route(embeddings, query, capability, 10, 0.0, threads, capability_bits=bits, ordered=ordered, return_known=True)
        np.testing.assert_array_equal(got[2], want[2])
        np.testing.assert_array_equal(got[3], kernels.known_weights(capability, want[0], want[1]))
        np.testing.assert_array_equal(np.sort(got[0]), ascending)


# --- the theorem: when are float64 sums of float32 values exact in any order? -------------------------------------


def _float32s(draw, n: int) -> np.ndarray:
    """n non-negative float32 values over a drawn range of binades (zeros, subnormals and huge values too)."""
    low = draw(st.integers(-149, 120))
    high = draw(st.integers(low, min(low + 60, 127)))
    exponents = draw(arrays(np.int64, (n,), elements=st.integers(low, high)))
    mantissas = draw(arrays(np.int64, (n,), elements=st.integers(2**23, 2**24 - 1)))
    values = np.ldexp(mantissas.astype(np.float64), exponents - 23)
    values[draw(arrays(np.bool_, (n,)))] = 0.0
    return values.astype(np.float32)


@MEDIUM
@given(st.data())
def test_the_exact_sum_condition_is_sound(data):
    """Whenever ``_exact_in_any_order`` holds, float64 sums of any subset in any order equal the exact
    rational sum: checked for random subsets and permutations against ``Fraction`` arithmetic."""
    n = data.draw(st.integers(0, 60))
    values = _float32s(data.draw, n)
    if not retrieval._exact_in_any_order(values):
        return
    rnd = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    for _ in range(5):
        subset = [float(v) for v in values if rnd.random() < 0.7]
        exact = sum((Fraction(v) for v in subset), Fraction(0))
        rnd.shuffle(subset)
        total = 0.0
        for v in subset:
            total += v
            assert Fraction(total) <= exact  # every partial sum exact: never above the whole
        assert Fraction(total) == exact


def test_the_exact_sum_condition_on_its_boundary():
    """n·max ≤ 2^52·u, u the spacing of float32 at the least positive value's binade."""
    ok = np.full(2**10, 1.0, np.float32)
    ok[0] = np.float32(2.0**-19)  # u = 2^-42: n·max = 2^10 ≤ 2^52·2^-42 = 2^10
    assert retrieval._exact_in_any_order(ok)
    too_many = np.full(2**10 + 1, 1.0, np.float32)
    too_many[0] = np.float32(2.0**-19)
    assert not retrieval._exact_in_any_order(too_many)
    assert retrieval._exact_in_any_order(np.zeros(5, np.float32))
    assert retrieval._exact_in_any_order(np.empty(0, np.float32))
    assert not retrieval._exact_in_any_order(np.array([1.0, np.inf], np.float32))
    subnormal = np.array([2.0**-149, 2.0**-140, 0.0], np.float32)  # u = 2^-149 for subnormals
    assert retrieval._exact_in_any_order(subnormal)


# --- the pieces: the bits, the radix sort ---------------------------------------------------------------------------


@FAST
@given(st.data())
def test_capability_bits_hold_the_correct_and_the_known_entries(data):
    r = data.draw(st.integers(1, 140))
    n = data.draw(st.integers(0, 30))
    m = data.draw(arrays(np.int8, (r, n), elements=st.integers(-1, 1)))
    bits = kernels.capability_bits(m)
    words = -(-r // 64)
    assert bits.dtype == np.int64 and bits.shape == (n, 2 * words)
    for model in range(r):
        correct = (bits[:, model // 64] >> (model % 64)) & 1
        known = (bits[:, words + model // 64] >> (model % 64)) & 1
        np.testing.assert_array_equal(correct, (m[model] == 1).astype(np.int64))
        np.testing.assert_array_equal(known, (m[model] >= 0).astype(np.int64))
    if n:
        rows = np.arange(n)[::-1].copy()
        sims = np.full(n, 0.5, np.float32)
        _, _, votes, known = kernels.route_rows(
            np.eye(n, dtype=np.float32), rows, np.ones(n), m, n, 1.0, capability_bits=bits, return_known=True
        )
        np.testing.assert_array_equal(votes, reference.prior_vote(m, np.arange(n), np.ones(n, np.float32)))
        np.testing.assert_array_equal(known, reference.known_weights(m, np.arange(n), np.ones(n, np.float32)))
        np.testing.assert_array_equal(kernels.prior_vote(m, rows, sims), reference.prior_vote(m, rows, sims))
        np.testing.assert_array_equal(kernels.known_weights(m, rows, sims), reference.known_weights(m, rows, sims))


@MEDIUM
@given(st.data())
def test_vote_tables_and_lanes_are_the_reference_sums(data):
    """Eq (4)'s two streamed sums, by byte tables (large support sets) and lane by lane (small ones), equal
    the reference's votes and known weights bit for bit, for any R (one word, a word boundary, several) and
    any |I| (none, fewer than the tables' 4 copies, a remainder), with rows in any order and repeated."""
    r = data.draw(st.sampled_from([1, 7, 8, 9, 15, 63, 64, 65, 130]))
    n = data.draw(st.integers(1, 300))
    size = data.draw(st.integers(0, 600))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    m = rng.integers(-1, 2, size=(r, n)).astype(np.int8)
    if data.draw(st.booleans()):  # patterns shared by many rows: the tables' entries collide
        m[:, : n // 2] = m[:, :1]
    rows = rng.integers(0, n, size=size).astype(np.int64)
    sims = (rng.integers(0, 2**10, size=size) * 2.0**-10).astype(np.float32)  # dyadic: exact in any order
    assert retrieval._exact_in_any_order(sims)
    bits = kernels.capability_bits(m)
    want = np.stack([reference.prior_vote(m, rows, sims), reference.known_weights(m, rows, sims)])
    votes = {
        "tables": lambda planes: retrieval._vote_tables(bits, r, rows, sims, planes, 1),
        "tables on 2 threads": lambda planes: retrieval._vote_tables(bits, r, rows, sims, planes, 2),
        "lanes": lambda planes: retrieval._vote_bits(bits, r, rows, sims, planes),
    }
    for name, vote in votes.items():
        np.testing.assert_array_equal(vote(2)[:, :r], want, err_msg=name)
        np.testing.assert_array_equal(vote(1)[0, :r], want[0], err_msg=name)


@pytest.mark.parametrize("n_chunks", [1, 2, 3])
def test_vote_tables_filled_on_several_threads_are_the_reference_sums(n_chunks):
    """At ``VOTE_PARALLEL_MIN_ROWS`` rows and more, the tables filled in ``n_chunks`` shares of the rows and
    added give the reference's votes and known weights bit for bit (repeated rows, shared patterns)."""
    rng = np.random.default_rng(n_chunks)
    r, n, size = 15, 5000, retrieval.VOTE_PARALLEL_MIN_ROWS + 3
    m = rng.integers(-1, 2, size=(r, n)).astype(np.int8)
    m[:, : n // 2] = m[:, :1]
    rows = rng.integers(0, n, size=size).astype(np.int64)
    sims = (rng.integers(0, 2**10, size=size) * 2.0**-10).astype(np.float32)
    want = np.stack([reference.prior_vote(m, rows, sims), reference.known_weights(m, rows, sims)])
    got = retrieval._vote_tables(kernels.capability_bits(m), r, rows, sims, 2, n_chunks)
    np.testing.assert_array_equal(got[:, :r], want)


def test_a_support_set_past_the_tables_size_routes_as_the_reference():
    """A support set of more than ``VOTE_TABLE_MIN_ROWS`` rows (every row of a concentrated bank) takes the
    byte tables on every entry point and still equals the reference."""
    case = concentrated_bank(11, n=retrieval.VOTE_TABLE_MIN_ROWS + 517, n_base=retrieval.VOTE_TABLE_MIN_ROWS + 517, gamma=0.0)
    rows, sims, _ = assert_every_entry_point_is_the_reference(case)
    assert rows.size >= retrieval.VOTE_TABLE_MIN_ROWS and retrieval._exact_in_any_order(sims)  # the tables' path


def test_a_support_set_past_the_parallel_tables_size_routes_as_the_reference():
    """A support set of more than ``VOTE_PARALLEL_MIN_ROWS`` rows fills its byte tables on two threads when
    the scan runs on two, and still equals the reference on every entry point."""
    n = retrieval.VOTE_PARALLEL_MIN_ROWS + 517
    case = concentrated_bank(12, n=n, n_base=n, gamma=0.0)
    rows, sims, _ = assert_every_entry_point_is_the_reference(case)
    assert rows.size >= retrieval.VOTE_PARALLEL_MIN_ROWS and retrieval._exact_in_any_order(sims)  # the parallel tables


@pytest.mark.parametrize("n_base", [1, 2, 3, 4, 5])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_overflowed_similarities_in_the_last_bin_route_as_the_reference(n_base):
    """Dot products that overflow float32 to +inf sit in the histogram's last bin with the finite Ŝ ≥ 1: the
    N_base-th largest taken inside that bin counts them (a bin collection that left +inf out read
    uninitialised slots). The support set is the reference's; the votes are ``_prior_sums``' over it (the
    reference's matrix product makes inf·0 a NaN where Eq (4) adds nothing for a wrong answer)."""
    e = np.array([[2e19, 0.0], [3e19, 1.0], [1.0, 0.0], [0.5, 0.0], [4.0, 0.0], [0.1, 0.9]], dtype=np.float32)
    q = np.array([2e19, 0.0], dtype=np.float32)
    m = np.array([[1, 0, 1, -1, 1, 0], [0, 1, 1, 1, -1, 1]], dtype=np.int8)
    sims = reference.similarities(e, q)
    assert np.isinf(sims).sum() == 2 and (sims[np.isfinite(sims)] >= 1).sum() >= 2
    rows, support_sims, _ = reference.route(e, q, m, n_base, 0.5)
    want = (rows, support_sims, retrieval._prior_sums(m, rows, support_sims, 1))
    for threads in (1, 2):
        assert_route_equal(kernels.route(e, q, m, n_base, 0.5, threads), want)
        assert_route_equal(kernels.route_rows(e, np.arange(6), q, m, n_base, 0.5, threads), want)


def test_capability_bits_of_another_shape_or_type_are_named():
    m = np.ones((3, 10), np.int8)
    e = np.eye(10, dtype=np.float32)
    for bad in (np.zeros((9, 2), np.int64), np.zeros((10, 2), np.int32), np.zeros((10, 1), np.int64), [[0]] * 10):
        with pytest.raises(ValueError, match="capability_bits must be capability_bits"):
            kernels.route(e, np.ones(10), m, 4, 0.95, capability_bits=bad)
    with pytest.raises(ValueError, match="capability"):
        kernels.capability_bits(np.ones(4, np.int8))


@MEDIUM
@given(st.data())
def test_stable_order_is_a_stable_sort(data):
    n = data.draw(st.integers(0, 5000))
    top = data.draw(st.sampled_from([0, 1, 7, 2**11, 2**22, 2**31 - 1]))
    values = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(0, top + 1, size=n).astype(np.int64)
    np.testing.assert_array_equal(retrieval._stable_order(values), np.argsort(values, kind="stable"))


@FAST
@given(gammas, st.integers(1, 50))
def test_support_set_order_over_many_ties(gamma, n_base):
    """Thousands of similarities over few distinct values: ties to the lower row, as the reference orders."""
    s = np.random.default_rng(n_base).choice(np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32), size=3000)
    rows, sims = kernels.support_set(s, n_base, gamma)
    want_rows, want_sims = reference.support_set(s, n_base, gamma)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(sims, want_sims)
