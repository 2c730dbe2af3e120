"""``smcs bank build``: the questions file, the journal, and whole builds against real loopback servers.

The models are OpenAI-compatible servers on 127.0.0.1 (``FaultServer`` with a responder that answers
by the question asked), so every build goes through the real backend, checker and bank store; one test
kills a build process with SIGKILL and checks that the restarted build loses no recorded outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from fault_server import FaultServer, Reply

from smcs.backends import OpenAIModelConfig
from smcs.bank import Bank, EmbedderInfo, ModelInfo
from smcs.ingest.builder import BuildQuestion, Journal, JournalEntry, JournalMismatch, build_bank, question_prompt, read_questions
from smcs.ingest.builder.journal import OUTCOMES
from smcs.ingest.builder.run import call_seed
from smcs.cli.main import main
from smcs.backends.pool import ModelPool
from smcs.core.costs import question_cost

# question text -> (the right answer, a wrong one), as a model would write them
KNOWN = {
    "What is 6 times 7?": ("The answer is \\boxed{42}.", "The answer is \\boxed{48}."),
    "What is 10 plus 5?": ("10 + 5 = 15, so the answer is \\boxed{15}.", "I think it is \\boxed{16}."),
    "How many minutes are in 2 hours?": ("The answer is \\boxed{120}", "The answer is \\boxed{100}"),
    "Which planet is closest to the Sun?": ("Mercury orbits closest. The answer is (B).", "The answer is (A)."),
}
ANSWERS = {"What is 6 times 7?": "42", "What is 10 plus 5?": "15", "How many minutes are in 2 hours?": "120"}


def write_questions(path: Path) -> list[dict]:
    records = [
        {"id": f"q{i}", "question": text, "answer": answer, "task": "numeric", "source": "arith"}
        for i, (text, answer) in enumerate(ANSWERS.items())
    ]
    records.append({
        "id": "mc", "question": "Which planet is closest to the Sun?", "answer": "B", "task": "multiple_choice",
        "choices": ["Venus", "Mercury", "Mars"], "source": "facts",
    })
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def answering(right: set[str], delay_s: float = 0.0):  # type: ignore[no-untyped-def]
    """A responder: model names in ``right`` answer every question correctly, the others wrongly."""

    def respond(body: dict) -> Reply:
        asked = body["messages"][-1]["content"]
        question = next(q for q in KNOWN if q in asked)
        good, bad = KNOWN[question]
        return Reply.ok(good if body["model"] in right else bad, delay_s=delay_s)

    return respond


class FakeEmbedder:
    """Deterministic unit vectors from the text (a stand-in where the embedding values do not matter)."""

    info = EmbedderInfo(id="fake-8", dim=8)

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        rows = np.array([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(8) for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def pool_for(server: FaultServer, names: list[str]) -> ModelPool:
    config = OpenAIModelConfig(base_urls=[server.base_url], retries=0, cooldown_s=0.0)
    return ModelPool.from_config({name: config for name in names})


def build(questions_path: Path, tmp_path: Path, server: FaultServer, names: list[str], **options):  # type: ignore[no-untyped-def]
    questions, digest = read_questions(questions_path)
    embedder = FakeEmbedder()

    async def go():  # type: ignore[no-untyped-def]
        with Journal.open(tmp_path / "journal", digest, embedder.info.id) as journal:
            async with pool_for(server, names) as pool:
                return await build_bank(questions, [ModelInfo(name=n) for n in names], pool, embedder, journal,
                                        tmp_path / "bank", **options)

    return asyncio.run(go()), questions


# ------------------------------------------------------------------------------------ questions file


def test_read_questions_decodes_and_hashes(tmp_path: Path) -> None:
    records = write_questions(tmp_path / "q.jsonl")
    questions, digest = read_questions(tmp_path / "q.jsonl")
    assert [q.id for q in questions] == [r["id"] for r in records]
    assert questions[-1].choices == ["Venus", "Mercury", "Mars"]
    import hashlib

    assert digest == hashlib.sha256((tmp_path / "q.jsonl").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "a", "question": "x", "answer": "1"}', "task"),
        ('{"id": "a", "question": "x", "answer": "1", "task": "poetry"}', "task"),
        ('{"id": "a", "question": "", "answer": "1", "task": "numeric"}', "question"),
        ('{"id": "a", "question": "x", "answer": "D", "task": "multiple_choice", "choices": ["p", "q"]}', "choice letters A, B"),
        ('{"id": "a", "question": "x", "answer": "A", "task": "multiple_choice"}', "at least two"),
        ('{"id": "a", "question": "x", "answer": "f", "task": "code"}', "tests"),
        ('{"id": "a", "question": "x", "answer": "1", "task": "numeric", "colour": "red"}', "colour"),
        ('{"id": "a", "question": "x", "answer": "1", "task": "numeric", "choices": ["p", "q"]}', "only multiple_choice"),
        ('{"id": "a", "question": "x", "answer": "1", "task": "math", "tests": "assert True"}', "only code"),
        ('{"id": "a", "question": "x", "answer": "1", "task": "instruction"}', "cannot be checked yet"),
        ("{not json", "malformed"),
    ],
)
def test_read_questions_names_the_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "ok", "question": "fine", "answer": "1", "task": "numeric"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"q\.jsonl:3: .*{expected}") as info:
        read_questions(path)
    assert "Traceback" not in str(info.value)


def test_read_questions_refuses_repeated_ids_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    line = '{"id": "same", "question": "x", "answer": "1", "task": "numeric"}\n'
    path.write_text(line + line)
    with pytest.raises(ValueError, match=r"q\.jsonl:2: id 'same' repeats line 1"):
        read_questions(path)
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match="no records"):
        read_questions(path)


def test_multiple_choice_prompt_letters_the_choices_after_the_question() -> None:
    question = BuildQuestion(id="m", question="Pick one.", answer="B", task="multiple_choice", choices=["red", "blue"])
    messages = question_prompt(question)
    assert messages[0].role == "system" and "The answer is (X)" in messages[0].content
    assert "Pick one.\n(A) red\n(B) blue" in messages[-1].content


def test_call_seeds_are_stable_and_differ_by_model_and_question() -> None:
    seeds = {call_seed(m, q) for m in ("a", "b") for q in ("q1", "q2")}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert call_seed("a", "q1") == call_seed("a", "q1")


# ------------------------------------------------------------------------------------------- journal


def entry(model: str, qid: str, correct: bool) -> JournalEntry:
    return JournalEntry(model=model, id=qid, correct=correct, extracted="1", reason="r")


def test_journal_keeps_recorded_entries_across_opens(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j", "sha", "emb") as journal:
        journal.record(entry("m", "q1", True))
        journal.record(entry("m", "q2", False))
    with Journal.open(tmp_path / "j", "sha", "emb") as journal:
        assert journal.done == {("m", "q1"): True, ("m", "q2"): False}


def test_journal_cuts_a_partial_last_line_and_appends_after_it(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j", "sha", "emb") as journal:
        journal.record(entry("m", "q1", True))
    with (tmp_path / "j" / OUTCOMES).open("ab") as f:
        f.write(b'{"model": "m", "id": "q2", "corr')  # a write cut short by a crash
    with Journal.open(tmp_path / "j", "sha", "emb") as journal:
        assert journal.done == {("m", "q1"): True}
        journal.record(entry("m", "q3", False))
    lines = (tmp_path / "j" / OUTCOMES).read_bytes().splitlines()
    assert [msgspec.json.decode(line)["id"] for line in lines] == ["q1", "q3"]


def test_journal_refuses_a_damaged_middle_line(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    with Journal.open(tmp_path / "j", "sha", "emb"):
        pass
    good = msgspec.json.encode(entry("m", "q1", True)).decode()
    (tmp_path / "j" / OUTCOMES).write_text(f"{good}\ngarbage\n{good}\n")
    with pytest.raises(ValueError, match=r"outcomes\.jsonl:2: damaged journal line"):
        Journal.open(tmp_path / "j", "sha", "emb")


def test_journal_keeps_embeddings_per_query_text_rule(tmp_path: Path) -> None:
    rows = np.eye(3, 4, dtype=np.float32)
    with Journal.open(tmp_path / "j", "sha", "emb") as journal:
        journal.save_embeddings(rows, "raw")
    with Journal.open(tmp_path / "j", "sha", "emb") as journal:
        assert np.array_equal(journal.load_embeddings(3, 4, "raw"), rows)
        assert journal.load_embeddings(3, 4, "question-v1") is None  # made under another rule: embedded again
        assert journal.load_embeddings(2, 4, "raw") is None


def test_journal_refuses_another_questions_file_or_embedder(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j", "sha-1", "emb"):
        pass
    with pytest.raises(JournalMismatch, match="another questions file"):
        Journal.open(tmp_path / "j", "sha-2", "emb")
    with pytest.raises(JournalMismatch, match=r"another embedder \(emb\)"):
        Journal.open(tmp_path / "j", "sha-1", "other")


# -------------------------------------------------------------------------------------------- builds


def test_build_records_each_models_checked_answers(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl")
    with FaultServer(responder=answering({"good"})) as server:
        report, questions = build(tmp_path / "q.jsonl", tmp_path, server, ["good", "bad"])
        asked = [(b["model"], b["seed"]) for b in server.bodies]
    bank = Bank.open(tmp_path / "bank")
    assert bank.model_names == ("good", "bad")
    assert np.array_equal(bank.capability, [[1, 1, 1, 1], [0, 0, 0, 0]])
    assert bank.manifest.embedder == EmbedderInfo(id="fake-8", dim=8, query_text="question-v1")
    assert [q.metadata["task"] for q in bank.questions] == ["numeric"] * 3 + ["multiple_choice"]
    assert bank.questions[3].label == "B" and bank.questions[3].metadata["choices"] == ["Venus", "Mercury", "Mars"]
    assert report.calls == 8 and report.resumed == 0 and report.accuracy == {"good": 1.0, "bad": 0.0}
    assert sorted(asked) == sorted((m, call_seed(m, q.id)) for m in ("good", "bad") for q in questions)


def test_build_records_the_tokens_each_model_used_and_costs_price_them(tmp_path: Path) -> None:
    """The fault server's usage counts words: prompt = the words of the messages, completion = of the reply."""
    write_questions(tmp_path / "q.jsonl")
    with FaultServer(responder=answering({"good"})) as server:
        build(tmp_path / "q.jsonl", tmp_path, server, ["good", "bad"])
        bodies = list(server.bodies)
    bank = Bank.open(tmp_path / "bank")
    for question, (text, _) in zip(bank.questions, KNOWN.items()):
        tokens = question.metadata["tokens"]
        assert set(tokens) == {"good", "bad"}
        body = next(b for b in bodies if b["model"] == "good" and text in b["messages"][-1]["content"])
        prompt_words = sum(len(m["content"].split()) for m in body["messages"])
        assert tokens["good"] == {"prompt": prompt_words, "completion": len(KNOWN[text][0].split())}
    priced = ModelInfo(name="good", cost_per_input_token=0.001, cost_per_output_token=0.01)
    used = bank.questions[0].metadata["tokens"]["good"]
    assert question_cost(bank.questions[0], priced) == pytest.approx(used["prompt"] * 0.001 + used["completion"] * 0.01)


