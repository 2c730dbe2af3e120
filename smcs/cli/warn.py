"""Warnings the command line prints about a bank, on stderr, after what it was asked to print."""

from __future__ import annotations

import sys
from typing import TextIO

from smcs.bank import Bank
from smcs.bank.distinctness import bank_distinctness


def warn_if_degenerate(bank: Bank, stream: TextIO | None = None) -> None:
    """Print ``smcs: warning: ...`` on ``stream`` (default stderr) when ``bank``'s embeddings are degenerate."""
    warning = bank_distinctness(bank).warning()
    if warning is not None:
        print(f"smcs: warning: bank {bank.path} ({bank.version}): {warning}", file=sys.stderr if stream is None else stream)
