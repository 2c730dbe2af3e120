"""The remote embedder against a real HTTP server on 127.0.0.1 that answers well, slowly or badly.

Each test runs its own server inside ``asyncio.run`` (see embedding_server.py), so every server stops
with its test. Backoffs are shortened so that the retry paths take milliseconds.
"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import numpy as np
import pytest
from embedding_server import HANG_LIMIT_S, EmbeddingServer, Step, unit, vector_for
from service_harness import make_config

from smcs import Bank, Policy
from smcs.bank import EmbedderInfo, ModelInfo, Question
from smcs.embed import (
    EmbedderAuthError,
    EmbedderConfig,
    EmbedderConnectionError,
    EmbedderError,
    EmbedderMalformedResponse,
    EmbedderRateLimited,
    EmbedderRequestError,
    EmbedderServerError,
    EmbedderSetupError,
    EmbedderTimeout,
    RemoteEmbedder,
    as_async,
    as_sync,
    make_embedder,
)
from smcs.service import start_server

TEXTS = ["What is the capital of France?", "Solve 2x + 3 = 11.", "", "naïve café 東京", "a" * 50]
FAST = {"backoff_s": 0.01, "max_backoff_s": 1.0, "timeout_s": 5.0}


def remote(server: EmbeddingServer, **kwargs: object) -> RemoteEmbedder:
    """A ``RemoteEmbedder`` for ``server`` with fast retries (overridable)."""
    return RemoteEmbedder(server.base_url, "test-model", **{**FAST, **kwargs})  # type: ignore[arg-type]


def expected(texts: list[str], dim: int = 8) -> np.ndarray:
    """What a correct embedder returns for ``texts`` from the test server."""
    return unit([vector_for(t, dim) for t in texts])


def embed_with(script: list[Step], texts: list[str] = TEXTS, **kwargs: object) -> tuple[np.ndarray, EmbeddingServer]:
    """Run ``texts`` through a fresh server following ``script``; the vectors and the server."""

    async def go() -> tuple[np.ndarray, EmbeddingServer]:
        async with EmbeddingServer(script) as server:
            return await remote(server, **kwargs).embed(texts), server

    return asyncio.run(go())


def failure(script: list[Step], texts: list[str] = TEXTS, **kwargs: object) -> tuple[EmbedderError, EmbeddingServer]:
    """The ``EmbedderError`` raised for ``texts`` by a server following ``script``, and the server."""

    async def go() -> tuple[EmbedderError, EmbeddingServer]:
        async with EmbeddingServer(script) as server:
            with pytest.raises(EmbedderError) as info:
                await remote(server, **kwargs).embed(texts)
            return info.value, server

    return asyncio.run(go())


# ------------------------------------------------------------------------------------------ answering


def test_embeds_in_order_with_unit_rows_and_sends_the_openai_request():
    vectors, server = embed_with([Step()], api_key="sk-test")
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 8) and vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/embeddings")
    assert request.json == {"model": "test-model", "input": TEXTS}
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["content-type"] == "application/json"


def test_no_api_key_sends_no_authorization_header():
    _, server = embed_with([Step()])
    assert "authorization" not in server.requests[0].headers


def test_batches_split_the_input_and_keep_its_order():
    texts = [f"question {i}" for i in range(7)]
    vectors, server = embed_with([Step()], texts, batch_size=3)
    assert [r.json["input"] for r in server.requests] == [texts[0:3], texts[3:6], texts[6:7]]
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)


def test_out_of_order_items_are_sorted_by_index():
    vectors, _ = embed_with([Step("reversed")])
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)


def test_items_without_index_are_taken_in_list_order():
    vectors, _ = embed_with([Step("no_index")])
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_with_or_without_v1(suffix):
    async def go() -> str:
        async with EmbeddingServer() as server:
            await RemoteEmbedder(server.base_url + suffix, "m", **FAST).embed(["x"])
            return server.requests[0].path

    assert asyncio.run(go()) == "/v1/embeddings"


def test_dimension_is_learned_then_known():
    async def go() -> None:
        async with EmbeddingServer(dim=12) as server:
            embedder = remote(server)
            with pytest.raises(EmbedderSetupError, match="not known yet"):
                _ = embedder.info
            assert (await embedder.probe()).dim == 12
            assert embedder.info.id == "test-model"
            assert len(server.requests) == 1
            assert (await embedder.embed([])).shape == (0, 12)  # known now: no request
            assert len(server.requests) == 1

    asyncio.run(go())


def test_empty_input_with_unknown_dimension_probes_once():
    vectors, server = embed_with([Step()], [])
    assert vectors.shape == (0, 8) and vectors.dtype == np.float32
    assert len(server.requests) == 1


def test_empty_input_with_configured_dimension_sends_nothing():
    vectors, server = embed_with([Step()], [], dim=8, embedder_id="my-embedder")
    assert vectors.shape == (0, 8)
    assert server.requests == []


def test_configured_id_is_reported():
    async def go() -> None:
        async with EmbeddingServer() as server:
            assert remote(server, dim=8, embedder_id="bge@tei").info.id == "bge@tei"

    asyncio.run(go())


def test_a_pool_opened_by_async_with_serves_many_calls_and_closes():
    async def go() -> None:
        async with EmbeddingServer() as server:
            async with remote(server) as embedder:
                first = await embedder.embed(TEXTS[:2])
                second = await embedder.embed(TEXTS[2:])
            np.testing.assert_allclose(np.vstack([first, second]), expected(TEXTS), atol=1e-6)
            assert await embedder.embed(["after close"]) is not None  # falls back to a per-call client

    asyncio.run(go())


def test_a_client_given_by_the_caller_is_used_and_left_open():
    async def go() -> None:
        async with EmbeddingServer() as server, aiohttp.ClientSession() as client:
            async with remote(server, client=client) as embedder:
                await embedder.embed(["x"])
            assert not client.closed
            await remote(server, client=client).embed(["y"])
            assert len(server.requests) == 2

    asyncio.run(go())


def test_as_async_returns_the_remote_embedder_itself_and_as_sync_blocks():
    async def serve_then_call() -> np.ndarray:
        async with EmbeddingServer() as server:
            blocking = as_sync(remote(server))
            assert as_async(blocking.inner) is blocking.inner
            return await asyncio.to_thread(blocking.embed, TEXTS)  # a fresh loop in another thread

    np.testing.assert_allclose(asyncio.run(serve_then_call()), expected(TEXTS), atol=1e-6)


# ------------------------------------------------------------------------------------------ failures


def test_a_hung_server_times_out_without_retry():
    start = time.monotonic()
    error, server = failure([Step("hang")], timeout_s=0.3, retries=3)
    elapsed = time.monotonic() - start
    assert isinstance(error, EmbedderTimeout) and error.kind == "timeout"
    assert server.base_url in str(error) and "timeout_s=0.3" in str(error)
    assert len(server.requests) == 1
    assert elapsed < HANG_LIMIT_S


def test_429_with_retry_after_is_waited_out_then_succeeds():
    start = time.monotonic()
    vectors, server = embed_with([Step("status", 429, b'{"error": "slow down"}', {"Retry-After": "0.3"}), Step()])
    assert time.monotonic() - start >= 0.3
    assert len(server.requests) == 2
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)


def test_429_with_an_http_date_retry_after_in_the_past_retries_at_once():
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    _, server = embed_with([Step("status", 429, b"", {"Retry-After": date}), Step()])
    assert len(server.requests) == 2


def test_429_asking_longer_than_max_backoff_fails_at_once():
    error, server = failure([Step("status", 429, b"busy", {"Retry-After": "120"})], max_backoff_s=1.0)
    assert isinstance(error, EmbedderRateLimited) and error.kind == "rate_limited"
    assert error.retry_after == 120.0
    assert len(server.requests) == 1
    assert "429" in str(error) and server.base_url in str(error)


def test_429_every_time_gives_up_after_the_retries():
    error, server = failure([Step("status", 429, b"busy")], retries=2)
    assert isinstance(error, EmbedderRateLimited)
    assert len(server.requests) == 3


def test_500_then_success_is_retried():
    vectors, server = embed_with([Step("status", 500, b"oops"), Step("status", 503), Step()])
    assert len(server.requests) == 3
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)


def test_500_every_time_is_a_server_error_naming_the_status_and_body():
    error, server = failure([Step("status", 502, b'{"error": "upstream gone"}')], retries=1)
    assert isinstance(error, EmbedderServerError) and error.kind == "server_error" and error.status == 502
    assert "502" in str(error) and "upstream gone" in str(error) and server.base_url in str(error)
    assert len(server.requests) == 2


def test_401_is_an_auth_error_not_retried_and_the_key_is_not_shown():
    error, server = failure([Step("status", 401, b'{"error": "bad key"}')], api_key="sk-secret")
    assert isinstance(error, EmbedderAuthError) and error.kind == "auth"
    assert len(server.requests) == 1
    assert "sk-secret" not in str(error) and "check the API key" in str(error)
    assert server.base_url in str(error)


def test_401_without_a_key_says_none_was_sent():
    error, _ = failure([Step("status", 401)])
    assert isinstance(error, EmbedderAuthError) and "no API key was sent" in str(error)


def test_another_4xx_is_a_request_error_not_retried():
    error, server = failure([Step("status", 400, b'{"error": "model not found"}')])
    assert isinstance(error, EmbedderRequestError) and error.kind == "bad_request" and error.status == 400
    assert "model not found" in str(error)
    assert len(server.requests) == 1


def test_malformed_json_is_a_malformed_response_not_retried():
    error, server = failure([Step("malformed_json")])
    assert isinstance(error, EmbedderMalformedResponse) and error.kind == "malformed_response"
    assert server.base_url in str(error)
    assert len(server.requests) == 1


def test_a_truncated_body_is_retried_then_succeeds():
    vectors, server = embed_with([Step("truncated"), Step()])
    assert len(server.requests) == 2
    np.testing.assert_allclose(vectors, expected(TEXTS), atol=1e-6)


def test_a_body_truncated_every_time_is_a_connection_error():
    error, server = failure([Step("truncated")], retries=1)
    assert isinstance(error, EmbedderConnectionError) and error.kind == "connection"
    assert server.base_url in str(error)
    assert len(server.requests) == 2


def test_a_connection_closed_without_answer_is_retried():
    _, server = embed_with([Step("close"), Step()])
    assert len(server.requests) == 2


def test_connection_refused_is_a_connection_error_after_the_retries():
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        embedder = RemoteEmbedder(url, "m", **{**FAST, "retries": 2})
        with pytest.raises(EmbedderConnectionError, match="cannot connect to " + url):
            asyncio.run(embedder.embed(["x"]))


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (Step("missing_data"), "data"),
        (Step("wrong_dim"), "$.data[4].embedding has 9 values"),
        (Step("zero_vector"), "$.data[0].embedding is a zero"),
        (Step("wrong_count"), "$.data has 4 items for 5 inputs"),
        (Step("dup_index"), "$.data[1].index is 0"),
    ],
)
def test_invalid_responses_are_malformed_and_name_the_field(step, field):
    error, server = failure([step])
    assert isinstance(error, EmbedderMalformedResponse)
    assert field in str(error) and server.base_url in str(error)
    assert len(server.requests) == 1


def test_a_configured_dimension_is_required_of_the_response():
    error, _ = failure([Step()], dim=16)
    assert isinstance(error, EmbedderMalformedResponse) and "has 8 values but dim is 16" in str(error)


def test_a_learned_dimension_is_required_of_later_responses():
    async def go() -> None:
        async with EmbeddingServer(dim=8) as server:
            embedder = remote(server)
            await embedder.embed(["x"])
            server.dim = 10
            with pytest.raises(EmbedderMalformedResponse, match="has 10 values but dim is 8"):
                await embedder.embed(["y"])

    asyncio.run(go())


def test_non_string_input_is_a_type_error_naming_the_index():
    embedder = RemoteEmbedder("http://127.0.0.1:9", "m")  # never contacted
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        asyncio.run(embedder.embed(["ok", 3]))
    with pytest.raises(TypeError, match="not a single str"):
        asyncio.run(embedder.embed("just one string"))


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"timeout_s": 0}, {"retries": -1}, {"backoff_s": -1}, {"dim": 0}],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RemoteEmbedder("http://127.0.0.1:9", "m", **kwargs)


# ---------------------------------------------------------------------------------- config factory


def test_make_embedder_builds_a_remote_one_with_the_key_from_the_environment():
    async def go() -> EmbeddingServer:
        async with EmbeddingServer() as server:
            config = EmbedderConfig(kind="remote", base_url=server.base_url, model="m", api_key_env="KEY", dim=8)
            embedder = make_embedder(config, environ={"KEY": "sk-env"})
            assert isinstance(embedder, RemoteEmbedder) and embedder.info.dim == 8
            await embedder.embed(["x"])
            return server

    assert asyncio.run(go()).requests[0].headers["authorization"] == "Bearer sk-env"


def test_make_embedder_refuses_an_unset_key_variable():
    config = EmbedderConfig(kind="remote", base_url="http://127.0.0.1:9", model="m", api_key_env="NOPE")
    with pytest.raises(EmbedderSetupError, match="'NOPE'"):
        make_embedder(config, environ={})


def test_a_server_keeps_one_connection_pool_open_for_its_lifetime(tmp_path, monkeypatch):
    """``smcs serve`` enters its remote embedder once at start-up and closes it once at stop."""
    events: list[str] = []
    enter, close = RemoteEmbedder.__aenter__, RemoteEmbedder.aclose

    async def counting_enter(self):
        events.append("enter")
        return await enter(self)

    async def counting_close(self):
        events.append("close")
        await close(self)

    monkeypatch.setattr(RemoteEmbedder, "__aenter__", counting_enter)
    monkeypatch.setattr(RemoteEmbedder, "aclose", counting_close)
    Bank.create(
        tmp_path / "bank",
        embeddings=np.eye(8, dtype=np.float32)[:4],
        capability=np.ones((1, 4), dtype=np.int8),
        questions=[Question(id=f"q{i}", text=f"q{i}") for i in range(4)],
        models=[ModelInfo("m0")],
        embedder=EmbedderInfo("m", 8),
    )

    async def go() -> EmbeddingServer:
        async with EmbeddingServer() as server:
            embedder = EmbedderConfig(kind="remote", base_url=server.base_url, model="m", dim=8)
            running = await start_server(make_config(embedder=embedder, policy=Policy(k=1, k_drop=0)), tmp_path / "bank")
            assert events == ["enter"]
            await running.state.live.embedder.embed(["one", "two"])
            await running.state.live.embedder.embed(["three"])
            assert events == ["enter"]
            await running.stop(0)
            return server

    server = asyncio.run(go())
    assert events == ["enter", "close"] and len(server.requests) == 2
