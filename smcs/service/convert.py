"""Protobuf ⇄ smcs values at the edge of the service, with request validation.

Server side, each ``*_from_request`` function checks one part of a request and raises ``RequestError``
with the status code and a message naming the field. Client side, ``decision_from_response`` turns the
wire message back into the ``RouteDecision`` Struct the in-process router returns, so callers see one
type whichever way they route.
"""

from __future__ import annotations

import math

import grpc
import msgspec
import numpy as np

from .._proto import router_pb2 as pb
from ..bank import Bank
from ..core import Policy, RouteDecision

_OVERRIDABLE = ("k", "n_base", "gamma", "k_drop", "n", "lam", "aggregator")


class RequestError(Exception):
    """A request the server refuses: the gRPC status code and a message naming the field."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    """An INVALID_ARGUMENT refusal."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def policy_from_request(overrides: pb.PolicyOverrides, default: Policy) -> Policy:
    """``default`` with the fields set in ``overrides``; INVALID_ARGUMENT naming a bad field. Whether the
    policy fits the bank (k, aggregator, allowed_models) is the router's check."""
    changes = {name: getattr(overrides, name) for name in _OVERRIDABLE if overrides.HasField(name)}
    try:
        policy = msgspec.structs.replace(default, **changes) if changes else default
    except ValueError as exc:
        raise invalid(f"policy.{exc}") from None
    return policy


def query_from_request(request: pb.RouteRequest | pb.AnswerRequest, dim: int, max_chars: int) -> str | np.ndarray:
    """The query of a Route/Answer request: its question text (checked, still to embed) or its embedding."""
    kind = request.WhichOneof("query")
    if kind is None:
        raise invalid("question or embedding is required")
    if kind == "question":
        return question_text(request.question, "question", max_chars)
    return embedding_from_message(request.embedding, "embedding", dim)


def question_text(text: str, field: str, max_chars: int) -> str:
    """``text`` if it is a question the server accepts: not blank, at most ``max_chars`` characters."""
    if not text.strip():
        raise invalid(f"{field} is empty")
    if len(text) > max_chars:
        raise invalid(f"{field} has {len(text)} characters; the limit is {max_chars}")
    return text


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
    return request.seed if request.HasField("seed") else None


def route_response(decision: RouteDecision, bank: Bank, ids: tuple[str, ...], debug: bool) -> pb.RouteResponse:
    """The wire form of ``decision``; with ``debug``, the support questions' text and the referencers'
    outcomes on them."""
    response = pb.RouteResponse(
        referencers=[pb.Referencer(model=m, vote=v) for m, v in zip(decision.referencers, decision.votes)],
        aggregator=decision.aggregator,
        subsets=[pb.Subset(models=s) for s in decision.subsets],
        seed=decision.seed,
        bank_version=decision.bank_version,
    )
    rows = decision.support_rows
    support = response.support
    support.rows.extend(rows)
    support.similarities.extend(decision.support_similarities)
    support.ids.extend([ids[r] for r in rows])
    if debug:
        questions = bank.questions
        support.texts.extend([questions[r].text for r in rows])
        models = [bank.model_index(name) for name in decision.referencers]
        outcomes = np.asarray(bank.capability)[models][:, rows].T.tolist()
        support.outcomes.extend([pb.ModelOutcomes(values=v) for v in outcomes])
    return response


def decision_from_response(response: pb.RouteResponse) -> RouteDecision:
    """The ``RouteDecision`` a RouteResponse carries (client side)."""
    support = response.support
    return RouteDecision(
        referencers=[r.model for r in response.referencers],
        votes=[r.vote for r in response.referencers],
        aggregator=response.aggregator,
        support_rows=list(support.rows),
        support_similarities=list(support.similarities),
        subsets=[list(s.models) for s in response.subsets],
        seed=response.seed,
        bank_version=response.bank_version,
        support_ids=list(support.ids),
        support_texts=list(support.texts),
        support_outcomes=[list(o.values) for o in support.outcomes],
    )


def finite_lam(request: pb.ScoreRequest, default: float) -> float:
    """λ of a Score request (the policy default when unset); INVALID_ARGUMENT unless finite."""
    lam = request.lam if request.HasField("lam") else default
    if not math.isfinite(lam):
        raise invalid(f"lam must be finite, got {lam}")
    return lam
