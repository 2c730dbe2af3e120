r"""The answer checkers (smcs.grading.checkers): extraction from real-looking responses, equivalence, and the
code sandbox (limits, blocked network and processes, no writes outside its directory, clean-up)."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smcs.grading.checkers import (
    CheckResult,
    check_answer,
    extract_boxed,
    extract_choice,
    extract_number,
    math_equivalent,
    normalise_math,
    run_code_tests,
)

CHOICES = ["London", "Paris", "Rome", "Berlin"]

COT = """Let's think step by step about each option.

(A) The first option seems plausible at first glance, but it ignores the boundary condition.
(B) This is what a naive reading suggests; I initially thought the answer is (B).
(D) Option D contradicts the given data, so it can be eliminated.

Re-checking the computation for (C): substituting the values gives exactly the stated result,
and A and B both fail the second constraint.

The answer is (C)."""


# ---------------------------------------------------------------------------------------------------
# multiple choice


def test_chain_of_thought_mentioning_other_letters_ends_with_its_final_letter() -> None:
    assert check_answer("multiple_choice", COT, "C", choices=CHOICES) == CheckResult(True, "C", "answered C")
    wrong = check_answer("multiple_choice", COT, "B", choices=CHOICES)
    assert (wrong.correct, wrong.extracted) == (False, "C")
    assert "expected B" in wrong.reason


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("Reasoning...\nThe answer is (D).", "D"),
        ("so the answer is B", "B"),
        ("Answer: C", "C"),
        ("answer: (a)", "A"),
        ("Working it through, we get 42.\n\n**Answer:** B", "B"),
        ("**Answer**: D", "D"),
        ("Therefore $\\boxed{C}$", "C"),
        ("Therefore the answer is $\\boxed{\\text{A}}$.", "A"),
        ("Hence \\(\\boxed{\\textbf{(B)}}\\)", "B"),
        ("The correct answer is option C because the others fail.", "C"),
        ("The final answer is: **(D)**", "D"),
        ("After checking every option, I would go with (B)", "B"),
        ("(C)", "C"),
        ("D", "D"),
        ("Only the third one fits.\n\nC) 3.2 m/s", "C"),
        ("The answer is:\n\nB", "B"),
    ],
)
def test_choice_formats(response: str, letter: str) -> None:
    assert extract_choice(response, 4) == letter
    assert check_answer("multiple_choice", response, letter, choices=CHOICES).correct


def test_the_last_explicit_statement_wins() -> None:
    response = "At first the answer is (A). Wait, that misreads the units.\nRedoing it: the answer is (D)."
    assert extract_choice(response) == "D"
    boxed_then_statement = "Draft: \\boxed{B}. On reflection that is wrong. Answer: C"
    assert extract_choice(boxed_then_statement) == "C"


@pytest.mark.parametrize(
    "response",
    [
        "",
        "I am not sure. A careful analysis is needed before answering.",
        "A good question! Let me think about it step by step... I could not finish the computation.",
        "Answer: Let's think step by step.",
        "The answer is not obvious from the given information.",
        "A) 12\nB) 42\nC) 7\nD) 3",  # the options listed again: ambiguous
        "A) is wrong because of the sign.\nSo it must be something else.",
        "The answer is (X)",  # the prompt's template echoed
    ],
)
def test_no_answer_is_wrong_and_never_defaults_to_a(response: str) -> None:
    assert extract_choice(response, 4) is None
    result = check_answer("multiple_choice", response, "A", choices=CHOICES)
    assert result == CheckResult(False, None, "no answer letter found")


def test_letters_beyond_the_choices_are_not_answers() -> None:
    response = "The answer is (E)."
    assert extract_choice(response, 4) is None
    assert extract_choice(response, 5) == "E"
    assert extract_choice(response) == "E"
    # an out-of-range final statement falls back to the last one in range
    assert extract_choice("The answer is (B). Hmm, or the answer is (F).", 4) == "B"


def test_reference_letter_is_case_insensitive() -> None:
    assert check_answer("multiple_choice", "The answer is (B).", "b", choices=CHOICES).correct
    assert check_answer("multiple_choice", "The answer is (B).", " (B) ").correct


def test_quoting_one_choice_text_answers_that_choice() -> None:
    response = "The capital of France is well known.\nThe answer is Paris."
    result = check_answer("multiple_choice", response, "B", choices=CHOICES)
    assert result == CheckResult(True, "B", "answered B (by its text)")
    assert not check_answer("multiple_choice", "The answer is Rome.", "B", choices=CHOICES).correct
    # the reference may be the choice text itself
    assert check_answer("multiple_choice", "The answer is (B).", "Paris", choices=CHOICES).correct


@pytest.mark.parametrize(
    "response",
    [
        "The answer is Paris or Rome.",
        "Paris is lovely in spring, but the question asks about Italy.",  # mentions, does not answer
        "The answer is Paris.",  # without choices there is nothing to quote
    ],
)
def test_choice_text_matching_is_conservative(response: str) -> None:
    choices = None if response == "The answer is Paris." else CHOICES
    result = check_answer("multiple_choice", response, "B", choices=choices)
    assert (result.correct, result.extracted) == (False, None)


FILLER = [
    "Let's consider option (A) first.",
    "It is tempting to say the answer is (B), but the units disagree.",
    "Answer: D would need a negative mass.",
    "So far \\boxed{A} looks best.",
    "C) is also worth a look.",
    "Both A and B fail the second test.",
]


@given(st.lists(st.sampled_from(FILLER), max_size=8), st.sampled_from("ABCDEFGHIJ"))
def test_a_final_statement_beats_any_earlier_mention(filler: list[str], letter: str) -> None:
    response = "\n".join([*filler, f"After all this, the answer is ({letter})."])
    assert extract_choice(response, 10) == letter


# ---------------------------------------------------------------------------------------------------
# math


def test_boxed_fraction_equals_decimal_reference() -> None:
    response = (
        "We need the probability of exactly one head in two tosses. There are 4 equally likely outcomes, "
        "of which HT and TH qualify, so the probability is $\\frac{2}{4}$, which simplifies.\n\n"
        "The answer is $\\boxed{\\frac{1}{2}}$."
    )
    result = check_answer("math", response, "0.5")
    assert result == CheckResult(True, "\\frac{1}{2}", "equivalent to the reference")
    assert not check_answer("math", response, "0.25").correct


def test_nested_braces_are_matched() -> None:
    response = "Thus the side is $\\boxed{\\sqrt{\\frac{3}{4}}}$ units."
    assert extract_boxed(response) == "\\sqrt{\\frac{3}{4}}"
    assert check_answer("math", response, "\\sqrt{\\dfrac{3}{4}}").correct
    assert not check_answer("math", response, "\\sqrt{\\frac{3}{5}}").correct


def test_the_last_of_two_boxes_wins() -> None:
    response = "A first attempt gives $\\boxed{3}$. But I forgot the carry; correcting it gives $\\boxed{4}$."
    assert extract_boxed(response) == "4"
    assert check_answer("math", response, "4").correct
    assert not check_answer("math", response, "3").correct


@pytest.mark.parametrize(
    ("response", "content"),
    [
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        # an escaped brace does not count, so an unbalanced \{ leaves the box closed
        ("\\boxed{\\left\\{ x \\mid x > 0 \\right.} so", "\\left\\{ x \\mid x > 0 \\right."),
        ("so $\\boxed 7$", "7"),
        ("\\fbox{x+1}", "x+1"),
        ("\\boxed{} \\boxed{12}", "12"),
        ("\\boxed{5} and then \\boxed{unclosed", "5"),
        ("\\boxedfoo{3}", None),
        ("no box here", None),
    ],
)
def test_extract_boxed(response: str, content: str | None) -> None:
    assert extract_boxed(response) == content


def test_answer_statement_without_a_box() -> None:
    response = "Adding the two parts, 5 + 7 = 12.\nThe answer is $12$."
    assert check_answer("math", response, "12") == CheckResult(True, "$12$", "equivalent to the reference")
    nothing = check_answer("math", "I could not solve this one.", "12")
    assert (nothing.correct, nothing.extracted) == (False, None)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("5\\text{ cm}", "5"),
        ("\\text{(B)}", "(B)"),
        ("90^\\circ", "90"),
        ("\\$1{,}000.", "1,000"),
        ("x = \\tfrac12", "\\frac{1}{2}"),
        ("\\sqrt2", "\\sqrt{2}"),
    ],
)
def test_normalise_math(text: str, normal: str) -> None:
    assert normalise_math(text) == normal


@pytest.mark.parametrize(
    ("candidate", "reference", "equivalent"),
    [
        ("1,000", "1000", True),
        ("1e3", "1000", True),
        ("1.5\\times 10^{3}", "1500", True),
        ("0.50", "\\frac{1}{2}", True),
        ("-\\frac{3}{4}", "-0.75", True),
        ("\\frac{-3}{4}", "-3/4", True),
        ("2", "2.0000001", True),
        ("2", "2.00001", False),
        ("50\\%", "0.5", False),  # percentages are not decimals
        ("50\\%", "50", True),
        ("1,2", "12", False),  # a list, not a thousands separator
        ("x^2+1", "x^2 + 1", True),
        ("x^2+1", "x^2+2", False),
        ("\\frac{1}{0}", "1", False),
        ("", "", False),
    ],
)
def test_math_equivalent(candidate: str, reference: str, equivalent: bool) -> None:
    assert math_equivalent(candidate, reference) is equivalent


@given(st.integers(-10**5, 10**5), st.integers(1, 10**4))
def test_fraction_forms_agree_with_exact_arithmetic(p: int, q: int) -> None:
    value = Fraction(p, q)
    assert math_equivalent(f"\\frac{{{p}}}{{{q}}}", f"{value.numerator}/{value.denominator}")
    assert not math_equivalent(f"\\frac{{{p}}}{{{q}}}", f"{p + 1}/{q}")


@given(st.integers(-10**5, 10**5))
def test_thousands_separators(n: int) -> None:
    assert math_equivalent(f"{n:,}", str(n))
    assert not math_equivalent(f"{n:,}", str(n + 1))


# ---------------------------------------------------------------------------------------------------
# numeric


@pytest.mark.parametrize(
    ("response", "number"),
    [
        ("The farm has 1,234 animals in all.", "1,234"),
        ("So the temperature drops to -3 degrees.", "-3"),
        ("compute 5-3", "3"),  # a binary minus is no sign
        ("The ribbon is 5 cm long.", "5"),
        ("It costs $5 in total.", "5"),
        ("The probability is 1/2.", "1/2"),
        ("The answer is 42 apples. Then Bob eats 7 of them.", "42"),
        ("First 12 then \\boxed{7}, and 8 more.", "7"),
        ("\\boxed{\\dfrac{3}{4}}", "\\dfrac{3}{4}"),
        ("\\boxed{x = 19}", "19"),
        ("\\boxed{2^{10}}", None),  # two numbers in the box: ambiguous
        ("The answer is unclear from 3 data points.", None),  # the statement does not start with a number
        ("**Answer:** $1,234", "1,234"),
        ("The answer is $x = 42$.", "42"),
        ("I do not know.", None),
    ],
)
def test_extract_number(response: str, number: str | None) -> None:
    assert extract_number(response) == number


@pytest.mark.parametrize(
    ("response", "reference", "correct"),
    [
        ("Adding up the rows gives \\boxed{1,234}.", "1234", True),
        ("So x = 0.50", "0.5", True),
        ("So x = 1/2", "0.5", True),
        ("The total cost is $12.50.", "12.5", True),
        ("The total cost is $12.50.", "12.25", False),
        ("The answer is 5 cm.", "5", True),
        ("The answer is -3.", "3", False),
    ],
)
def test_numeric(response: str, reference: str, correct: bool) -> None:
    assert check_answer("numeric", response, reference).correct is correct


def test_numeric_without_a_number_is_wrong() -> None:
    assert check_answer("numeric", "I am unable to compute this.", "7") == CheckResult(False, None, "no number found")


# ---------------------------------------------------------------------------------------------------
# exact


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        ('After weighing the evidence, the answer is "Paris".', True),
        ("**Answer:** paris", True),
        ("  Paris.  ", True),
        ("Therefore: $\\boxed{\\text{Paris}}$", True),
        ("(Paris)", True),
        ("The answer is Paris, France.", False),
        ("Paris is the capital of France.", False),  # no statement: the whole response is the answer
    ],
)
def test_exact(response: str, correct: bool) -> None:
    assert check_answer("exact", response, "Paris").correct is correct


# ---------------------------------------------------------------------------------------------------
# code

HUMANEVAL_TESTS = """
def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-1, 1) == 0
"""

CODE_RESPONSE = """Sure! Here is a simple implementation.

