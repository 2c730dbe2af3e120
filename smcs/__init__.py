"""smcs: an embeddable router microkernel for multi-LLM collaboration (SMCS).

    from smcs import Bank, Policy, Router
    router = Router(Bank.open(path), Policy())
    decision = router.route(embedding, seed=123)
"""

from .bank import Bank
from .core import Policy, RouteDecision, Router

__all__ = ["Bank", "Policy", "RouteDecision", "Router"]
