"""Protobuf ⇄ the baseline strategies' events (``smcs.strategies``) in the Answer stream.

Server side, ``strategy_event`` is the wire form of a ``StrategyPlan``, ``StrategyCall`` or
``StrategyResult``. Client side, ``StrategyEventDecoder`` turns them back, keeping the plan and the
calls received so that the last event is the whole ``StrategyResult``, as in-process runs return it.
"""

from __future__ import annotations

import json

import numpy as np

from smcs._proto import router_pb2 as pb
from smcs.bank import Bank
from smcs.strategies import StrategyCall, StrategyEvent, StrategyPlan, StrategyResult
from smcs.wire.decision import decision_from_response, optional_field, route_response
from smcs.wire.enums import CALL_ROLE, ERROR_KIND, SCORE_KIND


def strategy_event(event: StrategyEvent, bank: Bank, ids: np.ndarray) -> pb.AnswerResponse:
    """The wire form of one strategy event (server side)."""

    if isinstance(event, StrategyPlan):
        plan = pb.StrategyPlanEvent(
            strategy=event.strategy, models=event.models, aggregator=event.aggregator or "", scores=event.scores,
            score_kind=SCORE_KIND.to_wire(event.score_kind), skills=event.skills,
        )
        if event.decision is not None:
            plan.decision.CopyFrom(route_response(event.decision, bank, ids, debug=False))
        return pb.AnswerResponse(plan=plan)
    if isinstance(event, StrategyCall):
        call = pb.StrategyCallEvent(
            model=event.model, role=CALL_ROLE.to_wire(event.role), layer=event.layer, index=event.index, position=event.position,
            seed=event.seed, inputs=event.inputs, text=event.text, error=event.error or "",
            error_kind=ERROR_KIND.to_wire(event.error_kind), latency_s=event.latency_s, prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
        )
        if event.extracted is not None:
            call.extracted = event.extracted
        if event.temperature is not None:
            call.temperature = event.temperature
        return pb.AnswerResponse(call=call)
    result = pb.StrategyResultEvent(
        text=event.text, strategy=event.strategy, votes=event.votes, notes=event.notes,
        params_json=json.dumps(event.params, sort_keys=True), seed=event.seed, bank_version=event.bank_version,
    )
    if event.chosen is not None:
        result.chosen = event.chosen
    return pb.AnswerResponse(strategy_result=result)


class StrategyEventDecoder:
    """The strategy events of one Answer stream, back as Structs (client side)."""

    def __init__(self) -> None:
        self.plan: StrategyPlan | None = None
        self.calls: list[StrategyCall] = []

    def decode(self, message: pb.AnswerResponse) -> StrategyEvent:
        """The event ``message`` carries (its oneof is plan, call or strategy_result); ``ValueError`` for a
        result before any plan."""
        kind = message.WhichOneof("event")
        if kind == "plan":
            p = message.plan
            self.plan = StrategyPlan(
                strategy=p.strategy, models=list(p.models), aggregator=p.aggregator or None, scores=list(p.scores),
                score_kind=SCORE_KIND.from_wire(p.score_kind) or "",  # type: ignore[arg-type]  # one of the kinds
                decision=decision_from_response(p.decision) if p.HasField("decision") else None, skills=dict(p.skills),
            )
            return self.plan
        if kind == "call":
            c = message.call
            self.calls.append(StrategyCall(
                model=c.model, role=CALL_ROLE.from_wire(c.role) or "",  # type: ignore[arg-type]  # one of the roles
                layer=c.layer, index=c.index, position=c.position, seed=c.seed, inputs=list(c.inputs),
                extracted=optional_field(c, "extracted"), text=c.text, error=c.error or None,
                error_kind=ERROR_KIND.from_wire(c.error_kind), latency_s=c.latency_s, prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens, temperature=optional_field(c, "temperature"),
            ))
            return self.calls[-1]
        if kind == "strategy_result" and self.plan is not None:
            r = message.strategy_result
            return StrategyResult(
                text=r.text, strategy=r.strategy, plan=self.plan, calls=list(self.calls),
                chosen=optional_field(r, "chosen"), votes=dict(r.votes), notes=list(r.notes),
                params=json.loads(r.params_json) if r.params_json else {}, seed=r.seed, bank_version=r.bank_version,
            )
        raise ValueError(f"unexpected Answer event {kind!r} (a strategy result needs a plan before it)")
