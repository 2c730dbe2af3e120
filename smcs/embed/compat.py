"""Whether an embedder may query a bank: same embedder id and dimension as the bank was built with.

Cosine similarity between vectors of two different models means nothing, and an unequal dimension
would fail deep inside a kernel; both are caught here, once, when a bank and an embedder meet (at
start-up and on every bank reload).
"""

from __future__ import annotations

from smcs.bank import Bank, EmbedderInfo

UNSPECIFIED = "unspecified"
"""The embedder id of a bank created without one (``Bank.create(embedder=None)``): any id is accepted."""


def check_compatible(embedder: EmbedderInfo, bank: Bank | EmbedderInfo, *, bank_name: str | None = None) -> None:
    """``ValueError`` unless vectors from ``embedder`` can query ``bank``.

    ``bank`` is a ``Bank`` or the ``EmbedderInfo`` of its manifest; ``bank_name`` names it in the message
    (default: the bank's path and version). The dimensions must be equal, and so must the ids unless
    the bank's id is ``"unspecified"``.
    """
    built = bank.manifest.embedder if isinstance(bank, Bank) else bank
    if built.dim == embedder.dim and built.id in (embedder.id, UNSPECIFIED):
        return
    if bank_name is None and isinstance(bank, Bank):
        bank_name = f"{bank.path} ({bank.version})"
    subject = "the bank" if bank_name is None else f"bank {bank_name}"
    raise ValueError(
        f"{subject} was built with embedder {built.id!r} (dim {built.dim}) but the configured embedder is "
        f"{embedder.id!r} (dim {embedder.dim}); configure the embedder the bank was built with, or rebuild "
        "the bank's embeddings with the configured one"
    )
