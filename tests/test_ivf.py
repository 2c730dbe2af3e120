"""The IVF index of approximate retrieval: training, its lists, storage with a bank version, routing over it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smcs import Bank, Policy, Router
from smcs.bank import BankError, BankFormatError, ModelInfo, Question, ivf
from smcs.cli.main import main
from smcs.core.router import route_ivf
from smcs.kernels import reference
from smcs.synthetic import clustered_bank, queries_near

N, DIM, MODELS, NLIST = 3000, 32, 6, 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    embeddings, capability, _ = clustered_bank(N, DIM, MODELS, n_topics=40, seed=5)
    return embeddings, capability


@pytest.fixture(scope="module")
def index(data) -> ivf.IVFIndex:
    return ivf.train(data[0], NLIST, seed=3)


def _questions(start: int, stop: int) -> list[Question]:
    return [Question(id=f"q{i}", text=f"question {i}") for i in range(start, stop)]


def _create(path: Path, embeddings: np.ndarray, capability: np.ndarray) -> Bank:
    return Bank.create(
        path,
        embeddings=embeddings,
        capability=capability,
        questions=_questions(0, len(embeddings)),
        models=[ModelInfo(f"m{r}") for r in range(capability.shape[0])],
    )


def _lists_of(index: ivf.IVFIndex) -> np.ndarray:
    lists = np.empty(index.n_rows, dtype=np.int64)
    lists[np.asarray(index.rows)] = np.repeat(np.arange(index.nlist), index.list_sizes())
    return lists


def test_training_puts_every_row_once_in_the_list_of_its_most_similar_centroid(data, index):
    embeddings, _ = data
    ivf.check_covers(index, N)
    assert index.nlist == NLIST and index.trained_rows == N
    np.testing.assert_allclose(np.linalg.norm(index.centroids, axis=1), 1.0, atol=1e-5)
    sims = embeddings.astype(np.float64) @ index.centroids.astype(np.float64).T
    best = sims[np.arange(N), _lists_of(index)]
    assert np.all(best >= sims.max(axis=1) - 1e-5)
    for c in range(NLIST):
        members = index.rows[index.offsets[c] : index.offsets[c + 1]]
        assert np.all(np.diff(members) > 0), f"list {c} is not ascending"
    assert index.list_sizes().max() < N / 2, "k-means put half the bank in one list"


def test_training_is_deterministic_for_a_seed(data, index):
    again = ivf.train(data[0], NLIST, seed=3)
    np.testing.assert_array_equal(again.centroids, index.centroids)
    np.testing.assert_array_equal(again.rows, index.rows)


def test_probe_returns_the_lists_of_the_nearest_centroids(data, index):
    query = queries_near(data[0], 1, seed=9)[0]
    got = index.probe(query, 3)
    nearest = np.argsort(-(index.centroids @ query))[:3]
    want = np.concatenate([index.rows[index.offsets[c] : index.offsets[c + 1]] for c in nearest])
    np.testing.assert_array_equal(np.sort(got), np.sort(want))
    np.testing.assert_array_equal(np.sort(index.probe(query, NLIST + 5)), np.arange(N))


def test_vectors_are_the_rows_in_list_order(data, index):
    embeddings, _ = data
    assert index.vectors is None  # just trained: the bank store writes them
    copied = index.with_vectors(embeddings)
    np.testing.assert_array_equal(copied.vectors[5], embeddings[index.rows[5]])
    ivf.check_vectors(copied, embeddings)
    tampered = ivf.IVFIndex(index.centroids, index.offsets, index.rows, N, 3, copied.vectors[::-1].copy())
    with pytest.raises(ValueError, match="differs from the bank's rows"):
        ivf.check_vectors(tampered, embeddings)
    with pytest.raises(ValueError, match="has no ivf_vectors.npy"):
        ivf.check_vectors(index, embeddings)


def test_routing_over_the_vectors_equals_gathering_the_rows(data, index):
    embeddings, capability = data
    copied = index.with_vectors(embeddings)
    for query in queries_near(embeddings, 8, seed=11):
        gathered = route_ivf(index, embeddings, query, capability, 40, 0.95, nprobe=3)
        contiguous = route_ivf(copied, embeddings, query, capability, 40, 0.95, nprobe=3, threads=2)
        for got, want in zip(contiguous, gathered, strict=True):
            np.testing.assert_array_equal(got, want)


def test_extend_assigns_new_rows_and_keeps_the_old_lists(data, index):
    extra, _, _ = clustered_bank(200, DIM, MODELS, n_topics=40, seed=5 + 1)
    grown = index.extend(extra)
    ivf.check_covers(grown, N + 200)
    np.testing.assert_array_equal(_lists_of(grown)[:N], _lists_of(index))
    np.testing.assert_array_equal(_lists_of(grown)[N:], np.argmax(extra @ index.centroids.T, axis=1))
    assert grown.trained_rows == N and not grown.needs_rebuild
    assert index.extend(np.empty((0, DIM), np.float32)) is index
    with pytest.raises(ValueError, match="index's dimension"):
        index.extend(np.ones((2, DIM + 1), np.float32))


def test_needs_rebuild_once_the_bank_has_doubled(index):
    doubled = index.extend(np.tile(index.centroids[:1], (N, 1)))
    assert doubled.needs_rebuild and not index.needs_rebuild


@pytest.mark.parametrize(
    ("n", "nlist"), [(1, 1), (3, 1), (100, 2), (600, 8), (15_000, 256), (100_000, 1024), (1_000_000, 4096), (4_000_000, 8192)]
)
def test_default_nlist_is_the_power_of_two_nearest_four_root_n_with_a_full_training_sample(n, nlist):
    """4·√N, unless that leaves fewer than POINTS_PER_CENTROID rows a list (then N / POINTS_PER_CENTROID)."""
    assert ivf.default_nlist(n) == nlist


@pytest.mark.parametrize(("nlist", "nprobe"), [(1, 1), (5, 5), (8, 8), (256, 8), (1024, 16), (4096, 64)])
def test_default_nprobe_is_a_64th_of_the_lists_and_at_least_eight(nlist, nprobe):
    empty = ivf.IVFIndex(np.zeros((nlist, 4), np.float32), np.zeros(nlist + 1, np.int64), np.empty(0, np.int64), 0, 0)
    assert empty.default_nprobe == nprobe


def test_bad_training_arguments_are_named(data):
    with pytest.raises(ValueError, match="nlist must be an integer"):
        ivf.train(data[0][:10], 11)
    with pytest.raises(ValueError, match="nlist must be an integer"):
        ivf.train(data[0][:10], 0)
    with pytest.raises(ValueError, match="at least one row"):
        ivf.default_nlist(0)


# ------------------------------------------------------------------------------------- with the bank


def test_an_index_is_committed_with_its_version_and_carried_by_every_write(tmp_path, data, index):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings[:2000], capability[:, :2000])
    assert bank.index is None
    indexed = bank.with_index(ivf.train(embeddings[:2000], NLIST, seed=3))
    indexed.validate()
    assert indexed.manifest.index is not None and indexed.manifest.index.nlist == NLIST
    assert set(ivf.FILES) <= set(indexed.manifest.files)
    np.testing.assert_array_equal(indexed.index.vectors, indexed.embeddings[indexed.index.rows])

    appended = indexed.append_questions(embeddings[2000:], _questions(2000, N), capability[:, 2000:])
    appended.validate()  # which checks the vectors against the rows, the appended ones included
    ivf.check_covers(appended.index, N)
    np.testing.assert_array_equal(_lists_of(appended.index)[2000:], ivf.assign(appended.index.centroids, appended.embeddings[2000:]))

    recorded = appended.record_outcomes([("m0", "q1", 1)])
    np.testing.assert_array_equal(recorded.index.rows, appended.index.rows)
    added = recorded.add_model(ModelInfo("m-new"))
    np.testing.assert_array_equal(added.index.rows, appended.index.rows)
    added.validate()
    dropped = added.with_index(None)
    assert dropped.index is None and dropped.manifest.index is None
    dropped.validate()


def test_an_index_trained_on_an_older_snapshot_is_extended_when_swapped_in(tmp_path, data):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings[:2500], capability[:, :2500])
    trained = ivf.train(bank.embeddings, NLIST, seed=1)
    bank.append_questions(embeddings[2500:], _questions(2500, N), capability[:, 2500:])  # meanwhile the bank grows
    swapped = bank.with_index(trained)
    assert swapped.n_questions == N and swapped.index.trained_rows == 2500
    ivf.check_covers(swapped.index, N)


def test_an_index_that_does_not_fit_the_bank_is_refused(tmp_path, data, index):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings[:100], capability[:, :100])
    with pytest.raises(BankError, match="covers 3000 rows but the bank has only 100"):
        bank.with_index(index)
    small = ivf.train(np.ascontiguousarray(embeddings[:100, :16]), 4)
    with pytest.raises(BankError, match="dimension 16"):
        bank.with_index(small)
    assert Bank.versions(tmp_path / "b") == ["v000001"]


def test_a_corrupted_index_fails_validation_and_a_mismatched_one_fails_to_open(tmp_path, data):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings[:500], capability[:, :500]).with_index(ivf.train(embeddings[:500], 4))
    vdir = tmp_path / "b" / bank.version
    rows = np.load(vdir / ivf.ROWS)
    rows[[0, 1]] = rows[0]  # one row twice, another missing
    np.save(vdir / ivf.ROWS, rows)
    with pytest.raises(BankFormatError, match=ivf.ROWS):
        Bank.open(tmp_path / "b").validate()
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["index"]["nlist"] = 5
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match=ivf.CENTROIDS):
        Bank.open(tmp_path / "b")


# ------------------------------------------------------------------------------------------ routing


def test_ivf_route_is_the_exact_route_over_the_probed_rows(tmp_path, data, index):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings, capability).with_index(index)
    policy = Policy(k=3, n_base=50, retrieval="ivf", nprobe=4)
    router = Router(bank, policy)
    assert router.uses_index()
    for query in queries_near(embeddings, 10, seed=4):
        decision = router.route(query, seed=1)
        rows, sims, votes = reference.route_rows(
            bank.embeddings, bank.index.probe(query, 4), query, bank.capability, 50, policy.gamma
        )
        assert decision.support_rows == rows.tolist()
        np.testing.assert_allclose(decision.support_similarities, sims, rtol=1e-5)
        assert decision.referencers == [bank.model_names[r] for r in reference.top_k(votes, 3)]


def test_probing_every_list_gives_the_exact_decision(tmp_path, data, index):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings, capability).with_index(index)
    exact = Router(bank, Policy(k=3, retrieval="exact"))
    everything = Router(bank, Policy(k=3, retrieval="ivf", nprobe=NLIST))
    for query in queries_near(embeddings, 5, seed=2):
        assert everything.route(query, seed=7) == exact.route(query, seed=7)


def test_an_unset_nprobe_probes_the_index_default(tmp_path, data, index):
    """Policy.nprobe = None probes ``index.default_nprobe`` lists (8 of these 16), not all of them."""
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings, capability).with_index(index)
    assert index.default_nprobe == 8
    unset = Router(bank, Policy(k=3, n_base=200, retrieval="ivf"))
    eight = Router(bank, Policy(k=3, n_base=200, retrieval="ivf", nprobe=8))
    every = Router(bank, Policy(k=3, n_base=200, retrieval="ivf", nprobe=NLIST))
    queries = queries_near(embeddings, 8, seed=9)
    assert all(unset.route(q, seed=2) == eight.route(q, seed=2) for q in queries)
    assert any(unset.route(q, seed=2).support_rows != every.route(q, seed=2).support_rows for q in queries)


def test_ivf_recall_of_the_exact_support_set_on_clustered_data(tmp_path, data, index):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings, capability).with_index(index)
    exact = Router(bank, Policy(k=3, n_base=40, retrieval="exact"))
    approximate = Router(bank, Policy(k=3, n_base=40, retrieval="ivf", nprobe=4))
    recalls, same_top = [], 0
    for query in queries_near(embeddings, 40, noise=0.3, seed=6):
        want, got = exact.route(query, seed=0), approximate.route(query, seed=0)
        recalls.append(len(set(want.support_rows) & set(got.support_rows)) / len(want.support_rows))
        same_top += want.referencers == got.referencers
    assert np.mean(recalls) >= 0.9 and same_top >= 30, (np.mean(recalls), same_top)


def test_auto_uses_the_index_only_on_large_banks(tmp_path, data, index, monkeypatch):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings, capability)
    assert not Router(bank, Policy(k=3)).uses_index()  # no index
    indexed = bank.with_index(index)
    assert not Router(indexed, Policy(k=3)).uses_index()  # 3000 rows: below the threshold
    monkeypatch.setattr("smcs.core.router.IVF_AUTO_MIN_ROWS", 1000)
    assert Router(indexed, Policy(k=3)).uses_index()
    assert not Router(indexed, Policy(k=3, quantized=True)).uses_index()
    assert not Router(indexed, Policy(k=3, retrieval="exact")).uses_index()


def test_ivf_without_an_index_and_ivf_with_quantized_are_errors(tmp_path, data):
    embeddings, capability = data
    bank = _create(tmp_path / "b", embeddings[:100], capability[:, :100])
    with pytest.raises(ValueError, match="retrieval='ivf' needs an index.*smcs bank index"):
        Router(bank, Policy(k=3, retrieval="ivf"))
    with pytest.raises(ValueError, match="needs an index"):
        Router(bank, Policy(k=3)).route(embeddings[0], policy=Policy(k=3, retrieval="ivf"))
    with pytest.raises(ValueError, match="choose one"):
        Policy(quantized=True, retrieval="ivf")
    with pytest.raises(ValueError, match="retrieval must be one of"):
        Policy(retrieval="hnsw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        Policy(nprobe=0)


def test_cli_builds_shows_and_drops_the_index(tmp_path, data, capsys):
    embeddings, capability = data
    _create(tmp_path / "b", embeddings[:800], capability[:, :800])
    assert main(["bank", "index", str(tmp_path / "b"), "--nlist", "8", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "v000001 -> v000002" in out and "8 lists over 800 rows" in out
    assert main(["bank", "info", str(tmp_path / "b")]) == 0
    assert "index ivf-flat: 8 lists over 800 rows (trained on 800)" in capsys.readouterr().out
    assert main(["bank", "index", str(tmp_path / "b"), "--nlist", "801"]) == 2
    err = capsys.readouterr().err
    assert "nlist must be an integer in [1, 800]" in err and "Traceback" not in err
    assert main(["bank", "index", str(tmp_path / "b"), "--drop"]) == 0
    assert Bank.open(tmp_path / "b").index is None
