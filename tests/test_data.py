"""``smcs data sft|preference|opinions``: the MoA pairwise judge on a scripted host, the resumable job
runner, and each job end to end through ``add_data_parser`` against loopback OpenAI-compatible models
(``FaultServer``) over a tiny bank embedded with the real ONNX model."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from fault_server import FaultServer, Reply
from support.e2e import E2E_MODELS as MODELS
from support.e2e import write_config
from support.hosts import drive

from smcs.core.messages import Completion
from smcs.core.pipeline import CallFailed, CallModels, Emit
from smcs.cli.data import add_data_parser
from smcs.data.jobs import RecordLog, read_instructions, skipped_path
from smcs.data.preference import PairJudgement, PreferenceOutcome, judge_pair, preference_steps
from smcs.data.prompts import CRITERIA, DEFAULT_CRITERIA, parse_criteria, parse_verdict

CRITERIA_ANSWER = "Selected Criteria:\n1. Accuracy\n2. Depth\n3. Clarity\n\nExplanation: facts matter here."


def done(text: str) -> Completion:
    return Completion(text=text, token_logprobs=[])


def shown(call) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The responses a judge's prompt shows as A and B."""
    user = call.messages[-1].content
    a = re.search(r"\[Assistant A response\]\n(.*?)\n\[End of A\]", user, re.S)
    b = re.search(r"\[Assistant B response\]\n(.*?)\n\[End of B\]", user, re.S)
    assert a and b, user
    return a.group(1), b.group(1)


def judging(better, *, verdict_for=None, criteria=CRITERIA_ANSWER):  # type: ignore[no-untyped-def]
    """Answers for the judge's calls: the criteria, an evaluation per proposer, and the aggregator's
    verdict for the response ``better(a, b)`` returns (``verdict_for(a, b)`` overrides the marker)."""

    def answer(call):  # type: ignore[no-untyped-def]
        first = call.messages[0].content
        if "Selected Criteria" in call.messages[-1].content:
            return done(criteria)
        a, b = shown(call)
        if first.startswith("You are an impartial expert evaluator"):
            return done(f"{call.model} finds {better(a, b)} stronger")
        assert first.startswith("You are an expert meta-evaluator")
        if verdict_for is not None:
            return done(verdict_for(a, b))
        return done("A is better. [[A]]" if better(a, b) == a else "B is better. [[B]]")

    return answer


# --------------------------------------------------------------------------------- prompt parsing


def test_parse_criteria_reads_the_selected_three_in_order() -> None:
    assert parse_criteria(CRITERIA_ANSWER) == ["Accuracy", "Depth", "Clarity"]
    assert parse_criteria("selected criteria:\n1. **Safety**\n2. relevance\n3. Instruction Adherence\nExplanation: Accuracy") == [
        "Safety", "Relevance", "Instruction adherence"]
    assert parse_criteria("Selected Criteria:\n1. Accuracy\n2. Accuracy\n3. Wit\nExplanation: Depth and Clarity") is None


def test_parse_verdict_takes_the_last_marker() -> None:
    assert parse_verdict("First [[B]] seemed right, but finally [[A]]") == "A"
    assert parse_verdict("Verdict: [**B**]") == "B"
    assert parse_verdict("[[ B ]]") == "B"
    assert parse_verdict("Assistant A is better") is None


# --------------------------------------------------------------------------- the judge generator

JUDGES = ["j1", "j2"]


