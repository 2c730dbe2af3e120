"""smcs.core.fit on synthetic banks whose truth is known by construction: what the scorers must learn, that
their probabilities come back calibrated, that the default is the cross-validated best, and that
cross-validation does not see the outcomes it scores (a bank of coin flips must look like chance)."""

from __future__ import annotations

import numpy as np
import pytest

from smcs import Policy, Router
from smcs.bank import Bank, ModelInfo, Question
from smcs.core.fit import fit_logistic, fit_scorer
from smcs.core.scorers import SCORERS, Linear, softmax

D = 16


def cluster_rows(rng: np.random.Generator, per: int, n_clusters: int, dim: int = D, noise: float = 0.6):
    """Unit rows around the first ``n_clusters`` basis vectors (cosine to the own centre ≈ 0.85, to another
    ≈ 0.1): (embeddings float32, cluster of each row)."""
    cluster = np.repeat(np.arange(n_clusters), per)
    e = np.eye(dim)[cluster] + noise * rng.standard_normal((len(cluster), dim)) / np.sqrt(dim)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32), cluster


def make_bank(path, embeddings, capability, sources) -> Bank:
    capability = np.asarray(capability, dtype=np.int8)
    return Bank.create(
        path,
        embeddings=embeddings,
        capability=capability,
        questions=[Question(id=f"q{i}", text=f"question {i}", source=s) for i, s in enumerate(sources)],
        models=[ModelInfo(name=f"m{r}") for r in range(capability.shape[0])],
    )


