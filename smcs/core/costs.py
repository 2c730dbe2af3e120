"""Each model's expected cost of answering a question, from what the bank records.

A bank question may record what answering it cost under each model: ``metadata["cost"][model]`` (the
RouterBench importer fills it from the published per-query costs), or the tokens a model used on it,
``metadata["tokens"][model] = {"prompt": p, "completion": c}`` (``smcs build`` records them), which the
model's prices (``ModelInfo.cost_per_input_token``, ``cost_per_output_token``) turn into a cost. A
recorded cost wins over tokens. Costs are in whatever unit the deployment budgets in; the router never
mixes a query's own cost into its decision.

The expected cost of model r for a query is the similarity-weighted mean of its cost over the support set
of Eq (3), c_r = Σ_{i∈I} Ŝ_i·C_ri / Σ_{i∈I} Ŝ_i, where a question that records no cost for r counts at r's
mean over the bank; with an empty support set (or Σ Ŝ = 0) it is that mean. A model with no cost on any
bank question has an unknown (NaN) cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..bank import Bank, ModelInfo, Question

COST_KEY = "cost"
"""``Question.metadata`` key of the recorded cost per model name."""
TOKENS_KEY = "tokens"
"""``Question.metadata`` key of the tokens each model used: ``{model: {"prompt": p, "completion": c}}``."""


def _number(value: object) -> float:
    """``value`` as a non-negative finite float, else NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else math.nan


def recorded_cost(question: Question, model: str) -> float:
    """``question.metadata["cost"][model]`` as a float; NaN when it is not recorded (or not a cost)."""
    cost = question.metadata.get(COST_KEY)
    return _number(cost.get(model)) if isinstance(cost, dict) else math.nan


def token_cost(question: Question, model: ModelInfo) -> float:
    """What the tokens ``model`` used on ``question`` cost at its prices; NaN when they are not recorded."""
    tokens = question.metadata.get(TOKENS_KEY)
    used = tokens.get(model.name) if isinstance(tokens, dict) else None
    if not isinstance(used, dict):
        return math.nan
    prompt, completion = _number(used.get("prompt")), _number(used.get("completion"))
    return prompt * model.cost_per_input_token + completion * model.cost_per_output_token


def question_cost(question: Question, model: ModelInfo) -> float:
    """The cost of ``model`` answering ``question``: recorded, else from its tokens, else NaN."""
    cost = recorded_cost(question, model.name)
    return cost if not math.isnan(cost) else token_cost(question, model)


def cost_matrix(questions: Sequence[Question], models: Sequence[ModelInfo]) -> np.ndarray:
    """Q × R: ``question_cost`` of every question under every model (NaN where unknown)."""
    return np.array([[question_cost(q, m) for m in models] for q in questions], dtype=np.float64).reshape(len(questions), len(models))


def _has_costs(question: Question) -> bool:
    return COST_KEY in question.metadata or TOKENS_KEY in question.metadata


class CostTable:
    """The costs a bank snapshot records, prepared once for routing: each model's mean cost per bank
    question and, when any question records one, the N × R matrix of costs (unknown cells at the model's
    mean) that ``expected`` averages over a support set: question-major float64, so a support set's costs
    are |I| contiguous rows (one gather, one dot product; 8·N·R bytes, 120 MB at 1e6 questions and 15
    models)."""

    def __init__(self, per_question: np.ndarray | None, mean: np.ndarray) -> None:
        """``per_question``: N × R float64 or None (no question records a cost); ``mean``: R float64."""
        self.per_question = per_question
        self.mean = mean

    @classmethod
    def of(cls, bank: Bank) -> CostTable:
        """The cost table of ``bank`` (reads its questions: O(N·R) once per snapshot)."""
        questions = bank.questions
        if not any(_has_costs(q) for q in questions):
            return cls(None, np.full(bank.n_models, math.nan))
        costs = cost_matrix(questions, bank.models)
        known = np.isfinite(costs)
        counts = known.sum(axis=0)
        mean = np.divide(np.where(known, costs, 0.0).sum(axis=0), counts, out=np.full(bank.n_models, math.nan), where=counts > 0)
        filled = np.where(known, costs, mean[None, :])
        return cls(np.ascontiguousarray(filled, dtype=np.float64), mean)

    @property
    def known(self) -> np.ndarray:
        """Per model: whether the bank records any cost for it."""
        return np.isfinite(self.mean)

    def expected(self, rows: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """R: each model's expected cost for a query whose support set is ``rows`` with similarities ``sims``
        (the module docstring's c_r); NaN for a model with no recorded cost."""
        if self.per_question is None or rows.size == 0:
            return self.mean.copy()
        weights = np.asarray(sims, dtype=np.float64)
        total = float(weights.sum())
        if total <= 0.0:
            return self.mean.copy()
        return np.dot(weights, self.per_question.take(rows, axis=0)) / total
