"""Synthetic banks that look like real ones, for the demo, tests and benchmarks.

Real question embeddings cluster by topic and real models are good at some topics and bad at others;
a uniform random bank has neither property, so routing over it means nothing. Here each question belongs
to a topic cluster, and each model has a per-topic skill that sets its chance of answering correctly.
"""

from __future__ import annotations

import os

import numpy as np

from .bank import SCHEMA_VERSION, Bank, ModelInfo, Question


def clustered_bank(
    n_questions: int,
    dim: int,
    n_models: int,
    *,
    n_topics: int | None = None,
    unknown_share: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (embeddings float32 N×d with unit rows, capability int8 R×N, topic of each row int64 N).

    ``n_topics`` defaults to max(1, N // 50). Model r answers a question of topic t correctly with
    probability skill[r, t] ~ Beta(2, 2); ``unknown_share`` of the entries are −1 (not evaluated).
    """
    rng = np.random.default_rng(seed)
    n_topics = n_topics or max(1, n_questions // 50)
    centres = _unit_rows(rng.standard_normal((n_topics, dim), dtype=np.float32))
    topics = rng.integers(0, n_topics, n_questions)
    embeddings = np.empty((n_questions, dim), dtype=np.float32)
    step = 65536  # bounded temporaries for large banks
    for start in range(0, n_questions, step):
        stop = min(start + step, n_questions)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(0.6 / np.sqrt(dim))
        embeddings[start:stop] = _unit_rows(centres[topics[start:stop]] + noise)
    skill = rng.beta(2.0, 2.0, (n_models, n_topics))
    capability = (rng.random((n_models, n_questions)) < skill[:, topics]).astype(np.int8)
    capability[rng.random((n_models, n_questions)) < unknown_share] = -1
    return embeddings, capability, topics


def create_clustered_bank(
    path: str | os.PathLike[str], n_questions: int, dim: int, n_models: int, *, seed: int = 0,
    schema_version: int = SCHEMA_VERSION,
) -> Bank:
    """Create a bank at ``path`` from ``clustered_bank``: question ids ``q0, q1, …`` with their topic as
    source, models ``model-00, model-01, …``, in the layout ``schema_version`` (``Bank.create``)."""
    embeddings, capability, topics = clustered_bank(n_questions, dim, n_models, seed=seed)
    return Bank.create(
        path,
        embeddings=embeddings,
        capability=capability,
        questions=[
            Question(id=f"q{i}", text=f"synthetic question {i} about topic {t}", source=f"topic-{t}")
            for i, t in enumerate(topics.tolist())
        ],
        models=[ModelInfo(name=f"model-{r:02d}") for r in range(n_models)],
        schema_version=schema_version,
    )


def queries_near(embeddings: np.ndarray, n_queries: int, *, noise: float = 0.5, seed: int = 1) -> np.ndarray:
    """``n_queries`` unit vectors, each a random bank row plus Gaussian noise of relative size ``noise``."""
    rng = np.random.default_rng(seed)
    n, dim = embeddings.shape
    base = embeddings[rng.integers(0, n, n_queries)]
    jitter = rng.standard_normal((n_queries, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    return _unit_rows(base + jitter)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
