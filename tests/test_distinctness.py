"""Degenerate banks: the distinctness measure on vectors built here, and the flag where people see it:
``smcs bank import``, ``info``, ``validate``, and the server's log and metrics (a real gRPC server)."""

from __future__ import annotations

import argparse
import io
import logging
import zlib

import numpy as np
import pytest
from service_harness import make_config, running_server

from smcs import Bank, Policy
from smcs.bank import EmbedderInfo, ModelInfo, Question
from smcs.bank.distinctness import (
    DEGENERATE_MEAN_COSINE,
    NEAR_DUPLICATE_COSINE,
    bank_distinctness,
    measure,
)
from smcs.cli.main import main
from smcs.cli.ingest import add_import_parser, run_import


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def spread(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` random unit rows: far apart from one another."""
    return unit_rows(np.random.default_rng(seed).standard_normal((n, dim)))


def collapsed(n: int, dim: int = 64, noise: float = 1e-3, seed: int = 0) -> np.ndarray:
    """``n`` unit rows all within ``noise`` of one direction: a bank whose texts share one template."""
    rng = np.random.default_rng(seed)
    return unit_rows(rng.standard_normal(dim) + noise * rng.standard_normal((n, dim)))


def brute_force_mean(x: np.ndarray) -> float:
    n = len(x)
    return float(np.mean([float(x[i] @ x[j]) for i in range(n) for j in range(n) if i != j]))


def test_spread_rows_are_distinct():
    x = spread(300)
    result = measure(x, lambda i: f"text {i}")
    assert result.mean_pairwise_cosine == pytest.approx(brute_force_mean(x), abs=1e-5)
    assert abs(result.mean_pairwise_cosine) < 0.05 and result.near_duplicate_share == 0
    assert not result.degenerate and result.warning() is None
    assert result.line().endswith("(all 300 rows): ok")


def test_collapsed_rows_are_degenerate_and_the_warning_names_the_cause():
    x = collapsed(200)
    result = measure(x, lambda i: f"template then question {i}")
    assert result.mean_pairwise_cosine > 0.999 and result.near_duplicate_share == 1.0 and result.degenerate
    warning = result.warning()
    assert warning is not None and "template" in warning and "question-v1" in warning and "re-import" in warning
    assert "DEGENERATE" in result.line()


def test_near_duplicates_count_only_when_their_texts_differ():
    x = spread(100)
    twins = np.vstack([x, x[:20]])  # 20 questions stored twice: 40 rows with an identical other row
    texts = [f"q{i}" for i in range(100)] + [f"q{i}" for i in range(20)]
    assert measure(twins, lambda i: texts[i]).near_duplicate_share == 0
    assert measure(twins, lambda i: f"row {i}").near_duplicate_share == pytest.approx(40 / 120)
    assert measure(twins).near_duplicate_share == pytest.approx(40 / 120)


def test_the_near_duplicate_share_alone_flags_a_partly_collapsed_bank():
    x = np.vstack([spread(150, seed=1), collapsed(30, seed=2)])  # a fifth of the rows on one template
    result = measure(x, lambda i: str(i))
    assert result.mean_pairwise_cosine < DEGENERATE_MEAN_COSINE
    assert result.near_duplicate_share == pytest.approx(30 / 180) and result.degenerate


def test_the_threshold_of_the_mean_cosine():
    rng = np.random.default_rng(3)
    base = rng.standard_normal(64)
    base /= np.linalg.norm(base)
    for scale, expected in [(0.35, True), (0.6, False)]:  # mean cosine ≈ 1 / (1 + scale²): 0.89 and 0.74
        x = unit_rows(base + scale * rng.standard_normal((400, 64)) / 8)
        result = measure(x, lambda i: str(i))
        assert result.near_duplicate_share == 0
        assert result.degenerate is expected and (result.mean_pairwise_cosine >= DEGENERATE_MEAN_COSINE) is expected


def test_a_sample_is_fixed_and_bounded():
    x = np.vstack([spread(3000, seed=4), collapsed(3000, seed=5)])
    first, again = measure(x, sample=500), measure(x, sample=500)
    assert first == again and (first.rows, first.sampled) == (6000, 500)
    assert 0.1 < first.near_duplicate_share < 0.9  # the sample holds rows of both halves
    assert measure(x[:1]).line() == "distinctness: not measured (1 row)" and not measure(x[:1]).degenerate
    with pytest.raises(ValueError, match="sample must be >= 2"):
        measure(x, sample=1)


def test_near_duplicate_cosine_is_a_strict_bound():
    a = np.array([[1.0, 0.0], [np.cos(0.05), np.sin(0.05)]], dtype=np.float32)  # cosine 0.99875 < 0.999
    assert float(a[0] @ a[1]) < NEAR_DUPLICATE_COSINE
    assert measure(a).near_duplicate_share == 0


# ---------------------------------------------------------------------------------- where it is shown


def write_bank(path, embeddings: np.ndarray) -> Bank:
    n = len(embeddings)
    return Bank.create(
        path,
        embeddings=embeddings,
        capability=np.tile(np.array([[1], [0]], dtype=np.int8), (1, n)),
        questions=[Question(id=f"q{i}", text=f"shared template ... question {i}") for i in range(n)],
        models=[ModelInfo(name="m0"), ModelInfo(name="m1")],
        embedder=EmbedderInfo("test-embedder", embeddings.shape[1]),
    )


@pytest.fixture
def degenerate_bank(tmp_path) -> Bank:
    return write_bank(tmp_path / "degenerate", collapsed(120, dim=32))


@pytest.fixture
def healthy_bank(tmp_path) -> Bank:
    return write_bank(tmp_path / "healthy", spread(120, dim=32))


def test_bank_info_always_shows_distinctness_and_warns_when_degenerate(degenerate_bank, healthy_bank, capsys):
    assert main(["bank", "info", str(healthy_bank.path)]) == 0
    out, err = capsys.readouterr()
    assert "distinctness: mean pairwise cosine" in out and "(all 120 rows): ok" in out and err == ""
    assert main(["bank", "info", str(degenerate_bank.path)]) == 0
    out, err = capsys.readouterr()
    assert "(all 120 rows): DEGENERATE" in out
    assert err.startswith(f"smcs: warning: bank {degenerate_bank.path} (v000001): the bank's embeddings are nearly all alike")


def test_bank_validate_warns_but_keeps_its_exit_status(degenerate_bank, healthy_bank, capsys):
    assert main(["bank", "validate", str(degenerate_bank.path)]) == 0
    out, err = capsys.readouterr()
    assert ": valid (120 questions, 2 models)" in out and "smcs: warning:" in err and "query-text rule" in err
    assert main(["bank", "validate", str(healthy_bank.path)]) == 0
    assert capsys.readouterr().err == ""


class PrefixEmbedder:
    """An embedder that, like a truncating encoder, sees only the first 40 characters of each text."""

    info = EmbedderInfo("prefix-embedder", 16)

    def embed(self, texts):
        return np.stack([spread(1, 16, seed=zlib.crc32(t[:40].encode()))[0] for t in texts]) if texts else np.empty((0, 16), np.float32)


def test_import_warns_about_a_degenerate_bank_and_the_default_rule_avoids_it(tmp_path, capsys):
    template = "Answer with the letter.\n\nWhich is larger?\nA) 1\nB) 2\nAnswer:\nB\n\n"
    rows = ["sample_id,prompt,m"] + [f's{i},"{template}Question number {i}, which letter?\nA) x\nB) y\nAnswer:",{i % 2}' for i in range(60)]
    path = tmp_path / "bench.csv"
    path.write_text("\n".join(rows) + "\n")
    parser = argparse.ArgumentParser()
    add_import_parser(parser.add_subparsers())
    for rule, degenerate in [("raw", True), ("question-v1", False)]:
        stderr = io.StringIO()
        args = parser.parse_args(["import", "routerbench", str(path), "--out", str(tmp_path / rule), "--query-text", rule])
        assert run_import(args, embedder=PrefixEmbedder(), stderr=stderr) == 0
        out = capsys.readouterr().out
        assert f"query text {rule})" in out
        assert ("smcs: warning:" in stderr.getvalue()) is degenerate
        assert bank_distinctness(Bank.open(tmp_path / rule)).degenerate is degenerate


def test_the_server_logs_and_exports_a_degenerate_bank(degenerate_bank, healthy_bank, caplog):
    caplog.set_level(logging.WARNING, logger="smcs.service.state")
    config = make_config(policy=Policy(k=2, n_base=10, n=2))
    for bank, degenerate in [(degenerate_bank, True), (healthy_bank, False)]:
        with running_server(bank.path, config) as handle:
            registry = handle.running.metrics.registry
            assert registry.get_sample_value("smcs_bank_degenerate") == int(degenerate)
            mean = registry.get_sample_value("smcs_bank_mean_pairwise_cosine")
            share = registry.get_sample_value("smcs_bank_near_duplicate_share")
            assert mean == pytest.approx(bank_distinctness(bank).mean_pairwise_cosine)
            assert (mean > 0.99, share) == ((True, 1.0) if degenerate else (False, 0.0))
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(bank.path) in r.getMessage()]
        assert warned == ([f"bank {bank.path} version v000001: {bank_distinctness(bank).warning()}"] if degenerate else [])


def test_a_reload_onto_a_degenerate_version_is_logged_and_exported(healthy_bank, caplog):
    caplog.set_level(logging.WARNING, logger="smcs.service.state")
    with running_server(healthy_bank.path, make_config(policy=Policy(k=2, n_base=10, n=2))) as handle, handle.client() as client:
        registry = handle.running.metrics.registry
        assert registry.get_sample_value("smcs_bank_degenerate") == 0
        templated = [Question(id=f"t{i}", text=f"shared template ... another question {i}") for i in range(120)]
        newer = healthy_bank.append_questions(collapsed(120, dim=32, seed=9), templated)
        client.reload()
        assert registry.get_sample_value("smcs_bank_degenerate") == 1
        assert registry.get_sample_value("smcs_bank_near_duplicate_share") == pytest.approx(0.5)
    assert any(f"version {newer.version}: the bank's embeddings are nearly all alike" in r.getMessage() for r in caplog.records)
