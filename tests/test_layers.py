"""The package's layers: each module imports only modules of its own or a lower layer, and the lightweight
entry points load no network stack."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import smcs

ROOT = Path(smcs.__file__).resolve().parent
MAPPED = {  # packages whose source lives outside smcs/ (pyproject's package-dir)
    "smcs.kernels": Path(importlib.import_module("smcs.kernels").__file__).resolve().parent,
    "smcs.bundled": Path(importlib.import_module("smcs.bundled").__file__).resolve().parent,
}

LAYERS = (
    ("smcs.kernels", "smcs.errors", "smcs.jsonl", "smcs.progress", "smcs.http_retry"),
    ("smcs.bank", "smcs.synthetic"),
    ("smcs.core",),
    ("smcs.grading",),
    ("smcs.embed", "smcs.backends"),
    ("smcs.ingest",),
    ("smcs.strategies",),
    ("smcs.config",),
    ("smcs.runtime",),
    ("smcs._proto", "smcs.wire"),
    ("smcs.eval", "smcs.data"),
    ("smcs.service", "smcs.client"),
    ("smcs.cli", "smcs.proto_gen", "smcs.bundled"),
    ("smcs",),
)
"""Lowest first. A module may import its own group, or any group of its own or a lower layer (groups of one
layer never import each other both ways, which the cycle check below catches)."""


def _modules() -> dict[str, Path]:
    found = {}
    for base, prefix in ((ROOT, "smcs"), *((path, name) for name, path in MAPPED.items())):
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if base == ROOT and parts[0] == "_proto":
                continue
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> set[str]:
    """The smcs modules (or packages) ``name`` imports, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.split(".")[0] == "smcs"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "smcs":
                continue
            submodules = {f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES}
            out |= submodules or {module}
    return out


def _group(module: str) -> str:
    """The most specific entry of ``LAYERS`` that ``module`` belongs to."""
    names = [g for layer in LAYERS for g in layer if module == g or module.startswith(g + ".")]
    assert names, f"{module} belongs to no layer: add it to LAYERS"
    return max(names, key=len)


LAYER_OF = {group: i for i, layer in enumerate(LAYERS) for group in layer}


def test_no_module_imports_a_higher_layer():
    upward = []
    for name, path in MODULES.items():
        here = _group(name)
        for target in _imported(name, path):
            there = _group(target)
            if LAYER_OF[there] > LAYER_OF[here]:
                upward.append(f"{name} ({here}) imports {target} ({there})")
    assert not upward, "\n".join(sorted(upward))


def test_the_groups_import_each_other_without_cycles():
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for target in _imported(name, path):
            if _group(target) != _group(name):
                edges.setdefault(_group(name), set()).add(_group(target))
    state: dict[str, int] = {}

    def visit(group: str, trail: list[str]) -> None:
        state[group] = 1
        for nxt in sorted(edges.get(group, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(trail + [group, nxt])}"
            if nxt not in state:
                visit(nxt, trail + [group])
        state[group] = 2

    for group in sorted(edges):
        if group not in state:
            visit(group, [])


def test_the_in_process_entry_points_load_no_network_stack():
    script = (
        "import sys\n"
        "import smcs.kernels\n"
        "assert 'grpc' not in sys.modules and 'aiohttp' not in sys.modules, 'smcs.kernels'\n"
        "from smcs import Bank, Policy, Router\n"
        "loaded = sorted(m for m in ('grpc', 'aiohttp') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "import os, numba\n"
        "assert os.environ.get('OMP_WAIT_POLICY') is None, 'importing set OMP_WAIT_POLICY'\n"
        "from smcs import Client\n"
        "assert 'grpc' in sys.modules\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
