r"""Answer checkers: decide whether a model's response to a bank question is correct.

The capability matrix of a bank records, per model and question, whether the model answered correctly;
``check_answer(task, response, answer, ...)`` is that decision. Every checker first *extracts* an answer
from the free-form response and then compares it with the reference; a response from which nothing can be
extracted is wrong (``extracted=None``), never given a default. The rules, by task (the task names and the
answer formats the prompts ask for are those of ``smcs.core.prompts``):

*Explicit statements.* A ``\boxed{…}`` (also ``\fbox{…}`` and ``\boxed x``; braces matched, nested ones
included, escaped ``\{``/``\}`` not counted) or an answer statement: "the answer is X", "answer: X",
"**Answer:** X", "the answer would/should/must/will be X". The statement's X is the rest of its line (or
the next non-empty line when the statement ends its line), cut at the first sentence end (". ", "! ",
"? ").

``multiple_choice``: the letter of the LAST explicit statement that names one (``(C)``, ``C``, ``C.``,
``\text{C}``, "option C", a lone lower-case ``c``; a bare capital must stand alone, so "I'm" or
"A-level" name none). Only when no statement names a letter: a final ``(C)``, a response that is just a
letter, or a last line starting ``C)`` when no other line starts that way. With ``n_choices`` (from
``choices``) a letter beyond the range is no answer. When no letter is found and ``choices`` are given,
a final answer (the last statement, else the whole response) equal to exactly one choice's text, after
the ``exact`` normalisation, answers that choice. ``answer`` is the letter (any case, "(B)" too) or,
with ``choices``, exactly one choice's text.

``math``: the last ``\boxed{}``, else the last answer statement, compared with ``math_equivalent``: equal
after ``normalise_math``, or both numbers (integers, decimals, "1,000", scientific "1e5" or
``1.5\times10^{3}``, "a/b", ``\frac{a}{b}``) equal within a relative 1e-6. Percentages are dropped as
units, not converted: "50\%" equals "50", never "0.5". Tuples, sets and expressions compare as strings.

``numeric``: ``extract_number``: the number in the last ``\boxed{}`` (exactly one number there, else
none), else the number the last answer statement starts with (else none), else the last number in the
text; currency signs, units and thousands separators fall away. It must equal the number in ``answer``
within a relative 1e-6.

``exact``: the final answer (the last explicit statement, else the whole response), case-folded,
white space collapsed, ``$`` and ``\text{}``-like wrappers, surrounding quotes, markup and punctuation
and one enclosing bracket pair removed, equals ``answer`` normalised alike.

``code``: the program is the last fenced block tagged python (``py``, ``python3``), else the last
untagged fenced block, else the whole response. ``run_code_tests`` runs it and then ``tests`` (Python
with ``assert``; when ``answer`` names an entry point and ``tests`` defines ``check``, ``check(answer)`` is
called, HumanEval style) in a separate sandboxed interpreter; correct iff it exits 0 in time. See
``run_code_tests`` for the sandbox and its limits. Standard-input/output tests are not supported.

``instruction``: not supported yet (``ValueError``).
"""

from __future__ import annotations

import contextlib
import keyword
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO

import msgspec

from smcs.core.prompts import TASKS, Task
from smcs.errors import InputError


class CheckResult(msgspec.Struct, frozen=True):
    """The verdict on one response: whether it is ``correct``, the answer ``extracted`` from it (None when
    nothing parseable was found) and a short human-readable ``reason``."""

    correct: bool
    extracted: str | None
    reason: str


# ---------------------------------------------------------------------------------------------------
# explicit statements: \boxed{...} and "the answer is ..."

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BOXED_TOKEN = re.compile(r"[^\s$]+")
_STATEMENT = re.compile(
    r"\banswer\b[*_]*\s*(?:(?:is|would\s+be|should\s+be|must\s+be|will\s+be)\b[\s*_:]*|[:：][\s*_]*)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?](?=\s|\Z)|\n")


