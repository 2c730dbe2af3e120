"""Bank importers: each format read into the matrix, ids, sources and costs it was written with; malformed
input refused with its location and field; stored embeddings reused only from the same embedder; the
``smcs bank import`` command; and the real RouterDC data when ../shared/data is present."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from smcs.bank import Bank, BankError, EmbedderInfo
from smcs.ingest.importers import FORMATS, ImportedBank, import_bank, read_import, read_imports, summary
from smcs.core.query_text import query_text
from smcs.cli.ingest import add_import_parser, progress_callback, run_import

ROUTERDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerdc-split2-model7"


class FakeEmbedder:
    """A blocking embedder whose vector for a text is a fixed unit vector drawn from the text's CRC."""

    def __init__(self, embedder_id: str = "fake-embedder", dim: int = 8) -> None:
        self.info = EmbedderInfo(embedder_id, dim)
        self.calls = 0
        self.texts: list[str] = []

    def embed(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return np.stack([vector(t, self.info.dim) for t in texts]) if texts else np.empty((0, self.info.dim), np.float32)


class AsyncFakeEmbedder(FakeEmbedder):
    async def embed(self, texts):  # type: ignore[override]
        await asyncio.sleep(0)
        return FakeEmbedder.embed(self, texts)


def vector(text: str, dim: int) -> np.ndarray:
    v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def error_of(format: str, path: Path, **options) -> str:
    with pytest.raises(ValueError) as info:
        read_import(format, path, **options)
    return str(info.value)


def assert_located(format: str, path: Path, expected: str) -> None:
    """Reading ``path`` fails with a message that starts with the path and contains ``expected``."""
    message = error_of(format, path)
    assert message.startswith(str(path)) and expected in message, message


# ------------------------------------------------------------------------------------------- routerdc

ROUTERDC_RECORDS = [
    {"question": "Q zero?", "scores": {"a": 0, "b": 0.7, "c": 0.3}, "cluster_id": 4},
    {"question": "Q one?", "scores": {"b": 0.5, "a": 1}},  # c missing
    {"question": "Q two?", "scores": {"c": 0.0, "a": None, "b": 0.49}},  # a null
]
# by hand: positive rule (score > 0) and half rule (score >= 0.5); rows a, b, c; -1 not evaluated
POSITIVE = [[0, 1, -1], [1, 1, 1], [1, -1, 0]]
HALF = [[0, 1, -1], [1, 1, 0], [0, -1, 0]]


@pytest.mark.parametrize(
    ("stem", "rule", "expected", "source"),
    [("mmlu_train", "auto", POSITIVE, "mmlu"), ("gsm8k-train", "auto", HALF, "gsm8k"),
     ("MATH_prealgebra", "auto", HALF, "MATH_prealgebra"), ("humaneval_test", "auto", HALF, "humaneval"),
     ("mmlu_train", "half", HALF, "mmlu"), ("gsm8k-train", "positive", POSITIVE, "gsm8k")],
)
def test_routerdc_matrix_ids_and_sources(tmp_path, stem, rule, expected, source):
    imported = read_import("routerdc", write_json(tmp_path / f"{stem}.json", ROUTERDC_RECORDS), rule=rule)
    assert [m.name for m in imported.models] == ["a", "b", "c"]
    assert imported.outcomes.dtype == np.int8
    assert imported.outcomes.tolist() == expected
    assert [q.id for q in imported.questions] == [f"{stem}-0", f"{stem}-1", f"{stem}-2"]
    assert [q.text for q in imported.questions] == ["Q zero?", "Q one?", "Q two?"]
    assert {q.source for q in imported.questions} == {source}
    assert imported.embeddings is None and imported.embedder_id is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[\n {"question": "a", "scores": {"m": 1}},\n {"question": "b", "scores": {"m": 1},\n]', ":4: JSON is malformed"),
        ('[{"question": "a", "scores": {}}, {"scores": {"m": 1}}]', "item 1: field 'question' is missing"),
        ('[{"question": "a", "scores": {"m": "0.5"}}]', "item 0: field \"scores['m']\": expected a number, got '0.5'"),
        ('[{"question": "a", "scores": {"m": true}}]', "item 0: field \"scores['m']\": expected a number"),
        ('[{"question": "a", "scores": [1]}]', "item 0: field 'scores': Expected `object`, got `array`"),
        ('[{"question": "  ", "scores": {"m": 1}}]', "item 0: field 'question' is empty"),
        ('[{"question": 7, "scores": {"m": 1}}]', "item 0: field 'question': Expected `str`, got `int`"),
        ("  \n", "empty file"),
        ("[]", "no questions found"),
        ('{"question": "a", "scores": {"m": 1}}\n{"question": "b", "x": [}', ":2: JSON is malformed"),
    ],
)
def test_routerdc_malformed_input_is_located(tmp_path, content, expected):
    path = tmp_path / "mmlu.json"
    path.write_text(content)
    assert_located("routerdc", path, expected)


