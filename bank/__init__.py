"""The bundled default bank and its recipe, installed as ``smcs.bundled`` (see README.md here).

``BANK`` is the bank directory, ``POOL`` the configuration of the demonstration pool that answered its
questions (and answers ``smcs ask`` when no other configuration is given), ``QUESTIONS`` the questions
file it was built from.
"""

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent
BANK = DIRECTORY / "default"
POOL = DIRECTORY / "pool.toml"
QUESTIONS = DIRECTORY / "questions.jsonl"
