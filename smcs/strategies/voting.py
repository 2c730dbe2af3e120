"""Voting: majority vote over models, and self-consistency over one model's samples.

Each response's answer is extracted as the bank's checkers extract it (``smcs.grading.checkers``):
``multiple_choice`` → ``extract_choice`` (the letter), ``math`` → ``extract_boxed`` and ``numeric`` →
``extract_number`` (two answers agree when ``math_equivalent``: equal after ``normalise_math``, or equal
numbers within a relative 1e-6), ``code``, ``exact`` and ``instruction`` → the last non-empty line,
normalised (case-folded, white space collapsed, surrounding quotes, markup and punctuation stripped);
without a task the whole response, normalised alike. The answer with the most votes wins and the answer
text is the response of its first voter. Voters come in rank order, so a tie goes to the answer of the
higher-ranked voter: ``majority-vote`` ranks models by prior vote (RPS, Eq 4; by bank accuracy when no
router is given), ``self-consistency`` its samples by their order. Failed calls and responses with no
extractable answer do not vote (noted); with no vote at all the answer is the top-ranked response.

``majority-vote``: every usable model (or the top ``k`` by prior) answers once. ``self-consistency``
[Wang et al. 2022, as used beside MoA]: the bank's most accurate usable model (or ``model``) is sampled
``samples`` times (distinct seeds) at ``sample_temperature``, 0.7 by default (the temperature MoA and
Self-MoA sample at); ``majority-vote``'s voters at ``voter_temperature``, None by default (each model's
configured one).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Annotated

import msgspec

from ..grading.checkers import extract_boxed, extract_choice, extract_number, math_equivalent
from ..core.pipeline import Step
from ..core.prompts import Task, question_messages
from .base import Recorder, StrategyCall, StrategyContext, StrategyPlan, StrategyResult, Temperature, emit

_SURROUNDING = " \t\n\"'`*_“”‘’«».,;:!?"


class MajorityVoteParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``majority-vote``: ``k`` None = every usable model votes, else the top ``k`` by prior vote; the
    voters sample at ``voter_temperature`` (None: each model's configured one)."""

    k: Annotated[int, msgspec.Meta(ge=1)] | None = None
    voter_temperature: Temperature | None = None


class SelfConsistencyParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``self-consistency``: ``model`` None = the bank's most accurate usable model, sampled ``samples`` times
    at ``sample_temperature`` (None: its configured one)."""

    model: str | None = None
    samples: Annotated[int, msgspec.Meta(ge=1)] = 5
    sample_temperature: Temperature | None = 0.7


def normalised(text: str) -> str | None:
    """``text`` case-folded with white space collapsed and surrounding quotes, markup and punctuation
    stripped; None when nothing is left."""
    flat = " ".join(text.split()).casefold().strip(_SURROUNDING)
    return flat or None


def _final_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return normalised(lines[-1]) if lines else None


def extractor(task: Task | None) -> Callable[[str], str | None]:
    """How the answer of a ``task`` response is extracted (see the module docstring)."""
    if task == "multiple_choice":
        return extract_choice
    if task == "math":
        return extract_boxed
    if task == "numeric":
        return extract_number
    if task is None:
        return normalised
    return _final_line


def agreement(task: Task | None) -> Callable[[str, str], bool]:
    """Whether two extracted answers of a ``task`` response are the same answer."""
    if task in ("math", "numeric"):
        return math_equivalent
    return str.__eq__


def tally(voters: Sequence[StrategyCall], same: Callable[[str, str], bool]) -> list[tuple[str, list[StrategyCall]]]:
    """The distinct answers of ``voters`` (in rank order, each with an extracted answer), each with its
    voters: an answer is named by its first voter's extraction; groups in order of their first voter."""
    groups: list[tuple[str, list[StrategyCall]]] = []
    for voter in voters:
        answer = voter.extracted
        assert answer is not None
        group = next((g for g in groups if same(answer, g[0])), None)
        if group is None:
            groups.append((answer, [voter]))
        else:
            group[1].append(voter)
    return groups


def majority_vote(ctx: StrategyContext, params: MajorityVoteParams) -> Generator[Step, object, StrategyResult]:
    """Every usable model (or the top ``k`` by prior) answers; the most common answer wins."""
    rec = Recorder(ctx, "majority-vote", {"voter": params.voter_temperature})
    voters, scores, kind, decision = yield from ctx.ranking(params.k, strategy="majority-vote")
    plan = StrategyPlan(strategy="majority-vote", models=voters, scores=scores, score_kind=kind, decision=decision)
    yield emit(plan)
    calls = yield from rec.ask_all(voters, "voter", question_messages(ctx.question, ctx.task), extractor(ctx.task))
    return (yield from _decide(rec, calls, plan, params, f"the {kind} rank of the models"))


def self_consistency(ctx: StrategyContext, params: SelfConsistencyParams) -> Generator[Step, object, StrategyResult]:
    """One model sampled ``samples`` times; the most common answer wins."""
    rec = Recorder(ctx, "self-consistency", {"sample": params.sample_temperature})
    model = ctx.require_model(params.model, "model") if params.model is not None else ctx.best()
    assert model is not None  # a context has at least one model
    plan = StrategyPlan(strategy="self-consistency", models=[model], scores=[ctx.accuracy.get(model, float("nan"))], score_kind="accuracy")
    yield emit(plan)
    calls = yield from rec.ask_all([model] * params.samples, "sample", question_messages(ctx.question, ctx.task), extractor(ctx.task))
    return (yield from _decide(rec, calls, plan, params, "the order of the samples"))


def _decide(
    rec: Recorder, calls: list[StrategyCall], plan: StrategyPlan, params: msgspec.Struct, tie_rule: str
) -> Generator[Step, object, StrategyResult]:
    """The vote over ``calls`` (in rank order) and the result (see the module docstring)."""
    answered = [c for c in calls if c.ok]
    unparsed = [c for c in answered if c.extracted is None]
    if unparsed:
        who = ", ".join(f"{c.role} {c.index} ({c.model})" for c in unparsed)
        rec.notes.append(f"no answer could be extracted from {len(unparsed)} response(s), which did not vote: {who}")
    groups = tally([c for c in answered if c.extracted is not None], agreement(rec.ctx.task))
    if not groups:
        top = rec.answer_with(answered, "no response had an extractable answer")
        return (yield from rec.finish(top.text, top.position, plan, params))
    most = max(len(members) for _, members in groups)
    tied = [answer for answer, members in groups if len(members) == most]
    if len(tied) > 1:
        rec.notes.append(f"tie at {most} vote(s) between {', '.join(map(repr, tied))}: broken by {tie_rule}")
    winner = next(members for _, members in groups if len(members) == most)[0]
    votes = {answer: len(members) for answer, members in groups}
    return (yield from rec.finish(winner.text, winner.position, plan, params, votes))
