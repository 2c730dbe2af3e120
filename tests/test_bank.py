"""The bank store: round trips, versioning, validation, concurrency and corruption (DESIGN.md §4)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest

from smcs.bank import Bank, BankError, BankFormatError, EmbedderInfo, ModelInfo, Question, atomic, segments

D = 4
N = 5
MODELS = (
    ModelInfo("alpha", backend={"base_url": "http://a:8000/v1"}, cost_per_input_token=1e-6),
    ModelInfo("beta", cost_per_output_token=2e-6),
)


def rows(n: int, seed: int = 0, d: int = D) -> np.ndarray:
    """Random non-normalised float64 rows."""
    return np.random.default_rng(seed).standard_normal((n, d)) * 3.0


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def questions(ids: list[str]) -> list[Question]:
    return [Question(id=i, text=f"text of {i}", source="unit", label="A", metadata={"k": [1, 2]}) for i in ids]


def capability(r: int, n: int) -> np.ndarray:
    return (np.arange(r * n).reshape(r, n) % 3) - 1


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (except the lock) by relative name, with its bytes."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def create(path: Path, schema_version: int) -> Bank:
    return Bank.create(
        path,
        embeddings=rows(N),
        capability=capability(2, N),
        questions=questions([f"q{i}" for i in range(N)]),
        models=MODELS,
        schema_version=schema_version,
    )


@pytest.fixture(params=[1, 2], ids=["schema1", "schema2"])
def bank(tmp_path: Path, request: pytest.FixtureRequest) -> Bank:
    """The same bank in either layout: the behaviour of every operation is the same."""
    return create(tmp_path / "bank", request.param)


@pytest.fixture
def bank_v1(tmp_path: Path) -> Bank:
    """A schema 1 bank, for the tests of that layout's files."""
    return create(tmp_path / "bank", 1)


# -------------------------------------------------------------------------------------- round trips


def test_create_then_open_round_trips(bank: Bank) -> None:
    opened = Bank.open(bank.path)
    assert opened.version == bank.version == "v000001"
    assert Bank.versions(bank.path) == ["v000001"]
    np.testing.assert_allclose(opened.embeddings, unit(rows(N)), rtol=1e-6)
    np.testing.assert_array_equal(opened.capability, capability(2, N))
    assert opened.questions == tuple(questions([f"q{i}" for i in range(N)]))
    assert opened.models == MODELS
    assert opened.model_names == ("alpha", "beta")
    assert (opened.n_questions, opened.n_models, opened.dim) == (N, 2, D)
    assert opened.manifest.embedder == EmbedderInfo("unspecified", D)
    assert opened.manifest.parent is None
    assert opened.manifest.created.endswith("+00:00")
    assert opened.model_index("beta") == 1
    opened.validate()


def test_arrays_are_read_only_memory_maps(bank: Bank) -> None:
    assert isinstance(bank.embeddings, np.memmap)
    assert bank.embeddings.dtype == np.float32 and bank.embeddings.flags.c_contiguous
    assert bank.capability.dtype == np.int8
    for array in (bank.embeddings, bank.capability):
        with pytest.raises(ValueError, match="read-only"):
            array[0, 0] = 0


