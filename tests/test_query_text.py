"""The query text: the rules on templates written here (few-shot blocks of several shapes, system prompts,
long texts), chats, the real ONNX embedder behind a shared template, and banks recording their rule
(old manifests read as "raw"; an unknown rule refused; the rule applied by the CLI and the server)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from service_harness import make_config, running_server
from support.decisions import decision_from_json

from smcs import Bank, Policy, Router
from smcs.bank import EmbedderInfo, ModelInfo, Question
from smcs.cli.main import main
from smcs.core.messages import ChatMessage
from smcs.core.query_text import DEFAULT_QUERY_TEXT_RULE, RULES, last_user_message, query_text, query_texts
from smcs.embed import OnnxEmbedder, check_compatible

V1 = "question-v1"

QUESTIONS = [  # (question, options): distinct questions to put behind one template
    ("The trophy did not fit in the suitcase because the _ was too large.", ("trophy", "suitcase")),
    ("Sam gave his umbrella to Tom because _ was going out into the rain.", ("Sam", "Tom")),
    ("The kettle boiled before the pan because the _ held less water.", ("kettle", "pan")),
    ("Maria could not lift the box although Ana could, since _ is weaker.", ("Maria", "Ana")),
    ("The violin sounded sweeter than the drum because the _ has strings.", ("violin", "drum")),
    ("Our garden froze but the greenhouse did not, as the _ was heated.", ("garden", "greenhouse")),
]
INSTRUCTION = "Read the sentence and choose the option that fills the blank."
CUE = "Reply with the letter of your choice only. Answer:"


def lettered(question: str, options: tuple[str, str]) -> str:
    return f"{question}\n" + "\n".join(f"{letter}) {option}" for letter, option in zip("AB", options))


def blank_filling_prompt(question: str, options: tuple[str, str], shots: int = 5) -> str:
    """A Winogrande-like prompt: (instruction, answered example) per shot, then the question and the cue."""
    examples = [
        (f"Example {i}: after the long meeting about the quarterly budget, the manager told the assistant that the _ "
         "would have to stay late to finish the report before the deadline.", (f"manager{i}", f"assistant{i}"))
        for i in range(shots)
    ]
    blocks = []
    for i, (text, opts) in enumerate(examples):
        blocks += [INSTRUCTION, f"{lettered(text, opts)}\n{CUE}\n{'AB'[i % 2]}"]
    return "\n\n".join(blocks + [f"{lettered(question, options)}\n{CUE}"])


# ----------------------------------------------------------------------------------------------- rules


def test_raw_is_the_text_unchanged():
    text = "  Line one\r\n\n\nline two   \n"
    assert query_text(text, "raw") == text
    assert query_texts([text, "x"], "raw") == [text, "x"]


def test_instruction_and_answered_examples_are_cut_leaving_question_and_options():
    question, options = QUESTIONS[0]
    assert query_text(blank_filling_prompt(question, options), V1) == lettered(question, options)


def test_mmlu_style_header_and_examples_are_cut():
    header = "The following are multiple choice questions (with answers) about astronomy."
    shots = [
        "Which planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Mars\nD. Earth\nAnswer: B",
        "What is a light-year a unit of?\nA. time\nB. speed\nC. distance\nD. mass\nAnswer: C",
    ]
    final = "Which body orbits the Earth?\nA. Mars\nB. The Moon\nC. Io\nD. Titan"
    prompt = "\n\n".join([header, *shots, f"{final}\nAnswer:"])
    assert query_text(prompt, V1) == final


def test_question_answer_chain_of_thought_examples_are_cut():
    prompt = (
        "Q: Tom has 3 apples and buys 2 more. How many apples does he have?\n"
        "A: He starts with 3 and adds 2, so 3 + 2 = 5. The answer is 5.\n\n"
        "Q: A box holds 4 rows of 6 eggs. How many eggs are there?\n"
        "A: 4 rows of 6 is 24. The answer is 24.\n\n"
        "Q: A train travels 60 km per hour for 3 hours. How far does it go?\nA:"
    )
    assert query_text(prompt, V1) == "Q: A train travels 60 km per hour for 3 hours. How far does it go?"


def test_a_repeated_instruction_before_the_question_is_dropped_with_the_cue():
    shots = [f"{INSTRUCTION}\n\nSentence {i} with a _ in it.\nA) x{i}\nB) y{i}\n{CUE}\nA" for i in range(3)]
    prompt = "\n\n".join([*shots, INSTRUCTION, f"The final sentence has a _ too.\nA) left\nB) right\n{CUE}"])
    assert query_text(prompt, V1) == "The final sentence has a _ too.\nA) left\nB) right"


def test_a_question_made_only_of_template_lines_is_kept_whole():
    prompt = "Say hello.\nAnswer: hello\n\nSay hello.\nAnswer: hello\n\nSay hello.\nAnswer:"
    assert query_text(prompt, V1) == "Say hello.\nAnswer:"


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Solve for x: 2x + 3 = 11.\nShow your work.",
        "You are a careful assistant.\n\nWhat is 17 times 23?",  # a system prompt, no examples: nothing to cut
        "Passage: The river floods each spring.\n\nQuestion: When does the river flood?\nAnswer:",
        'def add(a, b):\n    """Add two numbers.\n\n    >>> add(1, 2)\n    3\n    """\n',
        "Examples:\n\nInput: [1, 2]\nOutput: 3\n\nInput: [5]\nOutput: 5",  # examples inside a task, no trailing cue
        "求下列各数的和：1、2、3。",
    ],
)
def test_short_clean_questions_are_left_as_they_are(text):
    assert query_text(text, V1) == text.strip()


def test_tidying_is_whitespace_only():
    assert query_text("  What is 2+2?   \r\nThink.\t\n\n", V1) == "What is 2+2?\nThink."


def test_a_long_text_keeps_its_head_and_tail():
    words = [f"w{i}" for i in range(300)]
    out = query_text(" ".join(words), V1)
    head, tail = out.split("\n...\n")
    assert head.split() == words[:60] and tail.split() == words[-140:]
    assert query_text(" ".join(words[:200]), V1) == " ".join(words[:200])  # 200 units: not long
    cjk = "".join(chr(0x4E00 + i) for i in range(500))
    head, tail = query_text(cjk, V1).split("\n...\n")
    assert (head, tail) == (cjk[:60], cjk[-140:])  # one unit per CJK character


def test_few_shot_cut_comes_before_the_length_limit():
    long_question = "Consider " + " ".join(f"item{i}" for i in range(250)) + " and pick one."
    out = query_text(blank_filling_prompt(long_question, ("a", "b")), V1)
    head, tail = out.split("\n...\n")
    assert head.startswith("Consider item0 item1") and tail.endswith("pick one.\nA) a\nB) b")
    assert INSTRUCTION not in out and "quarterly budget" not in out


def test_unknown_rules_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown query-text rule 'question-v9'.*raw, question-v1"):
        query_text("x", "question-v9")
    with pytest.raises(ValueError, match="'nope'"):
        query_texts([], "nope")
    assert DEFAULT_QUERY_TEXT_RULE == V1 and set(RULES) == {"raw", V1}


# ------------------------------------------------------------------------------------------------ chats


def test_last_user_message_of_dicts_and_chat_messages():
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert last_user_message(chat) == "What is 2+2?"
    assert last_user_message([ChatMessage(m["role"], m["content"]) for m in chat]) == "What is 2+2?"


def test_last_user_message_errors_name_the_problem():
    with pytest.raises(ValueError, match="no message with role 'user'"):
        last_user_message([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[1\]\.content must be text"):
        last_user_message([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text"}]}])


# ----------------------------------------------------------------------------------- the real embedder


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    n = len(vectors)
    return float(sum(vectors[i] @ vectors[j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1)))


def test_distinct_questions_behind_one_template_embed_apart_under_the_default_rule(embedder):
    prompts = [blank_filling_prompt(q, o) for q, o in QUESTIONS]
    raw = embedder.embed(query_texts(prompts, "raw"))
    ruled = embedder.embed(query_texts(prompts, DEFAULT_QUERY_TEXT_RULE))
    alone = embedder.embed([lettered(q, o) for q, o in QUESTIONS])
    assert mean_pairwise_cosine(raw) > 0.99  # the encoder sees the template: every prompt alike
    assert mean_pairwise_cosine(ruled) < 0.5
    assert np.allclose(ruled, alone, atol=1e-5)  # what is embedded is the question itself


# ------------------------------------------------------------------------------------- banks and rules


def few_shot_bank(path, embedder: OnnxEmbedder, rule: str) -> Bank:
    """A bank of the template-wrapped questions, embedded under ``rule``; model i is right on question i only."""
    questions = [Question(id=f"q{i}", text=blank_filling_prompt(q, o)) for i, (q, o) in enumerate(QUESTIONS)]
    return Bank.create(
        path,
        embeddings=embedder.embed(query_texts([q.text for q in questions], rule)),
        capability=np.eye(len(QUESTIONS), dtype=np.int8),
        questions=questions,
        models=[ModelInfo(name=f"m{i}") for i in range(len(QUESTIONS))],
        embedder=EmbedderInfo(embedder.info.id, embedder.info.dim, rule),
    )


def rewrite_rule(bank: Bank, rule: str | None) -> None:
    """Rewrite the bank's manifest to name ``rule``; None: no ``query_text`` key, as code before rules wrote it."""
    path = bank.path / bank.version / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["embedder"]["query_text"]
    if rule is not None:
        manifest["embedder"]["query_text"] = rule
    path.write_text(json.dumps(manifest))