def _closing(text: str, start: int, opener: str = "{", closer: str = "}") -> int | None:
    """Index of the ``closer`` that matches the ``opener`` at ``text[start]`` (None when unmatched);
    a backslash escapes the character after it."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxed_answers(response: str) -> list[tuple[int, str]]:
    """(position, stripped content) of every non-empty, well-formed box in ``response``."""
    found = []
    for match in _BOXED.finditer(response):
        start = match.end()
        if response.startswith("{", start):
            end = _closing(response, start)
            content = "" if end is None else response[start + 1 : end]
        elif match.group().endswith((" ", "\t", "\n")):  # "\boxed 5": one token
            token = _BOXED_TOKEN.match(response, start)
            content = "" if token is None else token.group()
        else:
            content = ""
        if content.strip():
            found.append((match.start(), content.strip()))
    return found


def _statement_answers(response: str) -> list[tuple[int, str]]:
    """(position, text) of every non-empty answer statement ("the answer is X", "Answer: X") in
    ``response``: X is the rest of the line, or the next line when the statement ends its line, up to
    the first sentence end."""
    found = []
    for match in _STATEMENT.finditer(response):
        rest = response[match.end() :].lstrip(" \t\n*_")
        end = _SENTENCE_END.search(rest)
        text = (rest if end is None else rest[: end.start()]).strip()
        if text:
            found.append((match.start(), text))
    return found


def _explicit_answers(response: str) -> list[tuple[int, str]]:
    """The boxes and the answer statements of ``response``, in the order they appear."""
    return sorted(_boxed_answers(response) + _statement_answers(response))


def _final_answer(response: str) -> str:
    """The text of the last explicit statement, else the whole response (stripped)."""
    explicit = _explicit_answers(response)
    return explicit[-1][1] if explicit else response.strip()


def extract_boxed(response: str) -> str | None:
    r"""The content of the last ``\boxed{…}`` (or ``\fbox{…}``, ``\boxed x``) of ``response``, braces
    matched; None when there is none (an empty or unclosed box does not count)."""
    found = _boxed_answers(response)
    return found[-1][1] if found else None


# ---------------------------------------------------------------------------------------------------
# multiple choice

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# what may stand between "the answer is" and the letter: space, markup, math and text wrappers, "option"
_CHOICE_LEAD = re.compile(
    r"(?:\s+|[*_:$`'\"“‘]|\\[(\[]|\\(?:boxed|fbox|text|textbf|mathrm|mathbf)\s*\{|\{|(?:option|choice|letter)\b)*",
    re.IGNORECASE,
)
_CHOICE = re.compile(r"\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Z])(?![\w'’-])")
_LONE_LETTER_TAIL = re.compile(r"[\s*_.)\]}$'\"”’]*")
_FINAL_PAREN = re.compile(r"\(([A-Z])\)[\s*_.!]*\Z")
_ONLY_LETTER = re.compile(r"[\s*_]*([A-Z])[\s*_.]*")
_LINE_LETTER = re.compile(r"^[ \t*_]*([A-Z])\)", re.MULTILINE)


def _letters(n_choices: int | None) -> str:
    """The valid answer letters for ``n_choices`` options (all 26 when None)."""
    if n_choices is None:
        return _LETTERS
    if not 1 <= n_choices <= len(_LETTERS):
        raise InputError(f"n_choices must be between 1 and {len(_LETTERS)}, got {n_choices!r}")
    return _LETTERS[:n_choices]


def _leading_choice(text: str) -> str | None:
    """The choice letter that ``text`` (what an explicit statement says) starts with, upper-cased."""
    rest = text[_CHOICE_LEAD.match(text).end() :]  # type: ignore[union-attr]  # a * pattern always matches
    match = _CHOICE.match(rest)
    if match is not None:
        return next(group for group in match.groups() if group is not None).upper()
    if rest[:1].isascii() and rest[:1].isalpha() and _LONE_LETTER_TAIL.fullmatch(rest, 1):
        return rest[0].upper()  # a lone lower-case letter: "answer: b"
    return None


def extract_choice(response: str, n_choices: int | None = None) -> str | None:
    """The answer letter ("A".."Z") of a multiple-choice ``response``, or None when it names none.

    The last explicit statement that names a letter wins; only without one, a final "(X)", a response
    that is just a letter, or a last line "X) …" that no other line resembles. With ``n_choices``, letters
    beyond the range are ignored. Never a default letter."""
    letters = _letters(n_choices)
    for _, text in reversed(_explicit_answers(response)):
        letter = _leading_choice(text)
        if letter is not None and letter in letters:
            return letter
    weak = _FINAL_PAREN.search(response) or _ONLY_LETTER.fullmatch(response)
    if weak is None:
        lines = list(_LINE_LETTER.finditer(response))
        if len(lines) == 1 and "\n" not in response[lines[0].start() :].strip():
            weak = lines[0]
    return weak.group(1) if weak is not None and weak.group(1) in letters else None


def _matching_choices(text: str, choices: Sequence[str]) -> list[str]:
    """The letters of the choices whose text equals ``text`` after the ``exact`` normalisation."""
    wanted = _normalise_exact(text)
    return [letter for letter, choice in zip(_LETTERS, choices) if _normalise_exact(choice) == wanted]


def _expected_letter(answer: str, choices: Sequence[str] | None, letters: str) -> str:
    """The reference letter: ``answer`` as a letter in range, or the letter of the one choice it quotes."""
    letter = answer.strip().strip("()").upper()
    if len(letter) == 1 and letter in letters:
        return letter
    quoted = [] if choices is None else _matching_choices(answer, choices)
    if len(quoted) == 1:
        return quoted[0]
    raise InputError(f"answer must be a choice letter A-{letters[-1]} (or one choice's text), got {answer!r}")


def _check_choice(response: str, answer: str, choices: Sequence[str] | None) -> CheckResult:
    if choices is not None and not 1 <= len(choices) <= len(_LETTERS):
        raise InputError(f"choices must hold 1 to {len(_LETTERS)} options, got {len(choices)}")
    n_choices = None if choices is None else len(choices)
    expected = _expected_letter(answer, choices, _letters(n_choices))
    letter = extract_choice(response, n_choices)
    how = ""
    if letter is None and choices is not None:
        quoted = _matching_choices(_final_answer(response), choices)
        if len(quoted) == 1:
            letter, how = quoted[0], " (by its text)"
    if letter is None:
        return CheckResult(False, None, "no answer letter found")
    if letter == expected:
        return CheckResult(True, letter, f"answered {letter}{how}")
    return CheckResult(False, letter, f"answered {letter}{how}, expected {expected}")


# ---------------------------------------------------------------------------------------------------
# numbers

_DECIMAL = r"(?:\d+(?:\.\d+)?|\.\d+)"
_NUMBER_BODY = (
    rf"\\[dt]?frac\{{(?P<tex_num>-?{_DECIMAL})\}}\{{(?P<tex_den>-?{_DECIMAL})\}}"
    rf"|(?P<num>{_DECIMAL})/(?P<den>{_DECIMAL})(?![\d/])"
    r"|(?P<thousands>\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?!,?\d)"
    rf"|(?P<mantissa>{_DECIMAL})"
    r"(?:[eE](?P<exp>[-+]?\d{1,3})(?!\d)|\s*(?:\\times|\\cdot|×)\s*10\^\{?(?P<tex_exp>[-+]?\d{1,3})\}?)?"
)
_NUMBER = re.compile(rf"(?P<sign>[-−+])?(?:{_NUMBER_BODY})")
# in running text: a sign only where it cannot be a binary minus, and no digits glued to a word
_NUMBER_IN_TEXT = re.compile(rf"(?:(?<![\w)\]}}])(?P<sign>[-−+]))?(?<![\w.])(?:{_NUMBER_BODY})")
# what may precede the number an answer statement gives: markup, math delimiters, currency, "x ="
_NUMBER_LEAD = re.compile(r"[\s*_:$`(\[\\]*(?:[A-Za-z]\s*=[\s$(\\]*)?")
_REL_TOL = Fraction(1, 10**6)


def _value(match: re.Match[str]) -> Fraction | None:
    """The exact value of a ``_NUMBER``/``_NUMBER_IN_TEXT`` match (None for a zero denominator or an
    integer too long to convert)."""
    group = match.groupdict()
    try:
        if group["tex_num"] is not None:
            value = Fraction(group["tex_num"]) / Fraction(group["tex_den"])
        elif group["num"] is not None:
            value = Fraction(group["num"]) / Fraction(group["den"])
        elif group["thousands"] is not None:
            value = Fraction(group["thousands"].replace(",", ""))
        else:
            value = Fraction(group["mantissa"]) * Fraction(10) ** int(group["exp"] or group["tex_exp"] or 0)
    except (ZeroDivisionError, ValueError):
        return None
    return -value if group["sign"] in ("-", "−") else value


def _parse_number(text: str) -> Fraction | None:
    """``text`` as an exact number when the whole of it is one, else None."""
    match = _NUMBER.fullmatch(text.strip())
    return None if match is None else _value(match)


def _numbers(text: str) -> list[tuple[int, str, Fraction]]:
    """The numbers written in ``text``, in order: each as its position, its text and its value."""
    found = []
    for match in _NUMBER_IN_TEXT.finditer(text):
        value = _value(match)
        if value is not None:
            found.append((match.start(), match.group(), value))
    return found


def _same_number(a: Fraction, b: Fraction) -> bool:
    """Whether ``a`` and ``b`` agree within a relative 1e-6."""
    return abs(a - b) <= _REL_TOL * max(abs(a), abs(b))


def _answer_number(response: str) -> tuple[str, Fraction] | None:
    """The number a ``numeric`` response answers (see ``extract_number``): its text and its value."""
    boxed = extract_boxed(response)
    if boxed is not None:
        numbers = _numbers(boxed)
        return numbers[0][1:] if len(numbers) == 1 else None
    statements = _statement_answers(response)
    if statements:
        statement = statements[-1][1]
        numbers = _numbers(statement)
        leads = numbers and _NUMBER_LEAD.fullmatch(statement, 0, numbers[0][0])
        return numbers[0][1:] if leads else None
    numbers = _numbers(response)
    return numbers[-1][1:] if numbers else None


def extract_number(response: str) -> str | None:
    r"""The number a ``numeric`` response answers, as written ("1,234", "-3", "1/2"), or None.

    The one number inside the last ``\boxed{}`` (None when the box holds none or several), else the number
    the last answer statement starts with ("The answer is $42 apples.", "the answer is x = 42"; None when
    it starts otherwise), else the last number in the text. Currency signs and units are not part of it."""
    number = _answer_number(response)
    return None if number is None else number[0]


def _check_numeric(response: str, answer: str) -> CheckResult:
    references = _numbers(answer)
    if len(references) != 1:
        raise InputError(f"answer must be a single number, got {answer!r}")
    (_, reference, expected), number = references[0], _answer_number(response)
    if number is None:
        return CheckResult(False, None, "no number found")
    extracted, value = number
    if _same_number(value, expected):
        return CheckResult(True, extracted, f"{extracted} equals {reference}")
    return CheckResult(False, extracted, f"{extracted} differs from {reference}")


# ---------------------------------------------------------------------------------------------------
# math

_TEXT_MACRO = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{")
_MATH_DROPPED = re.compile(
    r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle|\\[!,;: ]|~|\^\s*\{?\\circ\}?|°|\\?%|\\\$|\$|\\[()\[\]]"
)
_UNIT = re.compile(r"(?<=\S)\s*\\(?:text|textrm|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z\s.^0-9]*\}\s*\Z")
_DFRAC = re.compile(r"\\[dt]frac(?![A-Za-z])")
_ASSIGNMENT = re.compile(r"[A-Za-z]=([^=]+)")
_SHORTHANDS = (  # LaTeX's one-token arguments: \frac12, \frac1{2}, \frac{1}2, \sqrt2
    (re.compile(r"\\frac(\w)(\w)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac(\w)\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\{([^{}]*)\}(\w)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\sqrt(\w)"), r"\\sqrt{\1}"),
)


def _unwrap_macros(text: str) -> str:
    r"""``text`` with ``\text{…}``-like wrappers replaced by their content."""
    while (match := _TEXT_MACRO.search(text)) is not None:
        end = _closing(text, match.end() - 1)
        if end is None:  # unclosed: drop the macro name and its brace
            text = text[: match.start()] + text[match.end() :]
        else:
            text = text[: match.start()] + text[match.end() : end] + text[end + 1 :]
    return text


def normalise_math(text: str) -> str:
    r"""``text`` in a canonical form for string comparison of math answers.

    Drops ``$`` and ``\(…\)``/``\[…\]`` delimiters, ``\left``/``\right``, spacing commands, degree signs,
    percent signs, ``\$``, a trailing unit in ``\text{…}`` ("5\text{ cm}"), then unwraps ``\text{}``-like
    macros, turns ``\dfrac``/``\tfrac`` into ``\frac``, removes all white space and trailing dots, keeps
    the right side of a single "x = …", and braces LaTeX's one-token arguments (``\frac12``)."""
    text = _UNIT.sub("", _MATH_DROPPED.sub("", text).strip())
    text = _DFRAC.sub(r"\\frac", _unwrap_macros(text))
    text = "".join(text.split()).replace("{,}", ",").rstrip(".")
    assignment = _ASSIGNMENT.fullmatch(text)
    if assignment is not None:
        text = assignment.group(1)
    for pattern, replacement in _SHORTHANDS:
        text = pattern.sub(replacement, text)
    return text