def test_routerdc_bad_rule_and_unknown_option(tmp_path):
    path = write_json(tmp_path / "mmlu.json", ROUTERDC_RECORDS)
    assert "rule must be one of auto, positive, half" in error_of("routerdc", path, rule="median")
    assert "takes no option 'embedder_id'" in error_of("routerdc", path, embedder_id="x")


def test_merging_routerdc_files_unions_models_with_not_evaluated(tmp_path):
    first = write_json(tmp_path / "mmlu_train.json", [{"question": "m0", "scores": {"a": 1, "b": 0}}])
    second = write_json(tmp_path / "gsm8k-train.json", [{"question": "g0", "scores": {"c": 0.6, "a": 0.4}},
                                                        {"question": "g1", "scores": {"b": 1.0}}])
    merged = read_imports("routerdc", [first, second])
    assert [m.name for m in merged.models] == ["a", "b", "c"]
    assert merged.outcomes.tolist() == [[1, 0, -1], [0, -1, 1], [-1, 1, -1]]  # gsm8k: half rule
    assert [q.id for q in merged.questions] == ["mmlu_train-0", "gsm8k-train-0", "gsm8k-train-1"]
    assert [q.source for q in merged.questions] == ["mmlu", "gsm8k", "gsm8k"]
    assert read_imports("routerdc", [first, second], limit=2).outcomes.tolist() == [[1, 0], [0, -1], [-1, 1]]
    (tmp_path / "again").mkdir()
    twin = write_json(tmp_path / "again" / "mmlu_train.json", [{"question": "other", "scores": {"a": 1}}])
    with pytest.raises(ValueError, match=r"again/mmlu_train.json: question id 'mmlu_train-0' is also in .*/mmlu_train.json"):
        read_imports("routerdc", [first, twin])


# ---------------------------------------------------------------------------------------- routerbench

BENCH_HEADER = ["sample_id", "prompt", "eval_name", "oracle_model_to_route_to",
                "gpt-4", "gpt-4|model_response", "gpt-4|total_cost",
                "llama", "llama|model_response", "llama|total_cost", "mixtral"]
BENCH_ROWS = [
    ["s1", "What is 2+2?", "gsm8k", "llama", "1", "4", "0.002", "0.0", "5", "0.0001", "1"],
    ["s2", "Line one\nline two, \"quoted\"", "mmlu", "gpt-4", "0.0", "B\nC", "0.003", "0.75", "A", "", "0.25"],
    ["s3", "Third", "mmlu", "gpt-4", "True", "x", "", "", "", "", "false"],
]


