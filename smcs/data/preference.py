"""``smcs data preference``: DPO pairs labelled by MoA as a pairwise reward model (MoAA: Wang et al., ICML 2025, §3.2).

Per instruction (a sans-I/O step generator, ``preference_steps``, hosted by ``smcs.runtime.host.StepHost``):

1. *Samples* (§3.2.1): the policy model answers the bare instruction ``samples`` times with distinct
   seeds at ``sample_temperature``, 0.8 by default (MoAA, Table 6: candidates sampled "with a temperature
   of 0.8"). Failed calls are left out; identical texts count once.
2. *Pairs*: every pair of the distinct samples (m(m−1)/2 of them) is judged by ``judge_pair``:
   - criteria filtering (§3.2.3, K.2): the criteria model picks three criteria for the pair;
   - proposer judges (K.3): every judge compares the pair under those criteria, once in each order
     (the samples shown as A, B, then as B, A: position bias cancels, §3.2.2);
   - aggregator judge (K.4): per order, reads that order's evaluations and answers ``[[A]]`` or ``[[B]]``.
   A pair is *decided* when both orders name the same sample; when they disagree (or a verdict is
   missing) it is a tie. Every judge call (criteria, proposers, aggregator) samples at
   ``judge_temperature``: None by default, each model's configured one (MoAA states none for its judges).
3. *Scores*: a decided pair gives its winner 1, a tie gives each side ½. The highest-scoring sample is
   ``chosen`` and the lowest ``rejected`` (§3.2.1; ties to the earlier sample for chosen and the later one
   for rejected). When every sample scores the same (every pair a tie), or fewer than two distinct samples
   were written, no record is written: the instruction goes to the skipped file with the reason.

The record: ``{"id", "prompt", "chosen", "rejected", "criteria", "judgements", "consistent", "scores",
"pairs", "metadata"}``. ``criteria`` and ``judgements`` are those of the chosen-vs-rejected pair itself
(both orders, each with every proposer's evaluation and the aggregator's meta-evaluation and verdict);
``consistent`` says whether that pair's two verdicts agreed on ``chosen`` (False when the pair was a tie or
went the other way and the win counts decided); ``scores`` is per distinct sample; ``pairs`` summarises
every pair (``a``, ``b``, ``winner`` (None: a tie), ``consistent``). ``metadata`` records the models, the
seed and both temperatures (None: each model's configured one).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from itertools import combinations
from typing import Any, Literal

import msgspec

from ..core.pipeline import CallModels, Emit, ModelCall, Step, call_evidence_fields, checked_results, derived_seed, role_generation
from ..core.prompts import question_messages
from ..strategies import StrategyFailed
from .prompts import DEFAULT_CRITERIA, aggregator_messages, criteria_messages, parse_criteria, parse_verdict, proposer_messages
from ..errors import InputError

# seed stages of the calls (derived_seed's ``stage``), apart from the strategies' 0 and 1
_SAMPLE, _CRITERIA, _PROPOSER, _AGGREGATOR = 0, 2, 3, 4
SAMPLE_TEMPERATURE = 0.8
"""The policy samples' temperature by default: MoAA's (Table 6)."""


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """One proposer judge's evaluation of one order (``error`` set when its call failed)."""

    model: str
    text: str = ""
    error: str | None = None


class JudgePass(msgspec.Struct, frozen=True, kw_only=True):
    """One order of a pair: samples ``a`` and ``b`` (indices) shown as A and B, the proposers'
    evaluations, the aggregator's meta-evaluation and its ``verdict`` (``A``, ``B``, None: none given),
    and the ``winner`` (a sample index, None without a verdict)."""

    a: int
    b: int
    evaluations: list[Evaluation]
    aggregator: str
    meta_evaluation: str = ""
    error: str | None = None
    verdict: Literal["A", "B"] | None = None
    winner: int | None = None


class PairJudgement(msgspec.Struct, frozen=True, kw_only=True, tag="pair_judgement"):
    """Event: a judged pair: the ``criteria`` (and the filter's answer), both passes, and the ``winner``
    (None: a tie, the verdicts disagreeing or missing); ``consistent``: both verdicts named it."""

    a: int
    b: int
    criteria: list[str]
    criteria_text: str
    passes: list[JudgePass]
    winner: int | None
    consistent: bool
    notes: list[str] = []


