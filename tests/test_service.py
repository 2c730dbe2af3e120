"""The smcs.v1.RouterService service over real servers: decisions equal the in-process Router's, every refusal
has its status code and names its field, bank writes and reloads, health, reflection, admission control,
deadlines, reloads under load, and the CLI end to end with real processes."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import msgspec
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf import json_format
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.descriptor_pool import DescriptorPool

import smcs.service.server as server_module
import smcs.service.state as state_module
from smcs.service.reflection import V1_REQUEST, V1_RESPONSE
from support.decisions import assert_same_decision, decision_from_json
from service_harness import (
    DIM,
    N_MODELS,
    N_QUESTIONS,
    POLICY,
    LoopThread,
    expect_rpc_error,
    fresh_bank,  # noqa: F401 (fixture)
    fresh_server,  # noqa: F401 (fixture)
    make_config,
    queries_for,
    raw_stub,
    running_server,
    shared_bank,  # noqa: F401 (fixture)
    shared_server,  # noqa: F401 (fixture)
    wait_until,
)
from smcs import Bank, Policy, RouteDecision, Router, kernels
from smcs._proto import router_pb2 as pb
from smcs.bank import ModelInfo, Question
from smcs.client import AsyncClient, Client, NewQuestion, pushback_s
from smcs.core.router import MAX_SEED

INVALID = grpc.StatusCode.INVALID_ARGUMENT
REPO = Path(__file__).resolve().parent.parent





@pytest.fixture(scope="module")
def shared_queries(shared_bank):
    return queries_for(shared_bank, 8)


@pytest.fixture(scope="module")
def local_router(shared_bank):
    return Router(Bank.open(shared_bank), POLICY)


@pytest.fixture(scope="module")
def client(shared_server):
    with shared_server.client(retries=0) as c:
        yield c


def assert_still_routes(client: Client, router: Router, query: np.ndarray) -> None:
    assert_same_decision(client.route(embedding=query, seed=11), router.route(query, seed=11), router.bank)


# --------------------------------------------------------------------------------- 1. Route = Router


@pytest.mark.parametrize("i, seed", [(0, 0), (1, 1), (2, 12345), (3, MAX_SEED), (4, 2**63 + 5)])
def test_route_equals_the_in_process_router(client, local_router, shared_queries, i, seed):
    query = shared_queries[i]
    remote = client.route(embedding=query, seed=seed, include_support=True)
    assert remote.seed == seed
    assert len(remote.referencers) == POLICY.k and len(remote.subsets) == POLICY.n
    assert_same_decision(remote, local_router.route(query, seed=seed), local_router.bank)


def test_the_support_set_is_returned_only_when_asked(client, local_router, shared_queries):
    query = shared_queries[6]
    local = local_router.route(query, seed=2)
    lean = client.route(embedding=query, seed=2)
    assert lean.support_rows == lean.support_ids == lean.support_similarities == [] and local.support_rows
    assert lean.referencers == local.referencers and lean.votes == local.votes and lean.subsets == local.subsets
    for full in (client.route(embedding=query, seed=2, include_support=True), client.route(embedding=query, seed=2, debug=True)):
        assert full.support_rows == local.support_rows
        assert full.support_ids == [local_router.bank.questions[r].id for r in local.support_rows]


def test_a_scaled_query_routes_like_the_router_and_its_unit_vector(client, local_router, shared_queries):
    query = shared_queries[5]
    scaled = (query * np.float32(7.5)).astype(np.float32)
    remote = client.route(embedding=scaled, seed=3, include_support=True)
    assert_same_decision(remote, local_router.route(scaled, seed=3), local_router.bank)
    unit = local_router.route(query, seed=3)  # normalising may move the last bits, not the decision
    assert remote.referencers == unit.referencers and remote.support_rows == unit.support_rows
    np.testing.assert_allclose(remote.votes, unit.votes, rtol=1e-5)


def test_unset_seed_is_reported_and_replays(client, local_router, shared_queries):
    query = shared_queries[0]
    first = client.route(embedding=query)
    second = client.route(embedding=query)
    assert first.seed != second.seed  # the server draws a fresh seed per request (63 random bits)
    for decision in (first, second):
        assert_same_decision(decision, local_router.route(query, seed=decision.seed), local_router.bank)
        assert client.route(embedding=query, seed=decision.seed) == decision


def test_allowed_models_restrict_referencers_like_the_router(client, local_router, shared_queries):
    allowed = ["model-05", "model-01", "model-03"]
    query = shared_queries[2]
    remote = client.route(embedding=query, seed=4, k=3, allowed_models=allowed)
    local = local_router.route(query, seed=4, policy=msgspec.structs.replace(POLICY, k=3), allowed_models=allowed)
    assert_same_decision(remote, local, local_router.bank)
    assert sorted(remote.referencers) == sorted(allowed)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(k=3, n=3, k_drop=2),
        dict(n_base=20, gamma=0.8),
        dict(gamma=0.0, n_base=1),
        dict(aggregator="model-05", k=6, k_drop=0, n=1),
        dict(lam=-3.0, n_base=100000),  # n_base is clamped to the bank size
    ],
)
def test_policy_overrides_apply(client, local_router, shared_queries, overrides):
    query = shared_queries[1]
    policy = msgspec.structs.replace(POLICY, **overrides)
    remote = client.route(embedding=query, seed=99, **overrides)
    local = local_router.route(query, seed=99, policy=policy)
    assert_same_decision(remote, local, local_router.bank)
    assert len(remote.referencers) == policy.k
    assert len(remote.subsets) == policy.n
    assert all(len(s) == policy.k - policy.k_drop for s in remote.subsets)
    if "aggregator" in overrides:
        assert remote.aggregator == overrides["aggregator"]


def test_overrides_change_the_decision_against_the_default(client, shared_queries):
    query = shared_queries[2]
    default = client.route(embedding=query, seed=4, include_support=True)
    narrowed = client.route(embedding=query, seed=4, k=2, k_drop=0, n=2)
    assert len(default.referencers) == POLICY.k and len(narrowed.referencers) == 2
    assert narrowed.referencers == default.referencers[:2]  # same votes, fewer taken
    wide = client.route(embedding=query, seed=4, gamma=0.0, n_base=1, include_support=True)  # threshold 0: a far larger support set
    assert len(wide.support_rows) > len(default.support_rows)


def test_debug_returns_support_texts_and_outcomes(client, local_router, shared_queries):
    query = shared_queries[3]
    bank = local_router.bank
    plain = client.route(embedding=query, seed=8)
    assert plain.support_texts == [] and plain.support_outcomes == []
    remote = client.route(embedding=query, seed=8, debug=True)
    assert_same_decision(remote, local_router.route(query, seed=8), bank)
    rows = remote.support_rows
    assert remote.support_texts == [bank.questions[r].text for r in rows]
    capability = np.asarray(bank.capability)
    models = [bank.model_names.index(name) for name in remote.referencers]
    expected = [[int(capability[m, r]) for m in models] for r in rows]
    assert remote.support_outcomes == expected
    assert any(-1 in row for row in expected) or len(rows) < 20  # the data covers unevaluated outcomes


def test_async_client_routes_like_the_blocking_one(shared_server, local_router, shared_queries):
    async def go():
        async with AsyncClient(shared_server.target, retries=0) as c:
            return await asyncio.gather(*(c.route(embedding=q, seed=i) for i, q in enumerate(shared_queries[:4])))

    for i, decision in enumerate(asyncio.run(go())):
        assert_same_decision(decision, local_router.route(shared_queries[i], seed=i), local_router.bank)


# ----------------------------------------------------------------------------------------- 2. errors


def _emb(values) -> pb.Embedding:
    return pb.Embedding(values=list(values))


def _route(**fields) -> pb.RouteRequest:
    return pb.RouteRequest(**fields)


_GOOD = [0.1 * (i + 1) for i in range(DIM)]

ROUTE_ERRORS = {
    "no query": (_route(), INVALID, ["question or embedding"]),
    "question without embedder": (_route(question="what is 2 + 2?"), grpc.StatusCode.FAILED_PRECONDITION, ["question", "embedder"]),
    "empty question": (_route(question=""), INVALID, ["question is empty"]),
    "whitespace question": (_route(question=" \t\n "), INVALID, ["question is empty"]),
    "short embedding": (_route(embedding=_emb(_GOOD[:5])), INVALID, ["embedding", "5 values", str(DIM)]),
    "long embedding": (_route(embedding=_emb(_GOOD + [1.0])), INVALID, ["embedding", f"{DIM + 1} values"]),
    "empty embedding": (_route(embedding=_emb([])), INVALID, ["embedding", "0 values"]),
    "nan": (_route(embedding=_emb([float("nan")] + _GOOD[1:])), INVALID, ["embedding", "NaN"]),
    "inf": (_route(embedding=_emb(_GOOD[:-1] + [float("inf")])), INVALID, ["embedding", "infinity"]),
    "-inf": (_route(embedding=_emb([float("-inf")] + _GOOD[1:])), INVALID, ["embedding", "infinity"]),
    "zero vector": (_route(embedding=_emb([0.0] * DIM)), INVALID, ["embedding", "zero vector"]),
    "k = 0": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(k=0)), INVALID, ["policy.k", ">= 1"]),
    "negative k": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(k=-2)), INVALID, ["policy.k"]),
    "negative n_base": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(n_base=-5)), INVALID, ["policy.n_base", "-5"]),
    "n_base = 0": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(n_base=0)), INVALID, ["policy.n_base"]),
    "n = 0": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(n=0)), INVALID, ["policy.n "]),
    "gamma > 1": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(gamma=1.5)), INVALID, ["policy.gamma", "[0, 1]"]),
    "gamma < 0": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(gamma=-0.1)), INVALID, ["policy.gamma"]),
    "gamma nan": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(gamma=float("nan"))), INVALID, ["policy.gamma"]),
    "k_drop = k": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(k_drop=POLICY.k)), INVALID, ["policy.k_drop"]),
    "k_drop > k": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(k=2, k_drop=3)), INVALID, ["policy.k_drop"]),
    "negative k_drop": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(k_drop=-1)), INVALID, ["policy.k_drop"]),
    "lam inf": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(lam=float("inf"))), INVALID, ["policy.lam"]),
    "unknown retrieval": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(retrieval=99)), INVALID, ["policy.retrieval is 99", "smcs.v1.Retrieval"]),
    "unknown scorer": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(scorer=42)), INVALID, ["policy.scorer is 42", "smcs.v1.Scorer"]),
    "ivf without an index": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(retrieval=pb.RETRIEVAL_IVF)), INVALID, ["retrieval='ivf'", "smcs bank index"]),
    "nprobe = 0": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(nprobe=0)), INVALID, ["policy.nprobe", ">= 1"]),
    "unknown aggregator": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(aggregator="gpt-99")), INVALID, ["aggregator", "gpt-99"]),
    "empty aggregator": (_route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(aggregator="")), INVALID, ["policy.aggregator"]),
    "unknown allowed model": (
        _route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(allowed_models=["model-00", "gpt-99"])),
        INVALID,
        ["allowed_models", "gpt-99"],
    ),
    "k > allowed models": (
        _route(embedding=_emb(_GOOD), policy=pb.PolicyOverrides(allowed_models=["model-00", "model-01"])),
        INVALID,
        [f"k={POLICY.k}", "2 allowed_models"],
    ),
}


@pytest.mark.parametrize("case", list(ROUTE_ERRORS))
def test_route_refusals_name_the_field(shared_server, client, local_router, shared_queries, case):
    request, code, fragments = ROUTE_ERRORS[case]
    with raw_stub(shared_server.target) as stub:
        expect_rpc_error(lambda: stub.Route(request, timeout=10), code, *fragments)
    assert_still_routes(client, local_router, shared_queries[6])


def _score(**fields) -> pb.ScoreRequest:
    return pb.ScoreRequest(**fields)


_CANDIDATES = [_emb([1.0, 0.0, 0.5]), _emb([0.0, 1.0, 0.5]), _emb([1.0, 1.0, 0.0])]

SCORE_ERRORS = {
    "texts": (_score(texts=["an answer"]), grpc.StatusCode.FAILED_PRECONDITION, ["texts", "embedder"]),
    "no candidates": (_score(), INVALID, ["embeddings", "at least one"]),
    "empty candidate": (_score(embeddings=[_emb([])]), INVALID, ["embeddings[0]", "empty"]),
    "dimension mismatch": (_score(embeddings=[_emb([1.0, 2.0, 3.0]), _emb([1.0, 2.0])]), INVALID, ["embeddings[1]", "2 values", "3"]),
    "zero candidate": (_score(embeddings=[_emb([1.0, 2.0]), _emb([0.0, 0.0])]), INVALID, ["embeddings[1]", "zero vector"]),
    "nan candidate": (_score(embeddings=[_emb([1.0, float("nan")])]), INVALID, ["embeddings[0]", "NaN"]),
    "too few logprobs": (
        _score(embeddings=_CANDIDATES, logprobs=[pb.TokenLogprobs(values=[-0.1]), pb.TokenLogprobs(values=[-0.2])]),
        INVALID,
        ["logprobs", "2 entries", "3 candidates"],
    ),
    "too many logprobs": (
        _score(embeddings=_CANDIDATES[:1], logprobs=[pb.TokenLogprobs(values=[-0.1]), pb.TokenLogprobs(values=[-0.2])]),
        INVALID,
        ["logprobs", "2 entries", "1 candidates"],
    ),
    "empty logprob list": (
        _score(embeddings=_CANDIDATES, logprobs=[pb.TokenLogprobs(values=[-0.1]), pb.TokenLogprobs(), pb.TokenLogprobs(values=[-1.0])]),
        INVALID,
        ["logprobs", "candidate 1"],
    ),
    "all logprob lists empty": (
        _score(embeddings=_CANDIDATES[:2], logprobs=[pb.TokenLogprobs(), pb.TokenLogprobs()]),
        INVALID,
        ["logprobs", "candidate 0"],
    ),
    "nan logprob": (
        _score(embeddings=_CANDIDATES[:1], logprobs=[pb.TokenLogprobs(values=[-0.1, float("nan")])]),
        INVALID,
        ["logprobs"],
    ),
    "lam nan": (_score(embeddings=_CANDIDATES, lam=float("nan")), INVALID, ["lam", "finite"]),
}


@pytest.mark.parametrize("case", list(SCORE_ERRORS))
def test_score_refusals_name_the_field(shared_server, client, local_router, shared_queries, case):
    request, code, fragments = SCORE_ERRORS[case]
    with raw_stub(shared_server.target) as stub:
        expect_rpc_error(lambda: stub.Score(request, timeout=10), code, *fragments)
    assert_still_routes(client, local_router, shared_queries[6])


def _new_question(qid: str, outcomes: dict[str, int] | None = None, dim: int = DIM) -> pb.NewQuestion:
    return pb.NewQuestion(id=qid, text=f"text of {qid}", embedding=_emb(_GOOD[:dim]), outcomes=outcomes or {})


WRITE_ERRORS = {
    "no questions": ("AppendQuestions", pb.AppendQuestionsRequest(), ["questions", "at least one"]),
    "duplicate question id": ("AppendQuestions", pb.AppendQuestionsRequest(questions=[_new_question("q1")]), ["questions[0].id", "'q1'"]),
    "repeated new id": (
        "AppendQuestions",
        pb.AppendQuestionsRequest(questions=[_new_question("new-a"), _new_question("new-a")]),
        ["questions[1].id", "'new-a'"],
    ),
    "empty question id": ("AppendQuestions", pb.AppendQuestionsRequest(questions=[_new_question("")]), ["id"]),
    "question embedding dim": (
        "AppendQuestions",
        pb.AppendQuestionsRequest(questions=[_new_question("new-b", dim=5)]),
        ["questions[0].embedding", "5 values"],
    ),
    "unknown model in outcomes": (
        "AppendQuestions",
        pb.AppendQuestionsRequest(questions=[_new_question("new-c", {"gpt-99": 1})]),
        ["questions[0].outcomes", "'gpt-99'"],
    ),
    "outcome value 2": (
        "AppendQuestions",
        pb.AppendQuestionsRequest(questions=[_new_question("new-d", {"model-00": 2})]),
        ["questions[0].outcomes['model-00']", "2"],
    ),
    "outcome value -1 in append": (
        "AppendQuestions",
        pb.AppendQuestionsRequest(questions=[_new_question("new-e", {"model-00": -1})]),
        ["questions[0].outcomes['model-00']", "-1"],
    ),
    "unknown question id in AddModel": (
        "AddModel",
        pb.AddModelRequest(name="model-new", outcomes={"q1": 1, "no-such-q": 0}),
        ["outcomes", "'no-such-q'"],
    ),
    "AddModel outcome value 2": ("AddModel", pb.AddModelRequest(name="model-new", outcomes={"q1": 2}), ["outcomes['q1']", "2"]),
    "duplicate model name": ("AddModel", pb.AddModelRequest(name="model-03"), ["model.name", "'model-03'"]),
    "empty model name": ("AddModel", pb.AddModelRequest(name=""), ["name"]),
    "negative cost": ("AddModel", pb.AddModelRequest(name="model-new", cost_per_input_token=-1.0), ["cost_per_input_token"]),
    "RecordOutcomes unknown model": (
        "RecordOutcomes",
        pb.RecordOutcomesRequest(outcomes=[pb.Outcome(model="model-00", question_id="q1", value=1), pb.Outcome(model="gpt-99", question_id="q2", value=1)]),
        ["outcomes[1]", "'gpt-99'"],
    ),
    "RecordOutcomes unknown question": (
        "RecordOutcomes",
        pb.RecordOutcomesRequest(outcomes=[pb.Outcome(model="model-00", question_id="no-such-q", value=1)]),
        ["outcomes[0]", "'no-such-q'"],
    ),
    "RecordOutcomes value 2": (
        "RecordOutcomes",
        pb.RecordOutcomesRequest(outcomes=[pb.Outcome(model="model-00", question_id="q1", value=2)]),
        ["outcomes[0]", "2"],
    ),
    "RecordOutcomes empty": ("RecordOutcomes", pb.RecordOutcomesRequest(), ["outcomes", "empty"]),
}


@pytest.mark.parametrize("case", list(WRITE_ERRORS))
def test_bank_write_refusals_name_the_field_and_commit_nothing(shared_server, shared_bank, client, local_router, shared_queries, case):
    method, request, fragments = WRITE_ERRORS[case]
    before = Bank.versions(shared_bank)
    with raw_stub(shared_server.target) as stub:
        expect_rpc_error(lambda: getattr(stub, method)(request, timeout=10), INVALID, *fragments)
    assert Bank.versions(shared_bank) == before == [local_router.bank.version]
    assert client.bank_info().version == local_router.bank.version
    assert_still_routes(client, local_router, shared_queries[6])


@pytest.fixture(scope="module")
def short_question_server(shared_bank):
    with running_server(shared_bank, make_config(max_question_chars=16)) as handle:
        yield handle


def test_oversize_question_is_refused_at_the_limit(short_question_server, local_router, shared_queries):
    with short_question_server.client(retries=0) as c:
        expect_rpc_error(lambda: c.route("x" * 17), INVALID, "question", "17 characters", "16")
        expect_rpc_error(lambda: c.route("y" * 5000), INVALID, "question", "5000 characters")
        # exactly at the limit the text is accepted, and only the missing embedder stops it
        expect_rpc_error(lambda: c.route("x" * 16), grpc.StatusCode.FAILED_PRECONDITION, "embedder")
        assert_still_routes(c, local_router, shared_queries[6])


# ------------------------------------------------------------------------------------------ 3. Score


def _expected_scores(candidates: np.ndarray, logprobs: list[np.ndarray] | None, lam: float):
    similarity = kernels.mean_pairwise_similarity(candidates.astype(np.float32))
    if logprobs is None:
        return similarity, np.empty(0), similarity, kernels.select_best(similarity)
    offsets = np.concatenate([[0], np.cumsum([len(lp) for lp in logprobs])]).astype(np.int64)
    perplexity = kernels.perplexity(np.concatenate(logprobs), offsets)
    total = kernels.hybrid_scores(similarity, perplexity, lam)
    return similarity, perplexity, total, kernels.select_best(total)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_logprobs", [False, True])
@pytest.mark.parametrize("lam", [None, 0.0, 0.25, -2.0])
def test_score_equals_the_kernels(client, seed, with_logprobs, lam):
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(1, 9)), int(rng.integers(2, 40))
    candidates = rng.standard_normal((n, dim)).astype(np.float32)
    logprobs = [-rng.exponential(1.0, int(rng.integers(1, 30))) for _ in range(n)] if with_logprobs else None
    scores = client.score(candidates, logprobs, lam=lam)
    similarity, perplexity, total, best = _expected_scores(candidates, logprobs, POLICY.lam if lam is None else lam)
    np.testing.assert_allclose(scores.similarity, similarity, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scores.perplexity, perplexity, rtol=1e-12)
    np.testing.assert_allclose(scores.total, total, rtol=1e-12, atol=1e-12)
    assert scores.best == best


def test_score_by_hand(client):
    # candidates 0 and 1 agree, 2 is orthogonal to both: S^sim = (1 + 1 + 0)/3, same, (0 + 0 + 1)/3
    candidates = [[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]
    plain = client.score(candidates)
    np.testing.assert_allclose(plain.similarity, [2 / 3, 2 / 3, 1 / 3], rtol=1e-7)
    assert plain.perplexity == [] and plain.total == plain.similarity
    assert plain.best == 0  # tie between 0 and 1 goes to the lowest index
    # PPL = exp(-mean logprob): e, 1, 1; S^total = S^sim + λ(1 − PPL)
    scored = client.score(candidates, [[-1.0, -1.0], [0.0], [0.0, 0.0, 0.0]], lam=0.5)
    np.testing.assert_allclose(scored.perplexity, [np.e, 1.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(scored.total, [2 / 3 + 0.5 * (1 - np.e), 2 / 3, 1 / 3], rtol=1e-7)
    assert scored.best == 1
    # the server's default λ (POLICY.lam = 1) when lam is unset
    default = client.score(candidates, [[-1.0, -1.0], [0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(default.total, [2 / 3 + (1 - np.e), 2 / 3, 1 / 3], rtol=1e-7)


# --------------------------------------------------------------------------------------- 4. BankInfo


def _expected_models(bank: Bank) -> list[tuple[str, float, int]]:
    capability = np.asarray(bank.capability)
    rows = []
    for r, name in enumerate(bank.model_names):
        known = capability[r][capability[r] >= 0]
        rows.append((name, float(np.mean(known == 1)) if known.size else float("nan"), int(known.size)))
    return rows


def _assert_bank_info(info, bank: Bank) -> None:
    assert info.version == bank.version
    assert (info.n_questions, info.n_models, info.dim) == (bank.n_questions, bank.n_models, bank.dim)
    assert info.embedder == bank.manifest.embedder.id
    assert info.created == bank.manifest.created
    expected = _expected_models(bank)
    assert [m.name for m in info.models] == [name for name, _, _ in expected]
    assert [m.evaluated for m in info.models] == [count for _, _, count in expected]
    np.testing.assert_allclose([m.accuracy for m in info.models], [acc for _, acc, _ in expected], rtol=1e-12)


def test_bank_info_matches_the_bank(client, shared_bank):
    bank = Bank.open(shared_bank)
    info = client.bank_info()
    assert (info.n_questions, info.n_models, info.dim) == (N_QUESTIONS, N_MODELS, DIM)
    assert info.embedder == "unspecified"
    _assert_bank_info(info, bank)
    assert all(0 < m.evaluated < N_QUESTIONS for m in info.models)  # clustered_bank leaves ~10% unevaluated


def test_server_info_reports_the_default_policy_scorer_strategy_and_limits(client, shared_server, local_router):
    """ServerInfo: the policy a call without overrides routes with (every field), what it resolves to on
    the live bank, the server's version, the default Answer strategy and the limits."""
    import importlib.metadata

    info = client.server_info()
    assert info.policy == POLICY  # every field, the optional ones (unset) included
    assert info.version == importlib.metadata.version("smcs")
    assert info.bank_version == local_router.bank.version
    assert info.scorer == local_router.scorer_of(POLICY) == "vote"  # "auto" on a bank without a fit
    assert info.aggregator == local_router.default_aggregator(POLICY)
    assert (info.strategy, info.strategy_options, info.accepts_text) == ("smcs", {}, False)
    server = shared_server.config.server
    assert (info.limits.max_concurrent_rpcs, info.limits.admission_wait_s) == (server.max_concurrent_rpcs, server.admission_wait_s)
    assert (info.limits.max_question_chars, info.limits.max_subsets) == (server.max_question_chars, 4096)
    decision = client.route(embedding=queries_for(shared_server.bank_path, 1)[0], seed=3)
    assert (len(decision.referencers), decision.aggregator, decision.scorer) == (info.policy.k, info.aggregator, info.scorer)


