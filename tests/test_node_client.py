"""The contract from another language: a Node.js client (@grpc/grpc-js and @grpc/proto-loader, loading
proto/smcs/v1/router.proto as it is) calls ServerInfo and Route and gets what the Python client gets.

Skipped unless node and the two npm packages are there: ``.ci/run`` installs them into ``.ci/node/``
beside buf (``npm install --prefix .ci/node @grpc/grpc-js @grpc/proto-loader``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from service_harness import POLICY, queries_for, shared_bank, shared_server  # noqa: F401 (fixtures)
from smcs import Bank, Router
from smcs.core import Policy

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / ".ci" / "node" / "node_modules"
CLIENT = Path(__file__).with_name("node_client.js")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not all((NODE_MODULES / "@grpc" / p).is_dir() for p in ("grpc-js", "proto-loader")),
    reason="node or .ci/node/node_modules/@grpc/{grpc-js,proto-loader} missing (.ci/run installs them)",
)


def test_a_node_client_routes_with_the_proto_file_alone(shared_server):
    bank = Bank.open(shared_server.bank_path)
    query = queries_for(shared_server.bank_path, 1)[0]
    run = subprocess.run(
        [shutil.which("node") or "node", str(CLIENT), shared_server.target, str(REPO / "proto"), json.dumps(query.tolist())],
        capture_output=True, text=True, timeout=60, env={"SMCS_NODE_MODULES": str(NODE_MODULES)},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    info, routed, refused = out["info"], out["routed"], out["refused"]
    assert (info["policy"]["k"], info["policy"]["retrieval"], info["scorer"]) == (POLICY.k, "RETRIEVAL_AUTO", "SCORER_VOTE")
    assert info["bank_version"] == bank.version and info["limits"]["max_concurrent_rpcs"] == 64
    local = Router(bank, Policy(k=3, n_base=POLICY.n_base, n=POLICY.n, retrieval="exact", scorer="vote")).route(query, seed=2**64 - 1)
    assert routed["seed"] == str(2**64 - 1)  # exact: a string, as the proto3 JSON mapping has it too
    assert [r["model"] for r in routed["referencers"]] == local.referencers
    assert [s["models"] for s in routed["subsets"]] == local.subsets
    assert [int(r) for r in routed["support"]["rows"]] == local.support_rows and routed["scorer"] == "SCORER_VOTE"
    assert refused["code"] == 3 and "embedding has 2 values" in refused["details"]  # INVALID_ARGUMENT
