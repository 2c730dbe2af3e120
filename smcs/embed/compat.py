"""Whether an embedder may query a bank: same embedder id and dimension as the bank was built with,
and a query-text rule this code knows.

Cosine similarity between vectors of two different models means nothing, and an unequal dimension
would fail deep inside a kernel; both are caught here, once, when a bank and an embedder meet (at
start-up and on every bank reload). The bank's query-text rule is applied to queries as they are
embedded (``smcs.core.query_text``), so only a rule this code does not know (a bank from a newer smcs)
is refused.
"""

from __future__ import annotations

from smcs.bank import Bank, EmbedderInfo
from smcs.core.query_text import RULES
from smcs.errors import InputError

UNSPECIFIED = "unspecified"
"""The embedder id of a bank created without one (``Bank.create(embedder=None)``): any id is accepted."""


def check_compatible(embedder: EmbedderInfo, bank: Bank | EmbedderInfo, *, bank_name: str | None = None) -> None:
    """``ValueError`` unless vectors from ``embedder`` can query ``bank``.

    ``bank`` is a ``Bank`` or the ``EmbedderInfo`` of its manifest; ``bank_name`` names it in the message
    (default: the bank's path and version). The dimensions must be equal, and so must the ids unless
    the bank's id is ``"unspecified"``; the bank's ``query_text`` rule must be one of ``RULES``.
    """
    built = bank.manifest.embedder if isinstance(bank, Bank) else bank
    if bank_name is None and isinstance(bank, Bank):
        bank_name = f"{bank.path} ({bank.version})"
    subject = "the bank" if bank_name is None else f"bank {bank_name}"
    if built.query_text not in RULES:
        raise InputError(
            f"{subject} embeds its questions under query-text rule {built.query_text!r}, which this smcs does not "
            f"know (it knows: {', '.join(RULES)}); upgrade smcs, or rebuild the bank's embeddings"
        )
    if built.dim == embedder.dim and built.id in (embedder.id, UNSPECIFIED):
        return
    raise InputError(
        f"{subject} was built with embedder {built.id!r} (dim {built.dim}) but the configured embedder is "
        f"{embedder.id!r} (dim {embedder.dim}); configure the embedder the bank was built with, or rebuild "
        "the bank's embeddings with the configured one"
    )
