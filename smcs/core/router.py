"""The in-process router: retrieval-based prior selection and the exploration plan, sans I/O."""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from .. import kernels
from ..bank import Bank, FittedScorer, ivf
from . import budget, scorers
from .costs import CostTable
from .decision import RouteDecision, support_columns
from .policy import IVF_AUTO_MIN_ROWS, Policy, fit_policy
from ..errors import InputError

MAX_SEED = 2**64 - 1

log = logging.getLogger(__name__)


class RouteCall(NamedTuple):
    """The arguments of one ``Router.route`` call, for ``Router.route_many``."""

    embedding: np.ndarray
    seed: int | None = None
    policy: Policy | None = None
    allowed_models: Sequence[str] | None = None
    support: bool = True
    """Whether the decision lists the support set (``Router.route``'s ``support``)."""


class _Call(NamedTuple):
    """A checked ``RouteCall``: its policy (fitted to the bank), allowed model indices (None: all), seed,
    unit query, the K its policy asked for when that was clamped (None: not clamped) and whether the
    decision lists the support set."""

    policy: Policy
    allowed: np.ndarray | None
    seed: int
    query: np.ndarray
    k_clamped_from: int | None = None
    support: bool = True


class _Scored(NamedTuple):
    """What a scorer made of one question: its name, the R scores models rank by, p_r, out of bank, and the
    cover order after each first referencer on the question's source (None: rank by ``ranking`` alone)."""

    scorer: str
    ranking: np.ndarray
    probabilities: np.ndarray
    out_of_bank: bool
    cover: list[list[int]] | None = None


