"""The bank's two errors: bad input to an operation, and a directory that is not a valid bank."""

from __future__ import annotations

from ..errors import InputError, SmcsError


class BankError(InputError):
    """Bad input to a bank operation; the message names the offending field."""


class BankFormatError(SmcsError):
    """The directory is not a valid bank (missing, truncated or mismatched file); the message names the file."""