def test_routerbench_matrix_ids_sources_and_costs(tmp_path):
    imported = read_import("routerbench", write_csv(tmp_path / "bench.csv", [BENCH_HEADER, *BENCH_ROWS]))
    assert [m.name for m in imported.models] == ["gpt-4", "llama", "mixtral"]
    assert imported.outcomes.tolist() == [[1, 0, 1], [0, 1, -1], [1, 0, 0]]
    assert [q.id for q in imported.questions] == ["s1", "s2", "s3"]
    assert [q.text for q in imported.questions] == ["What is 2+2?", 'Line one\nline two, "quoted"', "Third"]
    assert [q.source for q in imported.questions] == ["gsm8k", "mmlu", "mmlu"]
    assert [q.metadata for q in imported.questions] == [
        {"cost": {"gpt-4": 0.002, "llama": 0.0001}}, {"cost": {"gpt-4": 0.003}}, {}]
    assert all(m.cost_per_input_token == 0 for m in imported.models)


def test_routerbench_without_ids_uses_the_file_stem(tmp_path):
    path = write_csv(tmp_path / "bench.csv", [["prompt", "m1", "m2"], ["p", "1", "0"], ["q", "0", "1"]])
    imported = read_import("routerbench", path)
    assert [(q.id, q.source) for q in imported.questions] == [("bench-0", "bench"), ("bench-1", "bench")]
    assert imported.outcomes.tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([["question", "m"], ["p", "1"]], ":1: the header lacks column 'prompt'"),
        ([["prompt", "eval_name"], ["p", "x"]], ":1: the header names no model column"),
        ([["prompt", "m", "m"], ["p", "1", "1"]], ":1: the header repeats column 'm'"),
        ([["prompt", "m|total_cost", "n"], ["p", "1", "1"]], ":1: column 'm|total_cost' has no outcome column 'm'"),
        ([["prompt", "m"], ["multi\nline", "1"], ["p", "yes"]], ":4: column 'm': 'yes' is not a number"),
        ([["prompt", "m"], ["p", "1"], ["q", "1.5"]], ":3: column 'm': '1.5' is not an outcome between 0 and 1"),
        ([["prompt", "m", "m|total_cost"], ["p", "1", "cheap"]], ":2: column 'm|total_cost': 'cheap' is not a number"),
        ([["prompt", "m", "m|total_cost"], ["p", "1", "-1"]], ":2: column 'm|total_cost': '-1' is negative"),
        ([["prompt", "m"], ["p", "1", "extra"]], ":2: 3 fields, but the header has 2"),
        ([["sample_id", "prompt", "m"], ["a", "p", "1"], ["b", "q", "0"], ["a", "r", "0"]], ":4: model 'm' on question 'a' is 0"),
        ([["sample_id", "prompt", "m"], ["", "p", "1"]], ":2: column 'sample_id' is empty"),
        ([["prompt", "m"], ["", "1"]], ":2: field 'prompt' is empty"),
        ([["prompt", "m"]], "no questions found"),
        ([], "empty file"),
    ],
)
def test_routerbench_malformed_input_is_located(tmp_path, rows, expected):
    path = write_csv(tmp_path / "bench.csv", rows)
    assert_located("routerbench", path, expected)


def test_csv_that_is_not_utf8_is_located(tmp_path):
    path = tmp_path / "bench.csv"
    path.write_bytes(b"prompt,m\n\xff\xfe,1\n")
    assert error_of("routerbench", path).startswith(f"{path}:2: not UTF-8 text")


def test_routerbench_prompt_list_literals_become_their_strings(tmp_path):
    cells = [
        "['Answer with a letter.\\n\\nWhich is larger?\\nA) 2\\nB) 3\\nAnswer:']",  # as RouterBench publishes it
        "['First turn.', 'Second turn.']",
        "[1, 2]",  # not strings: the text as it is
        "['half', 3]",
        "[__import__('os').system('exit 3')]",  # not a literal: never evaluated, kept as text
        "['unclosed'",
        "plain [bracketed] text",
    ]
    rows = [["sample_id", "prompt", "m"]] + [[f"s{i}", cell, "1"] for i, cell in enumerate(cells)]
    imported = read_import("routerbench", write_csv(tmp_path / "bench.csv", rows))
    assert [q.text for q in imported.questions] == [
        "Answer with a letter.\n\nWhich is larger?\nA) 2\nB) 3\nAnswer:", "First turn.\n\nSecond turn.", *cells[2:]]


