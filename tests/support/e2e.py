"""A tiny bank embedded with the real ONNX model and a config pointing its models at one server."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smcs.bank import Bank, ModelInfo, Question


E2E_MODELS = ("m-a", "m-b", "m-c")
E2E_QUESTIONS = ["What is 12 times 13?", "Solve x^2 = 49.", "Who wrote Hamlet?", "What is the capital of Japan?"]
E2E_CAPABILITY = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=np.int8)  # m-c is the most accurate


def create_text_bank(path: Path) -> Path:
    """The E2E questions embedded with the bundled ONNX model, with ``E2E_CAPABILITY``; returns the bank's path."""
    from smcs.embed import EmbedderConfig, make_embedder

    embedder = make_embedder(EmbedderConfig())
    bank = Bank.create(
        path, embeddings=embedder.embed(E2E_QUESTIONS), capability=E2E_CAPABILITY,  # type: ignore[union-attr]
        questions=[Question(id=f"q{i}", text=t) for i, t in enumerate(E2E_QUESTIONS)],
        models=[ModelInfo(name=m) for m in E2E_MODELS], embedder=embedder.info,
    )
    return bank.path


def write_config(path: Path, base_url: str, models: tuple[str, ...] = E2E_MODELS) -> Path:
    tables = "".join(f'[models."{m}"]\nkind = "openai"\nbase_urls = ["{base_url}"]\nretries = 0\nmax_tokens = 32\n\n' for m in models)
    path.write_text("[policy]\nk = 2\nn = 2\nn_base = 4\ngamma = 0.5\n\n" + tables)
    return path
