"""JSON Lines input files: one typed record a line, errors naming ``FILE:LINE`` and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec

from .errors import InputError

T = TypeVar("T")


def decode_lines(data: bytes, kind: type[T], path: str | Path) -> list[tuple[int, T]]:
    """Each non-blank line of ``data`` decoded as ``kind``, with its 1-based line number; ``ValueError``
    ``"PATH:LINE: why"`` on the first bad line, and when there is no line at all."""
    decoder = msgspec.json.Decoder(kind)
    records = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            records.append((number, decoder.decode(raw)))
        except msgspec.MsgspecError as exc:
            raise InputError(f"{path}:{number}: {exc}") from None
    if not records:
        raise InputError(f"{path}: no records (the file has no non-blank line)")
    return records
