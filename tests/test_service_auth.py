"""Bearer-token auth of the service: no, wrong or expired token → UNAUTHENTICATED, query tokens read,
admin tokens also write and reload, tokens with a future expiry work like plain ones, health and
reflection stay open, tokens never leak into error messages or logs, and the environment's tokens replace
the file's."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import grpc
import msgspec
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from service_harness import (
    DIM,
    POLICY,
    expect_rpc_error,
    make_bank,
    make_config,
    queries_for,
    raw_stub,
    running_server,
)
from smcs import Bank, Router
from smcs._proto import router_pb2 as pb
from smcs.client import Client, NewQuestion
from smcs.config import AuthConfig, ExpiringToken, load_config
from smcs.service.auth import BearerTokenInterceptor

QUERY_TOKEN = "query-secret-7f3a9c"
ADMIN_TOKEN = "admin-secret-b81e44"
WRONG_TOKEN = "wrong-secret-0d2c55"
EXPIRED_QUERY_TOKEN = "expired-query-secret-51c0de"
EXPIRED_ADMIN_TOKEN = "expired-admin-secret-9a4f17"
LIVE_QUERY_TOKEN = "live-query-secret-e2b806"
LIVE_ADMIN_TOKEN = "live-admin-secret-3d77aa"
SECRETS = (
    QUERY_TOKEN, ADMIN_TOKEN, WRONG_TOKEN, EXPIRED_QUERY_TOKEN, EXPIRED_ADMIN_TOKEN, LIVE_QUERY_TOKEN, LIVE_ADMIN_TOKEN,
)
PAST = datetime(2001, 1, 1, tzinfo=timezone.utc)
FUTURE = datetime(2999, 1, 1, tzinfo=timezone.utc)
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def auth_bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "bank"
    make_bank(path)
    return path


@pytest.fixture(scope="module")
def auth_server(auth_bank):
    # plain and expiring tokens mixed in both lists
    query_tokens = [
        QUERY_TOKEN, ExpiringToken(token=EXPIRED_QUERY_TOKEN, expires=PAST), "second-query-token",
        ExpiringToken(token=LIVE_QUERY_TOKEN, expires=FUTURE),
    ]
    admin_tokens = [
        ExpiringToken(token=LIVE_ADMIN_TOKEN, expires=FUTURE), ADMIN_TOKEN,
        ExpiringToken(token=EXPIRED_ADMIN_TOKEN, expires=PAST),
    ]
    config = make_config(auth=AuthConfig(query_tokens=query_tokens, admin_tokens=admin_tokens))
    with running_server(auth_bank, config) as handle:
        yield handle


@pytest.fixture(scope="module")
def query(auth_bank):
    return queries_for(auth_bank, 1)[0]


def _requests(query: np.ndarray) -> dict[str, object]:
    return {
        "Route": pb.RouteRequest(embedding=pb.Embedding(values=query.tolist()), seed=1),
        "Score": pb.ScoreRequest(embeddings=[pb.Embedding(values=[1.0, 0.0]), pb.Embedding(values=[0.5, 0.5])]),
        "BankInfo": pb.BankInfoRequest(),
        "Reload": pb.ReloadRequest(),
        "AppendQuestions": pb.AppendQuestionsRequest(
            questions=[pb.NewQuestion(id="never-written", text="t", embedding=pb.Embedding(values=query.tolist()))]
        ),
        "RecordOutcomes": pb.RecordOutcomesRequest(outcomes=[pb.Outcome(model="model-00", question_id="q1", value=1)]),
        "AddModel": pb.AddModelRequest(name="never-added"),
    }


ALL_METHODS = ["Route", "Score", "BankInfo", "Reload", "AppendQuestions", "RecordOutcomes", "AddModel"]
ADMIN_METHODS = ["Reload", "AppendQuestions", "RecordOutcomes", "AddModel"]

BAD_CREDENTIALS = {
    "missing": None,
    "wrong token": f"Bearer {WRONG_TOKEN}",
    "basic scheme": "Basic x",
    "basic scheme with a valid token": f"Basic {ADMIN_TOKEN}",
    "bearer without a token": "Bearer ",
    "token without a scheme": ADMIN_TOKEN,
    "token of another case": f"Bearer {QUERY_TOKEN.upper()}",
    "token with a suffix": f"Bearer {QUERY_TOKEN}x",
    "token prefix": f"Bearer {QUERY_TOKEN[:-1]}",
}


def _assert_no_secret(error: grpc.RpcError) -> None:
    text = f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()}"
    for secret in SECRETS:
        assert secret not in text
        assert secret.upper() not in text


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("method", ALL_METHODS + ["Answer"])
def test_bad_credentials_are_unauthenticated(auth_server, auth_bank, query, credentials, method):
    header = BAD_CREDENTIALS[credentials]
    metadata = None if header is None else (("authorization", header),)
    before = Bank.versions(auth_bank)
    with raw_stub(auth_server.target) as stub:
        if method == "Answer":
            request = pb.AnswerRequest(embedding=pb.Embedding(values=query.tolist()))
            call = lambda: list(stub.Answer(request, metadata=metadata, timeout=10))  # noqa: E731
        else:
            request = _requests(query)[method]
            call = lambda: getattr(stub, method)(request, metadata=metadata, timeout=10)  # noqa: E731
        error = expect_rpc_error(call, UNAUTHENTICATED, "bearer token")
    _assert_no_secret(error)
    assert Bank.versions(auth_bank) == before


def test_query_token_can_read(auth_server, auth_bank, query):
    bank = Bank.open(auth_bank)
    for token in (QUERY_TOKEN, "second-query-token", LIVE_QUERY_TOKEN):
        with Client(auth_server.target, token=token, retries=0) as c:
            decision = c.route(embedding=query, seed=5)
            local = Router(bank, POLICY).route(query, seed=5)
            assert (decision.referencers, decision.subsets, decision.bank_version) == (local.referencers, local.subsets, bank.version)
            assert c.bank_info().version == bank.version
            assert c.score([[1.0, 0.0], [1.0, 0.0]]).similarity == [1.0, 1.0]
    # the scheme is case-insensitive (RFC 7235)
    with raw_stub(auth_server.target) as stub:
        info = stub.BankInfo(pb.BankInfoRequest(), metadata=(("authorization", f"bearer {QUERY_TOKEN}"),), timeout=10)
        assert info.bank.version == bank.version


@pytest.mark.parametrize("token", [QUERY_TOKEN, LIVE_QUERY_TOKEN])
@pytest.mark.parametrize("method", ADMIN_METHODS)
def test_query_token_cannot_write_or_reload(auth_server, auth_bank, query, method, token):
    before = Bank.versions(auth_bank)
    with raw_stub(auth_server.target) as stub:
        metadata = (("authorization", f"Bearer {token}"),)
        call = lambda: getattr(stub, method)(_requests(query)[method], metadata=metadata, timeout=10)  # noqa: E731
        error = expect_rpc_error(call, PERMISSION_DENIED, method, "admin")
    _assert_no_secret(error)
    assert Bank.versions(auth_bank) == before


# ------------------------------------------------------------------------------------- expiring tokens


@pytest.mark.parametrize("token", [EXPIRED_QUERY_TOKEN, EXPIRED_ADMIN_TOKEN])
@pytest.mark.parametrize("method", ALL_METHODS + ["Answer"])
def test_expired_tokens_are_unauthenticated(auth_server, auth_bank, query, method, token):
    before = Bank.versions(auth_bank)
    metadata = (("authorization", f"Bearer {token}"),)
    with raw_stub(auth_server.target) as stub:
        if method == "Answer":
            request = pb.AnswerRequest(embedding=pb.Embedding(values=query.tolist()))
            call = lambda: list(stub.Answer(request, metadata=metadata, timeout=10))  # noqa: E731
        else:
            call = lambda: getattr(stub, method)(_requests(query)[method], metadata=metadata, timeout=10)  # noqa: E731
        error = expect_rpc_error(call, UNAUTHENTICATED, "bearer token expired")
    _assert_no_secret(error)
    assert Bank.versions(auth_bank) == before


def test_an_admin_token_that_has_not_expired_can_reload(auth_server, auth_bank):
    with Client(auth_server.target, token=LIVE_ADMIN_TOKEN, retries=0) as c:
        assert c.reload().version == Bank.open(auth_bank).version
        assert c.bank_info().version == Bank.open(auth_bank).version


def test_a_wrong_token_is_invalid_not_expired(auth_server):
    # "expired" says the token was once valid: only a configured one may hear it
    with Client(auth_server.target, token=WRONG_TOKEN, retries=0) as c:
        error = expect_rpc_error(c.bank_info, UNAUTHENTICATED, "invalid bearer token")
    assert "expired" not in (error.details() or "")


class _Refused(Exception):
    """Raised by the fake context's ``abort``: its args are the status code and the message."""


