"""The RouterService servicer: translates messages, calls the core, maps errors to status codes. No algorithm here."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import numpy as np

from .. import kernels
from ..core import RouteCall, RouteDecision, Router
from .._proto import router_pb2 as pb
from .._proto import router_pb2_grpc as pb_grpc
from ..bank import Bank, BankFormatError, ModelInfo, Question
from ..config import AnswerConfig, ServerConfig
from ..core.pipeline import QuorumNotMet, finite_totals, perplexities
from ..core.query_text import query_texts
from ..backends.pool import ModelPool
from ..runtime.host import NoModelsConfigured, StepHost, answer_models
from ..embed import EmbedderError, EmbedderTimeout
from ..errors import InputError, SmcsError
from ..strategies import StrategyError, get_strategy, parse_params
from ..wire import convert
from ..wire.convert import RequestError, invalid
from ..wire.decision import route_response
from ..wire.enums import SCORER
from .batching import RouteBatcher
from .metrics import Metrics
from .state import ServiceState, Snapshot

log = logging.getLogger(__name__)

Response = TypeVar("Response")


_STATUS_OF: tuple[tuple[type[SmcsError], grpc.StatusCode], ...] = (
    (NoModelsConfigured, grpc.StatusCode.FAILED_PRECONDITION),
    (BankFormatError, grpc.StatusCode.FAILED_PRECONDITION),
    (QuorumNotMet, grpc.StatusCode.UNAVAILABLE),
    (InputError, grpc.StatusCode.INVALID_ARGUMENT),  # BankError, StrategyError, ConfigError, ...
)
"""The status of each error kind a call may end with (the first that matches), besides ``RequestError``,
which carries its own."""


def _status(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failed call ends with: a ``RequestError``'s own, the status of its
    ``SmcsError`` kind; anything else (a bug, whatever its class, a bare ``ValueError`` included) is logged
    and becomes INTERNAL, without a traceback to the caller. Input the request got wrong is turned into a
    ``RequestError`` where it is checked (``smcs.wire.convert``) or raised as an ``InputError``."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    for kind, code in _STATUS_OF:
        if isinstance(exc, kind):
            return code, str(exc)
    log.exception("%s failed", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"{method} failed on the server; see its log"


def _unary(method: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """End a unary call that raised with the status ``_status`` gives it."""

    @functools.wraps(method)
    async def wrapper(self: RouterService, request: object, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except Exception as exc:
            code, message = _status(exc, method.__name__)
        await context.abort(code, message)

    return wrapper


def _streaming(method: Callable[..., AsyncIterator[Response]]) -> Callable[..., AsyncIterator[Response]]:
    """End a server-streaming call that raised, before or between messages, with the status ``_status`` gives it."""

    @functools.wraps(method)
    async def wrapper(self: RouterService, request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[Response]:
        try:
            async for message in method(self, request, context):
                yield message
            return
        except Exception as exc:
            code, message_text = _status(exc, method.__name__)
        await context.abort(code, message_text)

    return wrapper


class RouterService(pb_grpc.RouterServiceServicer):
    """The ``smcs.v1.RouterService`` service over a ``ServiceState``."""

    def __init__(
        self, state: ServiceState, server: ServerConfig, metrics: Metrics, pool: ModelPool, answer: AnswerConfig,
        batcher: RouteBatcher,
    ) -> None:
        self._state = state
        self._server = server
        self._metrics = metrics
        self._pool = pool
        self._answer = answer
        self._batcher = batcher

    async def _route(self, router: Router, call: RouteCall) -> RouteDecision:
        """``call`` routed by ``router``, batched with the concurrent calls on a worker thread (a lone call
        over a bank under ``inline_route_bytes`` on the event loop); the Answer's steps route through it too."""
        with self._metrics.stage("route"):
            return await self._batcher.route(router, call)

    async def _snapshot(self) -> Snapshot:
        """The snapshot a request works on: the live one, first switched to a version another process
        committed when ``check_current`` is on; UNAVAILABLE while the bank loads."""
        live = await self._state.latest() if self._server.check_current else self._state.live
        if live is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the bank is still loading; retry shortly")
        return live

    @_unary
    async def Route(self, request: pb.RouteRequest, context: grpc.aio.ServicerContext) -> pb.RouteResponse:
        snapshot = await self._snapshot()
        bank = snapshot.bank
        query = convert.query_from_request(request, bank.dim, self._server.max_question_chars)
        if isinstance(query, str):
            with self._metrics.stage("embed"):
                query = await _embed_question(snapshot, query)
        policy = convert.policy_from_request(request.policy, self._state.policy)
        support = request.include_support or request.debug
        call = RouteCall(query, convert.seed_from_request(request), policy, list(request.policy.allowed_models), support)
        decision = await self._route(snapshot.router, call)
        with self._metrics.stage("respond"):
            return route_response(decision, bank, snapshot.question_ids, debug=request.debug, support=support)

    @_streaming
    async def Answer(self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.AnswerResponse]:
        snapshot = await self._snapshot()
        bank = snapshot.bank
        question = convert.question_text(request.question, "question", self._server.max_question_chars)
        try:
            spec = get_strategy(request.strategy or self._answer.strategy)
            options = dict(request.strategy_options) if request.strategy else self._answer.strategy_options
            params = parse_params(spec.name, options)
        except StrategyError as exc:
            raise invalid(f"strategy: {exc}") from None
        task = convert.task_from_request(request)
        policy = convert.policy_from_request(request.policy, self._state.policy)
        usable = answer_models(bank.model_names, self._pool, list(request.policy.allowed_models))
        if snapshot.embedder is None:  # the aggregations are compared by embedding (Eq 7), so one is needed
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"Answer needs an embedder: {snapshot.no_embedder_reason}")
        if request.HasField("embedding"):
            query = convert.embedding_from_message(request.embedding, "embedding", bank.dim)
        elif spec.needs_query:
            with self._metrics.stage("embed"):
                query = await _embed_question(snapshot, question)
        else:
            query = None
        ctx = spec.context(
            snapshot.router, question, usable, task=task, seed=convert.seed_from_request(request), query=query,
            policy=policy, fallback_aggregator=self._answer.fallback_aggregator,
        )
        host = StepHost(self._pool, snapshot.embedder, self._route, self._answer.timeouts)
        try:
            async for event in host.events(spec.run(ctx, params)):
                yield convert.answer_event(event, bank, snapshot.question_ids)
        except EmbedderTimeout as exc:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, f"embedding the aggregations timed out: {exc}") from None
        except EmbedderError as exc:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"embedding the aggregations failed: {exc}") from None

    @_unary
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        if request.texts and request.embeddings:
            raise invalid("texts and embeddings: give the candidates one way, not both")
        for field in ("texts", "embeddings"):
            if len(getattr(request, field)) > convert.MAX_CANDIDATES:
                count = len(getattr(request, field))
                raise invalid(f"{field} has {count} candidates; the limit is {convert.MAX_CANDIDATES}")
        if request.texts:
            texts = [
                convert.question_text(t, f"texts[{i}]", self._server.max_message_bytes) for i, t in enumerate(request.texts)
            ]
            candidates = await _embed(await self._snapshot(), texts, "texts")
        elif request.embeddings:
            dim = len(request.embeddings[0].values)
            if dim == 0:
                raise invalid("embeddings[0] is empty")
            candidates = np.stack(
                [convert.embedding_from_message(e, f"embeddings[{i}]", dim) for i, e in enumerate(request.embeddings)]
            )
        else:
            raise invalid("texts or embeddings: at least one candidate is required")
        lam = convert.finite_lam(request, self._state.policy.lam)
        similarity = kernels.mean_pairwise_similarity(candidates)
        response = pb.ScoreResponse(similarity=similarity.tolist())
        if request.logprobs:
            if len(request.logprobs) != len(candidates):
                raise invalid(f"logprobs has {len(request.logprobs)} entries for {len(candidates)} candidates")
            try:
                perplexity = perplexities([lp.values for lp in request.logprobs])
            except ValueError as exc:
                raise invalid(f"logprobs: {exc}") from None
            total = finite_totals(similarity, perplexity, lam)
            response.perplexity.extend(perplexity.tolist())
        else:
            total = similarity
        response.total.extend(total.tolist())
        response.best = kernels.select_best(total)
        return response

    @_unary
    async def BankInfo(self, request: pb.BankInfoRequest, context: grpc.aio.ServicerContext) -> pb.BankInfoResponse:
        return pb.BankInfoResponse(bank=_bank_summary(await self._snapshot()))

    @_unary
    async def ServerInfo(self, request: pb.ServerInfoRequest, context: grpc.aio.ServicerContext) -> pb.ServerInfoResponse:
        snapshot = await self._snapshot()
        router, policy, server = snapshot.router, self._state.policy, self._server
        return pb.ServerInfoResponse(
            version=server_version(),
            policy=convert.policy_message(policy),
            scorer=SCORER.to_wire(router.scorer_of(policy)),
            aggregator=router.default_aggregator(policy),
            bank_version=snapshot.bank.version,
            strategy=self._answer.strategy,
            strategy_options={k: _option_text(v) for k, v in self._answer.strategy_options.items()},
            accepts_text=snapshot.embedder is not None,
            limits=pb.ServerLimits(
                max_concurrent_rpcs=server.max_concurrent_rpcs, admission_wait_s=server.admission_wait_s,
                max_message_bytes=server.max_message_bytes, max_question_chars=server.max_question_chars,
                max_subsets=convert.MAX_SUBSETS, max_candidates=convert.MAX_CANDIDATES,
            ),
        )

    @_unary
    async def Reload(self, request: pb.ReloadRequest, context: grpc.aio.ServicerContext) -> pb.ReloadResponse:
        return pb.ReloadResponse(bank=_bank_summary(await self._state.reload()))

    @_unary
    async def AppendQuestions(
        self, request: pb.AppendQuestionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppendQuestionsResponse:
        bank = (await self._snapshot()).bank
        if not request.questions:
            raise invalid("questions: at least one question is required")
        embeddings = np.stack(
            [
                convert.embedding_from_message(q.embedding, f"questions[{i}].embedding", bank.dim)
                for i, q in enumerate(request.questions)
            ]
        )
        questions = [
            Question(id=q.id, text=q.text, source=q.source, label=q.label if q.HasField("label") else None)
            for q in request.questions
        ]
        known = [
            {model: _outcome(value, f"questions[{j}].outcomes[{model!r}]") for model, value in q.outcomes.items()}
            for j, q in enumerate(request.questions)
        ]

        def append(latest: Bank) -> Bank:
            outcomes = latest.outcome_columns(known, lambda j: f"questions[{j}].outcomes")
            return latest.append_questions(embeddings, questions, outcomes)

        return _write_response(pb.AppendQuestionsResponse, await self._state.write(append))

    @_unary
    async def RecordOutcomes(
        self, request: pb.RecordOutcomesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordOutcomesResponse:
        triples = [(o.model, o.question_id, o.value) for o in request.outcomes]
        return _write_response(pb.RecordOutcomesResponse, await self._state.write(lambda latest: latest.record_outcomes(triples)))

    @_unary
    async def AddModel(self, request: pb.AddModelRequest, context: grpc.aio.ServicerContext) -> pb.AddModelResponse:
        model = ModelInfo(
            name=request.name,
            backend=dict(request.backend),
            cost_per_input_token=request.cost_per_input_token,
            cost_per_output_token=request.cost_per_output_token,
        )
        known = {qid: _outcome(value, f"outcomes[{qid!r}]") for qid, value in request.outcomes.items()}
        write = await self._state.write(lambda latest: latest.add_model(model, latest.outcome_row(known, "outcomes")))
        return _write_response(pb.AddModelResponse, write)


async def _embed_question(snapshot: Snapshot, question: str) -> np.ndarray:
    """The request's ``question`` embedded under the bank's query-text rule, as its rows were."""
    return (await _embed(snapshot, query_texts([question], snapshot.bank.manifest.embedder.query_text), "question"))[0]


async def _embed(snapshot: Snapshot, texts: list[str], field: str) -> np.ndarray:
    """Embed ``texts`` with the snapshot's embedder; FAILED_PRECONDITION without one, DEADLINE_EXCEEDED
    or UNAVAILABLE when a remote embedder times out or fails."""
    if snapshot.embedder is None:
        raise RequestError(
            grpc.StatusCode.FAILED_PRECONDITION, f"{field}: {snapshot.no_embedder_reason}; send embeddings instead"
        )
    try:
        return await snapshot.embedder.embed(texts)
    except EmbedderTimeout as exc:
        raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{field}: embedding timed out: {exc}") from None
    except EmbedderError as exc:
        raise RequestError(grpc.StatusCode.UNAVAILABLE, f"{field}: embedding failed: {exc}") from None


def _outcome(value: int, field: str) -> int:
    if value not in (0, 1):
        raise invalid(f"{field} is {value}; an outcome is 1 (correct) or 0 (wrong)")
    return value


def _bank_summary(snapshot: Snapshot) -> pb.BankSummary:
    bank = snapshot.bank
    return pb.BankSummary(
        version=bank.version,
        n_questions=bank.n_questions,
        n_models=bank.n_models,
        dim=bank.dim,
        embedder=bank.manifest.embedder.id,
        created=bank.manifest.created,
        models=[
            pb.ModelSummary(name=name, accuracy=float(acc), evaluated=int(count))
            for name, acc, count in zip(bank.model_names, snapshot.router.accuracy, snapshot.router.evaluated)
        ],
        query_text=bank.manifest.embedder.query_text,
        scorer=SCORER.to_wire(bank.manifest.scorer),
        scorer_stale=bank.scorer_stale,
        mean_pairwise_cosine=snapshot.distinctness.mean_pairwise_cosine,
        degenerate=snapshot.distinctness.degenerate,
    )


WriteResponse = TypeVar("WriteResponse", pb.AppendQuestionsResponse, pb.RecordOutcomesResponse, pb.AddModelResponse)


def _write_response(kind: type[WriteResponse], snapshot: Snapshot) -> WriteResponse:
    """The response of a bank write: the version it committed and the bank's sizes then."""
    bank = snapshot.bank
    return kind(version=bank.version, n_questions=bank.n_questions, n_models=bank.n_models)


def server_version() -> str:
    """The version of the installed smcs distribution ("unknown" when it is not installed, e.g. run from
    a source tree without ``pip install``)."""
    try:
        return importlib.metadata.version("smcs")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _option_text(value: object) -> str:
    """A strategy option as the text a request would send (``true``/``false`` for booleans, as in TOML)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
