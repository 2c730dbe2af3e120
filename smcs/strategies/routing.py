"""Strategies that pick models for the question: one model (``simple-router``, ``single``) or a few
recruited experts (``symbolic-moe``).

``simple-router``: the usable model with the highest prior vote for the question (RPS, Eqs 2–5, with
K = 1) answers alone. ``single``: the named ``model`` answers alone.

``symbolic-moe``, in the spirit of Symbolic-MoE (Chen et al. 2025: skill-based recruiting of experts,
then one aggregator), with the bank standing in for its keyword annotator and validation set:

- *Skills of a bank question*: ``source:<source>`` (when the question has one), ``task:<task>`` (when
  its ``metadata.task`` is a string), and its ``keywords`` most informative word stems: lower-cased
  alphabetic words of three letters or more, stop words dropped, a plural or verb suffix (``-ing``,
  ``-ed``, ``-es``, ``-s``, ``-ly``) and then a final ``e`` stripped, ranked by inverse document frequency over the bank (ties
  alphabetical), counting only stems that two or more bank questions share and not all of them do.
- *Model profiles*: per model and skill, +1 for every bank question with that skill it answered
  correctly and −1 for every one it answered wrongly (unevaluated ones count 0), from the capability
  matrix.
- *The query's skills*: those of its ``neighbours`` most similar bank questions (the Router's support
  set, Eq 3), each weighted by the sum of those questions' similarities.
- *Recruiting*: a model's score is its local skill score (Σ over the query's skills of weight × profile)
  times its global strength (its bank accuracy); the ``k`` usable models with the highest scores are the
  experts (ties to higher accuracy, then bank order). They answer in parallel, and a fixed aggregator
  (the ``aggregator`` option, else the policy's aggregator if usable, else the bank's most accurate
  usable model) synthesises their answers with the Aggregate-and-Synthesize prompt. If the aggregation
  fails, the fallback aggregator retries and then the best expert's answer stands (noted).

Temperatures (``answerer_temperature``, ``expert_temperature``, ``aggregator_temperature``): None, the
model's configured one, by default: SMCS states one temperature for every call (0.7, A.3), the models'
configured default, and the Symbolic-MoE paper is not among this project's sources.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Generator, Sequence
from typing import Annotated

import msgspec
import numpy as np

from ..bank import Bank, Question
from ..core.pipeline import Step
from ..core.prompts import question_messages
from .base import Recorder, StrategyContext, StrategyError, StrategyPlan, StrategyResult, Temperature, aggregator_for, emit


class SimpleRouterParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``simple-router``: the answerer samples at ``answerer_temperature`` (None: its configured one)."""

    answerer_temperature: Temperature | None = None


class SingleParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``single``: ``model`` (required) answers alone, at ``answerer_temperature`` (None: its configured one)."""

    model: str | None = None
    answerer_temperature: Temperature | None = None


class SymbolicMoeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``symbolic-moe``: ``k`` experts recruited by skill; ``neighbours`` bank questions give the query's
    skills; ``keywords`` word-stem skills per bank question; ``aggregator`` as for ``moa``; the experts
    and the aggregator sample at ``expert_temperature`` and ``aggregator_temperature`` (None: the model's
    configured one)."""

    k: Annotated[int, msgspec.Meta(ge=1)] = 3
    neighbours: Annotated[int, msgspec.Meta(ge=1)] = 10
    keywords: Annotated[int, msgspec.Meta(ge=0)] = 3
    aggregator: str | None = None
    expert_temperature: Temperature | None = None
    aggregator_temperature: Temperature | None = None


def simple_router(ctx: StrategyContext, params: SimpleRouterParams) -> Generator[Step, object, StrategyResult]:
    """The top-prior usable model answers alone."""
    decision = yield from ctx.route_top(1, strategy="simple-router")
    plan = StrategyPlan(strategy="simple-router", models=decision.referencers, scores=decision.votes, score_kind="prior", decision=decision)
    return (yield from _alone(ctx, plan, params))


def single(ctx: StrategyContext, params: SingleParams) -> Generator[Step, object, StrategyResult]:
    """The named model answers alone."""
    if params.model is None:
        raise StrategyError(f"strategy single needs --option model=NAME (usable: {', '.join(ctx.models)})")
    model = ctx.require_model(params.model, "model")
    plan = StrategyPlan(strategy="single", models=[model], scores=[ctx.accuracy.get(model, math.nan)], score_kind="accuracy")
    return (yield from _alone(ctx, plan, params))


