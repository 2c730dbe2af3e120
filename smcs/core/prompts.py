"""The prompts of the pipeline: per-task templates (SMCS Fig. 8) and the aggregator prompt (SMCS Fig. 9,
the Aggregate-and-Synthesize prompt of Mixture-of-Agents, Table 1).

A *task* says what kind of question it is and so which template frames it; the names are those of the
bank's question records. No task (None) sends the bare question with no system prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .messages import ChatMessage
from ..errors import InputError

Task = Literal["math", "numeric", "multiple_choice", "code", "exact", "instruction"]
TASKS: tuple[Task, ...] = ("math", "numeric", "multiple_choice", "code", "exact", "instruction")

_QUESTION = "Question: {question}."
TASK_SYSTEM_PROMPTS: dict[Task, str | None] = {
    # MATH (Fig. 8)
    "math": (
        "You are a math problem solver. Please solve the following math problem. Be sure to explain your "
        "solution in detail. The numerical values in the answer should be surrounded by `\\boxed`. The final "
        "answer should start with 'The answer is' and give the conclusion directly. Do not add any extra content."
    ),
    # AIME (Fig. 8): a single number as the answer
    "numeric": "Please reason step by step, and put your final answer within `\\boxed{}`.",
    # MedMCQA (Fig. 8); the MMLU-Pro one names a subject we do not have
    "multiple_choice": (
        'Provide your step-by-step reasoning first, and then print "The answer is (X)", where X is the answer '
        "choice (one capital letter), at the end of your response."
    ),
    # LiveCodeBench (Fig. 8)
    "code": (
        "You are an expert Python programmer. You will be given a question (problem specification) and will "
        "generate a correct Python program that matches the specification and passes all tests."
    ),
    # GPQA (Fig. 8)
    "exact": "You are a very intelligent assistant, who follows instructions directly.",
    # IFEval (Fig. 8): no system prompt
    "instruction": None,
}
TASK_USER_PROMPTS: dict[Task, str] = {task: _QUESTION for task in TASKS} | {"instruction": "Instruction: {question}."}

AGGREGATOR_PROMPT = (
    "You have been provided with a set of responses from various open-source models to the latest user query. "
    "Your task is to synthesize these responses into a single, high-quality response. It is crucial to "
    "critically evaluate the information provided in these responses, recognizing that some of it may be "
    "biased or incorrect. Your response should not simply replicate the given answers but should offer a "
    "refined, accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, "
    "coherent, and adheres to the highest standards of accuracy and reliability.\n\n"
    "Responses from models:"
)
"""SMCS Fig. 9 / MoA Table 1; the numbered references follow it."""


def check_task(task: str | None) -> Task | None:
    """``task`` if it is one of ``TASKS`` or None; ``ValueError`` naming the valid ones otherwise."""
    if task is not None and task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)} (or unset), got {task!r}")
    return task  # type: ignore[return-value]  # checked just above


def question_messages(question: str, task: Task | None = None) -> list[ChatMessage]:
    """The messages that ask a model ``question``: the task's system prompt (if any), then its user prompt."""
    if task is None:
        return [ChatMessage("user", question)]
    system = TASK_SYSTEM_PROMPTS[task]
    user = ChatMessage("user", TASK_USER_PROMPTS[task].format(question=question))
    return [ChatMessage("system", system), user] if system is not None else [user]


def aggregation_messages(question: str, references: Sequence[str], task: Task | None = None) -> list[ChatMessage]:
    """The aggregator's messages: the Aggregate-and-Synthesize system prompt with ``references`` numbered
    ``1.`` … in the given order (appended to the task's own system prompt when it has one), then the
    task's user prompt."""
    if not references:
        raise InputError("an aggregation needs at least one reference")
    block = AGGREGATOR_PROMPT + "".join(f"\n\n{i}. {text}" for i, text in enumerate(references, start=1))
    asked = question_messages(question, task)
    if asked[0].role == "system":
        return [ChatMessage("system", f"{asked[0].content}\n\n{block}"), *asked[1:]]
    return [ChatMessage("system", block), *asked]
