"""smcs: an embeddable router microkernel for multi-LLM collaboration (SMCS).

    from smcs import Bank, Policy, Router
    router = Router(Bank.open(path), Policy())
    decision = router.route(embedding, seed=123)

    from smcs import Client
    with Client("127.0.0.1:50051") as client:
        decision = client.route(embedding=embedding, seed=123)
"""

from .bank import Bank
from .client import AsyncClient, Client
from .core import Policy, RouteCall, RouteDecision, Router

__all__ = ["AsyncClient", "Bank", "Client", "Policy", "RouteCall", "RouteDecision", "Router"]
