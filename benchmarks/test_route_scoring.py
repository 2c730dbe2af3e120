"""What scoring adds to a route: ``Router.route`` under each scorer on a fitted bank, interleaved.

The issue's target: scoring adds at most 10 % to a route at 1e5 × 384. For each size (N = 1e4 and 1e5,
d = 384, R = 15) a synthetic bank with sources (``fit_time.scoring_bank``: topic clusters grouped into
10 sources, every ``Question.source`` set, outcomes that depend on the model, the source and the topic) is
created in a temporary directory and fitted once (``fit_scorer`` with the default settings, what
``smcs bank fit`` runs; its wall time is printed and recorded), then routed by one ``Router`` per
competitor:

* ``unfitted``: the bank's first version, without a fit: the paper's route with no scoring at all;
* ``vote``, ``source``, ``knn``, ``head``: the fitted version under ``Policy(scorer=…)``, threads default.

Before timing, ``vote``'s decisions are checked to be the unfitted route's (same referencers, support set
and votes) and every scorer's to use that scorer with probabilities in [0, 1]. The competitors then take
turns as in ``test_route_paired.py``: in each round every one routes the same ``QUERIES`` queries (bank rows
plus noise, seed 0) ``passes`` times, in an order rotated round by round; a block's time is the median of
its calls, and each ratio (a scorer over ``vote``, ``vote`` over ``unfitted``) is the median over rounds of
that round's quotient, so a drift of the machine's speed slower than a round cancels out; the time a scorer
adds (the median of the rounds' differences) is recorded too, as it hardly depends on N while the route
does.

Under ``--benchmark-disable`` (the CI smoke run) only N = 1e4 is built and one round is run.
``report.py`` prints the table (medians, ratios, fit time). Nothing here asserts a time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from bench_data import BankSize, perturbed_rows
from fit_time import N_SOURCES, StageClock, create_scoring_bank, timed_fit
from interleave import one_round, paired_difference, paired_ratio, passes_for, timed_calls

from smcs.bank import FittedScorer
from smcs.core import Policy, Router
from smcs.core.decision import RouteDecision

SIZES = (BankSize(10_000, 384), BankSize(100_000, 384))
"""Bank sizes; the smoke run (``--benchmark-disable``) keeps only the first."""
SCORERS = ("vote", "source", "knn", "head")
COMPETITORS = ("unfitted", *SCORERS)
RATIOS = (("vote", "unfitted"), *((name, "vote") for name in SCORERS[1:]))
"""(numerator, denominator) pairs reported: vote on a fitted bank over no scoring, each scorer over vote."""
QUERIES = 32
"""Queries of a pass; every block routes the same ones, in the same order, with seed 0."""
BLOCK_S = 0.25
"""Wall time a block of ``vote`` aims for (it sets the passes per block, the same for every competitor)."""
ROUNDS = 7
"""Rounds per size: each competitor runs ``ROUNDS`` blocks."""
WARM_CALLS = 2
"""Untimed calls at the start of a block (the previous competitor's caches and pools settle)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``scoring_size`` over this run's sizes at module scope (one bank and fit per size)."""
    if "scoring_size" in metafunc.fixturenames:
        sizes = SIZES[:1] if metafunc.config.getoption("benchmark_disable") else SIZES
        metafunc.parametrize("scoring_size", sizes, ids=[s.id for s in sizes], scope="module")


class Setup:
    """One size's bank (unfitted and fitted versions), the fit and its time, the queries and the routers."""

    def __init__(self, size: BankSize, path: Path) -> None:
        self.size = size
        started = time.perf_counter()
        unfitted = create_scoring_bank(path, size.n, size.d)
        self.create_s = time.perf_counter() - started
        self.fitted: FittedScorer
        self.clock: StageClock
        self.fitted, self.clock = timed_fit(unfitted, echo=False)
        bank = unfitted.with_scorer(self.fitted)
        self.queries = perturbed_rows(bank.embeddings, size, QUERIES, purpose=7)
        self.routers: dict[str, Router] = {"unfitted": Router(unfitted, Policy(scorer="vote"))}
        self.routers |= {name: Router(bank, Policy(scorer=name)) for name in SCORERS}
        stages = ", ".join(f"{name.split(' (')[0]} {wall:.1f} s" for name, wall, _ in self.clock.durations())
        print(f"\n[{size.label}] bank made in {self.create_s:.1f} s; fit_scorer {self.clock.total:.1f} s ({stages}); "
              f"default {self.fitted.default!r}")

    def run(self, name: str) -> Callable[[], list[RouteDecision]]:
        """One pass of competitor ``name``: every query routed once, seed 0."""
        route, queries = self.routers[name].route, list(self.queries)
        return lambda: [route(q, seed=0) for q in queries]


@pytest.fixture(scope="module")
def scoring(scoring_size: BankSize, threads: int, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """The fitted bank of ``scoring_size`` and its routers, built once per size."""
    return Setup(scoring_size, tmp_path_factory.mktemp(f"scoring-{scoring_size.id}") / "bank")


def check_decisions(setup: Setup) -> int:
    """Assert that ``vote`` routes as the unfitted bank does and that every scorer is used; return the mean
    support-set size."""
    plain = setup.run("unfitted")()
    for name in SCORERS:
        got = setup.run(name)()
        for want, decision in zip(plain, got):
            assert decision.scorer == name
            p = np.asarray(decision.model_probabilities)
            assert p.shape == (setup.routers[name].bank.n_models,)
            assert np.all((p >= 0) & (p <= 1)), f"{name}: a probability outside [0, 1]"
            if name == "vote":
                assert decision.referencers == want.referencers, "vote on the fitted bank picked other referencers"
                assert decision.support_rows == want.support_rows
                np.testing.assert_allclose(decision.votes, want.votes, rtol=0, atol=0)
        assert not all(d.out_of_bank for d in got), f"{name}: every query out of bank"
    return round(statistics.mean(len(d.support_rows) for d in plain))


def test_route_scoring(benchmark, scoring: Setup, threads: int) -> None:
    """One round = one block of each competitor; the rounds' block medians give the ratios."""
    support = check_decisions(scoring)
    queries = list(scoring.queries)
    blocks = {name: timed_calls(partial(scoring.routers[name].route, seed=0), queries, WARM_CALLS) for name in COMPETITORS}
    passes = passes_for(blocks["vote"], BLOCK_S)
    times: dict[str, list[float]] = {name: [] for name in COMPETITORS}
    benchmark.group = f"route scoring {scoring.size.label}"
    rounds = 1 if benchmark.disabled else ROUNDS
    benchmark.pedantic(one_round, args=(blocks, times, passes), rounds=rounds)
    fitted = scoring.fitted
    benchmark.extra_info.update(
        scoring=True,
        n=scoring.size.n,
        d=scoring.size.d,
        models=len(fitted.models),
        sources=N_SOURCES,
        threads=threads,
        support=support,
        rounds=rounds,
        passes=passes,
        queries=QUERIES,
        medians_s={name: statistics.median(t) for name, t in times.items()},
        ratios={f"{top}/{bottom}": paired_ratio(times, top, bottom) for top, bottom in RATIOS},
        added_s={f"{top}/{bottom}": paired_difference(times, top, bottom) for top, bottom in RATIOS},
        fit_s=scoring.clock.total,
        fit_stages_s={name: wall for name, wall, _ in scoring.clock.durations()},
        fit_default=fitted.default,
        fit_top1={name: score.top1 for name, score in fitted.cv.items()},
        knn_k=fitted.knn_k,
    )
