"""``smcs``: the SMCS pipeline itself (RPS + EPE, ``smcs.core.pipeline``), unchanged, as a strategy.

It routes the question with the context's policy over the usable models, then runs ``smcs_pipeline``
along that decision with the fallback aggregator ``smcs.runtime.dispatch.answer_steps`` would pick (the most
accurate other usable model, when the context allows one): the same steps, events and ``AnswerResult``
as ``smcs ask`` without a strategy.
"""

from __future__ import annotations

from collections.abc import Generator

import msgspec

from ..core.pipeline import AnswerResult, Step, smcs_pipeline
from .base import StrategyContext, StrategyError


class SmcsParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``smcs`` has no options of its own: its settings are the policy's (``--k``, ``--n``, ``--gamma`` …)."""


def smcs(ctx: StrategyContext, params: SmcsParams) -> Generator[Step, object, AnswerResult]:
    """Route, then the full pipeline along the decision."""
    if ctx.router is None or ctx.query is None:
        raise StrategyError("strategy smcs needs the router and the question's embedding")
    decision = ctx.router.route(ctx.query, seed=ctx.seed, policy=ctx.policy, allowed_models=list(ctx.models))
    fallback = ctx.best(exclude=(decision.aggregator,)) if ctx.fallback_aggregator else None
    return (yield from smcs_pipeline(decision, ctx.question, policy=ctx.policy, task=ctx.task, fallback_aggregator=fallback))
