"""Why an embedder failed: one base class, one subclass per kind of failure.

Callers that only need to know *that* embedding failed catch ``EmbedderError``; those that act on the
cause (the service maps a timeout to DEADLINE_EXCEEDED and the rest to UNAVAILABLE) catch a subclass or
read ``kind``. Messages name the URL and, for a bad response, the field (``$.data[3].embedding``).

Bad *input* is not an ``EmbedderError``: a non-string text is a ``TypeError`` from the caller's side.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from smcs.errors import SmcsError

ErrorKind = Literal[
    "setup", "connection", "timeout", "rate_limited", "auth", "bad_request", "server_error", "malformed_response"
]


class EmbedderError(SmcsError):
    """An embedder could not produce vectors; ``kind`` says why, ``url`` is the endpoint (None if local)."""

    kind: ClassVar[ErrorKind]

    def __init__(self, message: str, *, url: str | None = None) -> None:
        """``message`` says what happened (naming the URL and the field where there is one)."""
        super().__init__(message)
        self.url = url


class EmbedderSetupError(EmbedderError):
    """The embedder cannot be built: model files missing, an unset API-key variable, a bad setting."""

    kind = "setup"


class EmbedderConnectionError(EmbedderError):
    """The endpoint could not be reached (refused, reset, DNS), on every attempt."""

    kind = "connection"


class EmbedderTimeout(EmbedderError):
    """An attempt took longer than the configured timeout."""

    kind = "timeout"


class EmbedderRateLimited(EmbedderError):
    """The endpoint kept answering 429; ``retry_after`` is its last ``Retry-After`` in seconds, if any."""

    kind = "rate_limited"

    def __init__(self, message: str, *, url: str | None = None, retry_after: float | None = None) -> None:
        """As ``EmbedderError``, plus the server's last ``Retry-After`` (seconds)."""
        super().__init__(message, url=url)
        self.retry_after = retry_after


class EmbedderAuthError(EmbedderError):
    """The endpoint refused the credentials (401 or 403)."""

    kind = "auth"


class EmbedderRequestError(EmbedderError):
    """The endpoint refused the request itself (another 4xx: unknown model, input too long, ...)."""

    kind = "bad_request"

    def __init__(self, message: str, *, url: str | None = None, status: int) -> None:
        """As ``EmbedderError``, plus the HTTP status."""
        super().__init__(message, url=url)
        self.status = status


class EmbedderServerError(EmbedderError):
    """The endpoint kept failing with 5xx; ``status`` is the last one."""

    kind = "server_error"

    def __init__(self, message: str, *, url: str | None = None, status: int) -> None:
        """As ``EmbedderError``, plus the last HTTP status."""
        super().__init__(message, url=url)
        self.status = status


class EmbedderMalformedResponse(EmbedderError):
    """The endpoint answered 2xx with something that is not a valid embeddings response.

    Not JSON, a missing or mistyped field, the wrong number of vectors, indices that are not a
    permutation, a dimension other than the expected one, a zero or non-finite vector, or a body cut
    short. The message names the field.
    """

    kind = "malformed_response"
