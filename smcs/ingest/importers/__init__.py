"""Bank importers: published capability data (RouterDC, RouterBench, the SMCS unified bank, EmbedLLM)
read into an ``ImportedBank``, then embedded and written as a bank.

    from smcs.ingest.importers import import_bank, read_import, summary
    from smcs.embed import EmbedderConfig, make_embedder

    imported = read_import("routerdc", "mmlu_train.json", rule="auto")
    bank = import_bank(imported, "banks/mmlu", make_embedder(EmbedderConfig()))
    print(summary(bank))

One module per format (``routerdc``, ``routerbench``, ``union``, ``embedllm``; each one's docstring gives
its layout and options); what they share is in ``records``. Malformed input is a ``ValueError`` whose
message starts with the location (``PATH:LINE`` for CSV and JSON Lines, ``PATH: item I`` for JSON arrays)
and names the field.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from smcs.ingest.importers.build import Progress, embed_texts, import_bank, summary
from smcs.ingest.importers.embedllm import read_embedllm
from smcs.ingest.importers.records import ImportedBank, merge
from smcs.ingest.importers.routerbench import read_routerbench
from smcs.ingest.importers.routerdc import RULES, read_routerdc
from smcs.ingest.importers.union import read_union
from smcs.errors import InputError

_READERS: dict[str, Callable[..., ImportedBank]] = {
    "routerdc": read_routerdc,
    "routerbench": read_routerbench,
    "union": read_union,
    "embedllm": read_embedllm,
}

FORMATS: tuple[str, ...] = tuple(_READERS)
"""The formats ``read_import`` reads: ``("routerdc", "routerbench", "union", "embedllm")``."""

__all__ = [
    "FORMATS",
    "RULES",
    "ImportedBank",
    "Progress",
    "embed_texts",
    "import_bank",
    "options_of",
    "read_import",
    "read_imports",
    "summary",
]


def options_of(format: str) -> tuple[str, ...]:
    """The keyword options ``read_import`` takes for ``format`` (``limit`` is taken by every format)."""
    reader = _reader(format)
    own = [p.name for p in inspect.signature(reader).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return (*own, "limit")


def read_import(format: str, path: str | Path, **options: object) -> ImportedBank:
    """Read the file ``path`` in ``format`` (one of ``FORMATS``).

    Options: ``rule`` (routerdc: ``"auto"``, ``"positive"`` or ``"half"``), ``embedder_id`` (union: the
    embedder that made the stored embeddings), and for every format ``limit`` (keep only the first N
    questions). ``ValueError`` for an unknown format or option, or malformed input (located and named).
    """
    return read_imports(format, [path], **options)


def read_imports(format: str, paths: Sequence[str | Path], **options: object) -> ImportedBank:
    """Read several files in ``format`` into one ``ImportedBank``, questions in file order.

    Models are unioned (a model that a file lacks is -1 on that file's questions); a question id found in
    two files is an error. ``limit`` applies to the whole. Options as for ``read_import``.
    """
    if not paths:
        raise InputError("no file to import")
    limit = options.pop("limit", None)
    allowed = options_of(format)
    for name in options:
        if name not in allowed:
            raise InputError(f"format {format!r} takes no option {name!r} (its options: {', '.join(allowed)})")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be an integer >= 1, got {limit!r}")
    reader = _reader(format)
    parts = [reader(Path(path), **options) for path in paths]
    imported = merge(parts, [str(path) for path in paths])
    return imported if limit is None else _first(imported, limit)


def _reader(format: str) -> Callable[..., ImportedBank]:
    try:
        return _READERS[format]
    except KeyError:
        raise InputError(f"unknown import format {format!r}; the formats are: {', '.join(FORMATS)}") from None


def _first(imported: ImportedBank, limit: int) -> ImportedBank:
    """``imported`` cut to its first ``limit`` questions (all of its models kept)."""
    return ImportedBank(
        imported.questions[:limit],
        imported.models,
        np.ascontiguousarray(imported.outcomes[:, :limit]),
        None if imported.embeddings is None else imported.embeddings[:limit],
        imported.embedder_id,
        imported.repeats,
    )