def test_routerbench_repeated_ids_merge_into_the_first_row(tmp_path):
    header = ["sample_id", "prompt", "eval_name", "m1", "m2", "m3", "m1|total_cost", "m2|total_cost"]
    rows = [
        header,
        ["a", "['Q?']", "mmlu", "1", "", "", "0.1", ""],
        ["b", "['R?']", "mmlu", "0", "1", "", "0.3", "0.4"],
        ["a", "['Q?', 'Q?']", "mmlu", "", "0", "", "0.2", "0.5"],  # RouterBench's repeat: question twice, cost doubled
        ["a", "['Q?']", "mmlu", "1", "", "", "", ""],  # and a third time, agreeing
    ]
    imported = read_import("routerbench", write_csv(tmp_path / "bench.csv", rows))
    assert [q.id for q in imported.questions] == ["a", "b"]
    assert imported.questions[0].text == "Q?" and imported.questions[0].metadata == {"cost": {"m1": 0.1}}
    assert imported.outcomes.tolist() == [[1, 0], [0, 1], [-1, -1]]  # known in either row kept; blank in all stays -1
    assert imported.repeats == 2
    other = write_csv(tmp_path / "other.csv", [header, ["c", "S?", "x", "1", "1", "1", "", ""], ["c", "S?", "x", "1", "", "", "", ""]])
    assert read_imports("routerbench", [tmp_path / "bench.csv", other]).repeats == 3


def test_routerbench_conflicting_repeat_names_both_lines_and_the_model(tmp_path):
    rows = [["sample_id", "prompt", "m1", "m2"], ["a", "p", "1", "1"], ["b", "two\nlines", "0", "0"], ["a", "p", "1", "0"]]
    path = write_csv(tmp_path / "bench.csv", rows)
    assert error_of("routerbench", path) == f"{path}:5: model 'm2' on question 'a' is 0, but {path}:2 says 1"


# ---------------------------------------------------------------------------------------------- union

UNION_RECORDS = [
    {"question": "U0", "src": "mmlu", "id": "u-a", "label": "B",
     "model_res": {"m1": {"is_correct": True, "response": "B"}, "m2": {"is_correct": 0}}},
    {"question": "U1", "src": "gsm8k", "model_res": {"m2": {"is_correct": 1}, "m3": {"is_correct": False}}},
    {"question": "U2", "id": 17, "label": 42, "model_res": {"m1": {"is_correct": None}, "m3": {"is_correct": 1}}},
]


@pytest.mark.parametrize("layout", ["array", "jsonl"])
def test_union_matrix_ids_sources_labels(tmp_path, layout):
    path = tmp_path / "bank.json"
    if layout == "array":
        write_json(path, UNION_RECORDS)
    else:
        path.write_text("\n".join(json.dumps(r) for r in UNION_RECORDS) + "\n\n")
    imported = read_import("union", path)
    assert [m.name for m in imported.models] == ["m1", "m2", "m3"]
    assert imported.outcomes.tolist() == [[1, -1, -1], [0, 1, -1], [-1, 0, 1]]
    assert [q.id for q in imported.questions] == ["u-a", "bank-1", "17"]
    assert [q.source for q in imported.questions] == ["mmlu", "gsm8k", "bank"]
    assert [q.label for q in imported.questions] == ["B", None, "42"]
    assert imported.embeddings is None


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([{"question": "a", "model_res": {"m": {"is_correct": 2}}}], "item 0: field \"model_res['m'].is_correct\": Invalid enum value 2"),
        ([{"question": "a", "model_res": {"m": {"correct": 1}}}], "item 0: field \"model_res['m'].is_correct\" is missing"),
        ([{"question": "a", "model_res": {}}, {"model_res": {}}], "item 1: field 'question' is missing"),
        ([{"question": "a", "model_res": {}, "id": "x"}, {"question": "b", "model_res": {}, "id": "x"}], "item 1: question id 'x' repeats"),
        ([{"question": "a", "model_res": {}, "embedding": [1, 0]}, {"question": "b", "model_res": {}}],
         "item 1: field 'embedding' is missing, unlike at"),
        ([{"question": "a", "model_res": {}}, {"question": "b", "model_res": {}, "embedding": [1, 0]}],
         "item 1: field 'embedding' is present, unlike at"),
        ([{"question": "a", "model_res": {}, "embedding": [1, 0]}, {"question": "b", "model_res": {}, "embedding": [1, 0, 0]}],
         "item 1: field 'embedding' has 3 values, but the first record's has 2"),
        ([{"question": "a", "model_res": {}, "embedding": [0, 0]}], "item 0: field 'embedding' must be"),
        ([{"question": "a", "model_res": {}, "embedding": ["x"]}], "item 0: field 'embedding[0]': Expected `float`"),
    ],
)
def test_union_malformed_input_is_located(tmp_path, records, expected):
    path = write_json(tmp_path / "bank.json", records)
    assert_located("union", path, expected)


