"""Schema 2, the segment layout: writes that cost what they write, fold, migrate, prune, incremental refresh,
and the damage verify and open must find (DESIGN.md §4; docs/storage.md). The behaviour every layout shares
is tested on both in test_bank.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import msgspec
import numpy as np
import pytest

from smcs.bank import Bank, BankError, BankFormatError, ModelInfo, Question, segments, store

D = 4
N = 6
MODELS = (ModelInfo("alpha"), ModelInfo("beta"))


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def questions(ids: list[str]) -> list[Question]:
    return [Question(id=i, text=f"text of {i}", source="unit") for i in ids]


def capability(r: int, n: int) -> np.ndarray:
    return (np.arange(r * n).reshape(r, n) % 3) - 1


def create(path: Path, schema_version: int = 2) -> Bank:
    return Bank.create(
        path, embeddings=rows(N), capability=capability(2, N), questions=questions([f"q{i}" for i in range(N)]),
        models=MODELS, schema_version=schema_version,
    )


@pytest.fixture
def bank(tmp_path: Path) -> Bank:
    return create(tmp_path / "bank")


def seg_dir(bank: Bank) -> Path:
    return bank.path / segments.DIRECTORY


def sizes(bank: Bank) -> dict[str, int]:
    """Bytes of every file of the bank directory, by relative name."""
    return {str(p.relative_to(bank.path)): p.stat().st_size for p in bank.path.rglob("*") if p.is_file()}


def assert_same_content(a: Bank, b: Bank) -> None:
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.capability, b.capability)
    assert a.questions == b.questions and a.models == b.models


# ------------------------------------------------------------------------------------------- layout


def test_files_on_disk_follow_the_segment_layout(bank: Bank) -> None:
    assert sorted(p.name for p in bank.path.iterdir()) == [".lock", "CURRENT", "segments", "v000001"]
    assert sorted(p.name for p in (bank.path / "v000001").iterdir()) == ["manifest.json", "models.json"]
    assert sorted(p.name for p in seg_dir(bank).iterdir()) == [
        "capability-000001.npy", "embeddings.f32", "journal.jsonl", "outcomes-000001.log", "questions.jsonl",
    ]
    manifest = json.loads((bank.path / "v000001" / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["segments"]["embeddings"] == N * D * 4
    raw = np.fromfile(seg_dir(bank) / "embeddings.f32", dtype="<f4").reshape(N, D)
    np.testing.assert_allclose(raw, unit(rows(N)), rtol=1e-6)
    np.testing.assert_array_equal(np.load(seg_dir(bank) / "capability-000001.npy"), capability(2, N))
    for line in (seg_dir(bank) / "journal.jsonl").read_bytes().splitlines():
        extent = json.loads(line)
        data = (seg_dir(bank) / extent["file"]).read_bytes()[extent["offset"] : extent["offset"] + extent["length"]]
        assert hashlib.sha256(data).hexdigest() == extent["sha256"]


def test_a_write_adds_what_it_writes_and_shares_everything_else(bank: Bank) -> None:
    before = sizes(bank)
    new = bank.append_questions(rows(2, seed=1), questions(["n0", "n1"]), [[1, -1], [-1, 0]])
    after = sizes(new)
    lines = b"".join(msgspec.json.encode(q) + b"\n" for q in questions(["n0", "n1"]))
    assert after["segments/embeddings.f32"] - before["segments/embeddings.f32"] == 2 * D * 4
    assert after["segments/questions.jsonl"] - before["segments/questions.jsonl"] == len(lines)
    assert after["segments/outcomes-000001.log"] - before["segments/outcomes-000001.log"] == 2 * segments.RECORD.itemsize
    assert after["segments/capability-000001.npy"] == before["segments/capability-000001.npy"]  # the base is not rewritten
    assert sorted(p.name for p in (new.path / new.version).iterdir()) == ["manifest.json", "models.json"]
    linked = [(bank.path / v / "models.json").stat().st_ino for v in (bank.version, new.version)]
    assert linked[0] == linked[1]  # the unchanged model list is shared, not copied
    recorded = new.record_outcomes([("alpha", "q0", 0)])
    assert sizes(recorded)["segments/outcomes-000001.log"] - after["segments/outcomes-000001.log"] == segments.RECORD.itemsize
    assert sizes(recorded)["segments/embeddings.f32"] == after["segments/embeddings.f32"]


def test_every_version_stays_an_immutable_snapshot(bank: Bank) -> None:
    held = Bank.open(bank.path)
    _ = held.capability, held.questions
    grown = bank.append_questions(rows(1, seed=2), questions(["n0"]), [[1], [0]]).record_outcomes([("beta", "q1", 1)])
    grown = grown.add_model(ModelInfo("gamma"), [1] * (N + 1))
    for old in (held, Bank.open(bank.path, "v000001")):
        np.testing.assert_allclose(old.embeddings, unit(rows(N)), rtol=1e-6)
        np.testing.assert_array_equal(old.capability, capability(2, N))
        assert [q.id for q in old.questions] == [f"q{i}" for i in range(N)] and old.models == MODELS
    expected = np.vstack([np.hstack([capability(2, N), [[1], [0]]]), np.ones((1, N + 1), np.int8)])
    expected[1, 1] = 1
    np.testing.assert_array_equal(grown.capability, expected)
    np.testing.assert_array_equal(Bank.open(bank.path).capability, expected)


def test_the_last_record_of_a_cell_wins_across_writes(bank: Bank) -> None:
    for value in (1, 0, -1, 0):
        bank = bank.record_outcomes([("alpha", "q2", value)])
    assert Bank.open(bank.path).capability[0, 2] == 0


def test_a_tail_left_by_a_crashed_writer_is_ignored_then_cut(bank: Bank) -> None:
    with open(seg_dir(bank) / "embeddings.f32", "ab") as f:
        f.write(b"\x7f" * 40)
    with open(seg_dir(bank) / "outcomes-000001.log", "ab") as f:
        f.write(segments.encode_records(np.array([0]), np.array([0]), np.array([1])))
    reopened = Bank.open(bank.path)
    reopened.validate()
    np.testing.assert_array_equal(reopened.capability, capability(2, N))
    new = reopened.append_questions(rows(1, seed=3), questions(["n0"]))
    new.validate()
    assert (seg_dir(bank) / "embeddings.f32").stat().st_size == (N + 1) * D * 4
    assert (seg_dir(bank) / "outcomes-000001.log").stat().st_size == 0


def test_a_create_that_failed_before_current_can_be_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import smcs.bank.atomic as atomic

    def failing(path: Path, data: bytes) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(atomic, "replace_synced", failing)
    with pytest.raises(OSError):
        create(tmp_path / "bank")
    monkeypatch.undo()
    assert (tmp_path / "bank" / "segments").is_dir() and not (tmp_path / "bank" / "CURRENT").exists()
    create(tmp_path / "bank").validate()


# --------------------------------------------------------------------------------------------- fold


def test_fold_keeps_the_content_and_starts_an_empty_log(bank: Bank) -> None:
    grown = bank.record_outcomes([("alpha", "q0", 1), ("beta", "q5", -1)]).add_model(ModelInfo("gamma"), [0] * N)
    folded = grown.fold()
    assert folded.version == "v000004" and folded.manifest.parent == grown.version
    assert_same_content(folded, grown)
    assert (folded.segments.base, folded.segments.log, folded.segments.log_bytes) == ("capability-000002.npy", "outcomes-000002.log", 0)
    assert folded.fitted_data() == grown.fitted_data()  # the same data: a fit stays fresh across a fold
    folded.validate()
    assert folded.fold() is not folded and folded.fold().version == folded.version  # nothing to fold: no new version


def test_records_committed_while_a_fold_works_are_carried_into_its_new_log(bank: Bank, monkeypatch: pytest.MonkeyPatch) -> None:
    import smcs.bank.atomic as atomic

    bank = bank.record_outcomes([("alpha", "q0", 1)])
    real = atomic.write_synced

    def write_then_race(path: Path, fill: object) -> str:
        digest = real(path, fill)
        if path.name.startswith(".tmp-fold"):  # the fold's base is written, off the lock: another writer commits
            Bank.open(bank.path).record_outcomes([("beta", "q3", 0)]).append_questions(rows(1, seed=4), questions(["n0"]), [[1], [1]])
        return digest

    monkeypatch.setattr(atomic, "write_synced", write_then_race)
    folded = bank.fold()
    monkeypatch.undo()
    assert folded.segments.base == "capability-000002.npy" and folded.segments.log_bytes == 3 * segments.RECORD.itemsize
    expected = np.hstack([capability(2, N), [[1], [1]]])
    expected[0, 0], expected[1, 3] = 1, 0
    np.testing.assert_array_equal(folded.capability, expected)
    np.testing.assert_array_equal(Bank.open(bank.path).capability, expected)
    folded.validate()


def test_needs_fold_once_the_log_outgrows_its_base(bank: Bank, monkeypatch: pytest.MonkeyPatch) -> None:
    import smcs.bank.store as store

    monkeypatch.setattr(store, "FOLD_MIN_LOG_BYTES", 0)
    assert not bank.needs_fold
    # the base holds R·N = 12 bytes; two records are 16
    grown = bank.record_outcomes([("alpha", "q0", 1), ("beta", "q1", 0)])
    assert grown.needs_fold and not grown.fold().needs_fold
    assert not Bank.open(bank.path).needs_fold and not create(bank.path.parent / "v1", 1).needs_fold


# ------------------------------------------------------------------------------------------ migrate


def test_migrate_converts_a_schema_1_bank_with_the_same_content(tmp_path: Path) -> None:
    old = create(tmp_path / "bank", schema_version=1).record_outcomes([("beta", "q2", 1)])
    migrated = old.migrate()
    assert migrated.segments is not None and migrated.manifest.parent == old.version
    assert_same_content(migrated, old)
    assert migrated.fitted_data() == old.fitted_data()  # a fit of the schema 1 version stays fresh
    migrated.validate()
    Bank.open(old.path, old.version).validate()  # earlier versions stay readable
    assert migrated.migrate().version == migrated.version  # already schema 2: nothing to do
    grown = migrated.append_questions(rows(1, seed=5), questions(["n0"]))
    assert sorted(p.name for p in (grown.path / grown.version).iterdir()) == ["manifest.json", "models.json"]


def test_a_write_to_a_schema_1_bank_copies_the_version_as_before(tmp_path: Path) -> None:
    new = create(tmp_path / "bank", schema_version=1).record_outcomes([("alpha", "q0", 1)])
    assert new.segments is None and not (new.path / "segments").exists()
    assert sorted(p.name for p in (new.path / new.version).iterdir()) == [
        "capability.npy", "embeddings.npy", "manifest.json", "models.json", "questions.jsonl",
    ]


def test_create_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    with pytest.raises(BankError, match="schema_version must be one of 1, 2, got 3"):
        create(tmp_path / "bank", schema_version=3)


# -------------------------------------------------------------------------------------------- prune


def test_prune_removes_the_bases_and_logs_no_kept_version_holds(bank: Bank) -> None:
    folded = bank.record_outcomes([("alpha", "q0", 1)]).fold().record_outcomes([("beta", "q0", 1)])
    (seg_dir(bank) / ".tmp-fold-crashed.npy").write_bytes(b"partial")
    assert bank.prune(keep=3) == ["v000001"]  # v000002 still holds base 1 and its log
    assert {"capability-000001.npy", "outcomes-000001.log"} <= {p.name for p in seg_dir(bank).iterdir()}
    assert bank.prune(keep=2) == ["v000002"]
    assert sorted(p.name for p in seg_dir(bank).iterdir()) == [
        "capability-000002.npy", "embeddings.f32", "journal.jsonl", "outcomes-000002.log", "questions.jsonl",
    ]
    Bank.open(bank.path).validate()
    np.testing.assert_array_equal(Bank.open(bank.path).capability, folded.capability)


# ------------------------------------------------------------------------------------------ refresh


class ReadCounter:
    """Counts the bytes the segments are read by (``segments.read_at``, and the questions' byte range) and
    full loads of a version."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        self.loads = 0
        real_read, real_load, real_range = segments.read_at, Bank._load.__func__, store._pread_range

        def read_at(fd: int, start: int, end: int, path: Path) -> bytes:
            self.bytes += end - start
            return real_read(fd, start, end, path)

        def load(cls: type[Bank], root: Path, name: str) -> Bank:
            self.loads += 1
            return real_load(cls, root, name)

        def pread_range(fd: int, start: int, end: int | None) -> bytes:
            data = real_range(fd, start, end)
            self.bytes += len(data)
            return data

        monkeypatch.setattr(segments, "read_at", read_at)
        monkeypatch.setattr(store, "_pread_range", pread_range)
        monkeypatch.setattr(Bank, "_load", classmethod(load))


def test_refresh_reads_only_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 2000
    big = Bank.create(
        tmp_path / "bank", embeddings=rows(n), capability=capability(2, n), questions=questions([f"q{i}" for i in range(n)]),
        models=MODELS,
    ).record_outcomes([("alpha", f"q{i}", 1) for i in range(50)])
    held = Bank.open(big.path)
    old_capability, old_questions = held.capability, held.questions
    writer = Bank.open(big.path)
    writer.append_questions(rows(3, seed=6), questions(["n0", "n1", "n2"]), [[1, 0, -1], [-1, -1, 1]])
    writer.record_outcomes([("beta", "q7", 1)])
    counter = ReadCounter(monkeypatch)
    followed = held.refresh()
    assert followed.version == Bank.versions(big.path)[-1] and counter.loads == 0
    _ = followed.capability, followed.questions
    appended = sum(len(msgspec.json.encode(q)) + 1 for q in questions(["n0", "n1", "n2"]))
    assert counter.bytes == appended + 4 * segments.RECORD.itemsize  # the new lines and records, nothing else
    assert followed.questions[:n] == old_questions and followed.questions[0] is old_questions[0]  # parsed once
    monkeypatch.undo()
    fresh = Bank.open(big.path)
    assert_same_content(followed, fresh)
    np.testing.assert_array_equal(held.capability, old_capability)  # the snapshot held is unchanged
    assert followed.refresh() is followed


def test_refresh_after_a_fold_or_from_schema_1_reads_the_version_afresh(tmp_path: Path) -> None:
    bank = create(tmp_path / "bank")
    held = Bank.open(bank.path)
    _ = held.capability
    folded = bank.record_outcomes([("alpha", "q1", 1)]).fold()
    assert_same_content(held.refresh(), folded)
    v1 = create(tmp_path / "v1", schema_version=1)
    migrated = v1.migrate()
    assert_same_content(v1.refresh(), migrated) and v1.refresh().segments is not None


# ------------------------------------------------------------------------------------------- damage


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: _flip(d / "embeddings.f32", -1), r"embeddings.f32 has SHA-256 [0-9a-f]+ at bytes 96\.\.112 but the journal records"),
        (lambda d: _flip(d / "questions.jsonl", 3), r"questions.jsonl has SHA-256 [0-9a-f]+ at bytes 0\.\."),
        (lambda d: _flip(d / "capability-000001.npy", -1), "capability-000001.npy has SHA-256 [0-9a-f]+ but the manifest records"),
        (lambda d: _flip(d / "outcomes-000001.log", 0), "outcomes-000001.log has SHA-256"),
        (lambda d: (d / "journal.jsonl").write_bytes(b"\n".join((d / "journal.jsonl").read_bytes().splitlines()[:-1]) + b"\n"),
         "journal.jsonl"),
    ],
    ids=["appended rows", "questions", "base", "log", "journal"],
)
def test_verify_finds_damage_to_any_committed_byte(bank: Bank, damage, match: str) -> None:
    grown = bank.append_questions(rows(1, seed=7), questions(["n0"]), [[1], [0]])
    damage(seg_dir(bank))
    with pytest.raises(BankFormatError, match=match):
        Bank.open(grown.path, verify=True)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: os.truncate(d / "embeddings.f32", 17), r"embeddings.f32 holds 17 bytes but the manifest commits 6 rows of 4 float32"),
        (lambda d: (d / "embeddings.f32").unlink(), "embeddings.f32 is missing"),
        (lambda d: (d / "capability-000001.npy").unlink(), "capability-000001.npy is missing"),
        (lambda d: np.save(d / "capability-000001.npy", np.zeros((2, 5), np.int8)), r"capability-000001.npy holds int8 \(2, 5\)"),
        (lambda d: (d / "outcomes-000001.log").unlink(), "outcomes-000001.log is missing"),
        (lambda d: (d / "questions.jsonl").unlink(), "questions.jsonl is missing"),
    ],
    ids=["short rows", "no rows", "no base", "base shape", "no log", "no questions"],
)
def test_open_names_a_missing_or_short_segment(bank: Bank, damage, match: str) -> None:
    damage(seg_dir(bank))
    with pytest.raises(BankFormatError, match=match):
        Bank.open(bank.path)


def test_a_log_record_outside_the_matrix_is_named(bank: Bank) -> None:
    grown = bank.record_outcomes([("alpha", "q0", 1)])
    log = seg_dir(bank) / "outcomes-000001.log"
    log.write_bytes(segments.encode_records(np.array([N + 3]), np.array([0]), np.array([1])))
    with pytest.raises(BankFormatError, match=r"outcomes-000001.log record 0 \(row 9, model 0, value 1\) is not a valid outcome"):
        _ = Bank.open(grown.path).capability


def test_open_refuses_segments_in_a_schema_1_manifest(bank: Bank) -> None:
    path = bank.path / bank.version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match="schema_version 1 has segments"):
        Bank.open(bank.path)
