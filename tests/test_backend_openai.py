"""The OpenAI-compatible chat backend against real HTTP servers on 127.0.0.1 that answer well, slowly or badly.

Each test gets fresh fault servers (fault_server.py, background threads stopped at teardown) and runs
its client calls inside ``asyncio.run``. Backoffs are shortened so that retry paths take milliseconds;
no test asserts an upper bound on wall time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from fault_server import FaultServer, Reply, peak_over

from smcs.backends import ChatMessage, Completion, GenerationSettings, OpenAIBackend, make_backend
from smcs.backends.config import LocalModelConfig, OpenAIModelConfig
from smcs.backends.errors import (
    BackendAuthError,
    BackendConnectionError,
    BackendContextOverflow,
    BackendError,
    BackendMalformedResponse,
    BackendRateLimited,
    BackendRequestError,
    BackendServerError,
    BackendSetupError,
    BackendTimeout,
)
from smcs.backends.openai import is_context_overflow

FAST = {"backoff_s": 0.01, "max_backoff_s": 1.0, "timeout_s": 5.0, "connect_timeout_s": 2.0}
ASK = [ChatMessage("user", "What is the capital of France?")]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A fault server answering normally unless a test scripts it (``push``, ``default``)."""
    with FaultServer() as s:
        yield s


@pytest.fixture
def other() -> Iterator[FaultServer]:
    """A second fault server, for tests with two replicas."""
    with FaultServer() as s:
        yield s


def config_for(*servers: FaultServer | str, **kwargs: object) -> OpenAIModelConfig:
    """A model table for ``servers`` (or URLs) with fast retries (overridable)."""
    urls = [s if isinstance(s, str) else s.base_url for s in servers]
    return OpenAIModelConfig(base_urls=urls, **{**FAST, **kwargs})  # type: ignore[arg-type]


def backend_for(*servers: FaultServer | str, api_key: str | None = None, **kwargs: object) -> OpenAIBackend:
    """An ``OpenAIBackend`` named ``m`` for ``servers``."""
    return OpenAIBackend("m", config_for(*servers, **kwargs), api_key=api_key)


def complete(
    backend: OpenAIBackend, messages: list[ChatMessage] = ASK, settings: GenerationSettings | None = None
) -> Completion:
    """One ``complete`` call in its own event loop, closing the backend after."""

    async def go() -> Completion:
        async with backend:
            return await backend.complete(messages, settings)

    return asyncio.run(go())


def failure(backend: OpenAIBackend, messages: list[ChatMessage] = ASK) -> BackendError:
    """The ``BackendError`` one ``complete`` call raises."""
    with pytest.raises(BackendError) as info:
        complete(backend, messages)
    return info.value


def complete_many(backend: OpenAIBackend, n: int) -> list[Completion]:
    """``n`` concurrent ``complete`` calls."""

    async def go() -> list[Completion]:
        async with backend:
            return list(await asyncio.gather(*(backend.complete(ASK) for _ in range(n))))

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------ answering


def test_a_completion_has_text_logprobs_usage_and_the_url(server):
    server.default = Reply.ok("Paris is lovely.", logprobs=[-0.5, -0.25, -0.125], finish_reason="length")
    result = complete(backend_for(server))
    assert result.text == "Paris is lovely."
    assert result.token_logprobs == [-0.5, -0.25, -0.125] and not result.logprobs_missing
    assert (result.prompt_tokens, result.completion_tokens) == (6, 3)
    assert result.finish_reason == "length"
    assert result.url == server.base_url and result.latency_s > 0


def test_the_request_asks_for_logprobs_with_the_generation_settings(server):
    complete(backend_for(server, temperature=0.2, max_tokens=64, presence_penalty=0.5))
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json == {
        "model": "m",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0.2,
        "max_tokens": 64,
        "presence_penalty": 0.5,
        "logprobs": True,
        "top_logprobs": 0,
        "stream": False,
    }


def test_optional_settings_are_sent_when_set_and_served_model_names_the_model(server):
    settings = GenerationSettings(temperature=0.0, max_tokens=8, top_p=0.9, stop=["\n\n"], seed=7)
    complete(backend_for(server, served_model="org/Model-7B"), settings=settings)
    body = server.bodies[0]
    assert body["model"] == "org/Model-7B"
    sent = (body["temperature"], body["max_tokens"], body["top_p"], body["stop"], body["seed"])
    assert sent == (0.0, 8, 0.9, ["\n\n"], 7)


