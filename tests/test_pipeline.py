"""The SMCS step machine driven by a scripted host: no network, no model, deterministic.

The host here answers each step from a script (a function of the call) and records every step, so the
tests see exactly what the pipeline asked for, in what order, and what it selected.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from support.hosts import ScriptedHost

from smcs.core import Policy, RouteDecision
from smcs.core.messages import ChatMessage, Completion
from smcs.core.pipeline import (
    AggregationEvidence,
    CallFailed,
    CallModels,
    Emit,
    ModelCall,
    QuorumNotMet,
    ReferenceEvidence,
    Routed,
    smcs_pipeline,
)
from smcs.core.prompts import AGGREGATOR_PROMPT, TASK_SYSTEM_PROMPTS, aggregation_messages, check_task, question_messages
from smcs.kernels import reference

QUESTION = "What is 2+2?"
REFERENCERS = ["alpha", "beta", "gamma"]


def decision(subsets: list[list[str]] | None = None, aggregator: str = "alpha", seed: int = 11) -> RouteDecision:
    return RouteDecision(
        referencers=list(REFERENCERS),
        votes=[3.0, 2.0, 1.0],
        aggregator=aggregator,
        support_rows=[4, 1],
        support_similarities=[0.9, 0.8],
        subsets=subsets if subsets is not None else [["alpha", "beta"], ["alpha", "gamma"], ["beta", "gamma"]],
        seed=seed,
        bank_version="v000003",
    )


def completion(text: str, logprobs: list[float] | None = None) -> Completion:
    lp = [-0.1, -0.2] if logprobs is None else logprobs
    return Completion(text=text, token_logprobs=lp, logprobs_missing=not lp, completion_tokens=len(lp))


def reference_text(call: ModelCall) -> str:
    return f"{call.model} says 4"


def is_aggregation(call: ModelCall) -> bool:
    return AGGREGATOR_PROMPT in call.messages[0].content



def embed_by_hash(texts: list[str]) -> np.ndarray:
    """A deterministic 8-d vector per distinct text."""
    return np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(8) for t in texts])


AGGREGATION_LOGPROBS = {0: [-0.5, -0.7, -0.2], 1: [-0.05, -0.1], 2: [-1.0, -2.0]}


def default_answer(call: ModelCall) -> Completion:
    if not is_aggregation(call):
        return completion(reference_text(call))
    numbered = call.messages[0].content.split("Responses from models:")[1]
    index = {"alpha says 4\n\n2. beta": 0, "alpha says 4\n\n2. gamma": 1, "beta says 4\n\n2. gamma": 2}
    key = next(i for k, i in index.items() if k in numbered)
    return completion(f"synthesis {key}", AGGREGATION_LOGPROBS[key])


def test_steps_come_in_order_and_selection_follows_eq7():
    host = ScriptedHost(default_answer, embed_by_hash)
    result = host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3, lam=0.7)))

    kinds = [type(s.event).__name__ if isinstance(s, Emit) else f"{type(s).__name__}" for s in host.steps]
    assert kinds == [
        "Routed", "CallModels", "ReferenceEvidence", "ReferenceEvidence", "ReferenceEvidence",
        "CallModels", "EmbedTexts", "AggregationEvidence", "AggregationEvidence", "AggregationEvidence", "AnswerResult",
    ]
    (references,) = host.calls("reference")
    assert [c.model for c in references] == REFERENCERS
    assert all(c.messages == [ChatMessage("user", QUESTION)] for c in references)
    (aggregations,) = host.calls("aggregate")
    assert [c.model for c in aggregations] == ["alpha"] * 3

    texts = [f"synthesis {i}" for i in range(3)]
    sim = reference.mean_pairwise_similarity(embed_by_hash(texts).astype(np.float64))
    lp = [AGGREGATION_LOGPROBS[i] for i in range(3)]
    ppl = reference.perplexity(np.concatenate(lp), np.array([0, 3, 5, 7]))
    total = reference.hybrid_scores(sim, ppl, 0.7)
    best = reference.select_best(total)
    assert result.source == "aggregation" and result.selected == best and result.text == texts[best]
    assert [a.subset for a in result.aggregations] == [["alpha", "beta"], ["alpha", "gamma"], ["beta", "gamma"]]
    np.testing.assert_allclose([a.similarity for a in result.aggregations], sim, rtol=1e-12)
    np.testing.assert_allclose([a.perplexity for a in result.aggregations], ppl, rtol=1e-12)
    np.testing.assert_allclose([a.total for a in result.aggregations], total, rtol=1e-12)
    assert [r.prior for r in result.references] == [3.0, 2.0, 1.0]
    assert result.notes == [] and result.seed == 11 and result.bank_version == "v000003"
    assert host.events()[-1] == result


def test_references_are_numbered_in_subset_order_after_the_task_system_prompt():
    host = ScriptedHost(default_answer, embed_by_hash)
    host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3), task="math"))
    first = host.calls("aggregate")[0][0]
    system, user = first.messages
    assert system.role == "system" and user == ChatMessage("user", f"Question: {QUESTION}.")
    assert system.content == f"{TASK_SYSTEM_PROMPTS['math']}\n\n{AGGREGATOR_PROMPT}\n\n1. alpha says 4\n\n2. beta says 4"
    assert host.calls("reference")[0][0].messages[0] == ChatMessage("system", TASK_SYSTEM_PROMPTS["math"])


def test_replay_sends_identical_calls_and_seeds_differ_per_call():
    runs = []
    for _ in range(2):
        host = ScriptedHost(default_answer, embed_by_hash)
        host.run(smcs_pipeline(decision(seed=5), QUESTION, policy=Policy(k=3, n=3)))
        runs.append(host.calls("reference") + host.calls("aggregate"))
    assert runs[0] == runs[1]
    seeds = [c.seed for batch in runs[0] for c in batch]
    assert len(set(seeds)) == len(seeds)
    host = ScriptedHost(default_answer, embed_by_hash)
    host.run(smcs_pipeline(decision(seed=6), QUESTION, policy=Policy(k=3, n=3)))
    assert [c.seed for c in host.calls("reference")[0]] != [c.seed for c in runs[0][0]]


def test_a_failed_referencer_is_left_out_of_every_subset():
    def answer(call: ModelCall) -> Completion | CallFailed:
        if call.model == "beta" and not is_aggregation(call):
            return CallFailed(kind="timeout", message="beta did not answer within 5 s", latency_s=5.0)
        return completion(f"{call.model} on {len(call.messages[0].content)}")

    host = ScriptedHost(answer, embed_by_hash)
    result = host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3)))
    beta = result.references[1]
    assert not beta.ok and beta.error_kind == "timeout" and beta.latency_s == 5.0
    assert [a.subset for a in result.aggregations] == [["alpha"], ["alpha", "gamma"], ["gamma"]]
    assert all("beta says" not in c.messages[0].content for c in host.calls("aggregate")[0])
    assert any("beta" in note and "timeout" in note for note in result.notes)


def test_too_few_referencers_raise_quorum_not_met_naming_them():
    def answer(call: ModelCall) -> Completion | CallFailed:
        if call.model in ("alpha", "gamma"):
            return CallFailed(kind="server_error", message=f"{call.model}: 500")
        return completion("ok")

    host = ScriptedHost(answer, embed_by_hash)
    with pytest.raises(QuorumNotMet, match="only 1 of 3 .*min_references=2.*alpha: server_error.*gamma: server_error") as caught:
        host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3)))
    assert [r.ok for r in caught.value.references] == [False, True, False]
    assert host.calls("aggregate") == []
    # a lower quorum lets the same failures through (beta aggregating, as alpha's server is down)
    result = ScriptedHost(answer, embed_by_hash).run(smcs_pipeline(decision(aggregator="beta"), QUESTION, policy=Policy(k=3, n=3, min_references=1)))
    assert [a.subset for a in result.aggregations if a.ok] == [["beta"], ["beta"]]


def test_empty_subsets_are_not_sent_and_are_reported():
    def answer(call: ModelCall) -> Completion | CallFailed:
        if call.model == "gamma" and not is_aggregation(call):
            return CallFailed(kind="connection", message="refused")
        return completion(f"{call.model} text")

    plan = decision(subsets=[["gamma"], ["alpha"], ["beta"]])
    result = ScriptedHost(answer, embed_by_hash).run(smcs_pipeline(plan, QUESTION, policy=Policy(k=3, k_drop=2, n=3)))
    assert result.aggregations[0].error_kind == "empty_subset" and result.selected in (1, 2)


def test_failed_aggregations_fall_back_to_the_next_aggregator_then_to_the_best_reference():
    def answer_fallback_ok(call: ModelCall) -> Completion | CallFailed:
        if is_aggregation(call) and call.model == "alpha":
            return CallFailed(kind="server_error", message="alpha 503")
        return completion(f"{call.model}: {call.seed}")

    host = ScriptedHost(answer_fallback_ok, embed_by_hash)
    result = host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3), fallback_aggregator="beta"))
    assert [[c.model for c in batch] for batch in host.calls("aggregate")] == [["alpha"] * 3, ["beta"] * 3]
    assert result.source == "fallback_aggregator" and result.selected is not None and result.selected >= 3
    assert [a.index for a in result.aggregations] == list(range(6))
    assert result.aggregations[result.selected].aggregator == "beta"
    assert any("every aggregation by alpha failed" in note for note in result.notes)

    def answer_all_fail(call: ModelCall) -> Completion | CallFailed:
        if is_aggregation(call):
            return CallFailed(kind="timeout", message="slow")
        if call.model == "alpha":
            return CallFailed(kind="auth", message="401")
        return completion(f"{call.model} answer")

    result = ScriptedHost(answer_all_fail, embed_by_hash).run(
        smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3), fallback_aggregator="gamma")
    )
    assert result.source == "best_reference" and result.selected is None
    assert result.text == "beta answer"  # alpha has the highest prior but failed; beta is next
    assert len(result.aggregations) == 6 and not any(a.ok for a in result.aggregations)


def test_without_logprobs_selection_uses_similarity_alone():
    aggregations_seen = []

    def answer(call: ModelCall) -> Completion:
        if is_aggregation(call):
            aggregations_seen.append(call.seed)  # the first aggregation comes back without logprobs
            return completion(f"agg {call.seed}", logprobs=[] if len(aggregations_seen) == 1 else [-0.3])
        return completion(reference_text(call))

    host = ScriptedHost(answer, embed_by_hash)
    result = host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3, lam=5.0)))
    written = [a for a in result.aggregations if a.ok]
    sim = reference.mean_pairwise_similarity(embed_by_hash([a.text for a in written]).astype(np.float64))
    assert result.selected == reference.select_best(sim)
    assert all(math.isnan(a.perplexity) for a in result.aggregations)
    assert any("without logprobs" in note for note in result.notes)


def test_one_written_aggregation_needs_no_embedding():
    def answer(call: ModelCall) -> Completion | CallFailed:
        if is_aggregation(call) and "2. beta" not in call.messages[0].content:
            return completion("")  # empty text counts as a failure
        return completion(reference_text(call))

    host = ScriptedHost(answer, lambda texts: pytest.fail("nothing to compare: no embedding expected"))
    result = host.run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3)))
    assert result.selected == 0 and result.aggregations[0].similarity == 1.0
    assert [a.error_kind for a in result.aggregations[1:]] == ["empty_response", "empty_response"]


def test_a_host_sending_the_wrong_results_is_told_so():
    generator = smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3))
    assert isinstance(next(generator).event, Routed)  # type: ignore[union-attr]
    assert isinstance(generator.send(None), CallModels)
    with pytest.raises(TypeError, match="3 results"):
        generator.send([completion("only one")])
    generator = smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3))
    next(generator)
    generator.send(None)
    with pytest.raises(TypeError, match="result 1 .*str"):
        generator.send([completion("a"), "b", completion("c")])


def test_evidence_events_round_trip_through_json():
    result = ScriptedHost(default_answer, embed_by_hash).run(smcs_pipeline(decision(), QUESTION, policy=Policy(k=3, n=3)))
    for event in [Routed(result.decision), result.references[0], result.aggregations[0], result]:
        kind = type(event)
        assert msgspec.json.decode(msgspec.json.encode(event), type=kind) == event
    assert isinstance(result.references[0], ReferenceEvidence) and isinstance(result.aggregations[0], AggregationEvidence)


# ---------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("task", [None, "math", "numeric", "multiple_choice", "code", "exact", "instruction"])
def test_question_messages_follow_the_task_templates(task):
    messages = question_messages("Q?", task)
    assert messages[-1].role == "user"
    if task is None:
        assert messages == [ChatMessage("user", "Q?")]
    elif task == "instruction":
        assert messages == [ChatMessage("user", "Instruction: Q?.")]
    else:
        assert messages == [ChatMessage("system", TASK_SYSTEM_PROMPTS[task]), ChatMessage("user", "Question: Q?.")]


def test_aggregation_messages_without_a_task_have_the_block_as_system_prompt():
    system, user = aggregation_messages("Q?", ["one", "two", "three"])
    assert system.content == f"{AGGREGATOR_PROMPT}\n\n1. one\n\n2. two\n\n3. three"
    assert user == ChatMessage("user", "Q?")
    with pytest.raises(ValueError, match="at least one reference"):
        aggregation_messages("Q?", [])


def test_unknown_task_is_named():
    assert check_task(None) is None and check_task("code") == "code"
    with pytest.raises(ValueError, match="task must be one of .*'poetry'"):
        check_task("poetry")


def test_policy_quorum_and_min_references_validation():
    assert Policy(k=7).quorum == 4 and Policy(k=4).quorum == 2 and Policy(k=1, k_drop=0).quorum == 1
    assert Policy(k=5, min_references=5).quorum == 5
    with pytest.raises(ValueError, match="min_references must be at most k"):
        Policy(k=3, min_references=4)
    with pytest.raises(ValueError, match="min_references must be >= 1"):
        Policy(k=3, min_references=0)


def test_finite_totals_is_eq7_and_names_what_overflows():
    from smcs.core.pipeline import finite_totals

    similarity, perplexity = np.array([0.5, 0.9]), np.array([1.5, 1.1])
    np.testing.assert_allclose(finite_totals(similarity, perplexity, 2.0), similarity + 2.0 * (1 - perplexity))
    with pytest.raises(ValueError, match=r"logprobs\[1\]"):
        finite_totals(similarity, np.array([1.5, np.inf]), 1.0)
    with pytest.raises(ValueError, match="lam"):
        finite_totals(similarity, np.array([1.5, 3.0]), 1e308)
