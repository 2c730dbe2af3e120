"""The OpenAI-compatible HTTP gateway end to end: the real ``openai`` SDK against a real smcs server (gRPC
and HTTP in one process, ``[http] port = 0``) whose models are loopback OpenAI-compatible servers
(``fault_server``) that answer, stream, fail or hang as scripted; the bank is embedded by the bundled ONNX
model, which also embeds the questions and aggregations, so every stage runs for real."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import openai
import pytest
from fault_server import Reply
from service_harness import LoopThread, make_config, wait_until
from support.e2e import write_config
from support.gateway import MODELS, QUESTION, GatewayServer, answer_of, gateway_server, replying, sse_events
from support.metrics import scrape

from smcs.backends.pool import ModelPool
from smcs.config import AuthConfig, ExpiringToken, HTTPConfig
from smcs.service.http import Gateway
from smcs.service.metrics import Metrics
from smcs.service.state import EmbedderChoice, ServiceState
from smcs.strategies import STRATEGIES

ASK = [{"role": "user", "content": QUESTION}]
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Hello there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": QUESTION},
]


@pytest.fixture(scope="module")
def gateway(text_bank: Path):
    with gateway_server(text_bank) as server:
        yield server


def _content(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ------------------------------------------------------------------------------------------ models


def test_models_lists_smcs_route_every_strategy_and_the_bank_models(gateway: GatewayServer):
    ids = [m.id for m in gateway.client().models.list()]
    assert ids == ["smcs", "smcs-route", *(f"smcs/{name}" for name in STRATEGIES), *MODELS]
    assert gateway.client().models.retrieve("smcs/moa-lite").id == "smcs/moa-lite"
    with pytest.raises(openai.NotFoundError):
        gateway.client().models.retrieve("gpt-5")


# -------------------------------------------------------------------------------- smcs, the pipeline


def test_smcs_answers_with_the_selected_aggregation_its_evidence_headers_and_summed_usage(gateway: GatewayServer):
    mark = gateway.mark()
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="smcs", messages=ASK, seed=3, extra_body={"n_explore": 2, "k": 2},
    )
    completion = raw.parse()
    evidence = completion.model_extra["smcs"]
    result = evidence["result"]
    decision = result["decision"]
    assert completion.object == "chat.completion" and completion.model == "smcs"
    assert completion.choices[0].message.role == "assistant" and completion.choices[0].finish_reason == "stop"
    assert result["source"] == "aggregation" and len(result["aggregations"]) == 2 and len(result["references"]) == 2
    selected = result["aggregations"][result["selected"]]
    assert completion.choices[0].message.content == selected["text"] == answer_of(decision["aggregator"])
    assert raw.headers["x-smcs-model"] == selected["aggregator"] == evidence["model"] == "m-c"
    assert raw.headers["x-smcs-seed"] == "3" and decision["seed"] == 3
    assert raw.headers["x-smcs-bank-version"] == gateway.bank_version == decision["bank_version"]
    # usage: every model call the answer made (2 references, 2 aggregations), as the model servers counted
    prompt, written = gateway.usage_since(mark)
    assert sum(len(b) for b in gateway.bodies_since(mark).values()) == 4
    assert completion.usage.prompt_tokens == prompt and completion.usage.completion_tokens == written
    assert completion.usage.total_tokens == prompt + written
    assert prompt == sum(c["prompt_tokens"] for c in result["references"] + result["aggregations"])


def test_smcs_streams_its_stages_as_comments_then_the_chosen_text(gateway: GatewayServer):
    mark = gateway.mark()
    stream = gateway.client().chat.completions.create(
        model="smcs", messages=ASK, seed=5, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert _content(chunks) == answer_of("m-c")
    assert chunks[0].choices[0].delta.role == "assistant"
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
    assert final.choices[0].finish_reason == "stop" and final.model_extra["smcs"]["model"] == "m-c"
    usage = chunks[-1]
    assert usage.choices == [] and (usage.usage.prompt_tokens, usage.usage.completion_tokens) == gateway.usage_since(mark)
    # the raw events: the stages as comments, then the text, the finish, the usage and [DONE]
    status, headers, body = gateway.post({"model": "smcs", "messages": ASK, "seed": 5, "stream": True})
    events = sse_events(body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-smcs-seed"] == "5" and "x-smcs-model" not in headers  # known only at the end: in smcs.model
    comments = [e for e in events if e.startswith(":")]
    assert comments[0].startswith(": routed: referencers") and sum(e.startswith(": reference ") for e in comments) == 2
    assert sum(e.startswith(": aggregation ") for e in comments) == 2
    assert events[-1] == "data: [DONE]" and not any('"usage"' in e for e in events)  # no include_usage


def test_generation_settings_of_the_request_reach_every_model_call(gateway: GatewayServer):
    mark = gateway.mark()
    gateway.client().chat.completions.create(
        model="smcs", messages=ASK, temperature=0.25, max_completion_tokens=17, top_p=0.5, stop="END", presence_penalty=0.5,
    )
    bodies = [b for found in gateway.bodies_since(mark).values() for b in found]
    assert len(bodies) == 4
    for body in bodies:
        assert (body["temperature"], body["max_tokens"], body["top_p"], body["stop"], body["presence_penalty"]) == (0.25, 17, 0.5, ["END"], 0.5)
    mark = gateway.mark()
    gateway.client().chat.completions.create(model="smcs", messages=ASK)  # none given: the models' own
    bodies = [b for found in gateway.bodies_since(mark).values() for b in found]
    assert all(b["max_tokens"] == 64 and b["temperature"] == 0.7 and "top_p" not in b and "stop" not in b for b in bodies)


# ----------------------------------------------------------------------------- smcs-route, pass-through


def test_smcs_route_relays_the_conversation_to_the_top_referencer(gateway: GatewayServer):
    mark = gateway.mark()
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="smcs-route", messages=CONVERSATION, seed=11, temperature=0.1, max_tokens=9,
    )
    completion = raw.parse()
    decision = completion.model_extra["smcs"]["decision"]
    chosen = decision["referencers"][0]
    assert len(decision["referencers"]) == 1 and decision["support_ids"]
    assert raw.headers["x-smcs-model"] == chosen and raw.headers["x-smcs-seed"] == "11"
    assert completion.choices[0].message.content == answer_of(chosen)
    bodies = gateway.bodies_since(mark)
    assert [m for m, found in bodies.items() if found] == [chosen] and len(bodies[chosen]) == 1
    sent = bodies[chosen][0]
    assert sent["messages"] == CONVERSATION and sent["seed"] == 11 and sent["temperature"] == 0.1 and sent["max_tokens"] == 9
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == gateway.usage_since(mark)


def test_smcs_route_streams_the_models_tokens_as_they_arrive(gateway: GatewayServer):
    slow = Reply.ok("one two three four", token_delay_s=0.3)
    with replying(gateway.servers, **{m: slow for m in MODELS}):
        mark = gateway.mark()
        stream = gateway.client().chat.completions.create(
            model="smcs-route", messages=ASK, stream=True, stream_options={"include_usage": True},
        )
        chunks = []
        for chunk in stream:
            if not chunks:  # the first token is here while the model is still writing the rest
                model = chunk.model_extra.get("smcs") or None
                requests = [r for m in MODELS for r in gateway.servers[m].requests[mark[m]:]]
                assert len(requests) == 1 and not requests[0].answered and model is None
            chunks.append(chunk)
    assert [c.choices[0].delta.content for c in chunks[:4]] == ["one ", "two ", "three ", "four"]
    assert chunks[4].choices[0].finish_reason == "stop" and chunks[4].model_extra["smcs"]["decision"]
    assert chunks[5].usage.completion_tokens == 4 and (chunks[5].usage.prompt_tokens, 4) == gateway.usage_since(mark)
    sent = [b for found in gateway.bodies_since(mark).values() for b in found][0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_bank_model_is_passed_straight_through(gateway: GatewayServer):
    mark = gateway.mark()
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="m-b", messages=CONVERSATION, seed=42, temperature=0.2, max_tokens=33, top_p=0.9, stop=["END", "STOP"],
    )
    completion = raw.parse()
    assert completion.model == "m-b" and completion.choices[0].message.content == answer_of("m-b")
    assert raw.headers["x-smcs-model"] == "m-b" and raw.headers["x-smcs-seed"] == "42"
    (sent,) = gateway.bodies_since(mark)["m-b"]
    assert sent["messages"] == CONVERSATION and sent["model"] == "m-b"
    assert (sent["seed"], sent["temperature"], sent["max_tokens"], sent["top_p"], sent["stop"]) == (42, 0.2, 33, 0.9, ["END", "STOP"])
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == gateway.usage_since(mark)
    chunks = list(gateway.client().chat.completions.create(model="m-a", messages=ASK, stream=True))
    assert _content(chunks) == answer_of("m-a") and len([c for c in chunks if c.choices[0].delta.content]) == 3
    assert chunks[-1].choices[0].finish_reason == "stop"


# --------------------------------------------------------------------------------------- strategies


def test_a_strategy_answers_streamed_and_not(gateway: GatewayServer):
    mark = gateway.mark()
    raw = gateway.client().chat.completions.with_raw_response.create(model="smcs/moa-lite", messages=ASK, seed=2)
    completion = raw.parse()
    evidence = completion.model_extra["smcs"]
    result = evidence["result"]
    assert evidence["strategy"] == "moa-lite" and result["strategy"] == "moa-lite"
    chosen = result["calls"][result["chosen"]]
    assert completion.choices[0].message.content == chosen["text"] and raw.headers["x-smcs-model"] == chosen["model"]
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == gateway.usage_since(mark)
    assert len(result["calls"]) == sum(len(b) for b in gateway.bodies_since(mark).values())
    chunks = list(gateway.client().chat.completions.create(
        model="smcs/single", messages=ASK, stream=True, extra_body={"strategy_options": {"model": "m-a"}},
    ))
    assert _content(chunks) == answer_of("m-a") and chunks[-1].model_extra["smcs"]["model"] == "m-a"


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"extra_body": {"k": "three"}}, "k"),
        ({"extra_body": {"n_explore": 0}}, "n_explore"),
        ({"extra_body": {"allowed_models": ["nope"]}}, "allowed_models"),
        ({"extra_body": {"task": "poetry"}}, "task"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role"),
    ],
)
def test_bad_input_is_400_naming_the_field(gateway: GatewayServer, fields: dict, param: str):
    request = {"model": "smcs", "messages": ASK, **fields}
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client().chat.completions.create(**request)
    assert info.value.status_code == 400 and info.value.param == param and param in info.value.message


def test_an_unknown_model_is_404(gateway: GatewayServer):
    for model in ("gpt-5", "smcs/no-such-strategy"):
        with pytest.raises(openai.NotFoundError) as info:
            gateway.client().chat.completions.create(model=model, messages=ASK)
        assert info.value.code == "model_not_found" and info.value.param == "model"


def test_too_few_referencers_is_503_and_a_failing_model_502(gateway: GatewayServer):
    failing = {m: Reply.error(500, b'{"error": "boom"}') for m in MODELS}
    with replying(gateway.servers, **failing):
        with pytest.raises(openai.InternalServerError) as info:
            gateway.client().chat.completions.create(model="smcs", messages=ASK)
        assert info.value.status_code == 503 and info.value.code == "quorum_not_met"
        assert "referencers answered" in info.value.message
        with pytest.raises(openai.InternalServerError) as info:
            gateway.client().chat.completions.create(model="m-a", messages=ASK)
        assert info.value.status_code == 502 and info.value.code == "server_error"
    with replying(gateway.servers, **{"m-a": Reply.rate_limited("7")}):
        with pytest.raises(openai.RateLimitError) as limited:
            gateway.client().chat.completions.create(model="m-a", messages=ASK)
    with replying(gateway.servers, **{"m-a": Reply.context_overflow()}):
        with pytest.raises(openai.BadRequestError) as overflow:
            gateway.client().chat.completions.create(model="m-a", messages=ASK)
    assert limited.value.code == "rate_limited" and overflow.value.code == "context_length_exceeded"


def test_past_the_deadline_is_504_and_the_model_calls_are_cancelled(gateway: GatewayServer):
    with replying(gateway.servers, **{m: Reply.hang() for m in MODELS}):
        mark = gateway.mark()
        with pytest.raises(openai.InternalServerError) as info:
            gateway.client().chat.completions.create(model="smcs", messages=ASK, extra_headers={"x-smcs-timeout-s": "0.5"})
        assert info.value.status_code == 504 and info.value.code == "deadline_exceeded"
        hung = lambda: [r for m in MODELS for r in gateway.servers[m].requests[mark[m]:]]  # noqa: E731
        wait_until(lambda: len(hung()) == 2 and all(r.disconnected for r in hung()), 10, what="the hung calls cancelled")
    slow = Reply.ok("one two three four five", token_delay_s=1.0)
    with replying(gateway.servers, **{m: slow for m in MODELS}):  # a stream past its deadline ends with an error event
        stream = gateway.client().chat.completions.create(
            model="m-a", messages=ASK, stream=True, extra_headers={"x-smcs-timeout-s": "0.5"},
        )
        seen = []
        with pytest.raises(openai.APIError) as info:
            for chunk in stream:
                seen.append(chunk)
        assert seen and _content(seen) == "one " and "deadline" in info.value.message


def test_a_client_that_disconnects_cancels_the_model_calls(gateway: GatewayServer):
    with replying(gateway.servers, **{m: Reply.hang() for m in MODELS}):
        mark = gateway.mark()
        with pytest.raises(openai.APITimeoutError):
            gateway.client(timeout=1.0).chat.completions.create(model="smcs", messages=ASK)
        hung = lambda: [r for m in MODELS for r in gateway.servers[m].requests[mark[m]:]]  # noqa: E731
        wait_until(lambda: len(hung()) == 2 and all(r.disconnected for r in hung()), 10, what="the referencer calls cancelled")
    slow = Reply.ok(" ".join(f"w{i}" for i in range(40)), token_delay_s=0.2)
    with replying(gateway.servers, **{"m-b": slow}):
        mark = gateway.mark()
        stream = gateway.client().chat.completions.create(model="m-b", messages=ASK, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content == "w0 "
        stream.close()
        request = lambda: gateway.servers["m-b"].requests[mark["m-b"]]  # noqa: E731
        wait_until(lambda: request().disconnected, 10, what="the streamed call cancelled")
        assert not request().answered


def test_while_the_bank_loads_the_gateway_answers_503(text_bank: Path):
    config = msgspec.structs.replace(make_config(), http=HTTPConfig(port=0))

    async def start() -> tuple[Gateway, ServiceState]:
        from concurrent.futures import ThreadPoolExecutor

        state = ServiceState(text_bank, config.policy, ThreadPoolExecutor(1), EmbedderChoice(None, strict=True))
        gateway = Gateway(config, state, ModelPool({}, {}), Metrics(state))
        await gateway.start()
        return gateway, state

    with LoopThread() as loop:
        gateway, _ = loop.run(start(), 30)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="x", max_retries=0)
            for call in (lambda: client.models.list(), lambda: client.chat.completions.create(model="smcs", messages=ASK)):
                with pytest.raises(openai.InternalServerError) as info:
                    call()
                assert info.value.status_code == 503 and info.value.code == "bank_loading"
                assert info.value.response.headers["retry-after"] == "1"
        finally:
            loop.run(gateway.stop(), 30)


# -------------------------------------------------------------------------- auth, admission, metrics


def test_tokens_admission_and_metrics(text_bank: Path):
    past = datetime(2020, 1, 1, tzinfo=timezone.utc)
    auth = AuthConfig(query_tokens=["q-token", ExpiringToken(token="old-token", expires=past)], admin_tokens=["a-token"])
    with gateway_server(text_bank, auth=auth, max_concurrent_rpcs=1, admission_wait_s=0.0) as server:
        for key, reason in (("wrong", "invalid bearer token"), ("old-token", "bearer token expired")):
            with pytest.raises(openai.AuthenticationError) as info:
                server.client(api_key=key).chat.completions.create(model="m-a", messages=ASK)
            assert info.value.message.endswith(reason) and info.value.code == "invalid_api_key"
        status, _, body = server.post({"model": "m-a", "messages": ASK}, headers={"Authorization": ""})
        assert status == 401 and b"missing bearer token" in body
        for key in ("q-token", "a-token"):
            assert server.client(api_key=key).chat.completions.create(model="m-a", messages=ASK).choices[0].message.content
            assert [m.id for m in server.client(api_key=key).models.list()][0] == "smcs"
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="wrong").models.list()
        # the one admission slot (shared with gRPC) is taken: the next completion is refused with Retry-After
        with replying(server.servers, **{"m-a": Reply.ok("slow", delay_s=2.0)}):
            held = threading.Thread(target=lambda: server.client(api_key="q-token").chat.completions.create(model="m-a", messages=ASK))
            held.start()
            assert server.servers["m-a"].wait_until(lambda s: s.in_flight == 1, 10)
            with pytest.raises(openai.RateLimitError) as limited:
                server.client(api_key="q-token").chat.completions.create(model="m-b", messages=ASK)
            held.join(30)
        assert limited.value.code == "too_many_requests" and "max_concurrent_rpcs" in limited.value.message
        assert int(limited.value.response.headers["retry-after"]) >= 1 and int(limited.value.response.headers["retry-after-ms"]) > 0
        assert server.client(api_key="q-token").chat.completions.create(model="m-b", messages=ASK).choices  # the slot is free again


def test_the_gateway_counts_its_requests_in_the_servers_metrics(text_bank: Path):
    with gateway_server(text_bank, metrics=True) as server:
        server.client().chat.completions.create(model="smcs-route", messages=ASK)
        with pytest.raises(openai.NotFoundError):
            server.client().chat.completions.create(model="nope", messages=ASK)
        assert server.post(b"{}", "/v1/nowhere")[0] == 404
        port = server.handle.running.metrics_port
        assert port is not None
        families = scrape(port)
    counted = {(s.labels["path"], s.labels["status"]): s.value for s in families["smcs_http_requests"] if s.name.endswith("_total")}
    assert counted == {("/v1/chat/completions", "200"): 1, ("/v1/chat/completions", "404"): 1, ("other", "404"): 1}
    stages = {s.labels["stage"] for s in families["smcs_route_stage_seconds"] if s.name.endswith("_count") and s.value}
    assert {"embed", "route"} <= stages


# ------------------------------------------------------------------------------ smcs serve --http-port


def test_smcs_serve_refuses_an_http_port_out_of_range(text_bank: Path, capsys: pytest.CaptureFixture[str]):
    from smcs.cli.main import main

    assert main(["serve", "--bank", str(text_bank), "--port", "0", "--http-port", "70000"]) == 2
    assert "--http-port must be in [0, 65535], got 70000" in capsys.readouterr().err


@pytest.mark.slow
def test_smcs_serve_with_an_http_port_answers_the_openai_sdk(text_bank: Path, tmp_path: Path):
    from fault_server import FaultServer

    with FaultServer(default=Reply.ok("156 it is")) as model:
        config = write_config(tmp_path / "smcs.toml", model.base_url)
        command = [sys.executable, "-m", "smcs.cli", "serve", "--config", str(config), "--bank", str(text_bank),
                   "--port", "0", "--http-port", "0"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:
                lines.append(line.strip())
                if line.startswith("smcs: serving bank"):
                    break
            http_line = next(line for line in lines if line.startswith("smcs: http on "))
            base_url = http_line.removeprefix("smcs: http on ")
            client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)
            for name in ("smcs", "smcs-route"):
                assert client.chat.completions.create(model=name, messages=ASK).choices[0].message.content == "156 it is"
                assert _content(list(client.chat.completions.create(model=name, messages=ASK, stream=True))) == "156 it is"
        finally:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0