def test_files_on_disk_follow_the_layout(bank_v1: Bank) -> None:
    vdir = bank_v1.path / "v000001"
    assert (bank_v1.path / "CURRENT").read_text() == "v000001\n"
    assert sorted(p.name for p in vdir.iterdir()) == [
        "capability.npy",
        "embeddings.npy",
        "manifest.json",
        "models.json",
        "questions.jsonl",
    ]
    manifest = json.loads((vdir / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((vdir / name).read_bytes()).hexdigest() == digest
    assert [json.loads(line)["id"] for line in (vdir / "questions.jsonl").read_text().splitlines()] == [
        f"q{i}" for i in range(N)
    ]
    assert [m["name"] for m in json.loads((vdir / "models.json").read_text())] == ["alpha", "beta"]
    assert np.load(vdir / "embeddings.npy").shape == (N, D)


def test_create_normalises_rows_of_any_scale(tmp_path: Path) -> None:
    raw = np.array([[3, 4, 0, 0], [1e-30, 0, 0, 1e-30], [1e30, -1e30, 0, 0], [0, 0, 0, 7]], dtype=np.float64)
    bank = Bank.create(
        tmp_path / "b", embeddings=raw, capability=np.zeros((0, 4), int), questions=questions(list("abcd")), models=[]
    )
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        bank.embeddings,
        [[0.6, 0.8, 0, 0], [2**-0.5, 0, 0, 2**-0.5], [2**-0.5, -(2**-0.5), 0, 0], [0, 0, 0, 1]],
        rtol=1e-6,
    )


def test_create_accepts_integer_embeddings_and_named_embedder(tmp_path: Path) -> None:
    bank = Bank.create(
        tmp_path / "b",
        embeddings=[[1, 1], [0, 2]],
        capability=[[1, 0]],
        questions=questions(["a", "b"]),
        models=[ModelInfo("m")],
        embedder=EmbedderInfo("bge-small", 2),
    )
    assert Bank.open(bank.path).manifest.embedder == EmbedderInfo("bge-small", 2)
    np.testing.assert_allclose(bank.embeddings, [[2**-0.5, 2**-0.5], [0, 1]], rtol=1e-6)


def test_provenance_is_kept_by_every_derived_version_and_checked(tmp_path: Path) -> None:
    made = {"built_by": "smcs bank build", "questions_sha256": "ab12"}
    bank = Bank.create(tmp_path / "b", embeddings=[[1, 0]], capability=[[1]], questions=questions(["a"]),
                       models=[ModelInfo("m")], provenance=made)
    grown = bank.append_questions([[0, 1]], questions(["b"]))
    assert Bank.open(bank.path).manifest.provenance == made and grown.manifest.provenance == made
    assert grown.manifest.parent == bank.version
    with pytest.raises(BankError, match="provenance must map strings to strings"):
        Bank.create(tmp_path / "c", embeddings=[[1, 0]], capability=[[1]], questions=questions(["a"]),
                    models=[ModelInfo("m")], provenance={"count": 3})  # type: ignore[dict-item]
    assert not (tmp_path / "c" / "CURRENT").exists()


def test_an_empty_bank_grows_by_models_and_questions(tmp_path: Path) -> None:
    bank = Bank.create(
        tmp_path / "b", embeddings=np.zeros((0, 3)), capability=np.zeros((0, 0), int), questions=[], models=[]
    )
    assert (bank.n_questions, bank.n_models, bank.dim) == (0, 0, 3)
    bank = bank.add_model(ModelInfo("m"))
    bank = bank.append_questions([[1, 2, 2]], questions(["a"]), outcomes=[[1]])
    bank.validate()
    np.testing.assert_array_equal(bank.capability, [[1]])
    np.testing.assert_allclose(bank.embeddings, [[1 / 3, 2 / 3, 2 / 3]], rtol=1e-6)


# ------------------------------------------------------------------------------------------ writing


def test_append_questions_adds_normalised_rows_and_outcomes(bank: Bank) -> None:
    new = bank.append_questions(rows(2, seed=1), questions(["n0", "n1"]), outcomes=[[1, 0], [-1, 1]])
    assert new.version == "v000002" and new.manifest.parent == "v000001"
    assert Bank.versions(bank.path) == ["v000001", "v000002"]
    np.testing.assert_allclose(new.embeddings, unit(np.vstack([rows(N), rows(2, seed=1)])), rtol=1e-6)
    np.testing.assert_array_equal(new.capability, np.hstack([capability(2, N), [[1, 0], [-1, 1]]]))
    assert [q.id for q in new.questions] == [f"q{i}" for i in range(N)] + ["n0", "n1"]
    assert new.models == MODELS
    new.validate()


def test_append_questions_defaults_outcomes_to_unknown(bank: Bank) -> None:
    new = bank.append_questions(rows(1, seed=1), questions(["n0"]))
    np.testing.assert_array_equal(new.capability[:, N:], [[-1], [-1]])


def test_record_outcomes_sets_cells(bank: Bank) -> None:
    new = bank.record_outcomes([("alpha", "q0", 1), ("beta", "q4", -1), ("beta", "q1", np.int64(0))])
    expected = capability(2, N)
    expected[0, 0], expected[1, 4], expected[1, 1] = 1, -1, 0
    np.testing.assert_array_equal(new.capability, expected)
    np.testing.assert_array_equal(new.embeddings, bank.embeddings)
    assert new.questions == bank.questions
    new.validate()


def test_add_model_appends_a_row(bank: Bank) -> None:
    gamma = ModelInfo("gamma", backend={"served_name": "g"})
    new = bank.add_model(gamma)
    assert new.models == (*MODELS, gamma) and new.model_index("gamma") == 2
    np.testing.assert_array_equal(new.capability, np.vstack([capability(2, N), np.full((1, N), -1)]))
    newer = new.add_model(ModelInfo("delta"), outcomes=[1, 0, 1, 0, 1])
    np.testing.assert_array_equal(newer.capability[3], [1, 0, 1, 0, 1])
    newer.validate()


def test_old_version_stays_readable_and_unchanged_while_a_writer_appends(bank: Bank) -> None:
    reader = Bank.open(bank.path)  # questions not parsed yet
    before_files = snapshot(bank.path / reader.version)
    before = np.array(reader.embeddings), np.array(reader.capability)
    latest = bank
    for i in range(3):
        latest = latest.append_questions(rows(1, seed=10 + i), questions([f"n{i}"]), outcomes=[[1], [0]])
        latest = latest.record_outcomes([("alpha", "q0", 0)])
    assert snapshot(bank.path / reader.version) == before_files
    np.testing.assert_array_equal(reader.embeddings, before[0])
    np.testing.assert_array_equal(reader.capability, before[1])
    assert len(reader.questions) == N
    reader.validate()
    assert not reader.is_current() and latest.is_current()
    assert reader.latest().version == latest.version and latest.latest() is latest


def test_reader_keeps_its_snapshot_after_its_version_is_pruned(bank: Bank) -> None:
    reader = Bank.open(bank.path)
    expected = np.array(reader.embeddings)
    bank.append_questions(rows(1, seed=1), questions(["n0"])).prune(keep=1)
    assert not (bank.path / reader.version).exists()
    assert [q.id for q in reader.questions] == [f"q{i}" for i in range(N)]
    np.testing.assert_array_equal(reader.embeddings, expected)


def test_open_reads_an_older_committed_version(bank: Bank) -> None:
    bank.append_questions(rows(1, seed=1), questions(["n0"]))
    old = Bank.open(bank.path, "v000001")
    assert old.n_questions == N and old.version == "v000001"
    with pytest.raises(BankError, match="'v000009' is not a committed version"):
        Bank.open(bank.path, "v000009")


def test_writes_apply_to_the_latest_version_not_a_stale_snapshot(bank: Bank) -> None:
    stale = bank
    bank.append_questions(rows(1, seed=1), questions(["n0"]))
    recorded = stale.record_outcomes([("alpha", "n0", 1)])
    assert recorded.n_questions == N + 1 and recorded.capability[0, N] == 1
    added = stale.add_model(ModelInfo("gamma"))
    assert added.n_questions == N + 1 and added.capability[0, N] == 1 and added.n_models == 3
    with pytest.raises(BankError, match=r"questions\[0\].id 'n0' is already in the bank"):
        stale.append_questions(rows(1, seed=2), questions(["n0"]))


def _append_many(bank: Bank, prefix: str, count: int, start: threading.Barrier) -> None:
    start.wait()
    for i in range(count):
        bank.append_questions(rows(1, seed=i), questions([f"{prefix}{i}"]))


def test_concurrent_writer_threads_lose_no_update(bank: Bank) -> None:
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_append_many, args=(bank, p, 20, start)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = Bank.open(bank.path)
    assert final.n_questions == N + 40
    assert {q.id for q in final.questions} >= {f"{p}{i}" for p in "ab" for i in range(20)}
    assert len(Bank.versions(bank.path)) == 41
    final.validate()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from smcs.bank import Bank, Question
    bank = Bank.open(sys.argv[1])  # one stale snapshot for every append
    sys.stdin.readline()  # start together
    for i in range(20):
        row = np.random.default_rng(i).standard_normal((1, bank.dim))
        bank.append_questions(row, [Question(f"{sys.argv[2]}{i}", "t")], outcomes=[[1]] * bank.n_models)
    """
)


def test_concurrent_writer_processes_lose_no_update(bank: Bank) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(bank.path), p], stdin=subprocess.PIPE, text=True)
        for p in ("a", "b")
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.close()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    final = Bank.open(bank.path)
    assert final.n_questions == N + 40
    assert {q.id for q in final.questions} >= {f"{p}{i}" for p in "ab" for i in range(20)}
    final.validate()


def test_prune_keeps_the_newest_versions(bank: Bank) -> None:
    latest = bank
    for i in range(4):
        latest = latest.append_questions(rows(1, seed=i), questions([f"n{i}"]))
    assert bank.prune(keep=2) == ["v000001", "v000002", "v000003"]
    assert Bank.versions(bank.path) == ["v000004", "v000005"]
    assert bank.prune(keep=1) == ["v000004"]
    assert bank.prune(keep=1) == []
    assert Bank.open(bank.path).version == "v000005"
    assert latest.append_questions(rows(1, seed=9), questions(["n9"])).version == "v000006"
    for keep in (0, -1, 1.5, True):
        with pytest.raises(BankError, match="keep must be an integer >= 1"):
            bank.prune(keep)


def test_orphan_and_scratch_left_by_a_crash_are_invisible_then_cleared(bank: Bank) -> None:
    shutil.copytree(bank.path / "v000001", bank.path / "v000002")  # published, CURRENT never swapped
    (bank.path / ".tmp-crashed").mkdir()
    (bank.path / ".tmp-crashed" / "embeddings.npy").write_bytes(b"partial")
    assert Bank.versions(bank.path) == ["v000001"]
    assert Bank.open(bank.path).version == "v000001"
    with pytest.raises(BankError, match="'v000002' is not a committed version"):
        Bank.open(bank.path, "v000002")
    new = bank.append_questions(rows(1, seed=1), questions(["n0"]))
    assert new.version == "v000003"  # the orphan's number is skipped, never reused
    segments = [] if bank.segments is None else ["segments"]
    assert sorted(p.name for p in bank.path.iterdir()) == [".lock", "CURRENT", *segments, "v000001", "v000003"]
    assert Bank.versions(bank.path) == ["v000001", "v000003"]


# ------------------------------------------------------------------------------- input validation


BAD_WRITES: list[tuple[str, Callable[[Bank], object], str]] = [
    ("1-D embeddings", lambda b: b.append_questions(np.ones(D), questions(["n"])), "embeddings must be a 2-D array"),
    ("no rows", lambda b: b.append_questions(np.ones((0, D)), []), "embeddings has no rows"),
    (
        "string embeddings",
        lambda b: b.append_questions([["a"] * D], questions(["n"])),
        "embeddings must hold real numbers",
    ),
    (
        "NaN",
        lambda b: b.append_questions([[1, 0, 0, 0], [np.nan, 0, 0, 0]], questions(["n", "m"])),
        "embeddings row 1 is not finite",
    ),
    (
        "zero row",
        lambda b: b.append_questions(np.vstack([rows(3), np.zeros((1, D))]), questions(list("abcd"))),
        "embeddings row 3 is a zero vector",
    ),
    (
        "dim",
        lambda b: b.append_questions(rows(1, d=D + 1), questions(["n"])),
        f"embeddings have dimension {D + 1} but the bank's dimension is {D}",
    ),
    (
        "count",
        lambda b: b.append_questions(rows(2), questions(["n"])),
        "questions has 1 entries but embeddings has 2 rows",
    ),
    (
        "empty id",
        lambda b: b.append_questions(rows(1), questions([""])),
        r"questions\[0\]: Expected `str` of length >= 1 - at `\$.id`",
    ),
    (
        "wrong type",
        lambda b: b.append_questions(rows(1), [Question("n", 5)]),
        r"questions\[0\]: Expected `str`, got `int` - at `\$.text`",
    ),
    (
        "not JSON",
        lambda b: b.append_questions(rows(1), [Question("n", "t", metadata={"x": object()})]),
        r"questions\[0\]: Encoding objects of type object",
    ),
    (
        "not a Question",
        lambda b: b.append_questions(rows(1), [{"id": "n"}]),
        r"questions\[0\] is a dict, not a Question",
    ),
    (
        "dup in write",
        lambda b: b.append_questions(rows(8), questions([f"n{i}" for i in range(7)] + ["n5"])),
        r"questions\[7\].id 'n5' is a duplicate",
    ),
    (
        "dup in bank",
        lambda b: b.append_questions(rows(2), questions(["n", "q3"])),
        r"questions\[1\].id 'q3' is already in the bank",
    ),
    (
        "outcome rows",
        lambda b: b.append_questions(rows(1), questions(["n"]), [[1]]),
        "outcomes has 1 rows but there are 2 models",
    ),
    (
        "outcome cols",
        lambda b: b.append_questions(rows(1), questions(["n"]), [[1, 1], [0, 0]]),
        "outcomes has 2 columns but there are 1 new questions",
    ),
    (
        "outcome ndim",
        lambda b: b.append_questions(rows(1), questions(["n"]), [1, 1]),
        r"outcomes must be 2-D \(models x new questions\)",
    ),
    (
        "outcome value",
        lambda b: b.append_questions(rows(2), questions(["n", "m"]), [[1, 1], [0, 2]]),
        r"outcomes\[1, 1\] is 2; allowed values are -1, 0, 1",
    ),
    ("outcome wrap", lambda b: b.append_questions(rows(1), questions(["n"]), [[257], [0]]), r"outcomes\[0, 0\] is 257"),
    (
        "outcome float",
        lambda b: b.append_questions(rows(1), questions(["n"]), [[1.0], [0.0]]),
        "outcomes must hold integers",
    ),
    (
        "ragged",
        lambda b: b.append_questions(rows(2), questions(["n", "m"]), [[1, 1], [0]]),
        "outcomes is not a rectangular array",
    ),
    ("record empty", lambda b: b.record_outcomes([]), "outcomes is empty"),
    (
        "record model",
        lambda b: b.record_outcomes([("alpha", "q0", 1), ("zeta", "q0", 1)]),
        r"outcomes\[1\] names unknown model 'zeta'",
    ),
    (
        "record question",
        lambda b: b.record_outcomes([("alpha", "q9", 1)]),
        r"outcomes\[0\] names unknown question id 'q9'",
    ),
    (
        "record value",
        lambda b: b.record_outcomes([("alpha", "q0", 3)]),
        r"outcomes\[0\] value 3 is not one of -1, 0, 1",
    ),
    ("record str value", lambda b: b.record_outcomes([("alpha", "q0", "1")]), r"outcomes\[0\] value '1' is not one of"),
    (
        "record shape",
        lambda b: b.record_outcomes([("alpha", "q0")]),
        r"outcomes\[0\] must be a \(model name, question id, value\) triple",
    ),
    (
        "record repeat",
        lambda b: b.record_outcomes([("alpha", "q0", 1), ("alpha", "q0", 0)]),
        r"outcomes\[1\] repeats \('alpha', 'q0'\)",
    ),
    ("model dup", lambda b: b.add_model(ModelInfo("beta")), "model.name 'beta' is already in the bank"),
    ("model empty", lambda b: b.add_model(ModelInfo("")), r"model: Expected `str` of length >= 1 - at `\$.name`"),
    (
        "model cost",
        lambda b: b.add_model(ModelInfo("g", cost_per_input_token=-1.0)),
        r"model: Expected `float` >= 0.0 - at `\$.cost_per_input_token`",
    ),
    (
        "model outcomes",
        lambda b: b.add_model(ModelInfo("g"), [1, 0]),
        f"outcomes has 2 entries but there are {N} questions",
    ),
    ("model outcomes 2-D", lambda b: b.add_model(ModelInfo("g"), [[1] * N]), r"outcomes must be 1-D \(questions\)"),
]


@pytest.mark.parametrize(("case", "write", "match"), BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_a_bad_write_names_the_field_and_leaves_the_bank_as_it_was(
    bank: Bank, case: str, write: Callable[[Bank], object], match: str
) -> None:
    before = snapshot(bank.path)
    with pytest.raises(BankError, match=match):
        write(bank)
    assert snapshot(bank.path) == before


def _create_kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = dict(
        embeddings=rows(3), capability=capability(2, 3), questions=questions(["a", "b", "c"]), models=MODELS
    )
    kwargs.update(overrides)
    return kwargs


BAD_CREATES = [
    ("cap rows", _create_kwargs(capability=capability(3, 3)), "capability has 3 rows but there are 2 models"),
    ("cap cols", _create_kwargs(capability=capability(2, 4)), "capability has 4 columns but there are 3 questions"),
    ("cap value", _create_kwargs(capability=[[1, 1, 1], [1, -2, 1]]), r"capability\[1, 1\] is -2"),
    ("model dup", _create_kwargs(models=[ModelInfo("a"), ModelInfo("a")]), r"models\[1\].name 'a' is a duplicate"),
    (
        "model empty",
        _create_kwargs(models=[ModelInfo("a"), ModelInfo("")]),
        r"models\[1\]: Expected `str` of length >= 1",
    ),
    (
        "embedder dim",
        _create_kwargs(embedder=EmbedderInfo("e", 8)),
        f"embedder.dim 8 does not match the embeddings' dimension {D}",
    ),
    (
        "embedder id",
        _create_kwargs(embedder=EmbedderInfo("", D)),
        r"embedder: Expected `str` of length >= 1 - at `\$.id`",
    ),
    ("zero columns", _create_kwargs(embeddings=np.ones((3, 0))), "embeddings must have at least one column"),
    ("dup id", _create_kwargs(questions=questions(["a", "b", "a"])), r"questions\[2\].id 'a' is a duplicate"),
]


@pytest.mark.parametrize(("case", "kwargs", "match"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_a_bad_create_names_the_field_and_writes_nothing(tmp_path: Path, case: str, kwargs: dict, match: str) -> None:
    with pytest.raises(BankError, match=match):
        Bank.create(tmp_path / "b", **kwargs)
    assert not (tmp_path / "b").exists()


def test_create_refuses_a_non_empty_directory(bank: Bank, tmp_path: Path) -> None:
    with pytest.raises(BankError, match="is not empty"):
        Bank.create(bank.path, **_create_kwargs())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BankError, match=r"is not empty \(holds notes.txt\)"):
        Bank.create(tmp_path / "other", **_create_kwargs())
    (tmp_path / "empty").mkdir()
    assert Bank.create(tmp_path / "empty", **_create_kwargs()).n_questions == 3


def test_unknown_model_index_names_the_model(bank: Bank) -> None:
    with pytest.raises(BankError, match="unknown model 'zeta'; the bank's models are: 'alpha', 'beta'"):
        bank.model_index("zeta")


def test_a_write_failing_midway_leaves_no_trace(bank: Bank, monkeypatch: pytest.MonkeyPatch) -> None:
    """The third file of a schema 1 version, the second extent of a schema 2 write (what the first appended
    is cut off again)."""
    before = snapshot(bank.path)
    module, name = (atomic, "write_synced") if bank.segments is None else (segments, "_write_at")
    real = getattr(module, name)
    calls = []

    def failing(*args: object) -> object:
        calls.append(args)
        if len(calls) == (3 if bank.segments is None else 2):
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(module, name, failing)
    with pytest.raises(OSError, match="No space left"):
        bank.append_questions(rows(1, seed=1), questions(["n0"]))
    assert snapshot(bank.path) == before


def test_a_write_failing_before_the_current_swap_removes_its_version(
    bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(bank.path)

    def failing_replace(path: Path, data: bytes) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(atomic, "replace_synced", failing_replace)
    with pytest.raises(OSError, match="I/O error"):
        bank.add_model(ModelInfo("gamma"))
    assert snapshot(bank.path) == before
    monkeypatch.undo()
    assert bank.add_model(ModelInfo("gamma")).version == "v000002"


# ------------------------------------------------------------------------------------- corruption


def questions_file(bank: Bank) -> Path:
    """Where the bank's questions are: in its version (schema 1) or its segments."""
    return bank.path / (bank.version if bank.segments is None else "segments") / "questions.jsonl"


def test_open_does_not_read_the_questions(bank: Bank) -> None:
    path = questions_file(bank)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[2:]))
    opened = Bank.open(bank.path)  # would fail if it parsed questions.jsonl
    assert opened.n_questions == N
    with pytest.raises(BankFormatError, match=r"questions\.jsonl line 2 is not a valid question"):
        _ = opened.questions
    with pytest.raises(BankFormatError, match=r"questions\.jsonl line 2"):
        _ = opened.questions  # still failing, not half-cached


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _remove(path: Path) -> None:
    path.unlink()


