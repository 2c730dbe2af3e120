"""Synthetic banks the tests build: clustered embeddings, topic-skilled models, one source per topic."""

from __future__ import annotations

from pathlib import Path

from smcs import Bank
from smcs.bank import ModelInfo, Question
from smcs.synthetic import clustered_bank


def clustered_test_bank(path: Path, n: int = 600, dim: int = 32, n_models: int = 9, seed: int = 0) -> Bank:
    """A bank of ``n`` clustered questions (ids ``q0…``, source ``t<topic>``) and ``n_models`` models ``m0…``
    whose outcomes follow their per-topic skill; the same bytes for the same arguments."""
    embeddings, capability, topics = clustered_bank(n, dim, n_models, seed=seed)
    return Bank.create(
        path,
        embeddings=embeddings,
        capability=capability,
        questions=[Question(id=f"q{i}", text=f"question {i}", source=f"t{t}") for i, t in enumerate(topics)],
        models=[ModelInfo(name=f"m{r}") for r in range(n_models)],
    )
