"""The service over a fitted bank: scorer fields on the wire, and the background refit of a stale fit."""

from __future__ import annotations

from pathlib import Path

import msgspec
from service_harness import POLICY, make_bank, make_config, queries_for, running_server, wait_until

from smcs import Bank, Router
from smcs.core.fit import fit_scorer


def test_route_carries_the_scorers_probabilities_over_the_wire(tmp_path: Path) -> None:
    bank = make_bank(tmp_path / "bank", n_questions=300)
    fitted = bank.with_scorer(fit_scorer(bank))
    router = Router(fitted, POLICY)
    with running_server(tmp_path / "bank", make_config(refit_scorer_interval_s=0)) as server:
        with server.client(retries=0) as client:
            for query in queries_for(tmp_path / "bank", 3):
                want = router.route(query, seed=2)
                plain = client.route(embedding=query, seed=2)
                assert (plain.referencers, plain.scorer) == (want.referencers, fitted.scorer.default)
                assert plain.probabilities == want.probabilities and plain.model_probabilities == []
                debug = client.route(embedding=query, seed=2, debug=True)
                assert debug.model_probabilities == want.model_probabilities
                voted = client.route(embedding=query, seed=2, scorer="vote")
                paper = router.route(query, seed=2, policy=msgspec.structs.replace(POLICY, scorer="vote"))
                assert voted.scorer == "vote" and voted.referencers == paper.referencers and voted.votes == paper.votes


def test_a_stale_fit_is_refitted_in_the_background_and_swapped_in(tmp_path: Path) -> None:
    bank = make_bank(tmp_path / "bank", n_questions=300)
    fitted = bank.with_scorer(fit_scorer(bank))
    with running_server(tmp_path / "bank", make_config(refit_scorer_interval_s=0.05)) as server:
        with server.client(retries=0) as client:
            info = client.bank_info()
            assert (info.scorer, info.scorer_stale, info.query_text) == (fitted.scorer.default, False, "raw")
            assert 0.0 < info.mean_pairwise_cosine < 1.0 and not info.degenerate
            write = client.record_outcomes([_flipped(fitted, 0)])
            assert Bank.open(tmp_path / "bank", write.version).scorer_stale
            wait_until(lambda: not Bank.open(tmp_path / "bank").scorer_stale, 120, what="the refitted scorer")
            refitted = Bank.open(tmp_path / "bank")
            assert refitted.version != write.version and refitted.scorer.data == refitted.fitted_data()
            refitted.validate()
            wait_until(lambda: client.bank_info().version == refitted.version, 30, what="the swap")
    assert Bank.versions(tmp_path / "bank")[-1] == refitted.version  # one refit, not one per swap


def test_refitting_can_be_turned_off(tmp_path: Path) -> None:
    bank = make_bank(tmp_path / "bank", n_questions=300)
    fitted = bank.with_scorer(fit_scorer(bank))
    with running_server(tmp_path / "bank", make_config(refit_scorer_interval_s=0)) as server:
        with server.client(retries=0) as client:
            write = client.record_outcomes([_flipped(fitted, 1)])
            wait_until(lambda: client.bank_info().version == write.version, 30, what="the write's swap")
            assert not server.running.state.refitting
    assert Bank.open(tmp_path / "bank").scorer_stale


def _flipped(bank: Bank, row: int) -> tuple[str, str, int]:
    """A write that changes the first model's outcome on bank row ``row`` (so the data, and the fit's
    staleness, really change)."""
    value = int(bank.capability[0, row])
    return bank.model_names[0], bank.questions[row].id, 0 if value == 1 else 1
