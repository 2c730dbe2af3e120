"""What every strategy shares: the context it runs in, its evidence events, and the calls it makes.

A strategy is a generator function ``(ctx: StrategyContext, params) -> Generator[Step, object,
StrategyResult]`` speaking the step protocol of ``smcs.core.pipeline`` (``Emit``, ``CallModels``,
``EmbedTexts``, ``RouteQuestion``), so ``smcs.runtime.host.StepHost`` hosts it unchanged and a scripted host
replays it exactly. Its events, in order:

- ``StrategyPlan`` (first): who will be called, why (their prior votes, accuracy or skill scores), and
  the route decision when the strategy used the router;
- ``StrategyCall`` per model call, emitted as the calls of each ``CallModels`` step complete, in call
  order: the model, its ``role``, ``layer`` and ``index`` in that layer, its ``position`` in the result's
  ``calls``, the ``inputs`` (positions of the calls whose texts its prompt numbered ``1.`` …, in that
  order), the seed, the answer ``extracted`` by the task's checker (voting strategies), and the text or
  the error with latency and tokens (``CallEvidence``);
- ``StrategyResult`` (last, also the generator's return value).

Layers: the first calls (proposers, samples, voters, experts, the answerer) are layer 1 and see the
question alone; each later layer's prompts number earlier outputs in the Aggregate-and-Synthesize prompt.
A fallback aggregator's retry is index 1 of the layer it retries. Call seeds derive from the context's
seed and the call's (layer, index), so replays send identical requests and no two calls of a request
share a seed. Calls of layer 1 go out as stage ``reference``, every call whose prompt holds other
outputs as stage ``aggregate`` (so ``[answer]`` timeouts apply to them alike).

Temperature: each role of a strategy (proposer, sample, aggregator …) samples at the temperature its
parameters give it (``*_temperature``, defaulting to the strategy's paper: Self-MoA's 0.7 for samples and
proposers and 0 for the aggregator), sent as the call's ``ModelCall.generation`` so that it overrides the
model's configured temperature; None keeps the model's (0.7 unless configured otherwise). Samples of one
model differ by seed. Each ``StrategyCall`` records the temperature it was sent with. A host given a
request's own settings (``StepHost.generation``: the HTTP gateway's ``temperature``, ``max_tokens`` …)
sends every call with those, field by field over the role's.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from ..errors import InputError
from ..core.decision import RouteDecision
from ..core.messages import ChatMessage
from ..core.pipeline import MAX_TEMPERATURE, CallEvidence, CallModels, Emit, ModelCall, QuorumNotMet, RouteQuestion, Stage, Step
from ..core.pipeline import call_evidence_fields, checked_results, derived_seed, role_generation
from ..core.policy import Policy
from ..core.prompts import Task, aggregation_messages, check_task
from ..core.router import RouteCall, Router, by_accuracy

Role = Literal["proposer", "aggregator", "sample", "voter", "expert", "answerer"]
ScoreKind = Literal["prior", "accuracy", "skill", ""]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TEMPERATURE)]
"""A role's sampling temperature in a strategy's parameters (None there: the model's configured one)."""


class StrategyError(InputError):
    """A strategy cannot run as asked (a model that is not usable, a missing option, no router)."""


class StrategyFailed(QuorumNotMet):
    """Every call the strategy's answer depends on failed; ``calls`` holds the evidence of each.

    A ``QuorumNotMet`` (nothing, or too little, answered), so hosts that report one report this alike."""

    def __init__(self, message: str, calls: list[StrategyCall]) -> None:
        super().__init__(message, [])
        self.calls = calls


class StrategyCall(CallEvidence, frozen=True, kw_only=True, tag="call"):
    """Event: one model call of a strategy and its outcome (see the module docstring)."""

    model: str
    role: Role
    layer: int
    index: int
    position: int
    seed: int
    inputs: list[int] = []
    extracted: str | None = None


class StrategyPlan(msgspec.Struct, frozen=True, kw_only=True, tag="plan"):
    """Event: what a strategy is about to do.

    Attributes:
        strategy: its name.
        models: the models of layer 1 (proposers, the sampled model, voters, experts, the answerer), in
            call order.
        aggregator: the model that synthesises (None: no aggregation).
        scores: per model of ``models``, the score that chose or ranked it, of kind ``score_kind``:
            ``prior`` (the RPS vote, Eq 4), ``accuracy`` (share correct in the bank), ``skill``
            (Symbolic-MoE's local skill score × global strength), or none.
        decision: the route decision the strategy used (None when it did not route).
        skills: Symbolic-MoE: the query's skills and their weights.
    """

    strategy: str
    models: list[str]
    aggregator: str | None = None
    scores: list[float] = []
    score_kind: ScoreKind = ""
    decision: RouteDecision | None = None
    skills: dict[str, float] = {}


class StrategyResult(msgspec.Struct, frozen=True, kw_only=True, tag="strategy_result"):
    """Event and return value: a strategy's answer and all its evidence.

    Attributes:
        text: the answer.
        strategy: the strategy's name.
        plan: what it planned (the first event).
        calls: every model call, in the order made (``StrategyCall.position``).
        chosen: position in ``calls`` of the call whose text is the answer.
        votes: voting strategies: each distinct extracted answer and its votes.
        notes: what deviated from the plan and why, one line each.
        params: the strategy's parameters as used.
        seed: the request seed every call's seed derives from.
        bank_version: the bank snapshot it ran over ("" when none).
    """

    text: str
    strategy: str
    plan: StrategyPlan
    calls: list[StrategyCall]
    chosen: int | None
    votes: dict[str, int] = {}
    notes: list[str] = []
    params: dict[str, Any] = {}
    seed: int = 0
    bank_version: str = ""


StrategyEvent = StrategyPlan | StrategyCall | StrategyResult


def emit(event: StrategyEvent) -> Emit:
    """The ``Emit`` step of a strategy event."""
    return Emit(event)


@dataclass(frozen=True)
class StrategyContext:
    """Everything a strategy may use besides its parameters.

    Attributes:
        question: the question.
        task: its prompt template (``smcs.core.prompts``), None for the bare question.
        seed: the request seed; every call's seed derives from it and the call's position.
        models: the usable models (a backend each), in bank order.
        accuracy: per usable model, its share correct in the bank (NaN: unknown).
        router: the router over the bank, for prior-based choices (None: accuracy order instead, and
            the strategies that need the prior refuse).
        query: the question's embedding for the router (None when not needed).
        policy: the routing policy (``smcs`` follows it; the others take n_base and gamma from it).
        fallback_aggregator: when an aggregation fails, let the most accurate other usable model retry.
        bank_version: the bank snapshot ("" when unknown).
    """

    question: str
    task: Task | None
    seed: int
    models: tuple[str, ...]
    accuracy: Mapping[str, float]
    router: Router | None = None
    query: np.ndarray | None = None
    policy: Policy = field(default_factory=Policy)
    fallback_aggregator: bool = True
    bank_version: str = ""

    @classmethod
    def from_router(
        cls,
        router: Router,
        question: str,
        models: Sequence[str],
        *,
        task: str | None = None,
        seed: int | None = None,
        query: np.ndarray | None = None,
        policy: Policy | None = None,
        fallback_aggregator: bool = True,
    ) -> StrategyContext:
        """The context over ``router``'s bank: ``models`` (bank model names, put in bank order) with
        their bank accuracy; ``seed`` None draws one. ``ValueError`` naming a bad argument."""
        names = router.bank.model_names
        unknown = [m for m in models if m not in names]
        if unknown:
            raise StrategyError(f"{unknown[0]!r} is not a model of the bank (its models: {', '.join(names)})")
        if not models:
            raise StrategyError("a strategy needs at least one usable model")
        wanted = set(models)
        ordered = tuple(m for m in names if m in wanted)
        accuracy = {m: float(router.accuracy[names.index(m)]) for m in ordered}
        return cls(
            question=question, task=check_task(task), seed=_request_seed(seed), models=ordered, accuracy=accuracy,
            router=router, query=query, policy=policy if policy is not None else router.policy,
            fallback_aggregator=fallback_aggregator, bank_version=router.bank.version,
        )

    def best(self, exclude: Collection[str] = ()) -> str | None:
        """The most accurate usable model not in ``exclude`` (unknown accuracy counts as lowest, ties go
        to bank order); None when none is left."""
        ranked = by_accuracy(self.accuracy, [m for m in self.models if m not in exclude])
        return ranked[0] if ranked else None

    def require_model(self, name: str, option: str) -> str:
        """``name`` if it is a usable model, else ``StrategyError`` naming ``option`` and the usable models."""
        if name not in self.models:
            raise StrategyError(f"{option}={name!r} is not a usable model (usable: {', '.join(self.models)})")
        return name

    def route(self, policy: Policy, *, strategy: str) -> Generator[Step, object, RouteDecision]:
        """The router's decision for the question under ``policy`` over the usable models, asked of the
        host as a ``RouteQuestion`` step; ``StrategyError`` naming ``strategy`` when there is no router or
        query embedding."""
        if self.router is None or self.query is None:
            raise StrategyError(f"strategy {strategy} needs the router and the question's embedding")
        decision = yield RouteQuestion(self.router, RouteCall(self.query, self.seed, policy, list(self.models)))
        if not isinstance(decision, RouteDecision):
            raise TypeError(f"the host answered a RouteQuestion with {type(decision).__name__}, not a RouteDecision")
        return decision

    def route_top(self, k: int | None = None, *, strategy: str) -> Generator[Step, object, RouteDecision]:
        """``route`` with K = ``k`` (None: every usable model), no subsets dropped: the top of the prior."""
        k = len(self.models) if k is None else min(k, len(self.models))
        policy = msgspec.structs.replace(self.policy, k=k, k_drop=0, n=1, min_references=None)
        return (yield from self.route(policy, strategy=strategy))

    def ranking(
        self, k: int | None = None, *, strategy: str
    ) -> Generator[Step, object, tuple[list[str], list[float], ScoreKind, RouteDecision | None]]:
        """The top ``k`` usable models (None: all) with their scores: by prior vote when the router and
        query embedding are given (a ``RouteQuestion`` step), else by bank accuracy (ties to bank order)."""
        if self.router is not None and self.query is not None:
            decision = yield from self.route_top(k, strategy=strategy)
            return list(decision.referencers), list(decision.votes), "prior", decision
        order = by_accuracy(self.accuracy, self.models)
        top = order if k is None else order[:k]
        return top, [self.accuracy.get(m, math.nan) for m in top], "accuracy", None


def _request_seed(seed: int | None) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise StrategyError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


class Planned(msgspec.Struct, frozen=True, kw_only=True):
    """One call a strategy is about to make, with its place in the evidence."""

    model: str
    messages: list[ChatMessage]
    role: Role
    layer: int
    index: int
    inputs: list[int] = []


class Recorder:
    """Makes a strategy's calls through the step protocol and keeps their evidence in call order; each
    call samples at its role's temperature in ``temperatures`` (a role not there, or None: the model's)."""

    def __init__(self, ctx: StrategyContext, strategy: str, temperatures: Mapping[Role, float | None] | None = None) -> None:
        self.ctx = ctx
        self.strategy = strategy
        self.temperatures: Mapping[Role, float | None] = temperatures or {}
        self.calls: list[StrategyCall] = []
        self.notes: list[str] = []

    def call(
        self, stage: Stage, planned: Sequence[Planned], extract: Callable[[str], str | None] | None = None
    ) -> Generator[Step, object, list[StrategyCall]]:
        """One ``CallModels`` step for ``planned`` (concurrent), then a ``StrategyCall`` event per call;
        ``extract`` (when given) fills ``extracted`` from each text."""
        calls = [
            ModelCall(
                model=p.model, messages=p.messages, seed=derived_seed(self.ctx.seed, p.index, stage=p.layer),
                generation=role_generation(f"{p.role}_temperature", self.temperatures.get(p.role)),
            )
            for p in planned
        ]
        results = checked_results((yield CallModels(stage=stage, calls=calls)), calls)
        made = []
        for p, call, result in zip(planned, calls, results):
            fields = call_evidence_fields(result)
            text = fields.get("text")
            extracted = extract(text) if extract is not None and isinstance(text, str) else None
            made.append(StrategyCall(
                model=p.model, role=p.role, layer=p.layer, index=p.index, position=len(self.calls) + len(made),
                seed=call.seed, inputs=p.inputs, extracted=extracted, temperature=self.temperatures.get(p.role),
                **fields,  # type: ignore[arg-type]
            ))
        self.calls.extend(made)
        for evidence in made:
            yield emit(evidence)
        return made

    def ask_all(self, models: Sequence[str], role: Role, messages: list[ChatMessage],
                extract: Callable[[str], str | None] | None = None) -> Generator[Step, object, list[StrategyCall]]:
        """Layer 1: every model of ``models`` (repeats allowed: one sample each) asked ``messages`` at
        once; ``StrategyFailed`` when none answered."""
        made = yield from self.call(
            "reference", [Planned(model=m, messages=messages, role=role, layer=1, index=i) for i, m in enumerate(models)], extract
        )
        for c in made:
            if not c.ok:
                self.notes.append(f"{role} {c.index} ({c.model}) failed ({c.error_kind}) and was left out")
        if not any(c.ok for c in made):
            failed = "; ".join(f"{c.model}: {c.error_kind}: {c.error}" for c in made)
            raise StrategyFailed(f"{self.strategy}: no {role} answered ({failed})", list(self.calls))
        return made

    def synthesize(self, inputs: Sequence[StrategyCall], aggregator: str, layer: int) -> Generator[Step, object, StrategyCall | None]:
        """``aggregator`` synthesises the texts of ``inputs`` (numbered in that order) with the
        Aggregate-and-Synthesize prompt; if it fails, the most accurate other usable model retries (when
        the context allows). The call that wrote the synthesis, or None (noted) when none did."""
        ctx = self.ctx
        messages = aggregation_messages(ctx.question, [c.text for c in inputs], ctx.task)
        positions = [c.position for c in inputs]
        fallback = ctx.best(exclude=(aggregator,)) if ctx.fallback_aggregator else None
        for index, model in enumerate([aggregator] if fallback is None else [aggregator, fallback]):
            planned = Planned(model=model, messages=messages, role="aggregator", layer=layer, index=index, inputs=positions)
            (written,) = yield from self.call("aggregate", [planned])
            if written.ok:
                if index:
                    self.notes.append(f"layer {layer} was aggregated by the fallback aggregator {model}")
                return written
            self.notes.append(f"the aggregation of layer {layer} by {model} failed ({written.error_kind})")
        return None

    def finish(
        self, text: str, chosen: int | None, plan: StrategyPlan, params: msgspec.Struct, votes: Mapping[str, int] | None = None
    ) -> Generator[Step, object, StrategyResult]:
        """Emit and return the ``StrategyResult``."""
        result = StrategyResult(
            text=text, strategy=self.strategy, plan=plan, calls=list(self.calls), chosen=chosen, votes=dict(votes or {}),
            notes=list(self.notes), params=msgspec.structs.asdict(params), seed=self.ctx.seed, bank_version=self.ctx.bank_version,
        )
        yield emit(result)
        return result

    def answer_with(self, candidates: Sequence[StrategyCall], why: str) -> StrategyCall:
        """The first call of ``candidates`` that answered (noted with ``why``), when no synthesis was written."""
        chosen = next(c for c in candidates if c.ok)
        self.notes.append(f"{why}: answered with {chosen.role} {chosen.index} of layer {chosen.layer} ({chosen.model})")
        return chosen


def aggregator_for(ctx: StrategyContext, option: str | None, default: str | None = None) -> str:
    """The aggregator: the ``aggregator`` option when set (it must be usable), else ``default``, else the
    policy's aggregator when usable, else the most accurate usable model."""
    if option is not None:
        return ctx.require_model(option, "aggregator")
    if default is not None:
        return default
    if ctx.policy.aggregator is not None and ctx.policy.aggregator in ctx.models:
        return ctx.policy.aggregator
    best = ctx.best()
    assert best is not None  # a context has at least one model
    return best
