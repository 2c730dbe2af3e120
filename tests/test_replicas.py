"""Router replicas: several servers over one bank directory behind one round-robin client.

The client side (target forms, round_robin in the service config) and the per-request check of the
bank's ``CURRENT`` are tested in-process; the ``slow`` tests run three real ``smcs serve`` processes on
127.0.0.1 over one bank, count which replica answered through each one's ``/metrics`` port, kill one
with SIGKILL under load, and write through one replica while reading through the others. Each process
binds gRPC and metrics ports 0 and the test reads the ports it bound from the lines it prints at start.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

import smcs.service.state as state_module
from load_harness import SmcsServe
from service_harness import (
    DIM,
    N_MODELS,
    POLICY,
    expect_rpc_error,
    fresh_bank,  # noqa: F401 (fixture)
    make_bank,
    make_config,
    queries_for,
    running_server,
    wait_until,
)
from smcs import Bank, Router
from smcs.bank import ModelInfo, Question
from smcs.cli.main import main
from smcs.client import Client, NewQuestion, _channel_options, channel_target
from support.decisions import assert_same_decision
from support.metrics import requests, scrape

N_REPLICAS = 3


# ------------------------------------------------------------------------------------ client targets


@pytest.mark.parametrize(
    "target, expected",
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("localhost:50051", "localhost:50051"),  # one target: any name gRPC resolves
        ("dns:///smcs.internal:50051", "dns:///smcs.internal:50051"),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),  # a gRPC URI: commas and all
        (["127.0.0.1:5001", "127.0.0.1:5002"], "ipv4:127.0.0.1:5001,127.0.0.1:5002"),
        (("10.0.0.1:5001",), "10.0.0.1:5001"),
        ("127.0.0.1:5001, 127.0.0.1:5002,127.0.0.1:5003", "ipv4:127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003"),
        ("[::1]:5001,[fe80::1]:5002", "ipv6:[::1]:5001,[fe80::1]:5002"),
    ],
)
def test_targets_become_one_grpc_target(target, expected):
    assert channel_target(target) == expected


@pytest.mark.parametrize(
    "target, fragments",
    [
        ("127.0.0.1:5001,", ["target[1]", "''"]),
        ([], ["target is empty"]),
        (["127.0.0.1:5001", 5002], ["target[1]", "5002"]),
        ("127.0.0.1:5001,replica-2:5002", ["target[1]", "'replica-2:5002'", "dns:///"]),
        ("127.0.0.1:5001,127.0.0.1:http", ["target[1]", "127.0.0.1:http"]),
        ("127.0.0.1:5001,127.0.0.1:70000", ["target[1]", "70000"]),
        ("127.0.0.1:5001,::1:5002", ["target[1]", "'::1:5002'"]),  # IPv6 needs brackets
        ("127.0.0.1:5001,[::1]:5002", ["mixes IPv4 and IPv6", "[::1]:5002"]),
    ],
)
def test_bad_targets_are_named(target, fragments):
    with pytest.raises(ValueError) as info:
        channel_target(target)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_the_cli_checks_server_lists_when_parsing(capsys):
    with pytest.raises(SystemExit) as info:
        main(["health", "--server", "127.0.0.1:5001,replica-2:5002"])
    assert info.value.code == 2
    assert "argument --server: target[1] is 'replica-2:5002'" in capsys.readouterr().err


def test_tls_to_a_list_of_addresses_is_refused_naming_the_way_out():
    with pytest.raises(ValueError) as info:
        Client(["127.0.0.1:5001", "127.0.0.1:5002"], root_certificates=b"")
    assert "ipv4:127.0.0.1:5001,127.0.0.1:5002" in str(info.value) and "dns:///" in str(info.value)


@pytest.mark.parametrize("retries", [0, 3])
def test_every_channel_balances_round_robin_and_retries_only_when_asked(retries):
    options = dict(_channel_options(retries))
    config = json.loads(options["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert options["grpc.enable_retries"] == (1 if retries else 0)
    assert ("methodConfig" in config) == (retries > 0)
    if retries:
        assert config["methodConfig"][0]["retryPolicy"]["maxAttempts"] == retries + 1


def _route_count(handle) -> float:
    value = handle.running.metrics.registry.get_sample_value("smcs_requests_total", {"method": "Route", "code": "OK"})
    return value or 0.0


def test_a_client_of_two_servers_spreads_its_calls(fresh_bank):
    query = queries_for(fresh_bank, 1)[0]
    with running_server(fresh_bank) as first, running_server(fresh_bank) as second:
        with Client(f"{first.target},{second.target}", retries=0) as c:

            def both_answered() -> bool:
                c.route(embedding=query, seed=1)
                return min(_route_count(first), _route_count(second)) > 0

            wait_until(both_answered, timeout=30, interval=0.0, what="both servers to answer a call")
            before = (_route_count(first), _route_count(second))
            for seed in range(10):
                c.route(embedding=query, seed=seed)
        # round robin over two ready servers: strict alternation
        assert (_route_count(first) - before[0], _route_count(second) - before[1]) == (5, 5)


# -------------------------------------------------------------------------- the per-request version check


def test_a_version_committed_elsewhere_is_served_on_the_next_request(fresh_bank):
    with running_server(fresh_bank) as handle, handle.client(retries=0) as c:
        original = Bank.open(fresh_bank)
        assert c.bank_info().version == original.version
        newer = original.append_questions(np.ones((1, DIM), dtype=np.float32), [Question(id="outside", text="t")])
        decision = c.route(embedding=np.ones(DIM, dtype=np.float32), seed=1, include_support=True)
        assert decision.bank_version == newer.version and decision.support_ids[0] == "outside"
        newest = newer.add_model(ModelInfo(name="outside-model"))
        info = c.bank_info()
        assert (info.version, info.n_models) == (newest.version, N_MODELS + 1)


def test_the_check_can_be_turned_off(fresh_bank):
    with running_server(fresh_bank, make_config(check_current=False)) as handle, handle.client(retries=0) as c:
        original = Bank.open(fresh_bank)
        newer = original.add_model(ModelInfo(name="outside-model"))
        assert c.bank_info().version == original.version
        assert c.route(embedding=original.embeddings[3], seed=1).bank_version == original.version
        assert c.reload().version == newer.version
        assert c.bank_info().version == newer.version


def test_a_broken_current_keeps_the_old_version_until_current_changes_again(fresh_bank):
    query = queries_for(fresh_bank, 1)[0]
    original = Bank.open(fresh_bank)
    with running_server(fresh_bank) as handle, handle.client(retries=0) as c:
        (fresh_bank / "CURRENT").write_text("v000099\n")  # names a version that is not there
        for _ in range(3):  # every request is served, over the version that loaded last
            assert_same_decision(c.route(embedding=query, seed=1), Router(original, POLICY).route(query, seed=1), original)
        expect_rpc_error(c.reload, grpc.StatusCode.FAILED_PRECONDITION, "v000099")
        (fresh_bank / "CURRENT").write_text(f"{original.version}\n")
        newer = Bank.open(fresh_bank).add_model(ModelInfo(name="after-the-fault"))
        assert c.bank_info().version == newer.version


def test_a_request_cancelled_while_the_new_version_loads_does_not_cancel_the_load(fresh_bank, monkeypatch):
    loads: list[str] = []
    loading = threading.Event()
    release = threading.Event()
    original_load = state_module.Snapshot.load

    def slow_load(bank, policy, embedder):
        loads.append(bank.version)
        loading.set()
        release.wait(30)
        return original_load(bank, policy, embedder)

    with running_server(fresh_bank) as handle, handle.client(retries=0) as c:
        monkeypatch.setattr(state_module.Snapshot, "load", staticmethod(slow_load))
        newer = Bank.open(fresh_bank).add_model(ModelInfo(name="outside-model"))
        with pytest.raises(grpc.RpcError) as info:
            c.bank_info(timeout=0.5)  # waits for the new version, and its deadline passes first
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and loading.wait(30)
        release.set()
        assert c.bank_info(timeout=30).version == newer.version
        assert loads == [newer.version]  # the one load the first request started, finished for the second


# --------------------------------------------------------------------------------- three real replicas


@dataclass
class Replica:
    """One ``smcs serve`` process (``[metrics] port = 0``)."""

    server: SmcsServe

    @property
    def target(self) -> str:
        return self.server.target

    @property
    def metrics_port(self) -> int:
        """The ``/metrics`` port the process reported (once ``wait_serving`` returned)."""
        assert self.server.metrics_port is not None, "the replica reported no metrics port"
        return self.server.metrics_port

    @property
    def process(self) -> subprocess.Popen[str]:
        return self.server.process

    def routes(self) -> float:
        """Route calls this replica answered OK, from its ``/metrics``."""
        return requests(scrape(self.metrics_port)).get(("Route", "OK"), 0.0)


def _config_file(path: Path) -> Path:
    path.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 0\n\n'
        f"[policy]\nk = {POLICY.k}\nn_base = {POLICY.n_base}\nn = {POLICY.n}\nthreads = 1\n\n"
        '[embedder]\nkind = "none"\n\n'
        '[metrics]\nhost = "127.0.0.1"\nport = 0\n'
    )
    return path


@contextlib.contextmanager
def replicas(bank: Path, scratch: Path, n: int = N_REPLICAS) -> Iterator[list[Replica]]:
    """``n`` ``smcs serve`` processes over ``bank``, each on ports of its own (gRPC and metrics ports 0,
    read from what each prints), started together; all stopped at the end (killed if need be)."""
    started: list[Replica] = []
    try:
        for i in range(n):
            config = _config_file(scratch / f"replica-{i}.toml")
            started.append(Replica(SmcsServe(config, bank, scratch / f"replica-{i}.log")))
        for replica in started:
            replica.server.wait_serving()
            assert replica.server.metrics_port, f"replica {replica.target} printed no metrics line"
        yield started
    finally:
        for replica in started:
            replica.server.stop()


@pytest.fixture(scope="module")
def replica_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replicas") / "bank"
    make_bank(path)
    return path


@pytest.fixture(scope="module")
def three(replica_bank: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """Three replicas over ``replica_bank`` (module-wide; no test kills one of these)."""
    with replicas(replica_bank, tmp_path_factory.mktemp("replica-logs")) as started:
        yield started


@pytest.mark.slow
def test_calls_are_spread_over_every_replica(three, replica_bank):
    bank = Bank.open(replica_bank)
    router = Router(bank, POLICY)
    queries = queries_for(replica_bank, 30)
    before = [r.routes() for r in three]
    sent = 0
    with Client([r.target for r in three]) as c:
        for _ in range(20):  # until every replica has answered (round robin starts on the first one ready)
            for i, query in enumerate(queries):
                assert_same_decision(c.route(embedding=query, seed=i), router.route(query, seed=i), bank)
            sent += len(queries)
            answered = [r.routes() - b for r, b in zip(three, before)]
            if min(answered) > 0:
                break
    assert min(answered) > 0, answered
    assert sum(answered) == sent


@pytest.mark.slow
def test_an_append_through_one_replica_is_seen_by_every_other_on_its_next_request(three, replica_bank):
    writer, *readers = three
    clients = [Client(r.target, retries=0) for r in three]
    try:
        query = queries_for(replica_bank, 1)[0]
        for c in clients:
            assert c.route(embedding=query, seed=1).bank_version == Bank.open(replica_bank).version
        appended = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
        write = clients[0].append_questions([NewQuestion(id="via-replica-0", text="t", embedding=appended)])
        for c in clients[1:]:
            decision = c.route(embedding=appended, seed=1, include_support=True)
            assert decision.bank_version == write.version and decision.support_ids[0] == "via-replica-0"
        # and a version committed by another process altogether (here: this one)
        outside = Bank.open(replica_bank).add_model(ModelInfo(name="outside-model"))
        for c in clients:
            info = c.bank_info()
            assert (info.version, info.n_models) == (outside.version, N_MODELS + 1)
    finally:
        for c in clients:
            c.close()


@pytest.mark.slow
def test_a_replica_killed_mid_run_fails_no_request(tmp_path):
    bank_path = tmp_path / "bank"
    make_bank(bank_path)
    queries = queries_for(bank_path, 8)
    with replicas(bank_path, tmp_path) as (victim, *survivors):
        stop = threading.Event()
        done = [0]
        failures: list[BaseException] = []
        lock = threading.Lock()

        def load(client: Client, i: int) -> None:
            while not stop.is_set():
                try:
                    client.route(embedding=queries[i], seed=i)
                except BaseException as exc:  # noqa: BLE001 - every failure is reported below
                    failures.append(exc)
                with lock:
                    done[0] += 1

        with Client([r.target for r in (victim, *survivors)], timeout=30) as client:
            threads = [threading.Thread(target=load, args=(client, i)) for i in range(4)]
            for t in threads:
                t.start()
            try:
                wait_until(lambda: done[0] >= 100 and victim.routes() > 0, timeout=60, what="load on every replica")
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(30)
                at_kill, survivors_at_kill = done[0], [r.routes() for r in survivors]
                wait_until(lambda: done[0] >= at_kill + 300, timeout=60, what="300 calls after the kill")
            finally:
                stop.set()
                for t in threads:
                    t.join(60)
        assert not failures, failures[:3]
        assert all(r.routes() > n for r, n in zip(survivors, survivors_at_kill))


def test_a_record_made_by_another_process_is_followed_without_reading_the_bank_again(fresh_bank, tmp_path, monkeypatch):
    """A schema 2 bank: ``smcs bank record`` in another process commits a version; the server's next
    request routes on it, with the new outcome in its votes, followed from the version it held
    (``Bank.refresh``) without opening the bank afresh."""
    original = Bank.open(fresh_bank)
    assert original.segments is not None  # the layout whose reload reads only what changed
    query = queries_for(fresh_bank, 1)[0]
    full_loads: list[str] = []
    real_load = Bank._load.__func__

    def counted_load(cls: type[Bank], root: Path, name: str) -> Bank:
        full_loads.append(name)
        return real_load(cls, root, name)

    with running_server(fresh_bank) as handle, handle.client(retries=0) as c:
        before = c.route(embedding=query, seed=1, include_support=True)
        nearest = before.support_ids[0]
        model = original.model_names[0]
        column = [q.id for q in original.questions].index(nearest)
        flipped = 1 - int(original.capability[0, column] == 1)
        records = tmp_path / "records.jsonl"
        records.write_text(json.dumps({"model": model, "id": nearest, "outcome": flipped}) + "\n")
        monkeypatch.setattr(Bank, "_load", classmethod(counted_load))
        subprocess.run([sys.executable, "-m", "smcs.cli", "bank", "record", str(fresh_bank), str(records)], check=True, capture_output=True, timeout=120)
        after = c.route(embedding=query, seed=1, include_support=True)
        assert full_loads == []  # the server followed the new version; it did not load it afresh
        newer = Bank.open(fresh_bank)
        assert after.bank_version == newer.version != before.bank_version and newer.capability[0, column] == flipped
        assert_same_decision(after, Router(newer, POLICY).route(query, seed=1), newer)
