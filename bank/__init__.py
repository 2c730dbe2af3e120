"""The bundled default bank and its recipe, installed as ``smcs.bundled`` (see README.md here).

``BANK`` is the bank directory, ``POOL`` the configuration of the demonstration pool that answered its
questions (and the configuration of ``smcs ask``, ``serve`` and ``route`` over a bank of the pool's models
when no other is given: ``config_and_bank``), ``QUESTIONS`` the questions file it was built from.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smcs.config import Config

DIRECTORY = Path(__file__).resolve().parent
BANK = DIRECTORY / "default"
POOL = DIRECTORY / "pool.toml"
QUESTIONS = DIRECTORY / "questions.jsonl"


def config_and_bank(config_path: str | os.PathLike[str] | None, bank_path: Path | None) -> tuple[Config, Path]:
    """The configuration and bank a command uses.

    With ``config_path``: that file, and ``bank_path`` else its ``[bank]`` else the bundled bank. Without
    one: the bundled bank when ``bank_path`` is None; and the configuration of the bundled pool
    (``POOL``: its members' backends, k = 3) when the bank holds any model of the pool (the bundled bank
    and copies of it), else the built-in defaults (no models, the paper's policy)."""
    from smcs.config import load_config  # here: smcs.config imports the backends and the embedders

    if config_path is not None:
        config = load_config(config_path)
        if bank_path is None:
            bank_path = Path(config.bank.path) if config.bank is not None else BANK
        return config, bank_path
    pool = load_config(POOL)
    if bank_path is None:
        return pool, BANK
    return (pool if holds_pool_models(bank_path, pool.models) else load_config()), bank_path


def holds_pool_models(bank_path: Path, pool: Collection[str]) -> bool:
    """Whether the bank at ``bank_path`` has a model named as a member of ``pool``; False when it cannot be
    opened (the command that opens it next says why)."""
    from smcs.bank import Bank
    from smcs.errors import SmcsError

    try:
        names = Bank.open(bank_path).model_names
    except (SmcsError, OSError):
        return False
    return any(name in pool for name in names)


def is_bundled_bank(bank_path: Path) -> bool:
    """Whether ``bank_path`` is the bundled bank's own directory (in the installed package)."""
    try:
        return Path(bank_path).resolve() == BANK
    except OSError:
        return False
