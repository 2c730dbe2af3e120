"""The bundled default bank and its recipe, installed as ``smcs.bundled`` (see README.md here).

``BANK`` is the bank directory, ``POOL`` the configuration of the demonstration pool that answered its
questions (and answers ``smcs ask`` when no other configuration is given), ``QUESTIONS`` the questions
file it was built from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smcs.config import Config

DIRECTORY = Path(__file__).resolve().parent
BANK = DIRECTORY / "default"
POOL = DIRECTORY / "pool.toml"
QUESTIONS = DIRECTORY / "questions.jsonl"


def config_and_bank(config_path: str | os.PathLike[str] | None, bank_path: Path | None) -> tuple[Config, Path]:
    """The configuration and bank a command uses: ``config_path`` (None: the bundled pool when the
    bundled bank is served, else the defaults) and ``bank_path`` (None: the configuration's ``[bank]``,
    else the bundled bank)."""
    from smcs.config import load_config  # here: smcs.config imports the backends and the embedders

    if config_path is not None:
        config = load_config(config_path)
    elif bank_path is None:
        config = load_config(POOL)
    else:
        config = load_config()
    if bank_path is None:
        bank_path = Path(config.bank.path) if config.bank is not None else BANK
    return config, bank_path
