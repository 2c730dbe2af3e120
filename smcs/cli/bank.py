"""``smcs bank ...``: inspect, validate and grow banks from the command line.

``info``, ``validate``, ``index`` (build or drop the IVF index of approximate retrieval), ``migrate`` (schema 1 to
schema 2, ``Bank.migrate``); online expansion: ``append`` (new questions, with any known outcomes),
``record`` (outcomes for questions already in the bank), ``add-model`` (a new model, its row unknown
until outcomes arrive); and the builders, ``build`` (``smcs.cli.build``) and ``import``
(``smcs.cli.ingest``). Every write is one new bank version, all or nothing; a bad line is reported as
``FILE:LINE: why`` and nothing is written. A server watching the bank (``reload_interval_s``) or told to
``Reload`` serves the new version without a restart.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import numpy as np

from smcs import bundled
from smcs.bank import Bank, ModelInfo, Question, ivf
from smcs.ingest.importers import summary
from smcs.cli.build import add_build_parser
from smcs.cli.warn import warn_if_degenerate
from smcs.core.query_text import query_texts
from smcs.embed import EmbedderConfig, as_sync, check_compatible, make_embedder
from smcs.cli.fit import add_fit_parser, fit_lines
from smcs.cli.ingest import add_import_parser
from smcs.cli.publish import add_publish_parser
from smcs.jsonl import decode_lines
from smcs.progress import Steps
from smcs.errors import InputError

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


def add_bank_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``smcs bank`` and its actions."""
    bank = commands.add_parser("bank", help="build, inspect and extend banks")
    actions = bank.add_subparsers(required=True, metavar="ACTION")
    info = actions.add_parser("info", help="version, sizes, embedder and query-text rule, distinctness, provenance and per-model accuracy")
    info.add_argument("path", type=Path, nargs="?", default=bundled.BANK, help="bank directory (default: the bundled bank)")
    info.set_defaults(run=_run_info)
    validate = actions.add_parser("validate", help="verify every file of the current version (hashes included)")
    validate.add_argument("path", type=Path, nargs="?", default=bundled.BANK, help="bank directory (default: the bundled bank)")
    validate.set_defaults(run=_run_validate)
    index = actions.add_parser(
        "index",
        help="train the IVF index of approximate retrieval (Policy retrieval 'ivf'/'auto') as a new version",
        description="Trains spherical k-means centroids (faiss) on a sample of the bank's rows, assigns every row "
        "to a list and commits the same data with the index as a new version. Later appends extend the index; "
        "rerun when `bank info` advises a rebuild (the bank has doubled since training).",
    )
    index.add_argument("path", type=Path, help="bank directory")
    index.add_argument("--nlist", type=int, default=None, help="number of lists (default: the power of two nearest 4*sqrt(N), 4096 at 1e6 rows)")
    index.add_argument("--seed", type=int, default=0, help="seed of the training sample and k-means (default 0)")
    index.add_argument("--drop", action="store_true", help="commit the bank without an index instead")
    index.set_defaults(run=_run_index)
    _add_file_action(
        actions, "append", _run_append, "append questions from a JSON Lines file as one new version",
        'Each line is a JSON object {"id", "text", "embedding"?, "source"?, "label"?, "outcomes"?: {model: 0|1}}. '
        "Lines without an embedding have their text embedded by the bundled ONNX model under the bank's query-text "
        "rule (the bank must have been built with that model; a given embedding must have been made so too). All questions are appended in one version, or none if any line is bad.",
    )
    _add_file_action(
        actions, "record", _run_record,
        "record outcomes of bank models on bank questions from a JSON Lines file, as one new version",
        'Each line is {"model", "id", "outcome": 1 (correct) | 0 (wrong) | -1 (forget)}; the model and the '
        "question must be in the bank, and a (model, id) pair may appear once.",
    )
    add_model = actions.add_parser(
        "add-model", help="add a model to the bank (its outcomes start unknown; fill them with record or a build)"
    )
    add_model.add_argument("path", type=Path, help="bank directory")
    add_model.add_argument("name", help="the model's name (new to the bank)")
    add_model.add_argument("--cost-per-input-token", type=float, default=0.0, help="cost of one prompt token (default 0)")
    add_model.add_argument("--cost-per-output-token", type=float, default=0.0, help="cost of one generated token (default 0)")
    add_model.set_defaults(run=_run_add_model)
    migrate = actions.add_parser(
        "migrate",
        help="convert a schema 1 bank to schema 2 (shared append-only segments) as a new version",
        description="Verifies the current version (the SHA-256 of every file), copies it once into shared "
        "append-only segments and commits that, index and fitted scorer included, as a new version in schema 2, "
        "in which appends, records and added models write only what they add. Earlier versions stay readable "
        "until pruned. A bank already in schema 2 is left as it is (nothing to do, exit status 0).",
    )
    migrate.add_argument("path", type=Path, help="bank directory")
    migrate.set_defaults(run=_run_migrate)
    add_build_parser(actions)
    add_import_parser(actions)
    add_fit_parser(actions)
    add_publish_parser(actions)