def _reshape_npy(path: Path) -> None:
    array = np.load(path)
    np.save(path, array[:-1])


def _current_names_missing(bank_path: Path) -> None:
    (bank_path / "CURRENT").write_text("v000042\n")


def _current_garbage(bank_path: Path) -> None:
    (bank_path / "CURRENT").write_text("latest\n")


def _one_model_too_few(path: Path) -> None:
    path.write_bytes(msgspec.json.encode(MODELS[:1]))


def _schema_from_the_future(path: Path) -> None:
    path.write_bytes(re.sub(rb'"schema_version": \d+', b'"schema_version": 3', path.read_bytes()))


CORRUPT_DATA_ON_OPEN = [  # schema 1: the data files of a version
    ("truncated embeddings", "embeddings.npy", _truncate, "embeddings.npy is not a readable .npy"),
    ("truncated capability", "capability.npy", _truncate, "capability.npy is not a readable .npy"),
    ("empty embeddings", "embeddings.npy", lambda p: p.write_bytes(b""), "embeddings.npy is not a readable .npy"),
    (
        "reshaped embeddings",
        "embeddings.npy",
        _reshape_npy,
        r"embeddings.npy holds float32 \(4, 4\), expected C-ordered float32 \(5, 4\)",
    ),
    ("missing embeddings", "embeddings.npy", _remove, "embeddings.npy is missing"),
    ("missing questions", "questions.jsonl", _remove, "questions.jsonl is missing"),
]
CORRUPT_ON_OPEN = [  # either schema: the files of its own every version has
    ("missing manifest", "manifest.json", _remove, "manifest.json is missing"),
    ("garbled manifest", "manifest.json", _truncate, "manifest.json is not a valid manifest"),
    ("future schema", "manifest.json", _schema_from_the_future, "manifest.json has schema_version 3; this code reads 1 and 2"),
    ("models count", "models.json", _one_model_too_few, "models.json lists 1 models but the manifest says 2"),
    (
        "models garbled",
        "models.json",
        lambda p: p.write_bytes(b'[{"nam": "x"}]'),
        "models.json is not a valid model list",
    ),
]


