"""``smcs.wire.decision``'s array encoders against protobuf's own message building."""

from __future__ import annotations

import numpy as np
import pytest

from smcs._proto import router_pb2 as pb
from smcs.wire.decision import outcomes_wire


def _by_messages(outcomes: np.ndarray) -> pb.SupportSet:
    return pb.SupportSet(outcomes=[pb.ModelOutcomes(values=row) for row in outcomes.tolist()])


@pytest.mark.parametrize(
    ("n", "k", "low"),
    [(0, 3, -1), (1, 1, -1), (7, 7, -1), (500, 15, -1), (40, 13, -128), (30, 200, -128), (20, 40, 0)],
    ids=["empty", "one", "k7", "k15", "int8-range", "two-byte-lengths", "no-negatives"],
)
def test_outcomes_wire_parses_to_the_messages_protobuf_builds(n, k, low):
    """Every row becomes one ModelOutcomes with its values, negatives sign-extended as int32s are, lengths
    over 127 bytes in two varint bytes; the serialised response is byte for byte protobuf's."""
    outcomes = np.random.default_rng(n + k).integers(low, 2 if low == -1 else 128, size=(n, k)).astype(np.int8)
    parsed = pb.SupportSet()
    parsed.MergeFromString(outcomes_wire(outcomes))
    want = _by_messages(outcomes)
    assert parsed == want
    assert parsed.SerializeToString() == want.SerializeToString()


def test_outcomes_wire_reads_a_strided_view_and_appends_to_a_filled_support_set():
    capability = np.random.default_rng(1).integers(-1, 2, size=(6, 50)).astype(np.int8)
    outcomes = capability[[4, 0, 2]][:, ::3].T  # |I| × K, not C-contiguous
    wire = pb.SupportSet(rows=[1, 2], ids=["a", "b"])
    wire.MergeFromString(outcomes_wire(outcomes))
    assert list(wire.rows) == [1, 2] and list(wire.ids) == ["a", "b"]
    assert [list(o.values) for o in wire.outcomes] == outcomes.tolist()


def test_outcomes_wire_refuses_rows_too_long_for_a_two_byte_length():
    with pytest.raises(ValueError, match="two-byte length"):
        outcomes_wire(np.full((1, 1700), -1, dtype=np.int8))