def math_equivalent(candidate: str, reference: str) -> bool:
    r"""Whether two math answers agree: equal after ``normalise_math``, or both numbers (integers,
    decimals, "1,000", scientific, "a/b", ``\frac{a}{b}``) equal within a relative 1e-6. An empty answer
    agrees with nothing."""
    candidate, reference = normalise_math(candidate), normalise_math(reference)
    if not candidate or not reference:
        return False
    if candidate == reference:
        return True
    a, b = _parse_number(candidate), _parse_number(reference)
    return a is not None and b is not None and _same_number(a, b)


def _check_math(response: str, answer: str) -> CheckResult:
    if not normalise_math(answer):
        raise InputError(f"answer must not be empty, got {answer!r}")
    extracted = extract_boxed(response)
    if extracted is None:
        statements = _statement_answers(response)
        extracted = statements[-1][1] if statements else None
    if extracted is None:
        return CheckResult(False, None, "no \\boxed{} answer or 'The answer is' statement found")
    if math_equivalent(extracted, answer):
        return CheckResult(True, extracted, "equivalent to the reference")
    return CheckResult(False, extracted, f"not equivalent to the reference {answer.strip()!r}")


# ---------------------------------------------------------------------------------------------------
# exact

_SURROUNDING = " \t\n\"'`*_“”‘’«».,;:!?"
_BRACKETS = ("()", "[]", "{}")