def _verdict(interceptor: BearerTokenInterceptor, method: str, token: str) -> tuple[grpc.StatusCode, str] | None:
    """What ``interceptor`` does with a call of ``method`` carrying ``token``: None (served) or the refusal."""
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: None)

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return handler

    class Context:
        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            raise _Refused(code, message)

    metadata = (("authorization", f"Bearer {token}"),)
    details = SimpleNamespace(method=f"/smcs.v1.RouterService/{method}", invocation_metadata=metadata)
    chosen = asyncio.run(interceptor.intercept_service(continuation, details))  # type: ignore[arg-type]
    if chosen is handler:
        return None
    with pytest.raises(_Refused) as info:
        asyncio.run(chosen.unary_unary(None, Context()))
    return info.value.args


def test_a_token_expires_at_its_instant():
    expires = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)
    now = [expires - timedelta(microseconds=1)]
    auth = AuthConfig(
        query_tokens=[ExpiringToken(token="q", expires=expires)],
        admin_tokens=[ExpiringToken(token="a", expires=expires.astimezone(timezone(timedelta(hours=-5))))],
    )
    interceptor = BearerTokenInterceptor(auth, clock=lambda: now[0])
    assert _verdict(interceptor, "Route", "q") is None
    assert _verdict(interceptor, "Reload", "a") is None
    assert _verdict(interceptor, "Reload", "q") == (PERMISSION_DENIED, "/smcs.v1.RouterService/Reload needs an admin token")
    now[0] = expires
    for method, token in (("Route", "q"), ("Route", "a"), ("Reload", "a")):
        assert _verdict(interceptor, method, token) == (UNAUTHENTICATED, "bearer token expired")
    assert _verdict(interceptor, "Route", "x") == (UNAUTHENTICATED, "invalid bearer token")