def test_union_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bank.jsonl"
    path.write_text('{"question": "a", "model_res": {}}\n\n{"question": "b", "model_res": {"m": 1}}\n')
    assert error_of("union", path).startswith(f"{path}:3: field \"model_res['m']\": Expected `object`, got `int`")


def _union_with_embeddings(tmp_path: Path, dim: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    stored = rng.standard_normal((3, dim)) * 3  # not unit: the bank normalises them
    records = [dict(r, embedding=stored[i].tolist()) for i, r in enumerate(UNION_RECORDS)]
    return write_json(tmp_path / "bank.json", records), stored


def test_union_stored_embeddings_are_reused_from_the_same_embedder(tmp_path):
    path, stored = _union_with_embeddings(tmp_path, 8)
    imported = read_import("union", path, embedder_id="fake-embedder")
    assert imported.embedder_id == "fake-embedder"
    np.testing.assert_allclose(imported.embeddings, stored, rtol=1e-6)
    embedder = FakeEmbedder("fake-embedder", 8)
    bank = import_bank(imported, tmp_path / "bank", embedder)
    assert embedder.calls == 0
    np.testing.assert_allclose(bank.embeddings, stored / np.linalg.norm(stored, axis=1, keepdims=True), atol=1e-6)
    assert bank.manifest.embedder == EmbedderInfo("fake-embedder", 8)
    assert bank.capability.tolist() == imported.outcomes.tolist()


@pytest.mark.parametrize("stored_id", ["another-embedder", None])
def test_union_stored_embeddings_of_another_embedder_are_replaced(tmp_path, stored_id):
    path, _ = _union_with_embeddings(tmp_path, 8)
    imported = read_import("union", path, embedder_id=stored_id)
    embedder = FakeEmbedder("fake-embedder", 8)
    bank = import_bank(imported, tmp_path / "bank", embedder)
    assert embedder.texts == ["U0", "U1", "U2"]
    np.testing.assert_allclose(bank.embeddings, np.stack([vector(t, 8) for t in ["U0", "U1", "U2"]]), atol=1e-6)


def test_union_stored_embeddings_of_the_wrong_dimension_are_refused(tmp_path):
    path, _ = _union_with_embeddings(tmp_path, 6)
    imported = read_import("union", path, embedder_id="fake-embedder")
    with pytest.raises(ValueError, match="stored embeddings have 6 dimensions, but embedder 'fake-embedder' makes 8"):
        import_bank(imported, tmp_path / "bank", FakeEmbedder("fake-embedder", 8))


# ------------------------------------------------------------------------------------------- embedllm

EMBEDLLM_HEADER = ["model_id", "model_name", "prompt_id", "prompt", "label", "category"]
EMBEDLLM_ROWS = [
    [1, "beta", 10, "Ten?", 1, "math"],
    [0, "alpha", 10, "Ten?", 0, "math"],
    [0, "alpha", 11, "Eleven, with a comma", 1, "logic"],
    [1, "beta", 12, "Twelve\nlines", 0, "math"],  # lines 5 and 6 of the file
    [0, "alpha", 10, "Ten?", 0, "math"],  # a repeat that agrees
]


def test_embedllm_pivots_long_rows_into_the_matrix(tmp_path):
    imported = read_import("embedllm", write_csv(tmp_path / "train.csv", [EMBEDLLM_HEADER, *EMBEDLLM_ROWS]))
    assert [m.name for m in imported.models] == ["beta", "alpha"]
    assert [q.id for q in imported.questions] == ["10", "11", "12"]
    assert [q.text for q in imported.questions] == ["Ten?", "Eleven, with a comma", "Twelve\nlines"]
    assert [q.source for q in imported.questions] == ["math", "logic", "math"]
    assert imported.outcomes.tolist() == [[1, -1, 0], [0, 1, -1]]


def test_embedllm_without_names_or_categories(tmp_path):
    rows = [["prompt_id", "model_id", "label", "prompt"], ["p", "7", "1", "text p"], ["p", "8", "0", "text p"]]
    imported = read_import("embedllm", write_csv(tmp_path / "val.csv", rows))
    assert [m.name for m in imported.models] == ["7", "8"]
    assert [(q.id, q.source) for q in imported.questions] == [("p", "val")]
    assert imported.outcomes.tolist() == [[1], [0]]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([0, "alpha", 10, "Ten?", 1, "math"], ":8: model 'alpha' on question '10' is 1, but {path}:3 says 0"),
        ([2, "gamma", 10, "Ten!", 1, "math"], ":8: prompt_id '10' has another prompt than at {path}:2"),
        ([2, "gamma", 10, "Ten?", 1, "logic"], ":8: prompt_id '10' has another category than at {path}:2"),
        ([1, "alpha", 13, "Thirteen", 1, "math"], ":8: model_id '1' is named 'alpha', but {path}:2 names it 'beta'"),
        ([2, "alpha", 13, "Thirteen", 1, "math"], ":8: model_name 'alpha' belongs to model_id '2', but to '0' at {path}:3"),
        ([2, "gamma", 13, "Thirteen", "maybe", "math"], ":8: column 'label': 'maybe' is not a number"),
        ([2, "gamma", "", "Thirteen", 1, "math"], ":8: column 'prompt_id' is empty"),
    ],
)
def test_embedllm_inconsistent_rows_name_both_lines(tmp_path, extra, expected):
    path = write_csv(tmp_path / "train.csv", [EMBEDLLM_HEADER, *EMBEDLLM_ROWS, extra])
    assert_located("embedllm", path, expected.format(path=path))


