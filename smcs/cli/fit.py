"""``smcs bank fit BANK``: fit the scorers on a bank and commit them with its data as a new version.

See ``smcs.core.fit`` for what is fitted and how the default scorer is chosen (cross-validation on the
bank alone). A server serving the bank picks the new version up like any other write, and refits in the
background when later writes leave the fit stale (``[server] refit_scorer``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smcs.bank import Bank, FittedScorer
from smcs.core import Policy
from smcs.core.fit import DEFAULT_FOLDS, DEFAULT_SAMPLE, cv_table, fit_scorer
from smcs.errors import InputError


def add_fit_parser(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``smcs bank fit``."""
    fit = actions.add_parser(
        "fit",
        help="fit the scorers (per-source prior, kNN, logistic head, calibration) and pick the default by cross-validation",
        description="Scores bank questions as queries by leave-one-out, tunes the kNN scorer, fits a logistic head "
        "per model by k-fold cross-validation, calibrates every scorer (Platt) on its held-out predictions and "
        "picks the scorer with the best cross-validated top-1 as the default of Policy(scorer='auto'). The fit is "
        "committed with the same data as a new version. Nothing outside the bank is looked at.",
    )
    fit.add_argument("path", type=Path, help="bank directory")
    fit.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=f"cross-validation folds of the head (default {DEFAULT_FOLDS})")
    fit.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                     help=f"at most this many bank questions are trained and measured on (default {DEFAULT_SAMPLE})")
    fit.add_argument("--seed", type=int, default=0, help="seed of the sample and the folds (default 0)")
    fit.add_argument("--n-base", type=int, default=Policy().n_base, help="N_base of the vote scorer's support set (default 400)")
    fit.add_argument("--gamma", type=float, default=Policy().gamma, help="gamma of the vote scorer's support set (default 0.95)")
    fit.add_argument("--drop", action="store_true", help="commit the bank without a fitted scorer instead")
    fit.set_defaults(run=_run_fit)


def _run_fit(args: argparse.Namespace) -> int:
    bank = Bank.open(args.path)
    if args.drop:
        new = bank.with_scorer(None)
        print(f"bank {new.path}  version {bank.version} -> {new.version}: fitted scorer dropped")
        return 0
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")
    policy = Policy(n_base=args.n_base, gamma=args.gamma)
    fitted = fit_scorer(bank, policy, folds=args.folds, sample=args.sample, seed=args.seed,
                        progress=lambda stage: print(f"fit: {stage}", file=sys.stderr, flush=True))
    new = bank.with_scorer(fitted)
    print(f"bank {new.path}  version {bank.version} -> {new.version}: fitted in {fitted.seconds:.1f} s")
    print("\n".join(fit_lines(fitted)))
    return 0


def fit_lines(fitted: FittedScorer) -> list[str]:
    """What ``bank fit`` and ``bank info`` print about a fit: its settings and the cross-validated table."""
    head = f", head l2 {fitted.head.l2:g}" if fitted.head is not None else ""
    return [
        f"scorer fitted on {fitted.fitted_rows} questions ({fitted.folds} folds): default {fitted.default!r}; "
        f"kNN k {fitted.knn_k} alpha {fitted.knn_alpha:g}{head}; out of bank below similarity {fitted.out_of_bank:.3f}",
        *cv_table(fitted),
    ]
