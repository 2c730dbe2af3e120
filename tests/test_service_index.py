"""The service over a bank with an IVF index: routing through it, and retraining it in the background."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
from service_harness import POLICY, make_bank, make_config, queries_for, running_server, wait_until

from smcs import Bank, Router
from smcs.bank import Question, ivf

IVF_POLICY = msgspec.structs.replace(POLICY, retrieval="ivf", nprobe=4)


def _outgrown_bank(path: Path) -> Bank:
    """A 600-question bank whose index was trained on its first 300 rows: it has doubled since."""
    bank = make_bank(path, n_questions=600)
    embeddings = np.asarray(bank.embeddings)
    first = Bank.create(
        path.with_name("first"),
        embeddings=embeddings[:300],
        capability=bank.capability[:, :300],
        questions=[Question(id=f"x{i}", text="") for i in range(300)],
        models=bank.models,
    )
    early = ivf.train(first.embeddings, 8, seed=4)
    outgrown = bank.with_index(early)
    assert outgrown.index.trained_rows == 300 and outgrown.index.needs_rebuild
    return outgrown


def test_the_service_routes_through_the_index_as_the_router_does(tmp_path: Path) -> None:
    bank = make_bank(tmp_path / "bank", n_questions=600)
    indexed = bank.with_index(ivf.train(bank.embeddings, 8, seed=1))
    router = Router(indexed, IVF_POLICY)
    with running_server(tmp_path / "bank", make_config(policy=IVF_POLICY, rebuild_index=False)) as server:
        with server.client(retries=0) as client:
            for query in queries_for(tmp_path / "bank", 5):
                got = client.route(embedding=query, seed=3)
                want = router.route(query, seed=3)
                assert got.referencers == want.referencers and got.bank_version == indexed.version


def test_retrieval_and_nprobe_are_per_request_overrides(tmp_path: Path) -> None:
    """Over a server whose default is the exact scan, a request that asks for ``ivf`` with some ``nprobe`` is
    routed through the index as the in-process Router routes with that policy, and the next request
    without overrides scans every row again."""
    path = tmp_path / "bank"
    bank = make_bank(path, n_questions=600)
    indexed = bank.with_index(ivf.train(bank.embeddings, 8, seed=1))
    exact = msgspec.structs.replace(POLICY, retrieval="exact", n_base=200)  # more rows than one list holds
    queries = queries_for(path, 5)
    narrow = [Router(indexed, msgspec.structs.replace(exact, retrieval="ivf", nprobe=1)).route(q, seed=3) for q in queries]
    full = [Router(indexed, exact).route(q, seed=3) for q in queries]
    assert any(n.support_rows != f.support_rows for n, f in zip(narrow, full)), "one list must miss support rows"
    with running_server(path, make_config(policy=exact, rebuild_index=False)) as server:
        with server.client(retries=0) as client:
            for query, want_narrow, want_full in zip(queries, narrow, full):
                got = client.route(embedding=query, seed=3, retrieval="ivf", nprobe=1, include_support=True)
                assert (got.support_rows, got.referencers) == (want_narrow.support_rows, want_narrow.referencers)
                got = client.route(embedding=query, seed=3, include_support=True)
                assert (got.support_rows, got.referencers) == (want_full.support_rows, want_full.referencers)


def test_an_outgrown_index_is_retrained_in_the_background_and_swapped_in(tmp_path: Path) -> None:
    outgrown = _outgrown_bank(tmp_path / "bank")
    with running_server(tmp_path / "bank", make_config(policy=IVF_POLICY)) as server:
        with server.client(retries=0) as client:
            assert server.running.state.retraining or Bank.open(tmp_path / "bank").version != outgrown.version
            wait_until(lambda: Bank.open(tmp_path / "bank").version != outgrown.version, 120, what="the retrained index")
            retrained = Bank.open(tmp_path / "bank")
            assert retrained.index.trained_rows == 600 and not retrained.index.needs_rebuild
            assert retrained.index.nlist == ivf.default_nlist(600)
            retrained.validate()
            wait_until(lambda: client.bank_info().version == retrained.version, 30, what="the swap")
            query = queries_for(tmp_path / "bank", 1)[0]
            assert client.route(embedding=query, seed=1).bank_version == retrained.version
    assert Bank.versions(tmp_path / "bank")[-1] == retrained.version  # one retraining, not one per swap


def test_retraining_can_be_turned_off(tmp_path: Path) -> None:
    outgrown = _outgrown_bank(tmp_path / "bank")
    with running_server(tmp_path / "bank", make_config(policy=IVF_POLICY, rebuild_index=False)) as server:
        assert not server.running.state.retraining
        with server.client(retries=0) as client:
            query = queries_for(tmp_path / "bank", 1)[0]
            assert client.route(embedding=query, seed=1).bank_version == outgrown.version
    assert Bank.versions(tmp_path / "bank")[-1] == outgrown.version