def test_embedllm_needs_its_columns(tmp_path):
    path = write_csv(tmp_path / "train.csv", [["model_id", "prompt_id", "label"], [0, 1, 1]])
    assert f"{path}:1: the header lacks column 'prompt'" in error_of("embedllm", path)


# --------------------------------------------------------------------------------- API and building


def test_unknown_format_names_the_valid_ones(tmp_path):
    message = error_of("csv", tmp_path / "x.csv")
    assert "unknown import format 'csv'" in message and all(f in message for f in FORMATS)
    assert "limit must be an integer >= 1" in error_of("routerdc", write_json(tmp_path / "m.json", ROUTERDC_RECORDS), limit=0)


def test_import_bank_embeds_in_batches_and_reports_progress(tmp_path):
    records = [{"question": f"question {i}", "scores": {"a": i % 2, "b": 1}} for i in range(7)]
    imported = read_import("routerdc", write_json(tmp_path / "arc.json", records))
    embedder, calls = AsyncFakeEmbedder("fake-embedder", 4), []
    bank = import_bank(imported, tmp_path / "bank", embedder, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 7), (3, 7), (6, 7), (7, 7)]
    assert embedder.calls == 3
    reopened = Bank.open(tmp_path / "bank")
    reopened.validate()
    assert [q.id for q in reopened.questions] == [f"arc-{i}" for i in range(7)]
    assert reopened.capability.tolist() == [[i % 2 for i in range(7)], [1] * 7]
    np.testing.assert_allclose(reopened.embeddings, np.stack([vector(f"question {i}", 4) for i in range(7)]), atol=1e-6)
    assert bank.version == reopened.version


