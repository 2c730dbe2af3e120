"""The unified question bank: versioned on disk, memory-mapped in memory (docs/design.md, The bank).

``Bank.open(path)`` gives an immutable snapshot in O(1) of the bank size; ``Bank.create`` and the write
methods commit new versions atomically. See ``smcs.bank.store`` for the layout and the guarantees.
"""

from .schema import SCHEMA_VERSION, EmbedderInfo, FittedScorer, Head, Manifest, ModelInfo, Platt, Question, ScorerScore
from .store import Bank, BankError, BankFormatError

__all__ = [
    "SCHEMA_VERSION",
    "Bank",
    "BankError",
    "BankFormatError",
    "EmbedderInfo",
    "FittedScorer",
    "Head",
    "Manifest",
    "ModelInfo",
    "Platt",
    "Question",
    "ScorerScore",
]
