"""The one check of a question's text, shared by every path that takes one: the service's requests and the
command line's in-process ``smcs route`` and ``smcs ask``, so that what a server refuses is refused here too.
"""

from __future__ import annotations

from ..errors import InputError

MAX_QUESTION_CHARS = 32768
"""The default limit on a question's length in characters (the service's ``[server] max_question_chars``)."""


def check_question(text: str, field: str = "question", max_chars: int | None = MAX_QUESTION_CHARS) -> str:
    """``text`` if it is a question smcs accepts: a string that is not empty or white space only, of at most
    ``max_chars`` characters (None: no limit); else ``InputError`` naming ``field``."""
    if not isinstance(text, str):
        raise InputError(f"{field} must be text, got {type(text).__name__}")
    if not text.strip():
        raise InputError(f"{field} is empty")  # white space only counts as empty
    if max_chars is not None and len(text) > max_chars:
        raise InputError(f"{field} has {len(text)} characters; the limit is {max_chars}")
    return text
