"""The gRPC service: servicer, auth, live bank state and the server itself (DESIGN.md §5)."""

from .background import BackgroundServer
from .server import RunningServer, serve, start_server

__all__ = ["BackgroundServer", "RunningServer", "serve", "start_server"]
