"""Prometheus metrics of the service: with ``[metrics] port`` set the server serves ``/metrics`` whose
request counters (by method and status code), latency histograms, Route stage histograms and bank gauges
match the calls made; without it nothing listens; the port is freed when the server stops; ``[metrics]``
decodes and validates like ``[server]``.

Every server here binds ``[metrics] port = 0`` and the test reads the port it reports
(``RunningServer.metrics_port``); only the restart test asks for a given port: the one its first server
was given and has just freed."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import msgspec
import pytest
from support.metrics import requests, scrape
from service_harness import (
    N_MODELS,
    N_QUESTIONS,
    ServerHandle,
    expect_rpc_error,
    fresh_bank,  # noqa: F401 - a fixture
    make_bank,
    make_config,
    queries_for,
    raw_stub,
    running_server,
)

from smcs._proto import router_pb2 as pb
from smcs.config import AuthConfig, ConfigError, MetricsConfig, load_config

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
COUNT_PATIENCE_S = 10.0





def metrics_config(port: int = 0, **kwargs):
    return msgspec.structs.replace(make_config(**kwargs), metrics=MetricsConfig(host="127.0.0.1", port=port))





def value(families: dict[str, list], family: str, sample: str, **labels: str) -> float:
    """The value of the one sample named ``sample`` of ``family`` with exactly these labels (0 if none)."""
    found = [s.value for s in families.get(family, []) if s.name == sample and s.labels == labels]
    assert len(found) <= 1, (family, sample, labels, found)
    return found[0] if found else 0.0





def assert_counted(port: int, expected: dict[tuple[str, str], float]) -> None:
    """The request counters scraped from ``port`` reach ``expected``: a call is counted when its handler has
    finished, which may trail the client's receipt of the status by a moment."""
    deadline = time.monotonic() + COUNT_PATIENCE_S
    while (counted := requests(scrape(port))) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counted == expected


def assert_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any server would: TIME_WAIT is not a listener
        sock.bind(("127.0.0.1", port))
        sock.listen()


@contextlib.contextmanager
def metrics_server(bank_path: Path, **kwargs) -> Iterator[ServerHandle]:
    """A server with ``[metrics] port = 0``; ``handle.running.metrics_port`` is the port it bound."""
    with running_server(bank_path, metrics_config(0, **kwargs)) as handle:
        port = handle.running.metrics_port
        assert port is not None and port > 0
        yield handle
    assert_port_free(port)


def test_counters_histograms_and_gauges_match_the_calls(fresh_bank):
    queries = queries_for(fresh_bank, 3)
    with metrics_server(fresh_bank) as server, raw_stub(server.target) as stub:
        for query in queries:
            stub.Route(pb.RouteRequest(embedding=pb.Embedding(values=query.tolist()), seed=1), timeout=10)
        expect_rpc_error(lambda: stub.Route(pb.RouteRequest(embedding=pb.Embedding(values=[1.0] * 5)), timeout=10), INVALID)  # wrong dimension
        expect_rpc_error(
            lambda: stub.Route(pb.RouteRequest(question="what is 2 + 2?"), timeout=10), grpc.StatusCode.FAILED_PRECONDITION
        )
        info = stub.BankInfo(pb.BankInfoRequest(), timeout=10).bank
        expect_rpc_error(
            lambda: list(stub.Answer(pb.AnswerRequest(embedding=pb.Embedding(values=queries[0].tolist())), timeout=10)),
            grpc.StatusCode.INVALID_ARGUMENT,  # a stream that ends before its first message: no question
        )
        assert_counted(
            server.running.metrics_port,
            {
                ("Route", "OK"): 3,
                ("Route", "INVALID_ARGUMENT"): 1,
                ("Route", "FAILED_PRECONDITION"): 1,
                ("BankInfo", "OK"): 1,
                ("Answer", "INVALID_ARGUMENT"): 1,
            },
        )
        families = scrape(server.running.metrics_port)
        hist = "smcs_request_seconds"
        assert value(families, hist, f"{hist}_count", method="Route") == 5
        assert value(families, hist, f"{hist}_count", method="BankInfo") == 1
        assert value(families, hist, f"{hist}_count", method="Answer") == 1
        assert value(families, hist, f"{hist}_bucket", method="Route", le="+Inf") == 5
        assert value(families, hist, f"{hist}_sum", method="Route") > 0
        stages = "smcs_route_stage_seconds"
        # route and respond: the three good calls (the refusals end before them); embed: the one text query
        assert value(families, stages, f"{stages}_count", stage="route") == 3
        assert value(families, stages, f"{stages}_count", stage="respond") == 3
        assert value(families, stages, f"{stages}_count", stage="embed") == 1
        assert value(families, "smcs_in_flight", "smcs_in_flight") == 0
        assert (info.n_questions, info.n_models) == (N_QUESTIONS, N_MODELS)
        assert value(families, "smcs_bank_questions", "smcs_bank_questions") == N_QUESTIONS
        assert value(families, "smcs_bank_models", "smcs_bank_models") == N_MODELS
        assert value(families, "smcs_bank_version_info", "smcs_bank_version_info", version=info.version) == 1

        # a bank write swaps the snapshot: the gauges follow it
        written = stub.AddModel(pb.AddModelRequest(name="model-new"), timeout=30)
        families = scrape(server.running.metrics_port)
        assert value(families, "smcs_bank_models", "smcs_bank_models") == N_MODELS + 1
        assert value(families, "smcs_bank_version_info", "smcs_bank_version_info", version=written.version) == 1
        assert written.version != info.version
        assert requests(families)[("AddModel", "OK")] == 1


