"""The service's live routing state: one warm Router over one bank snapshot, swapped atomically.

A request reads ``state.live`` (or ``await state.latest()``) once and works on that snapshot to the end,
so a reload or a bank write never changes the bank under a request in flight. Loading a version (opening
the bank, warming the kernels, parsing question ids) happens off the event loop; only the final swap is on
it. ``latest`` follows versions other processes commit (other replicas over the same bank directory,
``smcs bank append``) at the cost of one ``os.stat`` of ``CURRENT`` per call, and loads a new version from
the one it holds, reading only what changed (``Bank.refresh``; a schema 2 bank's segments). A server over a bank in
object storage routes over a local copy that ``sync_from`` keeps up to date (``smcs.bank.remote.sync``) and
is read-only: bank writes are refused and no background work writes the copy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from ..bank import Bank, ivf, remote
from ..bank.distinctness import Distinctness, bank_distinctness
from ..bank.store import CURRENT
from ..core import Policy, Router
from ..core.fit import fit_scorer
from ..embed import AsyncEmbedder, check_compatible
from ..progress import Steps
from ..wire.convert import RequestError

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int, int]
"""What ``os.stat`` says of ``CURRENT``: inode, size, mtime and ctime in ns. A commit replaces ``CURRENT``
by a rename (a new inode, new times) and a hand edit rewrites it (new times), so either changes it."""


def stamp_of(path: str) -> Stamp | None:
    """The ``Stamp`` of the file at ``path`` now; None when it cannot be stat'ed (loading then says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class Snapshot:
    """A warm router over one bank version, with what the service reads on every request."""

    router: Router
    question_ids: np.ndarray  # the bank's question ids in row order (an object array: indexed by support rows)
    embedder: AsyncEmbedder | None  # None: this snapshot takes embeddings only
    no_embedder_reason: str  # why ``embedder`` is None, for the FAILED_PRECONDITION message
    distinctness: Distinctness  # how distinct the bank's embeddings are (measured on a sample at load)

    @property
    def bank(self) -> Bank:
        """The bank version this snapshot reads."""
        return self.router.bank

    @classmethod
    def load(cls, bank: Bank, policy: Policy, embedder: EmbedderChoice) -> Snapshot:
        """Warm a router over ``bank`` (blocking: run it in a worker thread), measure the distinctness of its
        embeddings (a WARNING when degenerate) and pair it with the embedder if its vectors can query this
        bank; a ``strict`` embedder that cannot is a ``ValueError``."""
        router = Router(bank, policy)
        ids = np.array([q.id for q in bank.questions], dtype=object)
        distinctness = bank_distinctness(bank)
        if (warning := distinctness.warning()) is not None:
            log.warning("bank %s version %s: %s", bank.path, bank.version, warning)
        if embedder.embedder is None:
            return cls(router, ids, None, embedder.reason, distinctness)
        try:
            check_compatible(embedder.embedder.info, bank)
        except ValueError as exc:
            if embedder.strict:
                raise
            log.warning("question text disabled: %s", exc)
            return cls(router, ids, None, str(exc), distinctness)
        return cls(router, ids, embedder.embedder, "", distinctness)


@dataclass(frozen=True)
class EmbedderChoice:
    """The configured embedder: ``strict`` (set in the config: a bank it cannot query is an error) or the
    lenient default (a bank it cannot query is served embeddings-only)."""

    embedder: AsyncEmbedder | None
    strict: bool
    reason: str = "this server has no embedder configured"


