"""The replicas of one model: what the balancer knows about each base URL, which one an attempt goes to,
and the optional health probe that keeps a replica that is down out of the choice.

**Choice** (``choose``). The candidates are the replicas of the first tier that has any:

1. healthy (its last probe succeeded, or none has run) and not cooling down after a failed request;
2. not cooling down: every replica left has failed its probe, and they are still tried, not refused;
3. all of them, and the one whose cooldown ends first is taken.

Among the candidates of tier 1 or 2 the attempt goes to the lowest expected wait ``(in_flight + 1) ×
seconds_per_token``; ties go to fewer in flight, then to a replica not yet measured, then to the one
listed first. A replica not yet measured counts as fast as the fastest measured candidate (0 when none
is), so each one is tried, and with nothing measured the choice is plainly the fewest in flight.

**Latency.** Each replica keeps exponentially weighted moving averages (weight ``EWMA_WEIGHT`` for the
newest) of the seconds of its successful attempts and of the output tokens they produced; their ratio is
its seconds per output token. Per token rather than per call, because answers to the one model vary from
a few tokens to thousands and the length of the next one is the same unknown for every replica: the
ratio ranks replicas by speed, not by the luck of which got the long answers. A ratio of averages rather
than an average of ratios, so that a short answer dominated by its prompt does not swing the estimate.
The time of an attempt includes the server's queue, so load from other clients counts too.

An estimate fades while no sample refreshes it: seen ``age`` seconds after its last sample it counts as
``ratio · ½^(age / LATENCY_HALF_LIFE_S)``. So a replica once slow (a cold start, a burst of load from
elsewhere) is tried again after a while, sooner the less slow it was, and measured anew.

**Health.** ``HealthProbe`` sends ``GET {base_url}/v1/models`` (``/models`` after a base URL ending in
``/v1``) to every replica, all at once, then again ``interval_s`` after the round ends. A 2xx within
``timeout_s`` marks the replica healthy; any other status, a connection error or no answer in time marks
it unhealthy until a later probe succeeds. Only probes change health; a failed request starts a
cooldown instead, and a replica is preferred only when both allow it. Probes use a session of their
own, so that requests filling the connection pool cannot starve them into false alarms, and a fresh
connection each, so that a server closing an idle keep-alive connection (after 5 s by default in uvicorn,
which vLLM's server runs on) cannot break one under a probe, and a probe shows the server accepts
connections. Changes of health are logged (logger ``smcs.backends.fleet``): a warning when a replica
fails its probe, info when it passes again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from smcs.http_retry import endpoint

log = logging.getLogger(__name__)

EWMA_WEIGHT = 0.3
"""The weight of the newest sample in a replica's latency averages."""
LATENCY_HALF_LIFE_S = 30.0
"""How fast a latency estimate fades without new samples: it halves every this many seconds."""


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """What the balancer knows about one base URL at one moment (``OpenAIBackend.replicas``).

    Attributes:
        base_url: the URL as configured.
        in_flight: this backend's requests to it now.
        healthy: whether its last health probe succeeded (True before any probe, and without probing).
        cooling: whether it is cooling down after a failed request.
        seconds_per_token: its faded latency estimate (``fleet`` module docstring); None before its first
            successful request.
    """

    base_url: str
    in_flight: int
    healthy: bool
    cooling: bool
    seconds_per_token: float | None


@dataclass(eq=False)
class Replica:
    """One base URL of the model and what the balancer knows about it."""

    base_url: str
    endpoint: str
    """Where chat completions are posted."""
    in_flight: int = 0
    cool_until: float = -math.inf
    """``time.monotonic()`` at which a cooldown ends; in the past: usable."""
    healthy: bool = True
    """Whether the last health probe succeeded (True until one fails)."""
    _seconds: float = field(default=0.0, init=False)
    """The moving average of the seconds of successful attempts."""
    _tokens: float = field(default=0.0, init=False)
    """The moving average of their output tokens."""
    _measured_at: float | None = field(default=None, init=False)
    """``time.monotonic()`` of the last sample; None before the first."""

    def cooling(self, now: float) -> bool:
        """Whether the URL is cooling down at ``now``."""
        return self.cool_until > now

    def record(self, seconds: float, tokens: int, now: float) -> None:
        """Take in a successful attempt of ``seconds`` that produced ``tokens`` output tokens (at least one
        is counted), finished at ``now``."""
        tokens = max(tokens, 1)
        if self._measured_at is None:
            self._seconds, self._tokens = seconds, float(tokens)
        else:
            self._seconds += EWMA_WEIGHT * (seconds - self._seconds)
            self._tokens += EWMA_WEIGHT * (tokens - self._tokens)
        self._measured_at = now

    def seconds_per_token(self, now: float) -> float | None:
        """The latency estimate at ``now``, faded by the age of the last sample; None if never measured."""
        if self._measured_at is None:
            return None
        age = max(0.0, now - self._measured_at)
        return self._seconds / self._tokens * 0.5 ** (age / LATENCY_HALF_LIFE_S)

    def status(self, now: float) -> ReplicaStatus:
        """A snapshot of this replica at ``now``."""
        rate = self.seconds_per_token(now)
        return ReplicaStatus(self.base_url, self.in_flight, self.healthy, self.cooling(now), rate)


