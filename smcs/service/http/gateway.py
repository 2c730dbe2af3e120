"""The OpenAI-compatible HTTP gateway: ``/v1/chat/completions`` and ``/v1/models`` over the service's state.

It runs in the same process and event loop as the gRPC server, over the same live bank snapshot
(``ServiceState``), the same model backends (``ModelPool``), the same bearer tokens, the same metrics
registry and the same step host as ``Answer``; aiohttp serves HTTP and the server-sent events.

Models (``GET /v1/models`` lists them):

- ``smcs``: the full SMCS pipeline (the ``smcs`` strategy: route, K referencers, n aggregations, Eq 7);
- ``smcs-route``: route the question (K = 1: the top referencer under the request's policy, among the
  models with a backend) and relay the conversation to that model;
- ``smcs/<strategy>``: each strategy of ``smcs.strategies.STRATEGIES`` (``smcs/smcs`` is ``smcs``);
- every bank model that has a backend, by its name: passed straight through to its backend.

What the models are sent: pass-through and ``smcs-route`` send the whole conversation (system, user and
assistant turns) to the one model. ``smcs`` and ``smcs/<strategy>`` run step machines that take a
question, not a conversation: they see the last user message alone, as ``Answer`` and ``smcs ask`` see
their question, built into each strategy's prompts (the earlier turns and the system message are not
sent). The request's ``temperature``, ``max_tokens``, ``top_p``, ``stop`` and ``presence_penalty`` go
with every model call the answer makes (``ModelCall.generation``: they replace the model's configured
settings, field by field); the request's ``seed`` is the route's and strategy's seed (each call's seed
derives from it), and pass-through sends it as the call's seed (one is drawn when the request has none).

Responses are OpenAI's chat completions; ``usage`` sums the tokens of every model call the answer made
(failed calls count none). The route decision and the evidence of every step are under the extra key
``smcs``. Headers: ``x-smcs-model`` (the model whose text is returned: the selected aggregation's
aggregator, the chosen call's model, the routed or named model), ``x-smcs-seed`` and
``x-smcs-bank-version``.

Streams (``stream: true``): pass-through and ``smcs-route`` relay the model's own stream, piece by piece
as its server sends them; the response starts (status 200 and headers) with the model's first piece, so
a model that fails before writing anything gets its error status. ``smcs`` and ``smcs/<strategy>``
start the response at their first event (the route decision, or the plan), send each stage as an SSE
comment (``: reference m-a: ok …``) and then the selected answer's text in one chunk once it is chosen;
their ``x-smcs-model`` is known only then, so it is in the final chunk's ``smcs.model`` rather than in a
header. Every stream ends with a chunk carrying ``finish_reason`` and ``smcs``, then (with
``stream_options.include_usage``) a chunk with ``usage`` and no choices, then ``data: [DONE]``. An error
after the response started is sent as an event ``data: {"error": {...}}`` (the ``openai`` SDK raises it
as an ``APIError``) and the stream ends.

Admission, deadlines and cancellation: chat completions take their slots from the gRPC service's
admission control (``smcs.service.admission``: ``[server] max_concurrent_rpcs`` slots for gRPC calls and
chat completions together, a wait of up to ``admission_wait_s`` for one, then 429 with ``Retry-After``
and ``retry-after-ms``, which the ``openai`` SDK honours); each has a deadline (``[http] timeout_s``, or less with the
header ``x-smcs-timeout-s``), past which it ends with 504 and its model calls are cancelled. A client
that disconnects cancels its request's handler, and with it every model call in flight (the HTTP
backends close their connections). Errors are OpenAI's ``{"error": {...}}`` (``errors``).

Metrics, in the server's registry: ``smcs_http_requests_total{path, status}``,
``smcs_http_request_seconds{path}``, ``smcs_http_in_flight``; the embed and route stages are recorded in
``smcs_route_stage_seconds`` as Route's are.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from ...backends.pool import ModelPool
from ...bank import BankFormatError
from ...config import Config
from ...core import RouteCall, RouteDecision, Router
from ...core.decision import enc_hook
from ...core.messages import Completion
from ...core.pipeline import AggregationEvidence, AnswerResult, CallFailed, ModelCall, QuorumNotMet, ReferenceEvidence, Routed
from ...core.prompts import check_task
from ...core.question import check_question
from ...core.query_text import query_texts
from ...embed import EmbedderError, EmbedderTimeout
from ...errors import InputError
from ...runtime.host import NoModelsConfigured, StepHost, answer_models
from ...strategies import STRATEGIES, StrategyCall, StrategyError, StrategyPlan, StrategyResult, get_strategy, parse_params
from ..admission import Admission
from ..auth import TokenCheck, bearer_token
from ..batching import RouteBatcher, service_batcher
from ..metrics import LATENCY_BUCKETS, Metrics
from ..state import ServiceState, Snapshot
from .errors import ApiError, bad_request
from .request import KEY_OF, ChatRequest, decode_body, parse_chat

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "x-smcs-timeout-s"
"""A request header asking for a deadline shorter than ``[http] timeout_s`` (seconds)."""
RETRY_AFTER_S = 1
"""The ``Retry-After`` of a 429 for a model's own rate limit."""
PATHS = ("/v1/models", "/v1/models/{model}", "/v1/chat/completions")
FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})
"""The finish reasons OpenAI's schema knows; any other a model reports is sent as ``stop``."""


