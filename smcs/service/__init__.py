"""The gRPC service: servicer, auth, live bank state and the server itself (docs/design.md, The service)."""

from .server import RunningServer, serve, start_server

__all__ = ["RunningServer", "serve", "start_server"]
