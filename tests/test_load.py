"""A bounded load test on loopback: 50 concurrent clients against a real ``smcs serve`` subprocess.

Four scenarios, each for ``SMCS_LOAD_SECONDS`` (default 5, the CI variant; the documented long run is
``SMCS_LOAD_SECONDS=30 pytest tests/test_load.py -s``) after a warm-up of ``WARMUP_S``:

- Route only, below the admission limit (``max_concurrent_rpcs`` above the client count): no request fails.
- Route only, above it (limit 8, 50 clients): the requests over the limit wait for a slot (the admission
  wait, 1 s by default, is far longer than a route), so none is refused and none fails.
- The same with ``admission_wait_s = 0`` (refuse at once when every slot is taken): some requests get
  RESOURCE_EXHAUSTED, and nothing else fails (no DEADLINE_EXCEEDED, no UNAVAILABLE).
- Answer against fixed-delay model servers (``benchmarks/model_server.py``) and a loopback embeddings
  server, below the limit: every answer completes with every reference and an aggregation selected.

The server's RSS and open file descriptors are sampled after the warm-up and at the end, both times with
every client connected and idle between two requests; both must stay flat (``RSS_SLACK_*``,
``FD_SLACK``). Every request has a generous deadline, and no wall-clock time is asserted. The summary
line of each scenario is printed (shown with ``-s``), recorded as the property ``load: <scenario>`` of
the ``--junitxml`` report's test suite, and carried by every assertion message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pytest

from load_harness import Call, LoadResult, drive, smcs_serve, stdin_server
from service_harness import N_MODELS, make_bank, queries_for
from smcs import AsyncClient
from smcs.core.pipeline import AnswerResult

pytestmark = pytest.mark.slow

CLIENTS = 50
SECONDS = float(os.environ.get("SMCS_LOAD_SECONDS", "5"))
WARMUP_S = 1.0
BANK_QUESTIONS, BANK_DIM = 8000, 256
"""8 MB of embeddings, routed on the worker thread (``inline_route_bytes = 0`` below), so the server really
holds up to 50 requests at once."""
RUN_LIMIT_S = SECONDS + WARMUP_S + 120.0
"""The load of one scenario is cancelled after this: the test stops by itself whatever the server does."""
ROUTE_DEADLINE_S = 30.0
ANSWER_DEADLINE_S = 60.0
ROOMY_LIMIT = 2 * CLIENTS
"""The admission limit of the scenarios below it. The server frees a slot once its handler has finished,
which may trail the client's receipt of the response, so a client's next request can briefly overlap
its last one: twice the clients keeps every request under the limit whatever the timing."""
TIGHT_LIMIT = 8
RSS_SLACK_BYTES = 32 << 20
RSS_SLACK_SHARE = 0.15
"""RSS may end at most max(32 MiB, 15 %) above its post-warm-up value: allocator arenas and caches settle
within that, while a leak passes it once the requests made times the bytes lost a request exceed 32 MiB
(20 KiB a request over the ~2,000 routes of a 5 s run; 5 KiB over a 30 s run's)."""
FD_SLACK = 8
"""File descriptors may end at most this many above their post-warm-up count (every client's connection
is open at both samples); a leak of one descriptor in a hundred requests would pass it within a thousand. The
connections to the models are counted apart: they are pooled, and bounded by the pools' size instead."""
MODEL_DELAY_S = 0.05
MODEL_WORDS = 20
K, N = 3, 3
"""The servers' policy: three referencers, three aggregations (the bank has six models)."""
MODEL_MAX_CONCURRENCY = 8
"""Calls in flight to one model, and so the most keep-alive connections its pool keeps open: 50 clients
want more than that at once, so the server's connections to the models end at most at 6 × 8 (a pool grows
towards the highest demand it has seen, which a short run may reach only late)."""
MODEL_SERVER = Path(__file__).resolve().parent.parent / "benchmarks" / "model_server.py"
EMBEDDINGS_SERVER = Path(__file__).resolve().with_name("load_harness.py")


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic bank (six models ``model-00…``) shared by the scenarios, which only read it."""
    path = tmp_path_factory.mktemp("load") / "bank"
    make_bank(path, n_questions=BANK_QUESTIONS, dim=BANK_DIM)
    return path


@pytest.fixture(scope="module")
def queries(bank: Path) -> np.ndarray:
    """Query embeddings near the bank's rows, cycled through by the route clients."""
    return queries_for(bank, 256)


def server_toml(max_concurrent_rpcs: int, admission_wait_s: float = 1.0) -> str:
    """The ``[server]`` and ``[policy]`` tables every scenario shares."""
    return (
        f'[server]\nhost = "127.0.0.1"\nport = 0\nmax_concurrent_rpcs = {max_concurrent_rpcs}\n'
        f"admission_wait_s = {admission_wait_s}\ninline_route_bytes = 0\n\n"
        f"[policy]\nk = {K}\nn_base = 50\nn = {N}\n\n"
    )


def route_toml(max_concurrent_rpcs: int, admission_wait_s: float = 1.0) -> str:
    """A route-only server: embeddings in, no embedder, no models."""
    return server_toml(max_concurrent_rpcs, admission_wait_s) + '[embedder]\nkind = "none"\n'


def answer_toml(max_concurrent_rpcs: int, model_urls: list[str], embeddings_url: str) -> str:
    """An Answer server: each of the bank's models on a fixed-delay server of its own, and the loopback
    embeddings server as the embedder (of the bank's dimension)."""
    text = server_toml(max_concurrent_rpcs)
    text += f'[embedder]\nkind = "remote"\nbase_url = "{embeddings_url}"\nmodel = "load"\ndim = {BANK_DIM}\nretries = 0\n\n'
    for r, url in enumerate(model_urls):
        text += (
            f'[models."model-{r:02d}"]\nkind = "openai"\nbase_urls = ["{url}"]\nretries = 0\ncooldown_s = 0.0\n'
            f"max_tokens = {MODEL_WORDS}\nmax_concurrency = {MODEL_MAX_CONCURRENCY}\ntimeout_s = 30.0\n\n"
        )
    return text


Recorder = Callable[[str, object], None]
"""pytest's ``record_testsuite_property`` (a property of the run's ``--junitxml`` report)."""


def run_scenario(
    name: str, toml: str, bank: Path, tmp_path: Path, call: Call, record: Recorder, model_ports: Collection[int] = ()
) -> tuple[LoadResult, str]:
    """Serve ``bank`` with config ``toml`` and load it with ``call`` (counting the server's connections
    to ``model_ports`` apart); returns the result and its summary line (printed and recorded as the
    ``load: NAME`` test-suite property)."""
    config = tmp_path / "smcs.toml"
    config.write_text(toml)
    with smcs_serve(config, bank, tmp_path / "serve.log") as server:
        result = drive(server, CLIENTS, SECONDS, WARMUP_S, call, RUN_LIMIT_S, model_ports)
    summary = result.summary(name)
    print(summary)
    record(f"load: {name}", summary)
    return result, summary


def run_route_scenario(
    limit: int, bank: Path, queries: np.ndarray, tmp_path: Path, record: Recorder, admission_wait_s: float = 1.0
) -> tuple[LoadResult, str]:
    """``run_scenario`` of Route requests against a route-only server admitting ``limit`` requests at once
    (the others waiting up to ``admission_wait_s`` for a slot)."""
    name = f"route, limit {limit}, admission wait {admission_wait_s:g} s"
    return run_scenario(name, route_toml(limit, admission_wait_s), bank, tmp_path, route_call(queries), record)


def assert_flat(result: LoadResult, summary: str, model_connections_cap: int = 0) -> None:
    """RSS and the open file descriptors other than connections to the models ended within their slack
    of the post-warm-up sample, and the connections to the models within their pools' size."""
    start, end = result.start, result.end
    assert end.rss_bytes <= start.rss_bytes + max(RSS_SLACK_BYTES, RSS_SLACK_SHARE * start.rss_bytes), f"server RSS grew: {summary}"
    assert end.fds - end.peer_fds <= start.fds - start.peer_fds + FD_SLACK, f"server file descriptors grew: {summary}"
    assert end.peer_fds <= model_connections_cap, f"more connections to the models than their pools hold: {summary}"


def route_call(queries: np.ndarray) -> Call:
    """One Route request per call, cycling through ``queries`` with the request number as seed."""

    async def call(client: AsyncClient, i: int) -> str:
        await client.route(embedding=queries[i % len(queries)], seed=i, timeout=ROUTE_DEADLINE_S)
        return "OK"

    return call


async def answer_call(client: AsyncClient, i: int) -> str:
    """One Answer request: OK when it ends with a result that every referencer answered and an
    aggregation was selected for; otherwise what went wrong."""
    events = [event async for event in client.answer(f"What is {i} times 7?", seed=i, timeout=ANSWER_DEADLINE_S)]
    result = events[-1] if events else None
    if not isinstance(result, AnswerResult):
        return "NO_RESULT"
    if result.source != "aggregation" or not all(r.ok for r in result.references):
        return f"DEGRADED_{result.source}"
    return "OK"


def test_route_below_the_admission_limit_never_fails(
    bank: Path, queries: np.ndarray, tmp_path: Path, record_testsuite_property: Recorder
) -> None:
    """Route only, limit above the client count: every request succeeds; memory and descriptors stay flat."""
    result, summary = run_route_scenario(ROOMY_LIMIT, bank, queries, tmp_path, record_testsuite_property)
    assert set(result.outcomes) == {"OK"}, summary
    assert_flat(result, summary)


def test_route_above_the_admission_limit_queues_and_never_fails(
    bank: Path, queries: np.ndarray, tmp_path: Path, record_testsuite_property: Recorder
) -> None:
    """Route only, limit below the client count: the requests over the limit wait for a slot, and every
    one succeeds; memory and descriptors stay flat."""
    result, summary = run_route_scenario(TIGHT_LIMIT, bank, queries, tmp_path, record_testsuite_property)
    assert set(result.outcomes) == {"OK"}, summary
    assert_flat(result, summary)


def test_route_above_the_admission_limit_without_a_wait_is_refused_not_timed_out(
    bank: Path, queries: np.ndarray, tmp_path: Path, record_testsuite_property: Recorder
) -> None:
    """Route only, limit below the client count, no admission wait: requests either succeed or get
    RESOURCE_EXHAUSTED (both happen), never a deadline or another error; memory and descriptors stay flat."""
    result, summary = run_route_scenario(TIGHT_LIMIT, bank, queries, tmp_path, record_testsuite_property, admission_wait_s=0.0)
    assert set(result.outcomes) == {"OK", "RESOURCE_EXHAUSTED"}, summary
    assert_flat(result, summary)


def test_answer_below_the_admission_limit_never_fails(bank: Path, tmp_path: Path, record_testsuite_property: Recorder) -> None:
    """Answer against fixed-delay models, limit above the client count: every answer completes in full;
    memory and descriptors stay flat, and the connections to the models within their pools."""
    model_args = (str(MODEL_SERVER), str(N_MODELS), str(MODEL_DELAY_S), str(MODEL_WORDS))
    with stdin_server(*model_args) as model_urls, stdin_server(str(EMBEDDINGS_SERVER), str(BANK_DIM)) as (embeddings_url,):
        toml = answer_toml(ROOMY_LIMIT, model_urls, embeddings_url)
        ports = [int(url.rsplit(":", 1)[1]) for url in model_urls]
        result, summary = run_scenario(f"answer, limit {ROOMY_LIMIT}", toml, bank, tmp_path, answer_call, record_testsuite_property, ports)
    assert set(result.outcomes) == {"OK"}, summary
    assert_flat(result, summary, N_MODELS * MODEL_MAX_CONCURRENCY)
