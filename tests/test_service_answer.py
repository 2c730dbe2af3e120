"""The streaming Answer RPC end to end: a real gRPC server, the real client, and every model a real
OpenAI-compatible HTTP server on 127.0.0.1 (``fault_server``) that answers, fails or hangs as scripted.

The bank is small but real: its questions are embedded by the bundled ONNX model, which also embeds the
question and the aggregations on the server, so every stage of the pipeline runs for real.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fault_server import FaultServer, Reply
from service_harness import expect_rpc_error, make_config, raw_stub, running_server, wait_until
from smcs import Bank, Policy
from smcs._proto import router_pb2 as pb
from smcs.backends import OpenAIModelConfig
from smcs.bank import ModelInfo, Question
from smcs.cli.main import main
from smcs.core.pipeline import AggregationEvidence, AnswerResult, ReferenceEvidence, Routed
from smcs.embed import EmbedderConfig, OnnxEmbedder

MODELS = ("m-math", "m-code", "m-general", "m-agg")
QUESTIONS = [
    "What is 12 times 13?", "Solve x^2 = 49.", "Write a Python function that reverses a list.",
    "Implement binary search in Python.", "Who wrote Hamlet?", "What is the capital of Japan?",
]
# rows: models; columns: questions. m-agg is best overall, so it aggregates.
CAPABILITY = np.array([
    [1, 1, 0, 0, 0, 1],
    [0, 0, 1, 1, 0, 0],
    [0, 1, 0, 0, 1, 1],
    [1, 1, 1, 1, 1, 1],
], dtype=np.int8)
POLICY = Policy(k=3, n_base=3, gamma=0.5, k_drop=1, n=3)


@pytest.fixture(scope="module")
def text_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    embedder = OnnxEmbedder()
    bank = Bank.create(
        tmp_path_factory.mktemp("answer") / "bank",
        embeddings=embedder.embed(QUESTIONS),
        capability=CAPABILITY,
        questions=[Question(id=f"q{i}", text=t) for i, t in enumerate(QUESTIONS)],
        models=[ModelInfo(name=m) for m in MODELS],
        embedder=embedder.info,
    )
    return bank.path


@contextlib.contextmanager
def model_servers(replies: dict[str, Reply]) -> Iterator[dict[str, FaultServer]]:
    """One fault server per model, answering every request with that model's reply."""
    with contextlib.ExitStack() as stack:
        yield {m: stack.enter_context(FaultServer(default=replies.get(m, Reply.ok(f"{m} thinks 156")))) for m in MODELS}


def answer_config(servers: dict[str, FaultServer], **answer: object):  # type: ignore[no-untyped-def]
    from smcs.config import AnswerConfig

    config = make_config(policy=POLICY, embedder=EmbedderConfig())
    models = {
        m: OpenAIModelConfig(base_urls=[s.base_url], retries=0, max_tokens=64, cooldown_s=0.0, timeout_s=20.0)
        for m, s in servers.items()
    }
    import msgspec

    return msgspec.structs.replace(config, models=models, answer=AnswerConfig(**answer))  # type: ignore[arg-type]


