"""The router's own overhead on the full pipeline: wall time of one answer minus the models' time.

Every model is a loopback OpenAI-compatible server (``model_server.py``, run in a subprocess of its
own so that it does not share this process's GIL) that answers after a fixed ``DELAY_S`` with a canned
body and logprobs on a keep-alive connection, so an answer at K = 7, n = 8 costs the models exactly two
delays (the references in parallel, then the aggregations in parallel). What is left is ours: routing,
prompt building, HTTP requests and parsing, scoring (Eq 7) and the evidence. The aggregations' embedding
is timed two ways: a free stub embedder (the dispatch overhead alone) and the bundled ONNX model on the
CPU (what a router without a GPU embedder pays on top).

The floor beside them: the same two rounds of concurrent POSTs (K, then n) with bodies of the same size,
sent by a bare ``aiohttp`` session to the same servers and read but not parsed. What an answer costs
above the floor is the router's own work; the route's share of it is recorded apart.

``extra_info`` carries the overhead's p50 and p99 in milliseconds (and the route's p50) and the model
calls of one answer (``model_calls``, of which ``aggregation_calls``); ``report.py`` prints them with the
ratio to the floor.

Early exit (``Policy.consensus``): the canned answers are all the same text, so with a consensus
threshold the references agree and an answer costs K calls and no aggregation (one model delay, not
two): ``test_answer_consensus_exit`` shows it (``model_calls`` = K, ``aggregation_calls`` = 0, beside
K + n without the threshold).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import aiohttp
import msgspec
import numpy as np
import pytest

import model_server as loopback_models

from smcs import Bank, Policy, Router
from smcs.backends import OpenAIModelConfig
from smcs.bank import EmbedderInfo
from smcs.backends.pool import ModelPool
from smcs.core.pipeline import AnswerResult, smcs_pipeline
from smcs.runtime.host import StepHost, answer_models
from smcs.embed import OnnxEmbedder, as_async
from smcs.synthetic import create_clustered_bank, queries_near

DELAY_S = 0.05
N_MODELS, K, N = 8, 7, 8
ROUNDS = 20
ANSWER_WORDS = 200  # tokens of every answer, each with its logprob


class FreeEmbedder:
    """An async embedder that costs nothing: a fixed pseudo-random unit vector per call position."""

    info = EmbedderInfo("bench-free", 384)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.random.default_rng(len(texts)).standard_normal((len(texts), 384)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class SameTextEmbedder:
    """An async embedder that costs nothing and gives equal texts equal vectors (a pseudo-random unit
    vector per text length): the canned answers agree, as the consensus case needs."""

    info = EmbedderInfo("bench-same-text", 384)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.stack([np.random.default_rng(len(t)).standard_normal(384) for t in texts]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def model_servers() -> contextlib.AbstractContextManager[list[str]]:
    """The base URLs of ``N_MODELS`` fixed-delay keep-alive model servers in a subprocess (stopped at the end)."""
    return loopback_models.running(N_MODELS, DELAY_S, ANSWER_WORDS)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> tuple[Router, np.ndarray]:
    path = tmp_path_factory.mktemp("answer-bank") / "bank"
    embeddings = np.asarray(create_clustered_bank(path, 15_000, 384, N_MODELS).embeddings)
    return Router(Bank.open(path), Policy(k=K, n=N)), queries_near(embeddings, ROUNDS)


def _measure(benchmark, router: tuple[Router, np.ndarray], embedder, policy: Policy | None = None) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "answer"
    routing, queries = router
    if policy is not None:
        routing = Router(routing.bank, policy)
    exits = routing.policy.consensus is not None
    model_rounds = 1 if exits else 2  # the references, then (unless they agree) the aggregations
    names = routing.bank.model_names
    overheads: list[float] = []
    routes: list[float] = []
    calls: list[tuple[int, int]] = []
    loop = asyncio.new_event_loop()
    with model_servers() as urls:
        configs = {m: OpenAIModelConfig(base_urls=[url], retries=0, max_tokens=256) for m, url in zip(names, urls)}
        pool = ModelPool.from_config(configs)
        usable = answer_models(names, pool)
        host = StepHost(pool, embedder)

        async def one(i: int) -> None:
            start = time.perf_counter()
            decision = routing.route(queries[i % len(queries)], seed=i, allowed_models=usable)
            routes.append(time.perf_counter() - start)
            result: AnswerResult = await host.run(smcs_pipeline(decision, "What is 12 times 13?", policy=routing.policy))
            overheads.append(time.perf_counter() - start - model_rounds * DELAY_S)
            calls.append((len(result.references) + len(result.aggregations), len(result.aggregations)))
            assert (result.source, len(result.aggregations)) == (("consensus", 0) if exits else ("aggregation", N))

        counter = iter(range(10**9))
        loop.run_until_complete(one(next(counter)))  # connections, JIT and the embedder warm
        overheads.clear()
        routes.clear()
        benchmark.pedantic(lambda: loop.run_until_complete(one(next(counter))), rounds=ROUNDS, iterations=1)
        loop.run_until_complete(pool.aclose())
    loop.close()
    _record(benchmark, overheads, model_rounds)
    benchmark.extra_info["route_p50_ms"] = round(1e3 * float(np.median(routes)), 2)
    (model_calls, aggregation_calls), = set(calls)  # every answer of a case makes the same calls
    benchmark.extra_info["model_calls"] = model_calls
    benchmark.extra_info["aggregation_calls"] = aggregation_calls


def _record(benchmark, overheads: list[float], model_rounds: int = 2) -> None:  # type: ignore[no-untyped-def]
    benchmark.extra_info["overhead_p50_ms"] = round(1e3 * float(np.median(overheads)), 2)
    benchmark.extra_info["overhead_p99_ms"] = round(1e3 * float(np.quantile(overheads, 0.99)), 2)
    benchmark.extra_info["model_time_ms"] = model_rounds * 1e3 * DELAY_S


def _chat_body(words: int) -> bytes:
    """A chat-completions request whose one message holds ``words`` words (the size, not the prompt, matters)."""
    return msgspec.json.encode({"model": "bench", "messages": [{"role": "user", "content": "word " * words}], "logprobs": True})


def test_answer_transport_floor(benchmark):
    """The floor: K then n concurrent POSTs of an answer's sizes over a bare aiohttp session, bodies read
    and not parsed; its overhead is what any router on this machine pays to these servers."""
    benchmark.group = "answer"
    reference_body = _chat_body(20)  # a question
    aggregate_body = _chat_body((K - 1) * ANSWER_WORDS)  # a question and K − K_drop references
    overheads: list[float] = []
    loop = asyncio.new_event_loop()
    with model_servers() as urls:

        async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> bytes:
            async with session.post(f"{url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}) as response:
                return await response.read()

        async def one(session: aiohttp.ClientSession) -> None:
            start = time.perf_counter()
            await asyncio.gather(*(post(session, urls[i % N_MODELS], reference_body) for i in range(K)))
            await asyncio.gather(*(post(session, urls[i % N_MODELS], aggregate_body) for i in range(N)))
            overheads.append(time.perf_counter() - start - 2 * DELAY_S)

        async def open_session() -> aiohttp.ClientSession:  # a session belongs to the loop it is made in
            return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2 * N))

        session = loop.run_until_complete(open_session())
        loop.run_until_complete(one(session))  # connections open
        overheads.clear()
        benchmark.pedantic(lambda: loop.run_until_complete(one(session)), rounds=ROUNDS, iterations=1)
        loop.run_until_complete(session.close())
    loop.close()
    _record(benchmark, overheads)


def test_answer_overhead_free_embedder(benchmark, router):
    _measure(benchmark, router, FreeEmbedder())


def test_answer_overhead_free_embedder_one_routing_thread(benchmark, router):
    """The same with the route kernel on one thread: the parallel kernel, called between the event
    loop's HTTP work, was several times slower than this on two busy cores while OpenMP's workers spun
    after each region (before the passive wait policy of ``kernels.configure_threads``); this case watches
    for it (docs/performance.md, "Answer overhead")."""
    _measure(benchmark, router, FreeEmbedder(), Policy(k=K, n=N, threads=1))


def test_answer_overhead_onnx_embedder(benchmark, router):
    _measure(benchmark, router, as_async(OnnxEmbedder()))


def test_answer_consensus_exit(benchmark, router):
    """The references agree (the canned answers are one text): with a consensus threshold the answer is
    the most central reference, after K calls and no aggregation (``model_calls`` K, ``aggregation_calls`` 0)."""
    _measure(benchmark, router, SameTextEmbedder(), Policy(k=K, n=N, consensus=0.8))