@pytest.mark.parametrize(("case", "file", "corrupt", "match"), CORRUPT_ON_OPEN, ids=[c[0] for c in CORRUPT_ON_OPEN])
def test_open_rejects_a_corrupt_file_naming_it(bank: Bank, case: str, file: str, corrupt: Callable, match: str) -> None:
    corrupt(bank.path / bank.version / file)
    with pytest.raises(BankFormatError, match=match):
        Bank.open(bank.path)


@pytest.mark.parametrize(
    ("case", "file", "corrupt", "match"), CORRUPT_DATA_ON_OPEN, ids=[c[0] for c in CORRUPT_DATA_ON_OPEN]
)
def test_open_rejects_a_corrupt_data_file_naming_it(bank_v1: Bank, case: str, file: str, corrupt: Callable, match: str) -> None:
    test_open_rejects_a_corrupt_file_naming_it(bank_v1, case, file, corrupt, match)


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (_current_names_missing, "CURRENT names v000042 but .*v000042 does not exist"),
        (_current_garbage, "CURRENT holds 'latest\\\\n', not a version name"),
        (lambda p: (p / "CURRENT").unlink(), "CURRENT is missing"),
    ],
)
def test_open_rejects_a_bad_current_pointer(bank: Bank, corrupt: Callable, match: str) -> None:
    corrupt(bank.path)
    with pytest.raises(BankFormatError, match=match):
        Bank.open(bank.path)


