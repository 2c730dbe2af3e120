"""Running a strategy (or any step generator) in this process for the ``smcs data`` jobs, set up as
``smcs ask`` sets it up: the bank and configuration of ``smcs.bundled.config_and_bank``, its embedder,
a ``ModelPool`` of the configured models and the router over the bank."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec

from .. import bundled

from ..bank import Bank
from ..config import Config
from ..core import Router
from ..core.pipeline import AnswerResult, QuorumNotMet, Stage, Step
from ..core.prompts import Task
from ..dispatch import ModelPool, answer_models, run_steps
from ..embed import AsyncEmbedder, EmbedderConfig, as_async, check_compatible, make_embedder
from ..strategies import StrategyContext, StrategyResult, StrategySpec, fit_policy
from .jobs import ItemFailed

T = TypeVar("T")


async def host_steps(
    steps: Generator[Step, object, Any], pool: ModelPool, embedder: AsyncEmbedder | None,
    timeouts: dict[Stage, float | None] | None, want: type[T] | tuple[type, ...],
) -> T:
    """Run ``steps`` with ``run_steps``; the last event of type ``want``. A ``QuorumNotMet`` (every call
    a result depends on failed) becomes ``ItemFailed``."""
    found = None
    try:
        # run_steps is annotated for the pipeline's generator; it hosts any generator of pipeline steps
        async for event in run_steps(cast(Generator[Step, object, AnswerResult], steps), pool, cast(AsyncEmbedder, embedder), timeouts):
            if isinstance(event, want):
                found = event
    except QuorumNotMet as exc:
        raise ItemFailed(str(exc)) from None
    if found is None:
        raise RuntimeError("the steps ended without their result")
    return cast(T, found)


def result_models(result: StrategyResult | AnswerResult) -> list[str]:
    """The models whose calls a result's answer drew on (the calls that wrote text), in call order, once each."""
    if isinstance(result, StrategyResult):
        names = [c.model for c in result.calls if c.ok]
    else:
        names = [r.model for r in result.references if r.ok] + [a.aggregator for a in result.aggregations if a.ok]
    return list(dict.fromkeys(names))


@dataclass
class StrategyHost:
    """The bank, router, models and embedder a strategy runs with."""

    config: Config
    bank: Bank
    router: Router
    pool: ModelPool
    embedder: AsyncEmbedder
    usable: list[str]

    @property
    def timeouts(self) -> dict[Stage, float | None]:
        return dict(self.config.answer.timeouts)

    def context(self, spec: StrategySpec, question: str, seed: int, task: Task | None, query: Any = None) -> StrategyContext:
        """The strategy's context for ``question`` (``query``: its embedding, when the strategy routes)."""
        policy = self.config.policy if spec.name == "smcs" else fit_policy(self.config.policy, self.bank.n_models)
        return StrategyContext.from_router(
            self.router, question, self.usable, task=task, seed=seed, query=query, policy=policy,
            fallback_aggregator=self.config.answer.fallback_aggregator,
        )

    async def query(self, spec: StrategySpec, question: str) -> Any:
        """The question's embedding when ``spec`` routes it, else None."""
        return (await self.embedder.embed([question]))[0] if spec.needs_query else None

    async def answer(self, spec: StrategySpec, params: msgspec.Struct, question: str, seed: int,
                     task: Task | None) -> StrategyResult | AnswerResult:
        """The strategy's result on ``question`` (``ItemFailed`` when it had nothing to answer with)."""
        ctx = self.context(spec, question, seed, task, await self.query(spec, question))
        return await host_steps(spec.run(ctx, params), self.pool, self.embedder, self.timeouts, (StrategyResult, AnswerResult))

    def require_configured(self, names: Sequence[str], option: str) -> None:
        """``ValueError`` naming ``option`` for a model with no backend in the configuration."""
        for name in names:
            if name not in self.pool:
                raise ValueError(f"{option}: model {name!r} is not configured (configured: {', '.join(self.pool.names) or 'none'})")


@asynccontextmanager
async def strategy_host(config_path: Path | None, bank_path: Path | None) -> AsyncIterator[StrategyHost]:
    """The host over ``bank_path`` and ``config_path`` (their defaults as ``smcs ask`` takes them)."""
    config, bank_file = bundled.config_and_bank(config_path, bank_path)
    bank = Bank.open(bank_file)
    embedder = as_async(make_embedder(config.embedder or EmbedderConfig()))
    check_compatible(embedder.info, bank)
    router = Router(bank, fit_policy(config.policy, bank.n_models))
    async with ModelPool.from_config(config.models) as pool:
        yield StrategyHost(config, bank, router, pool, embedder, answer_models(bank.model_names, pool))