def test_an_expired_entry_does_not_shadow_a_live_one():
    """The same token listed twice, once expired: the live entry counts."""
    auth = AuthConfig(
        query_tokens=[ExpiringToken(token="t", expires=PAST), "t"],
        admin_tokens=[ExpiringToken(token="t", expires=PAST)],
    )
    interceptor = BearerTokenInterceptor(auth)
    assert _verdict(interceptor, "Route", "t") is None
    assert _verdict(interceptor, "Reload", "t") == (PERMISSION_DENIED, "/smcs.v1.RouterService/Reload needs an admin token")


def test_refusals_reach_answer_as_a_stream(auth_server, query):
    # Answer is a server stream: a query token passes auth and reaches the method, which validates the request
    with raw_stub(auth_server.target) as stub:
        request = pb.AnswerRequest(embedding=pb.Embedding(values=query.tolist()))
        call = lambda: list(stub.Answer(request, metadata=(("authorization", f"Bearer {QUERY_TOKEN}"),), timeout=10))  # noqa: E731
        expect_rpc_error(call, grpc.StatusCode.INVALID_ARGUMENT, "question is empty")


def test_admin_token_can_do_everything(tmp_path):
    make_bank(tmp_path / "bank")
    config = make_config(auth=AuthConfig(query_tokens=[QUERY_TOKEN], admin_tokens=[ADMIN_TOKEN]))
    query = queries_for(tmp_path / "bank", 1)[0]
    with running_server(tmp_path / "bank", config) as handle, Client(handle.target, token=ADMIN_TOKEN, retries=0) as c:
        version = c.bank_info().version
        assert c.route(embedding=query, seed=1).bank_version == version
        assert c.score([[1.0, 2.0]]).best == 0
        v2 = c.append_questions([NewQuestion(id="admin-q", text="t", embedding=np.ones(DIM))]).version
        v3 = c.record_outcomes([("model-00", "admin-q", 1)]).version
        v4 = c.add_model("admin-model", outcomes={"admin-q": 0}).version
        assert c.reload().version == v4 == Bank.open(tmp_path / "bank").version
        assert len({version, v2, v3, v4}) == 4
        bank = Bank.open(tmp_path / "bank")
        assert bank.model_names[-1] == "admin-model"
        assert bank.capability[bank.model_index("model-00"), -1] == 1 and bank.capability[-1, -1] == 0
        assert c.route(embedding=query, seed=1).bank_version == v4