def test_judge_pair_asks_criteria_then_proposers_in_both_orders_then_the_aggregator() -> None:
    good, bad = "Paris is the capital of France.", "Lyon is the capital of France."
    steps, result = drive(
        judge_pair("What is the capital of France?", (good, bad), (0, 1), judges=JUDGES, aggregator="agg", criteria_model="crit", seed=9),
        judging(lambda a, b: a if a == good else b),
    )
    filter_step, proposers, aggregators, emitted = steps
    assert isinstance(filter_step, CallModels) and filter_step.stage == "reference"
    (filter_call,) = filter_step.calls
    assert filter_call.model == "crit" and shown(filter_call) == (good, bad)
    assert all(name in filter_call.messages[-1].content for name in CRITERIA)
    assert proposers.stage == "reference" and [c.model for c in proposers.calls] == ["j1", "j2", "j1", "j2"]
    assert [shown(c) for c in proposers.calls] == [(good, bad), (good, bad), (bad, good), (bad, good)]  # the second pass swaps
    for call in proposers.calls:
        assert all(f"- {c}:" in call.messages[0].content for c in ("Accuracy", "Depth", "Clarity"))
        assert "Safety" not in call.messages[0].content
    assert len({c.seed for c in proposers.calls} | {filter_call.seed} | {c.seed for c in aggregators.calls}) == 7
    assert aggregators.stage == "aggregate" and [c.model for c in aggregators.calls] == ["agg", "agg"]
    assert [shown(c) for c in aggregators.calls] == [(good, bad), (bad, good)]
    first_agg = aggregators.calls[0].messages[-1].content
    assert "Evaluation 1:\nj1 finds Paris" in first_agg and "Evaluation 2:\nj2 finds Paris" in first_agg
    assert "- Depth:" in aggregators.calls[1].messages[0].content
    assert isinstance(emitted, Emit) and emitted.event == result
    assert isinstance(result, PairJudgement) and result.criteria == ["Accuracy", "Depth", "Clarity"]
    assert [p.verdict for p in result.passes] == ["A", "B"] and [p.winner for p in result.passes] == [0, 0]
    assert result.winner == 0 and result.consistent and result.notes == []


def test_judge_pair_verdicts_that_disagree_are_a_tie() -> None:
    _, result = drive(
        judge_pair("Q?", ("x", "y"), (2, 3), judges=JUDGES, aggregator="agg", criteria_model="agg", seed=1),
        judging(lambda a, b: a, verdict_for=lambda a, b: "[[A]]"),  # position bias: always the first shown
    )
    assert [p.winner for p in result.passes] == [2, 3]
    assert result.winner is None and not result.consistent and "disagree" in result.notes[-1]


def test_judge_pair_falls_back_to_default_criteria_and_survives_failed_judges() -> None:
    def answer(call):  # type: ignore[no-untyped-def]
        if call.model == "j1":
            return CallFailed(kind="timeout", message="slow")
        if "Selected Criteria" in call.messages[-1].content:
            return done("I like all of them.")
        return judging(lambda a, b: a if a == "y" else b)(call)

    steps, result = drive(judge_pair("Q?", ("x", "y"), (0, 1), judges=JUDGES, aggregator="agg", criteria_model="agg", seed=1), answer)
    assert result.criteria == list(DEFAULT_CRITERIA) and "named no three known criteria" in result.notes[0]
    assert all(f"- {c}:" in steps[1].calls[0].messages[0].content for c in DEFAULT_CRITERIA)
    assert [e.error is not None for e in result.passes[0].evaluations] == [True, False]
    assert "Evaluation 2" not in steps[2].calls[0].messages[-1].content  # only j2's evaluation is numbered
    assert result.winner == 1 and result.consistent


def test_judge_pair_without_any_evaluation_gives_no_verdict() -> None:
    steps, result = drive(
        judge_pair("Q?", ("x", "y"), (0, 1), judges=["j1"], aggregator="agg", criteria_model="agg", seed=1),
        lambda call: CallFailed(kind="http", message="down"),
    )
    assert len(steps) == 3 and isinstance(steps[2], Emit)  # no aggregator call without an evaluation
    assert result.winner is None and result.criteria == list(DEFAULT_CRITERIA) and all(p.error for p in result.passes)


def rank(text: str) -> int:
    return int(re.search(r"rank (\d+)", text).group(1))  # type: ignore[union-attr]


def test_preference_steps_chose_the_most_wins_and_rejects_the_fewest() -> None:
    texts = ["rank 2", "rank 5", "rank 1", "rank 3"]
    sampled = []

    def answer(call):  # type: ignore[no-untyped-def]
        if call.model == "pol":
            sampled.append(call)
            return done(texts[len(sampled) - 1])
        return judging(lambda a, b: a if rank(a) > rank(b) else b)(call)

    steps, outcome = drive(preference_steps("i1", "Q?", policy_model="pol", samples=4, judges=JUDGES, aggregator="agg",
                                            criteria_model="agg", seed=5), answer)
    assert len({c.seed for c in sampled}) == 4 and all(c.messages[-1].content == "Q?" for c in sampled)
    assert sum(isinstance(s, Emit) and isinstance(s.event, PairJudgement) for s in steps) == 6  # all 4·3/2 pairs
    assert isinstance(outcome, PreferenceOutcome) and outcome.skipped is None
    record = outcome.record
    assert record["chosen"] == "rank 5" and record["rejected"] == "rank 1" and record["prompt"] == "Q?"
    assert record["scores"] == [1.0, 3.0, 0.0, 2.0] and record["consistent"] is True
    assert {(j["a"], j["b"]) for j in record["judgements"]} == {(1, 2), (2, 1)}
    assert record["criteria"] == ["Accuracy", "Depth", "Clarity"] and all(j["evaluations"] for j in record["judgements"])


