"""Python clients of the smcs service: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both take plain Python values and return msgspec Structs (``RouteDecision`` is the same type the
in-process ``Router`` returns), never protobuf messages. Calls carry a deadline (``timeout``), the bearer
token when one is given, and are retried on UNAVAILABLE with exponential backoff by gRPC's own retry
policy, so a restarting or failing-over server is invisible up to ``retries`` attempts; a call the server
refused as busy (RESOURCE_EXHAUSTED with a ``grpc-retry-pushback-ms`` trailer) is retried after the
pushback it asked for, within the call's deadline. Several replicas
(``Client(["10.0.0.1:50051", "10.0.0.2:50051"])`` or ``Client("dns:///smcs:50051")``) share one channel
whose calls go round-robin to the replicas that are up.

    with Client("127.0.0.1:50051") as client:
        decision = client.route(embedding=vector, k=5, seed=7)
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import msgspec
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._proto import router_pb2 as pb
from ._proto import router_pb2_grpc as pb_grpc
from .core import Policy
from .core.pipeline import Event
from .wire.convert import AnswerEventDecoder, policy_from_message
from .wire.decision import decision_from_response
from .wire.enums import RETRIEVAL, SCORER, TASK
from .wire.packed import embedding_message, fill_embedding
from .errors import InputError

DEFAULT_TARGET = "127.0.0.1:50051"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RouterService"].full_name
PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""gRPC's retry pushback (gRFC A6): the trailing metadata in which a server says, in milliseconds, when a
refused call may be tried again (a negative value or none: do not retry it)."""
Result = TypeVar("Result")


class ModelSummary(msgspec.Struct, frozen=True):
    """One model of the bank: its accuracy among the questions where its outcome is known."""

    name: str
    accuracy: float
    evaluated: int


class BankSummary(msgspec.Struct, frozen=True):
    """What ``BankInfo`` and ``Reload`` report about the bank the server routes over."""

    version: str
    n_questions: int
    n_models: int
    dim: int
    embedder: str
    created: str
    models: list[ModelSummary]
    query_text: str = "raw"
    """the rule questions are put through before embedding (``smcs.core.query_text``)"""
    scorer: str = ""
    """the fitted scorer's pick ("": the bank has no fit)"""
    scorer_stale: bool = False
    mean_pairwise_cosine: float = 0.0
    degenerate: bool = False


class ServerLimits(msgspec.Struct, frozen=True):
    """The limits a server enforces (``[server]`` settings and fixed caps)."""

    max_concurrent_rpcs: int
    admission_wait_s: float
    max_message_bytes: int
    max_question_chars: int
    max_subsets: int
    max_candidates: int


class ServerInfo(msgspec.Struct, frozen=True):
    """What ``ServerInfo`` reports: the server's version, the policy a call without overrides routes with,
    what that policy resolves to on the live bank, the default Answer strategy and the limits."""

    version: str
    policy: Policy
    scorer: str
    """the scorer ``policy.scorer`` resolves to on the live bank ("auto": the fit's pick, or "vote")"""
    aggregator: str
    """the aggregator of a call without override: ``policy.aggregator``, else the bank's most accurate model"""
    bank_version: str
    strategy: str
    strategy_options: dict[str, str]
    accepts_text: bool
    """whether route and score take question text (the server has an embedder that can query the bank)"""
    limits: ServerLimits


class BankWrite(msgspec.Struct, frozen=True):
    """The version a bank write committed; the server routes over it from then on."""

    version: str
    n_questions: int
    n_models: int


class Scores(msgspec.Struct, frozen=True):
    """Hybrid scores (Eq 7) of candidate answers; ``perplexity`` is empty when no logprobs were sent."""

    similarity: list[float]
    perplexity: list[float]
    total: list[float]
    best: int


class NewQuestion(msgspec.Struct, frozen=True, kw_only=True):
    """A question to append to the bank, with its embedding and any known outcomes (model → 1/0)."""

    id: str
    text: str
    embedding: Sequence[float]
    source: str = ""
    label: str | None = None
    outcomes: dict[str, int] = {}


GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")
"""Prefixes of a gRPC target URI, which is passed to gRPC unchanged (commas and all)."""


def channel_target(target: str | Sequence[str]) -> str:
    """The gRPC target a client connects to: one target as given (``host:port``, or a URI such as
    ``dns:///name:port``), or several ``IP:port`` replicas (a list, or one comma-separated string) as one
    ``ipv4:``/``ipv6:`` address list, which the round_robin policy balances over."""
    if isinstance(target, str) and target.strip().startswith(GRPC_SCHEMES):
        return target.strip()
    items = _target_items(target)
    return items[0] if len(items) == 1 else _address_list(items)


def _target_items(target: str | Sequence[str]) -> list[str]:
    """The ``host:port`` items of a list or comma-separated string; ``ValueError`` naming an empty one."""
    parts = target.split(",") if isinstance(target, str) else list(target)
    if not parts:
        raise InputError("target is empty; give 'host:port', several of them, or a gRPC target such as 'dns:///name:port'")
    items = []
    for i, part in enumerate(parts):
        if not isinstance(part, str) or not part.strip():
            raise InputError(f"target[{i}] is {part!r}; each replica is a 'host:port' string")
        items.append(part.strip())
    return items


def _address_list(items: list[str]) -> str:
    """``ipv4:a:p,b:q`` or ``ipv6:[a]:p,[b]:q`` for several ``IP:port`` items (one address family)."""
    versions = {_ip_version(item, i) for i, item in enumerate(items)}
    if len(versions) > 1:
        raise InputError(f"target mixes IPv4 and IPv6 addresses ({', '.join(items)}); list replicas of one family")
    return f"ipv{versions.pop()}:{','.join(items)}"


def _ip_version(item: str, index: int) -> int:
    """4 or 6 for an ``IP:port`` item (IPv6 in brackets); ``ValueError`` naming the item otherwise."""
    host, _, port = item.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        version = ipaddress.ip_address(host[1:-1] if bracketed else host).version
    except ValueError:
        version = 0
    if version == 0 or (version == 6) != bracketed or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            f"target[{index}] is {item!r}; several replicas are given as IP:port ('127.0.0.1:50051', "
            "'[::1]:50051'); for host names use one 'dns:///name:port' target that resolves to every replica"
        )
    return version


def _check_tls_target(address: str) -> None:
    """``ValueError`` for a TLS channel to an address list, whose calls would all fail the host name check."""
    if address.startswith(("ipv4:", "ipv6:")) and "," in address:
        raise InputError(
            f"target {address!r}: TLS checks the certificate against one host name, which a list of addresses "
            "lacks; give one 'dns:///name:port' target that resolves to every replica and that their certificates name"
        )


def _service_config(retries: int) -> dict[str, Any]:
    """The channel's service config: round_robin over every address of the target, and gRPC's retry
    policy on UNAVAILABLE (``retries`` extra attempts, exponential backoff) unless ``retries`` is 0."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE_NAME}, {"service": "grpc.health.v1.Health"}],
                "retryPolicy": {
                    "maxAttempts": max(2, retries + 1),
                    "initialBackoff": "0.05s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return config


def _channel_options(retries: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        ("grpc.service_config", json.dumps(_service_config(retries))),
    ]


def _credentials(
    root_certificates: bytes | None, private_key: bytes | None, certificate_chain: bytes | None
) -> grpc.ChannelCredentials | None:
    if root_certificates is None and private_key is None and certificate_chain is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)


def _overrides(policy: dict[str, Any]) -> pb.PolicyOverrides:
    """The PolicyOverrides of a call's ``policy`` keywords (retrieval and scorer by name, as in ``Policy``)."""
    allowed = policy.pop("allowed_models", ())
    for name, table in (("retrieval", RETRIEVAL), ("scorer", SCORER)):
        if policy.get(name) is None:
            policy.pop(name, None)
        else:
            policy[name] = table.parse(policy[name], name)
    return pb.PolicyOverrides(allowed_models=list(allowed), **policy)