def _edit_text(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"text of q3", b"text of q3!"))


def _flip_capability(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] = (data[-1] + 1) % 2
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("file", "corrupt"),
    [
        ("questions.jsonl", _edit_text),
        ("capability.npy", _flip_capability),
        ("models.json", lambda p: p.write_bytes(p.read_bytes() + b" ")),
    ],
)
def test_validate_catches_an_edit_that_open_cannot_see(bank: Bank, file: str, corrupt: Callable) -> None:
    if bank.segments is None:
        path, recorded = bank.path / bank.version / file, "the manifest records"
    elif file == "questions.jsonl":
        path, recorded = questions_file(bank), "the journal records"
    elif file == "capability.npy":
        path, recorded = bank.path / "segments" / bank.segments.base, "the manifest records"
    else:
        path, recorded = bank.path / bank.version / file, "the manifest records"
    corrupt(path)
    opened = Bank.open(bank.path)
    with pytest.raises(BankFormatError, match=f"{path.name} has SHA-256 [0-9a-f]+ (at bytes [0-9.]+ )?but {recorded}"):
        opened.validate()


def _tamper(bank: Bank, file: str, data: bytes) -> None:  # schema 1
    """Replace a data file *and* its manifest hash, so only the semantic checks of validate can object."""
    vdir = bank.path / bank.version
    (vdir / file).write_bytes(data)
    manifest = json.loads((vdir / "manifest.json").read_text())
    manifest["files"][file] = hashlib.sha256(data).hexdigest()
    (vdir / "manifest.json").write_text(json.dumps(manifest))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_validate_checks_contents_behind_matching_hashes(bank_v1: Bank) -> None:
    cases = []
    cap = np.array(bank_v1.capability)
    cap[1, 2] = 5
    cases.append(("capability.npy", _npy_bytes(cap), r"capability.npy entry \[1, 2\] is 5"))
    emb = np.array(bank_v1.embeddings)
    emb[3] *= 1.01
    cases.append(("embeddings.npy", _npy_bytes(emb), "embeddings.npy row 3 is not unit-norm"))
    emb = np.array(bank_v1.embeddings)
    emb[4, 0] = np.inf
    cases.append(("embeddings.npy", _npy_bytes(emb), "embeddings.npy row 4 is not finite"))
    lines = (bank_v1.path / bank_v1.version / "questions.jsonl").read_bytes().splitlines(keepends=True)
    cases.append(("questions.jsonl", b"".join(lines[:-1] + lines[:1]), "questions.jsonl repeats question id 'q0'"))
    cases.append(("questions.jsonl", b"".join(lines[:-1]), "questions.jsonl holds 4 questions but the manifest says 5"))
    models = msgspec.json.encode([MODELS[0], MODELS[0]])
    cases.append(("models.json", models, "models.json repeats model name 'alpha'"))
    pristine = {
        name: (bank_v1.path / bank_v1.version / name).read_bytes() for name in ("manifest.json", *{c[0] for c in cases})
    }
    for file, data, match in cases:
        _tamper(bank_v1, file, data)
        with pytest.raises(BankFormatError, match=match):
            Bank.open(bank_v1.path).validate()
        for name, content in pristine.items():
            (bank_v1.path / bank_v1.version / name).write_bytes(content)
    Bank.open(bank_v1.path).validate()