def test_a_base_url_ending_in_v1_is_not_doubled(server):
    complete(backend_for(server.base_url + "/v1/"))
    assert server.requests[0].path == "/v1/chat/completions"


def test_the_system_prompt_is_prepended(server):
    complete(backend_for(server, system_prompt="Answer briefly."))
    assert server.bodies[0]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ]


def test_the_system_prompt_is_joined_with_a_leading_system_message(server):
    messages = [ChatMessage("system", "You are a geographer."), *ASK, ChatMessage("assistant", "Paris.")]
    complete(backend_for(server, system_prompt="Answer briefly."), messages)
    sent = server.bodies[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Answer briefly.\n\nYou are a geographer."}
    assert [m["role"] for m in sent] == ["system", "user", "assistant"]


def test_no_messages_is_refused():
    with pytest.raises(ValueError, match="messages"):
        complete(backend_for("http://127.0.0.1:9"), [])


@pytest.mark.parametrize("absent", [False, True])
def test_missing_logprobs_are_flagged_not_an_error(server, absent):
    server.default = Reply.no_logprobs("Paris.", absent=absent)
    result = complete(backend_for(server))
    assert result.text == "Paris." and result.logprobs_missing and result.token_logprobs == []


def test_an_empty_logprob_list_for_a_non_empty_text_counts_as_missing(server):
    body = {"choices": [{"message": {"content": "Paris."}, "logprobs": {"content": []}, "finish_reason": "stop"}]}
    server.default = Reply.raw(json.dumps(body).encode())
    result = complete(backend_for(server))
    assert result.logprobs_missing and result.token_logprobs == []
    assert (result.prompt_tokens, result.completion_tokens) == (0, 0)  # no usage: zeros


# ----------------------------------------------------------------------------------------- API keys


def test_the_api_key_is_sent_as_bearer_and_never_shown(server):
    server.default = Reply.unauthorized()
    backend = backend_for(server, api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(backend)
    error = failure(backend)
    assert server.requests[0].headers["authorization"] == "Bearer sk-secret-123"
    assert isinstance(error, BackendAuthError) and error.kind == "auth"
    assert "sk-secret-123" not in str(error) and "check the API key" in str(error)
    assert len(server.requests) == 1  # not retried


def test_without_a_key_no_authorization_is_sent_and_a_401_says_so(server):
    server.default = Reply.unauthorized()
    error = failure(backend_for(server))
    assert "authorization" not in server.requests[0].headers
    assert isinstance(error, BackendAuthError) and "no API key was sent" in str(error)


# ------------------------------------------------------------------------------------ failure kinds


def test_429_with_retry_after_is_waited_out_then_succeeds(server):
    server.push(Reply.rate_limited(retry_after="0.3"))
    result = complete(backend_for(server))
    first, second = server.requests
    assert second.at - first.at >= 0.3
    assert result.text == "Paris is the capital of France."


def test_429_asking_longer_than_max_backoff_fails_at_once(server):
    server.default = Reply.rate_limited(retry_after="120")
    error = failure(backend_for(server, max_backoff_s=1.0))
    assert isinstance(error, BackendRateLimited) and error.kind == "rate_limited" and error.retry_after == 120.0
    assert len(server.requests) == 1
    assert "429" in str(error) and server.base_url in str(error) and "'m'" in str(error)


def test_429_every_time_gives_up_after_the_retries(server):
    server.default = Reply.rate_limited()
    error = failure(backend_for(server, retries=2))
    assert isinstance(error, BackendRateLimited) and error.retry_after is None
    assert len(server.requests) == 3


def test_500_then_503_then_success_is_retried(server):
    server.push(Reply.error(500, b"oops"), Reply.error(503))
    assert complete(backend_for(server, retries=2)).text
    assert len(server.requests) == 3


def test_5xx_every_time_is_a_server_error_naming_model_url_status_and_body(server):
    server.default = Reply.error(502, b'{"error": "upstream gone"}')
    error = failure(backend_for(server, retries=1))
    assert isinstance(error, BackendServerError) and error.kind == "server_error" and error.status == 502
    assert error.model == "m" and error.url == server.base_url
    assert "502" in str(error) and "upstream gone" in str(error) and server.base_url in str(error)
    assert len(server.requests) == 2


def test_a_reset_connection_is_retried(server):
    server.push(Reply.reset())
    assert complete(backend_for(server)).text
    assert len(server.requests) == 2


def test_a_connection_reset_every_time_is_a_connection_error(server):
    server.default = Reply.reset()
    error = failure(backend_for(server, retries=2))
    assert isinstance(error, BackendConnectionError) and error.kind == "connection"
    assert server.base_url in str(error) and len(server.requests) == 3


def test_a_truncated_body_is_retried(server):
    server.push(Reply.truncated())
    assert complete(backend_for(server)).token_logprobs
    assert len(server.requests) == 2


def test_connection_refused_is_a_connection_error_after_the_retries():
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        error = failure(backend_for(url, retries=1))
    assert isinstance(error, BackendConnectionError) and f"cannot connect to {url}" in str(error)
    assert error.url == url


def test_malformed_json_is_a_malformed_response_not_retried(server):
    server.default = Reply.malformed_json()
    error = failure(backend_for(server))
    assert isinstance(error, BackendMalformedResponse) and error.kind == "malformed_response"
    assert server.base_url in str(error) and "'m'" in str(error)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"choices": [{"message": {"role": "assistant"}}]}, "$.choices[0].message.content"),
        ({"choices": [{"message": {"content": None}}]}, "$.choices[0].message.content"),
        ({"choices": [{"message": {"content": 3}}]}, "$.choices[0].message.content"),
        ({"choices": []}, "$.choices"),
        ({"object": "chat.completion"}, "$.choices"),
        ({"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"logprob": "low"}]}}]},
         "$.choices[0].logprobs.content[0].logprob"),
    ],
)
def test_a_bad_2xx_body_is_malformed_and_names_the_field(server, body, path):
    server.default = Reply.raw(json.dumps(body).encode())
    error = failure(backend_for(server))
    assert isinstance(error, BackendMalformedResponse) and path in str(error)
    assert len(server.requests) == 1