def _route_request(
    question: str | None, embedding: Sequence[float] | np.ndarray | None, seed: int | None, debug: bool,
    include_support: bool, policy: dict[str, Any],
) -> pb.RouteRequest:
    if (question is None) == (embedding is None):
        raise InputError("give exactly one of question or embedding")
    request = pb.RouteRequest(policy=_overrides(policy), debug=debug, include_support=include_support)
    if question is not None:
        request.question = question
    else:
        fill_embedding(request.embedding, embedding)
    if seed is not None:
        request.seed = seed
    return request


def _answer_request(
    question: str, embedding: Sequence[float] | np.ndarray | None, seed: int | None, task: str | None, policy: dict[str, Any]
) -> pb.AnswerRequest:
    request = pb.AnswerRequest(
        question=question, task=TASK.parse(task, "task") if task else pb.TASK_UNSPECIFIED, policy=_overrides(policy)
    )
    if embedding is not None:
        fill_embedding(request.embedding, embedding)
    if seed is not None:
        request.seed = seed
    return request


def _score_request(
    embeddings: Iterable[Sequence[float]] | None,
    texts: Iterable[str] | None,
    logprobs: Iterable[Sequence[float]] | None,
    lam: float | None,
) -> pb.ScoreRequest:
    request = pb.ScoreRequest(
        texts=[] if texts is None else list(texts),
        embeddings=[] if embeddings is None else [embedding_message(e) for e in embeddings],
        logprobs=[] if logprobs is None else [pb.TokenLogprobs(values=list(lp)) for lp in logprobs],
    )
    if lam is not None:
        request.lam = lam
    return request


def _append_request(questions: Iterable[NewQuestion]) -> pb.AppendQuestionsRequest:
    return pb.AppendQuestionsRequest(
        questions=[
            pb.NewQuestion(
                id=q.id,
                text=q.text,
                source=q.source,
                label=q.label,
                embedding=embedding_message(q.embedding),
                outcomes=q.outcomes,
            )
            for q in questions
        ]
    )


def _bank_summary(response: pb.BankInfoResponse | pb.ReloadResponse) -> BankSummary:
    bank = response.bank
    return BankSummary(
        version=bank.version,
        n_questions=bank.n_questions,
        n_models=bank.n_models,
        dim=bank.dim,
        embedder=bank.embedder,
        created=bank.created,
        models=[ModelSummary(m.name, m.accuracy, m.evaluated) for m in bank.models],
        query_text=bank.query_text or "raw",
        scorer=SCORER.from_wire(bank.scorer) or "",
        scorer_stale=bank.scorer_stale,
        mean_pairwise_cosine=bank.mean_pairwise_cosine,
        degenerate=bank.degenerate,
    )


def _bank_write(response: pb.AppendQuestionsResponse | pb.RecordOutcomesResponse | pb.AddModelResponse) -> BankWrite:
    return BankWrite(response.version, response.n_questions, response.n_models)


def _server_info(response: pb.ServerInfoResponse) -> ServerInfo:
    limits = response.limits
    return ServerInfo(
        version=response.version,
        policy=policy_from_message(response.policy),
        scorer=SCORER.from_wire(response.scorer) or "",
        aggregator=response.aggregator,
        bank_version=response.bank_version,
        strategy=response.strategy,
        strategy_options=dict(response.strategy_options),
        accepts_text=response.accepts_text,
        limits=ServerLimits(
            limits.max_concurrent_rpcs, limits.admission_wait_s, limits.max_message_bytes, limits.max_question_chars,
            limits.max_subsets, limits.max_candidates,
        ),
    )


def _scores(response: pb.ScoreResponse) -> Scores:
    return Scores(list(response.similarity), list(response.perplexity), list(response.total), response.best)