def _normalise_exact(text: str) -> str:
    """``text`` case-folded, white space collapsed, ``$`` and text wrappers removed, surrounding quotes,
    markup and punctuation stripped, and enclosing brackets removed."""
    text = " ".join(_unwrap_macros(text).replace("$", "").split()).casefold()
    while True:
        stripped = text.strip(_SURROUNDING)
        pair = stripped[:1] + stripped[-1:]
        if pair in _BRACKETS and _closing(stripped, 0, *pair) == len(stripped) - 1:
            stripped = stripped[1:-1]
        if stripped == text:
            return text
        text = stripped


def _check_exact(response: str, answer: str) -> CheckResult:
    expected = _normalise_exact(answer)
    if not expected:
        raise InputError(f"answer must not be empty, got {answer!r}")
    final = _final_answer(response)
    normalised = _normalise_exact(final)
    if not normalised:
        return CheckResult(False, None, "no answer found")
    if normalised == expected:
        return CheckResult(True, final, "matches the reference")
    return CheckResult(False, final, f"does not match the reference {answer.strip()!r}")


# ---------------------------------------------------------------------------------------------------
# code

_PYTHON_FENCES = ("python", "py", "python3")
_DEFINES_CHECK = re.compile(r"^def\s+check\s*\(", re.MULTILINE)
_OUTPUT_TAIL = 2048  # bytes of stdout/stderr kept for the reason
_REASON_MAX = 300  # characters of a failure line in the reason
_FILE_SIZE = 16 * 2**20  # RLIMIT_FSIZE
_PROCESSES = 64  # RLIMIT_NPROC (per user; root is exempt)
_BLOCKED_STATUS = 86
_BLOCKED_MARKER = "smcs-sandbox: blocked "
_BLOCKED_PREFIXES = {"socket.": "no network", "ctypes.": "no native code"}
_PROCESS_EVENTS = (
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
    "_posixsubprocess.fork_exec",  # raised by the prelude's stand-in: multiprocessing's spawn has no event
)
_SIGNAL_EVENTS = ("os.kill", "os.killpg", "signal.pthread_kill")
# changing the limits, reaching the audit hook's function (and its closure) through the collector, or
# (stand-ins of the prelude: these have no event) changing the root directory and making device nodes or FIFOs
_ESCAPE_EVENTS = (
    "resource.setrlimit", "resource.prlimit", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "os.chroot", "os.mknod", "os.mkfifo",
)
_OUTSIDE = "no writes outside the sandbox"
# a symbolic link could point anywhere, and a moved relative one somewhere else: none may be made
_LINK_EVENTS = ("os.symlink",)
_BLOCKED_EVENTS = (
    dict.fromkeys(_PROCESS_EVENTS, "no subprocesses")
    | dict.fromkeys(_SIGNAL_EVENTS, "no signals")
    | dict.fromkeys(_ESCAPE_EVENTS, "no sandbox escape")
    | dict.fromkeys(_LINK_EVENTS, _OUTSIDE)
)
# The events that change the file system: the position of the flags of an open (None: every such event
# changes something), then the positions of each path argument and of its dir_fd (None: the event has
# none). A path outside the sandbox's directory ends the run. A path may be a file descriptor (os.fchmod
# and the like: where it is open, read from /proc/self/fd); "open" of a descriptor passes, as its access
# was settled by the audited open that made it.
_FILE_EVENTS: dict[str, tuple[int | None, tuple[tuple[int, int | None], ...]]] = {
    "open": (2, ((0, None),)),  # open(), io, pathlib, os.fdopen, os.open: (path, mode, flags)
    "os.open": (1, ((0, 2),)),  # the prelude's stand-in, as os.open's own "open" leaves dir_fd out
    "os.remove": (None, ((0, 1),)),  # also os.unlink
    "os.rmdir": (None, ((0, 1),)),
    "os.mkdir": (None, ((0, 2),)),
    "os.chmod": (None, ((0, 2),)),
    "os.chown": (None, ((0, 3),)),
    "os.utime": (None, ((0, 3),)),
    "os.truncate": (None, ((0, None),)),
    "os.rename": (None, ((0, 2), (1, 3))),  # also os.replace: moving a file in takes it from outside
    "os.link": (None, ((0, 2), (1, 3))),  # a hard link to an outside file would let it be written
    "os.setxattr": (None, ((0, None),)),
    "os.removexattr": (None, ((0, None),)),
    "os.chflags": (None, ((0, None),)),
    "os.chdir": (None, ((0, None),)),  # relative paths are resolved against the working directory
    "sqlite3.connect": (None, ((0, None),)),  # a str or bytes path; ":memory:" is one inside
}
_EVENT_KINDS = _BLOCKED_EVENTS | dict.fromkeys(_FILE_EVENTS, _OUTSIDE)
# Runs first in the sandboxed interpreter: read the two sources, lower the limits, replace the functions
# that act without an audit event (_posixsubprocess.fork_exec, which starts processes, os.chroot, os.mknod,
# os.mkfifo) by ones that raise one, and os.open by one that also raises its dir_fd, then install the audit
# hook (which cannot be removed; a blocked event writes the marker and ends the process at once, so the
# candidate cannot catch it), then run the program as module "solution" (its `if __name__ == "__main__"`
# block, often a demo reading stdin, does not run; exiting there fails) and the tests as "__main__" in
# the same namespace. `main(...)` is appended with the settings. The hook and what it calls use only
# objects bound before the candidate runs (the candidate can rebind names in os and builtins) and call
# nothing of the candidate's (an argument of another type than str, bytes or int counts as outside).
_PRELUDE = """\
import _posixsubprocess, os, posix, resource, sys

def stand_ins(audit=sys.audit, open=os.open, fspath=os.fspath):
    _posixsubprocess.fork_exec = lambda *args: audit("_posixsubprocess.fork_exec")
    for name in ("chroot", "mknod", "mkfifo"):
        refused = lambda *args, event=f"os.{name}", **kwargs: audit(event)
        setattr(os, name, refused)
        setattr(posix, name, refused)

    def open_at(path, flags, mode=0o777, *, dir_fd=None):
        path = fspath(path)  # once: a path-like object could answer differently the second time
        audit("os.open", path, flags, -1 if dir_fd is None else dir_fd)
        return open(path, flags, mode, dir_fd=dir_fd)

    os.open = posix.open = open_at

def confined(files, getcwd=os.getcwd, readlink=os.readlink, type=type, str=str, bytes=bytes, int=int, OSError=OSError):
    # escapes(event, args): whether the change to the file system that a file event announces reaches
    # outside the working directory (the root)
    files = dict(files)  # a copy: the candidate can reach main's arguments through its frame
    root = [part for part in getcwd().split("/") if part]
    depth = len(root)
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    encoding = sys.getfilesystemencoding()

    def opened(fd):
        # the absolute path descriptor fd is open on; "" when it cannot be told (no /proc, a pipe, no such fd)
        try:
            path = readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""
        return path if path[:1] == "/" else ""

    def absolute(path, dir_fd):
        # path (relative: to dir_fd, or with -1 to the working directory) made absolute; "" when it cannot be
        if type(path) is int:
            return opened(path)
        if type(path) is bytes:
            path = path.decode(encoding, "surrogateescape")
        if type(path) is not str or type(dir_fd) is not int:
            return ""
        if path[:1] == "/":
            return path
        base = getcwd() if dir_fd == -1 else opened(dir_fd)
        return base and f"{base}/{path}"

    def inside(path, dir_fd):
        parts = []
        for part in absolute(path, dir_fd).split("/"):
            if part == "..":
                if parts[:depth] != root or not parts[depth:]:
                    return False  # ".." is followed only inside the root, which holds no symbolic links
                parts.pop()
            elif part and part != ".":
                parts.append(part)
        return parts[:depth] == root

    def escapes(event, args):
        flags_at, paths = files[event]
        if flags_at is not None:
            flags = args[flags_at]
            if type(args[0]) is int or type(flags) is int and not flags & writing:
                return False  # a read, or a descriptor (its access was settled when it was opened)
        for path_at, dir_fd_at in paths:
            if not inside(args[path_at], -1 if dir_fd_at is None else args[dir_fd_at]):
                return True
        return False

    return escapes

def sandbox(limits, blocked, prefixes, files, marker, status, write=os.write, exit=os._exit, type=type, str=str):
    for limit, values in limits:
        resource.setrlimit(limit, values)
    stand_ins()
    events, escapes = frozenset(files), confined(files)
    def hook(event, args):
        if type(event) is str and (
            event in blocked or event.startswith(prefixes) or event in events and escapes(event, args)
        ):
            write(2, f"\\n{marker}{event}\\n".encode())
            exit(status)
    sys.addaudithook(hook)

def main(*settings):
    with open("solution.py", encoding="utf-8") as f:
        program = f.read()
    with open("tests.py", encoding="utf-8") as f:
        tests = f.read()
    sandbox(*settings)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(program, "solution.py", "exec"), namespace)
    except SystemExit as stop:
        sys.exit(f"SystemExit: the program exited ({stop.code!r}) before the tests ran")
    namespace["__name__"] = "__main__"
    exec(compile(tests, "tests.py", "exec"), namespace)
"""
# a Python built with a shared libpython outside the loader's default paths finds it only through this
_PASSED_ENVIRONMENT = ("LD_LIBRARY_PATH",)


