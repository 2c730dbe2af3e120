"""Mixture-of-Agents and Self-MoA: layers of proposers, then one aggregator (papers 001 and 002 of the seeds).

``moa`` [MoA §2.2 Eq 1; Self-MoA B.3]: y_i = ⊕_j [A_i,j(x_i)] + x_1, x_{i+1} = y_i. ``layers`` is the l of
Eq 1 and counts the final aggregator's layer: layers 1 … l−1 hold the proposers (the same models in every
layer, as the paper's MoA), layer 1 sees the question alone, each later layer the previous layer's
outputs numbered in the Aggregate-and-Synthesize prompt (Table 1), and layer l is the one aggregator
A_l,1 whose output is the answer. So MoA (l = 3) makes 2n + 1 calls and MoA-Lite (l = 2) n + 1: with
the paper's six proposers 13 and 7, the forward passes Self-MoA's Table 1 counts for them.

``self-moa`` [Self-MoA §2, Fig. 2b]: one model sampled ``samples`` times (distinct seeds), its outputs
aggregated by the same model (or ``aggregator``).

``self-moa-seq`` [Self-MoA §C.5, Fig. 2c]: the samples are aggregated through a sliding window of
``window`` slots: the first step aggregates the first ``window`` samples; every later step aggregates
the current synthesis, repeated in the first ``synthesis_slots`` slots "to bias the aggregator towards
it", followed by the next ``window − synthesis_slots`` samples, and its output becomes the current
synthesis. The paper's window is 6 with 3 slots for the synthesis; any number of samples is aggregated
with at most ``window`` responses in one prompt. The last synthesis is the answer.

Temperatures: proposers and samples at 0.7 and the aggregator at 0, as Self-MoA runs MoA and itself
(§3 and B.3: "0.7 for the individual model, and … temperature 0 for the aggregator"; the MoA paper also
samples at 0.7); later-layer proposers take the proposers' temperature. Each is a parameter
(``proposer_temperature``, ``sample_temperature``, ``aggregator_temperature``; None: the model's own).

Faults: a call that failed is left out of every later prompt (noted). If every proposer of a later layer
fails, the next layer sees the last layer that answered; a failed aggregation is retried by the fallback
aggregator (the most accurate other usable model) when the context allows, and failing that the answer
is the first output that the aggregation would have seen; with no layer-1 output at all the strategy
raises ``StrategyFailed``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated

import msgspec

from ..core.prompts import aggregation_messages, question_messages
from ..core.pipeline import Step
from .base import Planned, Recorder, StrategyCall, StrategyContext, StrategyPlan, StrategyResult, Temperature, aggregator_for, emit

Count = Annotated[int, msgspec.Meta(ge=1)]


class MoaParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``moa``: ``layers`` l of Eq 1 (≥ 2, the last being the aggregator's); ``proposers`` None = every
    usable model proposes (the paper's dense MoA), P = the P usable models with the highest prior vote
    (RPS, Eq 4) for the question; ``aggregator`` None = the policy's aggregator if usable, else the bank's
    most accurate usable model; ``proposer_temperature`` and ``aggregator_temperature`` their sampling
    temperatures (None: the model's configured one)."""

    layers: Annotated[int, msgspec.Meta(ge=2)] = 3
    proposers: Count | None = None
    aggregator: str | None = None
    proposer_temperature: Temperature | None = 0.7
    aggregator_temperature: Temperature | None = 0.0