def test_import_bank_refuses_a_non_empty_directory_before_embedding(tmp_path):
    imported = read_import("routerdc", write_json(tmp_path / "m.json", ROUTERDC_RECORDS))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    embedder = FakeEmbedder()
    with pytest.raises(BankError, match="is not empty"):
        import_bank(imported, tmp_path / "out", embedder)
    assert embedder.calls == 0
    with pytest.raises(ValueError, match="batch_size"):
        import_bank(imported, tmp_path / "other", embedder, batch_size=0)


def test_imported_bank_checks_its_shapes():
    with pytest.raises(ValueError, match="outcomes must be int8"):
        ImportedBank([], [], np.zeros((1, 1), dtype=np.int8))


def test_summary_reports_counts_and_per_model_accuracy(tmp_path):
    imported = read_import("routerbench", write_csv(tmp_path / "bench.csv", [BENCH_HEADER, *BENCH_ROWS]))
    text = summary(imported)
    assert "questions 3  models 3  stored embeddings none" in text
    assert "sources mmlu 2, gsm8k 1" in text
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines()[3:]}
    # gpt-4 right on 2 of 3; llama 1 of 2 evaluated; mean costs from the cost columns
    assert lines["gpt-4"] == ["0.667", "3", f"{0.0025:.3g}"]
    assert lines["llama"] == ["0.500", "2", f"{0.0001:.3g}"]
    assert lines["mixtral"] == ["0.333", "3"]
    bank = import_bank(imported, tmp_path / "bank", FakeEmbedder())
    assert f"bank {bank.path}  version v000001" in summary(bank)
    assert "embedder fake-embedder (dim 8, query text question-v1)" in summary(bank)
    assert "distinctness: mean pairwise cosine" in summary(bank) and "(all 3 rows): ok" in summary(bank)


# ------------------------------------------------------------------------------------------------ CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smcs bank")
    add_import_parser(parser.add_subparsers(required=True))
    return parser.parse_args(argv)


def test_cli_imports_and_merges_files_and_prints_the_summary(tmp_path, capsys):
    first = write_json(tmp_path / "mmlu_train.json", ROUTERDC_RECORDS)
    second = write_json(tmp_path / "mbpp.json", [{"question": "code?", "scores": {"d": 0.5}}])
    args = _parse(["import", "routerdc", str(first), str(second), "--out", str(tmp_path / "bank"), "--rule", "half", "--batch-size", "2"])
    stderr = io.StringIO()
    assert args.run is run_import
    assert run_import(args, embedder=FakeEmbedder(), stderr=stderr) == 0
    out = capsys.readouterr().out
    assert "questions 4  models 4  embedder fake-embedder (dim 8, query text question-v1)" in out and "version v000001" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith(("a ", "d "))] == [["a", "0.500", "2"], ["d", "1.000", "1"]]
    progress = stderr.getvalue().splitlines()
    assert progress[0] == "read 4 questions, 4 models from 2 file(s) in 0.0 s"
    assert progress[-1].startswith("embedding 4/4 (100%)")
    bank = Bank.open(tmp_path / "bank")
    assert bank.capability.tolist() == [HALF[0] + [-1], HALF[1] + [-1], HALF[2] + [-1], [-1, -1, -1, 1]]


