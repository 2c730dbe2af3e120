"""Protobuf ⇄ ``RouteDecision``: ``route_response`` is a decision's wire form (server side) and
``decision_from_response`` turns it back into the ``RouteDecision`` Struct the in-process router returns
(client side), so callers see one type whichever way they route."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import numpy as np

from .._proto import router_pb2 as pb
from ..bank import Bank
from ..core import RouteDecision
from .enums import SCORER
from .packed import packed_floats


def route_response(decision: RouteDecision, bank: Bank, ids: np.ndarray, *, debug: bool, support: bool = True) -> pb.RouteResponse:
    """The wire form of ``decision``: with ``support`` (or ``debug``), its support set (``ids``: the bank's
    question ids, an object array, indexed by the support rows); with ``debug``, also the support
    questions' text, the referencers' outcomes on them and every model's probability."""
    response = pb.RouteResponse(
        referencers=[
            pb.Referencer(model=m, vote=v, probability=p, expected_cost=c)
            for m, v, p, c in zip(decision.referencers, decision.votes, decision.probabilities, decision.costs, strict=True)
        ],
        aggregator=decision.aggregator,
        subsets=[pb.Subset(models=s) for s in decision.subsets],
        seed=decision.seed,
        bank_version=decision.bank_version,
        scorer=SCORER.to_wire(decision.scorer),
        out_of_bank=decision.out_of_bank,
    )
    if decision.k_clamped_from is not None:
        response.k_clamped_from = decision.k_clamped_from
    response.drop_probabilities.extend(decision.drop_probabilities)
    response.duplicate_subsets = decision.duplicate_subsets
    if decision.expected_cost is not None:
        response.expected_cost = decision.expected_cost
    if decision.aggregation_cost is not None:
        response.aggregation_cost = decision.aggregation_cost
    response.plan_notes.extend(decision.plan_notes)
    if not (support or debug):
        return response
    _fill_support(response.support, decision, bank, ids, debug=debug)
    if debug:
        response.model_probabilities.extend(
            [pb.ModelProbability(model=m, probability=p) for m, p in zip(bank.model_names, decision.model_probabilities, strict=True)]
        )
        response.model_costs.extend(
            [pb.ModelCost(model=m, expected_cost=c) for m, c in zip(bank.model_names, decision.model_costs, strict=True)]
        )
    return response


def _fill_support(wire: pb.SupportSet, decision: RouteDecision, bank: Bank, ids: np.ndarray, *, debug: bool) -> None:
    """Fill ``wire`` with ``decision``'s support set from its arrays (a router's decision carries them; a
    list is turned into one): the similarities as packed wire bytes (``packed_floats``: no Python float
    per row); the rows' one ``tolist`` fills the rows (and with ``debug`` picks the texts), the rows'
    array gathers the ids (and with ``debug`` the referencers' outcomes)."""
    rows = np.asarray(decision.support_rows, dtype=np.int64)  # a router's decision: its array, no copy
    row_list = rows.tolist()
    wire.rows.extend(row_list)
    wire.MergeFromString(packed_floats(_SIMILARITIES_FIELD, np.asarray(decision.support_similarities)))
    wire.ids.extend(ids[rows].tolist())
    if debug:
        wire.texts.extend(map(_TEXT, map(bank.questions.__getitem__, row_list)))
        models = np.array([bank.model_index(name) for name in decision.referencers], dtype=np.intp)
        wire.MergeFromString(outcomes_wire(np.asarray(bank.capability)[np.ix_(models, rows)].T))


_TEXT = attrgetter("text")
_SIMILARITIES_FIELD = pb.SupportSet.DESCRIPTOR.fields_by_name["similarities"].number
_OUTCOMES_TAG = pb.SupportSet.DESCRIPTOR.fields_by_name["outcomes"].number << 3 | 2
_VALUES_TAG = pb.ModelOutcomes.DESCRIPTOR.fields_by_name["values"].number << 3 | 2
_VARINT_BYTES = 10
"""Bytes of a negative int32 on the wire (sign-extended to 64 bits, 7 bits a byte)."""
_MAX_LENGTH = 2**14 - 1
"""The longest ``ModelOutcomes`` ``outcomes_wire`` encodes: its lengths take at most two varint bytes."""