class PreferenceOutcome(msgspec.Struct, frozen=True, kw_only=True, tag="preference_outcome"):
    """Event (the last): the record to write, or the skipped record (``id``, ``reason``)."""

    record: dict[str, Any] | None = None
    skipped: dict[str, Any] | None = None


def call_text(result: object) -> tuple[str | None, str | None]:
    """(text, None) for a call that wrote text, (None, "kind: why") for one that failed or was empty."""
    fields = call_evidence_fields(result)  # type: ignore[arg-type]
    if fields.get("error") is not None:
        return None, f"{fields['error_kind']}: {fields['error']}"
    return str(fields["text"]), None


def judge_pair(
    question: str,
    texts: tuple[str, str],
    indices: tuple[int, int],
    *,
    judges: Sequence[str],
    aggregator: str,
    criteria_model: str,
    seed: int,
    pair: int = 0,
    temperature: float | None = None,
) -> Generator[Step, object, PairJudgement]:
    """Judge samples ``indices`` (texts ``texts``) of ``question``: one criteria call (stage
    ``reference``), the proposer judges on both orders in one ``CallModels`` (``reference``: judges ×
    [A=first, B=second], then the same with the order swapped), the aggregator on each order that has
    an evaluation (``aggregate``), every call at ``temperature`` (None: the model's configured one); emits
    and returns the ``PairJudgement``. ``pair`` numbers the pair within the request so that no two calls
    share a seed."""
    if not judges:
        raise InputError("judging needs at least one proposer judge")
    generation = role_generation("judge_temperature", temperature)
    notes: list[str] = []
    first, second = texts
    filter_call = ModelCall(model=criteria_model, messages=criteria_messages(question, first, second), seed=derived_seed(seed, pair, _CRITERIA),
                            generation=generation)
    (asked,) = checked_results((yield CallModels(stage="reference", calls=[filter_call])), [filter_call])
    criteria_text, why = call_text(asked)
    criteria = parse_criteria(criteria_text) if criteria_text is not None else None
    if criteria is None:
        notes.append(f"the criteria filter ({criteria_model}) {'failed (' + why + ')' if why else 'named no three known criteria'}: "
                     f"judged by {', '.join(DEFAULT_CRITERIA)}")
        criteria = list(DEFAULT_CRITERIA)
    orders = [(0, 1), (1, 0)]
    proposer_calls = [
        ModelCall(model=judge, messages=proposer_messages(question, texts[x], texts[y], criteria),
                  seed=derived_seed(seed, (pair * 2 + o) * len(judges) + j, _PROPOSER), generation=generation)
        for o, (x, y) in enumerate(orders) for j, judge in enumerate(judges)
    ]
    results = checked_results((yield CallModels(stage="reference", calls=proposer_calls)), proposer_calls)
    evaluations: list[list[Evaluation]] = [[], []]
    for n, (call, result) in enumerate(zip(proposer_calls, results)):
        text, why = call_text(result)
        evaluations[n // len(judges)].append(Evaluation(model=call.model, text=text or "", error=why))
    aggregator_calls, asked_orders = [], []
    for o, (x, y) in enumerate(orders):
        written = [e.text for e in evaluations[o] if e.error is None]
        if written:
            asked_orders.append(o)
            aggregator_calls.append(ModelCall(
                model=aggregator, messages=aggregator_messages(question, texts[x], texts[y], criteria, written),
                seed=derived_seed(seed, pair * 2 + o, _AGGREGATOR), generation=generation,
            ))
        else:
            notes.append(f"every proposer judge failed on order {'AB' if o == 0 else 'BA'}: no verdict for it")
    verdicts = checked_results((yield CallModels(stage="aggregate", calls=aggregator_calls)), aggregator_calls) if aggregator_calls else []
    passes = []
    for o, (x, y) in enumerate(orders):
        shown = (indices[x], indices[y])
        if o not in asked_orders:
            passes.append(JudgePass(a=shown[0], b=shown[1], evaluations=evaluations[o], aggregator=aggregator, error="no evaluation"))
            continue
        text, why = call_text(verdicts[asked_orders.index(o)])
        verdict = parse_verdict(text) if text is not None else None
        if text is not None and verdict is None:
            notes.append(f"the aggregator judge gave no [[A]]/[[B]] verdict on order {'AB' if o == 0 else 'BA'}")
        winner = None if verdict is None else shown[0] if verdict == "A" else shown[1]
        passes.append(JudgePass(a=shown[0], b=shown[1], evaluations=evaluations[o], aggregator=aggregator,
                                meta_evaluation=text or "", error=why, verdict=verdict, winner=winner))  # type: ignore[arg-type]
    agreed = passes[0].winner is not None and passes[0].winner == passes[1].winner
    if not agreed and passes[0].winner is not None and passes[1].winner is not None:
        notes.append("the two orders' verdicts disagree: a tie")
    judgement = PairJudgement(
        a=indices[0], b=indices[1], criteria=criteria, criteria_text=criteria_text or "", passes=passes,
        winner=passes[0].winner if agreed else None, consistent=agreed, notes=notes,
    )
    yield Emit(judgement)
    return judgement


def preference_steps(
    ident: str,
    question: str,
    *,
    policy_model: str,
    samples: int,
    judges: Sequence[str],
    aggregator: str,
    criteria_model: str,
    seed: int,
    sample_temperature: float | None = SAMPLE_TEMPERATURE,
    judge_temperature: float | None = None,
) -> Generator[Step, object, PreferenceOutcome]:
    """The whole preference job for one instruction (see the module docstring); the last event (and the
    return value) is the ``PreferenceOutcome``. ``StrategyFailed`` when no sample was written."""
    if samples < 2:
        raise InputError(f"--samples must be >= 2 (a pair needs two responses), got {samples}")
    generation = role_generation("sample_temperature", sample_temperature)
    calls = [ModelCall(model=policy_model, messages=question_messages(question), seed=derived_seed(seed, i, _SAMPLE), generation=generation)
             for i in range(samples)]
    results = checked_results((yield CallModels(stage="reference", calls=calls)), calls)
    written: list[str] = []
    failures = []
    for result in results:
        text, why = call_text(result)
        if text is None:
            failures.append(why)
        elif text.strip() not in {w.strip() for w in written}:
            written.append(text)
    meta = {"policy_model": policy_model, "samples": samples, "judges": list(judges), "aggregator": aggregator,
            "criteria_model": criteria_model, "seed": seed, "sample_temperature": sample_temperature,
            "judge_temperature": judge_temperature}
    if not written:
        raise StrategyFailed(f"no sample of {policy_model} was written ({'; '.join(map(str, failures))})", [])
    if len(written) < 2:
        reason = f"fewer than two distinct samples ({len(written)} distinct of {samples}; {len(failures)} failed)"
        return (yield from _finish(PreferenceOutcome(skipped={"id": ident, "reason": reason, "metadata": meta})))
    judged: list[PairJudgement] = []
    for p, (i, j) in enumerate(combinations(range(len(written)), 2)):
        judged.append((yield from judge_pair(question, (written[i], written[j]), (i, j), judges=judges, aggregator=aggregator,
                                             criteria_model=criteria_model, seed=seed, pair=p, temperature=judge_temperature)))
    scores = [0.0] * len(written)
    for judgement in judged:
        if judgement.winner is None:
            scores[judgement.a] += 0.5
            scores[judgement.b] += 0.5
        else:
            scores[judgement.winner] += 1.0
    chosen = max(range(len(written)), key=lambda k: (scores[k], -k))
    rejected = min(range(len(written)), key=lambda k: (scores[k], -k))
    pairs = [{"a": p.a, "b": p.b, "winner": p.winner, "consistent": p.consistent} for p in judged]
    if scores[chosen] == scores[rejected]:
        skipped = {"id": ident, "reason": "no pair was decided: every sample scores the same", "scores": scores, "pairs": pairs,
                   "judgements": [msgspec.to_builtins(p) for p in judged], "metadata": meta}
        return (yield from _finish(PreferenceOutcome(skipped=skipped)))
    direct = next(p for p in judged if {p.a, p.b} == {chosen, rejected})
    record = {
        "id": ident, "prompt": question, "chosen": written[chosen], "rejected": written[rejected],
        "criteria": direct.criteria, "judgements": msgspec.to_builtins(direct.passes), "consistent": direct.winner == chosen,
        "scores": scores, "pairs": pairs, "notes": [n for p in judged for n in p.notes], "metadata": meta,
    }
    return (yield from _finish(PreferenceOutcome(record=record)))


def _finish(outcome: PreferenceOutcome) -> Generator[Step, object, PreferenceOutcome]:
    yield Emit(outcome)
    return outcome
