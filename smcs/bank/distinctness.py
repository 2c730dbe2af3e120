"""How distinct a bank's embeddings are: the check that catches a degenerate bank.

A bank whose questions all embed alike routes every query to the same support set. That happens when
every question text carries the same long template (a few-shot block, a system prompt) and the encoder
sees mostly, or only, the template: RouterBench's Winogrande prompts embedded whole give a mean pairwise
cosine of 1.000 and every row a near-twin, where the sentences alone give 0.18. Nothing fails, so it is
measured and said.

The measure looks at a fixed sample: ``SAMPLE_ROWS`` rows drawn without replacement by a generator
seeded with ``SEED`` (all rows when the bank has fewer), so it costs the same on any bank size
(measurements: docs/performance.md, "Other figures") and says the same thing every time about the same
bank. Over the sample:

- ``mean_pairwise_cosine``: the mean of x_i · x_j over the pairs i ≠ j of sampled rows;
- ``near_duplicate_share``: the share of sampled rows whose nearest other sampled row has cosine
  ≥ ``NEAR_DUPLICATE_COSINE`` while the two question texts differ (a question stored twice is not a
  fault of the embedding).

A bank is ``degenerate`` when ``mean_pairwise_cosine`` ≥ ``DEGENERATE_MEAN_COSINE`` or
``near_duplicate_share`` ≥ ``DEGENERATE_NEAR_DUPLICATE_SHARE``. The thresholds sit well clear of the
banks measured with the bundled MiniLM embedder (mean pairwise cosine, near-duplicate share):

=====================================================  ===========  ===========
RouterDC, the six ``_train`` files (7,598 rows)         0.114        0.000
RouterDC, one file alone: ARC, MMLU, HumanEval          0.08–0.29    ≤ 0.002
RouterDC, one file alone: GSM8K, CMMLU                  0.35, 0.46   0.000
RouterBench Winogrande train (887 prompts), raw         1.000        1.000
the same, head and tail of the prompt only              0.915        0.074
the same, query-text rule ``question-v1``               0.259        0.000
=====================================================  ===========  ===========

so a one-domain bank (up to 0.46) is not flagged and a templated one (0.9 and up, or a tenth of its rows
collapsed onto others) is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .store import Bank

SAMPLE_ROWS = 2000
SEED = 0
NEAR_DUPLICATE_COSINE = 0.999
DEGENERATE_MEAN_COSINE = 0.8
DEGENERATE_NEAR_DUPLICATE_SHARE = 0.1


@dataclass(frozen=True)
class Distinctness:
    """What ``measure`` found over ``sampled`` of a bank's ``rows`` (see the module docstring)."""

    rows: int
    sampled: int
    mean_pairwise_cosine: float
    near_duplicate_share: float

    @property
    def degenerate(self) -> bool:
        """Whether the rows are too alike to retrieve by (either threshold reached)."""
        return (
            self.mean_pairwise_cosine >= DEGENERATE_MEAN_COSINE
            or self.near_duplicate_share >= DEGENERATE_NEAR_DUPLICATE_SHARE
        )

    def line(self) -> str:
        """One line for people: the two measures and the sample they come from."""
        if self.sampled < 2:
            return f"distinctness: not measured ({self.rows} row{'s' if self.rows != 1 else ''})"
        of = f"all {self.rows} rows" if self.sampled == self.rows else f"a sample of {self.sampled} of {self.rows} rows"
        verdict = "DEGENERATE" if self.degenerate else "ok"
        return (f"distinctness: mean pairwise cosine {self.mean_pairwise_cosine:.3f}, near-duplicates "
                f"{100 * self.near_duplicate_share:.1f}% ({of}): {verdict}")

    def warning(self) -> str | None:
        """The warning to show when the bank is degenerate, naming the likely cause and the remedy; else None."""
        if not self.degenerate:
            return None
        return (
            f"the bank's embeddings are nearly all alike (mean pairwise cosine {self.mean_pairwise_cosine:.3f}, "
            f"{100 * self.near_duplicate_share:.0f}% of rows have a near-identical other row with a different text), "
            "so retrieval cannot tell its questions apart. Likely cause: the question texts share a long prefix or "
            "template (few-shot examples, a system prompt) that the embedder sees instead of the question. Embed "
            "them under the query-text rule 'question-v1' (the default of smcs bank import and smcs bank build): "
            "re-import or rebuild the bank."
        )


def measure(embeddings: np.ndarray, text_of: Callable[[int], str] | None = None, *, sample: int = SAMPLE_ROWS,
            seed: int = SEED) -> Distinctness:
    """The distinctness of the unit rows ``embeddings`` (N × d), on ``sample`` rows drawn with ``seed``.

    ``text_of(i)`` is row i's question text (None: rows are never taken for the same question). Reads
    only the sampled rows, so a memory-mapped bank stays on disk.
    """
    if sample < 2:
        raise InputError(f"sample must be >= 2, got {sample}")
    n = len(embeddings)
    rows = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    if len(rows) < 2:
        return Distinctness(n, len(rows), float("nan"), 0.0)
    x = np.asarray(embeddings[rows], dtype=np.float32)
    m = len(rows)
    total = x.sum(axis=0, dtype=np.float64)
    mean = (float(total @ total) - float(np.einsum("ij,ij->", x, x, dtype=np.float64))) / (m * (m - 1))
    gram = x @ x.T
    np.fill_diagonal(gram, -np.inf)
    nearest = gram.argmax(axis=1)
    close = np.flatnonzero(gram[np.arange(m), nearest] >= NEAR_DUPLICATE_COSINE)
    if text_of is not None:
        close = [i for i in close if text_of(int(rows[i])) != text_of(int(rows[nearest[i]]))]
    return Distinctness(n, m, mean, len(close) / m)


def bank_distinctness(bank: Bank) -> Distinctness:
    """``measure`` of ``bank``'s embeddings, with its question texts."""
    questions = bank.questions
    return measure(bank.embeddings, lambda i: questions[i].text)
