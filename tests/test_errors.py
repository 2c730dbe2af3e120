"""One error tree: every exception class smcs defines derives from ``SmcsError``; refusals of bad input are
``InputError``s naming the field; the command line prints those as ``smcs: error:`` (status 2) and anything
else as an internal error (status 70, the traceback with ``SMCS_TRACEBACK=1``)."""

from __future__ import annotations

import ast
import builtins
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

import smcs
from smcs import Bank, Policy, Router
from smcs.bank import BankError, BankFormatError
from smcs.cli.main import main
from smcs.config import ConfigError, ServerConfig, load_config
from smcs.core.router import RouteCall
from smcs.errors import InputError, SmcsError
from smcs.grading.checkers import check_answer
from smcs.ingest.builder.journal import JournalMismatch
from smcs.ingest.importers import read_import
from smcs.synthetic import create_clustered_bank

ROOT = Path(smcs.__file__).resolve().parent
CLI_MAIN = importlib.import_module("smcs.cli.main")  # the module: ``smcs.cli.main`` the attribute is its function

OUTSIDE_THE_TREE: dict[str, str] = {}
"""``module:Class`` of exception classes defined in smcs that may stay outside ``SmcsError``, each with the
reason (a private helper that never escapes its module). None today."""


def _sources() -> dict[str, Path]:
    """The smcs modules by dotted name, ``smcs/_proto`` (generated) left out."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] == "_proto":
            continue
        found[".".join(("smcs", *parts)).removesuffix(".__init__")] = path
    return found


def _base_name(node: ast.expr) -> str:
    """The last name of a base class expression (``grpc.RpcError`` -> ``RpcError``)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript):  # Generic[T] and the like
        return _base_name(node.value)
    return ast.unparse(node)


def _is_builtin_exception(name: str) -> bool:
    value = getattr(builtins, name, None)
    return isinstance(value, type) and issubclass(value, BaseException)


def _exception_classes() -> dict[str, list[str]]:
    """Every class that is an exception (a builtin exception, a name ending in Error/Exception, or another
    such class of smcs among its bases), as ``module:Class`` -> its base names."""
    classes: dict[str, tuple[str, list[str]]] = {}
    for module, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                classes[f"{module}:{node.name}"] = (node.name, [_base_name(b) for b in node.bases])
    names = {name for name, _ in classes.values()}
    exceptions = {
        key for key, (_, bases) in classes.items()
        if any(_is_builtin_exception(b) or b.endswith(("Error", "Exception")) for b in bases)
    }
    while True:  # subclasses of smcs's own exception classes, to a fixed point
        exception_names = {classes[key][0] for key in exceptions}
        more = {key for key, (_, bases) in classes.items() if key not in exceptions and set(bases) & exception_names}
        if not more:
            break
        exceptions |= more
    assert {classes[k][0] for k in exceptions} <= names
    return {key: classes[key][1] for key in sorted(exceptions)}


