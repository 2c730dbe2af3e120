"""The embedder interface: texts in, unit-norm float32 rows out (docs/design.md, Layout and layers: an I/O edge).

Two small interfaces with one method each, one blocking and one async (as HTTP clients pair them):

- ``Embedder``: ``embed(texts) -> ndarray``, synchronous. The local ONNX model is CPU-bound, so it is
  written as plain blocking code; a server calls it in a worker thread.
- ``AsyncEmbedder``: ``async embed(texts) -> ndarray``. A remote embedding service is I/O-bound, so it is
  written against an async HTTP client.

The cut is here, and not higher, so that nothing above it (the pipeline, the bank builder, the service)
knows whether vectors come from a local model or over HTTP: each sees ``info`` (what the bank's manifest
must record) and an array. ``as_async`` and ``as_sync`` adapt one shape to the other without repeating
any embedding logic: an async caller awaits either kind, a blocking caller (a CLI command) calls either.

Both interfaces promise the same contract for ``embed``:

- ``texts`` is a sequence of ``str`` (a bare ``str`` is refused, since it is a sequence of characters);
  a non-``str`` item is a ``TypeError`` naming its index;
- the result is a C-contiguous ``float32`` array of shape ``(len(texts), info.dim)`` whose rows have L2
  norm 1, row ``i`` embedding ``texts[i]``; an empty sequence gives shape ``(0, info.dim)``;
- batching is the embedder's business: callers pass as many texts as they have;
- failures are ``EmbedderError`` subclasses (``smcs.embed.errors``) whose ``kind`` says what went wrong.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from smcs.bank import EmbedderInfo


@runtime_checkable
class Embedder(Protocol):
    """A blocking embedder (e.g. a local model): ``embed`` runs on the calling thread.

    ``info`` names the model and its dimension; a bank's manifest records it, and a bank may only be
    queried with vectors from an embedder of the same ``info`` (see ``check_compatible``).
    """

    @property
    def info(self) -> EmbedderInfo:
        """The model's id and dimension (a plain attribute satisfies this too)."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 ``(len(texts), info.dim)``, rows L2-normalised, batched internally."""
        ...


@runtime_checkable
class AsyncEmbedder(Protocol):
    """An asynchronous embedder (e.g. a remote service): ``embed`` is a coroutine.

    Same contract as ``Embedder.embed``; cancelling the coroutine abandons the work in flight.
    """

    @property
    def info(self) -> EmbedderInfo:
        """The model's id and dimension (a plain attribute satisfies this too)."""
        ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 ``(len(texts), info.dim)``, rows L2-normalised, batched internally."""
        ...


def is_async(embedder: Embedder | AsyncEmbedder) -> bool:
    """Whether ``embedder.embed`` is a coroutine function (an ``AsyncEmbedder``)."""
    return inspect.iscoroutinefunction(embedder.embed)


class ThreadedEmbedder:
    """An ``AsyncEmbedder`` that runs a blocking ``Embedder`` in a worker thread.

    The event loop stays free while the model computes (onnxruntime and the Rust tokenizer release the
    GIL). ``executor`` bounds how many calls compute at once: pass a ``ThreadPoolExecutor`` with as many
    workers as cores you want embedding to use (None: the loop's default executor). Cancelling the
    awaiting task does not stop a computation already running in the thread; its result is discarded.
    """

    def __init__(self, inner: Embedder, executor: concurrent.futures.Executor | None = None) -> None:
        """Wrap ``inner``; ``executor`` runs its calls (None: the running loop's default executor)."""
        self.inner = inner
        self.executor = executor

    @property
    def info(self) -> EmbedderInfo:
        """The wrapped embedder's ``info``."""
        return self.inner.info

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``inner.embed(texts)``, computed in a worker thread."""
        texts = check_texts(texts)  # fail on the caller's side, with no thread hop
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.inner.embed, texts)


class BlockingEmbedder:
    """An ``Embedder`` that runs an ``AsyncEmbedder`` to completion on a fresh event loop per call.

    For blocking callers (CLI commands, scripts, batch jobs); not for use inside a running event loop,
    where ``embed`` raises ``RuntimeError`` — await the async embedder there instead.
    """

    def __init__(self, inner: AsyncEmbedder) -> None:
        """Wrap ``inner``."""
        self.inner = inner

    @property
    def info(self) -> EmbedderInfo:
        """The wrapped embedder's ``info``."""
        return self.inner.info

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``await inner.embed(texts)`` on a new event loop, blocking until it finishes."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # none running: the normal case
            return asyncio.run(self.inner.embed(texts))
        raise RuntimeError("BlockingEmbedder.embed called inside a running event loop: await the async embedder")


def as_async(embedder: Embedder | AsyncEmbedder, executor: concurrent.futures.Executor | None = None) -> AsyncEmbedder:
    """``embedder`` as an ``AsyncEmbedder``: itself if it already is one, else run in threads of ``executor``."""
    if is_async(embedder):
        return embedder  # type: ignore[return-value]
    return ThreadedEmbedder(embedder, executor)  # type: ignore[arg-type]  # is_async ruled out the async kind


def as_sync(embedder: Embedder | AsyncEmbedder) -> Embedder:
    """``embedder`` as a blocking ``Embedder``: itself if it already is one, else run on a fresh loop per call."""
    if is_async(embedder):
        return BlockingEmbedder(embedder)  # type: ignore[arg-type]
    return embedder  # type: ignore[return-value]


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list after checking it is a sequence of ``str``; ``TypeError`` naming the bad index.

    A bare ``str`` (or ``bytes``) is refused rather than embedded character by character.
    """
    if isinstance(texts, (str, bytes, bytearray)):
        raise TypeError(f"texts must be a sequence of strings, not a single {type(texts).__name__}")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, not {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
    return out


def normalise_rows(rows: np.ndarray) -> tuple[np.ndarray, int | None]:
    """``rows`` (2-D, real) scaled to unit L2 norm as C-contiguous float32, and the first bad row or None.

    Computes in float64, each row first divided by its largest magnitude so that neither tiny nor huge
    rows lose precision or overflow. A row that is zero or not finite cannot be normalised: its index is
    returned (the caller raises the error that fits its source) and the array returned is meaningless.
    """
    work = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(work).all(axis=1)
    scale = np.abs(work).max(axis=1, initial=0.0) if work.shape[1] else np.zeros(len(work))
    bad = ~finite | (scale == 0)
    if bad.any():
        return np.empty(work.shape, dtype=np.float32), int(np.argmax(bad))
    work = work / scale[:, None]
    work /= np.sqrt(np.einsum("ij,ij->i", work, work))[:, None]
    return np.ascontiguousarray(work, dtype=np.float32), None
