"""The embedder's config Struct, the bank compatibility check and the sync/async adapters (no model, no network)."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
import pytest

from smcs.bank import Bank, EmbedderInfo, Question
from smcs.embed import (
    UNSPECIFIED,
    AsyncEmbedder,
    BlockingEmbedder,
    Embedder,
    EmbedderConfig,
    EmbedderError,
    EmbedderMalformedResponse,
    EmbedderTimeout,
    ThreadedEmbedder,
    as_async,
    as_sync,
    check_compatible,
    is_async,
)
from smcs.embed.base import check_texts, normalise_rows

# ------------------------------------------------------------------------------------------ config


def test_default_config_is_the_local_onnx_model():
    config = EmbedderConfig()
    assert (config.kind, config.threads, config.batch_size, config.base_url) == ("onnx", 1, 32, None)


def test_remote_config_decodes_from_toml():
    config = msgspec.toml.decode(
        b'kind = "remote"\nbase_url = "http://gpu:8000"\nmodel = "bge"\ndim = 1024\napi_key_env = "K"\nretries = 5\n',
        type=EmbedderConfig,
    )
    assert (config.kind, config.model, config.dim, config.retries) == ("remote", "bge", 1024, 5)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (b'kind = "onnx"\nbase_url = "http://x"\n', "base_url applies only to kind = 'remote'"),
        (b'kind = "remote"\nmodel = "m"\n', "base_url is required"),
        (b'kind = "remote"\nbase_url = "http://x"\n', "model is required"),
        (b'kind = "remote"\nbase_url = "http://x"\nmodel = "m"\nthreads = 2\n', "threads applies only"),
        (b"threads = 0\n", "threads must be >= 1"),
        (b"batch_size = 0\n", "batch_size must be >= 1"),
        (b'kind = "gpu"\n', "kind"),
        (b"thread = 2\n", "unknown field `thread`"),
        (b'threads = "two"\n', "$.threads"),
    ],
)
def test_bad_config_is_refused_naming_the_key(toml, message):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.toml.decode(toml, type=EmbedderConfig)
    assert message in str(info.value)


# ------------------------------------------------------------------------------- compatibility check


def make_bank(path, embedder: EmbedderInfo | None, dim: int = 4) -> Bank:
    """A 3-question, 0-model bank of ``dim``-dimensional rows built with ``embedder``."""
    return Bank.create(
        path,
        embeddings=np.random.default_rng(0).normal(size=(3, dim)),
        capability=np.zeros((0, 3)),
        questions=[Question(id=f"q{i}", text=f"question {i}") for i in range(3)],
        models=[],
        embedder=embedder,
    )


def test_the_same_embedder_is_compatible(tmp_path):
    bank = make_bank(tmp_path / "b", EmbedderInfo("mini", 4))
    check_compatible(EmbedderInfo("mini", 4), bank)


def test_another_embedder_id_is_refused_with_both_named(tmp_path):
    bank = make_bank(tmp_path / "b", EmbedderInfo("all-MiniLM-L6-v2-int8", 4))
    with pytest.raises(ValueError) as info:
        check_compatible(EmbedderInfo("bge-m3", 4), bank)
    message = str(info.value)
    assert f"bank {bank.path} ({bank.version}) was built with embedder 'all-MiniLM-L6-v2-int8' (dim 4)" in message
    assert "the configured embedder is 'bge-m3' (dim 4)" in message


def test_another_dimension_is_refused(tmp_path):
    bank = make_bank(tmp_path / "b", EmbedderInfo("mini", 4))
    with pytest.raises(ValueError, match=r"'mini' \(dim 4\) but the configured embedder is 'mini' \(dim 8\)"):
        check_compatible(EmbedderInfo("mini", 8), bank)


def test_an_unspecified_bank_accepts_any_embedder_of_its_dimension(tmp_path):
    bank = make_bank(tmp_path / "b", None)
    assert bank.manifest.embedder.id == UNSPECIFIED
    check_compatible(EmbedderInfo("anything", 4), bank)
    with pytest.raises(ValueError, match=r"'unspecified' \(dim 4\)"):
        check_compatible(EmbedderInfo("anything", 384), bank)


def test_a_manifest_record_can_be_checked_with_a_name():
    expected = r"^bank demo was built with embedder 'a' \(dim 384\) but the configured embedder is 'b' \(dim 1024\)"
    with pytest.raises(ValueError, match=expected):
        check_compatible(EmbedderInfo("b", 1024), EmbedderInfo("a", 384), bank_name="demo")
    with pytest.raises(ValueError, match=r"^the bank was built"):
        check_compatible(EmbedderInfo("b", 1024), EmbedderInfo("a", 384))


# ---------------------------------------------------------------------------------------- adapters


class Doubling:
    """A blocking toy embedder: the vector of a text of length n is unit e_0 scaled (then normalised)."""

    info = EmbedderInfo("toy", 2)

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        texts = check_texts(texts)
        return np.array([[1.0, float(len(t))] for t in texts], dtype=np.float32).reshape(-1, 2)


class AsyncDoubling(Doubling):
    async def embed(self, texts):  # type: ignore[override]
        await asyncio.sleep(0)
        return Doubling.embed(self, texts)


def test_adapters_pick_the_right_shape():
    sync, asyn = Doubling(), AsyncDoubling()
    assert not is_async(sync) and is_async(asyn)
    assert isinstance(sync, Embedder) and isinstance(asyn, AsyncEmbedder)
    assert as_sync(sync) is sync and as_async(asyn) is asyn
    assert isinstance(as_async(sync), ThreadedEmbedder) and isinstance(as_sync(asyn), BlockingEmbedder)
    assert as_async(sync).info == as_sync(asyn).info == EmbedderInfo("toy", 2)


def test_threaded_and_blocking_adapters_return_the_inner_result():
    sync, asyn = Doubling(), AsyncDoubling()
    expected = sync.embed(["ab", "c"])
    np.testing.assert_array_equal(asyncio.run(as_async(sync).embed(["ab", "c"])), expected)
    np.testing.assert_array_equal(as_sync(asyn).embed(["ab", "c"]), expected)


def test_threaded_adapter_checks_input_before_the_thread_hop():
    sync = Doubling()
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        asyncio.run(as_async(sync).embed([1]))
    assert sync.calls == 0


def test_blocking_adapter_refuses_a_running_loop():
    async def inside() -> None:
        with pytest.raises(RuntimeError, match="await the async embedder"):
            as_sync(AsyncDoubling()).embed(["x"])

    asyncio.run(inside())


# ------------------------------------------------------------------------------------------ helpers


def test_check_texts_accepts_sequences_of_str_only():
    assert check_texts(("a", "b")) == ["a", "b"]
    for bad in ("abc", b"abc", {"a"}, 3):
        with pytest.raises(TypeError):
            check_texts(bad)


def test_normalise_rows_handles_scale_and_flags_bad_rows():
    rows, bad = normalise_rows(np.array([[3e-30, 4e-30], [3e30, 4e30], [0.0, 2.0]]))
    assert bad is None and rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], atol=1e-7)
    assert normalise_rows(np.array([[1.0, 0.0], [0.0, 0.0]]))[1] == 1
    assert normalise_rows(np.array([[np.nan, 1.0]]))[1] == 0
    assert normalise_rows(np.empty((0, 3)))[0].shape == (0, 3)


def test_error_kinds():
    assert EmbedderTimeout("x").kind == "timeout"
    assert isinstance(EmbedderMalformedResponse("x", url="http://h"), EmbedderError)
    assert EmbedderMalformedResponse("x", url="http://h").url == "http://h"
