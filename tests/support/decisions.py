"""Comparing a decision the service returned with the in-process one."""

from __future__ import annotations

import numpy as np
from google.protobuf import json_format

from smcs import Bank
from smcs._proto import router_pb2 as pb
from smcs.core import RouteDecision
from smcs.wire.decision import decision_from_response


def decision_from_json(text: str) -> RouteDecision:
    """The decision ``smcs route --json`` printed: its proto3 JSON parsed back into a RouteResponse (an
    unknown field fails) and read as the client reads the wire."""
    return decision_from_response(json_format.Parse(text, pb.RouteResponse()))


def assert_same_decision(remote: RouteDecision, local: RouteDecision, bank: Bank) -> None:
    """The service's decision is the in-process one; its support set, when the call asked for it
    (``include_support`` or ``debug``), is the in-process one too, with the bank's question ids; a call that
    did not ask gets none."""
    assert remote.referencers == local.referencers
    assert remote.votes == local.votes  # doubles on the wire: exact
    assert remote.aggregator == local.aggregator
    assert remote.subsets == local.subsets
    assert remote.seed == local.seed
    assert remote.bank_version == local.bank_version == bank.version
    if not remote.support_rows:  # not asked for
        assert remote.support_similarities == remote.support_ids == remote.support_texts == remote.support_outcomes == []
        return
    assert remote.support_rows == local.support_rows
    assert len(remote.support_rows) > 0
    np.testing.assert_array_equal(
        np.asarray(remote.support_similarities, dtype=np.float32), np.asarray(local.support_similarities, dtype=np.float32)
    )
    questions = bank.questions
    assert remote.support_ids == [questions[r].id for r in local.support_rows]
