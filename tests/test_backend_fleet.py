"""A model on several replicas: latency-aware choice, health probes, and the probe's lifecycle.

The choice itself (``smcs.backends.fleet.choose``) is tested on replicas with a given clock; the rest
against real HTTP servers on 127.0.0.1 (``ReplicaServer``, aiohttp in the test's own event loop, stopped
when its test's loop ends). Tests assert on which replica got how many requests, never on wall time;
the waits for a probe to have run are bounded only so that a broken probe fails rather than hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from aiohttp import web

from smcs.backends import ChatMessage, ModelConfig, OpenAIBackend, OpenAIModelConfig
from smcs.backends.fleet import LATENCY_HALF_LIFE_S, Replica, choose

FAST = {"backoff_s": 0.01, "max_backoff_s": 1.0, "timeout_s": 5.0, "connect_timeout_s": 2.0}
PROBING = {"health_interval_s": 0.05, "health_timeout_s": 1.0}
ASK = [ChatMessage("user", "What is the capital of France?")]
COMPLETION = {
    "choices": [
        {"message": {"role": "assistant", "content": "Paris."}, "logprobs": {"content": [{"logprob": -0.1}]},
         "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1},
}


# ------------------------------------------------------------------------------------- the choice


def replicas(count: int) -> list[Replica]:
    """``count`` fresh replicas named r0, r1, ..."""
    return [Replica(f"http://r{i}", f"http://r{i}/v1/chat/completions") for i in range(count)]


def test_with_nothing_measured_the_fewest_in_flight_wins_ties_to_the_first():
    a, b, c = replicas(3)
    assert choose([a, b, c], 0.0) is a
    a.in_flight, b.in_flight, c.in_flight = 2, 1, 1
    assert choose([a, b, c], 0.0) is b


def test_a_replica_not_yet_measured_is_tried_before_an_equally_idle_measured_one():
    a, b = replicas(2)
    a.record(0.5, 10, now=0.0)
    assert choose([a, b], 0.0) is b


def test_an_unmeasured_replica_counts_as_fast_as_the_fastest_so_load_still_spreads():
    a, b = replicas(2)
    a.record(0.1, 1, now=0.0)
    b.in_flight = 1  # its first request is still out: (1 + 1) × 0.1 > (0 + 1) × 0.1
    assert choose([a, b], 0.0) is a


def test_the_slow_replica_gets_a_request_only_once_the_fast_one_is_that_much_busier():
    fast, slow = replicas(2)
    fast.record(0.01, 1, now=0.0)
    slow.record(0.045, 1, now=0.0)
    picks = []
    for _ in range(6):  # requests that stay in flight
        chosen = choose([fast, slow], 0.0)
        chosen.in_flight += 1
        picks.append(chosen)
    # the fifth would wait 5 × 0.01 on the fast one, 1 × 0.045 on the slow; the sixth 5 × 0.01 against 2 × 0.045
    assert picks == [fast, fast, fast, fast, slow, fast]


def test_equal_expected_waits_go_to_fewer_in_flight():
    fast, slow = replicas(2)
    fast.record(0.125, 1, now=0.0)
    slow.record(0.5, 1, now=0.0)
    fast.in_flight = 3  # 4 × 0.125 = 1 × 0.5
    assert choose([fast, slow], 0.0) is slow


def test_latency_is_per_output_token_a_ratio_of_averages():
    a, b = replicas(2)
    a.record(2.0, 100, now=0.0)  # 0.02 s a token
    b.record(0.5, 10, now=0.0)  # 0.05 s a token, though the call was shorter
    assert choose([a, b], 0.0) is a
    assert a.seconds_per_token(0.0) == pytest.approx(0.02)
    a.record(0.3, 1, now=0.0)  # a short answer moves the estimate, but only by its share of the tokens
    assert a.seconds_per_token(0.0) == pytest.approx((0.7 * 2.0 + 0.3 * 0.3) / (0.7 * 100 + 0.3 * 1))


def test_a_stale_estimate_fades_so_a_once_slow_replica_is_measured_again():
    fast, slow = replicas(2)
    slow.record(1.6, 1, now=0.0)
    for now in (0.0, 3 * LATENCY_HALF_LIFE_S):  # the fast one keeps being measured
        fast.record(0.1, 1, now=now)
        assert choose([fast, slow], now) is fast
    assert slow.seconds_per_token(4 * LATENCY_HALF_LIFE_S) == pytest.approx(0.1)  # halved four times
    fast.record(0.1, 1, now=4.5 * LATENCY_HALF_LIFE_S)
    assert choose([fast, slow], 4.5 * LATENCY_HALF_LIFE_S) is slow


def test_an_unhealthy_replica_is_skipped_while_another_is_healthy():
    a, b = replicas(2)
    a.healthy = False
    b.in_flight = 5
    assert choose([a, b], 0.0) is b


def test_when_no_replica_is_healthy_they_are_still_chosen_among_those_not_cooling():
    a, b, c = replicas(3)
    for replica in (a, b, c):
        replica.healthy = False
    a.cool_until = 10.0
    b.in_flight = 1
    assert choose([a, b, c], 0.0) is c


def test_a_healthy_replica_cooling_down_is_skipped_like_before():
    a, b = replicas(2)
    a.cool_until = 10.0
    assert choose([a, b], 0.0) is b
    assert choose([a, b], 10.0) is a


def test_when_all_replicas_cool_down_the_one_ending_first_is_chosen():
    a, b = replicas(2)
    a.cool_until, b.cool_until = 20.0, 10.0
    b.healthy = False
    assert choose([a, b], 0.0) is b


# ------------------------------------------------------------------------------------------ config


def test_the_health_options_default_to_no_probes():
    config = OpenAIModelConfig(base_urls=["http://a:8000"])
    assert (config.health_interval_s, config.health_timeout_s) == (0.0, 2.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"health_interval": 5}, "unknown field `health_interval`"),
        ({"health_interval_s": -1}, "health_interval_s must be >= 0"),
        ({"health_interval_s": float("inf")}, "health_interval_s must be >= 0 and finite"),
        ({"health_timeout_s": 0}, "health_timeout_s must be > 0"),
        ({"health_timeout_s": "2"}, "$.health_timeout_s"),
    ],
)
def test_a_bad_health_option_is_an_error_naming_it(table, message):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"kind": "openai", "base_urls": ["http://a:8000"], **table}, type=ModelConfig)
    assert message in str(info.value)


# --------------------------------------------------------------------------------- real replicas


class ReplicaServer:
    """One model server on 127.0.0.1: chat completions after ``delay_s``, ``GET /v1/models`` answering
    200 while ``healthy`` and 503 otherwise; it counts both. ``stop`` and ``start`` again keep the port."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.healthy = True
        self.completions = 0
        self.probes = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, once started."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on ``port`` (0 the first time: a free one)."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening and close every connection (again: nothing)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _complete(self, request: web.Request) -> web.Response:
        await request.read()
        self.completions += 1
        await asyncio.sleep(self.delay_s)
        return web.json_response(COMPLETION)

    async def _models(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.healthy:
            return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})
        return web.json_response({"error": "engine dead"}, status=503)


