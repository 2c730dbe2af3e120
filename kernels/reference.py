"""Plain-numpy twins of every kernel: the executable specification.

Each function is written straight from the SMCS equations (docs/design.md, The algorithm), favouring clarity over speed.
The compiled kernels must agree with these on every input; the tests hold them to it. Inputs are assumed
already validated (the compiled kernels' wrappers do that).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def similarities(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Eq (2): S = E·q in float32, then clipped to [0, ∞) because the paper states S ∈ [0, 1]."""
    s = embeddings.astype(np.float32) @ query.astype(np.float32)
    return np.maximum(s, np.float32(0.0)).astype(np.float32)


def kth_largest(s: np.ndarray, k: int) -> float:
    """max_k(S): the k-th largest value (1-based), k clamped to len(S)."""
    k = min(k, s.shape[0])
    return float(np.sort(s)[::-1][k - 1])


def support_set(s: np.ndarray, n_base: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Eq (3): I = {i : S_i ≥ γ·max_{N_base}(S)}, ordered by similarity descending, ties by lower row.

    Returns (rows int64, similarities float32).
    """
    if s.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    threshold = gamma * kth_largest(s, n_base)
    rows = np.flatnonzero(s.astype(np.float64) >= threshold)
    order = sorted(rows.tolist(), key=lambda i: (-float(s[i]), i))
    rows = np.asarray(order, dtype=np.int64)
    return rows, s[rows].astype(np.float32)


def order_support(rows: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A support set in Eq (3)'s order: similarity descending, ties by lower row."""
    order = sorted(range(rows.shape[0]), key=lambda t: (-float(sims[t]), int(rows[t])))
    return rows[order].astype(np.int64), sims[order].astype(np.float32)


def prior_vote(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Eq (4): V_r = Σ_{i ∈ I, M_ri known} Ŝ_i·M_ri; entries of −1 (not evaluated) contribute nothing."""
    sub = capability[:, rows].astype(np.float64)
    correct = (sub == 1.0).astype(np.float64)
    return (correct * sims.astype(np.float64)[None, :]).sum(axis=1)


def known_weights(capability: np.ndarray, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """K_r = Σ_{i ∈ I} Ŝ_i·[M_ri known]: the normalised vote's denominator (V_r / K_r)."""
    known = (capability[:, rows] >= 0).astype(np.float64)
    return (known * sims.astype(np.float64)[None, :]).sum(axis=1)


def top_k(votes: np.ndarray, k: int) -> np.ndarray:
    """Eq (5): argtop_K(V), descending vote, ties broken by the lower model index."""
    order = sorted(range(votes.shape[0]), key=lambda r: (-float(votes[r]), r))
    return np.asarray(order[:k], dtype=np.int64)


def route(
    embeddings: np.ndarray, query: np.ndarray, capability: np.ndarray, n_base: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eqs (2)–(4) in sequence: (support rows, support similarities, votes)."""
    s = similarities(embeddings, query)
    rows, sims = support_set(s, n_base, gamma)
    return rows, sims, prior_vote(capability, rows, sims)


def route_rows(
    embeddings: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eqs (2)–(4) over the rows ``rows`` of ``embeddings`` only: Eq (3)'s threshold from the N_base-th
    largest Ŝ among them; support rows are bank rows (``labels[row]``, or the row itself without labels)
    ordered by similarity descending, ties by lower bank row."""
    rows = np.asarray(rows, dtype=np.int64)
    bank_rows = rows if labels is None else np.asarray(labels, dtype=np.int64)[rows]
    s = similarities(embeddings[rows], query)
    local, _ = support_set(s, n_base, gamma)
    order = sorted(local.tolist(), key=lambda t: (-float(s[t]), int(bank_rows[t])))
    support = bank_rows[np.asarray(order, dtype=np.int64)]
    sims = s[np.asarray(order, dtype=np.int64)].astype(np.float32)
    return support, sims, prior_vote(capability, support, sims)


def route_many(
    embeddings: np.ndarray, queries: np.ndarray, capability: np.ndarray, n_base: list[int], gamma: list[float]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``route`` for each row of ``queries`` with its own N_base and γ."""
    return [route(embeddings, q, capability, nb, g) for q, nb, g in zip(queries, n_base, gamma)]


def drop_distribution(votes: np.ndarray) -> np.ndarray:
    """Eq (6): D = softmax((V − mean V)/std V), population std; zero variance (all equal) → uniform."""
    v = votes.astype(np.float64)
    if v.max() == v.min():
        return np.full(v.shape[0], 1.0 / v.shape[0])
    v = v / np.abs(v).max()  # the z-score is scale-free; this keeps tiny or huge spreads from under/overflowing
    z = (v - v.mean()) / v.std(ddof=0)
    e = np.exp(z - z.max())
    return e / e.sum()


def sample_subsets(distribution: np.ndarray, keep: int, uniforms: np.ndarray) -> np.ndarray:
    """Successive unequal-probability sampling without replacement, renormalised after each draw.

    Subset t keeps ``keep`` of the K items: draw j picks the first remaining item whose cumulative
    remaining weight exceeds ``uniforms[t, j]`` times the remaining total (the last remaining item when
    rounding leaves none). Each subset is returned in ascending item order (= descending prior).
    """
    n = uniforms.shape[0]
    out = np.empty((n, keep), dtype=np.int64)
    for t in range(n):
        weights = distribution.astype(np.float64).copy()
        chosen = []
        for j in range(keep):
            remaining = [i for i in range(weights.shape[0]) if i not in chosen]
            cumulative = np.cumsum(weights[remaining])  # sequential sums, so the total is exact to the last bit
            target = uniforms[t, j] * cumulative[-1]
            hits = np.flatnonzero(cumulative > target)
            chosen.append(remaining[int(hits[0])] if hits.size else remaining[-1])
        out[t] = np.sort(chosen)
    return out


def draw_distinct_subsets(votes: np.ndarray, k_drop: int, n: int, seed: int, max_draws: int) -> tuple[np.ndarray, int]:
    """Distinct exploration subsets: draw t uses row t of PCG64(seed)'s uniforms (rows 0 … n − 1 are the
    paper's n draws); a subset is kept at its first draw; drawing stops once min(n, C(K, keep)) distinct
    subsets exist or after ``max_draws`` draws. Returns (the subsets in draw order, the duplicate draws)."""
    d = drop_distribution(votes)
    keep = d.shape[0] - k_drop
    target = min(n, math.comb(d.shape[0], keep))
    subsets: list[list[int]] = []
    draws = 0
    for u in np.random.default_rng(seed).random((max_draws, keep)):
        if len(subsets) == target:
            break
        draws += 1
        row = sample_subsets(d, keep, u[None, :])[0].tolist()
        if row not in subsets:
            subsets.append(row)
    return np.array(subsets, dtype=np.int64).reshape(len(subsets), keep), draws - len(subsets)


def drop_probabilities(votes: np.ndarray, k_drop: int) -> np.ndarray:
    """P(r ∉ subset) for each referencer: the sum, over every ordered draw (s_1 … s_keep) of distinct
    items that leaves r out, of Π_j D_{s_j} / Σ_{i ∉ {s_1 … s_{j−1}}} D_i (Eq 6, renormalised after each draw)."""
    d = drop_distribution(votes)
    k = d.shape[0]
    dropped = np.zeros(k)
    for order in itertools.permutations(range(k), k - k_drop):
        p = 1.0
        for j, item in enumerate(order):
            p *= d[item] / sum(d[i] for i in range(k) if i not in order[:j])
        for i in set(range(k)) - set(order):
            dropped[i] += p
    return dropped


def vote_decision(
    votes: np.ndarray, known: np.ndarray, accuracy: np.ndarray, k: int, k_drop: int, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eqs (5)–(6) ranked by the votes: (the top ``k`` referencers, their votes, each model's probability
    V_r / K_r or ``accuracy``_r where K_r = 0, n subsets dropping min(``k_drop``, k − 1) drawn from
    ``np.random.default_rng(seed)``, the referencers' drop probabilities, empty when k > 16)."""
    probabilities = np.array([v / w if w > 0 else a for v, w, a in zip(votes.tolist(), known.tolist(), accuracy.tolist())])
    referencers = top_k(votes, k)
    ranking = votes[referencers]
    dropped = min(k_drop, k - 1)
    keep = k - dropped
    subsets = sample_subsets(drop_distribution(ranking), keep, np.random.default_rng(seed).random((n, keep)))
    drops = drop_probabilities(ranking, dropped) if k <= 16 else np.empty(0)
    return referencers, ranking, probabilities, subsets, drops


def mean_pairwise_similarity(candidates: np.ndarray) -> np.ndarray:
    """S^sim_i = (1/n) Σ_{j=1..n} cos(G_i, G_j), the sum including j = i."""
    g = candidates.astype(np.float64)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    return (g @ g.T).mean(axis=1)


def perplexity(logprobs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """PPL_i = exp(−mean of candidate i's token logprobs), tokens of i in logprobs[offsets[i]:offsets[i+1]]."""
    n = offsets.shape[0] - 1
    return np.array([np.exp(-np.mean(logprobs[offsets[i] : offsets[i + 1]])) for i in range(n)])


def hybrid_scores(sim: np.ndarray, ppl: np.ndarray, lam: float) -> np.ndarray:
    """Eq (7): S^total = S^sim + λ·(1 − PPL)."""
    return sim + lam * (1.0 - ppl)


def select_best(scores: np.ndarray) -> int:
    """argmax of S^total; ties go to the lowest index."""
    best = 0
    for i in range(1, scores.shape[0]):
        if scores[i] > scores[best]:
            best = i
    return best


def pairwise_ranking_score(prior: np.ndarray, outcomes: np.ndarray) -> float:
    """Eq (8): the share of (correct, wrong) model pairs, over all test questions, whose priors order them
    correctly (strictly: V[correct] > V[wrong]). Outcomes of −1 are left out; NaN when no pair exists."""
    hits = 0
    pairs = 0
    for v, o in zip(prior, outcomes):
        pos = v[o == 1]
        neg = v[o == 0]
        pairs += pos.size * neg.size
        hits += int((pos[:, None] > neg[None, :]).sum())
    return hits / pairs if pairs else float("nan")


def oca_mca(correct: np.ndarray) -> tuple[float, float]:
    """Paper §4.7 over Q questions × n aggregations: OCA is the share of questions where at least one
    aggregation is correct, MCA the share where at least two are. NaN for zero questions."""
    if correct.shape[0] == 0:
        return float("nan"), float("nan")
    counts = correct.astype(bool).sum(axis=1)
    return float(np.mean(counts >= 1)), float(np.mean(counts >= 2))


def _round_up_f32(x: np.ndarray) -> np.ndarray:
    """The smallest float32 ≥ each float64 x."""
    f = x.astype(np.float32)
    return np.where(f.astype(np.float64) < x, np.nextafter(f, np.float32(np.inf)), f).astype(np.float32)


def quantize_rows(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-row int8 quantisation e_i ≈ s_i·ẽ_i (``smcs.kernels.quantized``): returns (codes int8 N×d,
    scales s_i, residual norms ‖e_i − s_i ẽ_i‖₂, code norms ‖s_i ẽ_i‖₂), the last three float32.

    s_i = fl32(max_j |e_ij| / 127); ẽ_ij = rint(e_ij·fl64(1/s_i)) (half to even) clipped to ±127 (0 when
    s_i = 0). The norms are computed in float64, inflated by 1 + (d + 8)·2^-52 (residual) and 1 + 2^-50
    (code norm) to cover the float64 rounding, and rounded up to float32: each bounds the exact real norm
    from above. The compiled kernel sums in another order, so its norms may differ in the last bit.
    """
    e = embeddings.astype(np.float64)
    d = e.shape[1]
    scales = (np.abs(e).max(axis=1, initial=0.0) / 127.0).astype(np.float32)
    s = scales.astype(np.float64)[:, None]
    inverse = 1.0 / np.where(s > 0.0, s, 1.0)
    codes = np.where(s > 0.0, np.clip(np.rint(e * inverse), -127.0, 127.0), 0.0)
    residual = np.sqrt(((e - s * codes) ** 2).sum(axis=1)) * (1.0 + (d + 8) * 2.0**-52)
    code_norm = s[:, 0] * np.sqrt((codes**2).sum(axis=1)) * (1.0 + 2.0**-50)
    return codes.astype(np.int8), scales, _round_up_f32(residual), _round_up_f32(code_norm)
