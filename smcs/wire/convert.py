"""Protobuf ⇄ smcs values at the edge of the service, with request validation.

Server side, each ``*_from_request`` function checks one part of a request and raises ``RequestError``
with the status code and a message naming the field. The route decision's own wire form is
``smcs.wire.decision``'s, the strategies' events ``smcs.wire.strategy``'s.
"""

from __future__ import annotations

import math

import grpc
import msgspec
import numpy as np

from .._proto import router_pb2 as pb
from ..bank import Bank
from ..core import Policy, RouteDecision
from ..core.pipeline import AggregationEvidence, AnswerResult, Event, ReferenceEvidence, Routed
from ..core.policy import OVERRIDABLE
from ..core.question import check_question
from ..errors import InputError, SmcsError
from ..strategies import StrategyCall, StrategyEvent, StrategyPlan, StrategyResult
from .decision import decision_from_response, optional_field, route_response
from .enums import ANSWER_SOURCE, ERROR_KIND, RETRIEVAL, SCORER, TASK
from .strategy import StrategyEventDecoder, strategy_event

MAX_SUBSETS = 4096
"""Most exploration subsets (``policy.n``) a request may ask for: drawing and sending n subsets costs O(n), and
an int32 n near 2**31 would take the server tens of gigabytes and minutes (the paper's n is 8)."""
MAX_CANDIDATES = 4096
"""Most candidates one Score request may carry: S^sim compares every pair, O(n²)."""


class RequestError(SmcsError):
    """A request the server refuses: the gRPC status code and a message naming the field."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    """An INVALID_ARGUMENT refusal."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


ENUM_OVERRIDES = {"retrieval": RETRIEVAL, "scorer": SCORER}
"""The policy overrides that are enums on the wire (their zero value, UNSPECIFIED, keeps the default)."""


def policy_from_request(overrides: pb.PolicyOverrides, default: Policy) -> Policy:
    """``default`` with the fields set in ``overrides``; INVALID_ARGUMENT naming a bad field. Whether the
    policy fits the bank (k, aggregator, allowed_models) is the router's check."""
    changes: dict[str, object] = {}
    for name in OVERRIDABLE:
        if name in ENUM_OVERRIDES:
            try:
                value = ENUM_OVERRIDES[name].checked(getattr(overrides, name), f"policy.{name}")
            except InputError as exc:
                raise invalid(str(exc)) from None
            if value is not None:
                changes[name] = value
        elif overrides.HasField(name):
            changes[name] = getattr(overrides, name)
    n = changes.get("n")
    if isinstance(n, int) and n > MAX_SUBSETS:
        raise invalid(f"policy.n is {n}; the limit is {MAX_SUBSETS} exploration subsets")
    try:
        policy = msgspec.structs.replace(default, **changes) if changes else default
    except ValueError as exc:
        raise invalid(f"policy.{exc}") from None
    return policy


OPTIONAL_POLICY_FIELDS = (
    "aggregator", "threads", "min_references", "nprobe", "consensus", "willingness_to_pay", "coverage_target", "max_cost",
)
"""The Policy fields whose None (unset) is a value of its own: optional in the ``Policy`` message."""


def policy_message(policy: Policy) -> pb.Policy:
    """Every field of ``policy`` in its wire form (ServerInfo, server side)."""
    message = pb.Policy(
        k=policy.k, n_base=policy.n_base, gamma=policy.gamma, k_drop=policy.k_drop, n=policy.n, lam=policy.lam,
        quantized=policy.quantized, retrieval=RETRIEVAL.to_wire(policy.retrieval), scorer=SCORER.to_wire(policy.scorer),
        cover=policy.cover, distinct_subsets=policy.distinct_subsets,
    )
    for name in OPTIONAL_POLICY_FIELDS:
        if getattr(policy, name) is not None:
            setattr(message, name, getattr(policy, name))
    return message


def policy_from_message(message: pb.Policy) -> Policy:
    """The ``Policy`` a ``Policy`` message carries (client side); a retrieval or scorer this build does not
    know (a newer server's) reads as "auto"."""
    return Policy(
        k=message.k, n_base=message.n_base, gamma=message.gamma, k_drop=message.k_drop, n=message.n, lam=message.lam,
        quantized=message.quantized, retrieval=RETRIEVAL.from_wire(message.retrieval) or "auto",  # type: ignore[arg-type]
        scorer=SCORER.from_wire(message.scorer) or "auto", cover=message.cover, distinct_subsets=message.distinct_subsets,  # type: ignore[arg-type]
        **{name: getattr(message, name) for name in OPTIONAL_POLICY_FIELDS if message.HasField(name)},
    )


def query_from_request(request: pb.RouteRequest, dim: int, max_chars: int) -> str | np.ndarray:
    """The query of a Route request: its question text (checked, still to embed) or its embedding."""
    kind = request.WhichOneof("query")
    if kind is None:
        raise invalid("question or embedding is required")
    if kind == "question":
        return question_text(request.question, "question", max_chars)
    return embedding_from_message(request.embedding, "embedding", dim)


def question_text(text: str, field: str, max_chars: int) -> str:
    """``text`` if it is a question the server accepts (``smcs.core.question.check_question``, the check
    the command line's in-process paths make too); INVALID_ARGUMENT naming ``field`` otherwise."""
    try:
        return check_question(text, field, max_chars)
    except InputError as exc:
        raise invalid(str(exc)) from None