def _extract_program(response: str) -> str | None:
    """The program of a code response: the last python-tagged fenced block, else the last untagged one,
    else the whole response; None when that is blank. An unclosed last fence runs to the end."""
    blocks: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in response.splitlines():
        fence = line.strip()
        if current is None:
            if fence.startswith("```"):
                info = fence.lstrip("`").split()
                current = []
                blocks.append((info[0].lower() if info else "", current))
        elif fence.startswith("```") and not fence.strip("`"):
            current = None
        else:
            current.append(line)
    tagged = [lines for lang, lines in blocks if lang in _PYTHON_FENCES]
    chosen = tagged or [lines for lang, lines in blocks if not lang]
    program = textwrap.dedent("\n".join(chosen[-1])) if chosen else response
    return program if program.strip() else None


def _capped(limit: int, soft: int, hard: int) -> tuple[int, tuple[int, int]]:
    """``(limit, (soft, hard))`` lowered to the current hard limit, which an unprivileged child cannot raise."""
    current = resource.getrlimit(limit)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    return limit, (soft, hard)


def _tail(file: IO[bytes]) -> str:
    """The last ``_OUTPUT_TAIL`` bytes of ``file``, decoded."""
    file.seek(0, os.SEEK_END)
    file.seek(max(0, file.tell() - _OUTPUT_TAIL))
    return file.read().decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip()[:_REASON_MAX] if lines else ""