class MoaLiteParams(MoaParams, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``moa-lite``: MoA with 2 layers (the proposers, then the aggregator)."""

    layers: Annotated[int, msgspec.Meta(ge=2)] = 2


class SelfMoaParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``self-moa``: ``model`` None = the bank's most accurate usable model, sampled ``samples`` times at
    ``sample_temperature``; ``aggregator`` None = the same model, at ``aggregator_temperature`` (None: the
    model's configured temperature)."""

    model: str | None = None
    samples: Count = 6
    aggregator: str | None = None
    sample_temperature: Temperature | None = 0.7
    aggregator_temperature: Temperature | None = 0.0


class SelfMoaSeqParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``self-moa-seq``: as ``self-moa`` with ``samples`` aggregated through a sliding window of ``window``
    responses whose first ``synthesis_slots`` hold the current synthesis; temperatures as ``self-moa``."""

    model: str | None = None
    samples: Count = 12
    window: Annotated[int, msgspec.Meta(ge=2)] = 6
    synthesis_slots: Count = 3
    aggregator: str | None = None
    sample_temperature: Temperature | None = 0.7
    aggregator_temperature: Temperature | None = 0.0

    def __post_init__(self) -> None:
        if self.synthesis_slots >= self.window:
            raise ValueError(f"synthesis_slots must be smaller than window ({self.window}), got {self.synthesis_slots}")


def moa(ctx: StrategyContext, params: MoaParams, *, name: str = "moa") -> Generator[Step, object, StrategyResult]:
    """Layered Mixture-of-Agents (see the module docstring)."""
    rec = Recorder(ctx, name, {"proposer": params.proposer_temperature, "aggregator": params.aggregator_temperature})
    proposers, scores, kind, decision = yield from ctx.ranking(params.proposers, strategy=name)
    if params.proposers is not None and params.proposers > len(ctx.models):
        rec.notes.append(f"proposers={params.proposers} exceeds the {len(ctx.models)} usable models: all of them propose")
    aggregator = aggregator_for(ctx, params.aggregator)
    plan = StrategyPlan(strategy=name, models=proposers, aggregator=aggregator, scores=scores, score_kind=kind, decision=decision)
    yield emit(plan)
    seen = yield from rec.ask_all(proposers, "proposer", question_messages(ctx.question, ctx.task))
    previous = [c for c in seen if c.ok]
    for layer in range(2, params.layers):
        messages = aggregation_messages(ctx.question, [c.text for c in previous], ctx.task)
        inputs = [c.position for c in previous]
        planned = [Planned(model=m, messages=messages, role="proposer", layer=layer, index=i, inputs=inputs) for i, m in enumerate(proposers)]
        written = yield from rec.call("aggregate", planned)
        rec.notes.extend(f"proposer {c.index} of layer {layer} ({c.model}) failed ({c.error_kind}) and was left out" for c in written if not c.ok)
        if any(c.ok for c in written):
            previous = [c for c in written if c.ok]
        else:
            rec.notes.append(f"every proposer of layer {layer} failed: the next layer sees layer {previous[0].layer}'s outputs")
    final = yield from rec.synthesize(previous, aggregator, params.layers)
    if final is None:
        final = rec.answer_with(previous, "no aggregation was written")
    return (yield from rec.finish(final.text, final.position, plan, params))


def moa_lite(ctx: StrategyContext, params: MoaParams) -> Generator[Step, object, StrategyResult]:
    """MoA-Lite: ``moa`` with its own name and 2 layers by default."""
    return (yield from moa(ctx, params, name="moa-lite"))


def self_moa(ctx: StrategyContext, params: SelfMoaParams) -> Generator[Step, object, StrategyResult]:
    """Self-MoA: one model's samples, aggregated (see the module docstring)."""
    rec, plan, samples = yield from _sample(ctx, params, "self-moa")
    written = [c for c in samples if c.ok]
    final = yield from rec.synthesize(written, plan.aggregator or plan.models[0], 2)
    if final is None:
        final = rec.answer_with(written, "no aggregation was written")
    return (yield from rec.finish(final.text, final.position, plan, params))


def self_moa_seq(ctx: StrategyContext, params: SelfMoaSeqParams) -> Generator[Step, object, StrategyResult]:
    """Self-MoA-Seq: one model's samples through the sliding window (see the module docstring)."""
    rec, plan, samples = yield from _sample(ctx, params, "self-moa-seq")
    aggregator = plan.aggregator or plan.models[0]
    pending = [c for c in samples if c.ok]
    synthesis: StrategyCall | None = None
    layer = 1
    while pending:
        layer += 1
        fresh = params.window if synthesis is None else params.window - params.synthesis_slots
        window = ([synthesis] * params.synthesis_slots if synthesis is not None else []) + pending[:fresh]
        pending = pending[fresh:]
        written = yield from rec.synthesize(window, aggregator, layer)
        if written is not None:
            synthesis = written
        elif synthesis is not None:
            rec.notes.append(f"step {layer - 1} of the window wrote nothing: the synthesis of layer {synthesis.layer} stays current")
    if synthesis is None:
        synthesis = rec.answer_with(samples, "no step of the window wrote a synthesis")
    return (yield from rec.finish(synthesis.text, synthesis.position, plan, params))


def _sample(
    ctx: StrategyContext, params: SelfMoaParams | SelfMoaSeqParams, name: str
) -> Generator[Step, object, tuple[Recorder, StrategyPlan, list[StrategyCall]]]:
    """Plan and draw the ``samples`` samples of ``model`` (None: the most accurate usable model) in layer 1."""
    rec = Recorder(ctx, name, {"sample": params.sample_temperature, "aggregator": params.aggregator_temperature})
    sampled = ctx.require_model(params.model, "model") if params.model is not None else ctx.best()
    assert sampled is not None  # a context has at least one model
    plan = StrategyPlan(
        strategy=name, models=[sampled], aggregator=aggregator_for(ctx, params.aggregator, sampled),
        scores=[ctx.accuracy.get(sampled, float("nan"))], score_kind="accuracy",
    )
    yield emit(plan)
    drawn = yield from rec.ask_all([sampled] * params.samples, "sample", question_messages(ctx.question, ctx.task))
    return rec, plan, drawn
