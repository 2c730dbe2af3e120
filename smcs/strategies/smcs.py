"""``smcs``: the SMCS pipeline itself (RPS + EPE, ``smcs.core.pipeline``), unchanged, as a strategy.

It routes the question with the context's policy over the usable models (a ``RouteQuestion`` step, so
the server routes it through its batcher), then runs ``smcs_pipeline`` along that decision; when the
context allows a fallback aggregator, it is the most accurate other usable model. Every host runs SMCS
this way: ``smcs ask``, the ``smcs data`` jobs and the service's Answer.
"""

from __future__ import annotations

from collections.abc import Generator

import msgspec

from ..core.pipeline import AnswerResult, Step, smcs_pipeline
from .base import StrategyContext


class SmcsParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``smcs`` has no options of its own: its settings are the policy's (``--k``, ``--n``, ``--gamma`` …)."""


def smcs(ctx: StrategyContext, params: SmcsParams) -> Generator[Step, object, AnswerResult]:
    """Route, then the full pipeline along the decision."""
    decision = yield from ctx.route(ctx.policy, strategy="smcs")
    fallback = ctx.best(exclude=(decision.aggregator,)) if ctx.fallback_aggregator else None
    return (yield from smcs_pipeline(decision, ctx.question, policy=ctx.policy, task=ctx.task, fallback_aggregator=fallback))