def test_preference_steps_skips_when_every_pair_ties_or_samples_repeat() -> None:
    def biased(call):  # type: ignore[no-untyped-def]
        if call.model == "pol":
            return done(f"sample {call.seed}")
        return judging(lambda a, b: a, verdict_for=lambda a, b: "[[A]]")(call)

    _, outcome = drive(preference_steps("i1", "Q?", policy_model="pol", samples=3, judges=JUDGES, aggregator="agg",
                                        criteria_model="agg", seed=5), biased)
    assert outcome.record is None and "no pair was decided" in outcome.skipped["reason"] and outcome.skipped["id"] == "i1"
    steps, outcome = drive(preference_steps("i2", "Q?", policy_model="pol", samples=3, judges=JUDGES, aggregator="agg",
                                            criteria_model="agg", seed=5), lambda call: done("the same text"))
    assert len(steps) == 2 and "fewer than two distinct samples" in outcome.skipped["reason"]


# ------------------------------------------------------------------------------------- job runner


def test_read_instructions_defaults_ids_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"instruction": "a"}\n\n{"id": 7, "instruction": "b", "source": "x"}\n')
    assert [(i.id, i.instruction, i.line) for i in read_instructions(path)] == [("1", "a", 1), ("7", "b", 3)]
    for text, why in [('{"instruction": "a"}\n{"prompt": "b"}\n', ":2: Object missing required field `instruction`"),
                      ('{"id": "x", "instruction": "a"}\n{"id": "x", "instruction": "b"}\n', ":2: id 'x' is used again (first on line 1)"),
                      ('{"instruction": "  "}\n', ":1: the instruction is blank"), ("not json\n", ":1: ")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{path}{why}")):
            read_instructions(path)


def test_record_log_cuts_a_partial_line_and_names_a_foreign_one(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "1", "x": 1}\n{"id": 2}\n{"id": "3", "x"')
    log = RecordLog(out)
    assert log.done == {"1", "2"}
    log.append({"id": "4"})
    log.close()
    assert out.read_bytes() == b'{"id": "1", "x": 1}\n{"id": 2}\n{"id":"4"}\n'
    out.write_text('{"id": "1"}\n{"no": "id"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{out}:2: not a record of this job")):
        RecordLog(out)
    assert skipped_path(tmp_path / "pairs.jsonl") == tmp_path / "pairs.skipped.jsonl"


# ------------------------------------------------------------------------------------ end to end

WITH_POLICY = (*MODELS, "pol")  # the bank's models and the policy model to align
INSTRUCTIONS = [{"id": "hamlet", "instruction": "Who wrote Hamlet?"}, {"instruction": "Name a prime number."},
                {"id": 3, "instruction": "What is 12 times 13?"}]


def shown_in(body: dict) -> tuple[str, str]:
    user = body["messages"][-1]["content"]
    a = re.search(r"\[Assistant A response\]\n(.*?)\n\[End of A\]", user, re.S)
    b = re.search(r"\[Assistant B response\]\n(.*?)\n\[End of B\]", user, re.S)
    assert a and b
    return a.group(1), b.group(1)


def respond(body: dict) -> Reply:
    """Canned answers by model and prompt: the policy writes "draft N" by seed, judges prefer the draft
    with the larger N, MoA proposers and aggregators say who they are."""
    system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
    user = body["messages"][-1]["content"]
    if body["model"] == "pol":
        return Reply.ok(f"draft {body['seed'] % 97} for {user}")
    if "Selected Criteria" in user:
        return Reply.ok(CRITERIA_ANSWER)
    if system.startswith("You are an impartial expert evaluator") or system.startswith("You are an expert meta-evaluator"):
        a, b = (int(re.match(r"draft (\d+)", t).group(1)) for t in shown_in(body))  # type: ignore[union-attr]
        return Reply.ok(f"{body['model']} judges: " + ("[[A]]" if a > b else "[[B]]"))
    if "Responses from models" in system:
        return Reply.ok(f"{body['model']} synthesised an answer to {user}")
    return Reply.ok(f"{body['model']} says: {user}")


def run_data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smcs")
    add_data_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(["data", *argv])
    return args.run(args)


def lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture()
def instructions(tmp_path: Path) -> Path:
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in INSTRUCTIONS))
    return path


def test_data_sft_writes_moa_lite_answers_and_resumes(text_bank, instructions, tmp_path, capsys):
    out = tmp_path / "sft.jsonl"
    out.write_bytes(b'{"id": "hamlet", "messages": [], "metadata": {}}\n{"id": "2", "mess')  # one done, one cut short
    with FaultServer(responder=respond) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url, MODELS)
        argv = ["sft", str(instructions), "--out", str(out), "--config", str(config), "--bank", str(text_bank), "--concurrency", "2"]
        assert run_data(argv) == 0
        asked = [b["messages"][-1]["content"] for b in server.bodies]
        assert run_data(argv) == 0  # all done: nothing is asked again
        calls = len(server.bodies)
    err = capsys.readouterr().err
    records = lines(out)
    assert records[0] == {"id": "hamlet", "messages": [], "metadata": {}}  # not redone
    records[1:] = sorted(records[1:], key=lambda r: r["id"])  # two at once: in either order
    assert [r["id"] for r in records] == ["hamlet", "2", "3"]
    assert "Who wrote Hamlet?" not in asked and calls == len(asked) == 2 * 4  # 3 proposers + aggregator each
    for record, item in zip(records[1:], INSTRUCTIONS[1:]):
        user, assistant = record["messages"]
        assert user == {"role": "user", "content": item["instruction"]}
        assert assistant == {"role": "assistant", "content": f"m-c synthesised an answer to {item['instruction']}"}
        assert record["metadata"]["strategy"] == "moa-lite" and sorted(record["metadata"]["models"]) == list(MODELS)
        assert isinstance(record["metadata"]["seed"], int)
    assert records[1]["metadata"]["seed"] != records[2]["metadata"]["seed"]
    assert "sft " in err and "2 written, 0 skipped, 0 failed, 1 already done, of 3" in err