def test_require_creatable_says_in_advance_what_create_would_refuse(tmp_path: Path) -> None:
    Bank.require_creatable(tmp_path / "new")  # absent: fine
    (tmp_path / "empty").mkdir()
    Bank.require_creatable(tmp_path / "empty")
    Bank.create(tmp_path / "taken", embeddings=[[1, 0]], capability=[[1]], questions=questions(["a"]), models=[ModelInfo("m")])
    with pytest.raises(BankError, match="is not empty"):
        Bank.require_creatable(tmp_path / "taken")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BankError, match="is not a directory"):
        Bank.require_creatable(tmp_path / "file")


@pytest.mark.parametrize("damage", [b"(", b"[", b"'", b"\\"])
def test_a_npy_header_that_numpy_cannot_tokenise_is_a_format_error(bank_v1: Bank, damage: bytes) -> None:
    """A byte flipped in a header's padding makes numpy's header parser fail with TokenError or
    SyntaxError rather than ValueError: still a BankFormatError naming the file."""
    path = bank_v1.path / bank_v1.version / "capability.npy"
    data = path.read_bytes()
    end = data.index(b"\n")  # the header's padding runs up to its newline
    path.write_bytes(data[: end - 2] + damage + data[end - 1 :])
    with pytest.raises(BankFormatError, match="capability.npy is not a readable .npy file"):
        Bank.open(bank_v1.path)
