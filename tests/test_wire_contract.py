"""The wire contract's enums, admission control and retry pushback, without a server.

- Every enum of the proto has one table in ``smcs.wire.enums`` mapping it to the strings Python uses, and
  each table covers its enum and its Python set exactly, both ways (every value round-trips).
- The events of the Answer stream carry each enum through the wire and back unchanged.
- ``Admission`` serves first come first served, hands a freed slot to the first waiter, gives up after the
  wait, and loses no slot to a cancelled waiter.
- The clients read a retry pushback only from a RESOURCE_EXHAUSTED with a well-formed trailer, and retry
  after it within the call's deadline.
"""

from __future__ import annotations

import asyncio
from typing import get_args

import grpc
import pytest

from smcs._proto import router_pb2 as pb
from smcs.backends.errors import ErrorKind
from smcs.client import AsyncClient, Client, pushback_s
from smcs.core.pipeline import AggregationEvidence, ReferenceEvidence
from smcs.errors import InputError
from smcs.service.admission import Admission
from smcs.strategies import StrategyCall, StrategyPlan
from smcs.wire import enums
from smcs.wire.convert import AnswerEventDecoder, answer_event
from smcs.wire.strategy import StrategyEventDecoder, strategy_event

TABLES = {name: table for name, (table, _) in enums.PYTHON_SETS.items()}
ENUMS = [v for v in pb.DESCRIPTOR.enum_types_by_name.values()]


def test_every_enum_of_the_proto_has_a_table():
    assert sorted(e.full_name for e in ENUMS) == sorted(t.full_name for t in TABLES.values())


@pytest.mark.parametrize("name", list(enums.PYTHON_SETS))
def test_each_table_covers_its_enum_and_its_python_set_exactly(name):
    table, strings = enums.PYTHON_SETS[name]
    assert set(table.numbers) == set(strings), f"{table.full_name} and the Python set {name} differ"
    values = {v.number for v in table.enum.DESCRIPTOR.values}
    assert set(table.names) == values - {0}, f"{table.full_name} has values without a string"
    assert table.enum.DESCRIPTOR.values_by_number[0].name.endswith("_UNSPECIFIED")
    for string in strings:  # every value, both ways
        assert table.from_wire(table.to_wire(string)) == string
        assert table.checked(table.to_wire(string), "f") == string
        assert table.parse(string, "f") == table.to_wire(string)
    prefix = table.enum.Name(0).removesuffix("UNSPECIFIED")
    for number in values - {0}:
        assert table.to_wire(table.from_wire(number)) == number
        assert table.enum.Name(number) == prefix + table.from_wire(number).upper()  # e.g. ERROR_KIND_RATE_LIMITED
    assert table.to_wire(None) == table.to_wire("") == 0 and table.from_wire(0) is None


def test_the_error_kinds_are_the_backends_and_the_pipelines_own():
    assert set(enums.ERROR_KIND.numbers) == set(get_args(ErrorKind)) | {"empty_response", "empty_subset"}


def test_unknown_values_are_refused_naming_the_field_or_read_as_unknown():
    with pytest.raises(InputError, match=r"policy.retrieval is 42, not a value of smcs.v1.Retrieval"):
        enums.RETRIEVAL.checked(42, "policy.retrieval")
    with pytest.raises(InputError, match=r"retrieval must be one of auto, exact, ivf, got 'hnsw'"):
        enums.RETRIEVAL.parse("hnsw", "retrieval")
    with pytest.raises(ValueError, match="'nope' has no value in smcs.v1.ErrorKind"):
        enums.ERROR_KIND.to_wire("nope")
    assert enums.SCORER.from_wire(99) is None  # a newer server's value: the client reads it as unknown


@pytest.mark.parametrize("kind", [None, *enums.ERROR_KIND.numbers])
def test_call_evidence_keeps_its_error_kind_through_the_wire(kind):
    error = None if kind is None else f"failed: {kind}"
    reference = ReferenceEvidence(model="m", prior=0.5, error=error, error_kind=kind, latency_s=0.25)
    aggregation = AggregationEvidence(index=1, aggregator="a", subset=["m"], error=error, error_kind=kind,
                                      similarity=0.5, perplexity=0.25, total=1.25)  # finite: NaN != NaN
    decoder = AnswerEventDecoder()
    for event in (reference, aggregation):
        message = answer_event(event, None, None)  # type: ignore[arg-type]  # no routed event: no bank needed
        assert decoder.decode(pb.AnswerResponse.FromString(message.SerializeToString())) == event
    call = StrategyCall(model="m", role="voter", layer=0, index=0, position=0, seed=3, error=error, error_kind=kind)
    assert StrategyEventDecoder().decode(strategy_event(call, None, None)) == call  # type: ignore[arg-type]


@pytest.mark.parametrize("role", list(enums.CALL_ROLE.numbers))
def test_strategy_roles_and_score_kinds_go_through_the_wire(role):
    decoder = StrategyEventDecoder()
    for kind in ("", *enums.SCORE_KIND.numbers):
        plan = StrategyPlan(strategy="moa", models=["m"], scores=[0.5], score_kind=kind)  # type: ignore[arg-type]
        assert decoder.decode(strategy_event(plan, None, None)) == plan  # type: ignore[arg-type]
    call = StrategyCall(model="m", role=role, layer=1, index=2, position=3, seed=4, text="t")  # type: ignore[arg-type]
    assert decoder.decode(strategy_event(call, None, None)) == call  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- admission