def test_answer_streams_every_stage_and_selects_an_aggregation(text_bank):
    aggregations = [Reply.ok("156 it is", logprobs=[-0.1, -0.1, -0.1]), Reply.ok("The product is 156", logprobs=[-2.0, -2.0, -2.0, -2.0]),
                    Reply.ok("12 x 13 = 156", logprobs=[-0.5, -0.5, -0.5, -0.5])]
    with model_servers({}) as servers:
        servers["m-agg"].push(Reply.ok("m-agg thinks 156"), *aggregations)
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            events = list(client.answer("What is 12 times 13?", seed=3, task="math"))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Routed"] + ["ReferenceEvidence"] * 3 + ["AggregationEvidence"] * 3 + ["AnswerResult"]
    routed, result = events[0], events[-1]
    assert isinstance(routed, Routed) and isinstance(result, AnswerResult)
    decision = routed.decision
    assert decision.aggregator == "m-agg" and decision.seed == 3 and len(decision.subsets) == 3
    assert [r.model for r in result.references] == decision.referencers
    assert all(r.ok and r.text == f"{r.model} thinks 156" for r in result.references)
    assert result.source == "aggregation" and result.selected is not None
    selected = result.aggregations[result.selected]
    assert result.text == selected.text and selected.total == max(a.total for a in result.aggregations)
    for a in result.aggregations:
        assert a.aggregator == "m-agg" and len(a.subset) == 2 and set(a.subset) <= set(decision.referencers)
        assert math.isfinite(a.similarity) and a.perplexity > 1.0 and a.total == pytest.approx(a.similarity + 1.0 - a.perplexity)
    # what the models were sent: the math template, logprobs on, the aggregator prompt with numbered references
    agg_bodies = [b for b in servers["m-agg"].bodies if "Responses from models" in b["messages"][0]["content"]]
    assert len(agg_bodies) == 3
    for body in servers["m-math"].bodies + servers["m-agg"].bodies:
        assert body["logprobs"] is True and body["top_logprobs"] == 0 and body["max_tokens"] == 64
        assert body["messages"][-1] == {"role": "user", "content": "Question: What is 12 times 13?."}
    assert all("\n\n1. " in b["messages"][0]["content"] and "\n\n2. " in b["messages"][0]["content"] for b in agg_bodies)


def test_a_failing_referencer_is_reported_and_left_out(text_bank):
    with model_servers({"m-code": Reply.error(500, b'{"error": "boom"}')}) as servers:
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            events = list(client.answer("Implement binary search in Python.", seed=1, k=4, n=2))
    result = events[-1]
    assert isinstance(result, AnswerResult)
    failed = [r for r in result.references if not r.ok]
    assert [(r.model, r.error_kind) for r in failed] == [("m-code", "server_error")]
    assert "500" in (failed[0].error or "")
    assert all("m-code" not in a.subset for a in result.aggregations)
    assert any("m-code" in note for note in result.notes)
    agg_bodies = [b for b in servers["m-agg"].bodies if "Responses from models" in b["messages"][0]["content"]]
    assert agg_bodies and all("m-code thinks" not in b["messages"][0]["content"] for b in agg_bodies)


def test_below_the_quorum_the_stream_ends_unavailable_naming_the_failures(text_bank):
    broken = {m: Reply.error(503) for m in ("m-math", "m-code", "m-general")}
    with model_servers(broken) as servers:
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            seen = []

            def consume() -> None:
                for event in client.answer("What is 12 times 13?", k=4, min_references=2):
                    seen.append(event)

            error = expect_rpc_error(consume, grpc.StatusCode.UNAVAILABLE, "only 1 of 4 referencers answered", "min_references=2")
    assert all(m in error.details() for m in ("m-math", "m-code", "m-general"))
    assert isinstance(seen[0], Routed) and sum(isinstance(e, ReferenceEvidence) for e in seen) == 4
    assert not any(isinstance(e, AggregationEvidence) for e in seen)


