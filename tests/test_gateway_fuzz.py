"""Bad HTTP bodies never crash the gateway: every refusal is a 4xx in OpenAI's error shape naming the
field, never a 500, and the gateway still answers after.

One real server (gRPC and the gateway in one process) over loopback fault-server models gets raw HTTP
requests (``http.client``, no SDK checks): hand-written bodies (malformed JSON, non-UTF-8 bytes, wrong
types for each field, values out of range, huge and deeply nested values, a body over the size limit,
unknown fields, wrong paths and methods) with the status and ``param`` each must get, then
property-based (hypothesis) bodies: a valid request with random JSON values put into random fields, and
random bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gateway import QUESTION, GatewayServer, gateway_server

from smcs.core.policy import OVERRIDABLE

MAX_BYTES = 2 << 20
"""The fuzzed server's ``[server] max_message_bytes``: the largest body it reads."""
MAX_CHARS = 4096
"""Its ``max_question_chars``."""
ASK = [{"role": "user", "content": QUESTION}]
FIELDS = [
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "presence_penalty", "stop",
    "seed", "n", "stream", "stream_options", "user", "allowed_models", "task", "strategy_options", "n_explore",
    "tools", "logprobs", "response_format", "frequency_penalty",
    *(name for name in OVERRIDABLE if name != "n"),
]
"""Every field the gateway reads, and a few OpenAI fields it ignores."""


@pytest.fixture(scope="module")
def gateway(text_bank: Path):
    with gateway_server(text_bank, max_message_bytes=MAX_BYTES, max_question_chars=MAX_CHARS) as server:
        yield server


def _error(status: int, body: bytes) -> dict:
    """The error object of a refusal, checked to be OpenAI's shape."""
    payload = json.loads(body)
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, payload
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    assert len(error["message"]) < 2000, "a refusal must not echo a huge value"
    return error


def _body(**fields: object) -> dict:
    return {"model": "m-a", "messages": ASK, **fields}


