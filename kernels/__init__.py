"""The compiled scoring core of SMCS: pure Numba functions over numpy arrays, no I/O.

Every public kernel has a plain-numpy twin in ``smcs.kernels.reference`` (the executable spec); the
docstrings carry the paper's equations (docs/design.md, The algorithm).
"""

import os

import numba


def configure_threads() -> None:
    """Set the process-wide threading of the parallel kernels, unless the user already chose: numba's
    ``threadsafe`` layer (OpenMP or TBB; the default workqueue layer aborts when two threads, e.g. two
    gRPC handlers, launch parallel kernels at once) and ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP workers that
    spin after a parallel region hold cores the event loop and other threads need on a small machine;
    see docs/performance.md). Takes effect only before the first parallel kernel runs: ``Router``,
    ``smcs serve`` and the CLI call it; a program driving the kernels directly calls it first.
    Importing ``smcs.kernels`` changes nothing."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "threadsafe"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


from .decision import VoteDecision, decide_votes, route_decide, vote_decision
from .evaluation import oca_mca, pairwise_ranking_score
from .quantized import QuantizedBank, quantize_rows, route_quantized, route_quantized_many, route_quantized_stats
from .retrieval import (
    capability_bits,
    known_weights,
    order_support,
    prior_vote,
    route,
    route_many,
    route_rows,
    similarities,
    support_set,
    top_k,
)
from .sampling import (
    EXACT_DROP_MAX_K,
    Exploration,
    draw_distinct_subsets,
    draw_subsets,
    drop_distribution,
    drop_probabilities,
    explore,
    sample_subsets,
    subset_uniforms,
)
from .scoring import hybrid_scores, mean_pairwise_similarity, perplexity, select_best

__all__ = [
    "EXACT_DROP_MAX_K",
    "Exploration",
    "QuantizedBank",
    "VoteDecision",
    "capability_bits",
    "configure_threads",
    "decide_votes",
    "draw_distinct_subsets",
    "draw_subsets",
    "drop_distribution",
    "drop_probabilities",
    "explore",
    "hybrid_scores",
    "known_weights",
    "mean_pairwise_similarity",
    "oca_mca",
    "order_support",
    "pairwise_ranking_score",
    "perplexity",
    "prior_vote",
    "quantize_rows",
    "route",
    "route_decide",
    "route_many",
    "route_quantized",
    "route_quantized_many",
    "route_quantized_stats",
    "route_rows",
    "sample_subsets",
    "select_best",
    "similarities",
    "subset_uniforms",
    "support_set",
    "top_k",
    "vote_decision",
]
