"""Protobuf ⇄ ``RouteDecision``: ``route_response`` is a decision's wire form (server side) and
``decision_from_response`` turns it back into the ``RouteDecision`` Struct the in-process router returns
(client side), so callers see one type whichever way they route."""

from __future__ import annotations

import numpy as np

from .._proto import router_pb2 as pb
from ..bank import Bank
from ..core import RouteDecision
from .enums import SCORER


def route_response(decision: RouteDecision, bank: Bank, ids: np.ndarray, *, debug: bool, support: bool = True) -> pb.RouteResponse:
    """The wire form of ``decision``: with ``support`` (or ``debug``), its support set (``ids``: the bank's
    question ids, an object array, indexed by the support rows); with ``debug``, also the support
    questions' text, the referencers' outcomes on them and every model's probability."""
    response = pb.RouteResponse(
        referencers=[
            pb.Referencer(model=m, vote=v, probability=p, expected_cost=c)
            for m, v, p, c in zip(decision.referencers, decision.votes, decision.probabilities, decision.costs, strict=True)
        ],
        aggregator=decision.aggregator,
        subsets=[pb.Subset(models=s) for s in decision.subsets],
        seed=decision.seed,
        bank_version=decision.bank_version,
        scorer=SCORER.to_wire(decision.scorer),
        out_of_bank=decision.out_of_bank,
    )
    if decision.k_clamped_from is not None:
        response.k_clamped_from = decision.k_clamped_from
    response.drop_probabilities.extend(decision.drop_probabilities)
    response.duplicate_subsets = decision.duplicate_subsets
    if decision.expected_cost is not None:
        response.expected_cost = decision.expected_cost
    if decision.aggregation_cost is not None:
        response.aggregation_cost = decision.aggregation_cost
    response.plan_notes.extend(decision.plan_notes)
    if not (support or debug):
        return response
    rows = decision.support_rows
    wire = response.support
    wire.rows.extend(rows)
    wire.similarities.extend(decision.support_similarities)
    wire.ids.extend(ids[np.asarray(rows, dtype=np.int64)].tolist())
    if debug:
        questions = bank.questions
        wire.texts.extend([questions[r].text for r in rows])
        models = [bank.model_index(name) for name in decision.referencers]
        outcomes = np.asarray(bank.capability)[models][:, rows].T.tolist()
        wire.outcomes.extend([pb.ModelOutcomes(values=v) for v in outcomes])
        response.model_probabilities.extend(
            [pb.ModelProbability(model=m, probability=p) for m, p in zip(bank.model_names, decision.model_probabilities, strict=True)]
        )
        response.model_costs.extend(
            [pb.ModelCost(model=m, expected_cost=c) for m, c in zip(bank.model_names, decision.model_costs, strict=True)]
        )
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
        scorer=SCORER.from_wire(response.scorer) or "",
        probabilities=[r.probability for r in response.referencers],
        model_probabilities=[m.probability for m in response.model_probabilities],
        out_of_bank=response.out_of_bank,
        k_clamped_from=response.k_clamped_from if response.HasField("k_clamped_from") else None,
        drop_probabilities=list(response.drop_probabilities),
        duplicate_subsets=response.duplicate_subsets,
        costs=[optional_field(r, "expected_cost") for r in response.referencers],
        model_costs=[optional_field(m, "expected_cost") for m in response.model_costs],
        aggregation_cost=optional_field(response, "aggregation_cost"),
        expected_cost=optional_field(response, "expected_cost"),
        plan_notes=list(response.plan_notes),
    )


def optional_field(message: object, name: str) -> float | None:
    """The value of ``message``'s optional field ``name``, None when unset."""
    return getattr(message, name) if message.HasField(name) else None  # type: ignore[attr-defined]
