"""``smcs bank migrate BANK``: a schema 1 bank becomes schema 2 as a new version with the same content; a bank
already in schema 2 is nothing to do; a missing or damaged bank is one line on stderr and exit status 2.
``smcs bank info`` says which schema the current version is in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smcs import Bank
from smcs.bank.schema import Question
from smcs.cli.main import main
from smcs.synthetic import create_clustered_bank


@pytest.fixture()
def v1_path(tmp_path: Path) -> Path:
    """A schema 1 bank with a history: created, then outcomes recorded and a question appended (three versions)."""
    path = tmp_path / "b"
    bank = create_clustered_bank(path, 300, 16, 5, seed=4, schema_version=1)
    bank = bank.record_outcomes([("model-01", "q7", 1), ("model-03", "q7", -1), ("model-00", "q250", 0)])
    row = np.random.default_rng(9).standard_normal((1, 16))
    bank.append_questions(row, [Question(id="late", text="a late question", source="topic-x", label="42")],
                          np.array([[1], [0], [-1], [1], [0]]))
    assert Bank.open(path).segments is None and len(Bank.versions(path)) == 3
    return path


def _same_content(a: Bank, b: Bank) -> None:
    """Assert that the two versions hold the same rows, outcomes, questions and models."""
    assert np.array_equal(np.asarray(a.embeddings), np.asarray(b.embeddings))
    assert np.array_equal(np.asarray(a.capability), np.asarray(b.capability))
    assert a.questions == b.questions
    assert a.models == b.models
    assert a.manifest.embedder == b.manifest.embedder and a.manifest.provenance == b.manifest.provenance


def test_migrate_makes_a_schema_2_version_of_the_same_content(v1_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = Bank.open(v1_path)
    capsys.readouterr()
    assert main(["bank", "migrate", str(v1_path)]) == 0
    out, err = capsys.readouterr()
    after = Bank.open(v1_path)
    assert after.version == "v000004" and after.manifest.parent == before.version
    assert f"version {before.version} -> {after.version}: schema 1 -> 2" in out
    assert "migrate: copying version v000003" in err and "error" not in err
    assert after.manifest.schema_version == 2 and after.manifest.segments is not None
    _same_content(before, after)
    after.validate()  # hashes of the segments and the version, shapes, values, unit rows, unique ids
    old = Bank.open(v1_path, version=before.version)  # earlier versions stay readable
    assert old.segments is None
    _same_content(before, old)


def test_migrate_carries_the_index_and_a_fresh_fit(v1_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "index", str(v1_path), "--nlist", "4"]) == 0
    assert main(["bank", "fit", str(v1_path), "--sample", "200", "--folds", "2"]) == 0
    before = Bank.open(v1_path)
    assert before.index is not None and before.scorer is not None and not before.scorer_stale
    assert main(["bank", "migrate", str(v1_path)]) == 0
    after = Bank.open(v1_path)
    assert after.segments is not None and after.index is not None
    assert after.index.nlist == 4 and np.array_equal(after.index.list_sizes(), before.index.list_sizes())
    assert after.scorer == before.scorer and not after.scorer_stale  # the same data: the fit stays fresh
    after.validate()
    capsys.readouterr()
    assert main(["bank", "info", str(v1_path)]) == 0
    out = capsys.readouterr().out
    assert "index ivf-flat: 4 lists" in out and "STALE" not in out


def test_writes_after_migrate_go_to_the_segments(v1_path: Path, tmp_path: Path) -> None:
    assert main(["bank", "migrate", str(v1_path)]) == 0
    migrated = Bank.open(v1_path)
    appended = migrated.append_questions(np.ones((1, 16)), [Question(id="after", text="after the migration")])
    recorded = appended.record_outcomes([("model-02", "after", 1)])
    assert recorded.segments is not None
    assert not (v1_path / recorded.version / "embeddings.npy").exists()  # no full copy in the new version
    assert recorded.n_questions == migrated.n_questions + 1
    assert recorded.capability[2, -1] == 1 and recorded.questions[-1].id == "after"
    np.testing.assert_array_equal(np.asarray(recorded.embeddings[:-1]), np.asarray(migrated.embeddings))
    recorded.validate()


def test_migrating_twice_is_nothing_to_do(v1_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "migrate", str(v1_path)]) == 0
    versions = Bank.versions(v1_path)
    capsys.readouterr()
    assert main(["bank", "migrate", str(v1_path)]) == 0
    out = capsys.readouterr().out
    assert f"version {versions[-1]}: already schema 2, nothing to do" in out
    assert Bank.versions(v1_path) == versions


def test_a_bank_created_in_schema_2_is_nothing_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s2"
    create_clustered_bank(path, 50, 8, 3, schema_version=2)
    assert main(["bank", "migrate", str(path)]) == 0
    assert "already schema 2, nothing to do" in capsys.readouterr().out
    assert Bank.versions(path) == ["v000001"]


def _one_error_line(err: str, *needles: str) -> None:
    """Assert that ``err`` is the one line ``smcs: error: ...`` holding every needle, with no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("smcs: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_a_missing_bank_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bank", "migrate", str(tmp_path / "nowhere")]) == 2
    _one_error_line(capsys.readouterr().err, str(tmp_path / "nowhere"), "not a bank")


def test_a_damaged_file_is_refused_before_anything_is_written(v1_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A flipped byte in the embeddings is found by the hashes (``Bank.open`` alone would not see it), so
    migrate does not carry it into the segments."""
    current = Bank.open(v1_path).version
    damaged = v1_path / current / "embeddings.npy"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0x40
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["bank", "migrate", str(v1_path)]) == 2
    _one_error_line(capsys.readouterr().err, str(damaged), "SHA-256")
    assert Bank.versions(v1_path) == ["v000001", "v000002", "v000003"]
    assert not (v1_path / "segments").exists() and Bank.open(v1_path).segments is None


def test_a_damaged_current_file_is_one_line_and_status_2(v1_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (v1_path / "CURRENT").write_text("garbage\n")
    assert main(["bank", "migrate", str(v1_path)]) == 2
    _one_error_line(capsys.readouterr().err, str(v1_path / "CURRENT"))


def test_the_console_script_reports_errors_as_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "smcs.cli", "bank", "migrate", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stdout == ""
    _one_error_line(done.stderr, str(tmp_path / "nowhere"))


def test_bank_info_shows_the_schema(v1_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["bank", "info", str(v1_path)]) == 0
    out = capsys.readouterr().out
    assert "schema 1: full files in every version" in out and "smcs bank migrate BANK" in out
    assert main(["bank", "migrate", str(v1_path)]) == 0
    capsys.readouterr()
    assert main(["bank", "info", str(v1_path)]) == 0
    out = capsys.readouterr().out
    assert "schema 2: shared append-only segments" in out and "schema 1" not in out
