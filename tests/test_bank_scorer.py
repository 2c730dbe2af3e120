"""A bank version's fitted scorer (scorer.json): committed and hashed like the data, read back equal,
carried by every later write (stale once the data or models change), dropped on request, and refused
when damaged."""

from __future__ import annotations

import hashlib
import json

import msgspec
import numpy as np
import pytest

from smcs import Policy, Router
from smcs.bank import Bank, BankError, BankFormatError, FittedScorer, ModelInfo, Question, ivf
from smcs.core.fit import fit_scorer
from smcs.synthetic import clustered_bank
from support.banks import clustered_test_bank

N, DIM, MODELS = 240, 16, 4
SCORER = "scorer.json"


def create(path) -> Bank:
    """The same bank (byte for byte) wherever it is created."""
    return clustered_test_bank(path, N, DIM, MODELS, seed=7)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> FittedScorer:
    return fit_scorer(create(tmp_path_factory.mktemp("fit") / "b"))


@pytest.fixture
def bank(tmp_path, fitted) -> tuple[Bank, Bank]:
    """(the unfitted first version, the version with the fit)."""
    first = create(tmp_path / "b")
    assert fitted.data == first.fitted_data()  # identical data: the fit made on the module's copy is fresh here
    return first, first.with_scorer(fitted)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_with_scorer_commits_a_version_that_hashes_the_fit(bank, fitted):
    first, new = bank
    assert first.scorer is None and first.manifest.scorer is None and SCORER not in first.manifest.files
    assert Bank.versions(new.path) == [first.version, new.version] and new.manifest.parent == first.version
    assert new.manifest.scorer == fitted.default
    vdir = new.path / new.version
    assert new.manifest.files[SCORER] == sha256(vdir / SCORER)
    assert msgspec.json.decode((vdir / SCORER).read_bytes(), type=FittedScorer) == fitted
    for name in first.manifest.files:  # the data are committed unchanged
        assert new.manifest.files[name] == first.manifest.files[name]
    assert new.scorer == fitted and not new.scorer_stale
    assert Bank.open(new.path).scorer == fitted
    assert Bank.open(new.path, first.version).scorer is None  # the earlier version is untouched
    new.validate()


def test_with_scorer_refuses_an_invalid_fit_naming_it(bank, fitted):
    first, _ = bank
    before = Bank.versions(first.path)
    with pytest.raises(BankError, match="fitted"):
        first.with_scorer(msgspec.structs.replace(fitted, folds=1))
    assert Bank.versions(first.path) == before


@pytest.mark.parametrize("write", ["append_questions", "record_outcomes"])
def test_data_writes_carry_the_fit_and_make_it_stale(bank, fitted, write):
    _, new = bank
    if write == "append_questions":
        extra, _, _ = clustered_bank(5, DIM, MODELS, seed=99)
        later = new.append_questions(extra, [Question(id=f"new{i}", text="x") for i in range(5)])
    else:
        later = new.record_outcomes([("m0", "q3", 1 - max(int(new.capability[0, 3]), 0))])
    assert later.scorer == fitted and later.manifest.scorer == fitted.default
    assert later.manifest.files[SCORER] == new.manifest.files[SCORER]
    assert later.scorer_stale and not new.scorer_stale
    assert Router(later, Policy(k=2)).fitted == fitted  # same models: a stale fit still routes
    later.validate()


def test_with_index_keeps_the_fit_fresh(bank, fitted):
    _, new = bank
    indexed = new.with_index(ivf.train(np.asarray(new.embeddings), nlist=4))
    assert indexed.index is not None and indexed.scorer == fitted and not indexed.scorer_stale
    refitted = indexed.with_scorer(fitted)  # and a fit keeps the index
    assert refitted.index is not None and refitted.manifest.index == indexed.manifest.index
    refitted.validate()


def test_add_model_carries_the_fit_but_the_router_ignores_it(bank, fitted):
    _, new = bank
    grown = new.add_model(ModelInfo(name="m-new"), outcomes=np.ones(N, np.int8))
    assert grown.scorer == fitted and grown.scorer_stale
    router = Router(grown, Policy(k=2))
    assert router.fitted is None
    decision = router.route(grown.embeddings[0], seed=0)
    assert decision.scorer == "vote" and len(decision.model_probabilities) == MODELS + 1
    with pytest.raises(ValueError, match="fit"):
        Router(grown, Policy(k=2, scorer="source"))
    with pytest.raises(ValueError, match="fit"):
        router.route(grown.embeddings[0], seed=0, policy=Policy(k=2, scorer="knn"))


def test_with_scorer_none_drops_the_fit(bank, fitted):
    _, new = bank
    dropped = new.with_scorer(None)
    assert dropped.scorer is None and dropped.manifest.scorer is None and not dropped.scorer_stale
    assert SCORER not in dropped.manifest.files and not (dropped.path / dropped.version / SCORER).exists()
    assert Bank.open(dropped.path).scorer is None
    assert Router(dropped, Policy(k=2)).fitted is None
    dropped.validate()
    # a later write does not bring it back
    assert dropped.record_outcomes([("m1", "q0", 1)]).scorer is None


def test_validate_catches_a_tampered_scorer_file(bank):
    _, new = bank
    path = new.path / new.version / SCORER
    record = json.loads(path.read_text())
    record["knn_alpha"] += 1.0  # still a valid fit, same default: only the hash can tell
    path.write_text(json.dumps(record))
    reopened = Bank.open(new.path)  # opening does not hash
    assert reopened.scorer.knn_alpha == new.scorer.knn_alpha + 1.0
    with pytest.raises(BankFormatError, match="scorer.json.*SHA-256"):
        reopened.validate()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("delete", "scorer.json is missing"),
        ("garbage", "scorer.json is not a valid fitted scorer"),
        ("bad field", "scorer.json is not a valid fitted scorer"),
        ("other default", "picks scorer"),
    ],
)
def test_a_manifest_naming_a_missing_or_corrupt_scorer_is_refused(bank, damage, message):
    _, new = bank
    path = new.path / new.version / SCORER
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"{not json")
    elif damage == "bad field":
        record = json.loads(path.read_text())
        record["folds"] = 1
        path.write_text(json.dumps(record))
    else:
        record = json.loads(path.read_text())
        record["default"] = next(s for s in ("vote", "source", "knn", "head") if s != record["default"])
        path.write_text(json.dumps(record))
    with pytest.raises(BankFormatError, match=message):
        Bank.open(new.path)


def test_a_manifest_whose_files_disagree_with_its_scorer_is_refused(bank):
    first, new = bank
    manifest_path = new.path / new.version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"][SCORER]  # names a scorer but does not hash its file
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match="lists files"):
        Bank.open(new.path)
    # and the other way round: a hashed scorer file the manifest does not name
    manifest_path = first.path / first.version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][SCORER] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match="lists files"):
        Bank.open(first.path, first.version)


def test_outcome_columns_place_known_outcomes_in_model_order_and_name_unknown_models(tmp_path):
    bank = create(tmp_path / "b")
    got = bank.outcome_columns([{"m2": 1}, {}, {"m0": 0, "m2": 0}], lambda j: f"line {j}")
    want = np.full((MODELS, 3), -1, np.int8)
    want[2, 0], want[0, 2], want[2, 2] = 1, 0, 0
    np.testing.assert_array_equal(got, want)
    with pytest.raises(BankError, match=r"^line 1: unknown model 'mx'"):
        bank.outcome_columns([{}, {"mx": 1}], lambda j: f"line {j}")