def outcomes_wire(outcomes: np.ndarray) -> bytes:
    """``SupportSet.outcomes`` in the protobuf wire format, one ``ModelOutcomes`` per row of the |I| × K int8
    ``outcomes``, for ``SupportSet.MergeFromString``: written by numpy into one buffer (each value's varint
    at its offset), not built as |I| message objects."""
    values = np.ascontiguousarray(outcomes, dtype=np.int8)
    n, k = values.shape
    negative = values < 0
    widths = np.where(negative, _VARINT_BYTES, 1)  # an int8 ≥ 0 takes one byte
    payload_len = widths.sum(axis=1)
    message_len = 1 + _varint_len(payload_len) + payload_len
    entry_len = 1 + _varint_len(message_len) + message_len
    if n and int(message_len.max()) > _MAX_LENGTH:
        raise ValueError(f"{k} outcomes a row do not fit a two-byte length")
    starts = np.cumsum(entry_len) - entry_len
    out = np.full(int(entry_len.sum()), 0xFF, dtype=np.uint8)  # the middle bytes of a negative value's varint
    inner = _put_varint(out, _put_varint(out, starts, _OUTCOMES_TAG, message_len), _VALUES_TAG, payload_len)
    value_starts = inner[:, None] + np.cumsum(widths, axis=1) - widths
    out[value_starts] = values.view(np.uint8)  # ≥ 0: the value's byte; < 0: its low 7 bits | 0x80
    out[value_starts[negative] + _VARINT_BYTES - 1] = 0x01  # the last byte of a negative value: the sign bit
    return out.tobytes()


def _varint_len(values: np.ndarray) -> np.ndarray:
    """Bytes of the varints of ``values`` (each < 2**14)."""
    return 1 + (values > 0x7F)


def _put_varint(out: np.ndarray, at: np.ndarray, tag: int, lengths: np.ndarray) -> np.ndarray:
    """Write ``tag`` then the varint of ``lengths`` (each < 2**14) at each offset ``at`` of ``out``; the
    offsets right after them."""
    long = lengths > 0x7F
    out[at] = tag
    out[at + 1] = (lengths & 0x7F) | (long << 7)
    out[(at + 2)[long]] = (lengths >> 7)[long]
    return at + 2 + long


def decision_from_response(response: pb.RouteResponse) -> RouteDecision:
    """The ``RouteDecision`` a RouteResponse carries (client side)."""
    support = response.support
    return RouteDecision(
        referencers=[r.model for r in response.referencers],
        votes=[r.vote for r in response.referencers],
        aggregator=response.aggregator,
        support_rows=list(support.rows),
        support_similarities=list(support.similarities),
        subsets=[list(s.models) for s in response.subsets],
        seed=response.seed,
        bank_version=response.bank_version,
        support_ids=list(support.ids),
        support_texts=list(support.texts),
        support_outcomes=[list(o.values) for o in support.outcomes],
        scorer=SCORER.from_wire(response.scorer) or "",
        probabilities=[r.probability for r in response.referencers],
        model_probabilities=[m.probability for m in response.model_probabilities],
        out_of_bank=response.out_of_bank,
        k_clamped_from=optional_field(response, "k_clamped_from"),
        drop_probabilities=list(response.drop_probabilities),
        duplicate_subsets=response.duplicate_subsets,
        costs=[optional_field(r, "expected_cost") for r in response.referencers],
        model_costs=[optional_field(m, "expected_cost") for m in response.model_costs],
        aggregation_cost=optional_field(response, "aggregation_cost"),
        expected_cost=optional_field(response, "expected_cost"),
        plan_notes=list(response.plan_notes),
    )


def optional_field(message: object, name: str) -> Any:
    """The value of ``message``'s optional field ``name``, None when unset."""
    return getattr(message, name) if message.HasField(name) else None  # type: ignore[attr-defined]