```text
add(1, 2) -> 3
```

```python
def add(a, b):
    \"\"\"Return the sum.\"\"\"
    return a + b
```

```
>>> add(1, 2)
3
```

This runs in constant time."""


def test_code_in_prose_passes_humaneval_style_tests() -> None:
    result = check_answer("code", CODE_RESPONSE, "add", tests=HUMANEVAL_TESTS)
    assert result == CheckResult(True, 'def add(a, b):\n    """Return the sum."""\n    return a + b', "passed")


def test_the_program_is_the_whole_response_without_fences() -> None:
    assert check_answer("code", "def add(a, b):\n    return a + b\n", "add", tests=HUMANEVAL_TESTS).correct


def test_an_untagged_block_is_used_when_no_block_is_tagged_python() -> None:
    response = "Here you go:\n\n   ```\n   def add(a, b):\n       return a + b\n   ```\n"
    assert check_answer("code", response, "add", tests=HUMANEVAL_TESTS).extracted == "def add(a, b):\n    return a + b"


def test_failing_assert_is_reported() -> None:
    response = "```python\ndef add(a, b):\n    return a - b\n```"
    result = check_answer("code", response, "add", tests=HUMANEVAL_TESTS)
    assert not result.correct
    assert result.reason.startswith("failed: AssertionError")


def test_plain_asserts_and_their_message() -> None:
    result = run_code_tests("def f():\n    return 1\n", "assert f() == 2, 'f is wrong'")
    assert result == CheckResult(False, "def f():\n    return 1\n", "failed: AssertionError: f is wrong")


def test_infinite_loop_times_out() -> None:
    start = time.monotonic()
    result = run_code_tests("while True:\n    pass\n", "", timeout_s=1.0)
    assert time.monotonic() - start < 5
    assert result.reason == "timed out after 1 s"
    assert not result.correct


def test_allocating_2_gb_hits_the_memory_limit() -> None:
    result = run_code_tests("block = bytearray(2 * 1024**3)\n", "", memory_mb=512)
    assert (result.correct, result.reason) == (False, "memory limit")


def test_network_is_blocked_even_when_the_error_is_caught() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
            "except BaseException:\n"
            "    pass\n"
        )
        result = run_code_tests(program, "", timeout_s=5.0)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
    assert not result.correct
    assert result.reason.startswith("no network: blocked socket.")


def test_connect_to_discard_port_is_blocked() -> None:
    result = run_code_tests("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", "", timeout_s=5.0)
    assert not result.correct
    assert result.reason.startswith("no network: blocked socket.")


@pytest.mark.parametrize(
    ("program", "event"),
    [
        ("import os\nos.system('touch {marker}')\n", "os.system"),
        ("import subprocess\nsubprocess.run(['touch', '{marker}'])\n", "subprocess.Popen"),
        ("import os\nif os.fork() == 0:\n    open('{marker}', 'w').close()\n", "os.fork"),
        ("import os\nos.execv('/usr/bin/touch', ['touch', '{marker}'])\n", "os.exec"),
    ],
)
def test_processes_are_blocked(program: str, event: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = run_code_tests(program.format(marker=marker), "", timeout_s=5.0)
    assert result.reason == f"no subprocesses: blocked {event}"
    assert not marker.exists()


def test_multiprocessing_spawn_is_blocked() -> None:
    program = "import multiprocessing, time\nmultiprocessing.get_context('spawn').Process(target=time.sleep).start()\n"
    result = run_code_tests(program, "", timeout_s=5.0)
    assert result.reason == "no subprocesses: blocked _posixsubprocess.fork_exec"


def _gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (gone, or a zombie nobody reaped), within 3 s."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("end", ["os._exit(0)\n", "while True:\n    pass\n"], ids=["exits", "times out"])
def test_a_grandchild_started_around_the_hooks_dies_with_the_group(end: str, tmp_path: Path) -> None:
    # Audit hooks are no security boundary: a fresh _posixsubprocess module starts processes unseen. The
    # process-group kill still ends them. The grandchild says when it runs (before that, the sandbox's
    # directory going away would end it) and, as its shell's parent, which process it is (the sandboxed
    # program itself may not write outside its directory); os._exit skips multiprocessing's own join of it.
    ready, pid_file = tmp_path / "ready", tmp_path / "pid"
    program = (
        "import multiprocessing, os, sys, time\n"
        "del sys.modules['_posixsubprocess']\n"
        f"command = 'echo $PPID > {pid_file}; : > {ready}; sleep 60'\n"
        "child = multiprocessing.get_context('spawn').Process(target=os.system, args=(command,))\n"
        "child.start()\n"
        f"while not os.path.exists({str(ready)!r}):\n"
        "    time.sleep(0.01)\n"
    )
    run_code_tests(program + end, "", timeout_s=5.0 if end.startswith("os") else 2.0)
    assert _gone(int(pid_file.read_text()))


def test_the_sandbox_is_a_fresh_directory_removed_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMCS_TEST_SECRET", "s3cret")
    program = "import os, sys\nopen('scratch.txt', 'w').write('left behind?')\n"
    # the program may not write outside its directory: the last line of the reason reports it
    tests = (
        "assert 'SMCS_TEST_SECRET' not in os.environ\n"
        "assert os.environ['TMPDIR'] == os.getcwd()\n"
        "assert sys.stdin.read() == ''\n"
        "raise SystemExit(f'cwd {os.getcwd()}')\n"
    )
    cwd = os.getcwd()
    reason = run_code_tests(program, tests).reason
    assert reason.startswith("failed: cwd /")
    assert os.getcwd() == cwd
    sandbox = Path(reason.removeprefix("failed: cwd "))
    assert sandbox != Path(cwd)
    assert sandbox.name.startswith("smcs-check-")
    assert not sandbox.exists()


def test_main_block_does_not_run_but_an_early_exit_fails() -> None:
    program = "def f():\n    return 3\n\nif __name__ == '__main__':\n    print(f(int(input())))\n"
    assert run_code_tests(program, "assert f() == 3").correct
    exits = run_code_tests("import sys\nsys.exit(0)\n", "assert False")
    assert not exits.correct
    assert exits.reason.startswith("failed: SystemExit")


# writes outside the sandbox: each hostile program gets OUTSIDE (the directory of the ``outside`` fixture)
# and TARGET (its target.txt) as str literals; its sandbox lives in a directory of its own beside them

OUTSIDE_WRITE = "no writes outside the sandbox"
HOSTILE_PROGRAMS = {
    "open for writing": ("open(TARGET, 'w').write('pwned')", "open"),
    "open for appending": ("open(TARGET, 'a').write('pwned')", "open"),
    "open for updating": ("open(TARGET, 'r+').write('pwned')", "open"),
    "open a new file": ("open(OUTSIDE + '/new.txt', 'x')", "open"),
    "caught": ("try:\n    open(TARGET, 'w').write('pwned')\nexcept BaseException:\n    pass", "open"),
    "pathlib": ("import pathlib\npathlib.Path(TARGET).write_text('pwned')", "open"),
    "pathlib touch": ("import pathlib\npathlib.Path(OUTSIDE, 'touched').touch()", "os.utime"),
    "os.open": ("import os\nos.write(os.open(TARGET, os.O_WRONLY | os.O_TRUNC), b'pwned')", "os.open"),
    "shutil.copy": ("import shutil\nshutil.copy('solution.py', TARGET)", "open"),
    "shutil.move": ("import shutil\nshutil.move('solution.py', OUTSIDE)", "os.rename"),
    "rename out": ("import os\nos.rename('solution.py', OUTSIDE + '/moved.py')", "os.rename"),
    "replace in": ("import os\nos.replace(TARGET, 'stolen.txt')", "os.rename"),
    "../ escape": ("import os\nopen(os.path.relpath(TARGET), 'w').write('pwned')", "open"),
    "../ out of the root": ("import os\nos.mkdir('sub')\nopen('sub/../../escaped.txt', 'w')", "open"),
    "symlink to the file": ("import os\nos.symlink(TARGET, 'link')\nopen('link', 'w').write('pwned')", "os.symlink"),
    "symlink to the directory": ("import os\nos.symlink(OUTSIDE, 'door')\nopen('door/target.txt', 'w')", "os.symlink"),
    "hard link": ("import os\nos.link(TARGET, 'alias')\nopen('alias', 'w').write('pwned')", "os.link"),
    "dir_fd open": (
        "import os\nfd = os.open(OUTSIDE, os.O_RDONLY)\n"
        "os.write(os.open('target.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd), b'pwned')",
        "os.open",
    ),
    "dir_fd open through posix": (
        "import os, posix\nfd = posix.open(OUTSIDE, os.O_RDONLY)\n"
        "posix.write(posix.open('target.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd), b'pwned')",
        "os.open",
    ),
    "dir_fd mkdir": ("import os\nos.mkdir('made', dir_fd=os.open(OUTSIDE, os.O_RDONLY))", "os.mkdir"),
    "dir_fd unlink": ("import os\nos.unlink('target.txt', dir_fd=os.open(OUTSIDE, os.O_RDONLY))", "os.remove"),
    "dir_fd rename": (
        "import os\nos.rename('solution.py', 'moved.py', dst_dir_fd=os.open(OUTSIDE, os.O_RDONLY))",
        "os.rename",
    ),
    "reopen through /proc": (
        "import os\nfd = os.open(TARGET, os.O_RDONLY)\nopen(f'/proc/self/fd/{fd}', 'w').write('pwned')",
        "open",
    ),
    "fchmod of a read-only descriptor": ("import os\nos.fchmod(os.open(TARGET, os.O_RDONLY), 0o777)", "os.chmod"),
    "chmod": ("import os\nos.chmod(TARGET, 0o777)", "os.chmod"),
    "utime": ("import os\nos.utime(TARGET, (0, 0))", "os.utime"),
    "truncate": ("import os\nos.truncate(TARGET, 0)", "os.truncate"),
    "setxattr": ("import os\nos.setxattr(TARGET, 'user.smcs', b'1')", "os.setxattr"),
    "remove": ("import os\nos.remove(TARGET)", "os.remove"),
    "rmdir": ("import os\nos.rmdir(OUTSIDE + '/empty')", "os.rmdir"),
    "shutil.rmtree": ("import shutil\nshutil.rmtree(OUTSIDE + '/nested')", "os.remove"),  # unlink with dir_fd
    "mkdir": ("import os\nos.mkdir(OUTSIDE + '/made')", "os.mkdir"),
    "makedirs": ("import os\nos.makedirs(OUTSIDE + '/a/b')", "os.mkdir"),
    "chdir": ("import os\nos.chdir(OUTSIDE)\nopen('target.txt', 'w').write('pwned')", "os.chdir"),
    "fchdir": ("import os\nos.fchdir(os.open(OUTSIDE, os.O_RDONLY))\nopen('target.txt', 'w')", "os.chdir"),
    "tempfile elsewhere": ("import tempfile\ntempfile.mkstemp(dir=OUTSIDE)", "os.open"),
    "sqlite3": (
        "import sqlite3\nsqlite3.connect(OUTSIDE + '/db.sqlite').execute('create table t (x)')", "sqlite3.connect"
    ),
    "rebound helpers": (
        "import builtins, os, posixpath\nos.getcwd = os.readlink = posixpath.realpath = lambda *a: OUTSIDE\n"
        "builtins.isinstance = builtins.type = lambda *a: True\nopen(TARGET, 'w').write('pwned')",
        "open",
    ),
    "a str subclass that lies": (
        "class P(str):\n    def split(self, *a):\n        return ['', 'x']\n"
        "    def __eq__(self, other):\n        return True\n"
        "    __hash__ = str.__hash__\nopen(P(TARGET), 'w').write('pwned')",
        "open",
    ),
}
ESCAPES = {
    "mkfifo": ("import os\nos.mkfifo(OUTSIDE + '/fifo')", "os.mkfifo"),
    "mknod": ("import os\nos.mknod(OUTSIDE + '/node')", "os.mknod"),
    "chroot": ("import os\nos.chroot(OUTSIDE)", "os.chroot"),
}


def _snapshot(directory: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under ``directory``: its mode, modification time and (files) contents."""
    entries = {}
    for path in [directory, *sorted(directory.rglob("*"))]:
        info = path.lstat()
        contents = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        entries[str(path.relative_to(directory))] = (info.st_mode, info.st_mtime_ns, contents)
    return entries


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory outside the sandbox, holding target.txt ("original"), an empty directory and
    nested/file.txt; the sandbox is made in tmp_path/sandboxes (checked empty afterwards), so that ../
    lands in tmp_path."""
    directory = tmp_path / "outside"
    (directory / "empty").mkdir(parents=True)
    (directory / "nested").mkdir()
    (directory / "nested" / "file.txt").write_text("nested")
    (directory / "target.txt").write_text("original")
    (tmp_path / "sandboxes").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "sandboxes"))
    return directory


def _hostile(program: str, outside: Path) -> str:
    return program.replace("OUTSIDE", repr(str(outside))).replace("TARGET", repr(str(outside / "target.txt")))


def _assert_refused(program: str, tests: str, outside: Path, reason: str) -> None:
    before = _snapshot(outside)
    result = run_code_tests(_hostile(program, outside), _hostile(tests, outside), timeout_s=5.0)
    assert (result.correct, result.reason) == (False, reason)
    assert _snapshot(outside) == before
    assert (outside / "target.txt").read_text() == "original"
    assert list((outside.parent / "sandboxes").iterdir()) == []
    assert sorted(p.name for p in outside.parent.iterdir()) == ["outside", "sandboxes"]


@pytest.mark.parametrize("name", list(HOSTILE_PROGRAMS))
def test_writes_outside_the_sandbox_are_refused(name: str, outside: Path) -> None:
    program, event = HOSTILE_PROGRAMS[name]
    _assert_refused(program, "", outside, f"{OUTSIDE_WRITE}: blocked {event}")


@pytest.mark.parametrize("name", list(ESCAPES))
def test_functions_without_an_audit_event_are_refused(name: str, outside: Path) -> None:
    program, event = ESCAPES[name]
    _assert_refused(program, "", outside, f"no sandbox escape: blocked {event}")


def test_the_tests_cannot_write_outside_either(outside: Path) -> None:
    tests = "open(TARGET, 'w').write('pwned')\nassert f() == 1"
    _assert_refused("def f():\n    return 1\n", tests, outside, f"{OUTSIDE_WRITE}: blocked open")


INSIDE_PROGRAM = """\
import collections, decimal, fractions, itertools, json, os, pathlib, shutil, sqlite3, tempfile
original = open(TARGET).read()                      # reading outside stays free
open('out.txt', 'w').write('1')
with open('out.txt', 'a') as f:
    f.write('2')
