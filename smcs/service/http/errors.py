"""The gateway's errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the
matching HTTP status, and which status each error smcs raises gets.

======  =========================  ==============================================================
status  ``type``                   when
======  =========================  ==============================================================
400     ``invalid_request_error``  the body is not JSON, a field has the wrong type or value
                                   (``param`` names it), the router or a strategy refuses the
                                   request's policy, models or options, the chosen model's server
                                   says the prompt does not fit (``context_length_exceeded``)
401     ``authentication_error``   bearer token missing, invalid or expired (the gRPC tokens)
404     ``not_found_error``        unknown model, unknown path
405     ``invalid_request_error``  a path asked with the wrong method
413     ``invalid_request_error``  a body larger than ``[server] max_message_bytes``
429     ``rate_limit_error``       over the admission limit (``Retry-After``), or the chosen model's
                                   server said 429 (its ``Retry-After`` passed on)
500     ``server_error``           a bug: logged with its traceback, never detailed to the caller
502     ``upstream_error``         the chosen model's server failed (``code``: the backend error kind)
503     ``service_unavailable``    the bank is still loading, too few referencers (or no call a
                                   strategy depends on) answered, no model of the bank has a
                                   backend, no embedder can query the bank, the embedder failed
504     ``timeout_error``          past the request's deadline, the chosen model or the embedder
                                   timed out
======  =========================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web

from ...errors import SmcsError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}
"""The OpenAI error ``type`` of each status the gateway answers with."""


class ApiError(SmcsError):
    """A request the gateway refuses or could not serve: the HTTP ``status``, a message, the request field
    it is about (``param``, None when none), a machine-readable ``code`` and extra response ``headers``."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, object]:
        """The error object, as OpenAI writes it."""
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "server_error"), "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        """The JSON response of this error."""
        return web.Response(
            status=self.status, body=msgspec.json.encode(self.payload()), content_type="application/json", headers=self.headers
        )


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    """A 400 about ``param``."""
    return ApiError(400, message, param=param, code=code)