class Router:
    """Routes questions over one bank snapshot.

    ``route`` is pure: no model is called and nothing is written. The same embedding, policy, seed and
    bank version always give the same decision. A Router holds one snapshot for its lifetime; to follow
    a bank that grows, build a new Router on ``bank.latest()``.

    A policy (the router's or a call's) whose K exceeds the bank's models is clamped to them
    (``fit_policy``): the router logs a WARNING (once per asked K) and the decision's ``k_clamped_from``
    says so. Other misfits (an unknown aggregator, a scorer or retrieval the bank cannot serve) raise
    ``InputError``.

    ``route`` is thread-safe, but numba's OpenMP runtime runs every parallel kernel slower once a second
    thread of the process has launched one (each such thread brings its own OpenMP team, and the teams
    contend for the cores; measurements: docs/performance.md, "Threads on a small machine"): call it from
    one thread, or give multi-threaded callers ``Policy(threads=1)``.
    """

    def __init__(self, bank: Bank, policy: Policy | None = None) -> None:
        kernels.configure_threads()  # before the warm-up's first parallel kernel
        self._bank = bank
        self._fitted = usable_fit(bank)
        self._clamp_warned: set[int] = set()  # the asked Ks a WARNING was logged for
        self._policy, self._k_clamped_from = self._fit(policy if policy is not None else Policy())
        self._check_policy(self._policy)
        self._accuracy, self._evaluated = model_accuracy(bank.capability)
        self._bits = kernels.capability_bits(bank.capability)  # Eq (4)'s matrix by question, once per snapshot
        # plain ndarray views of the mapped files, for every route: numba types a np.memmap on a slower path,
        # and the kernels' wrappers would take the view again on each call
        self._embeddings, self._capability = np.asarray(bank.embeddings), np.asarray(bank.capability)
        row_sources = [q.source for q in bank.questions] if self._fitted is not None else None
        self._stats = scorers.bank_stats(bank.capability, row_sources, self._fitted.sources if self._fitted else ())
        self._scoring = scorers.Scoring.of(self._stats, self._fitted) if self._fitted is not None else None
        self._costs = CostTable.of(bank)
        self._votes_decide = self._scoring is None and self._costs.per_question is None  # see _by_votes
        self._most_accurate = self._most_accurate_of(np.arange(bank.n_models)) if bank.n_models else None
        self._quantized: kernels.QuantizedBank | None = None  # int8 copy of the snapshot, built on first use
        self._quantized_lock = threading.Lock()
        if bank.n_questions:
            self._warm_up()

    @property
    def bank(self) -> Bank:
        """The bank snapshot this router reads."""
        return self._bank

    @property
    def policy(self) -> Policy:
        """The default policy of ``route``: the one given, with K clamped to the bank's models (see
        ``k_clamped_from``)."""
        return self._policy

    @property
    def k_clamped_from(self) -> int | None:
        """The K of the policy given at construction when it exceeded the bank's models and was clamped;
        None otherwise."""
        return self._k_clamped_from

    @property
    def accuracy(self) -> np.ndarray:
        """Per model: share correct among its evaluated bank questions (NaN where none is evaluated)."""
        return self._accuracy

    @property
    def fitted(self) -> FittedScorer | None:
        """The bank's fitted scorer when this router uses it (None: the bank has none, or it was fitted for
        other models, so only "vote" is available)."""
        return self._fitted

    def scorer_of(self, policy: Policy | None = None) -> str:
        """The scorer ``policy`` (or this router's) ranks by: its own, or for "auto" the fit's default
        ("vote" without a fit)."""
        name = (policy or self._policy).scorer
        if name != "auto":
            return name
        return self._fitted.default if self._fitted is not None else "vote"

    @property
    def evaluated(self) -> np.ndarray:
        """Per model: how many bank questions have a known outcome."""
        return self._evaluated

    def default_aggregator(self, policy: Policy | None = None, allowed: np.ndarray | None = None) -> str:
        """The aggregator of ``policy`` (or this router's), else the most accurate model (of ``allowed``
        model indices when given), ties to the lower index."""
        name = (policy or self._policy).aggregator
        if name is not None:
            return name
        if allowed is None and self._most_accurate is not None:
            return self._most_accurate
        return self._most_accurate_of(np.arange(self._bank.n_models) if allowed is None else allowed)

    def _most_accurate_of(self, candidates: np.ndarray) -> str:
        """The name of the most accurate of the ``candidates`` model indices, ties to the lower index."""
        scores = np.nan_to_num(self._accuracy[candidates], nan=-1.0)
        return self._bank.model_names[int(candidates[int(np.argmax(scores))])]

    def route(
        self,
        embedding: np.ndarray,
        *,
        seed: int | None = None,
        policy: Policy | None = None,
        allowed_models: Sequence[str] | None = None,
        support: bool = True,
    ) -> RouteDecision:
        """Route one question given its embedding (length = the bank's dim, any norm but zero).

        Runs Eqs (2)–(5) in the fused kernel (the int8 kernel with its exact re-score when the policy
        says ``quantized``: same decision; over the probed lists of the bank's index when it uses
        ``ivf`` retrieval, see ``Policy.retrieval``), then draws the n exploration subsets of Eq (6) from ``seed``
        (a fresh random seed when None, reported in the decision). ``policy`` overrides the router's
        policy for this call. ``allowed_models`` (non-empty) restricts the referencers, and the default
        aggregator, to those models; votes are still computed over the whole bank. The decision's
        ``support_rows`` and ``support_similarities`` are ``SupportValues``: the support set is sorted
        (unless the scorer or the costs read it in order) and turned into Python values only when they are
        first read, which would be most of a route's time after the scan when the support set holds a
        large share of the bank. ``support=False`` leaves them empty lists (the service asks for the
        support set only when its caller does). Raises ``InputError`` (a ``ValueError``) naming the bad
        argument.
        """
        return self._route(self._prepare(RouteCall(embedding, seed, policy, allowed_models, support)))

    def route_many(self, calls: Sequence[RouteCall]) -> list[RouteDecision | InputError]:
        """Route several questions at once: element i is what ``route`` returns for ``calls[i]``, or the
        ``InputError`` it raises (one bad call does not fail the others; any other error is a bug and fails
        the batch).

        The calls that scan the whole float32 bank share one pass over it (``kernels.route_many``): on a
        bank larger than the cache a batch of 8 costs about half of 8 separate routes. The calls with a
        quantized policy share one bound pass over the int8 copy (``kernels.route_quantized_many``); calls
        through the IVF index are routed one by one. Decisions are identical to ``route``'s.
        """
        results: list[RouteDecision | InputError | _Call] = []
        for call in calls:
            try:
                results.append(self._prepare(call))
            except InputError as exc:
                results.append(exc)
        for quantized in (False, True):
            shared = [i for i, c in enumerate(results) if isinstance(c, _Call) and self._shares_pass(c.policy, quantized)]
            if len(shared) > 1:
                batch: list[_Call] = [results[i] for i in shared]  # type: ignore[misc]  # the _Calls selected above
                for i, call, found in zip(shared, batch, self._retrieve_many(batch, quantized)):
                    results[i] = self._decided(call, found)
        for i, call in enumerate(results):
            if isinstance(call, _Call):
                try:
                    results[i] = self._route(call)
                except InputError as exc:
                    results[i] = exc
        return results  # type: ignore[return-value]  # every _Call was replaced by its decision

    def _shares_pass(self, policy: Policy, quantized: bool) -> bool:
        """Whether a call with ``policy`` joins a batch's shared pass over the float32 bank (``quantized``
        False) or over its int8 copy (True); calls through the IVF index join neither."""
        return policy.quantized == quantized and not self._uses_index(policy)

    def _retrieve_many(self, batch: Sequence[_Call], quantized: bool) -> list[tuple[np.ndarray, ...]]:
        """Eqs (2)–(4) for each call of ``batch`` in one pass over the float32 bank or its int8 copy, as
        ``_retrieve`` gives them one by one."""
        arguments = (
            self._embeddings,
            np.stack([c.query for c in batch]),
            self._capability,
            [c.policy.n_base for c in batch],
            [c.policy.gamma for c in batch],
            _batch_threads([c.policy for c in batch]),
        )
        options = {"capability_bits": self._bits, "ordered": self._ordered(), "return_known": True}
        if quantized:
            return kernels.route_quantized_many(self._quantized_bank(), *arguments, **options)
        return kernels.route_many(*arguments, **options)

    def _prepare(self, call: RouteCall) -> _Call:
        """``call``'s arguments checked: its policy, allowed model indices, seed and unit query."""
        if call.policy is None:
            policy, clamped_from = self._policy, self._k_clamped_from
        else:
            policy, clamped_from = self._fit(call.policy)
            self._check_policy(policy)
        allowed = self._allowed_indices(call.allowed_models, policy.k)
        self._check_costs(policy, allowed)
        query = _unit_query(call.embedding, self._bank.dim)
        return _Call(policy, allowed, _checked_seed(call.seed), query, clamped_from, bool(call.support))

    def _fit(self, policy: Policy) -> tuple[Policy, int | None]:
        """``policy`` with K clamped to the bank's models (``fit_policy``) and the K it asked for when
        clamped (None: it fitted); the first clamp of each asked K logs a WARNING."""
        fitted = fit_policy(policy, self._bank.n_models)
        if fitted is policy:
            return policy, None
        if policy.k not in self._clamp_warned:
            self._clamp_warned.add(policy.k)
            log.warning(
                "policy k=%d exceeds the %d models of bank %s version %s: routing with k=%d",
                policy.k, self._bank.n_models, self._bank.path, self._bank.version, fitted.k,
            )
        return fitted, policy.k

    def _retrieve(self, call: _Call) -> tuple[np.ndarray, ...]:
        """Eqs (2)–(4) for one call by its policy's retrieval: (support rows, their Ŝ, votes, known weights),
        the support set most similar first when ``_ordered()``, else in the kernel's order."""
        bank, policy, query = self._bank, call.policy, call.query
        options = {"capability_bits": self._bits, "ordered": self._ordered(), "return_known": True}
        if self._uses_index(policy):
            assert bank.index is not None  # _check_policy refused ivf without an index; auto needs one
            return route_ivf(
                bank.index, self._embeddings, query, self._capability, policy.n_base, policy.gamma, policy.nprobe, policy.threads,
                **options,
            )
        if policy.quantized:
            return kernels.route_quantized(
                self._quantized_bank(), self._embeddings, query, self._capability, policy.n_base, policy.gamma, policy.threads,
                **options,
            )
        return kernels.route(self._embeddings, query, self._capability, policy.n_base, policy.gamma, policy.threads, **options)

    def _route(self, call: _Call) -> RouteDecision:
        """Eqs (2)–(6) for one checked call: through ``_route_by_votes`` when the votes decide it over a full
        scan, else the policy's retrieval and ``_decide``."""
        if self._by_votes(call) and self._scans_bank(call.policy):
            return self._route_by_votes(call)
        return self._decide(call, *self._retrieve(call))

    def _route_by_votes(self, call: _Call) -> RouteDecision:
        """Eqs (2)–(6) for a call the votes decide over a full scan (``_by_votes``, ``_scans_bank``) in two
        compiled calls (``kernels.route_decide``); ``_decide`` when a vote is not finite, to raise as it does."""
        policy = call.policy
        rows, sims, votes, known, found = kernels.route_decide(
            self._embeddings, call.query, self._capability, self._bits, policy.n_base, policy.gamma, policy.threads,
            self._stats.accuracy, policy.k, policy.k_drop, policy.n, call.seed,
        )
        if found is None:
            return self._decide(call, rows, sims, votes, known)
        return self._vote_decision(call, rows, sims, found)

    def _ordered(self) -> bool:
        """Whether the kernel must return the support set in Eq (3)'s order: a fitted bank's scorers
        read its nearest rows, or the bank's costs are averaged over it (a float sum, whose last bits depend
        on the order). A decision that lists it orders it itself when it is first read (``SupportSet``)."""
        return self._scoring is not None or self._costs.per_question is not None

    def _decided(self, call: _Call, found: tuple[np.ndarray, ...]) -> RouteDecision | InputError:
        """``_decide``, or the ``InputError`` it raises (a plan no ``max_cost`` fits) for ``route_many``."""
        try:
            return self._decide(call, *found)
        except InputError as exc:
            return exc

    def _decide(self, call: _Call, rows: np.ndarray, sims: np.ndarray, votes: np.ndarray, known: np.ndarray) -> RouteDecision:
        """Eq (5) and Eq (6) from the votes: the referencers (ranked by p_r − c_r / W when the policy sets a
        willingness to pay), the plan cut to the policy's coverage target and cost limit
        (``smcs.core.budget``), the subsets and the decision."""
        if self._by_votes(call):
            found = kernels.decide_votes(votes, known, self._stats.accuracy, call.policy.k, call.policy.k_drop, call.policy.n, call.seed)
            if found is not None:
                return self._vote_decision(call, rows, sims, found)
        policy, allowed = call.policy, call.allowed
        scored = self._score(policy, call.query, rows, sims, votes, known)
        costs = self._costs.expected(rows, sims)
        ranking, cover = scored.ranking, scored.cover
        if policy.willingness_to_pay is not None:
            ranking, cover = budget.ranked_by_value(scored.probabilities, costs, policy.willingness_to_pay), None
        if cover is not None:
            referencers = scorers.covering_referencers(ranking, cover, policy.k, allowed)
        elif allowed is None:
            referencers = kernels.top_k(ranking, policy.k)
        else:
            referencers = allowed[kernels.top_k(ranking[allowed], policy.k)]
        names = self._bank.model_names
        aggregator = self.default_aggregator(policy, allowed)
        aggregation_cost = float(costs[self._bank.model_index(aggregator)])
        plan = budget.budget_plan(
            k=policy.k, k_drop=policy.k_drop, n=policy.n, probabilities=scored.probabilities[referencers],
            reference_costs=costs[referencers], aggregation_cost=aggregation_cost,
            coverage_target=policy.coverage_target, max_cost=policy.max_cost,
        )
        referencers = referencers[: plan.k]
        explored = kernels.explore(ranking[referencers], plan.k_drop, plan.n, call.seed, distinct=policy.distinct_subsets)
        aggregation_known, expected_known = known_or_none(np.array([aggregation_cost, plan.expected_cost]))
        referencer_names = [names[r] for r in referencers.tolist()]
        support_rows, support_similarities = support_columns(rows, sims, ordered=self._ordered()) if call.support else ([], [])
        return RouteDecision(
            referencers=referencer_names,
            votes=votes[referencers].tolist(),
            aggregator=aggregator,
            support_rows=support_rows,
            support_similarities=support_similarities,
            subsets=[[referencer_names[p] for p in subset] for subset in explored.subsets.tolist()],
            seed=call.seed,
            bank_version=self._bank.version,
            scorer=scored.scorer,
            probabilities=scored.probabilities[referencers].tolist(),
            model_probabilities=scored.probabilities.tolist(),
            out_of_bank=scored.out_of_bank,
            k_clamped_from=call.k_clamped_from,
            costs=known_or_none(costs[referencers]),
            model_costs=known_or_none(costs),
            aggregation_cost=aggregation_known,
            expected_cost=expected_known,
            plan_notes=plan.notes,
            drop_probabilities=explored.drop_probabilities.tolist(),
            duplicate_subsets=explored.duplicates,
        )

    def _by_votes(self, call: _Call) -> bool:
        """Whether the votes alone decide ``call`` (``kernels.decide_votes``): the vote scorer without a fit, no
        costs in the bank, no allowed models, coverage target or distinct subsets."""
        policy = call.policy
        return (
            self._votes_decide and call.allowed is None and policy.coverage_target is None and not policy.distinct_subsets
            and policy.willingness_to_pay is None and policy.max_cost is None
        )

    def _vote_decision(self, call: _Call, rows: np.ndarray, sims: np.ndarray, found: kernels.VoteDecision) -> RouteDecision:
        """The decision of a call the votes decide (``_by_votes``) from ``kernels.decide_votes``' arrays:
        ``_decide``'s general path gives the same one with more Python calls, which a route makes with the
        interpreter's caches cold (docs/performance.md, "The router's Python runs cold")."""
        names = self._bank.model_names
        indices = found.referencers.tolist()
        referencer_names = [names[r] for r in indices]
        model_probabilities = found.probabilities.tolist()
        support_rows, support_similarities = support_columns(rows, sims, ordered=False) if call.support else ([], [])
        return RouteDecision(
            referencers=referencer_names,
            votes=found.votes.tolist(),
            aggregator=self.default_aggregator(call.policy),
            support_rows=support_rows,
            support_similarities=support_similarities,
            subsets=[[referencer_names[p] for p in subset] for subset in found.subsets.tolist()],
            seed=call.seed,
            bank_version=self._bank.version,
            scorer="vote",
            probabilities=[model_probabilities[r] for r in indices],
            model_probabilities=model_probabilities,
            out_of_bank=False,
            k_clamped_from=call.k_clamped_from,
            costs=[None] * len(indices),
            model_costs=[None] * len(names),
            aggregation_cost=None,
            expected_cost=None,
            plan_notes=[],
            drop_probabilities=found.drop_probabilities.tolist(),
            duplicate_subsets=0,
        )

    def _check_costs(self, policy: Policy, allowed: np.ndarray | None) -> None:
        """Raise ``InputError`` naming the policy field when it needs costs the bank does not record: every
        candidate model's for ``willingness_to_pay`` and ``max_cost``, the aggregator's too for the latter."""
        for field in ("willingness_to_pay", "max_cost"):
            if getattr(policy, field) is None:
                continue
            candidates = np.arange(self._bank.n_models) if allowed is None else allowed
            if field == "max_cost":
                candidates = np.append(candidates, self._bank.model_index(self.default_aggregator(policy, allowed)))
            missing = [self._bank.model_names[i] for i in np.unique(candidates[~self._costs.known[candidates]]).tolist()]
            if missing:
                raise InputError(
                    f"policy {field} needs each candidate model's expected cost, and bank version {self._bank.version} records "
                    f"none for {', '.join(map(repr, missing))} (a question's metadata['cost'] or metadata['tokens'])"
                )

    def _score(
        self, policy: Policy, query: np.ndarray, rows: np.ndarray, sims: np.ndarray, votes: np.ndarray, known: np.ndarray
    ) -> _Scored:
        """The policy's scorer over one question's support set (``smcs.core.scorers``), given its votes and
        known weights (Eq 4's sums, from the kernel). "vote" ranks by the votes themselves (Eq 5 exactly);
        the others by p_r, or by overall accuracy out of bank."""
        name = self.scorer_of(policy)
        scoring = self._scoring
        if scoring is None:  # _check_policy allows only "vote" here: vote_probability's, without its Evidence
            return _Scored(name, votes, scorers.normalised_votes(votes, known, self._stats.accuracy), False)
        fitted = scoring.fitted
        width = min(max(fitted.knn_k, fitted.source_k), self._bank.n_questions)
        near_rows, near_sims = (rows, sims) if rows.size >= width else self._nearest(query, width)
        evidence = scorers.Evidence(
            query[None, :], near_rows[None, :width], near_sims[None, :width], votes[None, :], known[None, :]
        )
        pi = None if name == "vote" else scorers.source_distribution(evidence, scoring)
        p, outside = scorers.probabilities(evidence, scoring, name, pi)
        cover = None
        if pi is not None and policy.cover and fitted.cover and not outside[0]:
            cover = fitted.cover[int(np.argmax(pi[0]))]
        return _Scored(name, votes if name == "vote" else p[0], p[0], bool(outside[0]), cover)

    def _nearest(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` bank rows most similar to ``query`` and their Ŝ, most similar first (ties to the lower
        row): the scorers' neighbours when the policy's support set (Eq 3) holds fewer (a small N_base);
        one more pass over the bank."""
        sims = np.maximum(self._embeddings @ query, np.float32(0.0))
        nearest = np.argpartition(-sims, k - 1)[:k]
        order = np.lexsort((nearest, -sims[nearest]))
        return nearest[order], sims[nearest[order]]

    def _scans_bank(self, policy: Policy) -> bool:
        """Whether ``policy`` routes by the exact kernel's full scan of the float32 bank."""
        return self._shares_pass(policy, quantized=False)

    def uses_index(self, policy: Policy | None = None) -> bool:
        """Whether ``policy`` (or this router's) routes through the bank's IVF index rather than a full scan."""
        return self._uses_index(policy or self._policy)

    def _uses_index(self, policy: Policy) -> bool:
        if policy.retrieval == "auto":
            return not policy.quantized and self._bank.index is not None and self._bank.n_questions >= IVF_AUTO_MIN_ROWS
        return policy.retrieval == "ivf"

    def _check_policy(self, policy: Policy) -> None:
        """Raise ``InputError`` if ``policy`` cannot route over this router's bank."""
        policy.check_models(self._bank.model_names)
        scorer = self.scorer_of(policy)
        if scorer != "vote" and self._fitted is None:
            why = "was fitted for other models" if self._bank.scorer is not None else "has no fitted scorer"
            raise InputError(
                f"policy scorer={scorer!r} needs a fitted bank, and bank version {self._bank.version} {why} "
                "(fit one with: smcs bank fit BANK)"
            )
        if scorer == "head" and self._fitted is not None and self._fitted.head is None:
            raise InputError(f"policy scorer='head' needs a fitted head, and bank version {self._bank.version}'s fit has none")
        if policy.retrieval == "ivf" and self._bank.index is None:
            raise InputError(
                f"policy retrieval='ivf' needs an index, and bank version {self._bank.version} has none "
                "(build one with: smcs bank index BANK)"
            )

    def _allowed_indices(self, allowed_models: Sequence[str] | None, k: int) -> np.ndarray | None:
        """Ascending model indices of ``allowed_models`` (None when unrestricted), so ties in the top-K
        still go to the lower model index."""
        if not allowed_models:
            return None
        names = self._bank.model_names
        unknown = sorted(set(allowed_models) - set(names))
        if unknown:
            raise InputError(f"allowed_models names unknown models: {', '.join(map(repr, unknown))}")
        allowed = np.array(sorted({names.index(m) for m in allowed_models}), dtype=np.int64)
        if k > allowed.size:
            raise InputError(f"policy k={k} exceeds the {allowed.size} allowed_models")
        return allowed

    def _quantized_bank(self) -> kernels.QuantizedBank:
        """The int8 copy of this router's snapshot, built once (the first caller builds, others wait)."""
        quantized = self._quantized
        if quantized is None:
            with self._quantized_lock:
                quantized = self._quantized
                if quantized is None:
                    quantized = kernels.quantize_rows(self._bank.embeddings)
                    self._quantized = quantized
        return quantized

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernels for this bank's array types, so the first
        request does not pay for it; with a quantized policy this also builds the int8 copy."""
        self.route(np.asarray(self._bank.embeddings[0], dtype=np.float32), seed=0)


def usable_fit(bank: Bank) -> FittedScorer | None:
    """The bank's fitted scorer when it was fitted for the bank's models (possibly on older data), else None."""
    fitted = bank.scorer
    return fitted if fitted is not None and tuple(fitted.models) == bank.model_names else None


def route_ivf(
    index: ivf.IVFIndex,
    embeddings: np.ndarray,
    query: np.ndarray,
    capability: np.ndarray,
    n_base: int,
    gamma: float,
    nprobe: int | None,
    threads: int | None = None,
    *,
    capability_bits: np.ndarray | None = None,
    ordered: bool = True,
    return_known: bool = False,
) -> tuple[np.ndarray, ...]:
    """Eqs (2)–(4) over the rows of the ``nprobe`` lists of ``index`` nearest the unit ``query`` (None: the
    index's ``default_nprobe``): (support rows, their Ŝ, votes), the exact route of those rows. Reads the
    index's list-ordered ``vectors`` (each probed list one contiguous block) when it has them, else
    gathers the rows from ``embeddings``. ``capability_bits``, ``ordered`` and ``return_known`` as in
    ``kernels.route_rows``."""
    positions = index.positions(query, index.default_nprobe if nprobe is None else nprobe)
    options = {"capability_bits": capability_bits, "ordered": ordered, "return_known": return_known}
    if index.vectors is not None:
        return kernels.route_rows(index.vectors, positions, query, capability, n_base, gamma, threads, labels=index.rows, **options)
    return kernels.route_rows(embeddings, np.asarray(index.rows)[positions], query, capability, n_base, gamma, threads, **options)


def model_accuracy(capability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per model (row of ``capability``): (share correct among evaluated questions, NaN where none is
    evaluated; number of evaluated questions)."""
    m = np.asarray(capability)
    evaluated = (m >= 0).sum(axis=1)
    correct = (m == 1).sum(axis=1)
    accuracy = np.divide(correct, evaluated, out=np.full(evaluated.shape, np.nan), where=evaluated > 0)
    return accuracy, evaluated


def by_accuracy(accuracy: Mapping[str, float], candidates: Sequence[str]) -> list[str]:
    """``candidates`` most accurate first (``accuracy`` by model name; NaN or missing = unknown, which
    ranks last), ties kept in the given order."""
    def known(model: str) -> float:
        value = accuracy.get(model, math.nan)
        return -1.0 if math.isnan(value) else value

    return sorted(candidates, key=lambda model: -known(model))


def known_or_none(values: np.ndarray) -> list[float | None]:
    """``values`` as a list with None for each NaN (an unknown cost)."""
    return [None if math.isnan(v) else v for v in values.tolist()]


def _checked_seed(seed: int | None) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _batch_threads(policies: Sequence[Policy]) -> int | None:
    """The thread count of a batch's shared scan: the fewest any of its policies asks for (None: by size)."""
    asked = [p.threads for p in policies if p.threads is not None]
    return min(asked) if asked else None


def _unit_query(embedding: object, dim: int) -> np.ndarray:
    """``embedding`` checked and divided by its norm √(q·q) (``np.linalg.norm``'s, bit for bit), as float32.

    The norm is taken first and the elements checked only when it is not finite: a NaN or an infinity makes
    q·q NaN or infinite, so a finite norm vouches for every element (finite elements whose q·q overflows are
    scaled by their largest magnitude first, where they used to give a zero query). A route runs this
    after milliseconds of other work, with the interpreter's caches cold, where each numpy call costs
    several times its warm time (measurements: docs/performance.md, "The router's Python runs cold")."""
    try:
        q = np.asarray(embedding, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("embedding must be a vector of numbers") from None
    if q.ndim != 1:
        raise InputError(f"embedding must be a 1-D vector, got shape {q.shape}")
    if q.shape[0] != dim:
        raise InputError(f"embedding has dimension {q.shape[0]} but the bank's embedder has dimension {dim}")
    norm = math.sqrt(float(q.dot(q)))
    if not math.isfinite(norm):
        if not np.all(np.isfinite(q)):
            raise InputError("embedding contains NaN or infinity")
        q = q / np.abs(q).max()  # finite, but q·q overflowed: scaled first, the direction is the same
        norm = math.sqrt(float(q.dot(q)))
    if norm == 0.0:
        raise InputError("embedding is a zero vector")
    return (q / norm).astype(np.float32)
