"""The result of routing one question: everything a caller needs to run, audit or replay the plan."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, SupportsIndex, overload

import msgspec
import numpy as np

from .. import kernels


class SupportSet:
    """Eq (3)'s support set of one decision as the kernel returned it (bank rows, their Ŝ), put in Eq (3)'s
    order (Ŝ descending, ties to the lower row) the first time either column is read: a route whose
    caller never reads it pays neither the sort nor the Python lists. Safe to read from several threads
    (each may sort; the result is the same)."""

    __slots__ = ("_arrays", "_ordered", "_read_only")

    def __init__(self, rows: np.ndarray, similarities: np.ndarray, *, ordered: bool) -> None:
        """``rows`` (int64) and ``similarities`` (float32, aligned), already in Eq (3)'s order when ``ordered``;
        the set's own from here on (they are made read-only when first read, as nothing can write them
        before: marking them here would cost every route a few microseconds)."""
        self._arrays = (rows, similarities)
        self._ordered = ordered
        self._read_only: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self._arrays[0].shape[0])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities) in Eq (3)'s order (read-only: ``np.asarray`` of a column must not change the
        decision)."""
        arrays = self._read_only
        if arrays is None:
            arrays = self._arrays if self._ordered else kernels.order_support(*self._arrays)
            for a in arrays:
                a.flags.writeable = False
            self._read_only = arrays  # after the flags: a reader that sees these arrays sees them read-only
        return arrays


class SupportValues(Sequence):  # type: ignore[type-arg]
    """One column of a ``SupportSet`` (``column`` 0: bank rows as ints, 1: Ŝ as floats) as a read-only
    sequence: Python values are made once, on the first element read; ``len`` reads nothing and
    ``np.asarray`` gives the column without a copy. Equal to any sequence (a list included) of equal
    values. msgspec encodes it only through ``enc_hook``."""

    __slots__ = ("_support", "_column", "_values")

    def __init__(self, support: SupportSet, column: int) -> None:
        self._support = support
        self._column = column
        self._values: list[Any] | None = None

    def array(self) -> np.ndarray:
        """The column as a read-only numpy array (int64 rows or float32 similarities)."""
        return self._support.arrays()[self._column]

    def tolist(self) -> list[Any]:
        """The column as a Python list (made once; the same list on every call)."""
        if self._values is None:
            self._values = self.array().tolist()
        return self._values

    def __len__(self) -> int:
        return len(self._support)

    @overload
    def __getitem__(self, index: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        return self.tolist()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.tolist())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.array()
        if dtype is not None and np.dtype(dtype) != array.dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SupportValues):
            return self.tolist() == other.tolist()
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which do not hash

    def __repr__(self) -> str:
        return repr(self.tolist())


def enc_hook(value: object) -> object:
    """``enc_hook`` for msgspec encoders (``msgspec.json.encode``, ``msgspec.to_builtins``) of a
    ``RouteDecision`` or anything holding one: a support column becomes its list."""
    if isinstance(value, SupportValues):
        return value.tolist()
    raise NotImplementedError(f"msgspec cannot encode objects of type {type(value).__name__}")