def bernoulli(rng: np.random.Generator, truth: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Outcomes of R models on rows of ``cluster``: model r right with probability truth[r, cluster]."""
    return (rng.random((truth.shape[0], len(cluster))) < truth[:, cluster]).astype(np.int8)


def best_by_cv(fitted) -> str:
    """The documented rule: the best cross-validated top-1, ties to the earlier (simpler) scorer."""
    best = max(fitted.cv[name].top1 for name in SCORERS)
    return next(name for name in SCORERS if fitted.cv[name].top1 >= best - 1e-12)


# --- a model right on exactly one cluster --------------------------------------------------------------------

# clusters A, B, C; model 2 always right on B and always wrong elsewhere, the others at chance or worse on B
SPECIALIST = np.array([
    [0.9, 0.4, 0.5],
    [0.6, 0.3, 0.9],
    [0.0, 1.0, 0.0],
    [0.5, 0.4, 0.6],
])


@pytest.fixture(scope="module")
def specialist_bank(tmp_path_factory) -> Bank:
    rng = np.random.default_rng(11)
    e, cluster = cluster_rows(rng, 200, 3)
    # one source for every row: only the embedding tells the clusters apart (the source scorer cannot)
    bank = make_bank(tmp_path_factory.mktemp("specialist") / "b", e, bernoulli(rng, SPECIALIST, cluster), ["mix"] * len(e))
    return bank.with_scorer(fit_scorer(bank))


@pytest.mark.parametrize("scorer", ["head", "knn"])
def test_a_model_right_on_one_cluster_is_routed_there_and_only_there(specialist_bank, scorer):
    router = Router(specialist_bank, Policy(k=2, scorer=scorer))
    fresh, cluster = cluster_rows(np.random.default_rng(5), 10, 3)
    for query, c in zip(fresh, cluster):
        decision = router.route(query, seed=0)
        assert decision.scorer == scorer and not decision.out_of_bank
        p = decision.model_probabilities
        if c == 1:
            assert decision.referencers[0] == "m2", (c, p)
            assert p[2] > 0.8
        else:
            assert decision.referencers[0] == ("m0" if c == 0 else "m1"), (c, p)
            assert p[2] < 0.2


def test_the_source_scorer_cannot_see_the_cluster_on_a_one_source_bank(specialist_bank):
    # the contrast that makes the test above mean something: with one source the per-source prior is the
    # model's overall accuracy, the same for every query, and model 2 (right on a third) is never first
    fitted = specialist_bank.scorer
    assert fitted.sources == ["mix"] and fitted.source_classifier is None
    router = Router(specialist_bank, Policy(k=2, scorer="source"))
    fresh, _ = cluster_rows(np.random.default_rng(5), 10, 3)
    firsts = {router.route(q, seed=0).referencers[0] for q in fresh}
    assert "m2" not in firsts and len(firsts) == 1


# --- calibration on Bernoulli outcomes -----------------------------------------------------------------------

TRUTH = np.array([
    [0.9, 0.3, 0.6],
    [0.5, 0.8, 0.2],
    [0.2, 0.5, 0.7],
    [0.6, 0.6, 0.4],
])


@pytest.fixture(scope="module")
def bernoulli_bank(tmp_path_factory) -> Bank:
    rng = np.random.default_rng(21)
    e, cluster = cluster_rows(rng, 600, 3)
    bank = make_bank(tmp_path_factory.mktemp("bernoulli") / "b", e, bernoulli(rng, TRUTH, cluster), [f"c{c}" for c in cluster])
    return bank.with_scorer(fit_scorer(bank))


@pytest.mark.parametrize("scorer", SCORERS)
def test_bernoulli_outcomes_come_back_calibrated(bernoulli_bank, scorer):
    fitted = bernoulli_bank.scorer
    assert fitted.cv[scorer].ece <= 0.05
    router = Router(bernoulli_bank, Policy(k=2, scorer=scorer))
    fresh, cluster = cluster_rows(np.random.default_rng(8), 30, 3)
    p = np.array([router.route(q, seed=0).model_probabilities for q in fresh])
    assert np.all((p >= 0) & (p <= 1))
    for c in range(3):
        mean = p[cluster == c].mean(axis=0)
        np.testing.assert_allclose(mean, TRUTH[:, c], atol=0.08, err_msg=f"{scorer} on cluster {c}")


def test_the_source_classifier_predicts_separable_sources(bernoulli_bank):
    fitted = bernoulli_bank.scorer
    assert fitted.sources == ["c0", "c1", "c2"] and fitted.source_classifier is not None
    fresh, cluster = cluster_rows(np.random.default_rng(9), 20, 3)
    pi = softmax(Linear.of(fitted.source_classifier)(fresh.astype(np.float64)))
    np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.argmax(pi, axis=1), cluster)
    assert pi.max(axis=1).min() > 0.9


@pytest.mark.parametrize("fixture", ["bernoulli_bank", "specialist_bank"])
def test_the_default_is_the_best_cross_validated_top1_and_the_fit_describes_its_bank(fixture, request):
    bank = request.getfixturevalue(fixture)
    fitted = bank.scorer
    assert set(fitted.cv) == set(SCORERS) == set(fitted.calibration)
    assert fitted.default == best_by_cv(fitted)
    assert fitted.models == list(bank.model_names) and fitted.data == bank.fitted_data()
    assert fitted.fitted_rows == bank.n_questions and fitted.folds == 5
    assert fitted.head is not None and np.asarray(fitted.head.weights).shape == (bank.n_models, bank.dim + 2 * bank.n_models)
    assert all(0.0 <= s.top1 <= 1.0 and 0.0 <= s.top3 <= 1.0 and s.top1 <= s.top3 + 1e-12 for s in fitted.cv.values())
    assert not bank.scorer_stale
    assert Router(bank, Policy(k=2)).route(bank.embeddings[0], seed=0).scorer == fitted.default


def test_sample_bounds_the_rows_fitted(specialist_bank):
    fitted = fit_scorer(specialist_bank, folds=3, sample=60, seed=4)
    assert fitted.fitted_rows == 60 and fitted.folds == 3
    assert fitted.default == best_by_cv(fitted)


# --- fit_logistic ---------------------------------------------------------------------------------------------


def test_fit_logistic_recovers_known_weights_and_ignores_unknown_outcomes():
    rng = np.random.default_rng(0)
    n = 6000
    x = rng.standard_normal((n, 3))
    x[:, 1] = 5.0 * x[:, 1] + 2.0  # a shifted, scaled feature: standardising must be folded back
    w_true, b_true = np.array([1.5, -0.4, 0.0]), -0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w_true + b_true)))).astype(np.int8)
    partial = y.copy()
    partial[rng.random(n) < 0.4] = -1  # unknown at random: must be left out, not read as wrong (or right)
    weights, bias = fit_logistic(x, np.stack([y, partial, 1 - y], axis=1), 1e-4)
    assert weights.shape == (3, 3) and bias.shape == (3,)
    for j in (0, 1):
        np.testing.assert_allclose(weights[j], w_true, atol=0.15)
        assert bias[j] == pytest.approx(b_true, abs=0.15)
        assert np.sign(weights[j, 0]) == 1 and np.sign(weights[j, 1]) == -1
    np.testing.assert_allclose(weights[2], -weights[0], atol=1e-3)  # the flipped outcome: the mirrored model
    assert bias[2] == pytest.approx(-bias[0], abs=1e-3)
    known = partial >= 0
    alone_w, alone_b = fit_logistic(x[known], partial[known, None], 1e-4)
    np.testing.assert_allclose(weights[1], alone_w[0], atol=0.02)
    assert bias[1] == pytest.approx(alone_b[0], abs=0.02)


def test_fit_logistic_penalty_shrinks_the_weights():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 4))
    y = (rng.random(2000) < 1 / (1 + np.exp(-(2.0 * x[:, 0])))).astype(np.int8)[:, None]
    loose, _ = fit_logistic(x, y, 1e-4)
    tight, _ = fit_logistic(x, y, 1.0)
    assert 0 < tight[0, 0] < loose[0, 0] * 0.7


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"folds": 1}, "folds"), ({"folds": 2.5}, "folds"), ({"folds": True}, "folds"),
     ({"sample": 9}, "sample"), ({"folds": 3, "sample": 5}, "sample"), ({"sample": 10.0}, "sample")],
)
def test_bad_arguments_are_refused_naming_them(specialist_bank, kwargs, field):
    with pytest.raises(ValueError, match=field):
        fit_scorer(specialist_bank, **kwargs)


def test_a_bank_with_too_few_known_outcomes_is_refused(tmp_path):
    e, _ = cluster_rows(np.random.default_rng(2), 10, 3)
    cap = np.full((2, 30), -1, np.int8)
    cap[0, :9] = 1  # 9 questions with a known outcome; 5 folds need 10
    bank = make_bank(tmp_path / "b", e, cap, [""] * 30)
    with pytest.raises(ValueError, match="9 question.*known outcome.*at least 10"):
        fit_scorer(bank)
    cap[1, 9] = 0
    assert fit_scorer(make_bank(tmp_path / "c", e, cap, [""] * 30)).fitted_rows == 10


# --- leakage guard -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coin_flips(tmp_path_factory):
    """20 small sources of 30 tight questions each, outcomes fair coins independent of everything (10 %
    unknown). Small sources are where a fit that reads a held-out outcome back gains most."""
    rng = np.random.default_rng(3)
    n_sources, per, dim, n_models = 20, 30, 32, 4
    source = np.repeat(np.arange(n_sources), per)
    centres = rng.standard_normal((n_sources, dim))
    e = centres[source] / np.linalg.norm(centres[source], axis=1, keepdims=True) + 0.3 * rng.standard_normal((len(source), dim)) / np.sqrt(dim)
    cap = (rng.random((n_models, len(source))) < 0.5).astype(np.int8)
    cap[rng.random(cap.shape) < 0.1] = -1
    bank = make_bank(tmp_path_factory.mktemp("coins") / "b", e, cap, [f"s{s}" for s in source])
    known = cap >= 0
    accuracy = (cap == 1).sum(axis=1) / known.sum(axis=1)
    value = np.where(known, cap == 1, accuracy[:, None])  # what top-1 credits each choice with
    return fit_scorer(bank), float(value.mean()), len(source)


@pytest.mark.parametrize("scorer", ["vote", "source", "knn", "head"])
def test_cross_validation_of_coin_flips_looks_like_chance(coin_flips, scorer):
    fitted, baseline, n = coin_flips
    standard_error = np.sqrt(baseline * (1 - baseline) / n)
    # the tuned scorers pick the best of a few settings on the same rows, and rows of one source share
    # neighbours: allow 5 standard errors of optimism, far less than reading outcomes back would give
    assert fitted.cv[scorer].top1 <= baseline + 5 * standard_error, (scorer, fitted.cv[scorer].top1, baseline)
    assert fitted.cv[scorer].top1 >= baseline - 5 * standard_error
