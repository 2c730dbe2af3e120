"""The smcs command line: the demo runs end to end, route prints a decision, bad input is a message."""

from __future__ import annotations

import json
import subprocess
import sys

import msgspec
import numpy as np
import pytest

from smcs import Bank, Policy, Router
from smcs.cli.main import main
from smcs.synthetic import queries_near
from support.decisions import assert_same_decision, decision_from_json


def test_demo_builds_a_bank_and_routes(tmp_path, capsys):
    assert main(["demo", "--questions", "800", "--dim", "32", "--models", "6", "--queries", "5", "--k", "4", "--path", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "routed 5 questions" in out
    decision = json.loads(out[out.index("{") :])
    assert len(decision["referencers"]) == 4
    assert Bank.open(tmp_path / "b").n_questions == 800


@pytest.fixture()
def bank_path(tmp_path):
    path = tmp_path / "b"
    assert main(["demo", "--questions", "300", "--dim", "16", "--models", "5", "--queries", "1", "--k", "3", "--path", str(path)]) == 0
    return path


def test_route_prints_the_decision_for_npy_and_json_embeddings(bank_path, tmp_path, capsys):
    capsys.readouterr()
    query = queries_near(np.asarray(Bank.open(bank_path).embeddings), 1)[0]
    np.save(tmp_path / "q.npy", query)
    (tmp_path / "q.json").write_text(json.dumps(query.tolist()))
    decisions = []
    for name in ("q.npy", "q.json"):
        assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / name), "--seed", "3", "--k", "3", "--json"]) == 0
        decisions.append(capsys.readouterr().out)
    assert decisions[0] == decisions[1]
    decision = decision_from_json(decisions[0])
    assert decision.seed == 3 and len(decision.referencers) == 3


def test_route_json_is_the_proto3_json_of_the_route_response(bank_path, tmp_path, capsys):
    """--json prints the RouteResponse in the proto3 JSON mapping (64-bit seed as a string, enums by
    name, field names as in the .proto), which parses back into the message and equals the decision."""
    bank = Bank.open(bank_path)
    query = queries_near(np.asarray(bank.embeddings), 1)[0]
    np.save(tmp_path / "q.npy", query)
    capsys.readouterr()
    seed = 2**63 + 12345  # beyond JavaScript's exact integers
    assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.npy"), "--seed", str(seed),
                 "--k", "3", "--json", "--debug"]) == 0
    out = capsys.readouterr().out
    raw = json.loads(out)
    assert raw["seed"] == str(seed) and raw["scorer"] == "SCORER_VOTE" and raw["bank_version"] == bank.version
    assert set(raw["referencers"][0]) == {"model", "vote", "probability"} and "support" in raw
    local = Router(bank, Policy(k=3)).route(query, seed=seed)
    assert_same_decision(decision_from_json(out), local, bank)
    parsed = decision_from_json(out)
    assert (parsed.probabilities, parsed.model_probabilities, parsed.scorer) == (
        local.probabilities, local.model_probabilities, local.scorer)
    assert parsed.support_texts == [bank.questions[r].text for r in local.support_rows]


def test_route_prints_a_table_by_default(bank_path, tmp_path, capsys):
    capsys.readouterr()
    np.save(tmp_path / "q.npy", np.asarray(Bank.open(bank_path).embeddings[0]))
    assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.npy"), "--k", "3", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "prior vote" in out and "subset 1:" in out and "subset 2:" not in out