def test_every_exception_class_of_smcs_derives_from_smcs_error():
    classes = _exception_classes()
    by_name = {key.partition(":")[2]: bases for key, bases in classes.items()}
    assert "InputError" in by_name and "BankError" in by_name  # the walk sees the tree at all

    def in_tree(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "SmcsError":
            return True
        if name not in by_name or name in seen:
            return False
        return any(in_tree(base, seen | {name}) for base in by_name[name])

    outside = [key for key in classes if key.partition(":")[2] != "SmcsError" and not in_tree(key.partition(":")[2])]
    unexplained = sorted(set(outside) - set(OUTSIDE_THE_TREE))
    assert not unexplained, f"exception classes outside SmcsError (derive them from it, e.g. InputError): {unexplained}"
    stale = sorted(set(OUTSIDE_THE_TREE) - set(outside))
    assert not stale, f"OUTSIDE_THE_TREE lists classes that are gone or now in the tree: {stale}"


def test_the_cli_refuses_options_with_input_errors_not_bare_value_errors():
    """A bare ValueError from a command is reported as a bug; an option's refusal is an ``InputError``
    (argparse ``type=`` callbacks raise ``argparse.ArgumentTypeError``, which argparse reports). A broken
    invariant of the command line itself may raise ``TypeError``/``RuntimeError``: that one is a bug."""
    found = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if _base_name(raised) == "ValueError":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_the_input_kinds_are_input_errors_and_still_value_errors():
    for kind in (InputError, BankError, ConfigError, JournalMismatch):
        assert issubclass(kind, SmcsError) and issubclass(kind, ValueError)
    assert issubclass(BankError, InputError) and issubclass(ConfigError, InputError) and issubclass(JournalMismatch, InputError)
    assert issubclass(BankFormatError, SmcsError) and not issubclass(BankFormatError, InputError)


# ------------------------------------------------------------------------------------------ the command line


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "bank"
    create_clustered_bank(path, 200, 16, 4)
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--k", "0"], "smcs: error: k must be >= 1, got 0"),
        (["demo", "--queries", "0"], "smcs: error: --queries must be >= 1, got 0"),
        (["bank", "info", "/nonexistent/smcs-bank"], "/nonexistent/smcs-bank"),
    ],
)
def test_a_user_mistake_is_one_line_and_status_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("smcs: error: ") and message in err
    assert "Traceback" not in err and "internal error" not in err


def test_bad_route_input_reaches_the_user_as_an_error(bank_path, tmp_path, capsys):
    query = tmp_path / "q.npy"
    np.save(query, np.full(16, np.nan, dtype=np.float32))  # a kernel would refuse it too: the router names the field
    assert main(["route", "--bank", str(bank_path), "--embedding", str(query), "--k", "2"]) == 2
    assert capsys.readouterr().err == "smcs: error: embedding contains NaN or infinity\n"
    (tmp_path / "q.json").write_text('[1, "x"]')
    assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "q.json"), "--k", "2"]) == 2
    assert capsys.readouterr().err.startswith(f"smcs: error: --embedding {tmp_path / 'q.json'}: not a JSON list of numbers")
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    assert main(["route", "--bank", str(bank_path), "--embedding", str(tmp_path / "bad.npy"), "--k", "2"]) == 2
    assert capsys.readouterr().err.startswith(f"smcs: error: --embedding {tmp_path / 'bad.npy'}: not a .npy array")


def _run_raises(monkeypatch, exc: BaseException) -> None:
    def run(args):
        raise exc

    monkeypatch.setattr(CLI_MAIN, "_run_demo", run)


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (ValueError("boom"), "smcs: internal error: ValueError: boom"),
        (KeyError("model-x"), "smcs: internal error: KeyError: 'model-x'"),
        (TypeError("unsupported operand"), "smcs: internal error: TypeError: unsupported operand"),
    ],
)
def test_a_bug_is_an_internal_error_with_status_70(monkeypatch, capsys, exc, line):
    monkeypatch.delenv("SMCS_TRACEBACK", raising=False)
    _run_raises(monkeypatch, exc)
    assert main(["demo"]) == 70
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == line
    assert "bug in smcs" in lines[1] and "SMCS_TRACEBACK=1" in lines[1]
    assert "Traceback" not in err and "smcs: error:" not in err