@pytest.mark.parametrize("value", ["-Infinity", "NaN", "-1e999", "null"])
def test_a_non_finite_logprob_is_malformed_and_named_by_its_path(server, value):
    logprobs = f'{{"content": [{{"logprob": -0.1}}, {{"logprob": {value}}}]}}'
    server.default = Reply.raw(f'{{"choices": [{{"message": {{"content": "a b"}}, "logprobs": {logprobs}}}]}}'.encode())
    error = failure(backend_for(server))
    assert isinstance(error, BackendMalformedResponse) and "$.choices[0].logprobs.content[1].logprob" in str(error)


def test_a_context_overflow_is_its_own_kind_not_retried(server):
    server.default = Reply.context_overflow()
    error = failure(backend_for(server))
    assert isinstance(error, BackendContextOverflow) and error.kind == "context_overflow"
    assert "maximum context length is 4096" in str(error) and server.base_url in str(error)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, '{"error": {"message": "This model\'s maximum context length is 8192 tokens. However, your messages '
              'resulted in 9000 tokens.", "type": "invalid_request_error", "code": "context_length_exceeded"}}'),
        (400, '{"error": {"code": 400, "message": "the request exceeds the available context size, try increasing '
              'it", "type": "exceed_context_size_error", "n_prompt_tokens": 4390, "n_ctx": 4096}}'),
        (400, '{"object": "error", "message": "The decoder prompt (length 17772) is longer than the maximum model '
              'length of 16384."}'),
        (400, '{"object": "error", "message": "The input (61709 tokens) is longer than the model\'s context length '
              '(40960 tokens).", "type": "BadRequestError", "code": 400}'),
        (422, '{"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 '
              '`inputs` tokens and 512 `max_new_tokens`", "error_type": "validation"}'),
        (413, '{"error": "prompt is too long"}'),
    ],
)
def test_the_context_overflow_messages_of_openai_llama_cpp_vllm_sglang_and_tgi_are_recognised(status, body):
    assert is_context_overflow(status, body)


