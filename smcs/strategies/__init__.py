"""The baselines beside SMCS as sans-I/O step machines, and SMCS itself, under one interface.

A strategy is a generator function ``(ctx: StrategyContext, params) -> Generator[Step, object, result]``
speaking the step protocol of ``smcs.core.pipeline``, so ``smcs.runtime.host.StepHost`` hosts any of them
(``smcs ask --strategy NAME``). ``STRATEGIES`` names them; ``parse_params`` turns ``--option key=value``
pairs into a strategy's parameters, with errors naming the option; ``base`` has the shared types and
each family's module says what it implements from which paper.

    ctx = StrategyContext.from_router(router, question, usable, task="math", seed=7, query=embedding)
    steps = STRATEGIES["moa-lite"].run(ctx, parse_params("moa-lite", {"proposers": "3"}))
    async for event in StepHost(pool, embedder).events(steps): ...   # StrategyPlan, StrategyCall …, StrategyResult
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from ..core.pipeline import AnswerResult, Step
from ..core.policy import Policy, fit_policy
from ..core.router import Router
from .base import (
    Planned,
    Recorder,
    StrategyCall,
    StrategyContext,
    StrategyError,
    StrategyEvent,
    StrategyFailed,
    StrategyPlan,
    StrategyResult,
)
from .moa import MoaLiteParams, MoaParams, SelfMoaParams, SelfMoaSeqParams, moa, moa_lite, self_moa, self_moa_seq
from .routing import SimpleRouterParams, SingleParams, SymbolicMoeParams, simple_router, single, symbolic_moe
from .smcs import SmcsParams, smcs
from .voting import MajorityVoteParams, SelfConsistencyParams, majority_vote, self_consistency

StrategyRun = Callable[[StrategyContext, Any], Generator[Step, object, StrategyResult | AnswerResult]]


@dataclass(frozen=True)
class StrategySpec:
    """One strategy: its name, generator function, parameter Struct, source and whether it routes the
    question (and so needs its embedding)."""

    name: str
    run: StrategyRun
    params: type[msgspec.Struct]
    paper: str
    summary: str
    needs_query: bool

    def context(
        self,
        router: Router,
        question: str,
        models: Sequence[str],
        *,
        policy: Policy,
        task: str | None = None,
        seed: int | None = None,
        query: np.ndarray | None = None,
        fallback_aggregator: bool = True,
    ) -> StrategyContext:
        """``StrategyContext.from_router`` for this strategy: K, k_drop and the quorum of ``policy`` are the
        SMCS pipeline's, so for every other strategy they are fitted to the bank (``fit_policy``)."""
        if self.name != "smcs":
            policy = fit_policy(policy, router.bank.n_models)
        return StrategyContext.from_router(
            router, question, models, task=task, seed=seed, query=query, policy=policy, fallback_aggregator=fallback_aggregator
        )


STRATEGIES: dict[str, StrategySpec] = {
    spec.name: spec
    for spec in [
        StrategySpec("smcs", smcs, SmcsParams, "SMCS (Tang, Cao et al. 2025) §3", "the SMCS pipeline: RPS referencers, n prior-sampled aggregations, Eq 7 selection", True),
        StrategySpec("moa", moa, MoaParams, "MoA (Wang et al., ICLR 2025) §2.2 Eq 1; Self-MoA (Li et al. 2025) B.3", "layered Mixture-of-Agents, then one aggregator", True),
        StrategySpec("moa-lite", moa_lite, MoaLiteParams, "MoA (Wang et al., ICLR 2025) §3.1, Table 2", "MoA with 2 layers: the proposers, then the aggregator", True),
        StrategySpec("self-moa", self_moa, SelfMoaParams, "Self-MoA (Li et al. 2025) §2, Fig. 2b", "the best model sampled n times, aggregated by itself", False),
        StrategySpec("self-moa-seq", self_moa_seq, SelfMoaSeqParams, "Self-MoA (Li et al. 2025) §C.5, Fig. 2c", "Self-MoA through a sliding window that repeats the current synthesis", False),
        StrategySpec("majority-vote", majority_vote, MajorityVoteParams, "-", "every usable model answers once; the most common extracted answer wins", True),
        StrategySpec("self-consistency", self_consistency, SelfConsistencyParams, "Wang et al. 2022", "the best model sampled n times; the most common extracted answer wins", False),
        StrategySpec("simple-router", simple_router, SimpleRouterParams, "SMCS (Tang, Cao et al. 2025) RPS, K = 1", "the top-prior model answers alone", True),
        StrategySpec("single", single, SingleParams, "-", "one named model answers alone", False),
        StrategySpec("symbolic-moe", symbolic_moe, SymbolicMoeParams, "in the spirit of Symbolic-MoE (Chen et al. 2025)", "k experts recruited by skill profiles, then one aggregator", True),
    ]
}


def result_models(result: StrategyResult | AnswerResult) -> list[str]:
    """The models whose calls a result's answer drew on (the calls that wrote text), in call order, once each."""
    if isinstance(result, StrategyResult):
        names = [c.model for c in result.calls if c.ok]
    else:
        names = [r.model for r in result.references if r.ok] + [a.aggregator for a in result.aggregations if a.ok]
    return list(dict.fromkeys(names))


def get_strategy(name: str) -> StrategySpec:
    """The strategy called ``name``; ``StrategyError`` listing them otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise StrategyError(f"unknown strategy {name!r} (strategies: {', '.join(STRATEGIES)})") from None


_AT_FIELD = re.compile(r"^(?P<message>.*) - at `\$\.(?P<field>\w+)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>.*)`$")


def parse_params(name: str, options: Mapping[str, object]) -> msgspec.Struct:
    """The parameters of strategy ``name`` from ``options`` (values may be strings, as ``--option
    key=value`` gives them: numbers, ``true``/``false`` and ``null`` are converted). ``StrategyError``
    naming the option and listing the strategy's options when one is unknown or invalid."""
    spec = get_strategy(name)
    try:
        return msgspec.convert(dict(options), spec.params, strict=False)
    except msgspec.ValidationError as exc:
        fields = [f.name for f in msgspec.structs.fields(spec.params)]
        where, unknown = _AT_FIELD.match(str(exc)), _UNKNOWN_FIELD.match(str(exc))
        why = f"option {where['field']}: {where['message']}" if where else f"unknown option {unknown['field']}" if unknown else str(exc)
        raise StrategyError(f"strategy {name}: {why} (its options: {', '.join(fields)})") from None


def parse_options(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict (a later key wins); ``StrategyError`` for one without ``=``."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StrategyError(f"--option must be KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


__all__ = [
    "STRATEGIES",
    "fit_policy",
    "MajorityVoteParams",
    "MoaLiteParams",
    "MoaParams",
    "Planned",
    "Recorder",
    "SelfConsistencyParams",
    "SelfMoaParams",
    "SelfMoaSeqParams",
    "SimpleRouterParams",
    "SingleParams",
    "SmcsParams",
    "StrategyCall",
    "StrategyContext",
    "StrategyError",
    "StrategyEvent",
    "StrategyFailed",
    "StrategyPlan",
    "StrategyResult",
    "StrategySpec",
    "SymbolicMoeParams",
    "get_strategy",
    "parse_options",
    "parse_params",
    "result_models",
]
