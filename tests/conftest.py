"""pytest wiring shared by every test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.e2e import create_text_bank

from smcs.kernels import configure_threads

configure_threads()  # the threading every smcs program uses (Router, serve, the CLI), before any kernel runs


@pytest.fixture(scope="module")
def text_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bank embedded with the real ONNX model (``support.e2e``), one per test module."""
    return create_text_bank(tmp_path_factory.mktemp("ask") / "bank")
