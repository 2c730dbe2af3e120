"""Running strategies in this process: the bank, its router, the configured models and the embedder,
set up once, for ``smcs ask`` (one question) and the ``smcs data`` jobs (many); their steps are performed by
a ``StepHost`` that routes in-process.

    config, bank_path = bundled.config_and_bank(config_path, bank_path)
    async with local_runtime(config, bank_path) as runtime:
        async for event in runtime.events(spec, params, question, seed=7, task="math"):
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..backends.pool import ModelPool
from ..bank import Bank
from ..config import Config
from ..core import Policy, Router
from ..core.pipeline import AnswerResult
from ..core.prompts import Task
from ..core.query_text import query_texts
from ..embed import AsyncEmbedder, EmbedderConfig, as_async, check_compatible, make_embedder
from ..errors import InputError
from ..progress import Steps
from ..strategies import StrategyContext, StrategyResult, StrategySpec
from .host import StepHost, answer_models


@dataclass
class LocalRuntime:
    """The bank, router, models and embedder strategies run with here; ``usable`` are the bank's models
    that have a backend; ``host`` performs the steps."""

    config: Config
    bank: Bank
    router: Router
    embedder: AsyncEmbedder
    usable: list[str]
    host: StepHost

    @property
    def pool(self) -> ModelPool:
        """The configured models' backends."""
        return self.host.pool

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
    ) -> AsyncIterator[msgspec.Struct]:
        """The strategy's events on ``question`` as they happen; the last is its result."""
        ctx = self.context(spec, question, seed, task, await self.query(spec, question), policy)
        async with aclosing(self.host.events(spec.run(ctx, params))) as stream:
            async for event in stream:
                yield event

    async def answer(
        self, spec: StrategySpec, params: msgspec.Struct, question: str, seed: int, task: Task | None
    ) -> StrategyResult | AnswerResult:
        """The strategy's result on ``question``."""
        ctx = self.context(spec, question, seed, task, await self.query(spec, question))
        result: StrategyResult | AnswerResult = await self.host.run(spec.run(ctx, params))
        return result

    def require_configured(self, names: Sequence[str], option: str) -> None:
        """``InputError`` naming ``option`` for a model with no backend in the configuration."""
        for name in names:
            if name not in self.pool:
                raise InputError(f"{option}: model {name!r} is not configured (configured: {', '.join(self.pool.names) or 'none'})")


@asynccontextmanager
async def local_runtime(config: Config, bank_path: Path) -> AsyncIterator[LocalRuntime]:
    """The runtime over ``bank_path`` with ``config``'s models and embedder (refused if the bank was built
    by another embedder); the models' backends are closed at the end. The bank's hashes are verified first
    (``Bank.open(verify=True)``: a damaged file is refused, named; progress on stderr for a large bank). A
    policy K above the bank's models is clamped by the router, which says so."""
    bank = Bank.open(bank_path, verify=True, progress=Steps(f"smcs: verifying bank {bank_path}"))
    embedder = as_async(make_embedder(config.embedder or EmbedderConfig()))
    check_compatible(embedder.info, bank)
    router = Router(bank, config.policy)
    async with ModelPool.from_config(config.models) as pool:
        host = StepHost(pool, embedder, timeouts=dict(config.answer.timeouts))
        yield LocalRuntime(config, bank, router, embedder, answer_models(bank.model_names, pool), host)
