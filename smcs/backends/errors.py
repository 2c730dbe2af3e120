"""Why a model backend failed: one base class, one subclass per kind of failure.

Callers that only need to know *that* a model failed catch ``BackendError``; those that act on the cause
(the pipeline leaves a failed referencer out, the service maps a timeout to DEADLINE_EXCEEDED) catch a
subclass or read ``kind``. Messages name the model, the URL and, for a bad response, the field
(``$.choices[0].logprobs``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from smcs.errors import SmcsError

ErrorKind = Literal[
    "setup",
    "connection",
    "timeout",
    "rate_limited",
    "context_overflow",
    "auth",
    "bad_request",
    "server_error",
    "malformed_response",
]


class BackendError(SmcsError):
    """A model could not answer; ``kind`` says why, ``model`` is its name, ``url`` the endpoint (None if local)."""

    kind: ClassVar[ErrorKind]

    def __init__(self, message: str, *, model: str, url: str | None = None) -> None:
        """``message`` says what happened (naming the URL and the field where there is one)."""
        super().__init__(message)
        self.model = model
        self.url = url


class BackendSetupError(BackendError):
    """The backend cannot be built: a missing model file, an unset API-key variable, a missing extra."""

    kind = "setup"


class BackendConnectionError(BackendError):
    """No base URL could be reached (refused, reset, DNS), on every attempt."""

    kind = "connection"


class BackendTimeout(BackendError):
    """An attempt took longer than the configured timeout."""

    kind = "timeout"


class BackendRateLimited(BackendError):
    """The server kept answering 429; ``retry_after`` is its last ``Retry-After`` in seconds, if any."""

    kind = "rate_limited"

    def __init__(self, message: str, *, model: str, url: str | None = None, retry_after: float | None = None) -> None:
        """As ``BackendError``, plus the server's last ``Retry-After`` (seconds)."""
        super().__init__(message, model=model, url=url)
        self.retry_after = retry_after


class BackendContextOverflow(BackendError):
    """The prompt (plus ``max_tokens``) does not fit the model's context window."""

    kind = "context_overflow"


class BackendAuthError(BackendError):
    """The server refused the credentials (401 or 403)."""

    kind = "auth"


class BackendRequestError(BackendError):
    """The server refused the request itself (another 4xx: unknown model, bad parameter, ...)."""

    kind = "bad_request"

    def __init__(self, message: str, *, model: str, url: str | None = None, status: int) -> None:
        """As ``BackendError``, plus the HTTP status."""
        super().__init__(message, model=model, url=url)
        self.status = status


class BackendServerError(BackendError):
    """The server kept failing with 5xx; ``status`` is the last one."""

    kind = "server_error"

    def __init__(self, message: str, *, model: str, url: str | None = None, status: int) -> None:
        """As ``BackendError``, plus the last HTTP status."""
        super().__init__(message, model=model, url=url)
        self.status = status


class BackendMalformedResponse(BackendError):
    """The server answered 2xx with something that is not a valid chat completion (not JSON, a missing
    or mistyped field, a body cut short); the message names the field."""

    kind = "malformed_response"
