"""The prompts of MoA as a pairwise reward model (MoAA: Wang et al., ICML 2025, §3.2.2–3.2.3 and Appendix K.2–K.4),
written here in our own words, and the parsers of their answers.

- *Criteria filtering* (K.2): a model reads the query and both responses and picks exactly three
  criteria from ``CRITERIA`` (the paper's list of eight), answering in a fixed ``Selected Criteria:``
  format.
- *Proposer judges* (K.3): each compares responses A and B under the three criteria, with a qualitative
  grade per criterion (``GRADES``) and a comparative analysis, told to ignore length, names and order.
- *Aggregator judge* (K.4): reads the proposers' evaluations, weighs their consistency, and gives the
  final verdict as ``[[A]]`` or ``[[B]]`` (the paper's ``[**A**]`` / ``[**B**]`` marker, which its text
  extraction shows bolded; ``parse_verdict`` accepts either).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..core.messages import ChatMessage

CRITERIA: dict[str, str] = {
    "Instruction adherence": "how closely the response does what the user asked",
    "Relevance": "how directly the response addresses the query",
    "Accuracy": "whether the information is correct and current",
    "Depth": "how complete and detailed the answer is",
    "Clarity": "how well organised and easy to follow the response is",
    "Helpfulness": "how much the response actually helps the user with the problem or question",
    "Safety": "how well the response handles sensitive or dangerous requests",
    "Robustness": "how well the response copes with nuanced or ambiguous parts of the query",
}
"""The criteria of K.2, with a one-line gloss each."""

DEFAULT_CRITERIA = ("Accuracy", "Helpfulness", "Instruction adherence")
"""Used when the criteria filter's answer names fewer than three known criteria (noted in the record)."""

GRADES = ("Exceptional", "Strong", "Satisfactory", "Needs improvement", "Inadequate")
"""The qualitative grades a proposer judge uses per criterion (K.3)."""


def _criteria_list() -> str:
    return "\n".join(f"{i}. {name}: {gloss}." for i, (name, gloss) in enumerate(CRITERIA.items(), start=1))


def _pair_block(question: str, a: str, b: str) -> str:
    return f"User query:\n{question}\n\n[Assistant A response]\n{a}\n[End of A]\n\n[Assistant B response]\n{b}\n[End of B]"


def criteria_messages(question: str, a: str, b: str) -> list[ChatMessage]:
    """K.2: pick the three criteria most relevant to judging ``a`` and ``b`` on ``question``."""
    text = (
        "Read the user query and the two AI assistant responses below, and decide which three evaluation "
        "criteria matter most for comparing these responses. Pick exactly three from this list:\n\n"
        f"{_criteria_list()}\n\n"
        "For example, for a query about the health benefits of green tea, a good choice is Accuracy (the health "
        "claims must be right), Depth (the benefits should be covered well) and Clarity (scientific information "
        "should be easy to follow).\n\n"
        f"{_pair_block(question, a, b)}\n\n"
        "Answer in exactly this format:\n\nSelected Criteria:\n1. [criterion]\n2. [criterion]\n3. [criterion]\n\n"
        "Explanation: [why these three, briefly]"
    )
    return [ChatMessage("user", text)]


def _criteria_lines(criteria: Sequence[str]) -> str:
    return "\n".join(f"- {c}: {CRITERIA.get(c, '')}".rstrip(": ") for c in criteria)


def proposer_messages(question: str, a: str, b: str, criteria: Sequence[str]) -> list[ChatMessage]:
    """K.3: one proposer judge's comparison of A and B under ``criteria``."""
    system = (
        "You are an impartial expert evaluator. Critically compare the responses of two AI assistants, A and B, "
        "to a user query:\n"
        "1. Work out exactly what the query asks for.\n"
        "2. Judge both responses on each of these criteria, then compare them directly on it:\n"
        f"{_criteria_lines(criteria)}\n"
        f"3. Grade each response on each criterion in words: {', '.join(GRADES)}; explain each grade briefly.\n"
        "4. Sum up the main strengths and weaknesses of each response, compare their overall quality, and "
        "explain your reasoning with reference to specific parts of each.\n"
        "Do not let the length of the responses, the assistants' names or the order they are shown in sway you."
    )
    return [ChatMessage("system", system), ChatMessage("user", _pair_block(question, a, b))]


def aggregator_messages(question: str, a: str, b: str, criteria: Sequence[str], evaluations: Sequence[str]) -> list[ChatMessage]:
    """K.4: the aggregator judge's final verdict from the proposers' ``evaluations`` (numbered in order)."""
    system = (
        "You are an expert meta-evaluator. Several evaluators have compared two AI assistants' responses (A and B) "
        "to a user query; weigh their evaluations and decide:\n"
        "1. Check how consistent and well argued the evaluations are.\n"
        "2. Look for bias, mistakes or things an evaluator missed.\n"
        "3. Take into account the strengths and weaknesses of each response that the evaluations point out.\n"
        "4. Write a final evaluation that compares the two responses clearly, settles any disagreement between "
        "the evaluators, and ends with a definite judgement: write [[A]] if assistant A is better or [[B]] if "
        "assistant B is better.\n"
        "Do not let the length of the responses, the assistants' names or the order they are shown in sway you.\n\n"
        f"Judge by these criteria:\n{_criteria_lines(criteria)}"
    )
    numbered = "\n\n".join(f"Evaluation {i}:\n{text}" for i, text in enumerate(evaluations, start=1))
    user = f"{_pair_block(question, a, b)}\n\nIndividual evaluations:\n\n{numbered}\n\nFinal meta-evaluation:"
    return [ChatMessage("system", system), ChatMessage("user", user)]


_CRITERION_NAMES = {name.lower(): name for name in CRITERIA}
_CRITERIA_PATTERN = re.compile("|".join(re.escape(n) for n in sorted(_CRITERION_NAMES, key=len, reverse=True)), re.IGNORECASE)


def parse_criteria(text: str) -> list[str] | None:
    """The first three distinct known criteria the filter's answer names (after ``Selected Criteria:``
    when it says so, else anywhere), in its order; None when it names fewer than three."""
    lowered = text.lower()
    start = lowered.find("selected criteria")
    end = lowered.find("explanation", max(start, 0))
    body = text[max(start, 0): end if end >= 0 else len(text)]
    found: list[str] = []
    for match in _CRITERIA_PATTERN.finditer(body):
        name = _CRITERION_NAMES[match.group(0).lower()]
        if name not in found:
            found.append(name)
    return found[:3] if len(found) >= 3 else None


_VERDICT = re.compile(r"\[\s*\[\s*([AB])\s*\]\s*\]|\[\s*\*\*\s*([AB])\s*\*\*\s*\]")


def parse_verdict(text: str) -> str | None:
    """``"A"`` or ``"B"``: the last ``[[A]]``/``[[B]]`` (or ``[**A**]``/``[**B**]``) marker of the
    aggregator's answer; None when it has none."""
    matches = list(_VERDICT.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) or last.group(2)


OPINIONS_INTRO = (
    "Other AI models have answered the instruction below; their responses (opinions) follow, numbered. They "
    "may be wrong, incomplete or disagree with each other: weigh them critically, use what is right in them, "
    "and write your own best response."
)
"""The system block of a Mixture-of-Opinions (MoO) record (the context carries other models' responses)."""


def opinions_block(opinions: Sequence[str]) -> str:
    """``OPINIONS_INTRO`` with ``opinions`` numbered ``Opinion 1:`` … in the given order."""
    return OPINIONS_INTRO + "".join(f"\n\nOpinion {i}:\n{text}" for i, text in enumerate(opinions, start=1))