class ServiceState:
    """Holds the live snapshot; reloads and bank writes build a new one and swap it in."""

    def __init__(
        self,
        bank_path: Path,
        policy: Policy,
        executor: Executor,
        embedder: EmbedderChoice,
        *,
        rebuild_index: bool = True,
        refit_scorer_interval_s: float = 60.0,
        read_only: str = "",
    ) -> None:
        """``read_only``: why this server must not write the bank (a copy it keeps in sync with object
        storage), refused to bank writes; "" (the default): it writes, and keeps up the bank's index, fitted
        scorer and outcome log in the background."""
        self.bank_path = bank_path
        self.read_only = read_only
        self.rebuild_index = rebuild_index
        self.refit_scorer_interval_s = refit_scorer_interval_s
        self.policy = policy
        self.embedder = embedder
        self._executor = executor
        self._live: Snapshot | None = None
        self._writing = asyncio.Lock()
        self._current_file = os.fspath(bank_path / CURRENT)
        self._checked: Stamp | None = None  # CURRENT's stamp when the last reload looked at it
        self._following: asyncio.Task[None] | None = None  # the switch ``latest`` started, while it runs
        self._retraining: asyncio.Task[None] | None = None  # the background retraining of the index, while it runs
        self._refitting: asyncio.Task[None] | None = None  # the background refit of the scorer, while it runs
        self._folding: asyncio.Task[None] | None = None  # the background fold of the outcome log, while it runs
        self._refit_started = -math.inf  # monotonic time the last refit started

    @property
    def live(self) -> Snapshot | None:
        """The current snapshot, None until the first load has finished."""
        return self._live

    @property
    def retraining(self) -> bool:
        """Whether the bank's index is being retrained in the background now."""
        return self._retraining is not None and not self._retraining.done()

    @property
    def refitting(self) -> bool:
        """Whether the bank's scorer is being refitted (or waits to be) in the background now."""
        return self._refitting is not None and not self._refitting.done()

    async def run(self, fn: Callable[..., object], *args: object) -> object:
        """Run blocking ``fn(*args)`` on the service's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def reload(self, *, verify: bool = False) -> Snapshot:
        """Switch to the bank's current version if it changed; return the live snapshot. ``verify`` checks
        the SHA-256 of every file of the version it loads first (``Bank.verify``, with a progress line in
        the log per tenth on a large bank): a damaged file is a ``BankFormatError`` naming it."""
        async with self._writing:
            stamp = stamp_of(self._current_file)  # taken before CURRENT is read: a racing commit changes it
            try:
                live = self._live
                if live is None or not live.bank.is_current():
                    live = await self._swap(await self.run(self._current_bank, live, verify))
            except Exception:
                self._checked = stamp  # a version that cannot load is not retried until CURRENT changes
                raise
            self._checked = stamp
            return live

    def _current_bank(self, live: Snapshot | None, verify: bool) -> Bank:
        """The bank's current version (blocking): followed from the live one, reading only what changed
        (``Bank.refresh``), unless there is none yet or ``verify`` asks for every file to be hashed first."""
        if live is not None and not verify:
            return live.bank.refresh()
        progress = Steps(f"verifying bank {self.bank_path}", log.info) if verify else None
        return Bank.open(self.bank_path, verify=verify, progress=progress)

    async def latest(self) -> Snapshot | None:
        """The live snapshot, first switched to the bank's current version when ``CURRENT`` changed since
        the last reload looked at it: one ``os.stat`` when it did not. None until the first load.

        The switch runs as a task of its own that callers share, so a cancelled call does not cancel it.
        A version that fails to load is logged and the previous one keeps serving."""
        while self._live is not None and stamp_of(self._current_file) != self._checked:
            if self._following is None or self._following.done():
                self._following = asyncio.get_running_loop().create_task(self._follow())
            await asyncio.shield(self._following)
        return self._live

    async def _follow(self) -> None:
        """Reload; a version that fails to load is logged and the previous one keeps serving."""
        try:
            await self.reload()
        except Exception:  # the old snapshot keeps serving, as when the watcher fails
            log.exception("loading bank %s failed; still serving the previous version", self.bank_path)

    async def write(self, change: Callable[[Bank], Bank]) -> Snapshot:
        """Apply a bank write (``change(bank) -> new version``) off the loop and switch to its result."""
        if self.read_only:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, self.read_only)
        async with self._writing:
            live = self._live
            if live is None:
                raise RuntimeError("the bank is not loaded yet")
            bank = await self.run(change, live.bank)
            return await self._swap(bank)

    async def _swap(self, bank: Bank) -> Snapshot:
        snapshot = await self.run(Snapshot.load, bank, self.policy, self.embedder)
        self._live = snapshot
        log.info("routing over bank %s version %s (%d questions, %d models)", bank.path, bank.version, bank.n_questions, bank.n_models)
        if not self.read_only:
            self._retrain_if_outgrown(bank)
            self._refit_if_stale(bank)
            self._fold_if_due(bank)
        return snapshot

    def _fold_if_due(self, bank: Bank) -> None:
        """Fold the bank's outcome log in the background when it has outgrown its base (``Bank.needs_fold``);
        the fold commits a version of the same content, which the next request follows."""
        if bank.needs_fold and (self._folding is None or self._folding.done()):
            self._folding = asyncio.get_running_loop().create_task(self._fold(bank))

    async def _fold(self, bank: Bank) -> None:
        """Run ``Bank.fold`` on a thread of its own (its O(R·N) part holds no lock and must not hold up routing)."""
        try:
            folded = await asyncio.to_thread(bank.fold)
            log.info("bank %s: outcome log folded into a new base (version %s)", bank.path, folded.version)
        except Exception:
            log.exception("folding the outcome log of bank %s failed; it stays unfolded", bank.path)

    def _retrain_if_outgrown(self, bank: Bank) -> None:
        """Start retraining the index in the background when ``bank`` has outgrown it (``needs_rebuild``)."""
        index = bank.index
        if not self.rebuild_index or index is None or not index.needs_rebuild:
            return
        if not self.retraining:
            self._retraining = asyncio.get_running_loop().create_task(self._retrain(bank, index))

    async def _retrain(self, bank: Bank, index: ivf.IVFIndex) -> None:
        """Train a new index over ``bank`` on a thread of its own (k-means must not hold up routing), then
        commit it unless another process already did; the swap follows as for any write."""
        log.info("bank %s version %s: the index trained on %d rows now holds %d; retraining it in the background",
                 bank.path, bank.version, index.trained_rows, bank.n_questions)
        try:
            trained = await asyncio.to_thread(ivf.train, bank.embeddings, ivf.default_nlist(bank.n_questions), seed=index.seed)
            latest = await self.run(Bank.open, self.bank_path)
            if latest.index is None or not latest.index.needs_rebuild:
                log.info("bank %s: the index was dropped or retrained elsewhere meanwhile; keeping that", bank.path)
                return
            await self.write(lambda snapshot: snapshot.with_index(trained))
        except Exception:
            log.exception("retraining the index of bank %s failed; routing goes on over the old one", bank.path)

    def _refit_if_stale(self, bank: Bank) -> None:
        """Start refitting the scorer in the background when ``bank``'s fit is stale (none runs already)."""
        if self.refit_scorer_interval_s <= 0 or not bank.scorer_stale or self.refitting:
            return
        self._refitting = asyncio.get_running_loop().create_task(self._refit())

    async def _refit(self) -> None:
        """Wait out the refit interval, fit the scorer over the bank's latest version on a thread of its own,
        then commit it unless the fit was dropped or refreshed elsewhere meanwhile; the swap follows as for
        any write (and starts the next refit if writes made this one stale)."""
        await asyncio.sleep(max(0.0, self._refit_started + self.refit_scorer_interval_s - time.monotonic()))
        self._refit_started = time.monotonic()
        try:
            bank = await self.run(Bank.open, self.bank_path)
            if not bank.scorer_stale:
                return
            log.info("bank %s version %s: the fitted scorer is stale; refitting it in the background", bank.path, bank.version)
            fitted = await asyncio.to_thread(fit_scorer, bank, self.policy)
            latest = await self.run(Bank.open, self.bank_path)
            if latest.scorer is None:
                log.info("bank %s: the fitted scorer was dropped meanwhile; not refitting", bank.path)
                return
            self._refitting = None  # the write's swap may start the next refit
            await self.write(lambda snapshot: snapshot.with_scorer(fitted))
            log.info("bank %s: refitted scorer committed (default %r)", bank.path, fitted.default)
        except Exception:
            log.exception("refitting the scorer of bank %s failed; routing goes on with the stale fit", bank.path)

    async def close(self) -> None:
        """Stop background work: a retraining or refit in progress is abandoned (its thread finishes unobserved)."""
        for name in ("_retraining", "_refitting", "_folding"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the bank's CURRENT moves on, checking every ``interval_s`` seconds (runs until cancelled)."""
        while True:
            await asyncio.sleep(interval_s)
            await self._follow()

    async def sync_from(self, url: str, interval_s: float, endpoint_url: str | None) -> None:
        """Every ``interval_s`` seconds bring the bank directory, a copy of the bank at ``url`` in object
        storage, up to date (``remote.sync`` on a thread) and switch to a new version it brings (runs until
        cancelled). A failed sync is logged and the version held keeps serving; the next one tries again."""
        client = await asyncio.to_thread(remote.s3_client, endpoint_url)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(remote.sync, url, self.bank_path, client=client)
            except Exception as exc:  # the store is down, or holds something else: keep serving what we hold
                log.warning("syncing bank %s from %s failed (still serving the version held): %s", self.bank_path, url, exc)
                continue
            await self.latest()