def _add_file_action(
    actions: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int], help: str, description: str,  # type: ignore[type-arg]
) -> None:
    """Register ``smcs bank NAME BANK FILE``: a write of the lines of a JSON Lines file."""
    action = actions.add_parser(name, help=help, description=description)
    action.add_argument("path", type=Path, help="bank directory")
    action.add_argument("file", type=Path, help="JSON Lines file")
    action.set_defaults(run=run)


def embed_with_bundled(texts: list[str], bank: Bank) -> np.ndarray:
    """The questions ``texts`` embedded by the bundled ONNX model (one row each) under the bank's query-text
    rule, after checking the bank was built with that model."""
    embedder = as_sync(make_embedder(EmbedderConfig()))
    check_compatible(embedder.info, bank)
    return np.asarray(embedder.embed(query_texts(texts, bank.manifest.embedder.query_text)))


def _run_info(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    print(summary(bank))
    print(f"created {bank.manifest.created}" + (f"  parent {bank.manifest.parent}" if bank.manifest.parent else ""))
    for key, value in bank.manifest.provenance.items():
        print(f"provenance {key}: {value}")
    print(_schema_line(bank))
    if bank.index is not None:
        print(_index_line(bank.index))
    if bank.scorer is None:
        print("scorer: not fitted, routing by the paper's vote (fit one with: smcs bank fit BANK)")
    else:
        if bank.scorer_stale:
            print("scorer: STALE, fitted before later writes (a server refits it; or run: smcs bank fit BANK)")
        print("\n".join(fit_lines(bank.scorer)))
    warn_if_degenerate(bank)
    return 0


def _schema_line(bank: Bank) -> str:
    """What ``bank info`` prints about the layout of ``bank``'s version: its schema and what a write costs."""
    if bank.segments is None:
        return "schema 1: full files in every version, a write copies the bank (convert with: smcs bank migrate BANK)"
    return "schema 2: shared append-only segments, a write costs what it adds"


def _run_migrate(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    if bank.segments is not None:
        print(f"bank {bank.path}  version {bank.version}: already schema 2, nothing to do")
        return 0
    bank.verify(Steps(f"smcs: verifying bank {args.path}"))  # copy no damage into the segments' digests
    print(f"migrate: copying version {bank.version} ({bank.n_questions} questions, {bank.n_models} models) into segments",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    new = bank.migrate()
    # the parent is the version migrated: the latest under the writers' lock (a write may have committed since
    # the verified one)
    print(f"bank {new.path}  version {new.manifest.parent} -> {new.version}: schema 1 -> 2 in {time.perf_counter() - started:.1f} s; "
          f"now {new.n_questions} questions, {new.n_models} models (earlier versions stay until pruned)")
    return 0


def _index_line(index: ivf.IVFIndex) -> str:
    sizes = index.list_sizes()
    advice = "; rebuild advised (smcs bank index)" if index.needs_rebuild else ""
    return (f"index ivf-flat: {index.nlist} lists over {index.n_rows} rows (trained on {index.trained_rows}), "
            f"list sizes {int(sizes.min())}..{int(sizes.max())}{advice}")


def _run_index(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    if args.drop:
        new = bank.with_index(None)
        print(f"bank {new.path}  version {bank.version} -> {new.version}: index dropped")
        return 0
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    started = time.perf_counter()
    trained = ivf.train(bank.embeddings, args.nlist, seed=args.seed)
    new = bank.with_index(trained)
    print(f"bank {new.path}  version {bank.version} -> {new.version}: trained in {time.perf_counter() - started:.1f} s")
    print(_index_line(new.index))
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    bank.validate()
    print(f"bank {bank.path} version {bank.version}: valid ({bank.n_questions} questions, {bank.n_models} models)")
    warn_if_degenerate(bank)
    return 0


class AppendLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One line of the ``smcs bank append`` file: a new question, its embedding (None: embed ``text``
    locally) and any known outcomes (model name → 1 correct / 0 wrong)."""

    id: NonEmpty
    text: str
    embedding: Annotated[list[float], msgspec.Meta(min_length=1)] | None = None
    source: str = ""
    label: str | None = None
    outcomes: dict[str, Literal[0, 1]] = {}


def _run_append(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    lines = decode_lines(args.file.read_bytes(), AppendLine, args.file)
    first_line: dict[str, int] = {}
    taken = {q.id for q in bank.questions}
    for number, line in lines:
        where = f"{args.file}:{number}"
        if line.id in first_line:
            raise InputError(f"{where}: id {line.id!r} repeats line {first_line[line.id]}")
        if line.id in taken:
            raise InputError(f"{where}: id {line.id!r} is already in the bank")
        first_line[line.id] = number
        if line.embedding is not None:
            if len(line.embedding) != bank.dim:
                raise InputError(f"{where}: embedding has {len(line.embedding)} values but the bank's dimension is {bank.dim}")
            if not np.isfinite(line.embedding).all() or not np.any(line.embedding):
                raise InputError(f"{where}: embedding must be finite and not all zeros")
    outcomes = bank.outcome_columns([line.outcomes for _, line in lines], lambda j: f"{args.file}:{lines[j][0]}")
    to_embed = [j for j, (_, line) in enumerate(lines) if line.embedding is None]
    embeddings = np.empty((len(lines), bank.dim), dtype=np.float64)
    if to_embed:
        embeddings[to_embed] = embed_with_bundled([lines[j][1].text for j in to_embed], bank)
    for j, (_, line) in enumerate(lines):
        if line.embedding is not None:
            embeddings[j] = line.embedding
    questions = [Question(id=line.id, text=line.text, source=line.source, label=line.label) for _, line in lines]
    new = bank.append_questions(embeddings, questions, outcomes)
    known = int((outcomes >= 0).sum())
    print(
        f"bank {new.path}  version {bank.version} -> {new.version}: appended {len(lines)} questions "
        f"({len(to_embed)} embedded locally, {known} outcomes); now {new.n_questions} questions, {new.n_models} models"
    )
    return 0


class OutcomeLine(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One line of the ``smcs bank record`` file: ``model``'s outcome on bank question ``id``."""

    model: NonEmpty
    id: NonEmpty
    outcome: Literal[-1, 0, 1]


def _run_record(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    lines = decode_lines(args.file.read_bytes(), OutcomeLine, args.file)
    ids = {q.id for q in bank.questions}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in lines:
        where = f"{args.file}:{number}"
        _require_model(bank, line.model, where)
        if line.id not in ids:
            raise InputError(f"{where}: id {line.id!r} is not a question of the bank")
        pair = (line.model, line.id)
        if pair in first_line:
            raise InputError(f"{where}: model {line.model!r} on id {line.id!r} repeats line {first_line[pair]}")
        first_line[pair] = number
    new = bank.record_outcomes([(line.model, line.id, line.outcome) for _, line in lines])
    print(f"bank {new.path}  version {bank.version} -> {new.version}: recorded {len(lines)} outcomes")
    return 0


def _run_add_model(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    model = ModelInfo(
        name=args.name, cost_per_input_token=args.cost_per_input_token, cost_per_output_token=args.cost_per_output_token
    )
    new = bank.add_model(model)  # which checks the name and the costs
    print(f"bank {new.path}  version {bank.version} -> {new.version}: added model {args.name!r} "
          f"(outcomes unknown on all {new.n_questions} questions); now {new.n_models} models")
    return 0


def _require_model(bank: Bank, model: str, where: str) -> None:
    if model not in bank.model_names:
        raise InputError(f"{where}: unknown model {model!r} (the bank's models: {', '.join(bank.model_names)})")
