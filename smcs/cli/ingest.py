"""``smcs bank import FORMAT PATH... --out DIR``: build a new bank from published capability data.

The files are read (and checked) first, then the question texts are embedded by the bundled ONNX
model under the query-text rule (``--query-text``, default ``question-v1``) with a progress line on
stderr, then the bank is created and summarised on stdout: counts, sources, per-model accuracy,
embedder, rule, distinctness and version; a degenerate bank (its embeddings nearly all alike) is
warned about on stderr. Errors are ``InputError``s (``SmcsError``s) for ``smcs.cli.main.main`` to print as one line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from smcs.ingest.importers import FORMATS, RULES, ImportedBank, import_bank, options_of, read_imports, summary
from smcs.cli.warn import warn_if_degenerate
from smcs.core.query_text import DEFAULT_QUERY_TEXT_RULE
from smcs.core.query_text import RULES as QUERY_TEXT_RULES
from smcs.progress import Progress
from smcs.errors import InputError

_FLAGS = {"rule": "--rule", "embedder_id": "--stored-embedder", "limit": "--limit"}
"""The ``read_import`` option each command-line flag sets."""


def add_import_parser(bank_commands: Any) -> None:
    """Register ``import`` under ``smcs bank`` (``bank_commands`` is its sub-parsers object)."""
    parser = bank_commands.add_parser(
        "import",
        help="build a new bank from RouterDC, RouterBench, SMCS unified-bank or EmbedLLM files",
        description=(
            "Read FORMAT files (several are merged into one bank: models unioned, a model a file lacks is "
            "'not evaluated' there), embed the question texts with the bundled ONNX model and create the bank "
            "in DIR, which must be new or empty. routerdc: JSON arrays of {question, scores}; routerbench: CSV "
            "with prompt, sample_id, eval_name, one outcome column and MODEL|total_cost per model; union: JSON "
            "array or JSON Lines of {question, src, id, model_res: {model: {is_correct}}, embedding}; embedllm: "
            "CSV with model_id, model_name, prompt_id, prompt, label, category."
        ),
    )
    parser.add_argument("format", choices=FORMATS, help="input format")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="input file; repeat to merge several")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory of the new bank (new or empty)")
    parser.add_argument(
        "--rule",
        choices=RULES,
        help="routerdc: score to outcome; positive: correct = score > 0, half: score >= 0.5, "
        "auto (default): half for gsm8k, mbpp, humaneval, javascript and MATH files, positive for the others",
    )
    parser.add_argument(
        "--stored-embedder",
        metavar="ID",
        help="union: id of the embedder that made the files' embeddings; they are reused when it is the "
        "bundled embedder's, else the questions are embedded again",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="import only the first N questions")
    parser.add_argument(
        "--query-text", choices=QUERY_TEXT_RULES, default=DEFAULT_QUERY_TEXT_RULE,
        help=f"what of each question is embedded (default {DEFAULT_QUERY_TEXT_RULE}: the question without few-shot "
        "examples, head and tail of a long text; raw: the text as it is, as the paper and banks before rules); "
        "the bank records it and applies it to queries",
    )
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="questions per embedding call (default 256)")
    parser.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime threads (default: every CPU this process may use)")
    parser.set_defaults(run=run_import)


def run_import(args: argparse.Namespace, *, embedder: Any = None, stderr: TextIO | None = None) -> int:
    """The ``smcs bank import`` command; ``embedder`` replaces the bundled ONNX one (tests pass a fake)."""
    stderr = sys.stderr if stderr is None else stderr
    options = {name: getattr(args, flag.removeprefix("--").replace("-", "_")) for name, flag in _FLAGS.items()}
    options = {name: value for name, value in options.items() if value is not None}
    for name in options:
        if name not in options_of(args.format):
            raise InputError(f"{_FLAGS[name]} does not apply to the {args.format} format")
    started = time.perf_counter()
    imported = read_imports(args.format, args.paths, **options)
    merged = f" ({imported.repeats} repeated rows merged)" if imported.repeats else ""
    print(f"read {len(imported.questions)} questions{merged}, {len(imported.models)} models from {len(args.paths)} file(s) "
          f"in {time.perf_counter() - started:.1f} s", file=stderr)
    if embedder is None:
        embedder = _bundled_embedder(args.threads)
    _explain_stored(imported, embedder.info.id, stderr)
    bank = import_bank(
        imported, args.out, embedder, batch_size=args.batch_size, progress=progress_callback(stderr), query_text=args.query_text
    )
    print(summary(bank))
    print(f"imported in {time.perf_counter() - started:.1f} s")
    warn_if_degenerate(bank, stderr)
    return 0


def _bundled_embedder(threads: int | None) -> Any:
    from smcs.embed import EmbedderConfig, make_embedder  # onnxruntime loads only when an import runs

    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return make_embedder(EmbedderConfig(threads=threads))


def _explain_stored(imported: ImportedBank, embedder_id: str, stderr: TextIO) -> None:
    """Say on ``stderr`` whether the files' stored embeddings will be reused, and if not why not."""
    if imported.embeddings is None:
        return
    if imported.embedder_id == embedder_id:
        print(f"reusing the stored embeddings (made by {embedder_id}; recorded as query text raw)", file=stderr)
    elif imported.embedder_id is None:
        print(f"ignoring the stored embeddings (no --stored-embedder given); embedding with {embedder_id}", file=stderr)
    else:
        print(f"ignoring the stored embeddings (made by {imported.embedder_id}); embedding with {embedder_id}", file=stderr)


def progress_callback(stream: TextIO, label: str = "embedding") -> Callable[[int, int], None]:
    """An ``import_bank`` progress callback drawing a ``smcs.progress.Progress`` line on ``stream``: one
    line rewritten in place on a terminal, a plain line now and then elsewhere, and a last one at the end."""
    bar: Progress | None = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None or done == 0:
            bar = Progress(total, label, out=stream)
        bar.update(done)
        if done >= total:
            bar.close()

    return report
