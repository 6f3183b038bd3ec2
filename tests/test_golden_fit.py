"""Golden fits on the bundled real data, read through the ingest path (laws.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from mixplan.planning.fitting import fit_frame
from mixplan.planning.fitting.recipes import default_recipe
from mixplan.planning.fitting.steplaw import fit_steplaw
from mixplan.planning.laws import BESIROGLU, STEPLAW, TAO
from mixplan.planning.laws.hyperparams import STEPLAW_LOG_INTERCEPT_SE
from mixplan.planning.laws.repetition import DATABLATIONS
from mixplan.tasks.fit import load_table

FILES = {
    "epoch-chinchilla": "epoch-research__analyzing-chinchilla/svg_extracted_data.csv",
    "tao-vocab": "sail-sg__scaling-with-vocab/exp_data.csv",
    "steplaw": "step-law__steplaw/dense_lr_bs_loss.csv",
    "datablations": "huggingface__datablations/parametric_fit_runs.csv",
}


@pytest.fixture(scope="module")
def lake(bundled, tmp_path_factory):
    """A real Delta lake holding three bundled sources, written by the ingest stage."""
    from mixplan.tasks.ingest import ingest_paths

    path = tmp_path_factory.mktemp("fit-golden") / "lake"
    report = ingest_paths([bundled / f for f in FILES.values()], path)
    assert set(report.lake_summary["experiments"]) == set(FILES)
    return str(path)


@pytest.fixture(scope="module")
def epoch_fit(lake):
    recipe = default_recipe("epoch-chinchilla")
    table = load_table(lake, recipe)
    assert table.height == 245
    return fit_frame(
        table,
        "chinchilla",
        outlier_rule=recipe.outlier_rule,
        n_bootstrap=300,
        budgets=[5.88e23],
        selection=recipe.selection(),
    )


def test_g8_epoch_replication_through_the_lake(epoch_fit):
    """G8: the 240 Epoch points reproduce Besiroglu et al.'s "replicate exactly" fit.

    Tolerances of laws.md G8: E, alpha, beta 0.1%; A, B 1%; objective 0.00101827.
    """
    law = epoch_fit.law
    assert epoch_fit.n_runs == 240
    tolerances = {"E": 1e-3, "alpha": 1e-3, "beta": 1e-3, "A": 1e-2, "B": 1e-2}
    for name, rel in tolerances.items():
        assert getattr(law, name) == pytest.approx(getattr(BESIROGLU, name), rel=rel), name
    assert epoch_fit.objective == pytest.approx(0.00101827, rel=1e-5)
    assert epoch_fit.options["outlier_rule"] == "drop_highest_loss:5"
    assert epoch_fit.options["selection"]["experiment"] == "epoch-chinchilla"


def test_epoch_bootstrap_intervals_match_the_published_spread(epoch_fit):
    """Bootstrap by run gives intervals close to Besiroglu et al.'s (laws.md 1.1)."""
    published = {
        "E": (1.769, 1.871),
        "alpha": (0.317, 0.373),
        "beta": (0.331, 0.415),
        "A": (285.2, 743.6),
    }
    intervals = epoch_fit.intervals()
    for name, (lo, hi) in published.items():
        _, our_lo, our_hi = intervals[name]
        assert our_lo == pytest.approx(lo, rel=0.1), name
        assert our_hi == pytest.approx(hi, rel=0.1), name
    point, lo, hi = intervals["tokens_per_param@5.88e+23"]
    assert lo < point < hi
    assert any("extrapolating" in w for w in epoch_fit.warnings)


def test_epoch_backtest(epoch_fit):
    """Fit on C below the top 20% of compute, predict the rest (issue 3, "done when")."""
    bt = epoch_fit.backtest
    assert bt["status"] == "ok"
    assert bt["n_test_runs"] == 48
    assert bt["median_relative_error"] < 0.02
    assert bt["max_relative_error"] < 0.06
    assert all(run["flops"] > bt["cutoff_flops"] for run in bt["runs"])