def test_answer_request_errors_name_the_field(text_bank):
    with model_servers({}) as servers, running_server(text_bank, answer_config(servers)) as server:
        with raw_stub(server.target) as stub:
            def answer(**fields: object) -> None:
                list(stub.Answer(pb.AnswerRequest(**fields), timeout=30))

            expect_rpc_error(lambda: answer(question="  "), grpc.StatusCode.INVALID_ARGUMENT, "question is empty")
            expect_rpc_error(lambda: answer(question="q?", task=99), grpc.StatusCode.INVALID_ARGUMENT, "task is 99, not a value of smcs.v1.Task")
            expect_rpc_error(lambda: answer(question="q?", strategy="moe"), grpc.StatusCode.INVALID_ARGUMENT, "unknown strategy 'moe'")
            expect_rpc_error(
                lambda: answer(question="q?", policy=pb.PolicyOverrides(allowed_models=["nope"])),
                grpc.StatusCode.INVALID_ARGUMENT, "allowed_models names 'nope'",
            )
            expect_rpc_error(
                lambda: answer(question="q?", policy=pb.PolicyOverrides(k=3, min_references=5)),
                grpc.StatusCode.INVALID_ARGUMENT, "min_references",
            )
            expect_rpc_error(
                lambda: answer(question="q?", embedding=pb.Embedding(values=[1.0, 2.0])),
                grpc.StatusCode.INVALID_ARGUMENT, "embedding has 2 values",
            )
        assert server.client().health() == "SERVING"  # and it goes on serving


def test_without_configured_models_answer_is_a_failed_precondition(text_bank):
    config = make_config(policy=POLICY, embedder=EmbedderConfig())
    with running_server(text_bank, config) as server, server.client() as client:
        expect_rpc_error(lambda: list(client.answer("What is 2+2?")), grpc.StatusCode.FAILED_PRECONDITION, "no model of the bank has a backend")
        assert client.route("What is 2+2?").referencers  # Route needs no models


def test_cancelling_the_stream_closes_the_aggregators_connections(text_bank):
    with model_servers({}) as servers:
        agg = servers["m-agg"]
        agg.push(Reply.ok("m-agg thinks 156"), Reply.hang(), Reply.hang(), Reply.hang())
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            stream = client.answer("What is 12 times 13?", seed=2)
            seen = []
            for event in stream:
                seen.append(event)
                if isinstance(event, ReferenceEvidence) and len(seen) == 4:
                    break
            wait_until(lambda: agg.in_flight == 3, 30, what="the three aggregations to reach the aggregator")
            stream.close()  # the generator's close cancels the RPC
            wait_until(lambda: sum(r.disconnected for r in agg.requests) == 3, 30, what="the aggregator to see its requests dropped")
            assert server.client().health() == "SERVING"