def test_a_context_phrase_in_another_status_or_an_unrelated_400_is_not_an_overflow():
    assert not is_context_overflow(500, "maximum context length exceeded")
    assert not is_context_overflow(400, '{"error": "temperature must be non-negative"}')


def test_another_4xx_is_a_request_error_with_its_status_not_retried(server):
    server.default = Reply.error(404, b'{"error": "The model `m` does not exist."}')
    error = failure(backend_for(server))
    assert isinstance(error, BackendRequestError) and error.kind == "bad_request" and error.status == 404
    assert "does not exist" in str(error) and len(server.requests) == 1


# ---------------------------------------------------------------------------------------- timeouts


def test_a_hang_with_one_url_times_out_without_retry(server):
    server.default = Reply.hang()
    error = failure(backend_for(server, timeout_s=0.3, retries=3))
    assert isinstance(error, BackendTimeout) and error.kind == "timeout"
    assert "timeout_s=0.3" in str(error) and server.base_url in str(error) and "'m'" in str(error)
    assert len(server.requests) == 1
    assert server.wait_until(lambda s: s.requests[0].disconnected)


def test_a_timeout_is_retried_on_another_url(server, other):
    server.default = Reply.hang()
    result = complete(backend_for(server, other, timeout_s=0.3))
    assert result.url == other.base_url
    assert (len(server.requests), len(other.requests)) == (1, 1)


def test_a_timeout_is_not_retried_when_the_other_urls_are_cooling_down(server, other):
    server.default = other.default = Reply.hang()
    error = failure(backend_for(server, other, timeout_s=0.3, retries=5, cooldown_s=30))
    assert isinstance(error, BackendTimeout) and other.base_url in str(error)
    assert (len(server.requests), len(other.requests)) == (1, 1)


# ------------------------------------------------------------------------------- balancing, cooldown


def test_concurrent_requests_spread_over_two_urls_by_least_in_flight(server, other):
    server.default = other.default = Reply.ok(delay_s=0.2)
    results = complete_many(backend_for(server, other, max_concurrency=8), 6)
    assert (len(server.requests), len(other.requests)) == (3, 3)
    assert sorted(r.url for r in results) == sorted([server.base_url] * 3 + [other.base_url] * 3)


def test_sequential_requests_try_each_url_once_first(server, other):
    async def go(backend: OpenAIBackend) -> list[str | None]:
        async with backend:
            return [(await backend.complete(ASK)).url for _ in range(2)]

    # the second URL, not yet measured, counts as fast as the first (later ones: tests/test_backend_fleet.py)
    assert asyncio.run(go(backend_for(server, other))) == [server.base_url, other.base_url]


def test_a_failing_url_cools_down_then_is_tried_again(server, other):
    server.push(Reply.error(500))

    async def go(backend: OpenAIBackend) -> list[str | None]:
        async with backend:
            urls = [(await backend.complete(ASK)).url, (await backend.complete(ASK)).url]
            await asyncio.sleep(0.6)  # the cooldown ends
            return [*urls, (await backend.complete(ASK)).url]

    urls = asyncio.run(go(backend_for(server, other, cooldown_s=0.5)))
    assert urls == [other.base_url, other.base_url, server.base_url]
    assert (len(server.requests), len(other.requests)) == (2, 2)


def test_when_all_urls_cool_down_the_one_cooling_longest_is_tried(server, other):
    server.default = other.default = Reply.error(503)
    error = failure(backend_for(server, other, retries=2, cooldown_s=30))
    assert isinstance(error, BackendServerError) and error.status == 503
    assert (len(server.requests), len(other.requests)) == (2, 1)  # first, other, first again


def test_max_concurrency_bounds_the_requests_in_flight(server):
    server.default = Reply.ok(delay_s=0.15)
    results = complete_many(backend_for(server, max_concurrency=2), 6)
    assert len(results) == 6 and len(server.requests) == 6
    assert server.peak_in_flight == 2 and peak_over(server) == 2


def test_max_concurrency_holds_with_a_client_of_larger_pool(server):
    server.default = Reply.ok(delay_s=0.15)

    async def go() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as client:
            backend = OpenAIBackend("m", config_for(server, max_concurrency=2), client=client)
            await asyncio.gather(*(backend.complete(ASK) for _ in range(6)))

    asyncio.run(go())
    assert len(server.requests) == 6 and server.peak_in_flight == 2