@pytest.mark.parametrize("rule", ["raw", "question-v1"])
def test_build_embeds_the_questions_under_its_query_text_rule(tmp_path: Path, rule: str) -> None:
    texts = ["Compute it.\nAnswer: 3\n\nWhat is 6 times 7?\nAnswer:", "What is 10 plus 5?"]  # a one-shot prompt, a plain one
    lines = [{"id": f"q{i}", "question": t, "answer": a, "task": "numeric"} for i, (t, a) in enumerate(zip(texts, ["42", "15"]))]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with FaultServer(responder=answering({"good"})) as server:
        build(tmp_path / "q.jsonl", tmp_path, server, ["good"], query_text=rule)
    bank = Bank.open(tmp_path / "bank")
    assert bank.manifest.embedder.query_text == rule and [q.text for q in bank.questions] == texts
    embedded = ["What is 6 times 7?" if rule == "question-v1" else texts[0], texts[1]]
    np.testing.assert_allclose(bank.embeddings, asyncio.run(FakeEmbedder().embed(embedded)), atol=1e-6)


def test_build_resumes_from_the_journal_without_asking_again(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl")
    _, digest = read_questions(tmp_path / "q.jsonl")
    with Journal.open(tmp_path / "journal", digest, FakeEmbedder.info.id) as journal:
        journal.record(entry("good", "q0", False))  # recorded earlier (and, as it happens, judged wrong)
        journal.record(entry("bad", "mc", True))
    with FaultServer(responder=answering({"good"})) as server:
        report, _ = build(tmp_path / "q.jsonl", tmp_path, server, ["good", "bad"])
        asked = {(b["model"], b["messages"][-1]["content"]) for b in server.bodies}
    assert len(asked) == 6 and report.calls == 6 and report.resumed == 2
    assert not any(model == "good" and "6 times 7" in text for model, text in asked)
    capability = Bank.open(tmp_path / "bank").capability
    assert capability[0, 0] == 0 and capability[1, 3] == 1  # the journal's outcomes, not the servers'


def test_failed_calls_leave_no_bank_until_a_rerun_retries_only_them(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl")
    with FaultServer([Reply.error(500), Reply.error(500)], responder=answering({"good"})) as server:
        report, _ = build(tmp_path / "q.jsonl", tmp_path, server, ["good"], concurrency=1)
    assert report.bank is None and report.failures == {"good": 2} and not (tmp_path / "bank").exists()
    with FaultServer(responder=answering({"good"})) as server:
        report, _ = build(tmp_path / "q.jsonl", tmp_path, server, ["good"])
        assert len(server.requests) == 2
    assert report.bank is not None and np.array_equal(Bank.open(tmp_path / "bank").capability, [[1, 1, 1, 1]])


def test_allow_missing_writes_unknown_outcomes_and_auth_failures_give_up(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl")
    with FaultServer(responder=lambda body: Reply.unauthorized() if body["model"] == "locked" else answering({"good"})(body)) as server:
        report, _ = build(tmp_path / "q.jsonl", tmp_path, server, ["good", "locked"], concurrency=1, allow_missing=True)
        locked_calls = sum(b["model"] == "locked" for b in server.bodies)
    assert locked_calls == 1 and "auth" in report.given_up["locked"]
    assert np.array_equal(Bank.open(tmp_path / "bank").capability, [[1, 1, 1, 1], [-1, -1, -1, -1]])


def test_build_refuses_a_non_empty_out_before_asking_anyone(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl")
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / "something").write_text("x")
    with FaultServer() as server:
        with pytest.raises(ValueError, match="is not empty"):
            build(tmp_path / "q.jsonl", tmp_path, server, ["good"])
        assert server.requests == []


def test_concurrency_bounds_the_calls_in_flight(tmp_path: Path) -> None:
    write_questions(tmp_path / "q.jsonl")
    with FaultServer(responder=answering({"a", "b"}, delay_s=0.05)) as server:
        build(tmp_path / "q.jsonl", tmp_path, server, ["a", "b"], concurrency=3)
        assert server.peak_in_flight == 3


# ----------------------------------------------------------------------------------------------- CLI


def write_config(path: Path, server: FaultServer, names: list[str]) -> None:
    tables = "".join(
        f'[models."{n}"]\nkind = "openai"\nbase_urls = ["{server.base_url}"]\nretries = 0\ncooldown_s = 0\n' for n in names
    )
    path.write_text(tables)


def test_cli_builds_with_the_bundled_embedder_and_removes_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_questions(tmp_path / "q.jsonl")
    with FaultServer(responder=answering({"good"})) as server:
        write_config(tmp_path / "c.toml", server, ["good", "bad"])
        status = main(["bank", "build", str(tmp_path / "q.jsonl"), "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "b")])
    out = capsys.readouterr()
    assert status == 0, out.err
    bank = Bank.open(tmp_path / "b")
    assert bank.manifest.embedder == EmbedderInfo(id="all-MiniLM-L6-v2-int8", dim=384, query_text="question-v1")
    assert bank.n_questions == 4
    assert "good" in out.out and "1.000" in out.out and "answers 8/8" in out.err
    assert not (tmp_path / "b.journal").exists() and "smcs: warning" not in out.err  # four distinct questions
    assert bank.manifest.provenance["questions_file"] == "q.jsonl" and "bank build" in bank.manifest.provenance["built_by"]


def test_cli_names_an_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_questions(tmp_path / "q.jsonl")
    with FaultServer() as server:
        write_config(tmp_path / "c.toml", server, ["good"])
        status = main(["bank", "build", str(tmp_path / "q.jsonl"), "--config", str(tmp_path / "c.toml"),
                       "--out", str(tmp_path / "b"), "--models", "good,nope"])
    assert status == 2 and "'nope', not in the configuration" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_build_restarts_without_losing_a_recorded_outcome(tmp_path: Path) -> None:
    """SIGKILL a build process while answers arrive; every outcome it had recorded is in the final bank,
    and the restarted build asks only for the rest."""
    texts = list(KNOWN)[:3]
    records = [{"id": f"q{i}", "question": texts[i % 3], "answer": ANSWERS[texts[i % 3]], "task": "numeric"} for i in range(30)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    outcomes = tmp_path / "b.journal" / OUTCOMES
    with FaultServer(responder=answering({"good"}, delay_s=0.02)) as server:
        write_config(tmp_path / "c.toml", server, ["good", "bad"])
        command = [sys.executable, "-m", "smcs.cli", "bank", "build", str(tmp_path / "q.jsonl"),
                   "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "b"), "--concurrency", "2"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not outcomes.exists() or outcomes.read_bytes().count(b"\n") < 12):
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        before = [msgspec.json.decode(line) for line in outcomes.read_bytes().splitlines() if line.endswith(b"}")]
        assert 12 <= len(before) < 60, process.stderr.read().decode() if process.stderr else ""
        first_run_requests = len(server.requests)
        assert main(command[3:]) == 0
        second_run_requests = len(server.requests) - first_run_requests
    bank = Bank.open(tmp_path / "b")
    rows = {q.id: j for j, q in enumerate(bank.questions)}
    for recorded in before:
        assert bank.capability[bank.model_index(recorded["model"]), rows[recorded["id"]]] == int(recorded["correct"])
    assert (bank.capability >= 0).all()
    assert second_run_requests == 60 - len(before)


def test_code_answers_are_run_against_their_tests(tmp_path: Path) -> None:
    tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    record = {"id": "add", "question": "Write add(a, b) returning the sum.", "answer": "add", "task": "code", "tests": tests}
    (tmp_path / "q.jsonl").write_text(json.dumps(record) + "\n")
    replies = {
        "right": "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```",
        "wrong": "```python\ndef add(a, b):\n    return a - b\n```",
    }
    with FaultServer(responder=lambda body: Reply.ok(replies[body["model"]])) as server:
        report, _ = build(tmp_path / "q.jsonl", tmp_path, server, ["right", "wrong"])
    assert np.array_equal(Bank.open(tmp_path / "bank").capability, [[1], [0]])
    assert report.accuracy == {"right": 1.0, "wrong": 0.0}