def test_health_and_reflection_need_no_token(auth_server):
    with Client(auth_server.target, retries=0) as c:
        assert c.health() == "SERVING"
    channel = grpc.insecure_channel(auth_server.target)
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="smcs.v1.RouterService"), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert "smcs.v1.RouterService" in set(ProtoReflectionDescriptorDatabase(channel).get_services())
    finally:
        channel.close()


def test_a_server_without_tokens_needs_none(tmp_path):
    make_bank(tmp_path / "bank")
    with running_server(tmp_path / "bank") as handle, raw_stub(handle.target) as stub:
        assert stub.BankInfo(pb.BankInfoRequest(), timeout=10).bank.n_models > 0
        # a token sent to a server without auth is ignored, not refused
        assert stub.BankInfo(pb.BankInfoRequest(), metadata=(("authorization", "Bearer whatever"),), timeout=10).bank.n_models > 0


# ------------------------------------------------------------------------------------- env overrides


def test_env_tokens_replace_the_files(tmp_path):
    path = tmp_path / "smcs.toml"
    path.write_text('[auth]\nquery_tokens = ["file-query"]\nadmin_tokens = ["file-admin"]\n')
    assert load_config(path, environ={}).auth == AuthConfig(query_tokens=["file-query"], admin_tokens=["file-admin"])
    both = load_config(path, environ={"SMCS_QUERY_TOKENS": " env-q1 , env-q2,, ", "SMCS_ADMIN_TOKENS": "env-admin"})
    assert both.auth == AuthConfig(query_tokens=["env-q1", "env-q2"], admin_tokens=["env-admin"])
    only_admin = load_config(path, environ={"SMCS_ADMIN_TOKENS": "env-admin"})
    assert only_admin.auth == AuthConfig(query_tokens=["file-query"], admin_tokens=["env-admin"])
    # set but empty: no tokens of that kind
    cleared = load_config(path, environ={"SMCS_QUERY_TOKENS": ""})
    assert cleared.auth.query_tokens == [] and cleared.auth.admin_tokens == ["file-admin"]
    # without a file, the environment alone turns auth on
    bare = load_config(None, environ={"SMCS_QUERY_TOKENS": "q"})
    assert bare.auth.enabled and bare.auth.query_tokens == ["q"]
    assert not load_config(None, environ={}).auth.enabled
    assert not load_config(None, environ={"SMCS_QUERY_TOKENS": " , "}).auth.enabled


def test_a_server_started_from_env_tokens_accepts_them_and_not_the_files(tmp_path):
    make_bank(tmp_path / "bank")
    path = tmp_path / "smcs.toml"
    path.write_text('[server]\nport = 0\n\n[policy]\nk = 4\nn_base = 50\n\n[auth]\nquery_tokens = ["file-query"]\nadmin_tokens = ["file-admin"]\n')
    config = load_config(path, environ={"SMCS_QUERY_TOKENS": "env-query", "SMCS_ADMIN_TOKENS": "env-admin"})
    config = msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, host="127.0.0.1"))
    with running_server(tmp_path / "bank", config) as handle:
        for token in ("file-query", "file-admin"):
            with Client(handle.target, token=token, retries=0) as c:
                expect_rpc_error(c.bank_info, UNAUTHENTICATED)
        with Client(handle.target, token="env-query", retries=0) as c:
            assert c.bank_info().n_models > 0
            expect_rpc_error(c.reload, PERMISSION_DENIED)
        with Client(handle.target, token="env-admin", retries=0) as c:
            assert c.reload().version == Bank.open(tmp_path / "bank").version


def test_tokens_never_reach_the_logs(auth_server, query, caplog):
    caplog.set_level("DEBUG")
    with raw_stub(auth_server.target) as stub:
        for header in (f"Bearer {secret}" for secret in SECRETS):  # expired ones included
            for method in ("Reload", "Route", "AddModel"):
                request = _requests(query)[method]
                if method == "AddModel":
                    request = pb.AddModelRequest(name="model-00")  # refused by the bank: nothing is written
                try:
                    getattr(stub, method)(request, metadata=(("authorization", header),), timeout=10)
                except grpc.RpcError:
                    pass
    for secret in SECRETS:
        assert secret not in caplog.text
