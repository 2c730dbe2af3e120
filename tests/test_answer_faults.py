"""Backend faults during Answer: a real server, seven referencers of which three are broken, an
aggregator failing half the time, a model whose server is down at start-up, and a model with one broken
and one healthy replica. Every model is a real HTTP server on 127.0.0.1 (``fault_server``)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from fault_server import FaultServer, Reply
from service_harness import make_config, running_server
from smcs import Bank, Policy
from smcs.backends import OpenAIModelConfig
from smcs.bank import ModelInfo, Question
from smcs.config import AnswerConfig
from smcs.core.pipeline import AnswerResult
from smcs.embed import EmbedderConfig, OnnxEmbedder

HEALTHY = ("ok-1", "ok-2", "ok-3", "ok-4")
BROKEN = {"hangs": Reply.hang(), "fails": Reply.error(500, b'{"error": "boom"}'), "garbles": Reply.malformed_json()}
AGGREGATOR = "agg"
MODELS = (*HEALTHY, *BROKEN, AGGREGATOR)
QUESTIONS = ["What is 12 times 13?", "What is 7 plus 8?", "Name the capital of Italy.", "Who wrote Hamlet?"]
REFERENCE_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every referencer right on every question; the aggregator (named by the policy) on none, so the
    prior's top seven are exactly the other models."""
    embedder = OnnxEmbedder()
    capability = np.ones((len(MODELS), len(QUESTIONS)), dtype=np.int8)
    capability[MODELS.index(AGGREGATOR)] = 0
    bank = Bank.create(
        tmp_path_factory.mktemp("faults") / "bank", embeddings=embedder.embed(QUESTIONS), capability=capability,
        questions=[Question(id=f"q{i}", text=t) for i, t in enumerate(QUESTIONS)],
        models=[ModelInfo(name=m) for m in MODELS], embedder=embedder.info,
    )
    return bank.path


@pytest.fixture
def refused_url() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where connections are refused for the whole test: a socket bound to a
    port the system picked but never listening holds the port (nothing else can bind it meanwhile), and
    Linux answers a connection to it with a reset. Closed when the test ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def servers() -> Iterator[dict[str, FaultServer]]:
    """A server per model; the aggregator fails every other request (500, ok, 500, ok, ...)."""
    flaky = [reply for _ in range(20) for reply in (Reply.error(503), Reply.ok("agg: 156", logprobs=[-0.1, -0.2]))]
    with contextlib.ExitStack() as stack:
        running = {m: stack.enter_context(FaultServer(default=Reply.ok(f"{m} says 156"))) for m in HEALTHY}
        running |= {m: stack.enter_context(FaultServer(default=reply)) for m, reply in BROKEN.items()}
        running[AGGREGATOR] = stack.enter_context(FaultServer(flaky))
        yield running


def config_for(running: dict[str, FaultServer], **extra_models: OpenAIModelConfig):  # type: ignore[no-untyped-def]
    models = {
        m: OpenAIModelConfig(base_urls=[s.base_url], retries=0, max_tokens=32, timeout_s=10.0, cooldown_s=0.0)
        for m, s in running.items()
    }
    config = make_config(policy=Policy(k=7, n_base=4, gamma=0.5, k_drop=1, n=4, aggregator=AGGREGATOR), embedder=EmbedderConfig())
    answer = AnswerConfig(reference_timeout_s=REFERENCE_TIMEOUT_S, aggregation_timeout_s=5.0)
    return msgspec.structs.replace(config, models=models | extra_models, answer=answer)


def test_answer_succeeds_past_three_broken_referencers_and_a_flaky_aggregator(bank_path: Path) -> None:
    with servers() as running, running_server(bank_path, config_for(running)) as server, server.client() as client:
        events = list(client.answer("What is 12 times 13?", seed=4, k=7, n=4))
        hanging_gone = running["hangs"].wait_until(lambda s: s.in_flight == 0, timeout_s=10)
    result = events[-1]
    assert isinstance(result, AnswerResult) and result.source in ("aggregation", "fallback_aggregator")
    failed = {r.model: r.error_kind for r in result.references if not r.ok}
    assert failed == {"hangs": "timeout", "fails": "server_error", "garbles": "malformed_response"}
    assert {r.model for r in result.references if r.ok} == set(HEALTHY)
    assert all(not set(a.subset) & set(BROKEN) for a in result.aggregations)
    assert sum(a.ok for a in result.aggregations) >= 1 and any(not a.ok for a in result.aggregations)
    assert all(any(model in note for note in result.notes) for model in BROKEN)
    assert hanging_gone, "the timed-out request to the hanging model was not cancelled"


def test_a_model_that_is_down_at_start_up_does_not_stop_the_server(bank_path: Path, refused_url: str) -> None:
    down = OpenAIModelConfig(base_urls=[refused_url], retries=0, max_tokens=32, connect_timeout_s=1.0)
    with servers() as running:
        del running["hangs"]  # the model the dead URL stands for
        config = config_for(running, hangs=down)
        with running_server(bank_path, config) as server, server.client() as client:
            assert client.health() == "SERVING"
            result = list(client.answer("What is 7 plus 8?", seed=2, k=7, n=2))[-1]
    assert {r.model: r.error_kind for r in result.references if not r.ok}["hangs"] == "connection"
    assert result.text


def test_a_cooling_replica_is_not_hammered_while_the_healthy_one_answers(bank_path: Path) -> None:
    """One referencer has a broken and a healthy URL: after the broken one fails it is skipped for
    cooldown_s, so later answers reach it at most once more in the window."""
    with servers() as running, FaultServer(default=Reply.error(500)) as broken_replica:
        healthy = running["ok-1"]
        replicas = OpenAIModelConfig(
            base_urls=[broken_replica.base_url, healthy.base_url], retries=1, backoff_s=0.0, max_tokens=32, cooldown_s=60.0
        )
        with running_server(bank_path, config_for(running, **{"ok-1": replicas})) as server, server.client() as client:
            results = [list(client.answer(f"What is {i} plus 8?", seed=i, k=7, n=2))[-1] for i in range(5)]
    assert all(next(r for r in result.references if r.model == "ok-1").ok for result in results)
    assert len(broken_replica.requests) == 1  # tried once, then cooled down for the rest of the run
    assert len([b for b in healthy.bodies if b.get("model") == "ok-1"]) >= 5