def test_server_info_carries_every_policy_field(fresh_bank):
    """A policy with every optional field set and non-default enums comes back field for field."""
    policy = Policy(k=3, n_base=40, gamma=0.8, k_drop=2, n=6, lam=0.5, aggregator="model-02", threads=1, quantized=True,
                    min_references=2, retrieval="exact", nprobe=9, scorer="vote", cover=False)
    with running_server(fresh_bank, make_config(policy=policy, admission_wait_s=0.25)) as handle, handle.client() as c:
        info = c.server_info()
    assert info.policy == policy and set(pb.Policy.DESCRIPTOR.fields_by_name) == set(Policy.__struct_fields__)
    assert (info.aggregator, info.scorer, info.limits.admission_wait_s) == ("model-02", "vote", 0.25)


# ------------------------------------------------------------------------------- 5. writes and reloads


def test_append_questions_commits_a_version_that_routes(fresh_server, fresh_bank):
    before = Bank.open(fresh_bank)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((2, DIM)).astype(np.float32)
    with fresh_server.client(retries=0) as c:
        write = c.append_questions(
            [
                NewQuestion(id="new-1", text="a new question", embedding=vectors[0], source="ops", label="42", outcomes={"model-02": 1, "model-04": 0}),
                NewQuestion(id="new-2", text="another one", embedding=vectors[1]),
            ]
        )
        after = Bank.open(fresh_bank)
        assert write.version == after.version != before.version
        assert (write.n_questions, write.n_models) == (N_QUESTIONS + 2, N_MODELS)
        assert after.n_questions == N_QUESTIONS + 2
        assert after.questions[-2:] == (
            Question(id="new-1", text="a new question", source="ops", label="42"),
            Question(id="new-2", text="another one", source="", label=None),
        )
        np.testing.assert_allclose(after.embeddings[-2:], vectors / np.linalg.norm(vectors, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
        expected = np.full((N_MODELS, 2), -1)
        expected[2, 0], expected[4, 0] = 1, 0
        np.testing.assert_array_equal(after.capability[:, -2:], expected)
        np.testing.assert_array_equal(after.capability[:, :N_QUESTIONS], before.capability)
        # the server routes over the new version: the new question is its own nearest neighbour
        decision = c.route(embedding=vectors[0], seed=1, debug=True)
        assert decision.bank_version == after.version
        assert decision.support_ids[0] == "new-1" and decision.support_rows[0] == N_QUESTIONS
        assert decision.support_texts[0] == "a new question"
        assert_same_decision(decision, Router(after, POLICY).route(vectors[0], seed=1), after)
        _assert_bank_info(c.bank_info(), after)


def test_record_outcomes_commits_a_version(fresh_server, fresh_bank):
    before = Bank.open(fresh_bank)
    cap = np.asarray(before.capability)
    flips = [("model-00", "q3", 1 - max(int(cap[0, 3]), 0)), ("model-05", "q10", -1), ("model-01", "q999", 0 if cap[1, 999] == 1 else 1)]
    with fresh_server.client(retries=0) as c:
        write = c.record_outcomes(flips)
        after = Bank.open(fresh_bank)
        assert write.version == after.version != before.version
        expected = cap.copy()
        expected[0, 3], expected[5, 10], expected[1, 999] = flips[0][2], -1, flips[2][2]
        np.testing.assert_array_equal(after.capability, expected)
        assert c.route(embedding=before.embeddings[3], seed=2).bank_version == after.version
        _assert_bank_info(c.bank_info(), after)


def test_add_model_commits_a_version(fresh_server, fresh_bank):
    before = Bank.open(fresh_bank)
    with fresh_server.client(retries=0) as c:
        write = c.add_model(
            "model-new", outcomes={"q0": 1, "q7": 0}, backend={"base_url": "http://x"}, cost_per_input_token=1e-6, cost_per_output_token=2e-6
        )
        after = Bank.open(fresh_bank)
        assert write.version == after.version != before.version
        assert (write.n_models, after.n_models) == (N_MODELS + 1, N_MODELS + 1)
        assert after.model_names[-1] == "model-new"
        model = after.models[-1]
        assert (model.backend, model.cost_per_input_token, model.cost_per_output_token) == ({"base_url": "http://x"}, 1e-6, 2e-6)
        row = np.full(N_QUESTIONS, -1)
        row[0], row[7] = 1, 0
        np.testing.assert_array_equal(after.capability[-1], row)
        np.testing.assert_array_equal(after.capability[:-1], before.capability)
        decision = c.route(embedding=before.embeddings[0], seed=3, k=N_MODELS + 1, k_drop=0)
        assert decision.bank_version == after.version and "model-new" in decision.referencers
        info = c.bank_info()
        _assert_bank_info(info, after)
        assert info.models[-1].evaluated == 2 and info.models[-1].accuracy == 0.5
        # a model with no evaluated question reports NaN accuracy
        c.add_model("model-blank")
        blank = c.bank_info().models[-1]
        assert blank.name == "model-blank" and blank.evaluated == 0 and np.isnan(blank.accuracy)


def test_reload_picks_up_a_version_written_elsewhere(fresh_bank):
    original = Bank.open(fresh_bank)
    query = original.embeddings[5]
    with running_server(fresh_bank, make_config(check_current=False)) as handle, handle.client(retries=0) as c:
        assert c.reload().version == original.version  # nothing new: same version
        newer = Bank.open(fresh_bank).add_model(ModelInfo(name="outside-model"))
        # without the watcher and the per-request check the server keeps routing over what it loaded
        assert c.route(embedding=query, seed=1).bank_version == original.version
        assert c.bank_info().version == original.version
        info = c.reload()
        assert info.version == newer.version and info.n_models == N_MODELS + 1
        _assert_bank_info(info, newer)
        assert_same_decision(c.route(embedding=query, seed=1), Router(newer, POLICY).route(query, seed=1), newer)


def test_a_write_after_an_outside_write_keeps_both(fresh_server, fresh_bank):
    outside = Bank.open(fresh_bank).add_model(ModelInfo(name="outside-model"))
    with fresh_server.client(retries=0) as c:
        write = c.record_outcomes([("outside-model", "q1", 1)])  # the server's snapshot does not know it yet
        after = Bank.open(fresh_bank)
        assert write.version == after.version
        assert after.model_names[-1] == "outside-model" and after.capability[-1, 1] == 1
        assert Bank.versions(fresh_bank)[-2:] == [outside.version, after.version]
        assert c.route(embedding=after.embeddings[1], seed=1).bank_version == after.version


def test_reload_watcher_follows_the_bank_without_a_reload_call(fresh_bank):
    with running_server(fresh_bank, make_config(reload_interval_s=0.1)) as handle, handle.client(retries=0) as c:
        original = Bank.open(fresh_bank)
        assert c.bank_info().version == original.version
        newer = original.append_questions(np.ones((1, DIM), dtype=np.float32), [Question(id="watched", text="t")])
        wait_until(lambda: c.bank_info().version == newer.version, timeout=15, what="the watcher to load the new version")
        decision = c.route(embedding=np.ones(DIM, dtype=np.float32), seed=1, include_support=True)
        assert decision.bank_version == newer.version and decision.support_ids[0] == "watched"


# ------------------------------------------------------------------------------------------ 6. health


def test_health_is_serving_after_start(shared_server):
    with shared_server.client(retries=0) as c:
        assert c.health() == "SERVING"
        assert c.health("smcs.v1.RouterService") == "SERVING"
        expect_rpc_error(lambda: c.health("no.such.Service"), grpc.StatusCode.NOT_FOUND)


def test_health_is_not_serving_while_the_bank_loads(fresh_bank, monkeypatch):
    release = threading.Event()
    entered = threading.Event()
    original_load = state_module.Snapshot.load

    def slow_load(bank, policy, embedder):
        entered.set()
        release.wait(30)
        return original_load(bank, policy, embedder)

    monkeypatch.setattr(state_module.Snapshot, "load", staticmethod(slow_load))
    ports: list[int] = []
    original_bind = server_module._bind

    def recording_bind(*args):
        port = original_bind(*args)
        ports.append(port)
        return port

    monkeypatch.setattr(server_module, "_bind", recording_bind)
    query = queries_for(fresh_bank, 1)[0]
    with LoopThread() as loop:
        starting = loop.submit(server_module.start_server(make_config(), fresh_bank))
        running = None
        try:
            assert entered.wait(30), "the server never started loading the bank"
            assert len(ports) == 1
            with Client(f"127.0.0.1:{ports[0]}", retries=0, timeout=10) as c:
                assert c.health() == "NOT_SERVING"
                assert c.health("smcs.v1.RouterService") == "NOT_SERVING"
                expect_rpc_error(lambda: c.route(embedding=query, seed=1), grpc.StatusCode.UNAVAILABLE, "loading")
                expect_rpc_error(c.bank_info, grpc.StatusCode.UNAVAILABLE, "loading")
                assert not starting.done()
                release.set()
                running = starting.result(30)
                assert running.port == ports[0]
                assert c.health() == "SERVING"
                bank = Bank.open(fresh_bank)
                assert_same_decision(c.route(embedding=query, seed=1), Router(bank, POLICY).route(query, seed=1), bank)
        finally:
            release.set()
            if running is None:
                running = starting.result(30)
            loop.run(running.stop(1.0), 30)


def test_health_watch_sees_not_serving_when_graceful_stop_begins(fresh_bank):
    with running_server(fresh_bank) as handle:
        channel = grpc.insecure_channel(handle.target)
        try:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            stopping = handle.loop.submit(handle.running.stop(5.0))
            handle.stopped = True
            assert next(stream).status == health_pb2.HealthCheckResponse.NOT_SERVING
            stream.cancel()
            stopping.result(30)
        finally:
            channel.close()


def test_a_bank_that_cannot_be_opened_stops_the_start(tmp_path):
    (tmp_path / "empty").mkdir()
    with LoopThread() as loop, pytest.raises(Exception) as info:
        loop.run(server_module.start_server(make_config(), tmp_path / "empty"), 30)
    assert "CURRENT" in str(info.value) or "empty" in str(info.value)


def test_a_second_server_cannot_take_a_taken_port(shared_server, shared_bank, local_router, shared_queries):
    with LoopThread() as loop, pytest.raises(OSError) as info:
        loop.run(server_module.start_server(make_config(port=shared_server.port), shared_bank), 30)
    assert f"127.0.0.1:{shared_server.port}" in str(info.value)
    with shared_server.client(retries=0) as c:
        assert c.health() == "SERVING"
        assert_still_routes(c, local_router, shared_queries[6])


def test_a_stopped_servers_port_can_be_taken_again(fresh_bank):
    query = queries_for(fresh_bank, 1)[0]
    with running_server(fresh_bank) as first, first.client(retries=0) as c:
        port = first.port
        c.route(embedding=query, seed=1)
    with running_server(fresh_bank, make_config(port=port)) as second, second.client(retries=0) as c:
        assert second.port == port and c.health() == "SERVING"
        assert c.route(embedding=query, seed=1).bank_version == Bank.open(fresh_bank).version


def test_a_broken_new_version_keeps_the_old_one_serving(fresh_bank):
    query = queries_for(fresh_bank, 1)[0]
    original = Bank.open(fresh_bank)
    with running_server(fresh_bank, make_config(reload_interval_s=0.05)) as handle, handle.client(retries=0) as c:
        (fresh_bank / "CURRENT").write_text("v000099\n")  # names a version that is not there
        time.sleep(0.3)  # the watcher tries (and fails) a few times
        expect_rpc_error(c.reload, grpc.StatusCode.FAILED_PRECONDITION, "v000099")
        assert_same_decision(c.route(embedding=query, seed=1), Router(original, POLICY).route(query, seed=1), original)
        (fresh_bank / "CURRENT").write_text(f"{original.version}\n")
        newer = Bank.open(fresh_bank).add_model(ModelInfo(name="after-the-fault"))
        wait_until(lambda: c.bank_info().version == newer.version, timeout=15, what="the watcher to recover")


def test_messages_over_the_size_limit_are_refused(fresh_bank):
    query = queries_for(fresh_bank, 1)[0]
    with running_server(fresh_bank, make_config(max_message_bytes=32 * 1024)) as handle, handle.client(retries=0) as c:
        big = np.random.default_rng(0).standard_normal((400, DIM))  # ~58 KB of float32 on the wire
        expect_rpc_error(lambda: c.score(big), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert len(c.score(big[:100]).total) == 100
        assert c.route(embedding=query, seed=1).bank_version == Bank.open(fresh_bank).version


# -------------------------------------------------------------------------------------- 7. reflection


ROUTER_METHODS = {
    "Route", "Answer", "Score", "BankInfo", "ServerInfo", "AppendQuestions", "RecordOutcomes", "AddModel", "Reload"
}


def test_reflection_v1alpha_lists_the_router_service(shared_server):
    channel = grpc.insecure_channel(shared_server.target)
    try:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"smcs.v1.RouterService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= services
        router = DescriptorPool(database).FindServiceByName("smcs.v1.RouterService")
        assert {m.name for m in router.methods} == ROUTER_METHODS
        assert router.methods_by_name["Route"].input_type.full_name == "smcs.v1.RouteRequest"
    finally:
        channel.close()


def _reflect_v1(channel: grpc.Channel, *requests: object) -> list:
    """The responses of ``grpc.reflection.v1.ServerReflection/ServerReflectionInfo`` to ``requests``, as
    v1 messages (what grpcurl, buf curl and Postman speak first)."""
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=V1_REQUEST.SerializeToString, response_deserializer=V1_RESPONSE.FromString,
    )
    return list(info(iter(requests), timeout=10))


def test_reflection_v1_lists_and_describes_the_router_service(shared_server):
    channel = grpc.insecure_channel(shared_server.target)
    try:
        listed, described = _reflect_v1(
            channel, V1_REQUEST(list_services=""), V1_REQUEST(file_containing_symbol="smcs.v1.RouterService")
        )
        names = {s.name for s in listed.list_services_response.service}
        assert {"smcs.v1.RouterService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= names
        files = [FileDescriptorProto.FromString(b) for b in described.file_descriptor_response.file_descriptor_proto]
        router = next(f for f in files if f.package == "smcs.v1")
        service = next(s for s in router.service if s.name == "RouterService")
        assert {m.name for m in service.method} == ROUTER_METHODS
        # the v1 reflection service describes itself too
        (own,) = _reflect_v1(channel, V1_REQUEST(file_containing_symbol="grpc.reflection.v1.ServerReflection"))
        (v1_file,) = [FileDescriptorProto.FromString(b) for b in own.file_descriptor_response.file_descriptor_proto]
        assert (v1_file.name, v1_file.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    finally:
        channel.close()


# ------------------------------------------------------------------------ 8, 9. admission and deadlines


class SlowRoute:
    """Makes every ``Router.route_many`` (a batch of routes) wait ``delay_s`` (or until released) on the service's worker threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.delay_s = 0.0
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        original = Router.route_many  # what the servicer calls on its worker threads
        slow = self

        def route(router, *args, **kwargs):
            if slow.delay_s:
                slow.started.release()
                slow.release.wait(slow.delay_s)
            return original(router, *args, **kwargs)

        monkeypatch.setattr(Router, "route_many", route)


@pytest.fixture()
def slow_server(fresh_bank, monkeypatch):
    config = make_config(max_concurrent_rpcs=2, admission_wait_s=0.2, workers=3, inline_route_bytes=0)
    with running_server(fresh_bank, config) as handle:
        slow = SlowRoute(monkeypatch)  # after the start: warming the router up stays fast
        try:
            yield handle, slow
        finally:
            slow.delay_s = 0.0
            slow.release.set()


def _race(clients: list[Client], call: Callable[[Client], object]) -> list[object]:
    """``call`` on every client at once (each channel connected first); each result or RpcError."""
    barrier = threading.Barrier(len(clients))
    results: list[object] = []
    lock = threading.Lock()

    def run(c: Client) -> None:
        try:
            barrier.wait(30)
            outcome: object = call(c)
        except (grpc.RpcError, threading.BrokenBarrierError) as exc:
            outcome = exc
        with lock:
            results.append(outcome)

    for c in clients:
        assert c.health() == "SERVING"  # connect every channel first, one at a time
    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_a_sustained_overload_is_refused_with_the_limit_named_and_a_retry_pushback(slow_server):
    """Every slot stays taken (2 slow routes of 2 s) past the admission wait (0.2 s): the other calls are
    refused with RESOURCE_EXHAUSTED naming the limit and both settings, after about the wait, with
    gRPC's retry pushback in the trailing metadata."""
    handle, slow = slow_server
    slow.delay_s = 2.0
    query = queries_for(handle.bank_path, 1)[0]
    n_calls = 6
    clients = [handle.client(retries=0, timeout=30) for _ in range(n_calls)]
    started = time.monotonic()
    try:
        results = _race(clients, lambda c: c.route(embedding=query, seed=1))
    finally:
        for c in clients:
            c.close()
    assert len(results) == n_calls
    ok = [r for r in results if isinstance(r, RouteDecision)]
    refused = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(ok) == 2 and len(refused) == 4, [getattr(r, "details", lambda: r)() for r in results]
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        details = error.details()
        assert "all 2 slots ([server] max_concurrent_rpcs = 2)" in details and "admission_wait_s = 0.2" in details
        pushback = dict(error.trailing_metadata())["grpc-retry-pushback-ms"]
        assert 100 <= int(pushback) <= 300 and f"retry in {pushback} ms" in details  # the wait ± 50 %
        assert pushback_s(error) == int(pushback) / 1000
    assert time.monotonic() - started < 10
    # back to normal once the slow requests are done
    slow.delay_s = 0.0
    bank = Bank.open(handle.bank_path)
    with handle.client(retries=0) as c:
        for _ in range(3):
            assert_same_decision(c.route(embedding=query, seed=1), Router(bank, POLICY).route(query, seed=1), bank)


def test_a_burst_above_the_limit_queues_and_is_served_in_full(fresh_bank, monkeypatch):
    """200 concurrent Routes against a limit of 64: the calls beyond it wait for a slot (briefly) instead
    of being refused, and every one is served."""
    from smcs.service.admission import Admission

    full: list[int] = []
    original = Admission.acquire

    async def acquire(self, timeout):
        if self.in_flight >= self.limit:
            full.append(self.waiting)
        return await original(self, timeout)

    monkeypatch.setattr(Admission, "acquire", acquire)
    config = make_config(max_concurrent_rpcs=64, workers=2, inline_route_bytes=0)
    with running_server(fresh_bank, config) as handle:
        slow = SlowRoute(monkeypatch)
        slow.delay_s = 0.05  # each batch of routes holds its slots a while, so the burst piles up
        slow.release.clear()
        queries = queries_for(fresh_bank, 200)

        async def burst():
            async with AsyncClient(handle.target, retries=0, timeout=60) as c:
                return await asyncio.gather(
                    *(c.route(embedding=q, seed=i) for i, q in enumerate(queries)), return_exceptions=True
                )

        started = time.monotonic()
        results = asyncio.run(burst())
        elapsed = time.monotonic() - started
    errors = [r for r in results if not isinstance(r, RouteDecision)]
    assert not errors, [getattr(e, "details", lambda: e)() for e in errors[:3]]
    assert full, "no call found every slot taken: the burst did not exceed the limit"
    assert elapsed < 30


def test_the_client_retries_after_the_servers_pushback(slow_server):
    """A call refused as busy is retried by a client with retries after the pushback the server sent, and
    goes through once a slot frees; a client without retries gets the refusal."""
    handle, slow = slow_server
    slow.delay_s = 0.6
    query = queries_for(handle.bank_path, 1)[0]
    holders = [handle.client(retries=0, timeout=30) for _ in range(2)]
    try:
        results = []
        threads = [threading.Thread(target=lambda c=c: results.append(c.route(embedding=query, seed=1))) for c in holders]
        for c in holders:
            assert c.health() == "SERVING"
        for t in threads:
            t.start()
        registry = handle.running.metrics.registry
        wait_until(lambda: registry.get_sample_value("smcs_in_flight") == 2, 10, what="both slots taken")
        with handle.client(retries=0, timeout=30) as impatient:
            expect_rpc_error(lambda: impatient.route(embedding=query, seed=1), grpc.StatusCode.RESOURCE_EXHAUSTED, "slots")
        with handle.client(retries=20, timeout=30) as patient:
            assert patient.route(embedding=query, seed=1).seed == 1
        for t in threads:
            t.join(30)
        assert len(results) == 2
    finally:
        for c in holders:
            c.close()


def test_deadline_exceeded_returns_quickly(slow_server):
    handle, slow = slow_server
    slow.delay_s = 20.0
    query = queries_for(handle.bank_path, 1)[0]
    with handle.client(retries=0) as c:
        c.health()
        started = time.monotonic()
        expect_rpc_error(lambda: c.route(embedding=query, seed=1, timeout=0.2), grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 2.0
        assert slow.started.acquire(timeout=5)  # the request did reach the (slow) router
        slow.delay_s = 0.0
        slow.release.set()
        bank = Bank.open(handle.bank_path)
        assert_same_decision(c.route(embedding=query, seed=1), Router(bank, POLICY).route(query, seed=1), bank)


# ------------------------------------------------------------------------------ 10. reload under load


def test_reloads_and_writes_under_concurrent_load(fresh_server, fresh_bank):
    queries = queries_for(fresh_bank, 4)
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(4)]
    failures: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            with fresh_server.client(retries=0, timeout=30) as c:
                while not stop.is_set():
                    decision = c.route(embedding=queries[i], seed=i)
                    assert len(decision.referencers) == POLICY.k
                    seen[i].append(decision.bank_version)
                    time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        rng = np.random.default_rng(0)
        with fresh_server.client(retries=0, timeout=30) as admin:
            for round_ in range(5):
                time.sleep(0.5)  # ~3 s of load in all
                admin.append_questions(
                    [NewQuestion(id=f"load-{round_}", text="t", embedding=rng.standard_normal(DIM), outcomes={"model-01": 1})]
                )
                Bank.open(fresh_bank).record_outcomes([("model-02", f"load-{round_}", 0)])  # another writer
                assert admin.reload().version == Bank.open(fresh_bank).version
            final = Bank.open(fresh_bank).version
            # keep the load on until every thread has seen the final version
            wait_until(lambda: all(s and s[-1] == final for s in seen) or bool(failures), timeout=20, what="every thread to see the final version")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures
    assert Bank.versions(fresh_bank)[-1] == final and int(final[1:]) == 11
    for versions in seen:
        numbers = [int(v[1:]) for v in versions]
        assert numbers == sorted(numbers)
        assert numbers[-1] == int(final[1:])
        assert len(versions) > 5


# -------------------------------------------------------------------------------- 14. CLI end to end


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smcs.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_cli_serve_health_route_and_sigterm(fresh_bank, tmp_path):
    config = tmp_path / "smcs.toml"  # the paper's default k = 7 exceeds the bank's 6 models
    config.write_text('[server]\nhost = "127.0.0.1"\nport = 50051\n\n[policy]\nk = 4\nn_base = 50\n')
    stderr = open(tmp_path / "serve.err", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "smcs.cli", "serve", "--config", str(config), "--bank", str(fresh_bank), "--port", "0"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in server.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("smcs serve did not report it was serving within 60 s")
            if line is None:
                pytest.fail(f"smcs serve exited early: {(tmp_path / 'serve.err').read_text()}")
            match = re.match(r"smcs: serving bank (v\d+) on ([\d.]+):(\d+)$", line.strip())
            if match:
                assert match.group(1) == Bank.open(fresh_bank).version
                port = int(match.group(3))
        target = f"127.0.0.1:{port}"

        health = _cli("health", "--server", target)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr

        bank = Bank.open(fresh_bank)
        query = queries_for(fresh_bank, 1)[0]
        np.save(tmp_path / "q.npy", query)
        routed = _cli("route", "--embedding", str(tmp_path / "q.npy"), "--server", target, "--seed", "21", "--k", "3", "--json")
        assert routed.returncode == 0, routed.stderr
        assert json.loads(routed.stdout)["seed"] == "21"  # proto3 JSON: a 64-bit integer is a string
        local = Router(bank, Policy(k=3, n_base=50)).route(query, seed=21)  # --k over the file's policy
        assert_same_decision(decision_from_json(routed.stdout), local, bank)

        info = _cli("info", "--server", target)
        assert info.returncode == 0, info.stderr
        assert f"bank        {bank.version}" in info.stdout and "k=4 n_base=50" in info.stdout
        info_json = _cli("info", "--server", target, "--json")
        assert info_json.returncode == 0, info_json.stderr
        reported = json_format.Parse(info_json.stdout, pb.ServerInfoResponse())
        assert (reported.policy.k, reported.bank_version, reported.scorer) == (4, bank.version, pb.SCORER_VOTE)

        table = _cli("route", "--embedding", str(tmp_path / "q.npy"), "--server", target, "--seed", "21", "--k", "3", "--n", "2")
        assert table.returncode == 0, table.stderr
        assert "prior vote" in table.stdout and f"bank {bank.version}  seed 21" in table.stdout
        assert all(name in table.stdout for name in local.referencers)
        assert "subset 1:" in table.stdout and "subset 2:" not in table.stdout

        bad = _cli("route", "--embedding", str(tmp_path / "q.npy"), "--server", target, "--aggregator", "gpt-99")
        assert bad.returncode == 2
        assert "Traceback" not in bad.stderr and bad.stdout == ""
        assert bad.stderr.strip().count("\n") == 0
        assert "INVALID_ARGUMENT" in bad.stderr and "gpt-99" in bad.stderr

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        stderr.close()


@pytest.mark.slow
def test_cli_serve_on_a_taken_port_is_a_one_line_error(shared_server, shared_bank, tmp_path):
    config = tmp_path / "smcs.toml"
    config.write_text("[policy]\nk = 4\n")
    result = _cli("serve", "--config", str(config), "--bank", str(shared_bank), "--port", str(shared_server.port))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"smcs: error: cannot listen on 127.0.0.1:{shared_server.port}" in result.stderr
    with shared_server.client(retries=0) as c:
        assert c.health() == "SERVING"


@pytest.mark.slow
def test_cli_health_of_a_server_that_is_not_there_exits_nonzero():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _cli("health", "--server", f"127.0.0.1:{port}")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "UNAVAILABLE" in result.stderr
