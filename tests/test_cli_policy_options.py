"""The CLI's policy options come from ``Policy`` itself: every overridable field, typed and described."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from smcs.cli.policy_options import add_policy_options, field_docs, policy_overrides
from smcs.core.policy import OVERRIDABLE, PER_PROCESS, Policy


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_policy_options(parser)
    return parser


def test_every_overridable_field_has_an_option_and_nothing_else_does():
    flags = {a.dest: a.option_strings[0] for a in _parser()._actions if a.dest != "help"}
    assert set(flags) == set(OVERRIDABLE) and not set(flags) & set(PER_PROCESS)
    assert flags["n_base"] == "--n-base" and flags["cover"] == "--no-cover"


def test_unset_options_override_nothing():
    assert policy_overrides(_parser().parse_args([])) == {}


def test_options_parse_to_the_fields_types_and_build_the_policy():
    args = _parser().parse_args(
        ["--k", "4", "--gamma", "0.9", "--aggregator", "m", "--retrieval", "exact", "--no-cover", "--min-references", "2", "--lam", "0.5"]
    )
    overrides = policy_overrides(args)
    assert overrides == {"k": 4, "gamma": 0.9, "aggregator": "m", "retrieval": "exact", "cover": False, "min_references": 2, "lam": 0.5}
    assert Policy(**overrides) == msgspec.structs.replace(Policy(), **overrides)


@pytest.mark.parametrize("argv", [["--k", "four"], ["--retrieval", "fuzzy"], ["--scorer", "magic"]])
def test_a_value_of_the_wrong_type_or_outside_the_choices_is_refused(argv):
    with pytest.raises(argparse.ArgumentError):
        _parser().parse_args(argv)


def test_each_option_is_described_by_the_fields_docstring_entry():
    docs = field_docs(Policy)
    assert set(OVERRIDABLE) <= set(docs)
    helps = {a.dest: a.help for a in _parser()._actions}
    assert "Eq (3)" in helps["gamma"] and helps["gamma"].endswith("(default: 0.95)")
    assert docs["nprobe"].startswith("lists probed by") and "1/64" in docs["nprobe"]  # a continuation line joined
