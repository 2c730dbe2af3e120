"""Answer grading (DESIGN layer 4): the checkers that judge a model's answer against a question's label,
with the sandboxed code runner (``smcs.grading.checkers``)."""

from .checkers import CheckResult, check_answer

__all__ = ["CheckResult", "check_answer"]
