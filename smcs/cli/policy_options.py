"""The policy options of ``smcs route``, ``ask`` and ``demo``, derived once from ``Policy``: one option per
field a request may set (``smcs.core.policy.OVERRIDABLE``), typed by the field's annotation, described by
the field's entry in ``Policy``'s docstring, defaulting to unset (the server's or the paper's value)."""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any

import msgspec

from smcs.core.policy import OVERRIDABLE, Policy

_ATTRIBUTE = re.compile(r"^ {4}(?P<name>\w+): (?P<text>.*)$")


def field_docs(struct: type) -> dict[str, str]:
    """Each attribute's description in ``struct``'s docstring ``Attributes:`` section, on one line."""
    docs: dict[str, str] = {}
    name = None
    section = inspect.getdoc(struct) or ""
    for line in section.partition("Attributes:")[2].splitlines():
        match = _ATTRIBUTE.match(line)
        if match:
            name = match["name"]
            docs[name] = match["text"]
        elif name is not None and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        elif line.strip():
            name = None
    return docs


def _kind(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The type a field takes when it is set (``X | None`` gives ``X``)."""
    if isinstance(info, msgspec.inspect.UnionType):
        (kind,) = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return kind
    return info


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per overridable ``Policy`` field on ``parser`` (a bool field that defaults to true
    is ``--no-FIELD``), all unset unless given."""
    docs = field_docs(Policy)
    defaults = Policy()
    fields = {f.name: f for f in msgspec.inspect.type_info(Policy).fields}  # type: ignore[union-attr]
    group = parser.add_argument_group("policy (unset options keep the server's or the paper's defaults)")
    for name in OVERRIDABLE:
        kind = _kind(fields[name].type)
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        text = docs[name].replace("``", "").replace("%", "%%")
        options: dict[str, Any] = {"dest": name, "help": f"{text} (default: {default})"}
        if isinstance(kind, msgspec.inspect.BoolType):
            flag = f"--no-{name.replace('_', '-')}" if default else flag
            options.update(action="store_const", const=not default, help=f"{text} (this flag sets it to {not default})")
        elif isinstance(kind, msgspec.inspect.LiteralType):
            options.update(choices=kind.values)
        elif isinstance(kind, msgspec.inspect.IntType):
            options.update(type=int)
        elif isinstance(kind, msgspec.inspect.FloatType):
            options.update(type=float)
        elif not isinstance(kind, msgspec.inspect.StrType):
            raise TypeError(f"Policy.{name}: no command-line form for {kind!r}")
        group.add_argument(flag, **options)


def policy_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The policy options the user set on the command line."""
    return {name: getattr(args, name) for name in OVERRIDABLE if getattr(args, name, None) is not None}
