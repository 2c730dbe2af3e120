"""``smcs.wire.decision``'s array encoders against protobuf's own message building, and the support set
they put in a Route response."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from smcs._proto import router_pb2 as pb
from smcs.bank import Bank, ModelInfo, Question
from smcs.core import Policy, Router
from smcs.wire.decision import outcomes_wire, route_response
from smcs.errors import InputError
from smcs.wire.packed import embedding_message, fill_embedding, packed_floats


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


@pytest.mark.parametrize("n", [0, 1, 31, 32, 4095, 4096, 70_000], ids=lambda n: f"n={n}")
def test_packed_floats_parse_to_the_field_protobuf_builds(n):
    """One- to three-byte lengths, the empty field (no bytes, as proto3 writes it), and float32 values whose
    bits must survive: negative zero, subnormals, the extremes."""
    values = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    special = np.array([-0.0, 1e-45, -3.4028235e38, 3.4028235e38, 1.1754942e-38], dtype=np.float32)
    values[: min(n, special.size)] = special[: min(n, special.size)]
    parsed = pb.SupportSet()
    parsed.MergeFromString(packed_floats(pb.SupportSet.DESCRIPTOR.fields_by_name["similarities"].number, values))
    want = pb.SupportSet(similarities=values.tolist())
    assert parsed.SerializeToString() == want.SerializeToString()
    np.testing.assert_array_equal(np.array(parsed.similarities, dtype=np.float32).view(np.uint32), values.view(np.uint32))
    assert packed_floats(3, values[:0]) == b""


@pytest.mark.parametrize("as_lists", [False, True], ids=["router-arrays", "lists"])
def test_route_response_support_set_is_the_decision_s_in_order(tmp_path, as_lists):
    """The support set on the wire is the decision's, most similar first, whether the decision carries the
    router's arrays or plain lists (a decision built elsewhere)."""
    rng = np.random.default_rng(5)
    embeddings = rng.standard_normal((300, 12)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    bank = Bank.create(
        tmp_path / "bank",
        embeddings=embeddings,
        capability=rng.integers(-1, 2, size=(4, 300)).astype(np.int8),
        questions=[Question(id=f"id-{i}", text=f"question {i}") for i in range(300)],
        models=[ModelInfo(name=f"m{r}") for r in range(4)],
    )
    decision = Router(bank, Policy(k=2, n_base=200, gamma=0.2)).route(embeddings[3], seed=1)
    if as_lists:
        decision = msgspec.structs.replace(
            decision, support_rows=list(decision.support_rows), support_similarities=list(decision.support_similarities)
        )
    ids = np.array([q.id for q in bank.questions], dtype=object)
    response = route_response(decision, bank, ids, debug=False, support=True)
    rows = list(decision.support_rows)
    assert len(rows) > 100 and list(response.support.rows) == rows
    assert list(response.support.ids) == [f"id-{r}" for r in rows]
    sims = np.array(response.support.similarities, dtype=np.float32)
    np.testing.assert_array_equal(sims, np.asarray(decision.support_similarities, dtype=np.float32))
    assert np.all(np.diff(sims) <= 0)


@pytest.mark.parametrize("values", [[], [0.5], np.arange(384, dtype=np.float64) / 7, [float("nan"), -0.0, 1e-45]])
def test_embedding_message_is_the_one_protobuf_builds(values):
    """The client's embeddings, written as packed bytes: the same message (and bytes) as protobuf's own
    from the float32 values, NaN and signed zero included (the server checks them, not the client)."""
    want = pb.Embedding(values=np.asarray(values, dtype=np.float32).tolist())
    got = embedding_message(values)
    assert got.SerializeToString() == want.SerializeToString()
    request = pb.RouteRequest()
    fill_embedding(request.embedding, values)
    assert request.WhichOneof("query") == "embedding"


def test_embedding_message_refuses_a_matrix():
    with pytest.raises(InputError, match=r"shape \(2, 2\)"):
        embedding_message([[1.0, 2.0], [3.0, 4.0]])
