"""``smcs``: the SMCS pipeline itself (RPS + EPE, ``smcs.core.pipeline``), unchanged, as a strategy.

It routes the question with the context's policy over the usable models (a ``RouteQuestion`` step, so
the server routes it through its batcher), then runs ``smcs_pipeline`` along that decision; when the
context allows a fallback aggregator, it is the most accurate other usable model. Every host runs SMCS
this way: ``smcs ask``, the ``smcs data`` jobs and the service's Answer.

Temperatures: the SMCS paper samples every call at one temperature, 0.7 (A.3, Inference Configs), which
is also the models' configured default; it states none per role. So ``reference_temperature`` and
``aggregator_temperature`` default to None, each model's configured temperature (a pool whose members
differ by temperature keeps them distinct); set, they override it for every reference or aggregation call.
"""

from __future__ import annotations

from collections.abc import Generator

import msgspec

from ..core.pipeline import AnswerResult, Step, smcs_pipeline
from .base import StrategyContext, Temperature


class SmcsParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``smcs``: the referencers and the aggregator sample at ``reference_temperature`` and
    ``aggregator_temperature`` (None: each model's configured one); every other setting is the policy's
    (``--k``, ``--n``, ``--gamma`` …)."""

    reference_temperature: Temperature | None = None
    aggregator_temperature: Temperature | None = None


def smcs(ctx: StrategyContext, params: SmcsParams) -> Generator[Step, object, AnswerResult]:
    """Route, then the full pipeline along the decision."""
    decision = yield from ctx.route(ctx.policy, strategy="smcs")
    fallback = ctx.best(exclude=(decision.aggregator,)) if ctx.fallback_aggregator else None
    return (yield from smcs_pipeline(
        decision, ctx.question, policy=ctx.policy, task=ctx.task, fallback_aggregator=fallback,
        reference_temperature=params.reference_temperature, aggregator_temperature=params.aggregator_temperature,
    ))