def _alone(ctx: StrategyContext, plan: StrategyPlan, params: SimpleRouterParams | SingleParams) -> Generator[Step, object, StrategyResult]:
    rec = Recorder(ctx, plan.strategy, {"answerer": params.answerer_temperature})
    yield emit(plan)
    (answer,) = yield from rec.ask_all(plan.models, "answerer", question_messages(ctx.question, ctx.task))
    return (yield from rec.finish(answer.text, answer.position, plan, params))


def symbolic_moe(ctx: StrategyContext, params: SymbolicMoeParams) -> Generator[Step, object, StrategyResult]:
    """Skill-based recruiting of experts, then one aggregator (see the module docstring)."""
    rec = Recorder(ctx, "symbolic-moe", {"expert": params.expert_temperature, "aggregator": params.aggregator_temperature})
    decision = yield from ctx.route_top(1, strategy="symbolic-moe")
    assert ctx.router is not None  # route_top() checked it
    bank = ctx.router.bank
    skills = question_skills(bank.questions, params.keywords)
    weights: dict[str, float] = defaultdict(float)
    for row, similarity in zip(decision.support_rows[: params.neighbours], decision.support_similarities[: params.neighbours]):
        for skill in skills[row]:
            weights[skill] += similarity
    profiles = skill_profiles(bank, skills, ctx.models)
    scores = {
        m: sum(w * profiles[m].get(s, 0) for s, w in weights.items()) * _strength(ctx.accuracy.get(m, math.nan))
        for m in ctx.models
    }
    order = sorted(ctx.models, key=lambda m: (-scores[m], -_strength(ctx.accuracy.get(m, math.nan)), ctx.models.index(m)))
    experts = order[: params.k]
    if params.k > len(ctx.models):
        rec.notes.append(f"k={params.k} exceeds the {len(ctx.models)} usable models: all of them are experts")
    aggregator = aggregator_for(ctx, params.aggregator)
    plan = StrategyPlan(
        strategy="symbolic-moe", models=experts, aggregator=aggregator, scores=[scores[m] for m in experts],
        score_kind="skill", decision=decision, skills=dict(sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    yield emit(plan)
    answers = yield from rec.ask_all(experts, "expert", question_messages(ctx.question, ctx.task))
    written = [c for c in answers if c.ok]
    final = yield from rec.synthesize(written, aggregator, 2)
    if final is None:
        final = rec.answer_with(written, "no aggregation was written")
    return (yield from rec.finish(final.text, final.position, plan, params))


def _strength(accuracy: float) -> float:
    return 0.0 if math.isnan(accuracy) else accuracy


_WORD = re.compile(r"[a-z]{3,}")
_SUFFIXES = ("ing", "ed", "es", "ly", "s")
STOP_WORDS = frozenset(
    "the and for with that this what which who whom whose when where why how are was were has have had not "
    "but all any can will would should could there their them then than these those each such only also "
    "more most some other about over under between after before does did its into from your you our out "
    "one two use give find write given let get make".split()
)


def stem(word: str) -> str:
    """``word`` without one plural or verb suffix and then a final ``e``, while three letters or more
    remain ("solving", "solves", "solve" → "solv")."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _stems(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def question_skills(questions: Sequence[Question], keywords: int) -> list[set[str]]:
    """The skills of each bank question (see the module docstring), in row order."""
    stems = [_stems(q.text) for q in questions]
    frequency = Counter(s for row in stems for s in row)
    n = len(questions)
    skills = []
    for question, row in zip(questions, stems):
        informative = sorted((s for s in row if 2 <= frequency[s] < n), key=lambda s: (frequency[s], s))
        found = {f"word:{s}" for s in informative[:keywords]}
        if question.source:
            found.add(f"source:{question.source}")
        task = question.metadata.get("task")
        if isinstance(task, str) and task:
            found.add(f"task:{task}")
        skills.append(found)
    return skills


def skill_profiles(bank: Bank, skills: Sequence[set[str]], models: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per model of ``models``: per skill, +1 per bank question with it answered correctly, −1 per one
    answered wrongly."""
    capability = np.asarray(bank.capability)
    profiles: dict[str, dict[str, int]] = {}
    for model in models:
        outcomes = capability[bank.model_index(model)]
        profile: dict[str, int] = defaultdict(int)
        for row_skills, outcome in zip(skills, outcomes.tolist()):
            if outcome >= 0:
                for skill in row_skills:
                    profile[skill] += 1 if outcome == 1 else -1
        profiles[model] = dict(profile)
    return profiles