def test_tao_constants_refit_within_2_percent(lake):
    """Tao et al. constants within 2% when refitted from exp_data.csv with their recipe."""
    recipe = default_recipe("tao-vocab")
    table = load_table(lake, recipe)
    result = fit_frame(
        table,
        "tao",
        outlier_rule=recipe.outlier_rule,
        tie_break=recipe.tie_break,
        n_bootstrap=0,
        backtest_quantile=None,
    )
    assert result.n_points == 1054  # FLOPs < 2.18e17 dropped
    for name in TAO.param_names():
        assert getattr(result.law, name) == pytest.approx(getattr(TAO, name), rel=0.02), name


def test_g15_steplaw_refit_with_the_authors_recipe(lake):
    """G15: StepLaw refitted with the authors' recipe (laws.md 1.7; planning.fitting.steplaw).

    Smoothed loss, strict 0.25% band per (N, D) -> 129 runs; batch in tokens; 1000 row
    resamples; bootstrap-mean point estimate. Reproduced: the published N exponent and batch
    exponent lie in our 95% intervals, and the log-predictions at G15's point (N = 7e9,
    D = 1.4e12) are within one published log-intercept SE (0.623 lr, 0.437 bs). Not
    reproduced from the released CSV: the learning rate's D exponent (0.198, 95% interval
    0.13..0.26, vs 0.30749), pinned here so a change of data or recipe shows up.
    """
    recipe = default_recipe("steplaw")
    table = load_table(lake, recipe)
    result = fit_steplaw(table, n_bootstrap=1000, seed=1)
    assert result.n_runs == 129
    assert result.options["estimate"] == "bootstrap_mean"
    # the point estimate is the mean over the draws of the log-intercept and the exponents
    draws = result.bootstrap_
    assert np.log(result.law.lr_coef) == pytest.approx(np.log(draws["lr_coef"]).mean())
    assert result.law.lr_tokens_exp == pytest.approx(draws["lr_tokens_exp"].mean())
    assert np.log(result.law.bs_coef) == pytest.approx(np.log(draws["bs_coef"]).mean())
    iv = result.intervals()
    assert iv["lr_params_exp"][1] < STEPLAW.lr_params_exp < iv["lr_params_exp"][2]
    assert iv["bs_tokens_exp"][1] < STEPLAW.bs_tokens_exp < iv["bs_tokens_exp"][2]
    lr_gap = np.log(result.law.learning_rate(7e9, 1.4e12) / 9.347e-4)
    bs_gap = np.log(result.law.batch_size(1.4e12) / 4.997e6)
    assert abs(lr_gap) < STEPLAW_LOG_INTERCEPT_SE["lr"]
    assert abs(bs_gap) < STEPLAW_LOG_INTERCEPT_SE["bs"]
    # the documented, unreproducible exponent (module docstring numbers)
    assert result.law.lr_tokens_exp == pytest.approx(0.198, abs=0.005)
    assert iv["lr_tokens_exp"][2] < STEPLAW.lr_tokens_exp


def test_datablations_default_fit_against_the_published_constants(lake):
    """laws.md 1.4 (G9 constants): what the bundled 296 runs can and cannot reproduce.

    The published E, A, B, alpha = beta were fitted on 54 points read off Chinchilla's C4
    isoFLOP figure, not on these runs (datablations utils/parametric_fit.ipynb), and describe
    them poorly (median error 8.2%); the free seven-parameter fit describes them four times
    better (2.0%). The loss floor and the parameter exponent are pinned by the runs and agree
    with the published ones within 5% and 0.03 (about the bootstrap SE of alpha in laws.md 1.1,
    0.026); beta, A, B, R_D* and R_N* are not (see the recipe's notes).
    """
    recipe = default_recipe("datablations")
    table = load_table(lake, recipe)
    assert table.height == 296
    law = fit_frame(table, recipe.law, n_bootstrap=0, backtest_quantile=None).law
    n, d, u = (table[c].to_numpy() for c in ("params", "tokens", "unique_tokens"))
    loss = table["loss"].to_numpy()

    def median_error(model):
        return float(np.median(np.abs(model.predict(n, d, u) / loss - 1)))

    assert median_error(DATABLATIONS) > 0.06  # measured 0.0815
    assert median_error(law) < 0.03  # measured 0.0201
    assert pytest.approx(DATABLATIONS.E, rel=0.05) == law.E  # measured 1.821 vs 1.869
    assert law.alpha == pytest.approx(DATABLATIONS.alpha, abs=0.03)  # measured 0.344 vs 0.353
