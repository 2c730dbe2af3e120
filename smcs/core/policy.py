"""The routing policy: every knob of retrieval-based prior selection and exploration, with the paper's defaults."""

from __future__ import annotations

import math
from typing import Literal, get_args

import msgspec

from ..errors import InputError

Retrieval = Literal["auto", "exact", "ivf"]
RETRIEVALS: tuple[str, ...] = get_args(Retrieval)
Scorer = Literal["auto", "vote", "source", "knn", "head"]
SCORER_CHOICES: tuple[str, ...] = get_args(Scorer)
IVF_AUTO_MIN_ROWS = 200_000
"""``retrieval = "auto"`` uses a bank's IVF index from this many rows (below, the exact scan is as fast)."""


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How a question is routed. Defaults are the SMCS paper's (A.3); invalid values raise ``ValueError``
    when the Policy is built (or ``msgspec.ValidationError`` naming the field when decoded from JSON/TOML).

    Attributes:
        k: number of referencer models, the K of Eq (5). A router over a bank with fewer models routes
            with K clamped to their number (``fit_policy``; a WARNING, and the decision's
            ``k_clamped_from``).
        n_base: the N_base of Eq (3): the threshold is γ times the N_base-th largest similarity
            (clamped to the bank size).
        gamma: the tolerance γ ∈ [0, 1] of Eq (3).
        k_drop: references dropped from each exploration subset (0 ≤ k_drop < k); each subset keeps
            k − k_drop, drawn by Eq (6).
        n: number of exploration subsets, i.e. aggregations the aggregator writes.
        lam: λ of Eq (7), the weight of the perplexity score against the similarity score.
        aggregator: the model that synthesises the references; None picks the model with the highest
            overall accuracy in the bank (ties to the lower model index).
        threads: threads of the route kernel; None chooses by bank size (one thread for small banks),
            1 forces single-threaded scanning.
        quantized: scan an int8 copy of the bank (4× fewer bytes) and re-score in float32 only the rows
            its error bounds cannot rule out. The decision is identical to the exact scan's; the router
            builds the int8 copy once, on first use (at construction when its own policy sets this).
        min_references: the full pipeline (Answer) goes on while at least this many referencers answered,
            else it fails naming who did not; None = ⌈k/2⌉. At most k.
        retrieval: "exact" scans every bank row; "ivf" scores only the rows of the ``nprobe`` lists of
            the bank's IVF index nearest the query (approximate: a support row outside them is missed;
            needs a bank with an index, see ``smcs bank index``); "auto" uses the index when the bank
            has one and at least ``IVF_AUTO_MIN_ROWS`` rows, and never with ``quantized``.
        nprobe: lists probed by "ivf" retrieval; more lists, higher recall, more rows scanned. None = the
            index's default: 1/64 of its lists, at least 8 (64 of the 4096 lists a 1e6-row bank gets).
        scorer: what turns the retrieval evidence into each model's probability of answering correctly,
            by which the referencers are ranked (``smcs.core.scorers``): "vote" is the paper's prior
            (Eq 4; its decisions exactly); "source", "knn" and "head" need a bank fitted by
            ``smcs bank fit``; "auto" uses the scorer the bank's fit picked by cross-validation, and
            "vote" on a bank without a fit.
        cover: with a scorer other than "vote", choose the referencers after the most probable one for
            coverage: each next one the model that, on the bank questions of the query's predicted
            source, most often answers what the chosen ones miss (the fit's cover order), so that some
            referencer is right more often. False ranks them by p_r alone.
        willingness_to_pay: W, the cost that buys +1.0 of expected accuracy: models rank by
            p_r − c_r / W, where c_r is the model's expected cost for the question (``smcs.core.costs``)
            and p_r its probability of answering correctly (the normalised vote for "vote"; the cover
            order is not used). None ranks by quality alone, as the paper does. Needs a bank that records
            costs for the candidate models.
        coverage_target: τ in (0, 1]: route with the smallest K ≤ k whose referencers, taken in rank
            order, give 1 − Π(1 − p_r) ≥ τ (all k when they never do); k_drop shrinks to at most K − 1.
            None always routes with k.
        max_cost: the most the plan may be expected to cost: the referencers' expected costs plus n
            aggregations at the aggregator's. Over it, the router first lowers n (down to 1), then K
            (down to 1), then plans no aggregation (the answer is the referencer's own); a plan that
            still costs more is refused. The decision's notes say what was cut. Needs a bank that records
            costs. None: no limit.
        distinct_subsets: draw exploration subsets until n distinct ones exist (or every possible one was
            drawn), so that no two aggregations get the same prompt; the decision's ``duplicate_subsets``
            counts the draws dropped. False draws n subsets independently, repeats included (the paper).
        consensus: the agreement of the answered references (their mean pairwise cosine similarity over
            all pairs, same embedder as retrieval) at or above which the pipeline skips aggregation and
            answers with the most central reference (source "consensus"). Cosine is at most 1, so a value
            above 1 never exits early. None never computes it (the paper).
    """

    k: int = 7
    n_base: int = 400
    gamma: float = 0.95
    k_drop: int = 1
    n: int = 8
    lam: float = 1.0
    aggregator: str | None = None
    threads: int | None = None
    quantized: bool = False
    min_references: int | None = None
    retrieval: Retrieval = "auto"
    nprobe: int | None = None
    scorer: Scorer = "auto"
    cover: bool = True
    willingness_to_pay: float | None = None
    coverage_target: float | None = None
    max_cost: float | None = None
    distinct_subsets: bool = False
    consensus: float | None = None

    def __post_init__(self) -> None:
        for name in ("k", "n_base", "n"):
            _require_int(name, getattr(self, name), minimum=1)
        if self.nprobe is not None:
            _require_int("nprobe", self.nprobe, minimum=1)
        _require_int("k_drop", self.k_drop, minimum=0)
        if self.k_drop >= self.k:
            raise InputError(f"k_drop must be smaller than k ({self.k}), got {self.k_drop}")
        if not 0.0 <= self.gamma <= 1.0:
            raise InputError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if not math.isfinite(self.lam):
            raise InputError(f"lam must be finite, got {self.lam!r}")
        if self.aggregator is not None and not self.aggregator:
            raise InputError("aggregator must be a model name or None, got an empty string")
        if self.threads is not None:
            _require_int("threads", self.threads, minimum=1)
        if self.min_references is not None:
            _require_int("min_references", self.min_references, minimum=1)
            if self.min_references > self.k:
                raise InputError(f"min_references must be at most k ({self.k}), got {self.min_references}")
        if not isinstance(self.quantized, bool):
            raise InputError(f"quantized must be true or false, got {self.quantized!r}")
        if self.retrieval not in RETRIEVALS:
            raise InputError(f"retrieval must be one of {', '.join(RETRIEVALS)}, got {self.retrieval!r}")
        if not isinstance(self.cover, bool):
            raise InputError(f"cover must be true or false, got {self.cover!r}")
        if self.scorer not in SCORER_CHOICES:
            raise InputError(f"scorer must be one of {', '.join(SCORER_CHOICES)}, got {self.scorer!r}")
        if self.willingness_to_pay is not None and not (math.isfinite(self.willingness_to_pay) and self.willingness_to_pay > 0):
            raise InputError(f"willingness_to_pay must be a finite number > 0 or None, got {self.willingness_to_pay!r}")
        if self.coverage_target is not None and not 0.0 < self.coverage_target <= 1.0:
            raise InputError(f"coverage_target must be in (0, 1] or None, got {self.coverage_target!r}")
        if self.max_cost is not None and not (math.isfinite(self.max_cost) and self.max_cost >= 0):
            raise InputError(f"max_cost must be a finite number >= 0 or None, got {self.max_cost!r}")
        if not isinstance(self.distinct_subsets, bool):
            raise InputError(f"distinct_subsets must be true or false, got {self.distinct_subsets!r}")
        if self.consensus is not None and not math.isfinite(self.consensus):
            raise InputError(f"consensus must be a finite number or None, got {self.consensus!r}")
        if self.quantized and self.retrieval == "ivf":
            raise InputError("quantized scans every row and retrieval='ivf' only some: choose one")

    @property
    def quorum(self) -> int:
        """Referencers that must answer for the pipeline to go on: ``min_references`` or ⌈k/2⌉."""
        return self.min_references if self.min_references is not None else -(-self.k // 2)

    def check_models(self, model_names: tuple[str, ...]) -> None:
        """Raise ``ValueError`` if this policy cannot route over a bank holding ``model_names``."""
        if self.k > len(model_names):
            raise InputError(f"policy k={self.k} exceeds the bank's {len(model_names)} models")
        if self.aggregator is not None and self.aggregator not in model_names:
            raise InputError(f"policy aggregator {self.aggregator!r} is not a model of the bank")


def fit_policy(policy: Policy, n_models: int) -> Policy:
    """``policy`` fitted to a bank of ``n_models`` models: unchanged when its K fits (or the bank has no
    models, which ``check_models`` refuses), else K = ``n_models``, k_drop at most K − 1 and the quorum
    back to its default ⌈K/2⌉ (``min_references`` None). The router routes with this policy when the one
    it is given asks for more referencers than the bank has (``RouteDecision.k_clamped_from`` says so),
    and the strategies other than ``smcs`` always fit theirs."""
    if policy.k <= n_models or n_models == 0:
        return policy
    return msgspec.structs.replace(policy, k=n_models, k_drop=min(policy.k_drop, n_models - 1), min_references=None)


PER_PROCESS = ("threads", "quantized")
"""Policy fields that set how this process scans, not how a question is routed: a request cannot change them."""
OVERRIDABLE: tuple[str, ...] = tuple(name for name in Policy.__struct_fields__ if name not in PER_PROCESS)
"""The policy fields a request may set: the gRPC ``PolicyOverrides`` fields and the CLI's policy options."""


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