def test_smcs_ask_against_the_server_prints_the_answer_and_its_evidence(text_bank, capsys):
    with model_servers({}) as servers:
        with running_server(text_bank, answer_config(servers)) as server:
            status = main(["ask", "What is 12 times 13?", "--server", server.target, "--seed", "4", "--task", "math"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "m-agg thinks 156"  # every model answers with its own text; the aggregator wrote it
    assert "source aggregation, seed 4" in captured.out and "reference" in captured.out and "aggregation" in captured.out
    assert captured.err.splitlines()[0].startswith("routed") and "final" in captured.err.splitlines()[-1]


@pytest.mark.slow
def test_answer_end_to_end_with_the_embedded_model_pool(text_bank):
    """Every stage for real on the CPU: the bank's four models are members of one SmolLM2 pool (one
    loaded model, different temperatures and system prompts), answering through the Answer RPC."""
    import importlib.util

    import msgspec

    from llama_server import model_path_or_skip
    from smcs.backends import LocalModelConfig

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'smcs[local]')")
    path = model_path_or_skip()
    members = {
        "m-math": LocalModelConfig(model_path=path, temperature=0.2, max_tokens=12, threads=1, system_prompt="Be brief."),
        "m-code": LocalModelConfig(model_path=path, temperature=0.9, max_tokens=12, threads=1),
        "m-general": LocalModelConfig(model_path=path, temperature=0.5, max_tokens=12, threads=1),
        "m-agg": LocalModelConfig(model_path=path, temperature=0.0, max_tokens=16, threads=1),
    }
    config = msgspec.structs.replace(make_config(policy=Policy(k=3, n_base=3, gamma=0.5, k_drop=1, n=2), embedder=EmbedderConfig()), models=members)
    with running_server(text_bank, config) as server, server.client() as client:
        events = list(client.answer("What is 2+2?", seed=9))
    result = events[-1]
    assert isinstance(result, AnswerResult) and result.text.strip()
    assert all(r.ok and r.completion_tokens > 0 for r in result.references)
    written = [a for a in result.aggregations if a.ok]
    assert result.source == "aggregation" and len(written) == 2
    assert all(a.perplexity >= 1.0 and math.isfinite(a.total) for a in written)  # the local model's own logprobs


# --------------------------------------------------------------------------------- baseline strategies


def test_a_baseline_strategy_streams_its_plan_calls_and_result_over_grpc(text_bank):
    from smcs.strategies import StrategyCall, StrategyPlan, StrategyResult

    with model_servers({}) as servers:
        servers["m-agg"].push(Reply.ok("m-agg thinks 156"), Reply.ok("all agree: 156"))
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            events = list(client.answer("What is 12 times 13?", seed=3, strategy="moa-lite", options={"proposers": 2}))
    plan, *calls, result = events
    assert isinstance(plan, StrategyPlan) and isinstance(result, StrategyResult)
    assert all(isinstance(c, StrategyCall) for c in calls)
    assert plan.strategy == "moa-lite" and len(plan.models) == 2 and plan.aggregator == "m-agg"
    assert plan.decision is not None and plan.decision.seed == 3  # proposers chosen by the prior
    assert [c.role for c in calls] == ["proposer", "proposer", "aggregator"]
    assert calls[-1].inputs == [0, 1] and result.chosen == 2 and result.text == "all agree: 156"
    assert result.calls == calls and result.plan == plan and result.params["proposers"] == 2
    proposers_asked = sum(len(servers[m].bodies) for m in plan.models if m != "m-agg")
    assert proposers_asked == len([m for m in plan.models if m != "m-agg"])


@pytest.mark.parametrize(
    ("strategy", "options", "message"),
    [("moa-max", {}, "unknown strategy 'moa-max'"), ("moa", {"layers": "1"}, "option layers"),
     ("self-moa", {"colour": "red"}, "colour")],
)
def test_a_bad_strategy_or_option_is_invalid_argument_naming_it(text_bank, strategy, options, message):
    with model_servers({}) as servers:
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            with pytest.raises(grpc.RpcError) as info:
                list(client.answer("What is 12 times 13?", strategy=strategy, options=options))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()
            assert all(not s.requests for s in servers.values())
            assert client.health() == "SERVING"


def test_the_configured_strategy_answers_requests_that_name_none(text_bank):
    from smcs.strategies import StrategyResult

    with model_servers({m: Reply.ok("The answer is \\boxed{156}.") for m in MODELS}) as servers:
        config = answer_config(servers, strategy="majority-vote", strategy_options={"k": 3})
        with running_server(text_bank, config) as server, server.client() as client:
            configured = list(client.answer("What is 12 times 13?", seed=1, task="math"))[-1]
            named = list(client.answer("What is 12 times 13?", seed=1, strategy="smcs"))[-1]
    assert isinstance(configured, StrategyResult) and configured.strategy == "majority-vote"
    assert configured.votes == {"156": 3} and configured.params["k"] == 3
    assert isinstance(named, AnswerResult)


def test_references_stream_as_they_arrive_and_the_result_keeps_the_decisions_order(text_bank):
    with model_servers({"m-math": Reply.ok("m-math thinks 156", delay_s=1.5)}) as servers:
        with running_server(text_bank, answer_config(servers)) as server, server.client() as client:
            events = list(client.answer("What is 12 times 13?", seed=3, k=3))
    decision, result = events[0].decision, events[-1]
    assert "m-math" in decision.referencers
    streamed = [e.model for e in events if isinstance(e, ReferenceEvidence)]
    assert streamed[-1] == "m-math" and sorted(streamed) == sorted(decision.referencers)  # the slow one comes last
    assert [r.model for r in result.references] == decision.referencers
