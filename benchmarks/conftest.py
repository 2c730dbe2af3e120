"""pytest wiring of the route benchmark: sizes, cached synthetic banks, thread settings.

* ``--bench-large`` adds N = 1e6 (4 GB of embeddings at d = 1024, plus faiss's copy: ~8.5 GB of RAM at peak).
* Every test that takes ``size`` is parametrised over the sizes at session scope, so pytest runs all
  competitors of one size together, builds that size's bank once (``bank``), and drops it before
  building the next one.
* ``pytest benchmarks --benchmark-disable -q`` runs each benchmark body once, with the equality checks,
  as a fast smoke test for CI.
"""

from __future__ import annotations

import os

import numba
import pytest
from bench_data import (
    DEFAULT_SIZES,
    LARGE_SIZES,
    Bank,
    BankSize,
    Expected,
    bench_threads,
    expected_route,
    make_bank,
    set_threads,
    stored_bank,
)

from smcs.kernels import configure_threads

configure_threads()  # the threading every smcs program uses, before the first parallel kernel

_THREAD_INFO: dict[str, str] = {}
_CPU_AT_START: tuple[int, int, float] | None = None


def _cpu_ticks() -> tuple[int, int, float] | None:
    """(busy ticks of the whole machine, all ticks, this process's CPU seconds); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    times = os.times()
    return sum(fields) - idle, sum(fields), times.user + times.system


def foreign_cpu_share() -> float | None:
    """Share of the machine's CPU time that other processes used since the session started.

    On a shared machine this is the first thing to look at when a parallel timing looks wrong: a
    2-thread kernel on 2 cores stalls whenever another process holds one of them.
    """
    end = _cpu_ticks()
    if _CPU_AT_START is None or end is None:
        return None
    busy, total, own_s = (b - a for a, b in zip(_CPU_AT_START, end))
    if total <= 0:
        return None
    own_ticks = own_s * os.sysconf("SC_CLK_TCK")
    return max(0.0, (busy - own_ticks) / total)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Snapshot the CPU counters, for ``foreign_cpu_share``."""
    global _CPU_AT_START
    _CPU_AT_START = _cpu_ticks()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--bench-large``."""
    parser.addoption(
        "--bench-large",
        action="store_true",
        default=False,
        help="smcs route benchmark: also run N = 1e6 (needs ~8.5 GB of RAM and ~1.5 minutes)",
    )


def bench_sizes(config: pytest.Config) -> tuple[BankSize, ...]:
    """The sizes of this run: the defaults, plus N = 1e6 under ``--bench-large``."""
    return DEFAULT_SIZES + (LARGE_SIZES if config.getoption("--bench-large") else ())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``size`` over the run's sizes, at session scope (one bank per size)."""
    if "size" in metafunc.fixturenames:
        sizes = bench_sizes(metafunc.config)
        metafunc.parametrize("size", sizes, ids=[s.id for s in sizes], scope="session")


@pytest.fixture(scope="session", autouse=True)
def threads() -> int:
    """Pin numba, faiss (and BLAS, through threadpoolctl if present) to the benchmark's thread count."""
    n = bench_threads()
    _THREAD_INFO.update(set_threads(n))
    return n


@pytest.fixture(scope="session")
def bank(size: BankSize) -> Bank:
    """The synthetic bank of ``size``, generated once per session and written as an smcs bank, whose mapped
    embeddings every competitor reads (``stored_bank``)."""
    return stored_bank(make_bank(size))


@pytest.fixture(scope="session")
def expected(bank: Bank) -> Expected:
    """``smcs.kernels.route``'s outcome on ``bank``: what every checked competitor must reproduce."""
    return expected_route(bank)


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model numbers and its widest vector extension
    (the same name can cover several generations); "?" off Linux."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return "?"
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}, {vector})"


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record the thread settings and the CPU's name next to pytest-benchmark's machine info (``report.py``
    prints them)."""
    machine_info["smcs_cpu"] = f"{cpu_name()}, {os.cpu_count()} logical cores"
    info = dict(_THREAD_INFO)
    try:
        info["numba"] = f"{numba.get_num_threads()} ({numba.threading_layer()} layer)"
    except ValueError:  # no parallel kernel ran: the layer is not chosen yet
        pass
    machine_info["smcs_bench_threads"] = info
    share = foreign_cpu_share()
    if share is not None:
        machine_info["smcs_foreign_cpu_share"] = round(share, 4)