def _message(response: Any) -> Any:
    return response


def _remaining(deadline: float) -> float:
    """The seconds left until ``deadline`` (monotonic): the timeout of the next attempt."""
    return max(deadline - time.monotonic(), 0.0)


def pushback_s(error: grpc.RpcError) -> float | None:
    """The retry pushback of a refused call in seconds: its ``grpc-retry-pushback-ms`` trailer, when the
    code is RESOURCE_EXHAUSTED and the value a whole number ≥ 0; None otherwise (no retry)."""
    code = getattr(error, "code", None)
    if not callable(code) or code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == PUSHBACK_KEY:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return int(text) / 1000 if text.isdigit() else None
    return None


def _health_status(response: health_pb2.HealthCheckResponse) -> str:
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


class _Calls:
    """The methods both clients share; ``_call`` makes them blocking or awaitable."""

    _insecure_channel: Callable[..., Any]
    _secure_channel: Callable[..., Any]

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        answer_timeout: float = 600.0,
        retries: int = 3,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
    ) -> None:
        """Connect to the server at ``target``: host:port, any gRPC target such as dns:///name:port, or
        several replicas as a list of IP:port (or one comma-separated string). The channel balances
        calls round-robin over every address the target names or resolves to, skipping replicas that
        are down.

        ``token``: bearer token sent with every call. ``timeout``: default deadline of a call in seconds;
        ``answer_timeout``: the same for ``answer``, whose calls wait for models.
        ``retries``: extra attempts on UNAVAILABLE (gRPC's retry policy, exponential backoff) and on
        RESOURCE_EXHAUSTED with a retry pushback (after the pushback, within the call's deadline); 0 = none.
        The three PEM byte strings turn on TLS:
        ``root_certificates`` to trust the server, ``private_key`` and ``certificate_chain`` for mutual TLS
        (with TLS, several replicas are one dns:/// target: the certificates are checked against its name).
        """
        credentials = _credentials(root_certificates, private_key, certificate_chain)
        options = _channel_options(retries)
        address = channel_target(target)
        if credentials is not None:
            _check_tls_target(address)
        self._channel = (
            self._insecure_channel(address, options=options)
            if credentials is None
            else self._secure_channel(address, credentials, options=options)
        )
        self._stub = pb_grpc.RouterServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._timeout = timeout
        self._answer_timeout = answer_timeout
        self._retries = retries

    def _retry_after(self, error: grpc.RpcError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before trying a refused call again: the server's retry pushback, when it sent
        one, ``attempt`` is below ``retries`` and the retry can start before ``deadline`` (monotonic);
        None: do not retry."""
        if attempt >= self._retries:
            return None
        wait = pushback_s(error)
        if wait is None or time.monotonic() + wait >= deadline:
            return None
        return wait

    def _call(self, method: Callable[..., Any], request: Any, parse: Callable[[Any], Result], timeout: float | None) -> Any:
        raise NotImplementedError

    def route(
        self,
        question: str | None = None,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        seed: int | None = None,
        debug: bool = False,
        include_support: bool = False,
        timeout: float | None = None,
        **policy: Any,
    ) -> Any:
        """Route a question (text, needs a server embedder) or an embedding; returns a ``RouteDecision``.

        ``policy`` overrides the server's defaults for this call: k, n_base, gamma, k_drop, n, lam,
        aggregator, allowed_models, retrieval ("exact", "ivf", "auto"), nprobe, scorer ("auto", "vote",
        "source", "knn", "head"), cover, distinct_subsets, consensus, and the cost fields
        willingness_to_pay, coverage_target and max_cost (``Policy``). The decision carries each
        referencer's expected cost (``costs``) and the plan's (``expected_cost``, ``plan_notes``). Its support
        set (``support_rows``, ``support_ids``, ``support_similarities``) is empty unless
        ``include_support``; ``debug`` implies it and also returns the support questions' text and outcomes
        and every model's probability and expected cost (``model_probabilities``, ``model_costs``).
        """
        request = _route_request(question, embedding, seed, debug, include_support, dict(policy))
        return self._call(self._stub.Route, request, decision_from_response, timeout)

    def route_message(
        self,
        question: str | None = None,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        seed: int | None = None,
        debug: bool = False,
        include_support: bool = False,
        timeout: float | None = None,
        **policy: Any,
    ) -> Any:
        """``route``, but returning the ``RouteResponse`` message itself (``smcs._proto.router_pb2``), for
        a caller that needs the wire form (e.g. its proto3 JSON mapping, as ``smcs route --json`` prints)."""
        request = _route_request(question, embedding, seed, debug, include_support, dict(policy))
        return self._call(self._stub.Route, request, _message, timeout)

    def answer(
        self,
        question: str,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        seed: int | None = None,
        task: str | None = None,
        timeout: float | None = None,
        strategy: str | None = None,
        options: Mapping[str, object] | None = None,
        **policy: Any,
    ) -> Any:
        """Run the full pipeline on ``question``: an iterator (``async for`` on ``AsyncClient``) of the
        pipeline's events as the server streams them, ``Routed``, one ``ReferenceEvidence`` per referencer,
        ``AggregationEvidence`` per aggregation, and last the whole ``AnswerResult``.

        ``embedding``: its precomputed embedding (else the server embeds the question). ``task``: the
        prompt template (math, numeric, multiple_choice, code, exact, instruction). ``strategy``: a
        baseline of ``smcs.strategies`` instead of SMCS (its events are then ``StrategyPlan``, one
        ``StrategyCall`` per model call and the whole ``StrategyResult``), with its ``options`` (sent as
        text). ``policy`` as in ``route``, plus min_references. A failure ends the iteration with
        ``grpc.RpcError``.
        """
        request = _answer_request(question, embedding, seed, task, dict(policy))
        request.strategy = strategy or ""
        request.strategy_options.update({str(k): str(v) for k, v in (options or {}).items()})
        return self._stream(self._stub.Answer, request, timeout or self._answer_timeout)

    def _stream(self, method: Callable[..., Any], request: Any, timeout: float) -> Any:
        raise NotImplementedError

    def score(
        self,
        embeddings: Iterable[Sequence[float]] | None = None,
        logprobs: Iterable[Sequence[float]] | None = None,
        *,
        texts: Iterable[str] | None = None,
        lam: float | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Hybrid scores (Eq 7) of candidate answers, given as embeddings or as ``texts`` (embedded by the
        server), optionally with each candidate's token logprobs; returns ``Scores``."""
        return self._call(self._stub.Score, _score_request(embeddings, texts, logprobs, lam), _scores, timeout)

    def bank_info(self, *, timeout: float | None = None) -> Any:
        """The server's bank: version, sizes, embedder, per-model accuracy (a ``BankSummary``)."""
        return self._call(self._stub.BankInfo, pb.BankInfoRequest(), _bank_summary, timeout)

    def server_info(self, *, timeout: float | None = None) -> Any:
        """The server itself (a ``ServerInfo``): its version, its default policy (every field), the scorer
        and aggregator that policy resolves to on the live bank, the default Answer strategy and its limits."""
        return self._call(self._stub.ServerInfo, pb.ServerInfoRequest(), _server_info, timeout)

    def server_info_message(self, *, timeout: float | None = None) -> Any:
        """``server_info``, but returning the ``ServerInfoResponse`` message itself (the wire form)."""
        return self._call(self._stub.ServerInfo, pb.ServerInfoRequest(), _message, timeout)

    def reload(self, *, timeout: float | None = None) -> Any:
        """Admin: switch the server to the bank's current version; returns the ``BankSummary``."""
        return self._call(self._stub.Reload, pb.ReloadRequest(), _bank_summary, timeout)

    def append_questions(self, questions: Iterable[NewQuestion], *, timeout: float | None = None) -> Any:
        """Admin: append questions as a new bank version; returns the ``BankWrite``."""
        return self._call(self._stub.AppendQuestions, _append_request(questions), _bank_write, timeout)

    def record_outcomes(self, outcomes: Iterable[tuple[str, str, int]], *, timeout: float | None = None) -> Any:
        """Admin: record (model, question id, 1/0/-1) outcomes as a new bank version; returns the ``BankWrite``."""
        request = pb.RecordOutcomesRequest(outcomes=[pb.Outcome(model=m, question_id=q, value=v) for m, q, v in outcomes])
        return self._call(self._stub.RecordOutcomes, request, _bank_write, timeout)

    def add_model(
        self,
        name: str,
        *,
        outcomes: Mapping[str, int] | None = None,
        backend: Mapping[str, str] | None = None,
        cost_per_input_token: float = 0.0,
        cost_per_output_token: float = 0.0,
        timeout: float | None = None,
    ) -> Any:
        """Admin: add a model with its known outcomes (question id → 1/0) as a new bank version."""
        request = pb.AddModelRequest(
            name=name,
            backend=dict(backend or {}),
            cost_per_input_token=cost_per_input_token,
            cost_per_output_token=cost_per_output_token,
            outcomes=dict(outcomes or {}),
        )
        return self._call(self._stub.AddModel, request, _bank_write, timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> Any:
        """The standard health status of ``service`` ("" = the whole server): "SERVING", "NOT_SERVING"…"""
        return self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), _health_status, timeout)


