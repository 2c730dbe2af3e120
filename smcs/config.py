"""The configuration file: one TOML document decoded into typed Structs.

Decoding validates: an unknown key or a wrong type is a ``ConfigError`` naming the key and its path
(e.g. ``Expected `int`, got `str` - at `$.server.port```). Secrets may come from the environment instead
of the file: ``SMCS_QUERY_TOKENS`` and ``SMCS_ADMIN_TOKENS`` (comma-separated) replace the tokens of
``[auth]`` when set.

Example::

    [server]
    host = "127.0.0.1"
    port = 50051

    [bank]
    path = "/srv/smcs/bank"

    [policy]
    k = 5
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import msgspec

from .errors import InputError
from .backends import ModelConfig
from .core import Policy
from .core.pipeline import Stage
from .embed import EmbedderConfig

QUERY_TOKENS_ENV = "SMCS_QUERY_TOKENS"
ADMIN_TOKENS_ENV = "SMCS_ADMIN_TOKENS"


class ConfigError(InputError):
    """The configuration file is missing, is not TOML, or does not match the schema; the message names the key."""


class TLSConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS for the server. Setting ``client_ca_file`` turns on mutual TLS (clients must present a
    certificate signed by that CA).

    Attributes:
        cert_file: PEM certificate chain of the server.
        key_file: PEM private key of the server.
        client_ca_file: PEM CA bundle that client certificates must chain to; None = no client certificates.
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The gRPC server.

    Attributes:
        host: interface to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: TCP port (0 picks a free one, reported at start).
        max_concurrent_rpcs: RouterService calls served at once (an Answer holds its slot until its stream
            ends; health checks and reflection take none). A call that finds every slot taken queues for
            one, first come first served (``smcs.service.admission``).
        admission_wait_s: the longest a queued call waits for a slot, and at most half of its remaining
            deadline; then it gets RESOURCE_EXHAUSTED naming the limit, with gRPC's retry pushback
            (``grpc-retry-pushback-ms``) of about this long. 0: refuse at once when every slot is taken.
        max_message_bytes: largest request or response message.
        max_question_chars: longest question text accepted.
        workers: threads that run the routing kernels (which release the GIL) beside the event loop. One
            is best while the kernels are parallel themselves: each extra calling thread brings its own
            OpenMP team, and the teams contend for the cores. Raise it together with ``[policy] threads = 1``
            for throughput under many concurrent clients.
        route_batch: most Route (and Answer) routes that share one pass over the bank. The routes that
            arrive while a batch runs wait for it and then go together (a lone request never waits);
            decisions are the same as one at a time. 1 = no batching.
        inline_route_bytes: over a bank whose embeddings take fewer bytes than this, a lone route (no
            other waiting, and no other RouterService call in flight) runs on the event loop itself rather
            than on a ``workers`` thread; batches of several, and routes under load, go to the workers,
            where they run beside the loop's own work. The hop to a worker thread and back costs two
            thread wake-ups, a sizeable share of a small bank's route
            (measurements: docs/performance.md, "Service performance"); a route on the loop holds the
            other requests for its duration, so keep this to banks that route in about a millisecond.
            0 = always on the workers.
        reload_interval_s: how often to look for a new bank version and switch to it even while no request
            arrives; 0 = no watcher (``check_current`` and Reload still switch).
        check_current: before each request, stat the bank's ``CURRENT`` (one ``os.stat``; its cost:
            docs/performance.md, "Service performance"); when another process
            (another replica, ``smcs bank append``) moved it on, the request is served over the new version.
            False: only Reload, writes through this server and ``reload_interval_s`` switch versions.
        rebuild_index: when the bank has an IVF index and has doubled since it was trained, retrain it in
            the background (its own thread) and commit it as a new version; routing uses the old one
            meanwhile. False: only ``smcs bank index`` retrains.
        refit_scorer_interval_s: when the bank's fitted scorer (``smcs bank fit``) is stale, because writes
            changed its embeddings or outcomes or added a model since the fit, refit it in the background
            (its own thread) and commit it as a new version, at most once per this many seconds (writes
            arriving meanwhile are folded into the next refit); routing uses the stale fit meanwhile, or
            "vote" when the fit no longer matches the bank's models. 0: only ``smcs bank fit`` refits.
        tls: TLS settings; None = plaintext.
        bank_cache_dir: where a server over a bank in object storage (``--bank s3://bucket/prefix``, or
            ``[bank] path`` such a URL) keeps its local copy of the bank, which it routes over; None: the
            user's cache directory, ``~/.cache/smcs/banks/BUCKET/PREFIX`` (``$XDG_CACHE_HOME`` when set).
            Ignored for a local bank.
        bank_sync_interval_s: how often such a server fetches what the bank gained since its last look
            (``smcs.bank.remote.sync``: one read of ``CURRENT`` when nothing changed) and switches to a new
            version it brings. Must be > 0.
        s3_endpoint_url: the endpoint of the S3-compatible object store (e.g. ``http://minio:9000``); None:
            boto3's own choice (``AWS_ENDPOINT_URL`` when set, else AWS). Credentials and region come the
            standard boto3 way (``AWS_ACCESS_KEY_ID``, ``~/.aws``, an instance role, ...), never from this file.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    max_concurrent_rpcs: int = 64
    admission_wait_s: float = 1.0
    max_message_bytes: int = 16 << 20
    max_question_chars: int = 32768
    workers: int = 1
    route_batch: int = 16
    inline_route_bytes: int = 32 << 20
    reload_interval_s: float = 0.0
    check_current: bool = True
    rebuild_index: bool = True
    refit_scorer_interval_s: float = 60.0
    tls: TLSConfig | None = None
    bank_cache_dir: str | None = None
    bank_sync_interval_s: float = 5.0
    s3_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        for name in ("max_concurrent_rpcs", "max_message_bytes", "max_question_chars", "workers", "route_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.admission_wait_s <= 60:
            raise ConfigError(f"admission_wait_s must be in [0, 60], got {self.admission_wait_s}")
        if not self.refit_scorer_interval_s >= 0:
            raise ConfigError(f"refit_scorer_interval_s must be >= 0, got {self.refit_scorer_interval_s}")
        if self.reload_interval_s < 0:
            raise ConfigError(f"reload_interval_s must be >= 0, got {self.reload_interval_s}")
        if self.inline_route_bytes < 0:
            raise ConfigError(f"inline_route_bytes must be >= 0, got {self.inline_route_bytes}")
        if not self.bank_sync_interval_s > 0:
            raise ConfigError(f"bank_sync_interval_s must be > 0, got {self.bank_sync_interval_s}")


class ExpiringToken(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A bearer token accepted until ``expires`` (an instant with a UTC offset), refused from then on.

    Attributes:
        token: the secret.
        expires: when it stops working, e.g. ``2027-01-01T00:00:00Z``.
    """

    token: str
    expires: datetime

    def __post_init__(self) -> None:
        if self.expires.utcoffset() is None:
            example = "2027-01-01T00:00:00Z"
            raise ConfigError(f"expires must have a UTC offset (e.g. {example}), got {self.expires.isoformat()}")


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Bearer-token authentication (``authorization: Bearer <token>`` metadata). Off when no token is set.

    Each entry of a token list is either a plain string, which never expires, or a table
    ``{ token = "...", expires = 2027-01-01T00:00:00Z }`` (a TOML offset date-time, or the same as an
    RFC 3339 string; one without an offset is an error), refused with UNAUTHENTICATED "bearer token
    expired" from that instant on. The environment's overrides are plain strings.

    Attributes:
        query_tokens: tokens allowed to call Route, Answer, Score, BankInfo and ServerInfo.
        admin_tokens: tokens allowed to call everything, bank writes and Reload included.
    """

    query_tokens: list[str | ExpiringToken] = []
    admin_tokens: list[str | ExpiringToken] = []

    @property
    def enabled(self) -> bool:
        """Whether any token is configured (then every call must present one)."""
        return bool(self.query_tokens or self.admin_tokens)


class BankConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The bank the server routes over.

    Attributes:
        path: bank directory (see ``smcs bank info``), or the URL ``s3://bucket/prefix`` of a bank in object
            storage that ``smcs bank publish`` wrote (see ``[server] bank_cache_dir``).
    """

    path: str


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The Prometheus exposition (``http://host:port/metrics``), a plain-HTTP listener beside the gRPC port.

    Attributes:
        host: interface the metrics listener binds (127.0.0.1: this machine only).
        port: its TCP port. Absent (None, the default): no metrics listener. 0: a free port the system
            picks, reported at start (the log line ``smcs metrics on http://HOST:PORT/metrics``, the line
            ``smcs: metrics on ...`` that ``smcs serve`` prints before its serving line, and
            ``RunningServer.metrics_port``), as ``[server] port = 0`` does for the gRPC port. N: that port.
            Metrics are recorded either way.
    """

    host: str = "127.0.0.1"
    port: int | None = None

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")


class HTTPConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The OpenAI-compatible HTTP gateway (``/v1/chat/completions``, ``/v1/models``), a listener beside the
    gRPC port in the same process, over the same bank, models, tokens and metrics.

    Attributes:
        host: interface the gateway binds (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: its TCP port. Absent (None, the default): no gateway. 0: a free port the system picks,
            reported at start (the log line ``smcs http on http://HOST:PORT/v1``, the line ``smcs: http on
            ...`` that ``smcs serve`` prints before its serving line, and ``RunningServer.http_port``), as
            ``[server] port = 0`` does for the gRPC port. N: that port.
        timeout_s: the deadline of one request, streamed or not: past it the request ends with 504 (or, in
            a stream that has begun, an error event) and its model calls are cancelled. A request may ask
            for a shorter one with the header ``x-smcs-timeout-s``.

    Chat completions take their slots from the gRPC service's admission control (``[server]
    max_concurrent_rpcs`` slots for both together, a wait of up to ``admission_wait_s`` for one, then 429
    with ``Retry-After``).
    """

    host: str = "127.0.0.1"
    port: int | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.port is not None and not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s}")


class AnswerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The full pipeline (``Answer``, ``smcs ask``).

    Attributes:
        reference_timeout_s: most seconds one referencer may take; one that takes longer is left out
            (like any failed referencer). 0 = only the backends' own ``timeout_s``.
        aggregation_timeout_s: the same for each aggregation.
        fallback_aggregator: when every aggregation failed, have the most accurate other model write
            them again before answering with the best reference.
        strategy: the strategy of a request that names none (``smcs``, or a baseline of ``smcs.strategies``).
        strategy_options: its parameters (``--option`` of ``smcs ask``), used when a request names no
            strategy.
    """

    reference_timeout_s: float = 0.0
    aggregation_timeout_s: float = 0.0
    fallback_aggregator: bool = True
    strategy: str = "smcs"
    strategy_options: dict[str, str | int | float | bool] = {}

    def __post_init__(self) -> None:
        for name in ("reference_timeout_s", "aggregation_timeout_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        from .strategies import StrategyError, get_strategy, parse_params  # here: strategies import the core

        try:
            parse_params(get_strategy(self.strategy).name, self.strategy_options)
        except StrategyError as exc:
            raise ConfigError(f"strategy: {exc}") from None

    @property
    def timeouts(self) -> dict[Stage, float | None]:
        """Per pipeline stage, the limit of one call (None: none beyond the backend's)."""
        return {"reference": self.reference_timeout_s or None, "aggregate": self.aggregation_timeout_s or None}


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration file; every table is optional.

    Attributes:
        server: the gRPC server (``[server]``).
        auth: bearer tokens (``[auth]``).
        bank: the bank (``[bank]``); None serves a synthetic demonstration bank.
        policy: default routing policy (``[policy]``, fields of ``smcs.Policy``).
        embedder: how question text becomes a query embedding (``[embedder]``, fields of
            ``smcs.embed.EmbedderConfig``). Unset: the bundled ONNX model when the bank accepts it,
            else embeddings only (text requests then get FAILED_PRECONDITION saying why). Set: that
            embedder or a start-up error if the bank was built by another. ``kind = "none"``: embeddings only.
        metrics: the Prometheus ``/metrics`` listener (``[metrics]``); off unless its port is set (0: a free port).
        http: the OpenAI-compatible HTTP gateway (``[http]``); off unless its port is set (0: a free port).
        models: the models answers are asked of (``[models."NAME"]``, see ``smcs.backends.config``), by
            their names in the bank. Route needs none; Answer uses the bank's models that are listed.
        answer: the full pipeline's timeouts and fallback (``[answer]``).
    """

    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    bank: BankConfig | None = None
    policy: Policy = Policy()
    embedder: EmbedderConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    http: HTTPConfig = HTTPConfig()
    models: dict[str, ModelConfig] = {}
    answer: AnswerConfig = AnswerConfig()


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file at ``path`` (None: all defaults) and apply the environment's token overrides."""
    config = Config()
    if path is not None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            document = msgspec.toml.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # TOML is UTF-8
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        _check_models(path, document)
        try:
            config = msgspec.convert(document, type=Config)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return _with_env_tokens(config, os.environ if environ is None else environ)


def _check_models(path: str | os.PathLike[str], document: object) -> None:
    """``ConfigError`` naming the model table (``$.models."NAME"``) that does not decode: msgspec's own
    message would only say ``$.models[...]``."""
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict):
        return
    for name, table in models.items():
        try:
            msgspec.convert(table, type=ModelConfig)
        except msgspec.ValidationError as exc:
            message = str(exc).replace("$", f'$.models."{name}"', 1) if "- at `$" in str(exc) else f'{exc} - at `$.models."{name}"`'
            raise ConfigError(f"{path}: {message}") from None


def _with_env_tokens(config: Config, environ: dict[str, str] | os._Environ[str]) -> Config:
    auth = config.auth
    for field, var in (("query_tokens", QUERY_TOKENS_ENV), ("admin_tokens", ADMIN_TOKENS_ENV)):
        if var in environ:
            tokens = [t.strip() for t in environ[var].split(",") if t.strip()]
            auth = msgspec.structs.replace(auth, **{field: tokens})
    return msgspec.structs.replace(config, auth=auth)
