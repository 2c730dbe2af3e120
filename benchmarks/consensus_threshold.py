"""The consensus threshold of the SMCS pipeline (``Policy.consensus``), measured on real model answers.

Data: RouterBench zero-shot Winogrande (``../shared/data/routerbench-zs-winogrande/``: 1,267 questions,
11 models, each model's answer text and its 0/1 correctness). For every question and ``--subsets`` random
K-subsets of the models (the referencers, ranked by their accuracy over the data as the prior's stand-in),
the answers are embedded with the project's default embedder and scored as the pipeline scores them:
the agreement is the mean pairwise cosine over the pairs of answers that are not empty, the most central
answer the one of highest S^sim (ties to the higher prior). For each threshold t the table gives the share
of cases that would exit early (agreement ≥ t), the accuracy of the central answer on them, the accuracy
there of what the run would otherwise lean on (the top-prior referencer; the majority of the K, correct
when more than half are), and the whole-set accuracy lost by exiting at t against each. The chosen
threshold is the smallest on the grid that loses at most ``--budget`` (1 point) against both, for every K.

    .venv/bin/python benchmarks/consensus_threshold.py [--k 3 7] [--subsets 20] [--seed 0]

Prints one markdown table per K and the chosen threshold; exits 0 with a message when the data or the
embedder's model is absent.
"""

from __future__ import annotations

import argparse
import ast
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerbench-zs-winogrande"
FILES = ("winograde_train.csv", "winograde_test.csv")
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.999)
RESPONSE = "|model_response"


@dataclass(frozen=True)
class Answers:
    """Per question (rows) and model (columns): the answer text's index in ``texts`` (−1: no answer or
    no outcome) and its correctness."""

    models: list[str]
    texts: list[str]
    answer: np.ndarray
    correct: np.ndarray


def _text(cell: str) -> str:
    """The answer text of a ``MODEL|model_response`` cell (a Python list literal holding it)."""
    if not cell:
        return ""
    value = ast.literal_eval(cell)
    return str(value[0]) if isinstance(value, list) and value else str(value)


def read_answers(directory: Path) -> Answers:
    """Every question of the train and test files with each model's answer and outcome."""
    csv.field_size_limit(sys.maxsize)
    rows = [row for name in FILES for row in csv.DictReader((directory / name).open(newline=""))]
    models = sorted(k[: -len(RESPONSE)] for k in rows[0] if k.endswith(RESPONSE))
    texts: dict[str, int] = {}
    answer = np.full((len(rows), len(models)), -1, dtype=np.int64)
    correct = np.zeros((len(rows), len(models)), dtype=bool)
    for i, row in enumerate(rows):
        for j, model in enumerate(models):
            text = _text(row[model + RESPONSE]).strip()
            if text and row[model] != "":
                answer[i, j] = texts.setdefault(text, len(texts))
                correct[i, j] = float(row[model]) == 1.0
    return Answers(models, list(texts), answer, correct)


def cases(answers: Answers, cosine: np.ndarray, k: int, per_question: int, rng: np.random.Generator) -> np.ndarray:
    """One row per (question, random K-subset) with at least two answers: agreement, and whether the
    central answer, the top-prior referencer and the majority are correct."""
    prior = answers.correct.mean(axis=0)
    out = []
    for i in range(answers.answer.shape[0]):
        for _ in range(per_question):
            subset = rng.choice(len(answers.models), size=k, replace=False)
            subset = subset[np.argsort(-prior[subset], kind="stable")]
            subset = subset[answers.answer[i, subset] >= 0]
            if subset.size < 2:
                continue
            sims = cosine[np.ix_(answers.answer[i, subset], answers.answer[i, subset])]
            s_sim = sims.mean(axis=1)
            m = subset.size
            agreement = (s_sim.sum() - 1.0) / (m - 1)
            central = subset[int(np.argmax(s_sim))]  # argmax: ties to the first, the higher prior
            right = answers.correct[i, subset]
            out.append((agreement, answers.correct[i, central], right[0], right.mean() > 0.5))
    return np.array(out, dtype=np.float64)


def table(found: np.ndarray) -> tuple[list[str], list[tuple[float, float, float]]]:
    """The markdown rows per threshold and, per threshold, (t, loss vs the top prior, loss vs the majority)."""
    agreement, central, top, majority = found.T
    lines = [
        "| threshold | exit share | central acc (exits) | top-prior acc (exits) | majority acc (exits) | loss vs top prior | loss vs majority |",
        "|---|---|---|---|---|---|---|",
    ]
    losses = []
    for t in THRESHOLDS:
        exits = agreement >= t
        share = exits.mean()
        loss_top = (top[exits].sum() - central[exits].sum()) / len(found)
        loss_majority = (majority[exits].sum() - central[exits].sum()) / len(found)
        accuracy = (lambda x: f"{x[exits].mean():.4f}") if exits.any() else (lambda x: "-")
        lines.append(
            f"| {t} | {share:.4f} | {accuracy(central)} | {accuracy(top)} | {accuracy(majority)} "
            f"| {100 * loss_top:+.2f} pt | {100 * loss_majority:+.2f} pt |"
        )
        losses.append((t, loss_top, loss_majority))
    return lines, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the routerbench-zs-winogrande directory")
    parser.add_argument("--k", type=int, nargs="+", default=[3, 7], help="referencers per case")
    parser.add_argument("--subsets", type=int, default=20, help="random K-subsets per question")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=0.01, help="the most accuracy early exit may cost (0.01: one point)")
    args = parser.parse_args(argv)
    if not all((args.data / name).is_file() for name in FILES):
        print(f"skipped: {args.data} does not hold {', '.join(FILES)}")
        return 0
    from smcs.embed import EmbedderConfig, make_embedder

    try:
        embedder = make_embedder(EmbedderConfig())
    except Exception as exc:  # noqa: BLE001  # the model files may be missing on this machine: say so and stop
        print(f"skipped: the default embedder cannot load ({exc})")
        return 0
    answers = read_answers(args.data)
    vectors = np.asarray(embedder.embed(answers.texts), dtype=np.float64)  # type: ignore[union-attr]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit.T
    print(f"{answers.answer.shape[0]} questions, {len(answers.models)} models, {len(answers.texts)} distinct answer texts, "
          f"embedder {embedder.info.id}")
    chosen = []
    for k in args.k:
        found = cases(answers, cosine, k, args.subsets, np.random.default_rng(args.seed))
        lines, losses = table(found)
        print(f"\nK = {k}: {len(found)} cases\n")
        print("\n".join(lines))
        chosen.append(min((t for t, a, b in losses if a <= args.budget and b <= args.budget), default=None))
    fits = [t for t in chosen if t is not None]
    print(f"\nchosen threshold (smallest losing at most {100 * args.budget:g} pt for every K): "
          f"{max(fits) if len(fits) == len(chosen) else 'none on the grid'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