def choose(replicas: Sequence[Replica], now: float) -> Replica:
    """The replica the next attempt goes to at ``now`` (module docstring): the lowest expected wait among
    the healthy ones not cooling down, else among those not cooling down, else the one whose cooldown
    ends first."""
    tiers: tuple[Callable[[Replica], bool], ...] = (
        lambda replica: replica.healthy and not replica.cooling(now),
        lambda replica: not replica.cooling(now),
    )
    for admits in tiers:
        candidates = [replica for replica in replicas if admits(replica)]
        if candidates:
            return _least_wait(candidates, now)
    return min(replicas, key=lambda replica: replica.cool_until)


def _least_wait(candidates: Sequence[Replica], now: float) -> Replica:
    """The candidate with the lowest ``(in_flight + 1) × seconds_per_token`` at ``now``; one not yet
    measured counts as the fastest measured one (0 if none is). Ties: fewer in flight, then not yet
    measured, then the first."""
    rates = [replica.seconds_per_token(now) for replica in candidates]
    optimistic = min((rate for rate in rates if rate is not None), default=0.0)

    def cost(i: int) -> tuple[float, int, bool, int]:
        rate = rates[i]
        wait = (candidates[i].in_flight + 1) * (optimistic if rate is None else rate)
        return wait, candidates[i].in_flight, rate is not None, i

    return candidates[min(range(len(candidates)), key=cost)]


class HealthProbe:
    """Probes the ``replicas`` of model ``name`` in the background (module docstring) from ``start`` until
    ``aclose``; it marks each ``Replica.healthy``."""

    def __init__(
        self, name: str, replicas: Sequence[Replica], *, headers: Mapping[str, str], interval_s: float, timeout_s: float
    ) -> None:
        """Configure the probe; nothing is sent before ``start``.

        Args:
            name: the model's name, for the log.
            replicas: the replicas to mark.
            headers: sent with every probe (the bearer key: vLLM started with ``--api-key`` guards
                ``/v1/models`` too).
            interval_s: seconds from the end of one round of probes to the next.
            timeout_s: the longest one probe may take.
        """
        self.name = name
        self._targets = [(replica, endpoint(replica.base_url, "models")) for replica in replicas]
        self._headers = dict(headers)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing in the running loop, the first round at once; while it is running, nothing."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"smcs-health-{self.name}")

    async def aclose(self) -> None:
        """Stop probing and close the probe's connections; waits until it has stopped. Again: nothing."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _run(self) -> None:
        """Rounds of probes, ``interval_s`` apart, until cancelled."""
        connector = aiohttp.TCPConnector(limit=len(self._targets), force_close=True)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
            while True:
                await asyncio.gather(*(self._probe(session, replica, url) for replica, url in self._targets))
                await asyncio.sleep(self._interval_s)

    async def _probe(self, session: aiohttp.ClientSession, replica: Replica, url: str) -> None:
        """Probe one replica and mark it, logging a change."""
        problem = await self._problem(session, url)
        if problem is None and not replica.healthy:
            log.info("model %r: %s passed its health probe again", self.name, replica.base_url)
        elif problem is not None and replica.healthy:
            log.warning("model %r: %s failed its health probe (%s); skipped until a probe succeeds",
                        self.name, replica.base_url, problem)
        replica.healthy = problem is None

    async def _problem(self, session: aiohttp.ClientSession, url: str) -> str | None:
        """None if ``GET url`` answers 2xx within ``timeout_s``, else what went wrong."""
        try:
            async with asyncio.timeout(self._timeout_s):
                async with session.get(url, headers=self._headers, allow_redirects=False) as response:
                    await response.read()
        except TimeoutError:  # before OSError, of which it is a subclass
            return f"GET {url}: no answer within health_timeout_s={self._timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"GET {url}: {exc or type(exc).__name__}"
        return None if 200 <= response.status < 300 else f"GET {url} answered {response.status}"
