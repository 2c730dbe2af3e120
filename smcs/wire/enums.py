"""The enums of the wire contract ⇄ the strings smcs uses in Python: one table per enum.

Python keeps its closed sets as strings (``Policy.retrieval = "ivf"``, ``AnswerResult.source``, a call's
``error_kind``…); the proto makes each an enum (``smcs.v1.Retrieval``…) whose zero value ``*_UNSPECIFIED``
means unset. Each ``EnumTable`` maps the Python strings to the enum's numbers and back; the tests check
that every table covers every value of its enum and exactly the strings of its Python set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from .._proto import router_pb2 as pb
from ..backends.errors import ErrorKind as BackendErrorKind
from ..core.pipeline import Source
from ..core.policy import RETRIEVALS, SCORER_CHOICES
from ..core.prompts import TASKS
from ..errors import InputError
from ..strategies.base import Role, ScoreKind


class EnumTable:
    """The strings of one Python set and the numbers of one proto enum, each to the other.

    ``None`` (and ``""`` where the Python set uses it for "none") stands for the enum's zero value,
    ``*_UNSPECIFIED``.
    """

    def __init__(self, enum: EnumTypeWrapper, numbers: Mapping[str, int]) -> None:
        self.enum = enum
        self.full_name: str = enum.DESCRIPTOR.full_name
        self.numbers: dict[str, int] = dict(numbers)
        self.names: dict[int, str] = {number: name for name, number in numbers.items()}
        if len(self.names) != len(self.numbers) or 0 in self.names:
            raise ValueError(f"{self.full_name}: a table maps distinct strings to distinct non-zero numbers")

    def to_wire(self, name: str | None) -> int:
        """The number of ``name`` (0 for None or ""); ``ValueError`` for a string the contract lacks (a bug
        on the sending side: its set and the proto disagree)."""
        if not name:
            return 0
        try:
            return self.numbers[name]
        except KeyError:
            raise ValueError(f"{name!r} has no value in {self.full_name} ({', '.join(self.numbers)})") from None

    def from_wire(self, number: int) -> str | None:
        """The string of ``number``; None for 0 and for a number this build does not know (a newer peer's)."""
        return self.names.get(number)

    def checked(self, number: int, field: str) -> str | None:
        """The string of a request's ``number`` (None: unset); ``InputError`` naming ``field`` for a number
        this server does not know."""
        if number != 0 and number not in self.names:
            raise InputError(f"{field} is {number}, not a value of {self.full_name}")
        return self.names.get(number)

    def parse(self, name: str, field: str) -> int:
        """The number of a caller's string (client side); ``InputError`` naming ``field`` and the choices."""
        if name not in self.numbers:
            raise InputError(f"{field} must be one of {', '.join(self.numbers)}, got {name!r}")
        return self.numbers[name]


RETRIEVAL = EnumTable(pb.Retrieval, {"auto": pb.RETRIEVAL_AUTO, "exact": pb.RETRIEVAL_EXACT, "ivf": pb.RETRIEVAL_IVF})
"""``Policy.retrieval`` (``smcs.core.policy.RETRIEVALS``)."""

SCORER = EnumTable(pb.Scorer, {
    "auto": pb.SCORER_AUTO, "vote": pb.SCORER_VOTE, "source": pb.SCORER_SOURCE, "knn": pb.SCORER_KNN,
    "head": pb.SCORER_HEAD,
})
"""``Policy.scorer`` (``smcs.core.policy.SCORER_CHOICES``), a decision's scorer and a bank fit's pick."""

TASK = EnumTable(pb.Task, {
    "math": pb.TASK_MATH, "numeric": pb.TASK_NUMERIC, "multiple_choice": pb.TASK_MULTIPLE_CHOICE,
    "code": pb.TASK_CODE, "exact": pb.TASK_EXACT, "instruction": pb.TASK_INSTRUCTION,
})
"""The prompt template of an Answer (``smcs.core.prompts.TASKS``); unset: the bare question."""

ANSWER_SOURCE = EnumTable(pb.AnswerSource, {
    "aggregation": pb.ANSWER_SOURCE_AGGREGATION, "fallback_aggregator": pb.ANSWER_SOURCE_FALLBACK_AGGREGATOR,
    "best_reference": pb.ANSWER_SOURCE_BEST_REFERENCE, "consensus": pb.ANSWER_SOURCE_CONSENSUS,
})
"""``AnswerResult.source`` (``smcs.core.pipeline.Source``)."""

SCORE_KIND = EnumTable(pb.ScoreKind, {
    "prior": pb.SCORE_KIND_PRIOR, "accuracy": pb.SCORE_KIND_ACCURACY, "skill": pb.SCORE_KIND_SKILL,
})
"""``StrategyPlan.score_kind`` (``smcs.strategies.base.ScoreKind``; its "" is the zero value)."""

CALL_ROLE = EnumTable(pb.CallRole, {
    "proposer": pb.CALL_ROLE_PROPOSER, "aggregator": pb.CALL_ROLE_AGGREGATOR, "sample": pb.CALL_ROLE_SAMPLE,
    "voter": pb.CALL_ROLE_VOTER, "expert": pb.CALL_ROLE_EXPERT, "answerer": pb.CALL_ROLE_ANSWERER,
})
"""``StrategyCall.role`` (``smcs.strategies.base.Role``)."""

ERROR_KIND = EnumTable(pb.ErrorKind, {
    "setup": pb.ERROR_KIND_SETUP, "connection": pb.ERROR_KIND_CONNECTION, "timeout": pb.ERROR_KIND_TIMEOUT,
    "rate_limited": pb.ERROR_KIND_RATE_LIMITED, "context_overflow": pb.ERROR_KIND_CONTEXT_OVERFLOW,
    "auth": pb.ERROR_KIND_AUTH, "bad_request": pb.ERROR_KIND_BAD_REQUEST, "server_error": pb.ERROR_KIND_SERVER_ERROR,
    "malformed_response": pb.ERROR_KIND_MALFORMED_RESPONSE, "empty_response": pb.ERROR_KIND_EMPTY_RESPONSE,
    "empty_subset": pb.ERROR_KIND_EMPTY_SUBSET,
})
"""A failed call's ``error_kind`` (``CallEvidence``): a backend's kind (``smcs.backends.errors.ErrorKind``),
or the pipeline's own ``empty_response`` (no text) and ``empty_subset`` (every reference of a subset failed)."""

PIPELINE_ERROR_KINDS = ("empty_response", "empty_subset")
"""The error kinds the pipeline gives a call itself, besides the backends' ``ErrorKind``."""

PYTHON_SETS: dict[str, tuple[EnumTable, tuple[str, ...]]] = {
    "retrieval": (RETRIEVAL, RETRIEVALS),
    "scorer": (SCORER, SCORER_CHOICES),
    "task": (TASK, TASKS),
    "source": (ANSWER_SOURCE, get_args(Source)),
    "score_kind": (SCORE_KIND, tuple(k for k in get_args(ScoreKind) if k)),
    "role": (CALL_ROLE, get_args(Role)),
    "error_kind": (ERROR_KIND, get_args(BackendErrorKind) + PIPELINE_ERROR_KINDS),
}
"""Each table and the Python strings it must cover exactly (the tests check both directions)."""
