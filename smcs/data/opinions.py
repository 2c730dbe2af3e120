"""``smcs data opinions``: Mixture-of-Opinions-style SFT records (MoO: SFT whose context carries
other models' responses, "opinions").

Per instruction (``opinion_steps``, one step generator hosted by ``smcs.runtime.host.StepHost``): every opinion model
answers the instruction once (one ``CallModels``, stage ``reference``, distinct seeds, at
``temperature``: None by default, each model's configured one), then the target strategy (default
``moa-lite``, with its own roles' temperatures) answers it. The record:

    {"id", "messages": [{"role": "system", "content": OPINIONS}, {"role": "user", "content": INSTRUCTION},
                        {"role": "assistant", "content": TARGET}],
     "metadata": {"target_strategy", "target_models", "opinion_models", "failed_opinions", "seed", "opinion_temperature"}}

where OPINIONS is ``smcs.data.prompts.opinions_block``: a short instruction to weigh the opinions, then
each ``Opinion i:`` in the order of ``--models`` (anonymous in the text; ``opinion_models`` names them in
that order). Opinion calls that failed are left out (and named in ``failed_opinions``); with none
written, or no target answer, the instruction fails and a rerun retries it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import msgspec

from ..core.pipeline import AnswerResult, CallModels, Emit, ModelCall, Step, checked_results, derived_seed, role_generation
from ..core.prompts import question_messages
from ..runtime.local import LocalRuntime
from ..strategies import StrategyContext, StrategyFailed, StrategyResult, StrategySpec, result_models
from .jobs import Instruction, Outcome, item_seed
from .preference import call_text
from .prompts import opinions_block

_OPINION = 5  # derived_seed stage of the opinion calls


class OpinionsOutcome(msgspec.Struct, frozen=True, kw_only=True, tag="opinions_outcome"):
    """Event (the last): the opinions written (model, text), the models that failed, the target's result and
    the opinions' temperature (None: each model's configured one)."""

    opinions: list[tuple[str, str]]
    failed: list[str]
    target: StrategyResult | AnswerResult
    temperature: float | None = None


def opinion_steps(
    ctx: StrategyContext, spec: StrategySpec, params: msgspec.Struct, models: Sequence[str], temperature: float | None = None
) -> Generator[Step, object, OpinionsOutcome]:
    """The opinions of ``models`` on ``ctx.question`` at ``temperature``, then the target strategy's answer
    (see the module docstring)."""
    generation = role_generation("opinion_temperature", temperature)
    calls = [ModelCall(model=m, messages=question_messages(ctx.question, ctx.task), seed=derived_seed(ctx.seed, i, _OPINION), generation=generation)
             for i, m in enumerate(models)]
    results = checked_results((yield CallModels(stage="reference", calls=calls)), calls)
    opinions, failed = [], []
    for call, result in zip(calls, results):
        text, why = call_text(result)
        if text is None:
            failed.append(f"{call.model}: {why}")
        else:
            opinions.append((call.model, text))
    if not opinions:
        raise StrategyFailed(f"no opinion model answered ({'; '.join(failed)})", [])
    target = yield from spec.run(ctx, params)
    outcome = OpinionsOutcome(opinions=opinions, failed=failed, target=target, temperature=temperature)
    yield Emit(outcome)
    return outcome


def opinions_record(item: Instruction, outcome: OpinionsOutcome, strategy: str, seed: int) -> dict[str, Any]:
    """The record of ``item`` from its ``outcome``."""
    return {
        "id": item.id,
        "messages": [
            {"role": "system", "content": opinions_block([text for _, text in outcome.opinions])},
            {"role": "user", "content": item.instruction},
            {"role": "assistant", "content": outcome.target.text},
        ],
        "metadata": {"target_strategy": strategy, "target_models": result_models(outcome.target),
                     "opinion_models": [m for m, _ in outcome.opinions], "failed_opinions": outcome.failed, "seed": seed,
                     "opinion_temperature": outcome.temperature},
    }


async def opinions_work(runtime: LocalRuntime, spec: StrategySpec, params: msgspec.Struct, models: Sequence[str],
                        item: Instruction, base_seed: int, task: Any, temperature: float | None = None) -> Outcome:
    """Gather the opinions (at ``temperature``) and the target answer of one instruction; its record."""
    seed = item_seed(base_seed, item.id)
    ctx = runtime.context(spec, item.instruction, seed, task, await runtime.query(spec, item.instruction))
    outcome: OpinionsOutcome = await runtime.host.run(opinion_steps(ctx, spec, params, models, temperature))
    return Outcome(record=opinions_record(item, outcome, spec.name, seed))
