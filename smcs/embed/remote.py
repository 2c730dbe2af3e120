"""A remote embedder: any OpenAI-compatible ``POST /v1/embeddings`` (vLLM, TEI, llama.cpp, SGLang, OpenAI).

Request ``{"model": M, "input": [t0, t1, ...]}``; response ``{"data": [{"index": i, "embedding": [...]},
...]}``, put in input order by ``index`` (servers may answer out of order; when no item carries an
``index`` the list order is taken). Texts go in batches of at most ``batch_size``, one after another.

Each batch is one *attempt* or more. An attempt is bounded by ``timeout_s`` from sending the request to
having read the whole body. What happens on failure:

==========================================  ======================================  ==================
what the attempt ran into                   then                                    error at the end
==========================================  ======================================  ==================
cannot connect; connection dropped or body  retried                                 ``EmbedderConnectionError``
cut short before its ``Content-Length``
429                                         retried after ``Retry-After`` (or the   ``EmbedderRateLimited``
                                            backoff); given up at once if the
                                            server asks for more than
                                            ``max_backoff_s``
5xx                                         retried, honouring ``Retry-After``      ``EmbedderServerError``
timeout                                     not retried (a hung server would only   ``EmbedderTimeout``
                                            multiply the wait)
401, 403                                    not retried                             ``EmbedderAuthError``
other non-2xx                               not retried                             ``EmbedderRequestError``
2xx that is not a valid response (not       not retried                             ``EmbedderMalformedResponse``
JSON, ``data`` missing, wrong count,
bad ``index``, wrong or mixed dimension,
zero or non-finite vector)
==========================================  ======================================  ==================

Retries wait ``backoff_s · 2^k`` (k = 0, 1, ...), jittered into [½, 1] of that and capped at
``max_backoff_s``, so one batch takes at most ``(retries + 1) · timeout_s + retries · max_backoff_s``.
A caller's own deadline (cancelling the task) stops it sooner. The attempt, its classification and the
backoff are ``smcs.http_retry``'s, shared with the chat backend; the HTTP client is aiohttp.

The dimension is the configured ``dim``, or else learned from the first response and then required of
every later one; ``info`` is unknown until then (``probe`` learns it with a one-text request).
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
import msgspec
import numpy as np

from ..bank import EmbedderInfo
from ..http_retry import (
    AsyncClosing,
    AttemptFailed,
    Backoff,
    bearer,
    by_kind,
    endpoint,
    error_for,
    new_session,
    post_once,
    retrying,
)

from .base import check_texts, normalise_rows
from .errors import (
    EmbedderAuthError,
    EmbedderConnectionError,
    EmbedderMalformedResponse,
    EmbedderRateLimited,
    EmbedderRequestError,
    EmbedderServerError,
    EmbedderSetupError,
    EmbedderTimeout,
)
from ..errors import InputError

PROBE_TEXT = "dimension probe"
"""What ``probe`` embeds to learn the dimension."""
MAX_CONNECTIONS = 100
"""Most connections a pool of our own keeps open (batches go one after another; concurrent ``embed``
calls on one pool each take one)."""


class _Item(msgspec.Struct):
    """One element of ``data``; other fields (``object``) are ignored."""

    embedding: list[float]
    index: int | None = None


class _Response(msgspec.Struct):
    """The part of the response we use; other fields (``model``, ``usage``) are ignored."""

    data: list[_Item]


_DECODER = msgspec.json.Decoder(_Response)

_ERRORS = by_kind(
    EmbedderConnectionError,
    EmbedderTimeout,
    EmbedderRateLimited,
    EmbedderServerError,
    EmbedderAuthError,
    EmbedderRequestError,
)
"""The error raised for each kind of failed attempt (``smcs.http_retry``)."""


class RemoteEmbedder(AsyncClosing):
    """An ``AsyncEmbedder`` over an OpenAI-compatible embeddings endpoint.

    Use it as ``async with RemoteEmbedder(...) as e:`` to keep one connection pool for many calls (a
    server does this for its lifetime); outside such a block each ``embed`` call opens and closes its
    own (so the embedder may be used from one event loop after another: an aiohttp session belongs to
    the loop it was made in). Pass ``client`` to share an ``aiohttp.ClientSession`` you own (it is never
    closed here).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        dim: int | None = None,
        embedder_id: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        """Configure the endpoint; nothing is sent until the first ``embed`` or ``probe``.

        Args:
            base_url: the server, e.g. ``http://gpu1:8000``; ``/v1/embeddings`` is appended (a trailing
                ``/v1`` is accepted and not repeated).
            model: the served model name sent in every request.
            api_key: sent as ``Authorization: Bearer <api_key>``; None sends no credentials.
            dim: the expected dimension; None learns it from the first response.
            embedder_id: the id recorded in banks built with this embedder; None uses ``model``.
            batch_size: most texts per request (>= 1).
            timeout_s: limit for one attempt, request sent to body read (> 0).
            retries: further attempts after a retryable failure (>= 0).
            backoff_s: first wait between attempts (>= 0); doubles each retry.
            max_backoff_s: longest wait between attempts (>= 0); a ``Retry-After`` beyond it is not waited for.
            client: an ``aiohttp.ClientSession`` to send with (owned by the caller); None makes our own.
        """
        _check_settings(
            batch_size=batch_size,
            timeout_s=timeout_s,
            retries=retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            dim=dim,
        )
        if not model:
            raise InputError("model must be a non-empty string")
        self.url = endpoint(base_url, "embeddings")
        self.model = model
        self.embedder_id = embedder_id or model
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._dim = dim
        self._headers = bearer(api_key)
        self._client = client
        self._owns_client = False
        self._backoff = Backoff(retries, backoff_s, max_backoff_s)

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self.url!r}, model={self.model!r}, dim={self._dim})"  # never the key

    # -------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> RemoteEmbedder:
        """Open a connection pool kept until ``aclose`` (unless a client was given)."""
        if self._client is None:
            self._client = self._new_client()
            self._owns_client = True
        return self

    async def aclose(self) -> None:
        """Close the connection pool opened by ``__aenter__`` (a client given by the caller is left open);
        closing again, or without ``__aenter__``, does nothing."""
        if self._owns_client and self._client is not None:
            client, self._client, self._owns_client = self._client, None, False
            await client.close()

    def _new_client(self) -> aiohttp.ClientSession:
        """A session of our own (made in the running loop; ``post_once`` sets the timeouts per request)."""
        return new_session(MAX_CONNECTIONS)

    # ---------------------------------------------------------------------------------------- embedding

    @property
    def info(self) -> EmbedderInfo:
        """``EmbedderInfo(embedder_id, dim)``; ``EmbedderSetupError`` while the dimension is unknown."""
        if self._dim is None:
            raise EmbedderSetupError(
                f"the dimension of {self.model!r} at {self.url} is not known yet: set dim in the config, "
                "or await probe() (or one embed call) first",
                url=self.url,
            )
        return EmbedderInfo(self.embedder_id, self._dim)

    async def probe(self) -> EmbedderInfo:
        """``info``, learning the dimension with a one-text request if it is not yet known."""
        if self._dim is None:
            await self.embed([PROBE_TEXT])
        return self.info

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 ``(len(texts), dim)``, unit rows; ``EmbedderError`` subclasses on failure.

        An empty ``texts`` sends nothing, unless the dimension is still unknown (then it probes).
        """
        texts = check_texts(texts)
        if not texts:
            return np.empty((0, (await self.probe()).dim), dtype=np.float32)
        if self._client is not None:
            return await self._embed_all(self._client, texts)
        async with self._new_client() as client:
            return await self._embed_all(client, texts)

    async def _embed_all(self, client: aiohttp.ClientSession, texts: list[str]) -> np.ndarray:
        """``texts`` (non-empty) in batches of ``batch_size``, one request after another, rows in input order."""
        parts = [
            await self._embed_batch(client, texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _embed_batch(self, client: aiohttp.ClientSession, batch: list[str]) -> np.ndarray:
        """One batch, with the retries described in the module docstring."""
        body = msgspec.json.encode({"model": self.model, "input": batch})
        try:
            response = await retrying(
                lambda: post_once(client, self.url, body, headers=self._headers, timeout_s=self.timeout_s),
                self._backoff,
            )
        except AttemptFailed as failed:
            raise error_for(failed.failure, _ERRORS, url=self.url) from None
        return self._parse(response.content, len(batch))

    def _parse(self, content: bytes, n: int) -> np.ndarray:
        """The rows of a 2xx body for ``n`` inputs, in input order; ``EmbedderMalformedResponse`` naming the field."""
        try:
            data = _DECODER.decode(content).data
        except msgspec.DecodeError as exc:
            raise self._malformed(str(exc)) from None
        if len(data) != n:
            raise self._malformed(f"$.data has {len(data)} items for {n} inputs")
        order = self._input_order(data)
        dim = self._dim if self._dim is not None else len(data[order[0]].embedding)
        if dim == 0:
            raise self._malformed(f"$.data[{order[0]}].embedding is empty")
        for position, item in enumerate(data):
            if len(item.embedding) != dim:
                expected = f"dim is {dim}" if self._dim is not None else f"the first embedding has {dim}"
                raise self._malformed(f"$.data[{position}].embedding has {len(item.embedding)} values but {expected}")
        vectors, bad = normalise_rows(np.array([data[p].embedding for p in order], dtype=np.float64))
        if bad is not None:
            raise self._malformed(f"$.data[{order[bad]}].embedding is a zero or non-finite vector")
        self._dim = dim
        return vectors

    def _input_order(self, data: list[_Item]) -> list[int]:
        """Position in ``data`` of the embedding of each input: by ``index``, or list order if none has one."""
        if all(item.index is None for item in data):
            return list(range(len(data)))
        order: list[int | None] = [None] * len(data)
        for position, item in enumerate(data):
            if item.index is None:
                raise self._malformed(f"$.data[{position}].index is missing while other items have one")
            if not 0 <= item.index < len(data) or order[item.index] is not None:
                raise self._malformed(
                    f"$.data[{position}].index is {item.index}: not a unique index in [0, {len(data)})"
                )
            order[item.index] = position
        return order  # type: ignore[return-value]  # a permutation: every slot was filled once

    def _malformed(self, what: str) -> EmbedderMalformedResponse:
        """The error for a 2xx body that is not a valid response; ``what`` names the field."""
        return EmbedderMalformedResponse(f"malformed response from {self.url}: {what}", url=self.url)


def _check_settings(
    *, batch_size: int, timeout_s: float, retries: int, backoff_s: float, max_backoff_s: float, dim: int | None
) -> None:
    """``ValueError`` naming the first setting out of range."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not timeout_s > 0:
        raise InputError(f"timeout_s must be > 0, got {timeout_s}")
    if retries < 0:
        raise InputError(f"retries must be >= 0, got {retries}")
    if not backoff_s >= 0 or not max_backoff_s >= 0:
        raise InputError(f"backoff_s and max_backoff_s must be >= 0, got {backoff_s} and {max_backoff_s}")
    if dim is not None and dim < 1:
        raise InputError(f"dim must be >= 1, got {dim}")
