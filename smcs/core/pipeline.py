"""The full SMCS pipeline as a sans-I/O step machine: references, exploration, exploitation (Eqs 6–7).

``smcs_pipeline(...)`` is a generator. It yields *steps*; the host performs each and sends the result
back with ``generator.send``; the generator's return value (``StopIteration.value``) is the
``AnswerResult``. Steps and what the host sends back:

==================  ==========================================================================
step                the host sends back
==================  ==========================================================================
``Emit(event)``     None, after passing ``event`` on (a gRPC stream, a progress line, a log)
``CallModels``      one ``Completion`` or ``CallFailed`` per call, in the order of ``calls``;
                    when the step has ``evidence``, the host first passes on
                    ``evidence(i, result)`` for each call as it completes (arrival order)
``EmbedTexts``      a float array ``(len(texts), d)``, one row per text (any embedder; the
                    retrieval one by convention)
``RouteQuestion``   the ``RouteDecision`` of ``router`` for ``call`` (the strategies route
                    through it; ``smcs_pipeline`` starts from a decision already made)
==================  ==========================================================================

The order of steps: ``Emit(Routed)``; ``CallModels("reference")`` for the K referencers, whose
``evidence`` gives the ``ReferenceEvidence`` of each as it arrives (so a slow referencer does not hold
back the others' events); with ``policy.consensus`` set and two or more references answered,
``EmbedTexts`` of the answered references, and when they agree (below) ``Emit(AnswerResult)`` and return;
``CallModels("aggregate")`` for the n exploration subsets (again with the fallback aggregator if every
aggregation failed); ``EmbedTexts`` of the aggregations that succeeded (skipped when only one did);
``Emit(AggregationEvidence)`` per subset; ``Emit(AnswerResult)``; return.

Consensus (beyond the paper; ``Policy.consensus``): the agreement of the m answered references is their
mean pairwise cosine over the m(m − 1)/2 pairs, (Σ_i S^sim_i − 1)/(m − 1) from the S^sim of Eq 7 taken
over the references. When it is at least the threshold, the answer is the most central reference (the
highest S^sim, ties to the higher prior) with ``source = "consensus"``, and no aggregation is asked for:
K calls in all instead of K + n. With ``policy.distinct_subsets``, subsets that become equal once failed
referencers are left out are aggregated once.

Temperatures: ``reference_temperature`` and ``aggregator_temperature`` go with every reference and every
aggregation call (``ModelCall.generation``), overriding the model's configured temperature; None keeps
the model's. The evidence of each call records the temperature it was sent with.

Faults: a referencer that failed is left out of every subset. With fewer than ``policy.quorum``
referencers answering the generator raises ``QuorumNotMet`` naming who failed. An aggregation that
failed (or came back empty) is dropped from selection; if all failed, the fallback aggregator (when
given) writes them again; if that fails too, the answer is the best reference by prior, and the result
says so (``source`` and ``notes``). When some answered aggregation has no logprobs, perplexity cannot be
compared, so selection uses S^sim alone (λ taken as 0) and a note says so.

The generator draws no random numbers (the exploration plan is the decision's) and calls nothing, so a
scripted host replays it exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Generator, Sequence
from typing import Literal

import msgspec
import numpy as np

from ..errors import InputError, SmcsError
from .. import kernels
from .decision import RouteDecision
from .messages import ChatMessage, Completion, Generation
from .policy import Policy, fit_policy
from .prompts import Task, aggregation_messages, question_messages
from .router import RouteCall, Router

Stage = Literal["reference", "aggregate"]
MAX_TEMPERATURE = 2.0
"""The highest temperature a role may ask for (the OpenAI API's range, 0 to 2)."""
Source = Literal["aggregation", "fallback_aggregator", "best_reference", "consensus"]


class ModelCall(msgspec.Struct, frozen=True, kw_only=True):
    """One request for the host to send: ``messages`` to ``model``, sampling with ``seed`` and the model's
    configured settings, overridden by ``generation`` where it sets a field (None: the model's alone)."""

    model: str
    messages: list[ChatMessage]
    seed: int
    generation: Generation | None = None


class CallFailed(msgspec.Struct, frozen=True, kw_only=True):
    """What the host sends back for a call that failed: the error's ``kind`` (e.g. ``timeout``) and message."""

    kind: str
    message: str
    latency_s: float = 0.0


class CallModels(msgspec.Struct, frozen=True, kw_only=True):
    """Step: perform ``calls`` (concurrently) and send back one result per call, in order.

    ``evidence``, when set, turns each call's result into an event (``evidence(index, result)``) that the
    host passes on as soon as that call completes, before it sends back the whole list.
    """

    stage: Stage
    calls: list[ModelCall]
    evidence: Callable[[int, CallResult], ReferenceEvidence] | None = None


class EmbedTexts(msgspec.Struct, frozen=True, kw_only=True):
    """Step: embed ``texts`` and send back the array, one row per text."""

    texts: list[str]


class Routed(msgspec.Struct, frozen=True, tag="routed"):
    """Event: the route decision the pipeline follows."""

    decision: RouteDecision


class CallEvidence(msgspec.Struct, frozen=True, kw_only=True):
    """What every model call of the pipeline reports: the text written, or why there is none
    (``error``, and its ``kind``: a backend error kind, ``empty_response`` or ``empty_subset``), with its
    latency, token usage and the ``temperature`` it was sent with (None: the model's configured one)."""

    text: str = ""
    error: str | None = None
    error_kind: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    temperature: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the call produced text."""
        return self.error is None


class ReferenceEvidence(CallEvidence, frozen=True, kw_only=True, tag="reference"):
    """Event: one referencer's answer, with its prior vote V_r (Eq 4)."""

    model: str
    prior: float


class ReferenceEvidenceOf(msgspec.Struct, frozen=True, kw_only=True):
    """The ``evidence`` of the reference step: call ``i``'s result as referencer ``i``'s event (a Struct,
    so that two steps asking the same compare equal)."""

    referencers: list[str]
    votes: list[float]
    temperature: float | None = None

    def __call__(self, index: int, result: CallResult) -> ReferenceEvidence:
        """The ``ReferenceEvidence`` of referencer ``index`` for ``result``."""
        return ReferenceEvidence(
            model=self.referencers[index], prior=self.votes[index], temperature=self.temperature, **call_evidence_fields(result),  # type: ignore[arg-type]
        )


class AggregationEvidence(CallEvidence, frozen=True, kw_only=True, tag="aggregation"):
    """Event: one exploration subset's aggregation with its scores (Eq 7), or why it has none.

    ``subset`` lists the references it saw (failed referencers removed), in the order they were numbered.
    ``similarity``, ``perplexity`` and ``total`` are NaN for a failed aggregation; ``perplexity`` is NaN
    when the aggregator returned no logprobs.
    """

    index: int
    aggregator: str
    subset: list[str]
    similarity: float = math.nan
    perplexity: float = math.nan
    total: float = math.nan


class AnswerResult(msgspec.Struct, frozen=True, kw_only=True, tag="final"):
    """Event and return value: the selected answer and the evidence for every step.

    Attributes:
        text: the answer.
        source: ``aggregation`` (the best of the n aggregations by Eq 7), ``fallback_aggregator`` (the
            same, written by the fallback aggregator), ``best_reference`` (every aggregation failed, or
            the decision planned none: the answer of the highest-prior referencer that answered), or
            ``consensus`` (the references agreed: the most central one, no aggregation asked for).
        selected: index of the selected aggregation among ``aggregations``; None for ``best_reference``
            and ``consensus``.
        decision: the route decision followed.
        references: one per referencer, in the decision's order.
        aggregations: one per exploration subset (twice n when the fallback aggregator ran).
        notes: what deviated from the plan and why, one line each.
        reference: for ``best_reference`` and ``consensus``, the index in ``references`` of the answer's
            referencer; None otherwise.
        agreement: the answered references' mean pairwise cosine (``Policy.consensus``); None when it
            was not computed (no threshold, or fewer than two references answered).
    """

    text: str
    source: Source
    selected: int | None
    decision: RouteDecision
    references: list[ReferenceEvidence]
    aggregations: list[AggregationEvidence]
    notes: list[str] = []
    reference: int | None = None
    agreement: float | None = None

    @property
    def seed(self) -> int:
        """The seed of the route decision (replaying with it reproduces the plan)."""
        return self.decision.seed

    @property
    def bank_version(self) -> str:
        """The bank snapshot routed over."""
        return self.decision.bank_version


class Emit(msgspec.Struct, frozen=True):
    """Step: pass ``event`` on; send back None. The pipeline emits its ``Event``s; the strategies
    (``smcs.strategies``) emit theirs through the same step."""

    event: msgspec.Struct


class RouteQuestion(msgspec.Struct, frozen=True):
    """Step: route ``call`` over ``router``'s bank (Eqs 2–6) and send back the ``RouteDecision``.

    A step rather than a call, so the host decides where the route runs: in-process on the spot, or in
    the server through its batcher, beside the concurrent routes."""

    router: Router
    call: RouteCall


Step = Emit | CallModels | EmbedTexts | RouteQuestion
CallResult = Completion | CallFailed
Event = Routed | ReferenceEvidence | AggregationEvidence | AnswerResult


class QuorumNotMet(SmcsError, RuntimeError):
    """Fewer referencers answered than the policy's quorum; ``references`` holds every one's evidence."""

    def __init__(self, message: str, references: list[ReferenceEvidence]) -> None:
        """``message`` names who failed and why."""
        super().__init__(message)
        self.references = references


def smcs_pipeline(
    decision: RouteDecision,
    question: str,
    *,
    policy: Policy,
    task: Task | None = None,
    fallback_aggregator: str | None = None,
    reference_temperature: float | None = None,
    aggregator_temperature: float | None = None,
) -> Generator[Step, object, AnswerResult]:
    """Run SMCS on ``question`` along ``decision`` (see the module docstring for the protocol).

    ``policy`` gives λ (Eq 7), the quorum, the consensus threshold and whether repeated subsets are
    aggregated once; ``task`` the prompt template; ``fallback_aggregator`` the model that rewrites the
    aggregations if every one of the aggregator's failed (None: no second try); the temperatures those of
    the reference and aggregation calls (None: each model's configured one). Sampling seeds of the calls
    derive from ``decision.seed``, so replays send identical requests. When the decision has fewer
    referencers than ``policy.k`` because the router cut K (it clamped K to the bank,
    ``decision.k_clamped_from``, or the policy's ``coverage_target`` or ``max_cost`` cut it,
    ``decision.plan_notes``), the quorum is that of ``policy`` fitted to that K (``fit_policy``), and the
    notes begin with why (``clamped_note``, ``decision.plan_notes``); any other shortfall keeps the policy's
    quorum. ``InputError`` for a temperature outside [0, 2].
    """
    reference_generation = role_generation("reference_temperature", reference_temperature)
    aggregator_generation = role_generation("aggregator_temperature", aggregator_temperature)
    if len(decision.referencers) < policy.k and (decision.k_clamped_from is not None or decision.plan_notes):
        # the router clamped K to the bank, or coverage_target / max_cost cut it
        policy = fit_policy(policy, len(decision.referencers))
    yield Emit(Routed(decision))
    asked = question_messages(question, task)
    calls = [
        ModelCall(model=m, messages=asked, seed=derived_seed(decision.seed, i), generation=reference_generation)
        for i, m in enumerate(decision.referencers)
    ]
    reference = ReferenceEvidenceOf(referencers=decision.referencers, votes=decision.votes, temperature=reference_temperature)
    results = yield CallModels(stage="reference", calls=calls, evidence=reference)
    references = [reference(i, r) for i, r in enumerate(checked_results(results, calls))]
    answered = {e.model: e for e in references if e.ok}
    if len(answered) < policy.quorum:
        failed = "; ".join(f"{e.model}: {e.error_kind}: {e.error}" for e in references if not e.ok)
        raise QuorumNotMet(
            f"only {len(answered)} of {len(references)} referencers answered, fewer than min_references="
            f"{policy.quorum} ({failed})",
            references,
        )
    notes = [clamped_note(decision)] if decision.k_clamped_from is not None else []
    notes += decision.plan_notes
    notes += [f"referencer {e.model} failed ({e.error_kind}) and was left out of every subset" for e in references if not e.ok]
    done = _Done(decision=decision, references=references, notes=notes)
    agreement: float | None = None
    if policy.consensus is not None and len(answered) >= 2:
        agreement, central = yield from _consensus(list(answered.values()))
        if agreement >= policy.consensus:
            model = list(answered)[central]
            notes.append(
                f"the {len(answered)} references agree (mean pairwise cosine {agreement:.4f} >= consensus {policy.consensus}): "
                f"answered with the most central, {model}, without aggregation"
            )
            return (yield from done.reference("consensus", model, agreement))
    subsets = [[m for m in subset if m in answered] for subset in decision.subsets]
    if policy.distinct_subsets:
        subsets, repeats = _distinct(subsets)
        if repeats:
            notes.append(f"{repeats} subset(s) repeated another once failed referencers were left out: aggregated once")
    if not subsets:
        notes.append("the route decision planned no aggregation")
        return (yield from done.reference("best_reference", next(iter(answered)), agreement))

    aggregators: list[tuple[str, Source]] = [(decision.aggregator, "aggregation")]
    if fallback_aggregator is not None and fallback_aggregator != decision.aggregator:
        aggregators.append((fallback_aggregator, "fallback_aggregator"))
    aggregations = done.aggregations
    for round_, (aggregator, source) in enumerate(aggregators):
        first = len(aggregations)
        plan = _Aggregation(question, task, aggregator, aggregator_generation, decision.seed, round_, first)
        written = yield from plan.write(subsets, answered)
        scored, note = yield from _score(written, policy.lam)
        aggregations.extend(scored)
        notes.extend(note)
        for evidence in scored:
            yield Emit(evidence)
        best = _best(scored)
        if best is not None:
            result = AnswerResult(
                text=scored[best].text, source=source, selected=first + best, decision=decision, references=references,
                aggregations=aggregations, notes=notes, agreement=agreement,
            )
            yield Emit(result)
            return result
        notes.append(f"every aggregation by {aggregator} failed")
    top = next(iter(answered))  # the decision lists referencers by descending prior
    notes.append(f"answered with the highest-prior reference, {top}")
    return (yield from done.reference("best_reference", top, agreement))


class _Done(msgspec.Struct, kw_only=True):
    """What a run has gathered so far, to end it with a reference as the answer."""

    decision: RouteDecision
    references: list[ReferenceEvidence]
    notes: list[str]
    aggregations: list[AggregationEvidence] = msgspec.field(default_factory=list)

    def reference(self, source: Source, model: str, agreement: float | None) -> Generator[Step, object, AnswerResult]:
        """Emit and return the result whose answer is referencer ``model``'s."""
        index = next(i for i, e in enumerate(self.references) if e.model == model)
        result = AnswerResult(
            text=self.references[index].text, source=source, selected=None, decision=self.decision, references=self.references,
            aggregations=self.aggregations, notes=self.notes, reference=index, agreement=agreement,
        )
        yield Emit(result)
        return result


def role_generation(name: str, temperature: float | None) -> Generation | None:
    """The ``ModelCall.generation`` of a role sampling at ``temperature`` (None: the model's own);
    ``InputError`` naming ``name`` unless it is in [0, ``MAX_TEMPERATURE``]."""
    if temperature is None:
        return None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= MAX_TEMPERATURE:
        raise InputError(f"{name} must be a number in [0, {MAX_TEMPERATURE}] or None, got {temperature!r}")
    return Generation(temperature=float(temperature))


def agreement_of(similarity: np.ndarray) -> float:
    """The mean pairwise cosine over the m(m − 1)/2 pairs of m ≥ 2 texts, from their S^sim (Eq 7's
    mean similarity including the text itself): (Σ_i S^sim_i − 1)/(m − 1)."""
    return float((similarity.sum() - 1.0) / (similarity.shape[0] - 1))


def _consensus(answered: list[ReferenceEvidence]) -> Generator[Step, object, tuple[float, int]]:
    """The agreement of the answered references and the index (among them) of the most central one."""
    vectors = yield EmbedTexts(texts=[e.text for e in answered])
    similarity = kernels.mean_pairwise_similarity(np.asarray(vectors, dtype=np.float64))
    return agreement_of(similarity), kernels.select_best(similarity)


def _distinct(subsets: list[list[str]]) -> tuple[list[list[str]], int]:
    """``subsets`` with later repeats left out (order kept), and how many were."""
    kept = list(dict.fromkeys(tuple(subset) for subset in subsets))
    return [list(subset) for subset in kept], len(subsets) - len(kept)


def clamped_note(decision: RouteDecision) -> str:
    """What a decision whose K was clamped says about it (``RouteDecision.k_clamped_from``)."""
    return f"policy k={decision.k_clamped_from} exceeds the bank's models: routed with k={len(decision.referencers)}"


class _Aggregation(msgspec.Struct, frozen=True):
    """One round of aggregations: ``aggregator`` (sampling with ``generation``) synthesises each subset."""

    question: str
    task: Task | None
    aggregator: str
    generation: Generation | None
    seed: int
    round_: int
    first_index: int

    def write(
        self, subsets: list[list[str]], answered: dict[str, ReferenceEvidence]
    ) -> Generator[Step, object, list[tuple[AggregationEvidence, Completion | None]]]:
        """Ask the aggregator to synthesise each non-empty subset; the evidence of each (unscored) with its completion."""
        calls: list[ModelCall] = []
        for i, subset in enumerate(subsets):
            if subset:
                messages = aggregation_messages(self.question, [answered[m].text for m in subset], self.task)
                seed = derived_seed(self.seed, self.round_ * len(subsets) + i, stage=1)
                calls.append(ModelCall(model=self.aggregator, messages=messages, seed=seed, generation=self.generation))
        results = iter(checked_results((yield CallModels(stage="aggregate", calls=calls)), calls)) if calls else iter(())
        temperature = self.generation.temperature if self.generation is not None else None
        written = []
        for i, subset in enumerate(subsets):
            where = {"index": self.first_index + i, "aggregator": self.aggregator, "subset": subset, "temperature": temperature}
            if not subset:
                failed = AggregationEvidence(**where, error="every reference of this subset failed", error_kind="empty_subset")
                written.append((failed, None))
                continue
            result = next(results)
            evidence = AggregationEvidence(**where, **call_evidence_fields(result))
            written.append((evidence, result if evidence.ok else None))  # type: ignore[arg-type]  # ok: a Completion
        return written


def _score(
    written: list[tuple[AggregationEvidence, Completion | None]], lam: float
) -> Generator[Step, object, tuple[list[AggregationEvidence], list[str]]]:
    """Eq (7) over the aggregations that were written: S^sim from their embeddings, PPL from their logprobs."""
    done = [(i, c) for i, (_, c) in enumerate(written) if c is not None]
    evidence = [e for e, _ in written]
    if not done:
        return evidence, []
    if len(done) == 1:
        similarity = np.ones(1)
    else:
        vectors = yield EmbedTexts(texts=[c.text for _, c in done])
        similarity = kernels.mean_pairwise_similarity(np.asarray(vectors, dtype=np.float64))
    notes = []
    if all(c.token_logprobs for _, c in done):
        ppl = perplexities([c.token_logprobs for _, c in done])
        total = kernels.hybrid_scores(similarity, ppl, lam)
    else:
        ppl = np.full(len(done), math.nan)
        total = kernels.hybrid_scores(similarity, np.ones(len(done)), 0.0)
        notes.append("an aggregation came without logprobs: selected by similarity alone (λ taken as 0)")
    for j, (i, _) in enumerate(done):
        evidence[i] = msgspec.structs.replace(
            evidence[i], similarity=float(similarity[j]), perplexity=float(ppl[j]), total=float(total[j])
        )
    return evidence, notes


def perplexities(sequences: Sequence[Sequence[float]]) -> np.ndarray:
    """PPL of each token-logprob sequence (Eq 7's S^PPL input), packed ragged for ``kernels.perplexity``;
    ``ValueError`` as that kernel raises it (an empty sequence, a non-finite value)."""
    offsets = np.concatenate([[0], np.cumsum([len(lp) for lp in sequences])]).astype(np.int64)
    flat = np.concatenate([np.asarray(lp, dtype=np.float64) for lp in sequences]) if sequences else np.empty(0)
    return kernels.perplexity(flat, offsets)


def finite_totals(similarity: np.ndarray, perplexity: np.ndarray, lam: float) -> np.ndarray:
    """Eq 7's S^total = S^sim + λ·(1 − PPL) of each candidate; ``ValueError`` naming ``logprobs[i]`` or ``lam``
    when finite inputs overflow (a mean logprob below about −709 makes PPL infinite; a huge λ overflows
    λ·(1 − PPL)), rather than a total that is not a number."""
    overflowed = np.flatnonzero(~np.isfinite(perplexity))
    if overflowed.size:
        i = int(overflowed[0])
        raise InputError(f"logprobs[{i}]: its perplexity exp(-mean logprob) overflows; logprobs that low are not a model's")
    with np.errstate(over="ignore", invalid="ignore"):
        total = similarity + lam * (1.0 - perplexity)
    overflowed = np.flatnonzero(~np.isfinite(total))
    if overflowed.size:
        i = int(overflowed[0])
        raise InputError(f"lam: lam * (1 - PPL) overflows for candidate {i} (lam={lam!r}, PPL={float(perplexity[i])!r})")
    return kernels.hybrid_scores(similarity, perplexity, lam)


def _best(scored: list[AggregationEvidence]) -> int | None:
    """Index in ``scored`` of the highest total among those written (ties to the lowest), None if none was."""
    done = [i for i, e in enumerate(scored) if e.ok]
    if not done:
        return None
    return done[kernels.select_best(np.array([scored[i].total for i in done]))]


def call_evidence_fields(result: CallResult) -> dict[str, object]:
    """The ``CallEvidence`` fields of one call's result; an empty text counts as a failure."""
    if isinstance(result, CallFailed):
        return {"error": result.message, "error_kind": result.kind, "latency_s": result.latency_s}
    if not result.text.strip():
        return {"error": "the model returned no text", "error_kind": "empty_response", "latency_s": result.latency_s}
    return {
        "text": result.text, "latency_s": result.latency_s,
        "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
    }


def checked_results(sent: object, calls: Sequence[ModelCall]) -> list[CallResult]:
    """The host's answer to a ``CallModels`` step, checked: one ``Completion`` or ``CallFailed`` per call."""
    if not isinstance(sent, Sequence) or len(sent) != len(calls):
        raise TypeError(f"the host must send back {len(calls)} results for CallModels, got {sent!r:.80}")
    for i, result in enumerate(sent):
        if not isinstance(result, (Completion, CallFailed)):
            raise TypeError(f"result {i} of CallModels must be a Completion or CallFailed, got {type(result).__name__}")
    return list(sent)


def derived_seed(seed: int, index: int, stage: int = 0) -> int:
    """The sampling seed of call ``index`` of ``stage`` (0 references, 1 aggregations) of a request: a
    63-bit value mixed from the request seed (BLAKE2b of the three numbers, far cheaper than numpy's
    SeedSequence), so replays send identical requests."""
    key = (seed & (2**64 - 1)).to_bytes(8, "little") + stage.to_bytes(4, "little") + index.to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