def test_smcs_traceback_prints_the_traceback_of_a_bug(monkeypatch, capsys):
    monkeypatch.setenv("SMCS_TRACEBACK", "1")
    _run_raises(monkeypatch, ValueError("boom"))
    assert main(["demo"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("smcs: internal error: ValueError: boom\n")
    assert "Traceback (most recent call last)" in err and "in run" in err and err.rstrip().endswith("ValueError: boom")


@pytest.mark.parametrize(
    "exc",
    [InputError("--x is wrong"), BankFormatError("bank/v1 is truncated"), FileNotFoundError(2, "No such file", "f.jsonl")],
)
def test_smcs_errors_and_files_are_the_users_to_fix(monkeypatch, capsys, exc):
    monkeypatch.setenv("SMCS_TRACEBACK", "1")  # never a traceback for these
    _run_raises(monkeypatch, exc)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err == f"smcs: error: {exc}\n"


def test_an_interrupt_is_status_130(monkeypatch, capsys):
    _run_raises(monkeypatch, KeyboardInterrupt())
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------- the library's refusals


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": 0}, "k must be >= 1, got 0"),
        ({"k": 3, "k_drop": 3}, "k_drop must be smaller than k (3), got 3"),
        ({"gamma": 1.5}, "gamma must be in [0, 1], got 1.5"),
        ({"retrieval": "fuzzy"}, "retrieval must be one of"),
        ({"n_base": True}, "n_base must be an integer, got True"),
    ],
)
def test_a_bad_policy_field_is_an_input_error_naming_it(fields, message):
    with pytest.raises(InputError) as info:
        Policy(**fields)
    assert message in str(info.value)


def test_a_bad_config_value_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"port must be in \[0, 65535\], got 70000"):
        ServerConfig(port=70000)
    path = tmp_path / "smcs.toml"
    path.write_text("[server]\nworkers = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert isinstance(info.value, InputError)
    assert "workers must be >= 1, got 0" in str(info.value) and "$.server" in str(info.value)
    path.write_text("[policy]\nk_drop = 9\n")
    with pytest.raises(ConfigError, match=r"k_drop must be smaller than k .* - at `\$.policy`"):
        load_config(path, environ={})


def test_an_importer_given_a_malformed_file_raises_an_input_error_naming_it(tmp_path):
    path = tmp_path / "bench.csv"
    path.write_text("prompt,m\np,1.5\n")
    with pytest.raises(InputError, match=rf"^{path}:2: column 'm': '1.5' is not an outcome between 0 and 1$"):
        read_import("routerbench", path)
    union = tmp_path / "bank.json"
    union.write_text(json.dumps([{"question": "a", "model_res": {}}, {"model_res": {}}]))
    with pytest.raises(InputError, match="item 1: field 'question' is missing"):
        read_import("union", union)
    with pytest.raises(InputError, match="unknown import format 'csv'"):
        read_import("csv", path)


def test_a_checker_spec_of_the_wrong_task_is_an_input_error():
    with pytest.raises(InputError, match="task must be one of"):
        check_answer("riddle", "A", "A")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="tests are only for code questions, not math"):
        check_answer("math", "4", "4", tests="assert True")


def test_the_router_refuses_bad_input_before_a_kernel_does(bank_path):
    router = Router(Bank.open(bank_path), Policy(k=2))
    for embedding, message in [
        (np.full(16, np.nan), "embedding contains NaN or infinity"),
        (np.ones(5), "embedding has dimension 5"),
        (np.ones((2, 16)), "embedding must be a 1-D vector"),
        (np.zeros(16), "embedding is a zero vector"),
        ([["x"]] * 16, "embedding must be a vector of numbers"),
    ]:
        with pytest.raises(InputError, match=message):
            router.route(embedding, seed=0)
    with pytest.raises(InputError, match="policy aggregator 'nobody' is not a model of the bank"):
        router.route(np.ones(16), policy=Policy(k=2, aggregator="nobody"))
    assert router.route(np.ones(16), policy=Policy(k=9)).k_clamped_from == 9  # clamped, not refused (issue 22)
    with pytest.raises(InputError, match="allowed_models names unknown models: 'nobody'"):
        router.route(np.ones(16), allowed_models=["nobody"])
    good, bad = router.route_many([RouteCall(np.ones(16), seed=1), RouteCall(np.ones(16), seed=-1)])
    assert good.seed == 1 and isinstance(bad, InputError) and "seed must be an integer" in str(bad)