def test_route_needs_exactly_one_query(bank_path, tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.ones(16, dtype=np.float32))
    assert main(["route", "--bank", str(bank_path), "--k", "3"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["route", "what is 2+2?", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.npy")]) == 2
    assert "exactly one" in capsys.readouterr().err


def test_route_through_the_index_with_nprobe(bank_path, tmp_path, capsys):
    """--retrieval ivf --nprobe N routes over the bank's index as the Router does with that policy."""
    assert main(["bank", "index", str(bank_path), "--nlist", "4"]) == 0
    bank = Bank.open(bank_path)
    query = queries_near(np.asarray(bank.embeddings), 1)[0]
    np.save(tmp_path / "q.npy", query)
    capsys.readouterr()
    decisions = {}
    for nprobe in ("1", "4"):
        argv = ["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.npy"), "--k", "3", "--n-base", "120"]
        assert main([*argv, "--seed", "3", "--retrieval", "ivf", "--nprobe", nprobe, "--json"]) == 0
        decisions[nprobe] = decision_from_json(capsys.readouterr().out)
    policy = Policy(k=3, n_base=120, retrieval="ivf", nprobe=1)
    assert decisions["1"].support_rows == Router(bank, policy).route(query, seed=3).support_rows
    everything = Router(bank, msgspec.structs.replace(policy, retrieval="exact")).route(query, seed=3)
    assert decisions["4"].support_rows == everything.support_rows != decisions["1"].support_rows


def test_bank_info_and_validate(bank_path, capsys):
    capsys.readouterr()
    assert main(["bank", "info", str(bank_path)]) == 0
    out = capsys.readouterr().out
    assert "questions 300  models 5" in out and "model-04" in out
    assert main(["bank", "validate", str(bank_path)]) == 0
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "3", "--aggregator", "nobody"], "aggregator 'nobody' is not a model of the bank"),
        (["--gamma", "3"], "gamma"),
        (["--seed", "-4", "--k", "3"], "seed"),
        (["--k", "3", "--retrieval", "ivf"], "retrieval='ivf' needs an index"),
        (["--k", "3", "--nprobe", "0"], "nprobe must be >= 1"),
    ],
)
def test_bad_route_input_is_a_message_not_a_traceback(bank_path, tmp_path, capsys, argv, message):
    np.save(tmp_path / "q.npy", np.ones(16, dtype=np.float32))
    assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.npy"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_bank_and_wrong_dimension_are_messages(bank_path, tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.ones(5, dtype=np.float32))
    assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.npy"), "--k", "3"]) == 2
    assert "dimension 5" in capsys.readouterr().err
    assert main(["bank", "info", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_console_script_runs_as_a_real_process(bank_path):
    done = subprocess.run(
        [sys.executable, "-m", "smcs.cli", "bank", "info", str(bank_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "questions 300" in done.stdout


# ------------------------------------------------------------------------------------- bank append


def _write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _new_question(i, dim=16, **extra):
    vector = np.random.default_rng(100 + i).standard_normal(dim)
    return {"id": f"new-{i}", "text": f"new question {i}", "embedding": vector.tolist(), **extra}


def test_bank_append_adds_questions_with_embeddings_and_outcomes(bank_path, tmp_path, capsys):
    before = Bank.open(bank_path)
    records = [
        _new_question(0, source="cli-test", label="42", outcomes={"model-00": 1, "model-03": 0}),
        _new_question(1),
    ]
    capsys.readouterr()
    assert main(["bank", "append", str(bank_path), str(_write_jsonl(tmp_path / "new.jsonl", records))]) == 0
    out = capsys.readouterr().out
    after = Bank.open(bank_path)
    assert after.version != before.version and after.version in out
    assert "appended 2 questions" in out and f"{before.n_questions + 2} questions" in out
    assert after.n_questions == before.n_questions + 2 and after.n_models == before.n_models
    assert [q.id for q in after.questions[-2:]] == ["new-0", "new-1"]
    first = after.questions[-2]
    assert (first.text, first.source, first.label) == ("new question 0", "cli-test", "42")
    capability = np.asarray(after.capability)
    column = after.n_questions - 2
    assert capability[after.model_index("model-00"), column] == 1
    assert capability[after.model_index("model-03"), column] == 0
    assert capability[after.model_index("model-01"), column] == -1
    assert (capability[:, column + 1] == -1).all()
    stored = np.asarray(after.embeddings[-2:], dtype=np.float64)
    given = np.array([r["embedding"] for r in records])
    np.testing.assert_allclose(stored, given / np.linalg.norm(given, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(after.embeddings[:-2]), np.asarray(before.embeddings))
    after.validate()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", ""),
        ({"id": "x", "embedding": [1.0] * 16}, "text"),
        ({"id": "x", "text": "t", "embedding": [1.0] * 16, "outcomes": {"model-00": 2}}, "outcomes"),
        ({"id": "x", "text": "t", "embeding": [1.0] * 16}, "embeding"),
        ({"id": "x", "text": "t", "embedding": [1.0] * 15}, "dimension is 16"),
        ({"id": "new-0", "text": "t", "embedding": [1.0] * 16}, "repeats line 1"),
        ({"id": "q0", "text": "t", "embedding": [1.0] * 16}, "already in the bank"),
        ({"id": "x", "text": "t", "embedding": [0.0] * 16}, "zeros"),
    ],
    ids=["not-json", "no-text", "outcome-2", "unknown-field", "wrong-dim", "repeated-id", "taken-id", "zero-vector"],
)
def test_bank_append_bad_line_names_the_line_and_appends_nothing(bank_path, tmp_path, capsys, bad, message):
    before = Bank.open(bank_path)
    assert before.questions[0].id == "q0"
    path = _write_jsonl(tmp_path / "bad.jsonl", [_new_question(0), "", _new_question(1), bad])
    capsys.readouterr()
    assert main(["bank", "append", str(bank_path), str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4:" in err and message in err and "Traceback" not in err
    after = Bank.open(bank_path)
    assert (after.version, after.n_questions) == (before.version, before.n_questions)


def test_bank_append_unknown_model_in_outcomes_is_named(bank_path, tmp_path, capsys):
    before = Bank.open(bank_path)
    path = _write_jsonl(tmp_path / "new.jsonl", [_new_question(0, outcomes={"model-00": 1, "gpt-nonexistent": 1})])
    capsys.readouterr()
    assert main(["bank", "append", str(bank_path), str(path)]) == 2
    err = capsys.readouterr().err
    assert "gpt-nonexistent" in err and f"{path}:1:" in err
    assert Bank.open(bank_path).version == before.version


def test_bank_append_text_only_line_needs_a_bank_of_the_bundled_embedder(bank_path, tmp_path, capsys):
    """A line without an embedding is embedded locally; a synthetic 16-d bank cannot take the bundled
    model's vectors, so that is a message and nothing is appended."""
    before = Bank.open(bank_path)
    path = _write_jsonl(tmp_path / "new.jsonl", [_new_question(0), {"id": "text-only", "text": "what is 2+2?"}])
    capsys.readouterr()
    assert main(["bank", "append", str(bank_path), str(path)]) == 2
    err = capsys.readouterr().err
    assert "embedder" in err and "Traceback" not in err
    assert Bank.open(bank_path).version == before.version


def test_bank_append_empty_file_is_a_message(bank_path, tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert main(["bank", "append", str(bank_path), str(path)]) == 2
    assert "no records" in capsys.readouterr().err


def test_bank_append_embeds_text_only_lines_with_the_bundled_model(tmp_path, capsys):
    from smcs.bank import ModelInfo, Question
    from smcs.embed import OnnxEmbedder

    embedder = OnnxEmbedder()
    texts = ["What is the capital of France?", "Compute 345 plus 678.", "How do you sort a list in Python?"]
    bank = Bank.create(
        tmp_path / "text-bank",
        embeddings=embedder.embed(texts),
        capability=np.array([[1, 0, 0], [0, 1, 1]], dtype=np.int8),
        questions=[Question(id=f"t{i}", text=t) for i, t in enumerate(texts)],
        models=[ModelInfo(name="a"), ModelInfo(name="b")],
        embedder=embedder.info,
    )
    given = np.random.default_rng(7).standard_normal(bank.dim)
    records = [
        {"id": "text-only", "text": "Which river flows through Cairo?", "outcomes": {"a": 1}},
        {"id": "with-vector", "text": "anything", "embedding": given.tolist()},
    ]
    capsys.readouterr()
    assert main(["bank", "append", str(bank.path), str(_write_jsonl(tmp_path / "new.jsonl", records))]) == 0
    assert "1 embedded locally" in capsys.readouterr().out
    after = Bank.open(bank.path)
    assert [q.id for q in after.questions] == ["t0", "t1", "t2", "text-only", "with-vector"]
    expected = np.asarray(embedder.embed(["Which river flows through Cairo?"]), dtype=np.float64)[0]
    np.testing.assert_allclose(np.asarray(after.embeddings[3], dtype=np.float64), expected / np.linalg.norm(expected), atol=1e-5)
    np.testing.assert_allclose(np.asarray(after.embeddings[4], dtype=np.float64), given / np.linalg.norm(given), atol=1e-6)
    assert np.asarray(after.capability)[:, 3].tolist() == [1, -1]


# ------------------------------------------------------------------------------- bank record, add-model


def test_bank_record_sets_outcomes_of_existing_questions(bank_path, tmp_path, capsys):
    before = Bank.open(bank_path)
    first, second = before.questions[0].id, before.questions[7].id
    rows = [{"model": "model-01", "id": first, "outcome": 1}, {"model": "model-03", "id": second, "outcome": -1}]
    path = _write_jsonl(tmp_path / "outcomes.jsonl", rows)
    capsys.readouterr()
    assert main(["bank", "record", str(bank_path), str(path)]) == 0
    after = Bank.open(bank_path)
    assert after.manifest.parent == before.version
    assert after.capability[1, 0] == 1 and after.capability[3, 7] == -1
    changed = np.argwhere(np.asarray(after.capability) != np.asarray(before.capability))
    assert {tuple(ix) for ix in changed} <= {(1, 0), (3, 7)}
    assert "recorded 2 outcomes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"model": "model-09", "id": "x", "outcome": 1}, "unknown model 'model-09'"),
        ({"model": "model-01", "id": "no-such-question", "outcome": 1}, "'no-such-question' is not a question of the bank"),
        ({"model": "model-01", "id": "x", "outcome": 2}, "outcome"),
        ({"model": "model-01", "outcome": 1}, "id"),
    ],
)
def test_bank_record_names_the_bad_line_and_writes_nothing(bank_path, tmp_path, capsys, row, message):
    before = Bank.open(bank_path)
    good = {"model": "model-00", "id": before.questions[0].id, "outcome": 0}
    row = {**row, "id": before.questions[1].id} if row.get("id") == "x" else row
    path = _write_jsonl(tmp_path / "outcomes.jsonl", [good, row])
    capsys.readouterr()
    assert main(["bank", "record", str(bank_path), str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and message in err and "Traceback" not in err
    assert Bank.open(bank_path).version == before.version


def test_bank_record_refuses_a_repeated_pair(bank_path, tmp_path, capsys):
    qid = Bank.open(bank_path).questions[0].id
    path = _write_jsonl(tmp_path / "o.jsonl", [{"model": "model-00", "id": qid, "outcome": 0}] * 2)
    assert main(["bank", "record", str(bank_path), str(path)]) == 2
    assert "repeats line 1" in capsys.readouterr().err


def test_bank_add_model_starts_unknown_and_info_shows_it(bank_path, capsys):
    before = Bank.open(bank_path)
    assert main(["bank", "add-model", str(bank_path), "newcomer", "--cost-per-output-token", "0.5"]) == 0
    after = Bank.open(bank_path)
    assert after.model_names == (*before.model_names, "newcomer")
    assert (np.asarray(after.capability)[-1] == -1).all() and after.models[-1].cost_per_output_token == 0.5
    capsys.readouterr()
    assert main(["bank", "add-model", str(bank_path), "newcomer"]) == 2
    assert "already in the bank" in capsys.readouterr().err
    assert main(["bank", "add-model", str(bank_path), "cheap", "--cost-per-input-token", "-1"]) == 2
    assert "cost_per_input_token" in capsys.readouterr().err
    assert main(["bank", "info", str(bank_path)]) == 0
    out = capsys.readouterr().out
    assert "newcomer" in out and f"parent {before.version}" in out
