"""How the service ends a failed call: each error kind's status, and INTERNAL for anything else."""

from __future__ import annotations

import logging

import grpc
import pytest

from smcs import SmcsError
from smcs.errors import InputError
from smcs.bank import BankError, BankFormatError
from smcs.core import Policy
from smcs.core.pipeline import QuorumNotMet
from smcs.runtime.host import NoModelsConfigured
from smcs.service.servicer import _status
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


def test_a_refusal_of_the_router_is_invalid_argument_naming_the_field():
    router_refusal = None
    try:
        Policy(k=0)
    except InputError as exc:
        router_refusal = exc
    assert router_refusal is not None
    code, message = _status(router_refusal, "Route")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("k ")
