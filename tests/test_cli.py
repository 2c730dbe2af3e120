"""The smcs command line: the demo runs end to end, route prints a decision, bad input is a message."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from smcs import Bank
from smcs.cli import main
from smcs.synthetic import queries_near


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
        decisions.append(json.loads(capsys.readouterr().out))
    assert decisions[0] == decisions[1]
    assert decisions[0]["seed"] == 3 and len(decisions[0]["referencers"]) == 3


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
        (["--k", "9"], "k=9 exceeds"),
        (["--gamma", "3"], "gamma"),
        (["--seed", "-4", "--k", "3"], "seed"),
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