def test_max_concurrency_is_over_all_urls(server, other):
    server.default = other.default = Reply.ok(delay_s=0.15)
    complete_many(backend_for(server, other, max_concurrency=3), 6)
    assert peak_over(server, other) == 3
    assert len(server.requests) + len(other.requests) == 6


# ------------------------------------------------------------------------------------- cancellation


def test_cancelling_complete_closes_the_connection(server):
    server.default = Reply.ok(delay_s=20)

    async def go() -> bool:
        async with backend_for(server, timeout_s=60) as backend:  # open: the cancellation itself must close
            task = asyncio.create_task(backend.complete(ASK))
            while not server.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await asyncio.to_thread(server.wait_until, lambda s: s.requests[0].disconnected)

    assert asyncio.run(go())
    assert not server.requests[0].answered and len(server.requests) == 1


def test_a_closed_backend_refuses_and_a_given_client_is_left_open(server):
    async def go() -> None:
        async with aiohttp.ClientSession() as client:
            backend = OpenAIBackend("m", config_for(server), client=client)
            assert (await backend.complete(ASK)).text
            await backend.aclose()
            assert not client.closed
            with pytest.raises(RuntimeError, match="closed"):
                await backend.complete(ASK)

    asyncio.run(go())


# ------------------------------------------------------------------------------------------ factory


def test_make_backend_reads_the_key_from_the_named_variable(server):
    config = config_for(server, api_key_env="MODEL_KEY")
    backend = make_backend("m", config, environ={"MODEL_KEY": "sk-env"})
    assert isinstance(backend, OpenAIBackend)
    complete(backend)
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"


def test_make_backend_without_api_key_env_sends_no_key(server):
    complete(make_backend("m", config_for(server), environ={}))
    assert "authorization" not in server.requests[0].headers


@pytest.mark.parametrize("environ", [{}, {"MODEL_KEY": ""}])
def test_make_backend_refuses_an_unset_key_variable(environ):
    with pytest.raises(BackendSetupError, match="'MODEL_KEY'") as info:
        make_backend("m", config_for("http://127.0.0.1:9", api_key_env="MODEL_KEY"), environ=environ)
    assert info.value.kind == "setup" and info.value.model == "m"


def test_make_backend_builds_the_local_backend_lazily(monkeypatch):
    class FakeLocal:
        def __init__(self, name: str, config: LocalModelConfig) -> None:
            self.name, self.config = name, config

    module = types.ModuleType("smcs.backends.local")
    module.LocalBackend = FakeLocal  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smcs.backends.local", module)
    backend = make_backend("smol", LocalModelConfig(temperature=0.2))
    assert isinstance(backend, FakeLocal) and backend.name == "smol"


def test_make_backend_says_how_to_install_the_local_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "smcs.backends.local", None)  # importing it raises ImportError
    with pytest.raises(BackendSetupError, match=r"pip install 'smcs\[local\]'") as info:
        make_backend("smol", LocalModelConfig())
    assert info.value.model == "smol"


# ---------------------------------------------------------------------------------- the fault server


def _address(server: FaultServer) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port)


def test_the_fault_server_stops_while_a_client_waits_on_a_hang():
    with FaultServer([Reply.hang()]) as server, socket.create_connection(_address(server)) as client:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert server.wait_until(lambda s: s.in_flight == 1)
        server.stop()
        assert not server.alive
        assert client.recv(100) == b""  # closed unanswered
    assert not server.requests[0].answered


def _post_status(url: str) -> int:
    """The status of one blocking JSON POST to ``url``."""
    request = urllib.request.Request(url, data=b'{"messages": []}', headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_fault_server_follows_its_script_then_the_default(server):
    server.push(Reply.error(503), Reply.rate_limited("0"))
    url = server.base_url + "/v1/chat/completions"
    statuses = [_post_status(url) for _ in range(4)]
    assert statuses == [503, 429, 200, 200]
    # answered is set once the server's write returns, which may be just after the client has read it all
    assert server.wait_until(lambda s: [r.answered for r in s.requests] == [True] * 4)