def test_data_sft_takes_another_strategy_and_reports_failures(text_bank, instructions, tmp_path, capsys):
    out = tmp_path / "single.jsonl"
    with FaultServer(responder=lambda body: Reply.error(500) if "prime" in body["messages"][-1]["content"] else respond(body)) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url, MODELS)
        status = run_data(["sft", str(instructions), "--out", str(out), "--config", str(config), "--bank", str(text_bank),
                           "--strategy", "single", "--option", "model=m-b", "--quiet"])
    err = capsys.readouterr().err
    records = sorted(lines(out), key=lambda r: r["id"], reverse=True)
    assert status == 1 and [r["id"] for r in records] == ["hamlet", "3"]
    assert records[0]["messages"][1]["content"] == "m-b says: Who wrote Hamlet?" and records[0]["metadata"]["models"] == ["m-b"]
    assert "failed 2: " in err and "run the same command again" in err


def test_data_sft_bad_option_names_it(text_bank, instructions, tmp_path):
    with pytest.raises(ValueError, match="strategy moa-lite: unknown option layer"):
        run_data(["sft", str(instructions), "--out", str(tmp_path / "o.jsonl"), "--option", "layer=3"])


def test_data_preference_writes_judged_pairs_and_resumes(instructions, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    with FaultServer(responder=respond) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url, WITH_POLICY)
        argv = ["preference", str(instructions), "--out", str(out), "--config", str(config), "--policy-model", "pol",
                "--samples", "3", "--judges", "m-a,m-b", "--aggregator", "m-c"]
        out.write_bytes(b'{"id": "2", "prompt": "kept"}\n{"id": "3", "pro')
        assert run_data(argv) == 0
        first = len(server.bodies)
        assert run_data(argv) == 0
        assert len(server.bodies) == first
        bodies = server.bodies
    records = lines(out)
    assert sorted(r["id"] for r in records[1:]) == ["3", "hamlet"]
    assert records[0] == {"id": "2", "prompt": "kept"}
    assert not any("prime" in json.dumps(b) for b in bodies)  # the pre-written record is not redone
    # per instruction: 3 samples, then 3 pairs × (criteria + 2 judges × 2 orders + 2 aggregations)
    assert first == 2 * (3 + 3 * (1 + 4 + 2))
    for record in records[1:]:
        assert {"id", "prompt", "chosen", "rejected", "judgements", "criteria"} <= set(record)
        assert record["chosen"] != record["rejected"]
        n_chosen, n_rejected = (int(re.match(r"draft (\d+)", record[k]).group(1)) for k in ("chosen", "rejected"))  # type: ignore[union-attr]
        assert n_chosen > n_rejected and record["consistent"] is True
        assert len(record["judgements"]) == 2 and {j["aggregator"] for j in record["judgements"]} == {"m-c"}
        assert [e["model"] for e in record["judgements"][0]["evaluations"]] == ["m-a", "m-b"]
        assert record["criteria"] == ["Accuracy", "Depth", "Clarity"] and record["metadata"]["judges"] == ["m-a", "m-b"]
    assert not skipped_path(out).exists() or lines(skipped_path(out)) == []
    assert "preference " in capsys.readouterr().err


