"""The committed stubs in smcs/_proto match proto/smcs/v1/router.proto, and the check notices when not."""

from __future__ import annotations

import shutil

import pytest

import smcs.proto_gen as proto_gen


def test_the_committed_stubs_match_the_proto():
    assert proto_gen.main(["--check"]) == 0


@pytest.fixture()
def stub_copy(tmp_path, monkeypatch):
    """A copy of the committed stubs that proto_gen reads and writes instead of smcs/_proto."""
    copy = tmp_path / "_proto"
    shutil.copytree(proto_gen.OUT_DIR, copy)
    monkeypatch.setattr(proto_gen, "OUT_DIR", copy)
    return copy


def test_the_check_passes_on_an_exact_copy(stub_copy):
    assert proto_gen.main(["--check"]) == 0


@pytest.mark.parametrize("name", proto_gen.GENERATED)
def test_the_check_detects_an_edited_stub(stub_copy, name, capsys):
    path = stub_copy / name
    path.write_text(path.read_text() + "\n# edited by hand\n")
    assert proto_gen.main(["--check"]) == 1
    assert name in capsys.readouterr().err


def test_the_check_detects_a_missing_stub(stub_copy, capsys):
    (stub_copy / "router_pb2_grpc.py").unlink()
    assert proto_gen.main(["--check"]) == 1
    assert "router_pb2_grpc.py" in capsys.readouterr().err


def test_the_check_detects_a_changed_proto(stub_copy, tmp_path, monkeypatch, capsys):
    proto_root = tmp_path / "proto"
    shutil.copytree(proto_gen.PROTO_ROOT, proto_root)
    proto = proto_root / proto_gen.PROTO_FILE
    proto.write_text(proto.read_text().replace("message ReloadRequest {}", "message ReloadRequest {\n  bool force = 1;\n}"))
    monkeypatch.setattr(proto_gen, "PROTO_ROOT", proto_root)
    assert proto_gen.main(["--check"]) == 1
    assert "router_pb2.py" in capsys.readouterr().err


def test_regenerating_writes_what_the_check_accepts(stub_copy):
    for name in proto_gen.GENERATED:
        (stub_copy / name).write_text("stale\n")
    assert proto_gen.main(["--check"]) == 1
    assert proto_gen.main([]) == 0
    assert proto_gen.main(["--check"]) == 0
    grpc_stub = (stub_copy / "router_pb2_grpc.py").read_text()
    assert "from . import router_pb2" in grpc_stub and "from smcs.v1 import" not in grpc_stub


def test_policy_overrides_carry_exactly_the_policy_fields_a_request_may_set():
    """One list of overridable policy fields (``smcs.core.policy.OVERRIDABLE``) serves the wire and the CLI;
    the .proto must name each, and nothing else besides ``allowed_models``."""
    from smcs._proto import router_pb2 as pb
    from smcs.core.policy import OVERRIDABLE

    fields = set(pb.PolicyOverrides.DESCRIPTOR.fields_by_name) - {"allowed_models"}
    assert fields == set(OVERRIDABLE)


def test_the_proto_keeps_every_element_of_the_published_contract():
    """What ``buf breaking`` checks in .ci/run, narrowed to what a peer of the published contract relies on
    (proto/published_contract.json): no message, field, enum value, service or method deleted or changed."""
    assert proto_gen.contract_breaks(proto_gen.published(), proto_gen.descriptor_set()) == []


def test_the_contract_check_notices_a_break_and_lets_additions_pass(tmp_path, monkeypatch):
    proto_root = tmp_path / "proto"
    shutil.copytree(proto_gen.PROTO_ROOT, proto_root)
    monkeypatch.setattr(proto_gen, "PROTO_ROOT", proto_root)
    proto = proto_root / proto_gen.PROTO_FILE
    text = proto.read_text()
    proto.write_text(text.replace("message ReloadRequest {}", "message ReloadRequest {\n  bool force = 1;\n}\nmessage Extra {}"))
    assert proto_gen.contract_breaks(proto_gen.published(), proto_gen.descriptor_set()) == []
    proto.write_text(text.replace("uint32 best = 4;", "uint64 best = 4;").replace("TASK_CODE = 4;", "TASK_CODE = 7;"))
    breaks = proto_gen.contract_breaks(proto_gen.published(), proto_gen.descriptor_set())
    assert len(breaks) == 2 and breaks[0].startswith("smcs.v1.ScoreResponse.best: was field 4 TYPE_UINT32")
    assert breaks[1] == "smcs.v1.Task.TASK_CODE: was value 4, now value 7"
    proto.write_text(text.replace("rpc Reload(ReloadRequest) returns (ReloadResponse);", ""))
    assert proto_gen.contract_breaks(proto_gen.published(), proto_gen.descriptor_set()) == ["smcs.v1.RouterService.Reload: deleted"]
    assert proto_gen.main(["--publish"]) == 0  # publishing makes the contract as it is now the baseline
    assert proto_gen.contract_breaks(proto_gen.published(), proto_gen.descriptor_set()) == []


def test_the_contract_names_its_packages_for_other_languages():
    from smcs._proto import router_pb2 as pb

    options = pb.DESCRIPTOR.GetOptions()
    assert (options.go_package, options.java_package, options.java_multiple_files, options.csharp_namespace) == (
        "github.com/smcs/smcs/gen/go/smcs/v1;smcsv1", "com.smcs.v1", True, "Smcs.V1")
    assert list(pb.DESCRIPTOR.services_by_name) == ["RouterService"]