def test_an_old_manifest_without_a_rule_opens_as_raw(tmp_path, embedder):
    bank = few_shot_bank(tmp_path / "bank", embedder, "raw")
    rewrite_rule(bank, None)
    reopened = Bank.open(tmp_path / "bank")
    reopened.validate()
    assert reopened.manifest.embedder == EmbedderInfo(embedder.info.id, embedder.info.dim, "raw")
    check_compatible(embedder.info, reopened)


def test_a_bank_with_an_unknown_rule_is_refused_with_a_message(tmp_path, embedder, capsys):
    bank = few_shot_bank(tmp_path / "bank", embedder, "raw")
    rewrite_rule(bank, "question-v9")
    with pytest.raises(ValueError, match="query-text rule 'question-v9', which this smcs does not know"):
        check_compatible(embedder.info, Bank.open(tmp_path / "bank"))
    assert main(["route", "a question", "--bank", str(tmp_path / "bank"), "--k", "1", "--k-drop", "0"]) == 2
    err = capsys.readouterr().err
    assert "smcs: error:" in err and "question-v9" in err and "Traceback" not in err


@pytest.mark.parametrize("rule", ["raw", V1])
def test_the_server_and_the_cli_embed_question_text_under_the_banks_rule(tmp_path, embedder, capsys, rule):
    bank = few_shot_bank(tmp_path / "bank", embedder, rule)
    prompt = blank_filling_prompt(*QUESTIONS[3])
    policy = Policy(k=2, n_base=2, gamma=0.9, k_drop=1, n=2)
    local = Router(bank, policy).route(embedder.embed([query_text(prompt, rule)])[0], seed=5)
    with running_server(bank.path, make_config(policy=policy, embedder=None)) as handle, handle.client() as client:
        remote = client.route(prompt, seed=5, include_support=True)
    assert (remote.referencers, remote.support_rows, remote.support_similarities) == (
        local.referencers, local.support_rows, pytest.approx(local.support_similarities, abs=1e-5))
    argv = ["route", prompt, "--bank", str(bank.path), "--json", "--seed", "5", "--k", "2", "--n-base", "2", "--gamma", "0.9", "--n", "2"]
    assert main(argv) == 0
    assert decision_from_json(capsys.readouterr().out).support_rows == list(local.support_rows)
    if rule == V1:
        assert remote.referencers[0] == "m3"  # the question itself found its own bank row
