"""Cost- and budget-aware routing: expected costs from the bank, willingness to pay, coverage target and
max_cost (smcs.core.costs, smcs.core.budget, Router), and the AIQ of the evaluation (smcs.eval.cost_curve)."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import numpy as np
import pytest

from smcs import Bank, Policy
from smcs._proto import router_pb2 as pb
from smcs.bank import ModelInfo, Question
from smcs.core import Router
from smcs.core.messages import Completion
from smcs.core.pipeline import ModelCall, smcs_pipeline
from smcs.core.budget import budget_plan, covering_k
from smcs.core.costs import CostTable, question_cost
from smcs.errors import InputError
from smcs.eval.cost_curve import aiq, upper_hull
from service_harness import expect_rpc_error, make_config, raw_stub, running_server
from support.hosts import ScriptedHost

DIM = 8


def two_model_bank(path: Path, *, cost_a: float = 1.0, cost_b: float = 0.1, n: int = 10) -> Bank:
    """Every question embeds to the same direction, so every support set is the whole bank and each
    model's normalised vote is its accuracy: A right on 9 of 10, B on 6 of 10; A costs ``cost_a`` per
    question, B ``cost_b`` (recorded in metadata)."""
    a = [1] * 9 + [0]
    b = [1] * 6 + [0] * 4
    questions = [Question(id=f"q{i}", text=f"question {i}", metadata={"cost": {"A": cost_a, "B": cost_b}}) for i in range(n)]
    embeddings = np.tile(np.eye(DIM, dtype=np.float32)[0], (n, 1))
    return Bank.create(path, embeddings=embeddings, capability=[a[:n], b[:n]], questions=questions,
                       models=[ModelInfo(name="A"), ModelInfo(name="B")])


def query() -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[0]


# ------------------------------------------------------------------------------------------ the costs


def test_question_cost_prefers_the_recorded_cost_then_tokens_at_the_prices() -> None:
    model = ModelInfo(name="m", cost_per_input_token=0.5, cost_per_output_token=2.0)
    recorded = Question(id="a", text="", metadata={"cost": {"m": 3.0}, "tokens": {"m": {"prompt": 10, "completion": 1}}})
    tokens = Question(id="b", text="", metadata={"tokens": {"m": {"prompt": 10, "completion": 1}}})
    assert question_cost(recorded, model) == 3.0
    assert question_cost(tokens, model) == 10 * 0.5 + 1 * 2.0
    assert math.isnan(question_cost(Question(id="c", text=""), model))
    assert math.isnan(question_cost(Question(id="d", text="", metadata={"cost": {"m": -1}}), model))
    assert math.isnan(question_cost(Question(id="e", text="", metadata={"cost": {"m": True}}), model))


def test_expected_cost_is_the_similarity_weighted_mean_over_the_support_set(tmp_path: Path) -> None:
    questions = [
        Question(id="q0", text="", metadata={"cost": {"A": 1.0, "B": 4.0}}),
        Question(id="q1", text="", metadata={"cost": {"A": 3.0}}),  # B unknown here: counts at B's mean, 4
        Question(id="q2", text=""),
    ]
    bank = Bank.create(tmp_path / "b", embeddings=np.eye(3, DIM, dtype=np.float32), capability=[[1, 1, 1], [0, 0, 0], [1, 0, 1]],
                       questions=questions, models=[ModelInfo(name="A"), ModelInfo(name="B"), ModelInfo(name="C")])
    table = CostTable.of(bank)
    np.testing.assert_allclose(table.mean[:2], [2.0, 4.0])
    assert math.isnan(table.mean[2]) and table.known.tolist() == [True, True, False]
    expected = table.expected(np.array([0, 1]), np.array([0.25, 0.75]))
    np.testing.assert_allclose(expected[:2], [0.25 * 1.0 + 0.75 * 3.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(table.expected(np.array([], dtype=np.int64), np.array([]))[:2], [2.0, 4.0])


def test_a_bank_without_costs_has_unknown_costs_and_refuses_cost_policies(tmp_path: Path) -> None:
    bank = Bank.create(tmp_path / "b", embeddings=np.eye(2, DIM, dtype=np.float32), capability=[[1, 0], [0, 1]],
                       questions=[Question(id="a", text=""), Question(id="b", text="")], models=[ModelInfo(name="A"), ModelInfo(name="B")])
    router = Router(bank, Policy(k=1, n=1, k_drop=0))
    decision = router.route(query(), seed=0)
    assert decision.costs == [None] and decision.model_costs == [None, None] and decision.expected_cost is None
    for field, value in (("willingness_to_pay", 1.0), ("max_cost", 1.0)):
        with pytest.raises(InputError, match=f"policy {field} needs.*'A', 'B'"):
            router.route(query(), policy=Policy(k=1, n=1, k_drop=0, **{field: value}))


# ------------------------------------------------------------------------------ willingness to pay


@pytest.mark.parametrize(("willingness", "top"), [(2.9, "B"), (3.1, "A"), (100.0, "A"), (0.5, "B")])
def test_the_trade_is_worth_it_exactly_past_the_known_willingness(tmp_path: Path, willingness: float, top: str) -> None:
    """A buys +0.3 accuracy for 0.9 more cost: worth it when W > 0.9 / 0.3 = 3."""
    router = Router(two_model_bank(tmp_path / "b"), Policy(k=1, k_drop=0, n=1))
    decision = router.route(query(), seed=0, policy=Policy(k=1, k_drop=0, n=1, willingness_to_pay=willingness))
    assert decision.referencers == [top]
    assert decision.costs == pytest.approx([1.0 if top == "A" else 0.1], rel=1e-6)


def test_without_willingness_the_paper_ranking_is_unchanged(tmp_path: Path) -> None:
    bank = two_model_bank(tmp_path / "b", cost_a=100.0)
    decision = Router(bank, Policy(k=2, k_drop=1, n=2)).route(query(), seed=5)
    assert decision.referencers == ["A", "B"]
    assert decision.model_costs == pytest.approx([100.0, 0.1], rel=1e-6)
    # the plan: both referencers, then two aggregations by the most accurate model, A
    assert decision.aggregator == "A" and decision.aggregation_cost == pytest.approx(100.0)
    assert decision.expected_cost == pytest.approx(100.1 + 2 * 100.0, rel=1e-6)
    assert decision.plan_notes == []


# ------------------------------------------------------------------------------ the plan's budget


def test_covering_k_is_the_smallest_prefix_reaching_the_target() -> None:
    p = np.array([0.9, 0.6, 0.5])
    assert covering_k(p, 0.9) == 1
    assert covering_k(p, 0.95) == 2  # 1 - 0.1 * 0.4 = 0.96
    assert covering_k(p, 0.99) == 3  # 0.98 never reaches it: all of them
    assert covering_k(np.array([1.0, 0.2]), 1.0) == 1


def test_coverage_target_shrinks_k_and_k_drop(tmp_path: Path) -> None:
    router = Router(two_model_bank(tmp_path / "b"), Policy(k=2, k_drop=1, n=3))
    decision = router.route(query(), seed=1, policy=Policy(k=2, k_drop=1, n=3, coverage_target=0.85))
    assert decision.referencers == ["A"]
    assert all(s == ["A"] for s in decision.subsets)
    assert any("coverage_target=0.85" in note and "K 2 -> 1" in note for note in decision.plan_notes)
    unchanged = router.route(query(), seed=1, policy=Policy(k=2, k_drop=1, n=3, coverage_target=0.95))
    assert unchanged.referencers == ["A", "B"] and unchanged.plan_notes == []


def plan(max_cost: float, n: int = 8) -> tuple[int, int, float, list[str]]:
    p = budget_plan(k=3, k_drop=1, n=n, probabilities=np.array([0.9, 0.8, 0.7]), reference_costs=np.array([1.0, 2.0, 3.0]),
                    aggregation_cost=1.0, coverage_target=None, max_cost=max_cost)
    return p.k, p.n, p.expected_cost, p.notes


def test_max_cost_cuts_n_first_then_k_then_every_aggregation() -> None:
    assert plan(14.0)[:3] == (3, 8, 14.0)  # 6 + 8 fits exactly
    k, n, cost, notes = plan(9.5)
    assert (k, n, cost) == (3, 3, 9.0) and "n 8 -> 3" in notes[0]
    k, n, cost, notes = plan(4.0)  # 6 + 1 is too much: K = 2 (3 + 1 = 4)
    assert (k, n, cost) == (2, 1, 4.0) and "n 8 -> 1, K 3 -> 2" in notes[0]
    k, n, cost, notes = plan(1.5)  # K = 1 with one aggregation is 2: no aggregation
    assert (k, n, cost) == (1, 0, 1.0) and "no aggregation" in notes[0]
    with pytest.raises(InputError, match="max_cost=0.5 is below the cheapest plan"):
        plan(0.5)


def test_max_cost_in_the_router_never_exceeds_the_limit(tmp_path: Path) -> None:
    router = Router(two_model_bank(tmp_path / "b", cost_a=1.0, cost_b=1.0), Policy(k=2, k_drop=1, n=8))
    for limit in (10.0, 6.5, 3.0, 2.0, 1.0):
        decision = router.route(query(), seed=3, policy=Policy(k=2, k_drop=1, n=8, max_cost=limit))
        assert decision.expected_cost <= limit
        spent = len(decision.referencers) * 1.0 + len(decision.subsets) * decision.aggregation_cost
        assert spent == pytest.approx(decision.expected_cost)
    assert len(decision.subsets) == 0 and decision.referencers == ["A"]
    with pytest.raises(InputError, match="max_cost"):
        router.route(query(), seed=3, policy=Policy(k=2, k_drop=1, n=8, max_cost=0.5))


def test_route_many_returns_the_refusal_of_an_unaffordable_plan_beside_the_others(tmp_path: Path) -> None:
    from smcs.core import RouteCall

    router = Router(two_model_bank(tmp_path / "b"), Policy(k=1, k_drop=0, n=1))
    calls = [RouteCall(query(), 0, Policy(k=1, k_drop=0, n=1, max_cost=0.01)), RouteCall(query(), 0)]
    refused, routed = router.route_many(calls)
    assert isinstance(refused, InputError) and "max_cost" in str(refused)
    assert routed.referencers == ["A"]


@pytest.mark.parametrize(("field", "value"), [("willingness_to_pay", 0.0), ("willingness_to_pay", math.inf),
                                              ("coverage_target", 0.0), ("coverage_target", 1.5), ("max_cost", -1.0),
                                              ("max_cost", math.nan)])
def test_bad_budget_fields_name_themselves(field: str, value: float) -> None:
    with pytest.raises(InputError, match=field):
        Policy(**{field: value})


# ------------------------------------------------------------------------------------ the pipeline


def test_an_answer_under_max_cost_makes_only_the_calls_the_plan_affords(tmp_path: Path) -> None:
    """Three models at 1.0 a call and a limit of 2.5: n is cut first (to 1: 3 + 1 = 4 > 2.5), then K (2 + 1 = 3
    > 2.5; 1 + 1 = 2 fits): one reference and one aggregation. The quorum follows the K routed with (the
    policy's ⌈3/2⌉ = 2 would refuse one reference), and the notes say what was cut."""
    questions = [Question(id=f"q{i}", text="", metadata={"cost": {"A": 1.0, "B": 1.0, "C": 1.0}}) for i in range(4)]
    bank = Bank.create(tmp_path / "b", embeddings=np.tile(np.eye(DIM, dtype=np.float32)[0], (4, 1)),
                       capability=[[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], questions=questions,
                       models=[ModelInfo(name=n) for n in "ABC"])
    policy = Policy(k=3, k_drop=1, n=4, max_cost=2.5)
    decision = Router(bank, policy).route(query(), seed=2)
    assert decision.referencers == ["A"] and decision.subsets == [["A"]] and decision.expected_cost == pytest.approx(2.0)

    def answer(call: ModelCall) -> Completion:
        return Completion(text=f"{call.model} says 4", token_logprobs=[-0.1, -0.2])

    host = ScriptedHost(answer, lambda texts: np.tile(np.eye(DIM)[0], (len(texts), 1)))
    result = host.run(smcs_pipeline(decision, "2 + 2?", policy=policy))
    calls = [call for step in host.calls("reference") + host.calls("aggregate") for call in step]
    assert [c.model for c in calls] == ["A", "A"]
    assert result.notes[: len(decision.plan_notes)] == decision.plan_notes and "K 3 -> 1" in result.notes[0]
    assert result.source == "aggregation" and result.text == "A says 4"


# ---------------------------------------------------------------------------------------- the CLI


def test_smcs_route_takes_the_budget_options_and_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from smcs.cli.main import main

    two_model_bank(tmp_path / "b")
    np.save(tmp_path / "q.npy", query())
    common = ["route", "--bank", str(tmp_path / "b"), "--embedding", str(tmp_path / "q.npy"), "--seed", "1", "--k", "2", "--n", "4"]
    assert main(common + ["--willingness-to-pay", "2", "--max-cost", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "expected cost" in out and "max_cost=1.5" in out
    table = [line.split()[0] for line in out.splitlines() if line.startswith(("A ", "B "))]
    assert table == ["B"]  # at W = 2 B is worth more, and 1.5 affords one referencer and one aggregation
    assert main(common + ["--willingness-to-pay", "-1"]) == 2
    assert "willingness_to_pay must be" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- over gRPC


def test_route_over_grpc_takes_the_budget_fields_and_reports_costs(tmp_path: Path) -> None:
    path = tmp_path / "b"
    two_model_bank(path)
    config = make_config(policy=Policy(k=1, k_drop=0, n=1))
    with running_server(path, config) as handle, raw_stub(handle.target) as stub:
        embedding = pb.Embedding(values=query().tolist())
        cheap = stub.Route(pb.RouteRequest(embedding=embedding, seed=1, policy=pb.PolicyOverrides(willingness_to_pay=2.0)))
        assert [r.model for r in cheap.referencers] == ["B"]
        assert cheap.referencers[0].expected_cost == pytest.approx(0.1, rel=1e-6)
        debug = stub.Route(pb.RouteRequest(embedding=embedding, seed=1, debug=True, policy=pb.PolicyOverrides(k=2, n=4, max_cost=1.5)))
        assert debug.expected_cost <= 1.5 and len(debug.subsets) < 4 and debug.plan_notes
        assert [c.model for c in debug.model_costs] == ["A", "B"]
        expect_rpc_error(
            lambda: stub.Route(pb.RouteRequest(embedding=embedding, policy=pb.PolicyOverrides(willingness_to_pay=-1.0))),
            grpc.StatusCode.INVALID_ARGUMENT, "willingness_to_pay",
        )


# ------------------------------------------------------------------------------------------- AIQ


def test_upper_hull_keeps_the_non_decreasing_convex_frontier() -> None:
    points = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (2.5, 0.5), (4.0, 0.9), (0.5, 0.1)]
    assert upper_hull(points) == [(0.5, 0.1), (1.0, 0.5), (3.0, 0.9)]


def test_aiq_integrates_the_hull_over_the_cost_range() -> None:
    assert aiq([(0.0, 1.0)], 0.0, 2.0) == pytest.approx(1.0)
    assert aiq([(1.0, 0.5)], 0.0, 2.0) == pytest.approx(0.25)  # 0 below its cost, 0.5 above
    assert aiq([(1.0, 0.5), (3.0, 0.9)], 0.0, 4.0) == pytest.approx((2 * 0.7 + 0.9) / 4)
    assert aiq([], 0.0, 1.0) == 0.0
    with pytest.raises(ValueError):
        aiq([(0.0, 1.0)], 1.0, 1.0)