def test_data_preference_records_skips_and_does_not_redo_them(instructions, tmp_path):
    out = tmp_path / "pairs.jsonl"

    def same_text(body: dict) -> Reply:
        return Reply.ok("one answer") if body["model"] == "pol" else respond(body)

    with FaultServer(responder=same_text) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url, WITH_POLICY)
        argv = ["preference", str(instructions), "--out", str(out), "--config", str(config), "--policy-model", "pol", "--quiet"]
        assert run_data(argv) == 0
        assert run_data(argv) == 0
        assert len(server.bodies) == 3 * 4  # the samples only, once
    assert out.read_bytes() == b""
    skipped = lines(skipped_path(out))
    assert [s["id"] for s in sorted(skipped, key=lambda s: s["id"])] == ["2", "3", "hamlet"]
    assert all("fewer than two distinct samples" in s["reason"] for s in skipped)


def test_data_preference_names_an_unconfigured_model(instructions, tmp_path):
    config = write_config(tmp_path / "smcs.toml", "http://127.0.0.1:9", WITH_POLICY)
    base = ["preference", str(instructions), "--out", str(tmp_path / "o.jsonl"), "--config", str(config)]
    with pytest.raises(ValueError, match="--judges: model 'm-z' is not configured"):
        run_data([*base, "--policy-model", "pol", "--judges", "m-a,m-z"])
    with pytest.raises(ValueError, match="--policy-model: model 'nope' is not configured"):
        run_data([*base, "--policy-model", "nope"])
    with pytest.raises(ValueError, match="--samples must be >= 2"):
        run_data([*base, "--policy-model", "pol", "--samples", "1"])


def test_data_opinions_puts_numbered_opinions_before_the_target(text_bank, instructions, tmp_path):
    out = tmp_path / "moo.jsonl"
    with FaultServer(responder=respond) as server:
        config = write_config(tmp_path / "smcs.toml", server.base_url, MODELS)
        argv = ["opinions", str(instructions), "--out", str(out), "--config", str(config), "--bank", str(text_bank),
                "--models", "m-b,m-a", "--option", "proposers=2", "--quiet", "--concurrency", "1"]
        out.write_bytes(b'{"id": "3", "messages": []}\n')
        assert run_data(argv) == 0
        calls = len(server.bodies)
    records = lines(out)
    assert [r["id"] for r in records] == ["3", "hamlet", "2"] and calls == 2 * (2 + 3)
    for record, item in zip(records[1:], INSTRUCTIONS):
        system, user, assistant = record["messages"]
        assert system["role"] == "system" and user == {"role": "user", "content": item["instruction"]}
        opinion_1 = system["content"].index(f"Opinion 1:\nm-b says: {item['instruction']}")
        assert opinion_1 < system["content"].index(f"Opinion 2:\nm-a says: {item['instruction']}")
        assert assistant["role"] == "assistant" and assistant["content"].startswith("m-c synthesised")
        assert record["metadata"]["opinion_models"] == ["m-b", "m-a"] and record["metadata"]["target_strategy"] == "moa-lite"
        assert record["metadata"]["failed_opinions"] == []
