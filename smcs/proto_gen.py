"""Regenerate the Python stubs of the wire contract: ``python -m smcs.proto_gen``.

Compiles ``proto/smcs/v1/router.proto`` with grpcio-tools into ``smcs/_proto/`` (``router_pb2.py``,
``router_pb2.pyi``, ``router_pb2_grpc.py``), rewriting the generated absolute import into a relative one
so the stubs live inside the ``smcs`` package. ``--check`` exits non-zero when the committed stubs differ
from what the .proto generates (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILE = "smcs/v1/router.proto"
OUT_DIR = Path(__file__).resolve().parent / "_proto"
GENERATED = ("router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py")


def generate() -> dict[str, str]:
    """Compile the .proto and return {file name: content} of the stubs as they belong in ``smcs/_proto``."""
    from grpc_tools import protoc  # build-time tool, imported only here

    with tempfile.TemporaryDirectory() as scratch:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                str(PROTO_ROOT / PROTO_FILE),
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed with status {status}")
        out = Path(scratch) / "smcs" / "v1"
        stubs = {name: (out / name).read_text() for name in GENERATED}
    stubs["router_pb2_grpc.py"] = stubs["router_pb2_grpc.py"].replace(
        "from smcs.v1 import router_pb2", "from . import router_pb2"
    )
    return stubs


def main(argv: list[str] | None = None) -> int:
    """Write the stubs, or with ``--check`` report whether the committed ones are up to date."""
    parser = argparse.ArgumentParser(prog="python -m smcs.proto_gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are out of date")
    args = parser.parse_args(argv)
    stubs = generate()
    if args.check:
        stale = [n for n, text in stubs.items() if not (OUT_DIR / n).exists() or (OUT_DIR / n).read_text() != text]
        if stale:
            print(f"out of date with {PROTO_FILE}: {', '.join(stale)}; run python -m smcs.proto_gen", file=sys.stderr)
            return 1
        return 0
    for name, text in stubs.items():
        (OUT_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
