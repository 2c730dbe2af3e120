"""What a bank write costs (issue 24's goal): one append and one record on schema 1 and schema 2, and the
route over what they leave.

The goal: on banks of 1e4 and 2e5 rows (1e6 with ``--bench-large``), d = 384, R = 15, one append of one
question and one record of one outcome each take at 2e5 at most twice their time at 1e4, add at most 2 MB to
the disk, and leave ``Router.route`` as fast as on today's store (schema 1). For each size the synthetic topic
bank of ``bench_data`` is created twice in a temporary directory, once per schema (every size's banks first,
so that their writes can take turns), and then:

* ``test_bank_write[append]`` / ``[record]``: ``REPS`` rounds; in each, every bank of every size takes the
  same write (one question with its 15 outcomes, or one outcome of one model on one question), the sizes in
  an order rotated round by round and the schemas alternated, each write committing a fresh version on top
  of the latest. Each write is timed on its own (``time.perf_counter``, fsyncs included) and the disk it
  adds is the bank directory's allocated bytes after it minus before it (``du``: ``st_blocks``, hard links
  counted once, so a file a schema 2 version links from its parent costs nothing). Before each write,
  untimed, older versions are pruned and the disk is flushed (``os.sync``), so no write waits on the one
  before. A write's time on a shared disk is mostly its fsyncs' latency, which drifts with the other
  processes' I/O, so each larger size's time over the smallest's is the median of the rounds' quotients
  (``interleave.paired_ratio``): drift slower than a round cancels out. Schema 2's bytes per write are
  checked against the 2 MB goal (bytes, not time: a failure is a regression, not noise).
* ``test_route_after_writes[size]``: both banks, reopened after the writes, are checked to hold the same
  content and to decide alike, then ``Router.route`` (paper policy, seed 0) over each takes turns as in
  ``interleave.py``: the ratio schema 2 ÷ schema 1 is the median of each round's quotient.

The first write of a process on a schema 2 bank also parses the bank's ids (once per process); it is one of
the ``REPS`` timings, so it shows in the maximum, not the median. Run it, then print the table::

    .venv/bin/python -m pytest benchmarks/test_bank_writes.py --benchmark-only --benchmark-json=writes.json
    .venv/bin/python benchmarks/test_bank_writes.py writes.json

Under ``--benchmark-disable`` (the CI smoke run) the sizes are 1e3 and 1e4, each write runs once and the
route one round, with every check. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from bench_data import N_MODELS, BankSize, make_bank, perturbed_rows
from interleave import one_round, paired_difference, paired_ratio, passes_for, timed_calls
from report import fmt_ratio, fmt_time, size_label

from smcs.bank import Bank, ModelInfo, Question
from smcs.core import Router

SIZES = (BankSize(10_000, 384), BankSize(200_000, 384))
"""Bank sizes of a timed run: every larger one's write time is reported over the first's."""
LARGE_SIZES = (BankSize(1_000_000, 384),)
"""Added by ``--bench-large``."""
SMOKE_SIZES = (BankSize(1_000, 384), BankSize(10_000, 384))
"""The sizes of the smoke run (``--benchmark-disable``): small, but two, so the ratios are computed too."""
SCHEMAS = (1, 2)
OPS = ("append", "record")
REPS = 7
"""Rounds of writes of each kind: each round writes once to each bank of each size."""
WRITE_GOAL_BYTES = 2_000_000
"""Issue 24: a single write adds at most 2 MB to the disk."""
QUERIES = 32
"""Queries of a route block; both schemas route the same ones, in the same order, with seed 0."""
BLOCK_S = 0.25
ROUNDS = 15
"""Route rounds per size: more than the other route benchmarks' 7, since the claim here is a ratio of 1."""


