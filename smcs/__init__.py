"""smcs: an embeddable router microkernel for multi-LLM collaboration (SMCS).

    from . import Bank, Policy, Router
    router = Router(Bank.open(path), Policy())
    decision = router.route(embedding, seed=123)

    from . import Client
    with Client("127.0.0.1:50051") as client:
        decision = client.route(embedding=embedding, seed=123)
"""

from typing import TYPE_CHECKING, Any

from .bank import Bank
from .core import Policy, RouteCall, RouteDecision, Router
from .errors import SmcsError

if TYPE_CHECKING:
    from .client import AsyncClient, Client

__all__ = ["AsyncClient", "Bank", "Client", "Policy", "RouteCall", "RouteDecision", "Router", "SmcsError"]


def __getattr__(name: str) -> Any:
    """``Client`` and ``AsyncClient`` (and with them grpc) are imported on first use, so that the in-process
    router loads neither grpc nor aiohttp."""
    if name in ("Client", "AsyncClient"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
