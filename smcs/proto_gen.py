"""Regenerate the Python stubs of the wire contract: ``python -m smcs.proto_gen``.

Compiles ``proto/smcs/v1/router.proto`` with grpcio-tools into ``smcs/_proto/`` (``router_pb2.py``,
``router_pb2.pyi``, ``router_pb2_grpc.py``), rewriting the generated absolute import into a relative one
so the stubs live inside the ``smcs`` package. ``--check`` exits non-zero when the committed stubs differ
from what the .proto generates (the test suite runs it).

``--publish`` writes ``proto/published_contract.json``: the descriptor set of the .proto as it is now, in
protobuf's JSON form, which ``buf breaking`` reads as an image. It is the published contract that
``.ci/run`` checks every change against (``buf breaking proto --against proto/published_contract.json``),
and ``contract_breaks`` is the test suite's own (narrower) version of that check, for machines without
buf. Run it when a release publishes the contract, never to silence a breaking change.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, json_format

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILE = "smcs/v1/router.proto"
OUT_DIR = Path(__file__).resolve().parent / "_proto"
GENERATED = ("router_pb2.py", "router_pb2.pyi", "router_pb2_grpc.py")
PUBLISHED = "published_contract.json"
"""The published contract's descriptor set, in ``PROTO_ROOT`` (see the module)."""


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


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The .proto compiled into a descriptor set (no source info: comments are not part of the contract)."""
    from grpc_tools import protoc  # build-time tool, imported only here

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "set.binpb"
        status = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}", str(PROTO_ROOT / PROTO_FILE)])
        if status != 0:
            raise SystemExit(f"protoc failed with status {status}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def published() -> descriptor_pb2.FileDescriptorSet:
    """The published contract (``PUBLISHED``)."""
    return json_format.Parse((PROTO_ROOT / PUBLISHED).read_text(), descriptor_pb2.FileDescriptorSet())


def contract_breaks(old: descriptor_pb2.FileDescriptorSet, new: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """How ``new`` breaks ``old`` on the wire or in JSON: a message, field, enum value, service or method
    of ``old`` that ``new`` lacks or changed (number, type, label, name, JSON name, oneof, streaming), or a
    changed file option. Additions are not breaks. ``buf breaking`` (FILE) checks this and more."""
    was, now = _symbols(old), _symbols(new)
    breaks = [f"{name}: deleted" for name in was if name not in now]
    breaks += [f"{name}: was {was[name]}, now {now[name]}" for name in was if name in now and was[name] != now[name]]
    return breaks


def _symbols(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Every element of the contract by full name, with what a peer relies on about it, as text."""
    symbols: dict[str, str] = {}

    def message(m: descriptor_pb2.DescriptorProto, scope: str) -> None:
        name = f"{scope}.{m.name}"
        symbols[name] = "message"
        for f in m.field:
            oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") and not f.proto3_optional else ""
            symbols[f"{name}.{f.name}"] = (
                f"field {f.number} {descriptor_pb2.FieldDescriptorProto.Type.Name(f.type)} {f.type_name} "
                f"{descriptor_pb2.FieldDescriptorProto.Label.Name(f.label)} json={f.json_name} "
                f"optional={f.proto3_optional} oneof={oneof}"
            )
        for nested in m.nested_type:
            message(nested, name)
        for e in m.enum_type:
            enum(e, name)

    def enum(e: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        symbols[f"{scope}.{e.name}"] = "enum"
        for v in e.value:
            symbols[f"{scope}.{e.name}.{v.name}"] = f"value {v.number}"

    for file in files.file:
        symbols[file.name] = f"file package={file.package} options={json_format.MessageToJson(file.options, indent=None)}"
        for m in file.message_type:
            message(m, file.package)
        for e in file.enum_type:
            enum(e, file.package)
        for s in file.service:
            symbols[f"{file.package}.{s.name}"] = "service"
            for method in s.method:
                symbols[f"{file.package}.{s.name}.{method.name}"] = (
                    f"rpc {method.input_type} -> {method.output_type} "
                    f"client_streaming={method.client_streaming} server_streaming={method.server_streaming}"
                )
    return symbols


def main(argv: list[str] | None = None) -> int:
    """Write the stubs, or with ``--check`` report whether the committed ones are up to date, or with
    ``--publish`` write the published contract."""
    parser = argparse.ArgumentParser(prog="python -m smcs.proto_gen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="fail if the committed stubs are out of date")
    what.add_argument("--publish", action="store_true", help=f"write proto/{PUBLISHED}: the contract as it is now")
    args = parser.parse_args(argv)
    if args.publish:
        (PROTO_ROOT / PUBLISHED).write_text(json_format.MessageToJson(descriptor_set(), indent=1) + "\n")
        return 0
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
