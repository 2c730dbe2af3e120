"""Running strategies in this process: the bank, its router, the configured models and the embedder,
set up once, for ``smcs ask`` (one question) and the ``smcs data`` jobs (many).

    config, bank_path = bundled.config_and_bank(config_path, bank_path)
    async with strategy_host(config, bank_path) as host:
        async for event in host.events(spec, params, question, seed=7, task="math"):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec

from smcs.bank import Bank
from smcs.config import Config
from smcs.core import Policy, Router
from smcs.core.pipeline import AnswerResult, Event, Stage, Step
from smcs.core.prompts import Task
from smcs.core.query_text import query_texts
from smcs.backends.pool import ModelPool
from smcs.runtime.dispatch import answer_models, run_steps
from smcs.embed import AsyncEmbedder, EmbedderConfig, as_async, check_compatible, make_embedder
from smcs.strategies import StrategyContext, StrategyEvent, StrategySpec, fit_policy


@dataclass
class StrategyHost:
    """The bank, router, models and embedder a strategy runs with; ``usable`` are the bank's models that
    have a backend."""

    config: Config
    bank: Bank
    router: Router
    pool: ModelPool
    embedder: AsyncEmbedder
    usable: list[str]

    @property
    def timeouts(self) -> dict[Stage, float | None]:
        """Per pipeline stage, the limit of one call (``[answer]``)."""
        return dict(self.config.answer.timeouts)

    def context(
        self, spec: StrategySpec, question: str, seed: int | None, task: Task | None, query: Any = None,
        policy: Policy | None = None,
    ) -> StrategyContext:
        """The strategy's context for ``question`` (``query``: its embedding, when the strategy routes;
        ``policy``: None for the configuration's). K, k_drop and the quorum are the SMCS pipeline's, so for
        the other strategies they are fitted to the bank."""
        return spec.context(
            self.router, question, self.usable, task=task, seed=seed, query=query,
            policy=self.config.policy if policy is None else policy,
            fallback_aggregator=self.config.answer.fallback_aggregator,
        )

    async def query(self, spec: StrategySpec, question: str) -> Any:
        """The question's embedding (under the bank's query-text rule) when ``spec`` routes it, else None."""
        if not spec.needs_query:
            return None
        return (await self.embedder.embed(query_texts([question], self.bank.manifest.embedder.query_text)))[0]

    async def events(
        self, spec: StrategySpec, params: msgspec.Struct, question: str, seed: int | None, task: Task | None,
        policy: Policy | None = None,
    ) -> AsyncIterator[Event | StrategyEvent]:
        """The strategy's events on ``question`` as they happen; the last is its result."""
        ctx = self.context(spec, question, seed, task, await self.query(spec, question), policy)
        steps = spec.run(ctx, params)
        # run_steps is annotated for the pipeline's generator; it hosts any generator of pipeline steps
        hosted = run_steps(cast(Generator[Step, object, AnswerResult], steps), self.pool, self.embedder, self.timeouts)
        async with aclosing(hosted) as stream:
            async for event in stream:
                yield event

    def require_configured(self, names: Sequence[str], option: str) -> None:
        """``ValueError`` naming ``option`` for a model with no backend in the configuration."""
        for name in names:
            if name not in self.pool:
                raise ValueError(f"{option}: model {name!r} is not configured (configured: {', '.join(self.pool.names) or 'none'})")


@asynccontextmanager
async def strategy_host(config: Config, bank_path: Path) -> AsyncIterator[StrategyHost]:
    """The host over ``bank_path`` with ``config``'s models and embedder (refused if the bank was built by
    another embedder); the models' backends are closed at the end."""
    bank = Bank.open(bank_path)
    embedder = as_async(make_embedder(config.embedder or EmbedderConfig()))
    check_compatible(embedder.info, bank)
    router = Router(bank, fit_policy(config.policy, bank.n_models))
    async with ModelPool.from_config(config.models) as pool:
        yield StrategyHost(config, bank, router, pool, embedder, answer_models(bank.model_names, pool))
