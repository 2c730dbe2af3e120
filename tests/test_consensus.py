"""No repeated work (issue 19, part 3): early exit when the references agree, and distinct exploration
subsets, in the pipeline (a scripted host), the router's decision and the wire."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from support.hosts import ScriptedHost

from smcs.bank import Bank, EmbedderInfo, ModelInfo, Question
from smcs.core import Policy, RouteDecision, Router
from smcs.core.messages import Completion
from smcs.core.pipeline import AnswerResult, CallFailed, CallModels, EmbedTexts, ModelCall, agreement_of, smcs_pipeline
from smcs.core.prompts import AGGREGATOR_PROMPT
from smcs import kernels
from smcs.errors import InputError

QUESTION = "What is 2+2?"
REFERENCERS = ["alpha", "beta", "gamma"]
# three references: alpha and beta nearly the same text, gamma a little apart; beta is the most central
VECTORS = {
    "alpha says 4": np.array([1.0, 0.10, 0.0]),
    "beta says 4": np.array([1.0, 0.15, 0.05]),
    "gamma says 4": np.array([1.0, 0.25, 0.10]),
}


def decision(subsets: list[list[str]] | None = None) -> RouteDecision:
    return RouteDecision(
        referencers=list(REFERENCERS), votes=[3.0, 2.0, 1.0], aggregator="alpha", support_rows=[0], support_similarities=[0.9],
        subsets=subsets if subsets is not None else [["alpha", "beta"], ["alpha", "gamma"], ["beta", "gamma"]], seed=5,
        bank_version="v1",
    )


def answer(call: ModelCall) -> Completion:
    if AGGREGATOR_PROMPT in call.messages[0].content:
        return Completion(text=f"synthesis {call.seed}", token_logprobs=[-0.1])
    return Completion(text=f"{call.model} says 4", token_logprobs=[-0.1])


def embed(texts: list[str]) -> np.ndarray:
    return np.stack([VECTORS.get(t, np.random.default_rng(len(t)).standard_normal(3)) for t in texts])


def agreement_by_hand(texts: list[str]) -> float:
    unit = [VECTORS[t] / np.linalg.norm(VECTORS[t]) for t in texts]
    pairs = [(i, j) for i in range(len(unit)) for j in range(i + 1, len(unit))]
    return float(np.mean([unit[i] @ unit[j] for i, j in pairs]))


def run(policy: Policy, answer_=answer, subsets: list[list[str]] | None = None) -> tuple[AnswerResult, ScriptedHost]:
    host = ScriptedHost(answer_, embed)
    return host.run(smcs_pipeline(decision(subsets), QUESTION, policy=policy)), host


# ------------------------------------------------------------------------------------------ consensus


def test_agreeing_references_exit_early_with_the_most_central_one():
    want = agreement_by_hand(list(VECTORS))
    result, host = run(Policy(k=3, n=3, consensus=want - 1e-9))
    assert result.source == "consensus" and result.text == "beta says 4" and result.reference == 1 and result.selected is None
    assert result.agreement == pytest.approx(want, abs=1e-12) and result.aggregations == []
    assert [s.stage for s in host.steps if isinstance(s, CallModels)] == ["reference"]  # K calls, no aggregation
    (embedded,) = [s for s in host.steps if isinstance(s, EmbedTexts)]
    assert embedded.texts == list(VECTORS)
    assert "answered with the most central, beta, without aggregation" in result.notes[-1]


def test_references_below_the_threshold_are_aggregated_and_the_agreement_reported():
    want = agreement_by_hand(list(VECTORS))
    result, host = run(Policy(k=3, n=3, consensus=want + 1e-9))
    assert result.source == "aggregation" and len(result.aggregations) == 3
    assert result.agreement == pytest.approx(want, abs=1e-12) and result.reference is None
    assert [s.stage for s in host.steps if isinstance(s, CallModels)] == ["reference", "aggregate"]


def test_consensus_needs_two_answers_and_the_paper_mode_never_embeds_references():
    failing = lambda call: CallFailed(kind="timeout", message="slow") if call.model != "alpha" and AGGREGATOR_PROMPT not in call.messages[0].content else answer(call)  # noqa: E731
    result, host = run(Policy(k=3, n=3, min_references=1, consensus=0.0), failing)
    assert result.source == "aggregation" and result.agreement is None  # one reference answered: nothing to agree on
    result, host = run(Policy(k=3, n=3))
    embedded = [s.texts for s in host.steps if isinstance(s, EmbedTexts)]
    assert result.agreement is None and all(t.startswith("synthesis") for texts in embedded for t in texts)


def test_agreement_is_the_mean_cosine_over_pairs():
    vectors = np.random.default_rng(3).standard_normal((5, 7))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = [float(unit[i] @ unit[j]) for i in range(5) for j in range(i + 1, 5)]
    assert agreement_of(kernels.mean_pairwise_similarity(vectors)) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_consensus_policy_is_checked():
    with pytest.raises(InputError, match="consensus"):
        Policy(consensus=math.nan)
    with pytest.raises(InputError, match="distinct_subsets"):
        Policy(distinct_subsets=1)  # type: ignore[arg-type]
    assert Policy().consensus is None and Policy().distinct_subsets is False  # the paper's


# ------------------------------------------------------------------------------------ distinct subsets


def test_subsets_that_repeat_once_a_referencer_failed_are_aggregated_once_in_distinct_mode():
    failing = lambda call: CallFailed(kind="timeout", message="slow") if call.model == "gamma" else answer(call)  # noqa: E731
    subsets = [["alpha", "gamma"], ["alpha", "beta"], ["alpha", "gamma"]]
    paper, host = run(Policy(k=3, n=3), failing, subsets)
    assert [a.subset for a in paper.aggregations] == [["alpha"], ["alpha", "beta"], ["alpha"]]
    distinct, host = run(Policy(k=3, n=3, distinct_subsets=True), failing, subsets)
    assert [a.subset for a in distinct.aggregations] == [["alpha"], ["alpha", "beta"]]
    (aggregate,) = [s for s in host.steps if isinstance(s, CallModels) and s.stage == "aggregate"]
    assert len(aggregate.calls) == 2 and "1 subset(s) repeated another" in " ".join(distinct.notes)


def test_a_decision_without_subsets_answers_with_the_top_reference():
    result, host = run(Policy(k=3, n=3), subsets=[])
    assert result.source == "best_reference" and result.text == "alpha says 4" and result.reference == 0
    assert [s.stage for s in host.steps if isinstance(s, CallModels)] == ["reference"]


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((40, 8)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    capability = (rng.random((3, 40)) < np.array([[0.8], [0.5], [0.2]])).astype(np.int8)
    bank = Bank.create(
        tmp_path_factory.mktemp("consensus") / "b", embeddings=embeddings, capability=capability,
        questions=[Question(id=f"q{i}", text=f"question {i}") for i in range(40)],
        models=[ModelInfo(name=m) for m in ("m0", "m1", "m2")], embedder=EmbedderInfo(id="test", dim=8),
    )
    return Router(bank, Policy(k=3, k_drop=1, n=3, n_base=40, gamma=0.0, scorer="vote"))


def test_router_draws_distinct_subsets_and_reports_the_repeats_and_drop_probabilities(router):
    query = np.ones(8, dtype=np.float32)
    repeats = 0
    for seed in range(20):
        paper = router.route(query, seed=seed)
        distinct = router.route(query, seed=seed, policy=msgspec.structs.replace(router.policy, distinct_subsets=True))
        again = router.route(query, seed=seed)
        assert paper == again and paper.duplicate_subsets == 0  # the paper mode is untouched
        keep = len(paper.referencers) - 1
        positions = kernels.draw_subsets(np.array(paper.votes), 1, 3, seed)
        assert paper.subsets == [[paper.referencers[p] for p in row] for row in positions.tolist()]
        assert sorted(map(tuple, distinct.subsets)) == sorted({tuple(s) for s in distinct.subsets})
        assert len(distinct.subsets) == 3 and all(len(s) == keep for s in distinct.subsets)  # C(3, 2) = 3: all of them
        repeats += len(paper.subsets) - len({tuple(s) for s in paper.subsets})
        assert distinct.duplicate_subsets >= len(paper.subsets) - len({tuple(s) for s in paper.subsets})
        np.testing.assert_allclose(paper.drop_probabilities, kernels.drop_probabilities(np.array(paper.votes), 1), rtol=1e-15)
        assert sum(paper.drop_probabilities) == pytest.approx(1.0)
    assert repeats > 0  # the paper mode does repeat subsets on this pool


# ------------------------------------------------------------------------------------------- the wire


def test_the_new_evidence_crosses_the_wire(router, tmp_path: Path):
    from smcs.core.pipeline import AggregationEvidence, ReferenceEvidence, Routed
    from smcs.wire.convert import AnswerEventDecoder, answer_event, policy_from_message, policy_message, policy_from_request
    from smcs._proto import router_pb2 as pb

    query = np.ones(8, dtype=np.float32)
    routed = router.route(query, seed=3, policy=msgspec.structs.replace(router.policy, distinct_subsets=True))
    ids = np.array([q.id for q in router.bank.questions], dtype=object)
    result = AnswerResult(
        text="t", source="consensus", selected=None, decision=routed,
        references=[ReferenceEvidence(model=m, prior=v, text=f"{m} says", temperature=0.3) for m, v in zip(routed.referencers, routed.votes)],
        aggregations=[], reference=1, agreement=0.97,
    )
    decoder = AnswerEventDecoder()
    events: list[object] = [Routed(routed), *result.references, result]
    decoded = [decoder.decode(pb.AnswerResponse.FromString(answer_event(e, router.bank, ids).SerializeToString())) for e in events]  # type: ignore[arg-type]
    assert decoded[-1] == msgspec.structs.replace(result, decision=decoded[0].decision)  # type: ignore[union-attr]
    assert decoded[0].decision.drop_probabilities == routed.drop_probabilities and decoded[0].decision.duplicate_subsets == routed.duplicate_subsets  # type: ignore[union-attr]
    aggregation = AggregationEvidence(index=0, aggregator="m0", subset=["m0"], text="x", temperature=0.0, similarity=1.0, perplexity=1.0, total=1.0)
    routed_again = AnswerEventDecoder()
    routed_again.decode(answer_event(Routed(routed), router.bank, ids))
    assert routed_again.decode(answer_event(aggregation, router.bank, ids)) == aggregation
    policy = Policy(distinct_subsets=True, consensus=0.9)
    assert policy_from_message(policy_message(policy)) == policy
    overrides = pb.PolicyOverrides(distinct_subsets=True, consensus=0.95)
    assert policy_from_request(overrides, Policy()) == Policy(distinct_subsets=True, consensus=0.95)
