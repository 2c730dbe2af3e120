"""Streaming and per-call generation settings: ``OpenAIBackend.stream`` against real fault servers on
127.0.0.1, ``ModelPool.stream`` (and its fallback for a backend that cannot stream), ``ModelCall.generation``
through the pool and ``StepHost.generation``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
from fault_server import FaultServer, Reply

from smcs.backends import ChatMessage, Completion, GenerationSettings, OpenAIBackend
from smcs.backends.config import OpenAIModelConfig
from smcs.backends.errors import BackendConnectionError, BackendMalformedResponse, BackendRequestError, BackendServerError
from smcs.backends.pool import ModelPool
from smcs.core.messages import Generation
from smcs.core.pipeline import CallFailed, CallModels, ModelCall
from smcs.runtime.host import StepHost

FAST = {"backoff_s": 0.01, "max_backoff_s": 1.0, "timeout_s": 5.0, "connect_timeout_s": 2.0}
ASK = [ChatMessage("user", "What is the capital of France?")]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def _backend(server: FaultServer, **kwargs: object) -> OpenAIBackend:
    return OpenAIBackend("m", OpenAIModelConfig(base_urls=[server.base_url], **{**FAST, **kwargs}))  # type: ignore[arg-type]


async def _collect(items: AsyncIterator[str | Completion]) -> tuple[list[str], Completion]:
    pieces: list[str] = []
    async for item in items:
        if isinstance(item, str):
            pieces.append(item)
        else:
            return pieces, item
    raise AssertionError("the stream ended without a Completion")


def test_stream_gives_each_token_then_the_whole_completion(server: FaultServer):
    server.default = Reply.ok("Paris is lovely", logprobs=[-0.5, -0.25, -0.125])

    async def run() -> tuple[list[str], Completion]:
        async with _backend(server) as backend:
            return await _collect(backend.stream(ASK, GenerationSettings(temperature=0.1, max_tokens=5, stop=["x"])))

    pieces, completion = asyncio.run(run())
    assert pieces == ["Paris ", "is ", "lovely"]
    assert completion.text == "Paris is lovely" and completion.token_logprobs == [-0.5, -0.25, -0.125]
    assert not completion.logprobs_missing and completion.finish_reason == "stop"
    assert completion.completion_tokens == 3 and completion.prompt_tokens == 6 and completion.url == server.base_url
    body = server.bodies[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0.1, 5, ["x"])


def test_stream_retries_before_the_first_byte_only(server: FaultServer):
    server.push(Reply.error(503), Reply.ok("fine"))

    async def run() -> tuple[list[str], Completion]:
        async with _backend(server, retries=2) as backend:
            return await _collect(backend.stream(ASK))

    pieces, completion = asyncio.run(run())
    assert pieces == ["fine"] and completion.text == "fine" and len(server.requests) == 2


@pytest.mark.parametrize(
    ("reply", "error", "fragment"),
    [
        (Reply.raw(b'data: {"choices": [{"delta": {"content": "Par"}}]}\n\n'), BackendConnectionError, "ended before the answer"),
        (Reply.raw(b"data: {not json\n\n"), BackendMalformedResponse, "a streamed chunk"),
        (Reply.raw(b'data: {"error": {"message": "out of memory"}}\n\n'), BackendServerError, "out of memory"),
        (Reply.error(400, b'{"error": "bad"}'), BackendRequestError, "400"),
    ],
)
def test_stream_failures_are_backend_errors(server: FaultServer, reply: Reply, error: type, fragment: str):
    server.default = reply

    async def run() -> None:
        async with _backend(server, retries=0) as backend:
            await _collect(backend.stream(ASK))

    with pytest.raises(error, match=fragment):
        asyncio.run(run())


def test_closing_a_stream_early_closes_its_connection(server: FaultServer):
    server.default = Reply.ok(" ".join(f"w{i}" for i in range(30)), token_delay_s=0.2)

    async def run() -> str:
        async with _backend(server) as backend:
            stream = backend.stream(ASK)
            first = await anext(stream)
            await stream.aclose()
            return first  # type: ignore[return-value]

    assert asyncio.run(run()) == "w0 "
    assert server.wait_until(lambda s: s.requests[0].disconnected, 10) and not server.requests[0].answered


class _Recording:
    """A backend without ``stream`` that records the settings it was called with."""

    name = "rec"

    def __init__(self) -> None:
        self.settings: list[GenerationSettings | None] = []

    async def complete(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Completion:
        self.settings.append(settings)
        return Completion(text="whole answer", token_logprobs=[-0.1, -0.2], completion_tokens=2)

    async def aclose(self) -> None:
        pass


def test_the_pool_applies_a_calls_generation_over_the_models_settings():
    backend = _Recording()
    pool = ModelPool({"rec": backend}, {"rec": GenerationSettings(temperature=0.7, max_tokens=64, top_p=0.9)})
    call = ModelCall(model="rec", messages=ASK, seed=5, generation=Generation(temperature=0.0, stop=["END"]))

    async def run() -> list[object]:
        await pool.call(call)
        await pool.call(ModelCall(model="rec", messages=ASK, seed=6))
        return [item async for item in pool.stream(call)]

    items = asyncio.run(run())
    first, plain, streamed = backend.settings
    assert first == GenerationSettings(temperature=0.0, max_tokens=64, top_p=0.9, stop=["END"], seed=5)
    assert plain == GenerationSettings(temperature=0.7, max_tokens=64, top_p=0.9, seed=6) and streamed == first
    assert items[0] == "whole answer" and isinstance(items[1], Completion) and len(items) == 2
    bad = ModelCall(model="rec", messages=ASK, seed=1, generation=Generation(top_p=0.0))
    failed = asyncio.run(pool.call(bad))
    assert isinstance(failed, CallFailed) and failed.kind == "bad_request" and "top_p" in failed.message
    (streamed_failure,) = asyncio.run(_all(pool.stream(bad)))
    assert isinstance(streamed_failure, CallFailed) and streamed_failure.kind == "bad_request"


async def _all(items: AsyncIterator[object]) -> list[object]:
    return [item async for item in items]


def test_the_host_sends_its_generation_over_every_call_field_by_field():
    """The request's settings (the gateway's) win over a call's own (a role's temperature) field by field:
    what the request leaves unset keeps the call's value, and a call with none gets the request's."""
    backend = _Recording()
    pool = ModelPool({"rec": backend}, {"rec": GenerationSettings()})
    own = Generation(max_tokens=3, temperature=0.2)

    def steps():  # type: ignore[no-untyped-def]
        yield CallModels(stage="reference", calls=[
            ModelCall(model="rec", messages=ASK, seed=1), ModelCall(model="rec", messages=ASK, seed=2, generation=own),
        ])
        return None

    asyncio.run(StepHost(pool, generation=Generation(max_tokens=11)).run(steps()))
    by_seed = {s.seed: s for s in backend.settings if s is not None}
    assert (by_seed[1].max_tokens, by_seed[1].temperature) == (11, 0.7)  # the model's configured temperature
    assert (by_seed[2].max_tokens, by_seed[2].temperature) == (11, 0.2)  # the role's temperature stays


def test_a_failed_stream_through_the_pool_is_a_call_failed(server: FaultServer):
    server.default = Reply.error(500)
    pool = ModelPool({"m": _backend(server, retries=0)}, {"m": GenerationSettings()})

    async def run() -> list[object]:
        async with pool:
            return [item async for item in pool.stream(ModelCall(model="m", messages=ASK, seed=1))]

    (failed,) = asyncio.run(run())
    assert isinstance(failed, CallFailed) and failed.kind == "server_error"
