"""The default embedder (all-MiniLM-L6-v2 int8 on ONNX Runtime): one question's latency, a batch's throughput.

Parametrised by intra-op threads (1, 2). The batch is 64 question-like texts of 8 to 60 words, the kind
of text a bank build embeds; the Answer pipeline's other load, n = 8 aggregations of ~256 tokens, is
``aggregations``. Run alone with::

    .venv/bin/pytest benchmarks/test_embed.py --benchmark-only --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import numpy as np
import pytest

from smcs.embed import OnnxEmbedder

QUESTION = "What is the capital of France, and which river flows through it?"
_WORDS = (
    "the a of to model question answer compute value number city river bank router language large small "
    "find solve equation python list reverse capital france train hour mile"
).split()
_RNG = np.random.default_rng(0)
BATCH = [" ".join(_RNG.choice(_WORDS, size=int(_RNG.integers(8, 60)))) for _ in range(64)]
AGGREGATIONS = [" ".join(_RNG.choice(_WORDS, size=220)) for _ in range(8)]


@pytest.fixture(scope="module", params=[1, 2], ids=lambda t: f"threads={t}")
def embedder(request: pytest.FixtureRequest) -> OnnxEmbedder:
    """The default embedder with the parametrised thread count, warmed up."""
    embedder = OnnxEmbedder(threads=request.param)
    embedder.embed(BATCH[:8])
    return embedder


def test_embed_one_question(benchmark, embedder: OnnxEmbedder) -> None:
    """Latency of embedding one short question (the Route path from text)."""
    benchmark.group = "embed: one question"
    assert benchmark(embedder.embed, [QUESTION]).shape == (1, 384)


def test_embed_batch(benchmark, embedder: OnnxEmbedder) -> None:
    """Time for 64 question-like texts (texts/s = 64 / median)."""
    benchmark.group = "embed: 64 questions"
    benchmark.extra_info["texts"] = len(BATCH)
    assert benchmark(embedder.embed, BATCH).shape == (len(BATCH), 384)


def test_embed_aggregations(benchmark, embedder: OnnxEmbedder) -> None:
    """Time for 8 texts of ~256 tokens (the exploitation step's similarity scores)."""
    benchmark.group = "embed: 8 aggregations"
    assert benchmark(embedder.embed, AGGREGATIONS).shape == (8, 384)
