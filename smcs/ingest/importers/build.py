"""From an ``ImportedBank`` to a bank on disk: embed the questions (or reuse stored vectors), then create."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from smcs.bank.distinctness import bank_distinctness
from smcs.bank.store import Bank
from smcs.ingest.importers.records import ImportedBank
from smcs.errors import InputError

Progress = Callable[[int, int], None]
"""Called with (questions embedded so far, questions to embed): once before the first batch, then after each."""


def import_bank(
    imported: ImportedBank,
    out: str | Path,
    embedder: Any,
    *,
    batch_size: int = 256,
    progress: Progress | None = None,
    query_text: str | None = None,
) -> Bank:
    """Create the bank at ``out`` (a new or empty directory) from ``imported``, embedded by ``embedder``.

    ``embedder`` is a blocking ``Embedder`` or an ``AsyncEmbedder``. Its vectors are used unless the import
    carries stored embeddings made by the same embedder (``imported.embedder_id == embedder.info.id``),
    which are then reused as they are (and recorded as made from the raw texts). Otherwise each question
    is embedded under the query-text rule ``query_text`` (None: ``DEFAULT_QUERY_TEXT_RULE``), which the
    manifest records; the questions keep their full text. Texts are embedded ``batch_size`` at a time,
    with ``progress`` called after each batch. ``out`` is checked before any embedding is done, with the
    error ``Bank.create`` would give.
    """
    from smcs.core.query_text import DEFAULT_QUERY_TEXT_RULE, RAW, query_texts  # the core depends on the bank
    from smcs.embed import as_sync  # here, so that reading files does not import the embedding stack

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    info = embedder.info
    root = Path(out).absolute()
    Bank.require_creatable(root)  # fail now rather than after minutes of embedding
    if imported.embeddings is not None and imported.embedder_id == info.id:
        if imported.embeddings.shape[1] != info.dim:
            raise InputError(
                f"the stored embeddings have {imported.embeddings.shape[1]} dimensions, but embedder {info.id!r} makes {info.dim}"
            )
        vectors, rule = imported.embeddings, RAW
    else:
        rule = DEFAULT_QUERY_TEXT_RULE if query_text is None else query_text
        texts = query_texts([q.text for q in imported.questions], rule)
        vectors = embed_texts(texts, as_sync(embedder), info.dim, batch_size, progress)
    return Bank.create(
        root, embeddings=vectors, capability=imported.outcomes, questions=imported.questions, models=imported.models,
        embedder=msgspec.structs.replace(info, query_text=rule),
    )


def embed_texts(texts: Sequence[str], embedder: Any, dim: int, batch_size: int, progress: Progress | None) -> np.ndarray:
    """float32 ``[len(texts), dim]``: ``texts`` embedded by the blocking ``embedder``, ``batch_size`` at a time."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    if progress is not None:
        progress(0, len(texts))
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        rows = np.asarray(embedder.embed(batch))
        if rows.shape != (len(batch), dim):
            raise ValueError(f"the embedder returned shape {rows.shape} for {len(batch)} texts; expected {(len(batch), dim)}")
        out[start : start + len(batch)] = rows
        if progress is not None:
            progress(start + len(batch), len(texts))
    return out


def summary(bank_or_imported: Bank | ImportedBank) -> str:
    """A few lines for people: where and what (counts, sources, embedder and query-text rule, version, the
    distinctness of a bank's embeddings, the repeated rows an import merged) and a per-model table of
    accuracy over the evaluated questions, how many were evaluated, and the mean cost where known."""
    from smcs.core import model_accuracy  # the core depends on the bank, not the other way round

    item = bank_or_imported
    if isinstance(item, Bank):
        names, capability, questions = list(item.model_names), np.asarray(item.capability), item.questions
        embedder = item.manifest.embedder
        lines = [
            f"bank {item.path}  version {item.version}",
            f"questions {item.n_questions}  models {item.n_models}  embedder {embedder.id} (dim {item.dim}, "
            f"query text {embedder.query_text})",
            bank_distinctness(item).line(),
        ]
    else:
        names, capability, questions = [m.name for m in item.models], item.outcomes, item.questions
        stored = "none" if item.embeddings is None else f"{item.embeddings.shape[1]}-d by {item.embedder_id or 'an unnamed embedder'}"
        lines = [f"questions {len(questions)}  models {len(names)}  stored embeddings {stored}  repeated rows merged {item.repeats}"]
    sources = Counter(q.source for q in questions).most_common()
    shown = ", ".join(f"{source or '(none)'} {count}" for source, count in sources[:8])
    lines.append(f"sources {shown}{f', … ({len(sources) - 8} more)' if len(sources) > 8 else ''}")
    accuracy, evaluated = model_accuracy(capability)
    costs = _mean_costs(questions, names)
    width = max((len(name) for name in names), default=5)
    lines.append(f"{'model':<{width}}  accuracy  evaluated" + ("  mean cost" if costs else ""))
    for name, acc, count in zip(names, accuracy, evaluated, strict=True):
        cost = f"  {costs[name]:9.3g}" if name in costs else ""
        lines.append(f"{name:<{width}}  {acc:8.3f}  {count:9d}{cost}")
    return "\n".join(lines)


def _mean_costs(questions: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
    """Mean of ``metadata["cost"][model]`` over the questions that give one, per model that has any."""
    totals: dict[str, list[float]] = {}
    for q in questions:
        for model, cost in q.metadata.get("cost", {}).items():
            totals.setdefault(model, []).append(cost)
    return {name: float(np.mean(totals[name])) for name in names if name in totals}