def _failure(status: int, stdout: str, stderr: str) -> str:
    """The reason a sandboxed run that exited with ``status`` (not 0, not timed out) failed."""
    last = _last_line(stderr) or _last_line(stdout)
    if status == _BLOCKED_STATUS and last.startswith(_BLOCKED_MARKER):
        event = last.removeprefix(_BLOCKED_MARKER)
        prefixed = (kind for prefix, kind in _BLOCKED_PREFIXES.items() if event.startswith(prefix))
        kind = _EVENT_KINDS.get(event) or next(prefixed, None)
        if kind is not None:  # else the program printed the marker itself
            return f"{kind}: blocked {event}"
    if status == -signal.SIGXCPU:
        return "CPU time limit"
    if status == -signal.SIGXFSZ:
        return "file size limit"
    if status < 0:
        return f"killed by signal {-status}"
    if last.startswith("MemoryError"):
        return "memory limit"
    return f"failed: {last}" if last else f"failed: exit status {status}"


def run_code_tests(program: str, tests: str, *, timeout_s: float = 10.0, memory_mb: int = 512) -> CheckResult:
    """Run ``program`` and then ``tests`` in a sandboxed interpreter; correct iff it exits 0 in time.

    The sandbox: a separate ``python -I -S`` (isolated, no site-packages: the standard library only) in
    a fresh temporary directory (its working directory, deleted afterwards), with an environment holding
    only ``TMPDIR`` (that directory, so ``tempfile`` works inside it; and ``LD_LIBRARY_PATH`` when set),
    stdin from /dev/null, stdout and stderr to files (at most 16 MiB each; the last 2 kB are read).
    Limits: ``timeout_s`` of wall-clock time, about as much CPU time, ``memory_mb`` MiB of address space,
    16 MiB per written file, few processes (not enforced for root). An audit hook, installed before the
    candidate code runs, ends the run on any socket operation, process creation (subprocess, os.system,
    exec, spawn, fork, multiprocessing), signal sending, ctypes, rlimit change, garbage-collector
    traversal, chroot, mknod or mkfifo, and on any change to the file system outside the directory: an
    open for writing (``open``, ``io``, ``pathlib``, ``os.open``, ``shutil``, ``tempfile`` elsewhere),
    removing, renaming or moving in, making directories, hard links, chmod, chown, utime, truncate,
    xattrs, a sqlite3 database there (or one named by a path-like object rather than a str), or changing
    the working directory to outside it. Relative paths are resolved against the working directory,
    ``dir_fd`` and file-descriptor arguments through /proc/self/fd (where there is none, they count as
    outside), ``..`` only while inside the directory (``root/../root/x`` is refused), and no symbolic
    link may be made at all. Reading stays free. When the run ends or times out, its whole process group
    is killed.

    The program runs as module ``solution`` (so an ``if __name__ == "__main__":`` block does not run,
    and exiting before the tests is a failure), then the tests, as ``__main__``, in its namespace.
    ``reason`` is "passed", "failed: <last line of stderr>", "timed out after N s", "memory limit",
    "CPU time limit", "no network: blocked socket.connect", "no subprocesses: blocked os.system", "no
    writes outside the sandbox: blocked open", ….

    Audit hooks are not a security boundary (PEP 578): this stops ordinary and careless code, not a
    determined attacker, who can reach the unwrapped os.open, _posixsubprocess and the like (a fresh import
    of a built-in module, or the stand-ins' closures), start a process the hooks never see, or write
    through native code that raises no event (sqlite3's ATTACH, readline's history files, POSIX shared
    memory). Run untrusted code at scale inside a container as well. POSIX only; on systems without
    /proc/self/fd, descriptor-based changes (``os.fchmod``, ``dir_fd``) are refused. ``extracted`` is the
    program."""
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise InputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if memory_mb < 1:
        raise InputError(f"memory_mb must be at least 1, got {memory_mb!r}")
    cpu_s, memory = int(timeout_s) + 1, int(memory_mb * 2**20)
    limits = (
        _capped(resource.RLIMIT_AS, memory, memory),
        _capped(resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        _capped(resource.RLIMIT_FSIZE, _FILE_SIZE, _FILE_SIZE),
        _capped(resource.RLIMIT_NPROC, _PROCESSES, _PROCESSES),
        _capped(resource.RLIMIT_CORE, 0, 0),
    )
    blocked, prefixes = frozenset(_BLOCKED_EVENTS), tuple(_BLOCKED_PREFIXES)
    settings = (limits, blocked, prefixes, _FILE_EVENTS, _BLOCKED_MARKER, _BLOCKED_STATUS)
    command = [sys.executable, "-I", "-S", "-B", "-X", "utf8", "-c", f"{_PRELUDE}\nmain(*{settings!r})\n"]
    passed = {name: os.environ[name] for name in _PASSED_ENVIRONMENT if name in os.environ}
    with tempfile.TemporaryDirectory(prefix="smcs-check-") as directory:
        root = Path(directory).resolve()  # as the sandbox's os.getcwd() will name it
        environment = {**passed, "TMPDIR": str(root)}
        (root / "solution.py").write_text(program, encoding="utf-8", errors="replace")
        (root / "tests.py").write_text(tests, encoding="utf-8", errors="replace")
        with open(root / "stdout", "w+b") as stdout, open(root / "stderr", "w+b") as stderr:
            process = subprocess.Popen(
                command,
                cwd=root,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own process group, killed as one
            )
            try:
                status: int | None = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                status = None
            finally:  # also after a normal exit: whatever the program left running in its group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if status is None:
                return CheckResult(False, program, f"timed out after {timeout_s:g} s")
            if status == 0:
                return CheckResult(True, program, "passed")
            return CheckResult(False, program, _failure(status, _tail(stdout), _tail(stderr)))


def _check_code(response: str, answer: str, tests: str | None, timeout_s: float, memory_mb: int) -> CheckResult:
    if tests is None or not tests.strip():
        raise InputError("tests must be given for a code question")
    entry_point = answer.strip()
    if entry_point and _DEFINES_CHECK.search(tests):
        if not entry_point.isidentifier() or keyword.iskeyword(entry_point):
            raise InputError(f"answer must name the entry-point function for check(), got {answer!r}")
        tests = f"{tests}\n\ncheck({entry_point})\n"
    program = _extract_program(response)
    if program is None:
        return CheckResult(False, None, "no program found")
    return run_code_tests(program, tests, timeout_s=timeout_s, memory_mb=memory_mb)


# ---------------------------------------------------------------------------------------------------

_CHECKERS = {"math": _check_math, "numeric": _check_numeric, "exact": _check_exact}


def check_answer(
    task: Task,
    response: str,
    answer: str,
    *,
    choices: Sequence[str] | None = None,
    tests: str | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> CheckResult:
    """Whether ``response`` answers a ``task`` question whose reference answer is ``answer``.

    ``choices`` (the options' texts, in letter order) only for ``multiple_choice``; ``tests`` (required)
    only for ``code``, whose ``answer`` is the entry-point function ("" when the tests call it
    themselves); ``timeout_s`` and ``memory_mb`` bound the code run. ``ValueError`` naming the argument for
    an unknown task, ``instruction`` (not checkable yet), arguments given to the wrong task, a missing
    or empty ``tests``, or a reference ``answer`` the task cannot use. See the module docstring."""
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if task == "instruction":
        raise InputError("instruction-following answers cannot be checked yet")
    if choices is not None and task != "multiple_choice":
        raise InputError(f"choices are only for multiple_choice questions, not {task}")
    if tests is not None and task != "code":
        raise InputError(f"tests are only for code questions, not {task}")
    if task == "multiple_choice":
        return _check_choice(response, answer, choices)
    if task == "code":
        return _check_code(response, answer, tests, timeout_s, memory_mb)
    return _CHECKERS[task](response, answer)
