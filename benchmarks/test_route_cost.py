"""What cost awareness adds to a route: ``Router.route`` on a bank without costs, with costs, and with a
willingness to pay, interleaved.

The issue's target: cost-aware ranking adds nothing measurable to a route. For each size (N = 1e4 and
1e5, d = 384, R = 15) the synthetic topic bank of ``bench_data`` is stored twice in a temporary directory:
once as it is, once with every question recording a cost per model (``metadata.cost``, a per-model price
times a per-question length, so the expected cost varies with the support set). Competitors:

* ``plain``: the bank without costs, paper policy (no cost work at all);
* ``costs``: the bank with costs, paper policy (the decision carries the expected costs: one gather of the
  support rows' costs, R × |I| multiply-adds);
* ``willing``: the same with ``Policy(willingness_to_pay=W)`` (ranking by p_r − c_r / W, R more);
* ``budget``: the same with ``coverage_target`` and ``max_cost`` as well (the plan cut to fit).

Before timing, ``costs`` is checked to decide exactly as ``plain`` does. Rounds interleave as in
``interleave.py``; ``report.py`` prints the medians and the ratios over ``plain``. Under
``--benchmark-disable`` (the CI smoke run) only N = 1e4 is built and one round is run. Nothing here asserts
a time.
"""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from bench_data import BankSize, make_bank, perturbed_rows
from interleave import one_round, paired_difference, paired_ratio, passes_for, timed_calls

from smcs.bank import Bank, ModelInfo, Question
from smcs.core import Policy, Router

SIZES = (BankSize(10_000, 384), BankSize(100_000, 384))
"""Bank sizes; the smoke run (``--benchmark-disable``) keeps only the first."""
COMPETITORS = ("plain", "costs", "willing", "budget")
QUERIES = 32
BLOCK_S = 0.25
ROUNDS = 7


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``cost_size`` over this run's sizes at module scope (one pair of banks per size)."""
    if "cost_size" in metafunc.fixturenames:
        sizes = SIZES[:1] if metafunc.config.getoption("benchmark_disable") else SIZES
        metafunc.parametrize("cost_size", sizes, ids=[s.id for s in sizes], scope="module")


def store(path: Path, embeddings: np.ndarray, capability: np.ndarray, costs: np.ndarray | None) -> Bank:
    """The bank at ``path``; ``costs`` (N × R) become each question's ``metadata.cost``."""
    names = [f"model-{r:02d}" for r in range(capability.shape[0])]
    if costs is None:
        metadata: list[dict] = [{} for _ in range(embeddings.shape[0])]
    else:
        metadata = [{"cost": dict(zip(names, row))} for row in costs.tolist()]
    questions = [Question(id=f"q{i}", text="", metadata=m) for i, m in enumerate(metadata)]
    return Bank.create(path, embeddings=embeddings, capability=capability, questions=questions,
                       models=[ModelInfo(name=n) for n in names])


class Setup:
    """One size's two banks, the queries and a router per competitor."""

    def __init__(self, size: BankSize, root: Path) -> None:
        data = make_bank(size)
        rng = np.random.default_rng(size.n)
        price = rng.lognormal(0.0, 1.0, data.capability.shape[0])
        length = rng.integers(50, 2_000, data.embeddings.shape[0])
        plain = store(root / "plain", data.embeddings, data.capability, None)
        costed = store(root / "costs", data.embeddings, data.capability, np.outer(length, price) * 1e-6)
        self.size = size
        self.queries = list(perturbed_rows(data.embeddings, size, QUERIES, purpose=11))
        paper = Policy()
        self.routers = {
            "plain": Router(plain, paper),
            "costs": Router(costed, paper),
            "willing": Router(costed, Policy(willingness_to_pay=float(np.median(price)) * 1e-3)),
            "budget": Router(costed, Policy(willingness_to_pay=float(np.median(price)) * 1e-3, coverage_target=0.99,
                                            max_cost=float(price.sum()) * 1e-3)),
        }


@pytest.fixture(scope="module")
def cost_setup(cost_size: BankSize, threads: int, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The banks of ``cost_size`` and their routers, built once per size."""
    return Setup(cost_size, tmp_path_factory.mktemp(f"cost-{cost_size.id}"))


def check_decisions(setup: Setup) -> int:
    """Assert that the paper policy decides alike with and without costs, and that costs are reported; return
    the mean support-set size."""
    plain = [setup.routers["plain"].route(q, seed=0) for q in setup.queries]
    costed = [setup.routers["costs"].route(q, seed=0) for q in setup.queries]
    for want, got in zip(plain, costed):
        assert (got.referencers, got.subsets, got.support_rows) == (want.referencers, want.subsets, want.support_rows)
        assert want.expected_cost is None and got.expected_cost is not None and got.expected_cost > 0
    return round(statistics.mean(len(d.support_rows) for d in plain))


def test_route_cost(benchmark, cost_setup: Setup, threads: int) -> None:
    """One round = one block of each competitor; ratios over ``plain`` from the rounds' block medians."""
    support = check_decisions(cost_setup)
    blocks = {name: timed_calls(partial(cost_setup.routers[name].route, seed=0), cost_setup.queries) for name in COMPETITORS}
    passes = passes_for(blocks["plain"], BLOCK_S)
    times: dict[str, list[float]] = {name: [] for name in COMPETITORS}
    benchmark.group = f"route cost {cost_setup.size.label}"
    rounds = 1 if benchmark.disabled else ROUNDS
    benchmark.pedantic(one_round, args=(blocks, times, passes), rounds=rounds)
    benchmark.extra_info.update(
        cost=True,
        n=cost_setup.size.n,
        d=cost_setup.size.d,
        threads=threads,
        support=support,
        rounds=rounds,
        passes=passes,
        medians_s={name: statistics.median(t) for name, t in times.items()},
        ratios={f"{name}/plain": paired_ratio(times, name, "plain") for name in COMPETITORS[1:]},
        added_s={f"{name}/plain": paired_difference(times, name, "plain") for name in COMPETITORS[1:]},
    )