BAD = [
    (b"{", 400, None),
    (b"", 400, None),
    (b"\xff\xfe\x00garbage", 400, None),
    (b'{"model": "m-a", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),
    (b"[]", 400, None),
    (b'"text"', 400, None),
    (b"[" * 50_000 + b"]" * 50_000, 400, None),
    (b'{"model": "m-a", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, None),
    (b'{"model": "m-a", "messages": [{"role": "user", "content": "hi"}], "seed": 1' + b"0" * 400 + b"}", 400, None),
    (_body(model=5), 400, "model"),
    (_body(model=""), 400, "model"),
    ({"messages": ASK}, 400, "model"),
    (_body(messages="hi"), 400, "messages"),
    (_body(messages=[]), 400, "messages"),
    (_body(messages=[5]), 400, "messages[0]"),
    (_body(messages=[{"role": "robot", "content": "hi"}]), 400, "messages[0].role"),
    (_body(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
    (_body(messages=[{"role": "user", "content": None}]), 400, "messages[0].content"),
    (_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, "messages[0].content[0]"),
    (_body(messages=[{"role": "system", "content": "be brief"}]), 400, "messages"),
    (_body(max_tokens="10"), 400, "max_tokens"),
    (_body(max_tokens=True), 400, "max_tokens"),
    (_body(max_completion_tokens=0), 400, "max_completion_tokens"),
    (_body(temperature=3), 400, "temperature"),
    (_body(temperature=[1]), 400, "temperature"),
    (_body(top_p=0), 400, "top_p"),
    (_body(presence_penalty=-5), 400, "presence_penalty"),
    (_body(stop=[1]), 400, "stop"),
    (_body(stop=["x"] * 17), 400, "stop"),
    (_body(seed=-1), 400, "seed"),
    (_body(seed=2**63), 400, "seed"),
    (_body(seed=1.5), 400, "seed"),
    (_body(n=2), 400, "n"),
    (_body(stream="yes"), 400, "stream"),
    (_body(stream_options=[]), 400, "stream_options"),
    (_body(stream=True, stream_options={"include_usage": 1}), 400, "stream_options.include_usage"),
    (_body(user=5), 400, "user"),
    (_body(k="x"), 400, "k"),
    (_body(k=0), 400, "k"),
    (_body(n_explore=0), 400, "n_explore"),
    (_body(n_explore=100_000), 400, "n_explore"),
    (_body(gamma=2), 400, "gamma"),
    (_body(gamma="high"), 400, "gamma"),
    (b'{"model": "m-a", "messages": [{"role": "user", "content": "hi"}], "lam": 1e400}', 400, None),
    (_body(retrieval="fast"), 400, "retrieval"),
    (_body(cover="yes"), 400, "cover"),
    (_body(model="smcs", k_drop=5, k=2), 400, "k_drop"),
    (_body(allowed_models="m-a"), 400, "allowed_models"),
    (_body(model="smcs-route", allowed_models=["nope"]), 400, "allowed_models"),
    (_body(model="smcs", task="poetry"), 400, "task"),
    (_body(model="smcs", strategy_options=[]), 400, "strategy_options"),
    (_body(model="smcs/moa-lite", strategy_options={"layers": "many"}), 400, "strategy_options"),
    (_body(model="smcs/single"), 400, None),
    (_body(model="smcs", aggregator="nope"), 400, None),
    (_body(model="smcs-route", messages=[{"role": "user", "content": "x" * (MAX_CHARS + 1)}]), 400, "messages[0].content"),
    (_body(model="smcs", messages=[{"role": "user", "content": "   "}]), 400, "messages[0].content"),
    (_body(model="gpt-5"), 404, "model"),
    (_body(model="x" * 100_000), 404, "model"),
    (b'{"model": "m-a", "messages": [{"role": "user", "content": "' + b"x" * MAX_BYTES + b'"}]}', 413, None),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_each_bad_body_is_refused_naming_its_field(gateway: GatewayServer, body: object, status: int, param: str | None):
    got, headers, answer = gateway.post(body)  # type: ignore[arg-type]
    assert got == status, answer[:300]
    assert headers["content-type"].startswith("application/json")
    error = _error(got, answer)
    if param is not None:
        assert error["param"] == param, error
        assert param.split("[")[0].split(".")[0] in error["message"] or status == 404, error


def test_unknown_fields_are_ignored_and_huge_strings_pass_through(gateway: GatewayServer):
    body = _body(tools=[{"type": "function", "function": {"name": "f"}}], logprobs=True, frequency_penalty=0.5,
                 response_format={"type": "json_object"}, whatever={"nested": [1, 2, {"x": None}]})
    status, _, answer = gateway.post(body)
    assert status == 200 and json.loads(answer)["choices"][0]["message"]["content"]
    status, _, answer = gateway.post(_body(), headers={"Content-Type": "application/x-www-form-urlencoded"})  # curl -d
    assert status == 200
    huge = "word " * 200_000  # 1 MB: a pass-through model gets the conversation as it is
    status, _, answer = gateway.post(_body(messages=[{"role": "user", "content": huge}]))
    assert status == 200
    assert gateway.servers["m-a"].bodies[-1]["messages"][0]["content"] == huge


def test_wrong_paths_and_methods_are_errors_in_openai_shape(gateway: GatewayServer):
    for path, method, status in (("/v1/completions", "POST", 404), ("/v1/chat/completions", "GET", 405),
                                 ("/v1/models", "POST", 405), ("/", "GET", 404)):
        got, _, answer = gateway.post(b"{}", path, method=method)
        assert got == status and _error(got, answer)
    status, _, answer = gateway.post(_body(), headers={"x-smcs-timeout-s": "soon"})
    assert status == 400 and _error(status, answer)["param"] == "x-smcs-timeout-s"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(model=st.sampled_from(["m-a", "smcs-route", "smcs/single", "nope"]),
       changes=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4))
def test_random_values_in_any_field_are_never_a_server_error(gateway: GatewayServer, model: str, changes: dict):
    body = {**_body(model=model), **changes}
    try:
        raw = msgspec.json.encode(body)
    except (OverflowError, msgspec.EncodeError):
        return
    status, headers, answer = gateway.post(raw)
    assert status < 500, answer[:500]
    if status >= 400:
        _error(status, answer)
    elif headers["content-type"].startswith("text/event-stream"):
        assert answer.rstrip().endswith(b"data: [DONE]") or b'"error"' in answer
    else:
        assert json.loads(answer)["object"] == "chat.completion"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_random_bytes_are_never_a_server_error(gateway: GatewayServer, raw: bytes):
    status, _, answer = gateway.post(raw)
    assert 400 <= status < 500 and _error(status, answer)


def test_the_gateway_still_answers_after_the_fuzzing(gateway: GatewayServer):
    completion = gateway.client().chat.completions.create(model="smcs-route", messages=ASK)
    assert completion.choices[0].message.content