def support_columns(rows: np.ndarray, similarities: np.ndarray, *, ordered: bool) -> tuple[SupportValues, SupportValues]:
    """A decision's ``support_rows`` and ``support_similarities`` over one lazily ordered ``SupportSet``."""
    support = SupportSet(rows, similarities, ordered=ordered)
    return SupportValues(support, 0), SupportValues(support, 1)


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of retrieval-based prior selection plus the exploration plan for one question.

    Attributes:
        referencers: the K referencer models (Eq 5), highest prior vote first.
        votes: their prior votes V_r (Eq 4), aligned with ``referencers``.
        aggregator: the model that synthesises each subset of references.
        support_rows: bank rows of the support set I (Eq 3), most similar first. From ``Router.route`` a
            ``SupportValues`` (a read-only sequence, equal to the list of its values, that is sorted and
            turned into Python ints only when first read; ``np.asarray`` gives its int64 array; msgspec
            encoders need ``enc_hook``); a list elsewhere. Empty when the route was asked for no
            support set.
        support_similarities: Ŝ_i of those rows (cosine, clipped at 0), aligned with ``support_rows``, of the
            same kind (float32 array under ``np.asarray``).
        subsets: the n exploration subsets (Eq 6 sampling), each K − K_drop model names in
            descending prior.
        seed: the seed that drew the subsets; routing again with it reproduces this decision.
        bank_version: the bank snapshot the decision was computed on.
        support_ids: bank question ids of ``support_rows`` (filled by the service; empty in-process).
        support_texts: their question text (only when the caller asked for debug evidence).
        support_outcomes: per support question, each referencer's recorded outcome (1 correct, 0 wrong,
            −1 not evaluated), aligned with ``referencers`` (only with debug evidence).
        scorer: the scorer that ranked the models (``Policy.scorer`` resolved: never "auto").
        probabilities: p_r, each referencer's probability of answering correctly, aligned with
            ``referencers`` (calibrated when the bank is fitted; for "vote" on an unfitted bank, the
            normalised vote).
        model_probabilities: p_r of every bank model, in the bank's model order (in-process always; over
            gRPC only with debug evidence).
        out_of_bank: the nearest bank question is less similar than the fit's out-of-bank threshold;
            models then rank by overall bank accuracy (except with "vote", which stays the paper's).
        k_clamped_from: the K the policy asked for when the bank has fewer models than that: the router
            then routed with K = the bank's model count (``len(referencers)``), k_drop at most K − 1 and
            the default quorum ⌈K/2⌉ (``smcs.core.policy.fit_policy``), and logged a WARNING; None when
            the policy's K fitted the bank. This holds for a router's own policy and a per-call one alike
            (an explicit request K too).
        costs: each referencer's expected cost for this question (``smcs.core.costs``), aligned with
            ``referencers``; None where the bank records no cost for the model.
        model_costs: the expected cost of every bank model, in the bank's model order (None: unknown).
        aggregation_cost: the aggregator's expected cost, counted per aggregation (None: unknown).
        expected_cost: the plan's expected cost: the referencers' costs plus one ``aggregation_cost`` per
            subset (None when one of them is unknown).
        plan_notes: what the policy's ``coverage_target`` and ``max_cost`` cut from the plan (K, n, or
            every aggregation: no subsets), one line each; empty when nothing was cut.
        drop_probabilities: each referencer's probability of being left out of a subset under Eq (6)'s
            sampling, aligned with ``referencers`` (``kernels.drop_probabilities``; empty for K above
            ``kernels.sampling.EXACT_DROP_MAX_K``).
        duplicate_subsets: with ``Policy.distinct_subsets``, the draws dropped because they repeated an
            earlier subset (``subsets`` then has no repeats and may hold fewer than n); 0 otherwise.
    """

    referencers: list[str]
    votes: list[float]
    aggregator: str
    support_rows: Sequence[int]
    support_similarities: Sequence[float]
    subsets: list[list[str]]
    seed: int
    bank_version: str
    support_ids: list[str] = []
    support_texts: list[str] = []
    support_outcomes: list[list[int]] = []
    scorer: str = "vote"
    probabilities: list[float] = []
    model_probabilities: list[float] = []
    out_of_bank: bool = False
    k_clamped_from: int | None = None
    costs: list[float | None] = []
    model_costs: list[float | None] = []
    aggregation_cost: float | None = None
    expected_cost: float | None = None
    plan_notes: list[str] = []
    drop_probabilities: list[float] = []
    duplicate_subsets: int = 0

    def to_builtins(self) -> dict[str, Any]:
        """The decision as JSON-ready builtins (``msgspec.to_builtins`` with ``enc_hook``): the support
        columns as lists."""
        return msgspec.to_builtins(self, enc_hook=enc_hook)  # type: ignore[no-any-return]