def embedding_from_message(message: pb.Embedding, field: str, dim: int) -> np.ndarray:
    """A float32 vector of length ``dim`` from ``message``: finite and not all zero."""
    values = np.asarray(message.values, dtype=np.float32)
    if values.shape[0] != dim:
        raise invalid(f"{field} has {values.shape[0]} values; the bank's embeddings have dimension {dim}")
    if not np.all(np.isfinite(values)):
        raise invalid(f"{field} contains NaN or infinity")
    if not np.any(values):
        raise invalid(f"{field} is a zero vector")
    return values


def seed_from_request(request: pb.RouteRequest | pb.AnswerRequest) -> int | None:
    """The request's seed, or None when unset (the router then picks one and reports it)."""
    return optional_field(request, "seed")


def finite_lam(request: pb.ScoreRequest, default: float) -> float:
    """λ of a Score request (the policy default when unset); INVALID_ARGUMENT unless finite."""
    lam = request.lam if request.HasField("lam") else default
    if not math.isfinite(lam):
        raise invalid(f"lam must be finite, got {lam}")
    return lam


def task_from_request(request: pb.AnswerRequest) -> str | None:
    """The prompt template an Answer request names (None: the bare question); INVALID_ARGUMENT for a
    value this server does not know."""
    try:
        return TASK.checked(request.task, "task")
    except InputError as exc:
        raise invalid(str(exc)) from None


def answer_event(event: Event | StrategyEvent, bank: Bank, ids: np.ndarray) -> pb.AnswerResponse:
    """The wire form of one pipeline (or baseline strategy) event (server side)."""
    if isinstance(event, (StrategyPlan, StrategyCall, StrategyResult)):
        return strategy_event(event, bank, ids)
    if isinstance(event, Routed):
        return pb.AnswerResponse(routed=route_response(event.decision, bank, ids, debug=False))
    if isinstance(event, ReferenceEvidence):
        return pb.AnswerResponse(reference=pb.ReferenceEvent(
            model=event.model, text=event.text, error=event.error or "", latency_s=event.latency_s,
            prior=event.prior, error_kind=ERROR_KIND.to_wire(event.error_kind), prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens, temperature=event.temperature,
        ))
    if isinstance(event, AggregationEvidence):
        return pb.AnswerResponse(aggregation=pb.AggregationEvent(
            index=event.index, text=event.text, similarity_score=event.similarity, perplexity=event.perplexity,
            total_score=event.total, error=event.error or "", aggregator=event.aggregator, subset=event.subset,
            error_kind=ERROR_KIND.to_wire(event.error_kind), latency_s=event.latency_s,
            prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens, temperature=event.temperature,
        ))
    final = pb.FinalEvent(
        text=event.text, source=ANSWER_SOURCE.to_wire(event.source), notes=event.notes, seed=event.seed, bank_version=event.bank_version,
        selected=event.selected, reference=event.reference, agreement=event.agreement,
    )
    return pb.AnswerResponse(final=final)


class AnswerEventDecoder:
    """Turns the messages of one Answer stream back into pipeline events (client side).

    It keeps the decision and the evidence received so far, so that the final event is the whole
    ``AnswerResult``, as the in-process pipeline returns it (and, for a baseline strategy, the whole
    ``StrategyResult``).
    """

    def __init__(self) -> None:
        self.decision: RouteDecision | None = None
        self.references: list[ReferenceEvidence] = []
        self.aggregations: list[AggregationEvidence] = []
        self.strategy = StrategyEventDecoder()

    def decode(self, message: pb.AnswerResponse) -> Event | StrategyEvent:
        """The event ``message`` carries; ``ValueError`` for a stream out of order."""
        kind = message.WhichOneof("event")
        if kind in ("plan", "call", "strategy_result"):
            return self.strategy.decode(message)
        if kind == "routed":
            self.decision = decision_from_response(message.routed)
            return Routed(self.decision)
        if kind == "reference":
            r = message.reference
            self.references.append(ReferenceEvidence(
                model=r.model, prior=r.prior, text=r.text, error=r.error or None, error_kind=ERROR_KIND.from_wire(r.error_kind),
                latency_s=r.latency_s, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                temperature=optional_field(r, "temperature"),
            ))
            return self.references[-1]
        if kind == "aggregation":
            a = message.aggregation
            self.aggregations.append(AggregationEvidence(
                index=a.index, aggregator=a.aggregator, subset=list(a.subset), text=a.text, error=a.error or None,
                error_kind=ERROR_KIND.from_wire(a.error_kind), similarity=a.similarity_score, perplexity=a.perplexity,
                total=a.total_score, latency_s=a.latency_s, prompt_tokens=a.prompt_tokens,
                completion_tokens=a.completion_tokens, temperature=optional_field(a, "temperature"),
            ))
            return self.aggregations[-1]
        if kind == "final" and self.decision is not None:
            f = message.final
            order = {model: i for i, model in enumerate(self.decision.referencers)}  # they stream as they arrive
            return AnswerResult(
                text=f.text, source=ANSWER_SOURCE.from_wire(f.source),  # type: ignore[arg-type]  # one of the sources
                selected=optional_field(f, "selected"), decision=self.decision,
                references=sorted(self.references, key=lambda r: order.get(r.model, len(order))),
                aggregations=list(self.aggregations), notes=list(f.notes),
                reference=optional_field(f, "reference"),
                agreement=optional_field(f, "agreement"),
            )
        raise ValueError(f"unexpected Answer event {kind!r} (a final event needs a routed event before it)")
