"""What the HTTP gateway's ``smcs-route`` costs on top of the model it relays: time to first token and to
the whole streamed answer through the gateway, against calling the model server directly, against the
in-process embed + route of the same question, against one bare HTTP round trip to the gateway.

The model is a loopback OpenAI-compatible server that streams (``model_server.py`` in a subprocess of its
own: the first token ``DELAY_S`` after the request, then ``WORDS`` tokens ``TOKEN_DELAY_S`` apart, in
HTTP chunks on a keep-alive connection); the gateway is a real ``smcs serve --port 0 --http-port 0`` in a
subprocess of its own, over a bank of ``N_QUESTIONS`` questions embedded by the bundled ONNX model, with
four models that all point at that server. One client (``http.client``, one keep-alive connection per
server, in this process) measures, in each round and in this order:

- ``direct``: the streamed chat completion straight from the model server;
- ``gateway``: the same through ``POST /v1/chat/completions`` with ``model="smcs-route"`` (the gateway
  embeds and routes the question, then relays the chosen model's stream);
- ``passthrough``: the same through the gateway with ``model="m0"`` (relayed without a route), which
  separates what relaying costs from what routing in the server costs;
- ``embed_route``: the bundled embedder and ``Router.route`` (K = 1) on the same question in this
  process, what the gateway adds before the model is asked;
- ``hop``: one bare ``GET /v1/models`` round trip to the gateway.

``extra_info`` carries each one's p50 and p99 in ms and the ratios: gateway over direct (first token and
whole answer), the issue's goal, (gateway − direct − embed_route) / hop, and the relay alone,
(passthrough − direct) / hop, at p50 and p99: at most 1 means that relaying costs no more than the hop it
adds. The benchmark's own time is one whole round.
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

import model_server as loopback_models

from smcs import Bank, Policy, Router
from smcs.bank import ModelInfo, Question
from smcs.core.query_text import query_texts
from smcs.embed import OnnxEmbedder

DELAY_S = 0.02
WORDS = 32
TOKEN_DELAY_S = 0.001
N_MODELS = 4
N_QUESTIONS = 400
ROUNDS = 100
QUESTIONS = ["What is 12 times 13?", "Who wrote Hamlet?", "Implement binary search in Python.", "What is the capital of Japan?"]
TOPICS = ["arithmetic", "geometry", "history", "literature", "python", "chemistry", "geography", "music"]


def model_server() -> contextlib.AbstractContextManager[list[str]]:
    """The base URLs of ``N_MODELS`` streaming model servers in one subprocess (stopped at the end)."""
    return loopback_models.running(N_MODELS, DELAY_S, WORDS, TOKEN_DELAY_S)


@contextlib.contextmanager
def gateway(config: Path, bank: Path) -> Iterator[int]:
    """``smcs serve`` with the gateway on a free port, in a subprocess; its HTTP port (stopped at the end)."""
    command = [sys.executable, "-m", "smcs.cli", "serve", "--config", str(config), "--bank", str(bank), "--port", "0", "--http-port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:
            if line.startswith("smcs: http on "):
                port = int(line.rsplit(":", 1)[1].split("/")[0])
            if line.startswith("smcs: serving bank"):
                break
        assert port is not None, "smcs serve printed no http line"
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def text_bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OnnxEmbedder]:
    """A bank of templated questions embedded by the bundled ONNX model, ``N_MODELS`` models."""
    rng = np.random.default_rng(0)
    texts = [f"Question {i} about {TOPICS[i % len(TOPICS)]}: explain case {i * 7 % 101}." for i in range(N_QUESTIONS)]
    embedder = OnnxEmbedder()
    bank = Bank.create(
        tmp_path_factory.mktemp("gateway") / "bank",
        embeddings=embedder.embed(texts),
        capability=rng.integers(0, 2, size=(N_MODELS, N_QUESTIONS), dtype=np.int8),
        questions=[Question(id=f"q{i}", text=t) for i, t in enumerate(texts)],
        models=[ModelInfo(name=f"m{i}") for i in range(N_MODELS)],
        embedder=embedder.info,
    )
    return bank.path, embedder


def _chat(model: str, question: str) -> bytes:
    return msgspec.json.encode({"model": model, "messages": [{"role": "user", "content": question}], "stream": True, "max_tokens": 64})


def _streamed(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[float, float]:
    """Seconds to the first token and to the end of one streamed chat completion."""
    start = time.perf_counter()
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200, response.read()[:300]
    first = None
    while line := response.readline():
        if first is None and line.startswith(b"data: {") and b'"content"' in line:
            first = time.perf_counter()
        if line.startswith(b"data: [DONE]"):
            response.read()  # the last chunk
            break
    end = time.perf_counter()
    assert first is not None
    return first - start, end - start


def _hop(connection: http.client.HTTPConnection) -> float:
    start = time.perf_counter()
    connection.request("GET", "/v1/models")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return time.perf_counter() - start


def test_gateway_smcs_route_stream(benchmark, text_bank, tmp_path):
    benchmark.group = "gateway"
    bank_path, embedder = text_bank
    names = ("direct_ttft", "direct_total", "gateway_ttft", "gateway_total", "passthrough_ttft", "passthrough_total", "embed_route", "hop")
    times: dict[str, list[float]] = {name: [] for name in names}
    router = Router(Bank.open(bank_path), Policy(k=1, k_drop=0, n=1, n_base=50))
    rule = router.bank.manifest.embedder.query_text
    with model_server() as urls:
        tables = "".join(f'[models."m{i}"]\nkind = "openai"\nbase_urls = ["{url}"]\nretries = 0\n\n' for i, url in enumerate(urls))
        config = tmp_path / "smcs.toml"
        config.write_text("[policy]\nk = 1\nk_drop = 0\nn = 1\nn_base = 50\n\n" + tables)
        host, port = urls[0].removeprefix("http://").split(":")
        with gateway(config, bank_path) as http_port:
            direct = http.client.HTTPConnection(host, int(port), timeout=30)
            through = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
            counter = iter(range(10**9))

            def one_round() -> None:
                question = QUESTIONS[next(counter) % len(QUESTIONS)]
                ttft, total = _streamed(direct, "/v1/chat/completions", _chat("m0", question))
                times["direct_ttft"].append(ttft)
                times["direct_total"].append(total)
                ttft, total = _streamed(through, "/v1/chat/completions", _chat("smcs-route", question))
                times["gateway_ttft"].append(ttft)
                times["gateway_total"].append(total)
                ttft, total = _streamed(through, "/v1/chat/completions", _chat("m0", question))
                times["passthrough_ttft"].append(ttft)
                times["passthrough_total"].append(total)
                start = time.perf_counter()
                query = embedder.embed(query_texts([question], rule))[0]
                router.route(query, seed=1)
                times["embed_route"].append(time.perf_counter() - start)
                times["hop"].append(_hop(through))

            for _ in range(5):  # connections, JIT, the embedder and the gateway's first requests warm
                one_round()
            for values in times.values():
                values.clear()
            benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
            direct.close()
            through.close()
    _record(benchmark, times)


def _record(benchmark, times: dict[str, list[float]]) -> None:  # type: ignore[no-untyped-def]
    info = benchmark.extra_info
    stats = {name: {q: float(np.quantile(values, q)) for q in (0.5, 0.99)} for name, values in times.items()}
    for name, by_q in stats.items():
        info[f"{name}_p50_ms"] = round(1e3 * by_q[0.5], 3)
        info[f"{name}_p99_ms"] = round(1e3 * by_q[0.99], 3)
    for q, tag in ((0.5, "p50"), (0.99, "p99")):
        s = {name: by_q[q] for name, by_q in stats.items()}
        info[f"ttft_ratio_{tag}"] = round(s["gateway_ttft"] / s["direct_ttft"], 3)
        info[f"total_ratio_{tag}"] = round(s["gateway_total"] / s["direct_total"], 3)
        info[f"relay_over_hop_ttft_{tag}"] = round((s["gateway_ttft"] - s["direct_ttft"] - s["embed_route"]) / s["hop"], 3)
        info[f"relay_over_hop_total_{tag}"] = round((s["gateway_total"] - s["direct_total"] - s["embed_route"]) / s["hop"], 3)
        info[f"passthrough_over_hop_ttft_{tag}"] = round((s["passthrough_ttft"] - s["direct_ttft"]) / s["hop"], 3)
        info[f"passthrough_over_hop_total_{tag}"] = round((s["passthrough_total"] - s["direct_total"]) / s["hop"], 3)
