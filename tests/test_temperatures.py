"""Per-role temperatures (issue 19, part 4): each strategy's roles, the SMCS pipeline and the data jobs send
their role's temperature with every call (``ModelCall.generation``), defaulting to the papers' values, and
the evidence records it; through a loopback OpenAI-compatible server it is the request's ``temperature``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fault_server import FaultServer, Reply
from support.e2e import write_config
from support.hosts import ScriptedHost, drive
from smcs.bank import Bank, EmbedderInfo, ModelInfo, Question
from smcs.cli.main import main
from smcs.core import Policy, Router
from smcs.core.messages import Completion
from smcs.core.pipeline import CallModels, ModelCall, smcs_pipeline
from smcs.core.prompts import AGGREGATOR_PROMPT
from smcs.data.preference import preference_steps
from smcs.errors import InputError
from smcs.strategies import STRATEGIES, StrategyContext, StrategyError, StrategyResult, parse_params

MODELS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    embeddings = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    bank = Bank.create(
        tmp_path_factory.mktemp("temperatures") / "b", embeddings=embeddings,
        capability=np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1]], dtype=np.int8),
        questions=[Question(id=f"q{i}", text=f"question {i}") for i in range(4)],
        models=[ModelInfo(name=m) for m in MODELS], embedder=EmbedderInfo(id="test", dim=3),
    )
    return Router(bank, Policy(k=2, n_base=2, gamma=0.5, n=2))


def answer(call: ModelCall) -> Completion:
    aggregating = AGGREGATOR_PROMPT in call.messages[0].content
    return Completion(text=f"{call.model} {'aggregates' if aggregating else 'answers'} 4", token_logprobs=[-0.1])


def embed(texts: list[str]) -> np.ndarray:
    return np.stack([np.random.default_rng(len(t)).standard_normal(4) for t in texts])


def sent(host: ScriptedHost) -> list[float | None]:
    """The temperature each call carried on the wire to the host, in call order (None: no override)."""
    calls = [c for s in host.steps if isinstance(s, CallModels) for c in s.calls]
    return [c.generation.temperature if c.generation is not None else None for c in calls]


def run(router: Router, name: str, **options: object) -> tuple[StrategyResult, ScriptedHost]:
    ctx = StrategyContext.from_router(router, "What is 2+2?", MODELS, seed=3, query=np.array([1.0, 0.0, 0.0]))
    host = ScriptedHost(answer, embed)
    return host.run(STRATEGIES[name].run(ctx, parse_params(name, options))), host


@pytest.mark.parametrize(("name", "options", "roles"), [
    # the papers' defaults: Self-MoA samples (and MoA proposers) at 0.7, aggregates at 0
    ("moa", {}, {"proposer": 0.7, "aggregator": 0.0}),
    ("moa-lite", {}, {"proposer": 0.7, "aggregator": 0.0}),
    ("self-moa", {"samples": "3"}, {"sample": 0.7, "aggregator": 0.0}),
    ("self-moa-seq", {"samples": "4", "window": "2", "synthesis_slots": "1"}, {"sample": 0.7, "aggregator": 0.0}),
    ("self-consistency", {}, {"sample": 0.7}),
    ("majority-vote", {}, {"voter": None}),
    ("simple-router", {}, {"answerer": None}),
    ("single", {"model": "beta"}, {"answerer": None}),
    ("symbolic-moe", {}, {"expert": None, "aggregator": None}),
    # each overridable from the strategy's parameters
    ("moa-lite", {"proposer_temperature": "0.2", "aggregator_temperature": "1.1"}, {"proposer": 0.2, "aggregator": 1.1}),
    ("self-moa", {"sample_temperature": "1.5", "aggregator_temperature": "null"}, {"sample": 1.5, "aggregator": None}),
    ("majority-vote", {"voter_temperature": "0"}, {"voter": 0.0}),
    ("symbolic-moe", {"expert_temperature": "0.9", "aggregator_temperature": "0.1"}, {"expert": 0.9, "aggregator": 0.1}),
])
def test_each_role_sends_its_temperature_and_records_it(router, name, options, roles):
    result, host = run(router, name, **options)
    assert {c.role for c in result.calls} == set(roles)
    assert sent(host) == [roles[c.role] for c in result.calls]
    assert all(c.temperature == roles[c.role] for c in result.calls)
    for role, temperature in roles.items():
        assert result.params[f"{role}_temperature"] == temperature


def test_the_fallback_aggregator_samples_at_the_aggregators_temperature(router):
    failing = lambda call: Completion(text="", token_logprobs=[]) if call.model == "gamma" and AGGREGATOR_PROMPT in call.messages[0].content else answer(call)  # noqa: E731
    ctx = StrategyContext.from_router(router, "Q?", MODELS, seed=3, query=np.array([1.0, 0.0, 0.0]))
    host = ScriptedHost(failing, embed)
    result = host.run(STRATEGIES["moa-lite"].run(ctx, parse_params("moa-lite", {"aggregator_temperature": "0.3"})))
    aggregations = [c for c in result.calls if c.role == "aggregator"]
    assert [c.model for c in aggregations] == ["gamma", "alpha"] and [c.temperature for c in aggregations] == [0.3, 0.3]


def test_temperatures_out_of_range_are_errors_naming_the_option():
    with pytest.raises(StrategyError, match="option aggregator_temperature"):
        parse_params("self-moa", {"aggregator_temperature": "-0.1"})
    with pytest.raises(StrategyError, match="option proposer_temperature"):
        parse_params("moa", {"proposer_temperature": "2.5"})


def test_smcs_sends_the_models_own_temperature_unless_its_parameters_set_one(router):
    _, host = run(router, "smcs")
    assert set(sent(host)) == {None}  # the paper's 0.7 is each model's configured default
    result, host = run(router, "smcs", reference_temperature="0.4", aggregator_temperature="0")
    references = [c for s in host.steps if isinstance(s, CallModels) and s.stage == "reference" for c in s.calls]
    aggregations = [c for s in host.steps if isinstance(s, CallModels) and s.stage == "aggregate" for c in s.calls]
    assert {c.generation.temperature for c in references} == {0.4} and {c.generation.temperature for c in aggregations} == {0.0}  # type: ignore[union-attr]
    assert {r.temperature for r in result.references} == {0.4} and {a.temperature for a in result.aggregations} == {0.0}  # type: ignore[attr-defined]


def test_the_pipeline_refuses_a_bad_temperature(router):
    decision = router.route(np.array([1.0, 0.0, 0.0]), seed=1)
    with pytest.raises(InputError, match="aggregator_temperature"):
        next(smcs_pipeline(decision, "Q?", policy=router.policy, aggregator_temperature=-1.0))


def test_preference_samples_at_moaas_temperature_and_judges_at_theirs():
    def calls_of(steps):  # type: ignore[no-untyped-def]
        """Every model call of ``steps`` (each answered with a text) and what they returned."""
        seen, value = drive(steps, lambda c: Completion(text=f"text {c.seed}", token_logprobs=[]))
        return [c for step in seen if isinstance(step, CallModels) for c in step.calls], value

    calls, outcome = calls_of(preference_steps("1", "Q?", policy_model="p", samples=2, judges=["j"], aggregator="a", criteria_model="a", seed=4))
    assert [c.generation.temperature for c in calls if c.model == "p"] == [0.8, 0.8]  # type: ignore[union-attr]
    assert all(c.generation is None for c in calls if c.model != "p")
    record = outcome.record or outcome.skipped
    assert record["metadata"]["sample_temperature"] == 0.8 and record["metadata"]["judge_temperature"] is None
    calls, _ = calls_of(preference_steps("1", "Q?", policy_model="p", samples=2, judges=["j"], aggregator="a", criteria_model="a", seed=4,
                                      sample_temperature=None, judge_temperature=0.0))
    assert all(c.generation is None for c in calls if c.model == "p")
    assert {c.generation.temperature for c in calls if c.model != "p"} == {0.0}  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- on the HTTP wire


def responder(body: dict) -> Reply:
    if "Responses from models" in body["messages"][0]["content"]:
        return Reply.ok(f"{body['model']} synthesised 156")
    return Reply.ok(f"{body['model']} says 156")


def test_the_temperature_reaches_the_openai_compatible_server(text_bank: Path, tmp_path: Path, capsys):
    with FaultServer(responder=responder) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url)
        argv = ["ask", "What is 12 times 13?", "--bank", str(text_bank), "--config", str(config), "--seed", "3", "--quiet", "--json"]
        assert main([*argv, "--strategy", "moa-lite"]) == 0
        moa = json.loads(capsys.readouterr().out)
        moa_bodies = server.bodies
        assert main([*argv, "--option", "reference_temperature=0.35"]) == 0  # the default strategy: smcs
        smcs_bodies = server.bodies[len(moa_bodies):]
    proposals = [b for b in moa_bodies if "Responses from models" not in b["messages"][0]["content"]]
    (aggregation,) = [b for b in moa_bodies if "Responses from models" in b["messages"][0]["content"]]
    assert len(proposals) == 3 and {b["temperature"] for b in proposals} == {0.7} and aggregation["temperature"] == 0.0
    assert [c["temperature"] for c in moa["calls"]] == [0.7, 0.7, 0.7, 0.0]
    references = [b for b in smcs_bodies if "Responses from models" not in b["messages"][0]["content"]]
    aggregations = [b for b in smcs_bodies if "Responses from models" in b["messages"][0]["content"]]
    assert {b["temperature"] for b in references} == {0.35}
    assert aggregations and {b["temperature"] for b in aggregations} == {0.7}  # the models' configured temperature