def test_cli_reports_reuse_of_stored_embeddings(tmp_path, capsys):
    path, _ = _union_with_embeddings(tmp_path, 8)
    for stored_id, note in [("fake-embedder", "reusing the stored embeddings"), (None, "no --stored-embedder given")]:
        argv = ["import", "union", str(path), "--out", str(tmp_path / f"bank-{stored_id}")]
        stderr, embedder = io.StringIO(), FakeEmbedder()
        run_import(_parse(argv + (["--stored-embedder", stored_id] if stored_id else [])), embedder=embedder, stderr=stderr)
        assert note in stderr.getvalue()
        assert embedder.calls == (0 if stored_id else 1)


def test_cli_reports_merged_repeats(tmp_path, capsys):
    rows = [["sample_id", "prompt", "m"], ["a", "['Q?']", "1"], ["a", "['Q?', 'Q?']", ""], ["b", "R?", "0"], ["a", "Q?", "1"]]
    path = write_csv(tmp_path / "bench.csv", rows)
    stderr = io.StringIO()
    assert run_import(_parse(["import", "routerbench", str(path), "--out", str(tmp_path / "bank")]), embedder=FakeEmbedder(), stderr=stderr) == 0
    assert stderr.getvalue().splitlines()[0].startswith("read 2 questions (2 repeated rows merged), 1 models from 1 file(s)")
    assert "questions 2  models 1" in capsys.readouterr().out


def test_cli_refuses_options_of_another_format(tmp_path):
    path = write_json(tmp_path / "bank.json", UNION_RECORDS)
    with pytest.raises(ValueError, match="--rule does not apply to the union format"):
        run_import(_parse(["import", "union", str(path), "--out", str(tmp_path / "b"), "--rule", "half"]), embedder=FakeEmbedder())
    with pytest.raises(ValueError, match="--stored-embedder does not apply to the routerdc format"):
        run_import(_parse(["import", "routerdc", str(path), "--out", str(tmp_path / "b"), "--stored-embedder", "x"]), embedder=FakeEmbedder())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal_and_writes_plain_lines_elsewhere():
    for stream in (_Terminal(), io.StringIO()):
        report = progress_callback(stream)
        for done in (0, 3, 6, 7):
            report(done, 7)
        text = stream.getvalue()
        assert text.endswith("\n")
        if stream.isatty():
            assert text.count("\n") == 1 and text.count("\r") >= 2
        else:
            assert "\r" not in text and text.count("\n") >= 2  # the first line at once, the last at the end
        assert text.replace("\r", "\n").splitlines()[-1].removeprefix("\x1b[K").startswith("embedding 7/7 (100%)")


# ---------------------------------------------------------------------------------- the real RouterDC


@pytest.mark.slow
def test_real_routerdc_mmlu_train_imports_with_seven_models(tmp_path):
    path = ROUTERDC / "mmlu_train.json"
    if not path.is_file():
        pytest.skip(f"{ROUTERDC} is absent (real data lives outside the repository)")
    records = json.loads(path.read_text(encoding="utf-8"))
    imported = read_import("routerdc", path)
    names = list(records[0]["scores"])
    assert len(names) == 7 and [m.name for m in imported.models] == names
    assert len(imported.questions) == len(records)
    expected = [[int(r["scores"][name] > 0) for r in records] for name in names]  # multiple choice: score > 0
    assert imported.outcomes.tolist() == expected
    assert [q.text for q in imported.questions] == [r["question"] for r in records]

    from smcs.embed import EmbedderConfig, make_embedder

    embedder = make_embedder(EmbedderConfig())  # MMLU questions are long: ~0.1 s each here, so only a subset
    subset = read_import("routerdc", path, limit=24)
    bank = import_bank(subset, tmp_path / "bank", embedder)
    bank.validate()
    assert bank.n_questions == 24 and bank.n_models == 7
    assert bank.manifest.embedder == EmbedderInfo(embedder.info.id, embedder.info.dim, "question-v1")
    assert bank.capability.tolist() == [row[:24] for row in expected]
    rule = "question-v1"
    np.testing.assert_allclose(
        bank.embeddings[[0, 23]], embedder.embed([query_text(records[i]["question"], rule) for i in (0, 23)]), atol=1e-5)
