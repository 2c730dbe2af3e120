"""The compiled scoring core of SMCS: pure Numba functions over numpy arrays, no I/O.

Every public kernel has a plain-numpy twin in ``smcs.kernels.reference`` (the executable spec); the
docstrings carry the paper's equations (DESIGN.md §3).
"""

import os

import numba

# One threadsafe runtime on the hot path (OpenMP or TBB): the default workqueue layer aborts when two
# threads (e.g. two gRPC handlers) launch parallel kernels at once. A user's explicit choice wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"
# OpenMP workers that spin after a parallel region (GNU OpenMP's default) hold cores that the event loop
# and the other threads need on a small machine: on two busy cores a route inside an Answer host took
# 19 ms p50 with spinning workers and 7 ms with sleeping ones, and a bare route 5.9 against 3.9 ms.
# Read when the OpenMP runtime starts (the first parallel kernel); a user's explicit choice wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .evaluation import oca_mca, pairwise_ranking_score  # noqa: E402
from .quantized import QuantizedBank, quantize_rows, route_quantized, route_quantized_stats  # noqa: E402
from .retrieval import prior_vote, route, route_many, route_rows, similarities, support_set, top_k  # noqa: E402
from .sampling import draw_subsets, drop_distribution, sample_subsets, subset_uniforms  # noqa: E402
from .scoring import hybrid_scores, mean_pairwise_similarity, perplexity, select_best  # noqa: E402

__all__ = [
    "QuantizedBank",
    "draw_subsets",
    "drop_distribution",
    "hybrid_scores",
    "mean_pairwise_similarity",
    "oca_mca",
    "pairwise_ranking_score",
    "perplexity",
    "prior_vote",
    "quantize_rows",
    "route",
    "route_many",
    "route_quantized",
    "route_quantized_stats",
    "route_rows",
    "sample_subsets",
    "select_best",
    "similarities",
    "subset_uniforms",
    "support_set",
    "top_k",
]