def test_auth_refusals_are_counted(fresh_bank):
    auth = AuthConfig(query_tokens=["q"], admin_tokens=["a"])
    with metrics_server(fresh_bank, auth=auth) as server, raw_stub(server.target) as stub:
        expect_rpc_error(lambda: stub.BankInfo(pb.BankInfoRequest(), timeout=10), grpc.StatusCode.UNAUTHENTICATED)
        stub.BankInfo(pb.BankInfoRequest(), timeout=10, metadata=(("authorization", "Bearer q"),))
        expect_rpc_error(
            lambda: stub.Reload(pb.ReloadRequest(), timeout=10, metadata=(("authorization", "Bearer q"),)),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert_counted(
            server.running.metrics_port,
            {("BankInfo", "UNAUTHENTICATED"): 1, ("BankInfo", "OK"): 1, ("Reload", "PERMISSION_DENIED"): 1},
        )


def test_health_and_reflection_are_not_counted_and_servers_count_apart(fresh_bank, tmp_path):
    other_bank = tmp_path / "other"
    make_bank(other_bank, n_questions=200, seed=3)
    with metrics_server(fresh_bank) as first, metrics_server(other_bank) as second:
        with first.client() as client:
            assert client.health()
            client.bank_info()
        assert_counted(first.running.metrics_port, {("BankInfo", "OK"): 1})
        families = scrape(second.running.metrics_port)
        assert requests(families) == {}
        assert value(families, "smcs_bank_questions", "smcs_bank_questions") == 200


def test_the_metrics_port_is_freed_on_stop_and_can_serve_again(fresh_bank):
    asked = 0  # the first server picks a free port; the second asks for that one (``port = N``) once it is freed
    for _ in range(2):
        with running_server(fresh_bank, metrics_config(asked)) as server, raw_stub(server.target) as stub:
            port = server.running.metrics_port
            assert port is not None and port > 0 and asked in (0, port)
            asked = port
            stub.BankInfo(pb.BankInfoRequest(), timeout=10)
            assert_counted(port, {("BankInfo", "OK"): 1})
        assert_port_free(port)


def test_port_zero_binds_a_free_port_that_the_server_reports(fresh_bank, tmp_path, caplog):
    metrics = _load(tmp_path, "[metrics]\nport = 0\n").metrics
    assert metrics == MetricsConfig(host="127.0.0.1", port=0)
    config = msgspec.structs.replace(make_config(), metrics=metrics)
    with caplog.at_level(logging.INFO, logger="smcs.service.server"):
        with running_server(fresh_bank) as server:  # no [metrics] port: no listener, nothing reported
            assert server.config.metrics.port is None and server.running.metrics_port is None
        assert not [m for m in caplog.messages if "metrics on" in m]
        with running_server(fresh_bank, config) as server, raw_stub(server.target) as stub:
            port = server.running.metrics_port
            assert port is not None and port > 0
            assert f"smcs metrics on http://127.0.0.1:{port}/metrics" in caplog.messages
            stub.BankInfo(pb.BankInfoRequest(), timeout=10)
            assert_counted(port, {("BankInfo", "OK"): 1})
    assert_port_free(port)


def test_a_taken_metrics_port_stops_start_up(fresh_bank):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError), running_server(fresh_bank, metrics_config(taken.getsockname()[1])):
            pass


def test_metrics_are_off_by_default(default_server):
    assert default_server.config.metrics == MetricsConfig()
    assert default_server.config.metrics.port is None
    assert default_server.running.metrics_port is None
    assert default_server.running._exposition is None  # no listener started at all
    # recording still happens in process; only the listener is off
    assert default_server.running.metrics.registry.get_sample_value("smcs_in_flight") == 0


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics") / "bank"
    make_bank(path, n_questions=100)
    with running_server(path) as handle:
        yield handle


# ------------------------------------------------------------------------------------------ config


def _load(tmp_path, text: str):
    path = tmp_path / "smcs.toml"
    path.write_text(text)
    return load_config(path, environ={})


def test_metrics_table_decodes(tmp_path):
    assert _load(tmp_path, "").metrics == MetricsConfig(host="127.0.0.1", port=None)
    assert _load(tmp_path, "[metrics]\nhost = \"127.0.0.1\"\n").metrics.port is None  # a table without a port: off
    assert _load(tmp_path, "[metrics]\nport = 0\n").metrics.port == 0  # any free port, not off
    config = _load(tmp_path, '[metrics]\nhost = "0.0.0.0"\nport = 9464\n')
    assert config.metrics == MetricsConfig(host="0.0.0.0", port=9464)
    assert _load(tmp_path, "[metrics]\nport = 65535\n").metrics.port == 65535


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[metrics]\nport = 70000\n", ["port must be in [0, 65535]", "$.metrics"]),
        ("[metrics]\nport = -1\n", ["port must be in [0, 65535]", "$.metrics"]),
        ('[metrics]\nport = "9464"\n', ["Expected `int", "$.metrics.port"]),  # msgspec: `int | null` (unset)
        ("[metrics]\npath = '/m'\n", ["path", "$.metrics"]),
    ],
)
def test_metrics_table_is_validated(tmp_path, text, fragments):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    for fragment in fragments:
        assert fragment in str(info.value)
