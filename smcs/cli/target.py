"""``--server``: the address of an smcs server (or its replicas), checked before any connection is tried."""

from __future__ import annotations

import argparse

from smcs.client import DEFAULT_TARGET, GRPC_SCHEMES, channel_target

SERVER_HELP = (
    f"server address HOST:PORT (default {DEFAULT_TARGET}); replicas as a comma-separated list of IP:PORT, "
    "or a gRPC target such as dns:///NAME:PORT whose name resolves to every replica: calls go round-robin "
    "to the replicas that are up"
)
EXPECTED = (
    f"expected HOST:PORT (e.g. {DEFAULT_TARGET}), several IP:PORT separated by commas, or a gRPC target such as "
    "dns:///NAME:PORT"
)


def server_target(value: str) -> str:
    """``--server`` as given, once it has the form HOST:PORT (each item of a list too, unless it is a gRPC
    target with a scheme) and ``channel_target`` accepts it; else ``ArgumentTypeError`` saying what is
    expected (argparse reports it with the command's usage)."""
    text = value.strip()
    if not text.startswith(GRPC_SCHEMES):
        for item in text.split(","):
            host, colon, port = item.strip().rpartition(":")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                what = f"{item.strip()!r} has no port" if not colon else f"{item.strip()!r} is not HOST:PORT"
                raise argparse.ArgumentTypeError(f"{what}: {EXPECTED}")
    try:
        channel_target(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; {EXPECTED}") from None
    return value