pathlib.Path('p.txt').write_text('3')
pathlib.Path('touched').touch()
os.makedirs('a/b/c')
os.rename('out.txt', 'a/out.txt')
os.replace('p.txt', 'a/b/p.txt')
shutil.copy('a/out.txt', 'a/b/c/copy.txt')
os.chmod('a/out.txt', 0o600)
os.utime('a/out.txt', (0, 0))
os.truncate('touched', 0)
os.link('a/out.txt', 'hard.txt')
fd = os.open('a', os.O_RDONLY)
os.close(os.open('at.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd))
os.mkdir('d', dir_fd=fd)
os.fchmod(os.open('a/at.txt', os.O_RDONLY), 0o644)
with open(os.open('flags.txt', os.O_RDWR | os.O_CREAT), 'w') as f:
    f.write('x')
with os.fdopen(os.dup(1), 'w') as f:
    f.write('to stdout')
with tempfile.NamedTemporaryFile('w') as f:
    f.write('t')
with tempfile.TemporaryDirectory() as d:           # its clean-up removes through dir_fd
    open(os.path.join(d, 'x'), 'w').write('x')
db = sqlite3.connect('db.sqlite')
db.execute('create table t (x)')
db.commit()
db.close()
sqlite3.connect(':memory:').execute('select 1')
os.chdir('a')
open('relative.txt', 'w').write('r')
os.chdir('..')
shutil.rmtree('a/b')
os.remove('hard.txt')
os.rmdir('a/d')
"""
INSIDE_TESTS = """\
assert original == 'original'
assert open('a/out.txt').read() == '12' and open('a/relative.txt').read() == 'r'
assert os.path.exists('a/at.txt') and os.path.exists('db.sqlite') and os.path.getsize('touched') == 0
assert not os.path.exists('a/b') and not os.path.exists('hard.txt') and not os.path.exists('a/d')
assert os.path.dirname(tempfile.mkstemp()[1]) == os.getcwd()
"""


def test_writes_inside_the_sandbox_pass(outside: Path) -> None:
    before = _snapshot(outside)
    result = run_code_tests(_hostile(INSIDE_PROGRAM, outside), INSIDE_TESTS, timeout_s=10.0)
    assert (result.correct, result.reason) == (True, "passed")
    assert _snapshot(outside) == before


def test_silent_nonzero_exit() -> None:
    assert run_code_tests("import os\nos._exit(3)\n", "").reason == "failed: exit status 3"


def test_empty_response_has_no_program() -> None:
    assert check_answer("code", "   \n", "add", tests=HUMANEVAL_TESTS) == CheckResult(False, None, "no program found")


# ---------------------------------------------------------------------------------------------------
# argument errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_answer("essay", "x", "y"), "task"),  # type: ignore[arg-type]
        (lambda: check_answer("instruction", "x", "y"), "cannot be checked yet"),
        (lambda: check_answer("code", "x", "f"), "tests"),
        (lambda: check_answer("code", "x", "not a name", tests=HUMANEVAL_TESTS), "answer"),
        (lambda: check_answer("multiple_choice", "x", "E", choices=CHOICES), "answer"),
        (lambda: check_answer("multiple_choice", "x", "BC"), "answer"),
        (lambda: check_answer("multiple_choice", "x", "A", choices=[]), "choices"),
        (lambda: check_answer("math", "x", "1", choices=CHOICES), "choices"),
        (lambda: check_answer("exact", "x", "1", tests="pass"), "tests"),
        (lambda: check_answer("numeric", "x", "twelve"), "answer"),
        (lambda: check_answer("math", "x", " $ $ "), "answer"),
        (lambda: extract_choice("x", 0), "n_choices"),
        (lambda: run_code_tests("pass", "pass", timeout_s=0), "timeout_s"),
        (lambda: run_code_tests("pass", "pass", memory_mb=0), "memory_mb"),
    ],
)
def test_bad_arguments_are_named(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