def run_sizes(config: pytest.Config) -> tuple[BankSize, ...]:
    """The sizes of this run: ``SMOKE_SIZES`` under ``--benchmark-disable``, else ``SIZES`` (and ``LARGE_SIZES``
    under ``--bench-large``)."""
    if config.getoption("benchmark_disable"):
        return SMOKE_SIZES
    return SIZES + (LARGE_SIZES if config.getoption("--bench-large") else ())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``route_size`` over this run's sizes (the banks of every size are built once, together)."""
    if "route_size" in metafunc.fixturenames:
        sizes = run_sizes(metafunc.config)
        metafunc.parametrize("route_size", sizes, ids=[s.id for s in sizes])


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path``, as ``du`` counts them: ``st_blocks``, each inode once (a
    schema 2 version hard-links its parent's unchanged files)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def fmt_bytes(n: float) -> str:
    """Bytes in decimal units with three significant digits, as the spike's tables (docs/storage.md) write them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


class WriteSetup:
    """One size's two banks (schema 1 and schema 2, the same content), the writes they take and the queries."""

    def __init__(self, size: BankSize, root: Path) -> None:
        data = make_bank(size)
        self.size = size
        self.paths = {schema: root / f"schema{schema}" for schema in SCHEMAS}
        models = [ModelInfo(name=f"model-{r:02d}") for r in range(N_MODELS)]
        questions = [Question(id=f"q{i}", text=f"question {i}") for i in range(size.n)]
        for schema, path in self.paths.items():
            Bank.create(path, embeddings=data.embeddings, capability=data.capability, models=models, questions=questions,
                        schema_version=schema)
        self.queries = list(perturbed_rows(data.embeddings, size, QUERIES, purpose=11))
        self.new_rows = perturbed_rows(data.embeddings, size, REPS, purpose=12)

    def write(self, schema: int, op: str, i: int) -> tuple[float, int]:
        """Write number ``i`` of kind ``op`` (the same for both schemas) to the ``schema`` bank; return its time
        and the bytes it added to the disk. Older versions are pruned first and everything written so far is
        flushed (``os.sync``), untimed, so that the write's fsyncs do not wait on the previous write's (a schema 1
        write leaves a whole version to free)."""
        path = self.paths[schema]
        bank = Bank.open(path)
        bank.prune(keep=1)
        os.sync()
        write = self._append(bank, i) if op == "append" else self._record(bank, i)
        before = disk_bytes(path)
        start = time.perf_counter()
        write()
        seconds = time.perf_counter() - start
        return seconds, disk_bytes(path) - before

    def _append(self, bank: Bank, i: int) -> Callable[[], Bank]:
        """One new question with an outcome from every model."""
        outcomes = np.random.default_rng(i).integers(0, 2, (N_MODELS, 1))
        question = Question(id=f"new-{i}", text=f"appended question {i}", source="bench")
        return partial(bank.append_questions, self.new_rows[i : i + 1], [question], outcomes)

    def _record(self, bank: Bank, i: int) -> Callable[[], Bank]:
        """One outcome of one model on one bank question (spread over the rows and the models)."""
        row = (i * 7919) % self.size.n
        return partial(bank.record_outcomes, [(f"model-{i % N_MODELS:02d}", f"q{row}", (i + 1) % 2)])


@pytest.fixture(scope="module")
def write_setups(request: pytest.FixtureRequest, threads: int, tmp_path_factory: pytest.TempPathFactory) -> dict[BankSize, WriteSetup]:
    """The two banks of every size of the run, built once, before any write (so that the sizes' writes can
    take turns)."""
    return {size: WriteSetup(size, tmp_path_factory.mktemp(f"writes-{size.id}")) for size in run_sizes(request.config)}


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _name(size: BankSize, schema: int) -> str:
    return f"{size.n}/{schema}"


@pytest.mark.parametrize("op", OPS)
def test_bank_write(benchmark, write_setups: dict[BankSize, WriteSetup], op: str) -> None:
    """``REPS`` rounds; in each, one ``op`` write to every bank of every size, in an order rotated round by round
    (sizes) and alternated (schemas). Per size and schema: the write's time and the bytes it added; per larger
    size and schema: the median over rounds of that round's time over the smallest size's."""
    setups = list(write_setups.values())
    times: dict[str, list[float]] = {_name(w.size, schema): [] for w in setups for schema in SCHEMAS}
    added: dict[str, list[float]] = {name: [] for name in times}

    rounds = itertools.count()

    def one_write_round() -> None:
        i = next(rounds)
        for setup in setups[i % len(setups):] + setups[: i % len(setups)]:
            for schema in SCHEMAS if i % 2 == 0 else SCHEMAS[::-1]:
                seconds, nbytes = setup.write(schema, op, i)
                times[_name(setup.size, schema)].append(seconds)
                added[_name(setup.size, schema)].append(float(nbytes))

    reps = 1 if benchmark.disabled else REPS
    benchmark.group = "bank writes"
    benchmark.pedantic(one_write_round, rounds=reps)
    for w in setups:
        most = max(added[_name(w.size, 2)])
        assert most <= WRITE_GOAL_BYTES, f"a schema 2 {op} at {w.size.label} added {fmt_bytes(most)} to the disk"
    smallest = setups[0].size
    benchmark.extra_info.update(
        bank_writes=True,
        op=op,
        d=smallest.d,
        models=N_MODELS,
        reps=reps,
        seconds={name: _stats(t) for name, t in times.items()},
        bytes={name: _stats(b) for name, b in added.items()},
        size_ratios={
            _name(w.size, schema): paired_ratio(times, _name(w.size, schema), _name(smallest, schema))
            for w in setups[1:] for schema in SCHEMAS
        },
    )


def check_same_banks(banks: dict[str, Bank]) -> None:
    """Assert that the banks hold the same rows, outcomes, ids and models (both took the same writes)."""
    first, *others = banks.values()
    for other in others:
        assert other.version == first.version
        assert np.array_equal(np.asarray(other.embeddings), np.asarray(first.embeddings))
        assert np.array_equal(np.asarray(other.capability), np.asarray(first.capability))
        assert [q.id for q in other.questions] == [q.id for q in first.questions]
        assert other.model_names == first.model_names


def test_route_after_writes(benchmark, write_setups: dict[BankSize, WriteSetup], route_size: BankSize, threads: int) -> None:
    """``Router.route`` over the schema 1 and the schema 2 bank of ``route_size`` after the writes, interleaved."""
    write_setup = write_setups[route_size]
    banks = {f"schema {schema}": Bank.open(path) for schema, path in write_setup.paths.items()}
    assert banks["schema 1"].segments is None and banks["schema 2"].segments is not None
    check_same_banks(banks)
    routers = {name: Router(bank) for name, bank in banks.items()}
    for q in write_setup.queries:
        want, got = (routers[name].route(q, seed=0) for name in banks)
        assert (got.referencers, got.subsets, got.support_rows) == (want.referencers, want.subsets, want.support_rows)
    blocks = {name: timed_calls(partial(router.route, seed=0), write_setup.queries) for name, router in routers.items()}
    passes = passes_for(blocks["schema 1"], BLOCK_S)
    times: dict[str, list[float]] = {name: [] for name in blocks}
    benchmark.group = f"bank writes {write_setup.size.label}"
    rounds = 1 if benchmark.disabled else ROUNDS
    benchmark.pedantic(one_round, args=(blocks, times, passes), rounds=rounds)
    benchmark.extra_info.update(
        bank_writes_route=True,
        n=write_setup.size.n,
        d=write_setup.size.d,
        models=N_MODELS,
        n_questions=banks["schema 1"].n_questions,
        rounds=rounds,
        passes=passes,
        medians_s={name: statistics.median(t) for name, t in times.items()},
        ratios={"schema 2/schema 1": paired_ratio(times, "schema 2", "schema 1")},
        added_s={"schema 2/schema 1": paired_difference(times, "schema 2", "schema 1")},
    )


# ------------------------------------------------------------------------------------------- the table


def _span(stats: dict[str, float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(stats['median'])} [{fmt(stats['min'])}–{fmt(stats['max'])}]"


def _n_label(n: int) -> str:
    """A count with one significant digit as ``2e5`` (``size_label`` of report.py writes only powers of ten so)."""
    exp = len(str(n)) - 1
    lead = n // 10**exp
    return f"{lead}e{exp}" if lead * 10**exp == n else size_label(n)


def _route_cell(route: dict, schema: int) -> str:
    """Schema 1's interleaved median route; schema 2's with its ratio and difference to schema 1's."""
    median = fmt_time(route["medians_s"][f"schema {schema}"])
    if schema == 1:
        return median
    added = route["added_s"]["schema 2/schema 1"]
    return f"{median} ({fmt_ratio(route['ratios']['schema 2/schema 1'])}, {'+' if added >= 0 else '−'}{fmt_time(abs(added))})"


def writes_table(path: Path) -> list[str]:
    """Markdown lines for this benchmark's ``--benchmark-json``: per size and schema, each write's median
    [min–max] time and the most bytes one added, the interleaved route time (with schema 2 ÷ schema 1), then
    each larger size's write time over the smallest's (the median of the rounds' quotients)."""
    data = json.loads(path.read_text())
    writes: dict[str, dict] = {}
    routes: dict[int, dict] = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if info.get("bank_writes"):
            writes[info["op"]] = info
        elif info.get("bank_writes_route"):
            routes[info["n"]] = info
    if not writes:
        return []
    any_write = next(iter(writes.values()))
    sizes = sorted({int(name.split("/")[0]) for name in any_write["seconds"]})
    machine = data.get("machine_info", {})
    foreign = machine.get("smcs_foreign_cpu_share")
    busy = "" if foreign is None else f" Other processes used {foreign:.0%} of the machine's CPU time during the run."
    lines = [
        f"### Bank writes (d = {any_write['d']}, R = {any_write['models']}; median [min–max] of {any_write['reps']} writes, "
        "each a new version; disk = the most one write added)",
        "",
        f"CPU: {machine.get('smcs_cpu', '?')}.{busy}",
        "",
        "| N | schema | append 1 question | disk | record 1 outcome | disk | `Router.route` (interleaved; ÷ schema 1) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        route = routes.get(n)
        for schema in SCHEMAS:
            cells = [_n_label(n), str(schema)]
            for op in OPS:
                info, name = writes.get(op), f"{n}/{schema}"
                if info is None or name not in info["seconds"]:
                    cells += ["–", "–"]
                else:
                    cells += [_span(info["seconds"][name], fmt_time), fmt_bytes(info["bytes"][name]["max"])]
            cells.append("–" if route is None else _route_cell(route, schema))
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for n in sizes[1:]:
        ratios = [
            f"schema {schema} {op} {fmt_ratio(info['size_ratios'][f'{n}/{schema}'])}"
            for schema in SCHEMAS for op, info in writes.items() if f"{n}/{schema}" in info["size_ratios"]
        ]
        lines.append(f"Write time at {_n_label(n)} over {_n_label(sizes[0])} (median of the rounds' quotients): {', '.join(ratios)}.")
    largest = max(info["bytes"][f"{n}/2"]["max"] for info in writes.values() for n in sizes)
    lines.append(f"Most one schema 2 write added to the disk: {fmt_bytes(largest)} (goal: at most {fmt_bytes(WRITE_GOAL_BYTES)}).")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the table of the ``--benchmark-json`` file named on the command line."""
    parser = argparse.ArgumentParser(description="Print the bank-writes table of a pytest-benchmark JSON file.")
    parser.add_argument("json", type=Path, help="output of pytest benchmarks/test_bank_writes.py --benchmark-json=FILE")
    args = parser.parse_args(argv)
    print("\n".join(writes_table(args.json)) or "No bank-writes benchmarks in this file (was it run with --benchmark-disable?).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
