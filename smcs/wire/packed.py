"""Protobuf packed repeated floats written from numpy arrays: the wire bytes in one ``tobytes``, where
filling the field through protobuf's Python API makes a Python float per value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._proto import router_pb2 as pb
from ..errors import InputError

_EMBEDDING_VALUES = pb.Embedding.DESCRIPTOR.fields_by_name["values"].number


def packed_floats(field: int, values: np.ndarray) -> bytes:
    """The packed repeated ``float`` field ``field`` holding ``values``, in protobuf wire bytes (the float32
    values little-endian, as they are in memory here). Empty: no bytes."""
    payload = np.asarray(values, dtype="<f4").tobytes()
    return _length_delimited(field, payload) if payload else b""


def _length_delimited(field: int, payload: bytes) -> bytes:
    """Field ``field`` with wire type 2 (length-delimited) holding ``payload``."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    """The protobuf varint of ``value`` ≥ 0."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def embedding_message(values: Sequence[float] | np.ndarray) -> pb.Embedding:
    """An ``Embedding`` holding ``values`` as float32, built from its packed bytes."""
    message = pb.Embedding()
    fill_embedding(message, values)
    return message


def fill_embedding(message: pb.Embedding, values: Sequence[float] | np.ndarray) -> None:
    """Set the empty ``Embedding`` ``message`` (a field of a request, marked present even for no values)
    to ``values`` as float32."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1:
        raise InputError(f"an embedding is a sequence of numbers; got an array of shape {array.shape}")
    message.SetInParent()
    message.MergeFromString(packed_floats(_EMBEDDING_VALUES, array))