class Client(_Calls):
    """Blocking client. Use as a context manager, or call ``close``."""

    _insecure_channel = staticmethod(grpc.insecure_channel)
    _secure_channel = staticmethod(grpc.secure_channel)

    def _call(self, method: Callable[..., Any], request: Any, parse: Callable[[Any], Result], timeout: float | None) -> Result:
        deadline = time.monotonic() + (timeout or self._timeout)
        for attempt in range(self._retries + 1):
            try:
                return parse(method(request, timeout=_remaining(deadline), metadata=self._metadata))
            except grpc.RpcError as error:
                wait = self._retry_after(error, attempt, deadline)
                if wait is None:
                    raise
            time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _stream(self, method: Callable[..., Any], request: Any, timeout: float) -> Iterator[Event]:
        deadline = time.monotonic() + timeout
        for attempt in range(self._retries + 1):
            decoder, started = AnswerEventDecoder(), False
            try:
                for message in method(request, timeout=_remaining(deadline), metadata=self._metadata):
                    started = True
                    yield decoder.decode(message)
                return
            except grpc.RpcError as error:
                wait = None if started else self._retry_after(error, attempt, deadline)
                if wait is None:
                    raise
            time.sleep(wait)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Calls):
    """asyncio client: the same methods as ``Client``, each returning an awaitable. Use ``async with``."""

    _insecure_channel = staticmethod(grpc.aio.insecure_channel)
    _secure_channel = staticmethod(grpc.aio.secure_channel)

    async def _call(self, method: Callable[..., Any], request: Any, parse: Callable[[Any], Result], timeout: float | None) -> Result:
        deadline = time.monotonic() + (timeout or self._timeout)
        for attempt in range(self._retries + 1):
            try:
                return parse(await method(request, timeout=_remaining(deadline), metadata=self._metadata))
            except grpc.RpcError as error:
                wait = self._retry_after(error, attempt, deadline)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _stream(self, method: Callable[..., Any], request: Any, timeout: float) -> AsyncIterator[Event]:
        deadline = time.monotonic() + timeout
        for attempt in range(self._retries + 1):
            decoder, started = AnswerEventDecoder(), False
            try:
                async for message in method(request, timeout=_remaining(deadline), metadata=self._metadata):
                    started = True
                    yield decoder.decode(message)
                return
            except grpc.RpcError as error:
                wait = None if started else self._retry_after(error, attempt, deadline)
                if wait is None:
                    raise
            await asyncio.sleep(wait)

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