# ------------------------------------------------------------------ what an answer produces


@dataclass(frozen=True)
class _Start:
    """The answer's seed and bank version are known (and its model, when it is one model's)."""

    seed: int
    bank_version: str
    model: str | None = None


@dataclass(frozen=True)
class _Comment:
    """A stage of a step machine, for an SSE comment."""

    text: str


@dataclass(frozen=True)
class _Piece:
    """A piece of the answer's text as the model wrote it."""

    text: str


@dataclass(frozen=True)
class _Done:
    """The whole answer."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


_Item = _Start | _Comment | _Piece | _Done


class _HttpMetrics:
    """The gateway's own metrics, registered in the server's registry."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.requests = Counter(
            "smcs_http_requests", "HTTP gateway requests ended, by path and status.", ("path", "status"), registry=registry
        )
        self.latency = Histogram(
            "smcs_http_request_seconds", "Whole-request latency of the HTTP gateway, streams included, in seconds.",
            ("path",), buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.in_flight = Gauge("smcs_http_in_flight", "HTTP gateway requests being handled now.", registry=registry)


# ---------------------------------------------------------------------------------- the gateway


class Gateway:
    """The HTTP gateway over a service's state (module docstring); ``start`` binds it, ``stop`` ends it.

    ``port`` is the port bound (``[http] port``, or the free one picked for 0), None before ``start``.
    ``admission`` and ``batcher`` are the gRPC service's (its slots and its route batches are shared);
    None makes them as the service would (``[server]`` settings).
    """

    def __init__(
        self, config: Config, state: ServiceState, pool: ModelPool, metrics: Metrics, admission: Admission | None = None,
        batcher: RouteBatcher | None = None,
    ) -> None:
        self._config = config
        self._state = state
        self._pool = pool
        self._metrics = metrics
        self._tokens = TokenCheck(config.auth) if config.auth.enabled else None
        server = config.server
        self.admission = admission if admission is not None else Admission(server.max_concurrent_rpcs, server.admission_wait_s)
        self._own_batcher = batcher is None  # closed with the gateway; the service's is the service's to close
        self._batcher = batcher if batcher is not None else service_batcher(server, self.admission)
        self._stats = _HttpMetrics(metrics)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ---------------------------------------------------------------------------------- lifecycle

    def application(self) -> web.Application:
        """The aiohttp application: the routes, with errors, auth and metrics in a middleware."""
        app = web.Application(client_max_size=self._config.server.max_message_bytes, middlewares=[self._middleware])
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_post("/v1/chat/completions", self._completions)
        return app

    async def start(self, grace_s: float = 5.0) -> int:
        """Listen on ``[http] host`` and ``port``; the port bound. ``grace_s``: how long ``stop`` lets
        requests in flight finish."""
        runner = web.AppRunner(self.application(), handler_cancellation=True, access_log=None, shutdown_timeout=grace_s)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._config.http.host, self._config.http.port or 0, reuse_port=False)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self._config.http.host}:{self._config.http.port}"
            raise OSError(f"the HTTP gateway cannot listen on {where} (address in use, or not an address of this machine): {exc}") from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (up to the grace), then close (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._own_batcher:
            self._batcher.close()

    # --------------------------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Errors in OpenAI's shape (a bug: 500, logged), and every request counted and timed."""
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None and resource.canonical in PATHS else "other"
        started = time.perf_counter()
        status = "499"  # the client went away first
        self._stats.in_flight.inc()
        try:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            except web.HTTPException as exc:  # aiohttp's own: no such path (404), method (405), body too large (413)
                response = _http_error(exc).response()
            except Exception:
                log.exception("%s %s failed", request.method, request.path)
                response = ApiError(500, f"{request.method} {request.path} failed on the server; see its log", code="internal_error").response()
            status = str(response.status)
            return response
        finally:
            self._stats.in_flight.dec()
            self._stats.requests.labels(path, status).inc()
            self._stats.latency.labels(path).observe(time.perf_counter() - started)

    def _authorize(self, request: web.Request) -> None:
        """401 unless the request carries a live token (query or admin) when tokens are configured."""
        if self._tokens is None:
            return
        verdict = self._tokens.verdict(
            bearer_token(request.headers.get("Authorization")), "missing bearer token (Authorization: Bearer <token>)"
        )
        if verdict.refusal is not None:
            raise ApiError(401, verdict.refusal, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _snapshot(self) -> Snapshot:
        """The live snapshot (first switched to a newer version when ``check_current``); 503 while loading."""
        live = await self._state.latest() if self._config.server.check_current else self._state.live
        if live is None:
            raise ApiError(503, "the bank is still loading; retry shortly", code="bank_loading", headers={"Retry-After": "1"})
        return live

    # ------------------------------------------------------------------------------------- models

    async def _models(self, request: web.Request) -> web.Response:
        self._authorize(request)
        snapshot = await self._snapshot()
        return _json({"object": "list", "data": [_model_entry(name) for name in self._model_names(snapshot)]})

    async def _model(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = request.match_info["model"]
        if name not in self._model_names(await self._snapshot()):
            raise _unknown_model(name)
        return _json(_model_entry(name))

    def _model_names(self, snapshot: Snapshot) -> list[str]:
        """``smcs``, ``smcs-route``, ``smcs/<strategy>`` and the bank's models with a backend."""
        return ["smcs", "smcs-route", *(f"smcs/{name}" for name in STRATEGIES), *(m for m in snapshot.bank.model_names if m in self._pool)]

    # ---------------------------------------------------------------------------- completions

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        timeout_s = self._deadline(request)
        admission = self.admission
        wait_s = admission.wait_for(timeout_s)
        if not await admission.acquire(wait_s):
            pushback_ms = admission.pushback_ms()
            raise ApiError(
                429,
                f"server busy: all {admission.limit} slots ([server] max_concurrent_rpcs, shared with gRPC) stayed taken "
                f"for {wait_s:.3g} s ([server] admission_wait_s = {admission.wait_s:g}); retry in {pushback_ms} ms",
                code="too_many_requests",
                headers={"Retry-After": str(max(1, math.ceil(pushback_ms / 1000))), "retry-after-ms": str(pushback_ms)},
            )
        try:
            return await self._complete(request, timeout_s)
        finally:
            admission.release()

    async def _complete(self, request: web.Request, timeout_s: float) -> web.StreamResponse:
        chat = parse_chat(decode_body(await request.read()), self._state.policy)
        snapshot = await self._snapshot()
        items = self._answer(chat, snapshot)
        exchange = _Stream(request, chat) if chat.stream else None
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline, aclosing(items):
                if exchange is None:
                    return await _whole(chat, items)
                return await exchange.relay(items)
        except Exception as exc:  # noqa: BLE001 - turned into its status here, or re-raised (a bug) for the middleware
            if isinstance(exc, TimeoutError) and deadline.expired():
                error: ApiError | None = ApiError(
                    504, f"the request did not finish within its deadline of {timeout_s:g} s", code="deadline_exceeded"
                )
            else:
                error = _api_error(exc)
            if error is None:
                if exchange is None or exchange.response is None:
                    raise
                log.exception("a chat completion stream failed")
                error = ApiError(500, "the stream failed on the server; see its log", code="internal_error")
        if exchange is None or exchange.response is None:
            raise error
        return await exchange.fail(error)

    def _deadline(self, request: web.Request) -> float:
        """The request's deadline in seconds: ``[http] timeout_s``, or less when ``x-smcs-timeout-s`` asks."""
        limit = self._config.http.timeout_s
        asked = request.headers.get(TIMEOUT_HEADER)
        if asked is None:
            return limit
        try:
            seconds = float(asked)
        except ValueError:
            seconds = math.nan
        if not seconds > 0 or not math.isfinite(seconds):
            raise bad_request(f"the {TIMEOUT_HEADER} header must be a positive number of seconds, got {asked[:40]!r}", TIMEOUT_HEADER)
        return min(seconds, limit)

    def _answer(self, chat: ChatRequest, snapshot: Snapshot) -> AsyncIterator[_Item]:
        """What answers ``chat``'s model: the items of a strategy, a routed relay or a pass-through; 404
        for a model that is none of them."""
        name = chat.model
        if name == "smcs":
            return self._strategy(chat, snapshot, "smcs")
        if name == "smcs-route":
            return self._relay(chat, snapshot, routed=True)
        if name.startswith("smcs/") and name[len("smcs/"):] in STRATEGIES:
            return self._strategy(chat, snapshot, name[len("smcs/"):])
        if name in snapshot.bank.model_names and name in self._pool:
            return self._relay(chat, snapshot, routed=False)
        raise _unknown_model(name)

    async def _route(self, router: Router, call: RouteCall) -> RouteDecision:
        """``call`` routed through the service's batcher (the concurrent routes share a pass over the bank)."""
        with self._metrics.stage("route"):
            return await self._batcher.route(router, call)

    def _question(self, chat: ChatRequest) -> str:
        """The routed question (the last user message) if ``check_question`` accepts it, as the gRPC
        service would; else 400 naming the message."""
        where = f"messages[{chat.question_index}].content"
        try:
            return check_question(chat.question, where, self._config.server.max_question_chars)
        except InputError as exc:
            raise bad_request(f"{exc} (the last user message is the question)", where) from None

    async def _embed(self, snapshot: Snapshot, question: str) -> np.ndarray:
        """``question`` embedded under the bank's query-text rule; 503 without an embedder."""
        if snapshot.embedder is None:
            raise ApiError(503, f"routing a question needs an embedder: {snapshot.no_embedder_reason}", code="no_embedder")
        with self._metrics.stage("embed"):
            vectors = await snapshot.embedder.embed(query_texts([question], snapshot.bank.manifest.embedder.query_text))
        return np.asarray(vectors)[0]

    def _usable(self, chat: ChatRequest, snapshot: Snapshot) -> list[str]:
        return answer_models(snapshot.bank.model_names, self._pool, chat.allowed_models)

    async def _relay(self, chat: ChatRequest, snapshot: Snapshot, *, routed: bool) -> AsyncIterator[_Item]:
        """``smcs-route`` (route to the top referencer) or a pass-through: one model, the whole conversation."""
        bank = snapshot.bank
        decision = None
        if routed:
            usable = self._usable(chat, snapshot)
            query = await self._embed(snapshot, self._question(chat))
            policy = msgspec.structs.replace(chat.policy, k=1, k_drop=0, n=1, min_references=None)
            decision = await self._route(snapshot.router, RouteCall(query, chat.seed, policy, usable))
            rows = np.asarray(decision.support_rows, dtype=np.int64)
            decision = msgspec.structs.replace(decision, support_ids=snapshot.question_ids[rows].tolist())
            model, seed = decision.referencers[0], decision.seed
        else:
            model, seed = chat.model, chat.seed if chat.seed is not None else secrets.randbits(63)
        call = ModelCall(model=model, messages=chat.messages, seed=seed, generation=chat.generation)
        yield _Start(seed, bank.version, model)
        evidence: dict[str, Any] = {"model": model, "seed": seed, "bank_version": bank.version, "decision": decision}
        if not chat.stream:
            result = await self._pool.call(call)
            if isinstance(result, CallFailed):
                raise _upstream(result, model)
            yield _done(result, model, evidence)
            return
        async with aclosing(self._pool.stream(call)) as pieces:
            async for piece in pieces:
                if isinstance(piece, str):
                    yield _Piece(piece)
                elif isinstance(piece, CallFailed):
                    raise _upstream(piece, model)
                else:
                    yield _done(piece, model, evidence)

    async def _strategy(self, chat: ChatRequest, snapshot: Snapshot, name: str) -> AsyncIterator[_Item]:
        """``smcs`` or ``smcs/<strategy>``: the strategy's step machine on the question (the last user message)."""
        spec = get_strategy(name)
        try:
            params = parse_params(spec.name, chat.strategy_options)
        except StrategyError as exc:
            raise bad_request(f"strategy_options: {exc}", "strategy_options") from None
        try:
            task = check_task(chat.task)
        except ValueError as exc:
            raise bad_request(str(exc), "task") from None
        usable = self._usable(chat, snapshot)
        if snapshot.embedder is None:  # every strategy's answers are compared or routed by embedding
            raise ApiError(503, f"answering needs an embedder: {snapshot.no_embedder_reason}", code="no_embedder")
        question = self._question(chat)
        query = await self._embed(snapshot, question) if spec.needs_query else None
        ctx = spec.context(
            snapshot.router, question, usable, task=task, seed=chat.seed, query=query, policy=chat.policy,
            fallback_aggregator=self._config.answer.fallback_aggregator,
        )
        host = StepHost(self._pool, snapshot.embedder, self._route, self._config.answer.timeouts, generation=chat.generation)
        yield _Start(ctx.seed, snapshot.bank.version)
        async with aclosing(host.events(spec.run(ctx, params))) as events:
            async for event in events:
                if isinstance(event, (AnswerResult, StrategyResult)):
                    yield _result(event, name, ctx.seed, snapshot.bank.version)
                else:
                    yield _Comment(_describe(event))


# ------------------------------------------------------------------------------ the responses


async def _whole(chat: ChatRequest, items: AsyncIterator[_Item]) -> web.Response:
    """The whole answer as one chat completion."""
    start: _Start | None = None
    async for item in items:
        if isinstance(item, _Start):
            start = item
        elif isinstance(item, _Done):
            assert start is not None
            body = {
                **_head(chat, start, "chat.completion"),
                "choices": [{
                    "index": 0, "message": {"role": "assistant", "content": item.text}, "logprobs": None,
                    "finish_reason": item.finish_reason,
                }],
                "usage": _usage(item),
                "smcs": item.evidence,
            }
            return _json(body, headers=_headers(start, item.model))
    raise RuntimeError("the answer ended without a result")


class _Stream:
    """One chat completion sent as server-sent events (module docstring)."""

    def __init__(self, request: web.Request, chat: ChatRequest) -> None:
        self._request = request
        self._chat = chat
        self._start: _Start | None = None
        self._head: dict[str, object] = {}
        self._pieces = 0
        self.response: web.StreamResponse | None = None

    async def relay(self, items: AsyncIterator[_Item]) -> web.StreamResponse:
        """Send the items as they come; the response, ended."""
        try:
            async for item in items:
                if isinstance(item, _Start):
                    self._start = item
                    self._head = _head(self._chat, item, "chat.completion.chunk")
                elif isinstance(item, _Comment):
                    await self._send(b": " + _one_line(item.text).encode() + b"\n\n")
                elif isinstance(item, _Piece):
                    await self._piece(item.text)
                else:
                    await self._finish(item)
                    break
        except ConnectionError:  # the client went away mid-stream: nothing to tell it
            log.info("a streaming client disconnected; its model calls are cancelled")
        assert self.response is not None
        return self.response

    async def fail(self, error: ApiError) -> web.StreamResponse:
        """End a started stream with ``error`` as an event."""
        assert self.response is not None
        try:
            await self.response.write(b"data: " + msgspec.json.encode(error.payload()) + b"\n\n")
            await self.response.write_eof()
        except ConnectionError:
            pass
        return self.response

    async def _begin(self) -> None:
        if self.response is not None:
            return
        assert self._start is not None
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                **_headers(self._start, self._start.model),
            },
        )
        await response.prepare(self._request)
        self.response = response

    async def _send(self, data: bytes) -> None:
        await self._begin()
        assert self.response is not None
        await self.response.write(data)

    async def _chunk(self, delta: dict[str, object], finish_reason: str | None = None, **extra: object) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        await self._send(b"data: " + msgspec.json.encode({**self._head, "choices": [choice], **extra}) + b"\n\n")

    async def _piece(self, text: str) -> None:
        delta: dict[str, object] = {"content": text}
        if self._pieces == 0:
            delta = {"role": "assistant", **delta}
        self._pieces += 1
        await self._chunk(delta)

    async def _finish(self, done: _Done) -> None:
        if self._pieces == 0:
            await self._piece(done.text)
        await self._chunk({}, done.finish_reason, smcs=done.evidence)
        if self._chat.include_usage:
            await self._send(b"data: " + msgspec.json.encode({**self._head, "choices": [], "usage": _usage(done)}) + b"\n\n")
        await self._send(b"data: [DONE]\n\n")
        assert self.response is not None
        await self.response.write_eof()


def _head(chat: ChatRequest, start: _Start, kind: str) -> dict[str, object]:
    """The fields every completion (or chunk) of one answer starts with."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": chat.model,
        "system_fingerprint": f"smcs-{start.bank_version}",
    }


def _headers(start: _Start, model: str | None) -> dict[str, str]:
    headers = {"x-smcs-seed": str(start.seed), "x-smcs-bank-version": start.bank_version}
    if model is not None:
        headers["x-smcs-model"] = model
    return headers


def _usage(done: _Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _json(value: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(value), content_type="application/json", headers=headers)


def _model_entry(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "smcs"}


def _one_line(text: str) -> str:
    """``text`` fit for an SSE comment: no line breaks."""
    return " ".join(text.split())


def _done(completion: Completion, model: str, evidence: dict[str, Any]) -> _Done:
    """The answer of a relay: the model's completion."""
    reason = completion.finish_reason if completion.finish_reason in FINISH_REASONS else "stop"
    evidence = {**evidence, "latency_s": completion.latency_s}
    decision = evidence.pop("decision", None)
    if decision is not None:  # built here, once the model has answered: not on the way to its first token
        evidence["decision"] = msgspec.to_builtins(decision, enc_hook=enc_hook)
    return _Done(completion.text, model, completion.prompt_tokens, completion.completion_tokens, reason, evidence)


def _result(result: AnswerResult | StrategyResult, strategy: str, seed: int, bank_version: str) -> _Done:
    """The answer of a strategy: its text, the model that wrote it, the tokens of every call."""
    if isinstance(result, AnswerResult):
        calls: list[ReferenceEvidence | AggregationEvidence | StrategyCall] = [*result.references, *result.aggregations]
        if result.selected is not None:
            model = result.aggregations[result.selected].aggregator
        elif result.reference is not None:  # best_reference, consensus
            model = result.references[result.reference].model
        else:
            model = next((r.model for r in result.references if r.ok), "")
    else:
        calls = list(result.calls)
        chosen = result.calls[result.chosen] if result.chosen is not None else next((c for c in result.calls if c.ok), None)
        model = chosen.model if chosen is not None else ""
    evidence = {"strategy": strategy, "model": model, "seed": seed, "bank_version": bank_version, "result": msgspec.to_builtins(result, enc_hook=enc_hook)}
    prompt = sum(c.prompt_tokens for c in calls)
    completion = sum(c.completion_tokens for c in calls)
    return _Done(result.text, model, prompt, completion, "stop", evidence)


def _describe(event: object) -> str:
    """One line on a step machine's event, for an SSE comment."""
    if isinstance(event, Routed):
        d = event.decision
        return f"routed: referencers {', '.join(d.referencers)}; aggregator {d.aggregator}; {len(d.subsets)} subsets; seed {d.seed}"
    if isinstance(event, ReferenceEvidence):
        return f"reference {event.model}: {_outcome(event)}"
    if isinstance(event, AggregationEvidence):
        scored = f", total {event.total:.4f}" if event.ok and math.isfinite(event.total) else ""
        return f"aggregation {event.index} by {event.aggregator}: {_outcome(event)}{scored}"
    if isinstance(event, StrategyPlan):
        aggregator = f"; aggregator {event.aggregator}" if event.aggregator else ""
        return f"plan: strategy {event.strategy}; models {', '.join(event.models)}{aggregator}"
    if isinstance(event, StrategyCall):
        return f"call {event.position} {event.model} ({event.role}, layer {event.layer}): {_outcome(event)}"
    return type(event).__name__


def _outcome(call: ReferenceEvidence | AggregationEvidence | StrategyCall) -> str:
    if call.ok:
        return f"ok ({call.completion_tokens} tokens, {call.latency_s:.2f} s)"
    return f"failed ({call.error_kind})"


# ---------------------------------------------------------------------------------- the errors


def _unknown_model(name: str) -> ApiError:
    shown = name if len(name) <= 80 else name[:80] + "…"
    return ApiError(
        404, f"the model {shown!r} does not exist or has no backend; GET /v1/models lists the models",
        param="model", code="model_not_found",
    )


_UPSTREAM_STATUS = {"timeout": 504, "rate_limited": 429, "context_overflow": 400}
"""The status of a failed model call by its error kind (the rest: 502)."""


def _upstream(failed: CallFailed, model: str) -> ApiError:
    """The error for the one model of a relay failing (``failed.kind``: the backend error's kind)."""
    status = _UPSTREAM_STATUS.get(failed.kind, 502)
    if failed.kind == "context_overflow":
        return ApiError(400, failed.message, param="messages", code="context_length_exceeded")
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
    return ApiError(status, f"model {model!r} failed: {failed.message}", code=failed.kind, headers=headers)


def _api_error(exc: Exception) -> ApiError | None:
    """The ``ApiError`` an error raised while answering is; None for a bug (answered 500, logged)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QuorumNotMet):  # StrategyFailed too: nothing the answer depends on answered
        return ApiError(503, str(exc), code="quorum_not_met")
    if isinstance(exc, NoModelsConfigured):
        return ApiError(503, str(exc), code="no_models_configured")
    if isinstance(exc, BankFormatError):
        return ApiError(503, str(exc), code="bank_unreadable")
    if isinstance(exc, EmbedderTimeout):
        return ApiError(504, f"embedding timed out: {exc}", code="embedder_timeout")
    if isinstance(exc, EmbedderError):
        return ApiError(503, f"embedding failed: {exc}", code="embedder_failed")
    if isinstance(exc, InputError):  # the router's or a strategy's refusal of the request's policy or models
        message = str(exc)
        word = message.split(" ", 1)[0].removeprefix("policy.")
        param = next((key for name, key in KEY_OF.items() if word == name), None)
        if param is None and word in ("allowed_models", "seed", "task"):
            param = word
        if param is None and message.startswith("policy "):
            param = message.split(" ", 2)[1].split("=")[0]
            param = KEY_OF.get(param, param) if param in KEY_OF else None
        return bad_request(message, param)
    return None


def _http_error(exc: web.HTTPException) -> ApiError:
    """aiohttp's own refusals (unknown path, wrong method, body too large) in OpenAI's shape."""
    if exc.status == 404:
        return ApiError(404, "no such path: the gateway serves /v1/chat/completions and /v1/models", code="not_found")
    if exc.status == 405:
        return ApiError(405, f"method not allowed: {exc.text or exc.reason}", code="method_not_allowed")
    if exc.status == 413:
        return ApiError(413, f"the body is too large: {exc.text or exc.reason}", code="body_too_large")
    return ApiError(exc.status, exc.text or exc.reason, code="http_error")


async def start_gateway(
    config: Config, state: ServiceState, pool: ModelPool, metrics: Metrics, admission: Admission | None = None,
    batcher: RouteBatcher | None = None, grace_s: float = 5.0,
) -> Gateway:
    """A started gateway over the service's state, as ``config.http`` says."""
    gateway = Gateway(config, state, pool, metrics, admission, batcher)
    await gateway.start(grace_s)
    log.info("smcs http on http://%s:%d/v1", config.http.host, gateway.port)
    return gateway