def test_admission_queues_in_order_and_hands_a_freed_slot_to_the_first_waiter():
    async def go():
        admission = Admission(limit=2, wait_s=5.0)
        assert await admission.acquire(0) and await admission.acquire(0)
        assert not await admission.acquire(0)  # full, and no wait allowed
        order: list[int] = []

        async def wait(i: int) -> None:
            assert await admission.acquire(5.0)
            order.append(i)

        waiters = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert (admission.waiting, order) == (3, [])
        admission.release()
        await asyncio.sleep(0.01)
        assert order == [0] and admission.in_flight == 2  # the slot passed on
        admission.release()
        admission.release()
        await asyncio.gather(*waiters)
        assert order == [0, 1, 2] and admission.waiting == 0
        for _ in range(2):
            admission.release()
        assert admission.in_flight == 0

    asyncio.run(go())


def test_admission_gives_up_after_the_wait_and_a_cancelled_waiter_loses_no_slot():
    async def go():
        admission = Admission(limit=1, wait_s=0.05)
        assert await admission.acquire(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert not await admission.acquire(0.05)
        assert 0.04 <= loop.time() - started < 1 and admission.waiting == 0
        cancelled = asyncio.create_task(admission.acquire(5.0))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert admission.waiting == 0
        admission.release()
        assert admission.in_flight == 0
        assert await admission.acquire(0)  # the slot is free again: the cancelled waiter kept none

    asyncio.run(go())


def test_the_admission_wait_is_at_most_half_the_remaining_deadline():
    admission = Admission(limit=1, wait_s=1.0)
    assert admission.wait_for(None) == 1.0
    assert admission.wait_for(10.0) == 1.0
    assert admission.wait_for(0.5) == 0.25
    assert admission.wait_for(-1.0) == 0.0
    assert all(500 <= admission.pushback_ms() <= 1500 for _ in range(100))
    assert all(25 <= Admission(limit=1, wait_s=0.0).pushback_ms() <= 75 for _ in range(100))


# --------------------------------------------------------------------------------- retry pushback


class Refused(grpc.RpcError):
    """A refused call as grpc raises it: its code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._trailing = code, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "busy"

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


def test_pushback_is_read_from_a_resource_exhausted_trailer_only():
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert pushback_s(Refused(exhausted, (("grpc-retry-pushback-ms", "250"),))) == 0.25
    assert pushback_s(Refused(exhausted, (("grpc-retry-pushback-ms", "-1"),))) is None  # "do not retry"
    assert pushback_s(Refused(exhausted, (("grpc-retry-pushback-ms", "soon"),))) is None
    assert pushback_s(Refused(exhausted)) is None  # e.g. a message over max_message_bytes
    assert pushback_s(Refused(grpc.StatusCode.UNAVAILABLE, (("grpc-retry-pushback-ms", "10"),))) is None


def test_the_blocking_client_retries_after_the_pushback_within_the_deadline(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("smcs.client.time.sleep", sleeps.append)
    busy = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, (("grpc-retry-pushback-ms", "200"),))
    with Client("127.0.0.1:1", retries=3, timeout=10) as client:
        attempts: list[float] = []

        def method(request, timeout, metadata):
            attempts.append(timeout)
            if len(attempts) < 3:
                raise busy
            return "served"

        assert client._call(method, None, lambda r: r, None) == "served"
        assert sleeps == [0.2, 0.2] and len(attempts) == 3 and all(t <= 10 for t in attempts)

        attempts.clear()
        sleeps.clear()

        def always_busy(request, timeout, metadata):
            attempts.append(timeout)
            raise busy

        with pytest.raises(Refused):
            client._call(always_busy, None, lambda r: r, None)
        assert len(attempts) == 4 and sleeps == [0.2] * 3  # retries = 3 extra attempts

        attempts.clear()
        with pytest.raises(Refused):  # the pushback would pass the deadline: no retry
            client._call(always_busy, None, lambda r: r, 0.1)
        assert len(attempts) == 1


def test_the_async_client_retries_after_the_pushback_and_an_answer_only_before_its_first_event(monkeypatch):
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr("smcs.client.asyncio.sleep", sleep)
    busy = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, (("grpc-retry-pushback-ms", "150"),))

    async def go():
        async with AsyncClient("127.0.0.1:1", retries=2, timeout=10) as client:
            attempts = []

            async def method(request, timeout, metadata):
                attempts.append(timeout)
                if len(attempts) < 2:
                    raise busy
                return "served"

            assert await client._call(method, None, lambda r: r, None) == "served"
            assert sleeps == [0.15] and len(attempts) == 2

            streams = []

            def stream(request, timeout, metadata):  # refused before its first event, then one that fails midway
                async def events():
                    streams.append(timeout)
                    if len(streams) == 2:
                        yield pb.AnswerResponse(reference=pb.ReferenceEvent(model="m", text="t"))
                    raise busy

                return events()

            got = []
            with pytest.raises(Refused):
                async for event in client._stream(stream, None, 10):
                    got.append(event)
            assert len(streams) == 2 and [e.model for e in got] == ["m"]  # not retried after an event

    asyncio.run(go())
