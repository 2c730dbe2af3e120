"""The root of every error smcs raises on purpose: ``SmcsError``.

Each layer's errors derive from it (``BankError``, ``BankFormatError``, ``ConfigError``, ``EmbedderError``,
``BackendError``, ``StrategyError``, ``QuorumNotMet``, the service's ``RequestError``, …), so one
``except SmcsError`` tells an error smcs reports apart from a bug. The kinds keep the builtin base they
had (``BankError`` is still a ``ValueError``), so code catching those goes on working.
"""

from __future__ import annotations


class SmcsError(Exception):
    """An error smcs raises on purpose, with a message that says what went wrong and where."""
