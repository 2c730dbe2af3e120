"""``smcs data sft``: chat-SFT records from a strategy's answers (MoAA stage 1: Wang et al., ICML 2025, §3.1.2, Eq 2).

Per instruction the strategy (default ``moa-lite``, the two-layer MoA the paper uses "to expedite the
process"; any registered strategy, with ``--option`` parameters) answers the instruction and the record is

    {"id", "messages": [{"role": "user", "content": INSTRUCTION}, {"role": "assistant", "content": ANSWER}],
     "metadata": {"strategy", "models", "seed", "params", "bank_version"}}

the conversational form TRL-style SFT trainers read. The user turn is the instruction as given (a
``--task`` template frames what the models are asked, not what is trained on); ``models`` are the models
whose calls wrote text, in call order; ``seed`` the request seed (derived from ``--seed`` and the id).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..core.pipeline import AnswerResult
from ..core.prompts import Task
from ..runtime.local import LocalRuntime
from ..strategies import StrategyResult, StrategySpec, result_models
from .jobs import Instruction, Outcome, item_seed


def sft_record(item: Instruction, result: StrategyResult | AnswerResult, strategy: str, seed: int) -> dict[str, Any]:
    """The SFT record of ``item`` answered by ``result``."""
    params = result.params if isinstance(result, StrategyResult) else {}
    return {
        "id": item.id,
        "messages": [{"role": "user", "content": item.instruction}, {"role": "assistant", "content": result.text}],
        "metadata": {"strategy": strategy, "models": result_models(result), "seed": seed, "params": params,
                     "bank_version": result.bank_version},
    }


async def sft_work(runtime: LocalRuntime, spec: StrategySpec, params: msgspec.Struct, item: Instruction, base_seed: int,
                   task: Task | None) -> Outcome:
    """Answer one instruction with the strategy; its record."""
    seed = item_seed(base_seed, item.id)
    result = await runtime.answer(spec, params, item.instruction, seed, task)
    return Outcome(record=sft_record(item, result, spec.name, seed))
