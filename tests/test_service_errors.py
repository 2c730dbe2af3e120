"""How the service ends a failed call: each error kind's status, and INTERNAL for anything else."""

from __future__ import annotations

import logging

import grpc
import pytest

from smcs import SmcsError
from smcs.bank import BankError, BankFormatError
from smcs.core.pipeline import QuorumNotMet
from smcs.runtime.host import NoModelsConfigured
from smcs.service.servicer import _refusals_are_invalid, _status
from smcs.strategies import StrategyError
from smcs.wire.convert import RequestError


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (BankError("questions[0].id is empty"), grpc.StatusCode.INVALID_ARGUMENT),
        (StrategyError("layers must be >= 1"), grpc.StatusCode.INVALID_ARGUMENT),
        (BankFormatError("manifest.json is missing"), grpc.StatusCode.FAILED_PRECONDITION),
        (NoModelsConfigured("no model has a backend"), grpc.StatusCode.FAILED_PRECONDITION),
        (QuorumNotMet("2 of 3 referencers failed", []), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_error_kind_ends_the_call_with_its_status(error, code):
    assert isinstance(error, SmcsError)
    got, message = _status(error, "Route")
    assert got == code and message == (error.message if isinstance(error, RequestError) else str(error))


@pytest.mark.parametrize("error", [ValueError("a bug's message"), KeyError("x"), RuntimeError("boom")])
def test_anything_else_is_internal_and_logged_never_the_callers_fault(error, caplog):
    with caplog.at_level(logging.ERROR, logger="smcs.service.servicer"):
        code, message = _status(error, "Route")
    assert code == grpc.StatusCode.INTERNAL and "see its log" in message and str(error) not in message
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)


def test_a_value_error_where_the_request_is_checked_is_invalid_argument():
    def refuse():
        raise ValueError("seed must be an integer in [0, 2**64), got -1")

    with pytest.raises(RequestError) as raised, _refusals_are_invalid():
        refuse()
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT and "seed" in raised.value.message

    def strategy():
        raise StrategyError("samples must be >= 1")

    with pytest.raises(StrategyError), _refusals_are_invalid():  # a kind with a status of its own keeps it
        strategy()
