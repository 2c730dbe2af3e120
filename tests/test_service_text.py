"""Question text end to end: the bundled ONNX embedder inside a real server, the CLI, and the mismatch checks."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from service_harness import make_bank, make_config, running_server
from support.decisions import decision_from_json

from smcs import Bank, Policy, Router
from smcs.bank import EmbedderInfo, ModelInfo, Question
from smcs.cli.main import main
from smcs.embed import EmbedderConfig, OnnxEmbedder
from smcs.service import start_server

TOPICS = {
    "arithmetic": [
        "What is 12 multiplied by 9?",
        "Compute 345 plus 678.",
        "What is the square root of 144?",
        "Divide 81 by 3.",
        "How much is 15 percent of 200?",
    ],
    "geography": [
        "What is the capital of France?",
        "Which river flows through Cairo?",
        "What is the largest ocean on Earth?",
        "Which country has the city of Kyoto?",
        "What mountain range separates Europe and Asia?",
    ],
    "programming": [
        "Write a Python function that reverses a string.",
        "How do you sort a list in Python?",
        "Implement binary search in Java.",
        "What does a SQL JOIN do?",
        "Write a function returning the n-th Fibonacci number.",
    ],
}
MODELS = ("math-model", "geo-model", "code-model")
POLICY = Policy(k=2, n_base=3, gamma=0.9, k_drop=1, n=2)


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="module")
def text_bank(tmp_path_factory, embedder) -> Bank:
    """15 real questions embedded by the bundled model; each model is right exactly on its own topic."""
    questions, topics = [], []
    for topic, texts in TOPICS.items():
        for text in texts:
            questions.append(Question(id=f"{topic}-{len(questions)}", text=text, source=topic))
            topics.append(topic)
    capability = np.array([[int(t == topic) for t in topics] for topic in TOPICS], dtype=np.int8)
    return Bank.create(
        tmp_path_factory.mktemp("text-bank") / "bank",
        embeddings=embedder.embed([q.text for q in questions]),
        capability=capability,
        questions=questions,
        models=[ModelInfo(name=m) for m in MODELS],
        embedder=embedder.info,
    )


@pytest.mark.parametrize(
    ("question", "expert"),
    [
        ("What is 7 times 8?", "math-model"),
        ("What is the capital city of Italy?", "geo-model"),
        ("Write a Python function to check whether a number is prime.", "code-model"),
    ],
)
def test_question_text_routes_to_the_topic_expert(text_bank, embedder, question, expert):
    with running_server(text_bank.path, make_config(policy=POLICY, embedder=None)) as handle, handle.client() as client:
        remote = client.route(question, seed=3, include_support=True)
    local = Router(text_bank, POLICY).route(embedder.embed([question])[0], seed=3)
    assert remote.referencers[0] == expert
    assert (remote.referencers, remote.support_rows, remote.subsets) == (local.referencers, local.support_rows, local.subsets)
    assert text_bank.questions[remote.support_rows[0]].source == dict(zip(MODELS, TOPICS))[expert]


def test_score_embeds_candidate_texts(text_bank, embedder):
    texts = ["Paris is the capital of France.", "The capital of France is Paris.", "Bananas are yellow."]
    with running_server(text_bank.path, make_config(policy=POLICY, embedder=None)) as handle, handle.client() as client:
        scores = client.score(texts=texts)
    vectors = embedder.embed(texts)
    expected = (vectors @ vectors.T).mean(axis=1)
    np.testing.assert_allclose(scores.similarity, expected, atol=1e-5)
    assert scores.best in (0, 1)  # the two agreeing answers outscore the odd one


def test_a_configured_embedder_that_cannot_query_the_bank_stops_start_up(tmp_path, embedder):
    bank = Bank.create(
        tmp_path / "bank",
        embeddings=embedder.embed(["a question", "another question"]),
        capability=np.ones((2, 2), dtype=np.int8),
        questions=[Question(id="a", text="a question"), Question(id="b", text="another question")],
        models=[ModelInfo(name="m0"), ModelInfo(name="m1")],
        embedder=EmbedderInfo("some-other-model", 384),
    )
    config = make_config(policy=Policy(k=1, k_drop=0), embedder=EmbedderConfig())
    with pytest.raises(ValueError, match="some-other-model"):
        asyncio.run(start_server(config, bank.path))


def test_the_default_embedder_is_dropped_for_a_bank_it_cannot_query(tmp_path):
    make_bank(tmp_path / "bank")  # 32-d synthetic vectors
    with running_server(tmp_path / "bank", make_config(embedder=None)) as handle, handle.client() as client:
        with pytest.raises(grpc.RpcError) as error:
            client.route("What is 2 + 2?")
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "dim 32" in error.value.details() and "send embeddings instead" in error.value.details()


def test_cli_routes_question_text_in_process(text_bank, capsys):
    assert main(["route", "What is 9 plus 10?", "--bank", str(text_bank.path), "--k", "2", "--n-base", "3", "--json"]) == 0
    assert decision_from_json(capsys.readouterr().out).referencers[0] == "math-model"


def test_cli_routes_question_text_through_a_server(text_bank, capsys):
    with running_server(text_bank.path, make_config(policy=POLICY, embedder=None)) as handle:
        assert main(["route", "Which ocean is the deepest?", "--server", handle.target]) == 0
    out = capsys.readouterr().out
    assert "geo-model" in out.splitlines()[2]  # the first referencer row of the table