@contextlib.asynccontextmanager
async def serving(*delays_s: float) -> AsyncIterator[list[ReplicaServer]]:
    """One started ``ReplicaServer`` per delay, all stopped on leaving."""
    servers = [ReplicaServer(delay) for delay in delays_s]
    try:
        for server in servers:
            await server.start()
        yield servers
    finally:
        for server in servers:
            await server.stop()


def backend_for(servers: list[ReplicaServer], **options: object) -> OpenAIBackend:
    """A backend of model ``m`` over ``servers`` with fast retries and ``options``."""
    config = OpenAIModelConfig(base_urls=[s.base_url for s in servers], **{**FAST, **options})  # type: ignore[arg-type]
    return OpenAIBackend("m", config)


async def urls_of(backend: OpenAIBackend, count: int) -> list[str | None]:
    """The replica that answered each of ``count`` sequential calls."""
    return [(await backend.complete(ASK)).url for _ in range(count)]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Return once ``condition()`` holds; ``TimeoutError`` if it does not within ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("workers", [1, 4])
def test_a_slow_replica_gets_clearly_less_traffic(workers):
    async def go() -> tuple[int, int]:
        async with serving(0.15, 0.005) as (slow, fast):
            async with backend_for([slow, fast], max_concurrency=workers) as backend:

                async def worker() -> None:
                    for _ in range(40 // workers):
                        await backend.complete(ASK)

                await asyncio.gather(*(worker() for _ in range(workers)))
            return slow.completions, fast.completions

    slow_count, fast_count = asyncio.run(go())
    assert slow_count + fast_count == 40
    assert 1 <= slow_count < 0.25 * 40  # tried (listed first, not yet measured), then mostly avoided


@pytest.mark.parametrize("fault", ["probe_fails", "server_down"])
def test_a_replica_failing_its_probe_is_skipped_until_a_probe_succeeds(fault):
    async def go() -> None:
        async with serving(0.005, 0.1) as (flaky, steady):
            async with backend_for([flaky, steady], cooldown_s=60.0, **PROBING) as backend:
                await urls_of(backend, 4)  # starts the probe; both replicas measured
                if fault == "probe_fails":
                    flaky.healthy = False
                else:
                    await flaky.stop()
                await until(lambda: not backend.replicas[0].healthy)
                before = flaky.completions
                assert await urls_of(backend, 5) == [steady.base_url] * 5
                assert flaky.completions == before
                assert not backend.replicas[0].cooling  # never attempted, so no failed request either

                if fault == "probe_fails":
                    flaky.healthy = True
                else:
                    await flaky.start()  # the same port
                await until(lambda: backend.replicas[0].healthy)
                assert await urls_of(backend, 5) == [flaky.base_url] * 5  # the faster one again

    asyncio.run(go())


def test_when_every_replica_fails_its_probe_calls_are_still_sent():
    async def go() -> None:
        async with serving(0.02, 0.02) as servers:
            async with backend_for(servers, max_concurrency=8, **PROBING) as backend:
                await backend.complete(ASK)  # starts the probe
                for server in servers:
                    server.healthy = False
                await until(lambda: not any(r.healthy for r in backend.replicas))
                before = [s.completions for s in servers]
                results = await asyncio.gather(*(backend.complete(ASK) for _ in range(6)))
                assert all(result.text == "Paris." for result in results)
                assert all(s.completions > b for s, b in zip(servers, before, strict=True))  # spread over both

    asyncio.run(go())


def test_the_probe_starts_with_the_first_request_and_stops_on_close():
    async def go() -> None:
        async with serving(0.0, 0.0) as servers:
            backend = backend_for(servers, **PROBING)
            await asyncio.sleep(0.2)  # built, never used: nothing probes
            assert [s.probes for s in servers] == [0, 0]
            await backend.complete(ASK)
            await until(lambda: all(s.probes >= 2 for s in servers))  # a first round, then another
            (probe,) = [task for task in asyncio.all_tasks() if task.get_name() == "smcs-health-m"]
            await backend.aclose()
            assert probe.done()  # stopped, not left pending
            probes = [s.probes for s in servers]
            await asyncio.sleep(0.2)  # four intervals
            assert [s.probes for s in servers] == probes

    asyncio.run(go())


@pytest.mark.parametrize("options", [{}, PROBING], ids=["probing_off_by_default", "one_url"])
def test_no_probe_is_sent_when_off_or_with_one_url(options):
    async def go() -> None:
        async with serving(0.0, 0.0) as servers:
            used = servers if not options else servers[:1]
            async with backend_for(used, **options) as backend:
                await urls_of(backend, 3)
                await asyncio.sleep(0.2)
            assert [s.probes for s in servers] == [0, 0]

    asyncio.run(go())
