"""The result of routing one question: everything a caller needs to run, audit or replay the plan."""

from __future__ import annotations

import msgspec


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of retrieval-based prior selection plus the exploration plan for one question.

    Attributes:
        referencers: the K referencer models (Eq 5), highest prior vote first.
        votes: their prior votes V_r (Eq 4), aligned with ``referencers``.
        aggregator: the model that synthesises each subset of references.
        support_rows: bank rows of the support set I (Eq 3), most similar first.
        support_similarities: Ŝ_i of those rows (cosine, clipped at 0), aligned with ``support_rows``.
        subsets: the n exploration subsets (Eq 6 sampling), each K − K_drop model names in
            descending prior.
        seed: the seed that drew the subsets; routing again with it reproduces this decision.
        bank_version: the bank snapshot the decision was computed on.
        support_ids: bank question ids of ``support_rows`` (filled by the service; empty in-process).
        support_texts: their question text (only when the caller asked for debug evidence).
        support_outcomes: per support question, each referencer's recorded outcome (1 correct, 0 wrong,
            −1 not evaluated), aligned with ``referencers`` (only with debug evidence).
        scorer: the scorer that ranked the models (``Policy.scorer`` resolved: never "auto").
        probabilities: p_r, each referencer's probability of answering correctly, aligned with
            ``referencers`` (calibrated when the bank is fitted; for "vote" on an unfitted bank, the
            normalised vote).
        model_probabilities: p_r of every bank model, in the bank's model order (in-process always; over
            gRPC only with debug evidence).
        out_of_bank: the nearest bank question is less similar than the fit's out-of-bank threshold;
            models then rank by overall bank accuracy (except with "vote", which stays the paper's).
        k_clamped_from: the K the policy asked for when the bank has fewer models than that: the router
            then routed with K = the bank's model count (``len(referencers)``), k_drop at most K − 1 and
            the default quorum ⌈K/2⌉ (``smcs.core.policy.fit_policy``), and logged a WARNING; None when
            the policy's K fitted the bank. This holds for a router's own policy and a per-call one alike
            (an explicit request K too).
        costs: each referencer's expected cost for this question (``smcs.core.costs``), aligned with
            ``referencers``; None where the bank records no cost for the model.
        model_costs: the expected cost of every bank model, in the bank's model order (None: unknown).
        aggregation_cost: the aggregator's expected cost, counted per aggregation (None: unknown).
        expected_cost: the plan's expected cost: the referencers' costs plus one ``aggregation_cost`` per
            subset (None when one of them is unknown).
        plan_notes: what the policy's ``coverage_target`` and ``max_cost`` cut from the plan (K, n, or
            every aggregation: no subsets), one line each; empty when nothing was cut.
        drop_probabilities: each referencer's probability of being left out of a subset under Eq (6)'s
            sampling, aligned with ``referencers`` (``kernels.drop_probabilities``; empty for K above
            ``kernels.sampling.EXACT_DROP_MAX_K``).
        duplicate_subsets: with ``Policy.distinct_subsets``, the draws dropped because they repeated an
            earlier subset (``subsets`` then has no repeats and may hold fewer than n); 0 otherwise.
    """

    referencers: list[str]
    votes: list[float]
    aggregator: str
    support_rows: list[int]
    support_similarities: list[float]
    subsets: list[list[str]]
    seed: int
    bank_version: str
    support_ids: list[str] = []
    support_texts: list[str] = []
    support_outcomes: list[list[int]] = []
    scorer: str = "vote"
    probabilities: list[float] = []
    model_probabilities: list[float] = []
    out_of_bank: bool = False
    k_clamped_from: int | None = None
    costs: list[float | None] = []
    model_costs: list[float | None] = []
    aggregation_cost: float | None = None
    expected_cost: float | None = None
    plan_notes: list[str] = []
    drop_probabilities: list[float] = []
    duplicate_subsets: int = 0
