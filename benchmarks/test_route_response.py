"""The Route response built from a decision (``smcs.wire.decision.route_response``) with a 20,000-row
support set: without the support set, with it (``include_support``) and with the debug evidence.

The bank (30,000 × 16, R = 15) is one direction plus a little noise and the policy admits every row above
the 20,000th similarity (N_base = 20,000, γ = 1), so |I| ≈ 20,000: the support set of a concentrated bank
(docs/performance.md, "Large support sets"). ``extra_info`` carries |I| and the response's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smcs.bank import Bank, ModelInfo, Question
from smcs.core import Policy, RouteDecision, Router
from smcs.wire.decision import route_response

N_QUESTIONS, DIM, N_MODELS, SUPPORT = 30_000, 16, 15, 20_000
MODES = {"lean": {"debug": False, "support": False}, "support": {"debug": False, "support": True}, "debug": {"debug": True}}


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RouteDecision, Bank, np.ndarray]:
    """A decision with ≈ ``SUPPORT`` support rows, its bank and the bank's question ids (as the service holds them)."""
    rng = np.random.default_rng(0)
    embeddings = (1.0 + 0.05 * rng.standard_normal((N_QUESTIONS, DIM))).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    bank = Bank.create(
        Path(tmp_path_factory.mktemp("response-bank")) / "bank",
        embeddings=embeddings,
        capability=rng.integers(-1, 2, size=(N_MODELS, N_QUESTIONS)).astype(np.int8),
        questions=[Question(id=f"q{i}", text=f"question {i}") for i in range(N_QUESTIONS)],
        models=[ModelInfo(name=f"m{r:02d}") for r in range(N_MODELS)],
    )
    decision = Router(bank, Policy(k=7, n_base=SUPPORT, gamma=1.0)).route(embeddings[0], seed=0)
    return decision, bank, np.array([q.id for q in bank.questions], dtype=object)


@pytest.mark.parametrize("mode", list(MODES))
def test_route_response(benchmark, routed: tuple[RouteDecision, Bank, np.ndarray], mode: str) -> None:
    decision, bank, ids = routed
    options = MODES[mode]
    response = route_response(decision, bank, ids, **options)
    assert len(response.support.rows) == (0 if mode == "lean" else len(decision.support_rows))
    benchmark.group = "route_response"
    benchmark.extra_info.update(support=len(decision.support_rows), response_bytes=response.ByteSize())
    benchmark(route_response, decision, bank, ids, **options)
