"""A synchronous host for the step machines of the pipeline and the strategies, scripted by the test."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from smcs.core.messages import Completion
from smcs.core.pipeline import AnswerResult, CallFailed, CallModels, EmbedTexts, Emit, ModelCall, RouteQuestion


class ScriptedHost:
    """Performs steps from ``answer(call) -> Completion | CallFailed`` and ``embed(texts) -> array``; a
    ``RouteQuestion`` is routed in-process by the router it names."""

    def __init__(self, answer: Callable[[ModelCall], Completion | CallFailed], embed: Callable[[list[str]], np.ndarray]) -> None:
        self.answer = answer
        self.embed = embed
        self.steps: list[object] = []

    def run(self, generator) -> AnswerResult:  # type: ignore[no-untyped-def]
        reply = None
        while True:
            try:
                step = generator.send(reply)
            except StopIteration as done:
                return done.value
            self.steps.append(step)
            if isinstance(step, Emit):
                reply = None
            elif isinstance(step, CallModels):
                reply = [self.answer(call) for call in step.calls]
                if step.evidence is not None:  # a synchronous host: each call arrives in order
                    self.steps.extend(Emit(step.evidence(i, result)) for i, result in enumerate(reply))
            elif isinstance(step, EmbedTexts):
                reply = self.embed(step.texts)
            elif isinstance(step, RouteQuestion):
                call = step.call
                reply = step.router.route(call.embedding, seed=call.seed, policy=call.policy, allowed_models=call.allowed_models)
            else:
                raise AssertionError(f"unexpected step {step!r}")

    def calls(self, stage: str) -> list[list[ModelCall]]:
        return [s.calls for s in self.steps if isinstance(s, CallModels) and s.stage == stage]

    def events(self) -> list[object]:
        return [s.event for s in self.steps if isinstance(s, Emit)]


def drive(steps, answer):  # type: ignore[no-untyped-def]
    """A scripted host: ``answer(call)`` for every call of every ``CallModels``; (steps, return value)."""
    seen, reply = [], None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as stop:
            return seen, stop.value
        seen.append(step)
        reply = [answer(call) for call in step.calls] if isinstance(step, CallModels) else None
