"""The in-process router: retrieval-based prior selection and the exploration plan, sans I/O."""

from __future__ import annotations

import secrets
import threading

import numpy as np

from .. import kernels
from ..bank import Bank
from .decision import RouteDecision
from .policy import Policy

MAX_SEED = 2**64 - 1


class Router:
    """Routes questions over one bank snapshot.

    ``route`` is pure: no model is called and nothing is written. The same embedding, policy, seed and
    bank version always give the same decision. A Router holds one snapshot for its lifetime; to follow
    a bank that grows, build a new Router on ``bank.latest()``.
    """

    def __init__(self, bank: Bank, policy: Policy | None = None) -> None:
        self._bank = bank
        self._policy = policy if policy is not None else Policy()
        self._policy.check_models(bank.model_names)
        self._best_model = _most_accurate_model(bank.capability)
        self._quantized: kernels.QuantizedBank | None = None  # int8 copy of the snapshot, built on first use
        self._quantized_lock = threading.Lock()
        if bank.n_questions:
            self._warm_up()

    @property
    def bank(self) -> Bank:
        """The bank snapshot this router reads."""
        return self._bank

    @property
    def policy(self) -> Policy:
        """The default policy of ``route``."""
        return self._policy

    def default_aggregator(self, policy: Policy | None = None) -> str:
        """The aggregator of ``policy`` (or this router's), else the bank's most accurate model."""
        name = (policy or self._policy).aggregator
        return name if name is not None else self._bank.model_names[self._best_model]

    def route(
        self, embedding: np.ndarray, *, seed: int | None = None, policy: Policy | None = None
    ) -> RouteDecision:
        """Route one question given its embedding (length = the bank's dim, any norm but zero).

        Runs Eqs (2)–(5) in the fused kernel (the int8 kernel with its exact re-score when the policy
        says ``quantized``: same decision), then draws the n exploration subsets of Eq (6) from ``seed``
        (a fresh random seed when None, reported in the decision). ``policy`` overrides the router's
        policy for this call. Raises ``ValueError`` naming the bad argument.
        """
        if policy is None:
            policy = self._policy
        else:
            policy.check_models(self._bank.model_names)
        seed = _checked_seed(seed)
        query = _unit_query(embedding, self._bank.dim)
        bank = self._bank
        if policy.quantized:
            rows, sims, votes = kernels.route_quantized(
                self._quantized_bank(),
                bank.embeddings,
                query,
                bank.capability,
                policy.n_base,
                policy.gamma,
                policy.threads,
            )
        else:
            rows, sims, votes = kernels.route(
                bank.embeddings, query, bank.capability, policy.n_base, policy.gamma, policy.threads
            )
        referencers = kernels.top_k(votes, policy.k)
        referencer_votes = votes[referencers]
        positions = kernels.draw_subsets(referencer_votes, policy.k_drop, policy.n, seed)
        names = bank.model_names
        referencer_names = [names[r] for r in referencers.tolist()]
        return RouteDecision(
            referencers=referencer_names,
            votes=referencer_votes.tolist(),
            aggregator=self.default_aggregator(policy),
            support_rows=rows.tolist(),
            support_similarities=sims.tolist(),
            subsets=[[referencer_names[p] for p in subset] for subset in positions.tolist()],
            seed=seed,
            bank_version=bank.version,
        )

    def _quantized_bank(self) -> kernels.QuantizedBank:
        """The int8 copy of this router's snapshot, built once (the first caller builds, others wait)."""
        quantized = self._quantized
        if quantized is None:
            with self._quantized_lock:
                quantized = self._quantized
                if quantized is None:
                    quantized = kernels.quantize_rows(self._bank.embeddings)
                    self._quantized = quantized
        return quantized

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernels for this bank's array types, so the first
        request does not pay for it; with a quantized policy this also builds the int8 copy."""
        self.route(np.asarray(self._bank.embeddings[0], dtype=np.float32), seed=0)


def _most_accurate_model(capability: np.ndarray) -> int:
    """Index of the model with the highest share of correct answers among its evaluated questions
    (models with none evaluated count as 0), ties to the lower index."""
    correct = (capability == 1).sum(axis=1)
    known = (capability >= 0).sum(axis=1)
    accuracy = np.divide(correct, known, out=np.zeros(correct.shape, dtype=np.float64), where=known > 0)
    return int(np.argmax(accuracy))


def _checked_seed(seed: int | None) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def _unit_query(embedding: object, dim: int) -> np.ndarray:
    try:
        q = np.asarray(embedding, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("embedding must be a vector of numbers") from None
    if q.ndim != 1:
        raise ValueError(f"embedding must be a 1-D vector, got shape {q.shape}")
    if q.shape[0] != dim:
        raise ValueError(f"embedding has dimension {q.shape[0]} but the bank's embedder has dimension {dim}")
    if not np.all(np.isfinite(q)):
        raise ValueError("embedding contains NaN or infinity")
    norm = float(np.linalg.norm(q))
    if norm == 0.0:
        raise ValueError("embedding is a zero vector")
    return (q / norm).astype(np.float32)
