"""The bank's records: one msgspec ``Struct`` per concept, shared by the files and the API.

These Structs are the single definition of what ``questions.jsonl``, ``models.json`` and
``manifest.json`` hold (docs/design.md, The bank). Decoding a file with them validates it and names the offending
field; unknown fields are refused so that a typo in a hand-edited file is caught rather than ignored.
All are frozen: a bank version is immutable, and so are the values read from it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

SCHEMA_VERSION = 2
"""Version of the on-disk layout ``Bank.create`` writes: 2, shared append-only segments (``smcs.bank.segments``)."""
SCHEMA_VERSIONS = (1, 2)
"""The layouts ``Bank.open`` reads: 1, every version a directory of full files; 2, segments."""

# Constraints checked whenever a record is decoded (reading a file, or the round trip on write).
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class Question(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One bank question, stored as one line of ``questions.jsonl`` in the row order of the matrices.

    ``id`` is unique within a bank; ``source`` names the dataset it came from; ``label`` is the
    reference answer when one is known; ``metadata`` holds any further JSON-encodable facts.
    """

    id: NonEmptyStr
    text: str
    source: str = ""
    label: str | None = None
    metadata: dict[str, Any] = {}


class ModelInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One pool model: a row of the capability matrix, an entry of ``models.json``.

    ``backend`` holds free-form hints for reaching the model (e.g. ``base_url``, the served model name);
    costs are per token, in whatever currency the deployment budgets in.
    """

    name: NonEmptyStr
    backend: dict[str, str] = {}
    cost_per_input_token: NonNegativeFloat = 0.0
    cost_per_output_token: NonNegativeFloat = 0.0


class EmbedderInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The embedder that produced a bank's rows: queries must be embedded by the same ``id``.

    ``query_text`` names the rule that turned each question into the text embedded
    (``smcs.core.query_text``); queries against the bank are put through the same rule. A manifest
    written before rules existed names none and means ``"raw"`` (the text as it is), as does an
    embedder's own ``info``.
    """

    id: NonEmptyStr
    dim: Annotated[int, msgspec.Meta(ge=1)]
    query_text: NonEmptyStr = "raw"


class IndexInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The approximate-retrieval index stored with a version (``smcs.bank.ivf``): ``nlist`` inverted lists
    whose centroids were trained on the first ``trained_rows`` rows with ``seed``."""

    kind: str
    nlist: Annotated[int, msgspec.Meta(ge=1)]
    trained_rows: NonNegativeInt
    seed: NonNegativeInt = 0


class Platt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Platt scaling of one scorer: p ← σ(a·logit(p) + b), fitted on held-out predictions."""

    a: float
    b: float


class Head(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A linear head over raw features x: one logit weights[j]·x + bias[j] per output j (a model's
    probability through σ, or a source's through the softmax over sources)."""

    weights: list[list[float]]
    """one row of F weights per output"""
    bias: list[float]
    l2: float
    """the ridge penalty it was fitted with"""


class ScorerScore(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One scorer measured on the bank by cross-validation: top-1 accuracy (an unknown outcome of the chosen
    model counted at that model's accuracy), top-3 coverage, expected calibration error, Brier score."""

    top1: float
    top3: float
    ece: float
    brier: float


class FittedScorer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``scorer.json`` of a version: what ``smcs bank fit`` learned on the bank (see ``smcs.core.scorers``).

    ``default`` is the scorer cross-validation picked; ``models`` and ``sources`` the model names and
    source datasets it was fitted with; ``data`` the SHA-256 of the embeddings and capability files it
    was fitted on (a later version whose data differ holds it *stale*); ``fitted_rows`` the bank rows
    it was trained and measured on (a sample of the bank past ``sample`` rows); ``out_of_bank`` the
    nearest-question similarity below which a query is out of bank.
    """

    kind: str
    default: str
    models: list[str]
    sources: list[str]
    data: dict[str, str]
    fitted_rows: NonNegativeInt
    folds: Annotated[int, msgspec.Meta(ge=2)]
    source_k: Annotated[int, msgspec.Meta(ge=1)]
    source_smoothing: PositiveFloat
    knn_k: Annotated[int, msgspec.Meta(ge=1)]
    knn_alpha: PositiveFloat
    out_of_bank: float
    calibration: dict[str, Platt]
    cv: dict[str, ScorerScore]
    head: Head | None = None
    """the logistic head per model over [q, p^knn, p^source]; None when not fitted"""
    source_classifier: Head | None = None
    """logits over ``sources`` from the query embedding; None (one source): the nearest questions' sources"""
    cover: list[list[list[int]]] = []
    """per source s and first referencer f, the models that then cover most of what the chosen ones miss on
    the bank questions of s, greedily, best first (``smcs.core.scorers.covering_referencers``); [] when none"""
    seconds: NonNegativeFloat = 0.0


class Segments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Schema 2: the part of the bank's shared, append-only files (``segments/``) that one version holds.

    Every length is the committed prefix of a file in bytes; nothing below it is ever written again, so
    the version stays an immutable snapshot while later versions grow the same files. The capability
    matrix is the ``base`` file (``base_models`` x ``base_rows`` int8, SHA-256 ``base_sha256``) with the
    first ``log_bytes`` of the outcome log ``log`` applied in order. ``digests`` are running SHA-256 chains
    that change exactly when the version's embeddings (``embeddings``) or outcomes (``capability``) change,
    what a fitted scorer records as the data it was fitted on. ``lineage`` is drawn at random when the
    segments are created: versions of one lineage share their files.
    """

    lineage: NonEmptyStr
    embeddings: NonNegativeInt
    questions: NonNegativeInt
    journal: NonNegativeInt
    base: NonEmptyStr
    base_models: NonNegativeInt
    base_rows: NonNegativeInt
    base_sha256: NonEmptyStr
    log: NonEmptyStr
    log_bytes: NonNegativeInt
    digests: dict[str, str]


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``manifest.json`` of one version: what the version holds and the SHA-256 of each data file.

    ``created`` is ISO-8601 UTC; ``parent`` is the version this one was derived from (``None`` for the
    first); ``files`` maps each data file name to its SHA-256 (hex); ``provenance`` says how the bank's
    first version was made (e.g. the builder, the questions file and its hash) and is carried unchanged
    into every version derived from it; ``index`` describes the version's IVF index (its files are in
    ``files`` too), None when it has none.
    """

    schema_version: int
    embedder: EmbedderInfo
    n_questions: NonNegativeInt
    n_models: NonNegativeInt
    created: str
    parent: str | None
    files: dict[str, str]
    provenance: dict[str, str] = {}
    index: IndexInfo | None = None
    scorer: str | None = None
    segments: Segments | None = None
