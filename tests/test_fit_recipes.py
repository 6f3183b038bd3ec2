"""Fit recipes (what law on which experiment) and the other law families' fit specs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mixplan.planning.fitting import fit_frame
from mixplan.planning.fitting.recipes import (
    FitRecipe,
    default_recipe,
    fit_table,
    per_domain,
    recipe_for,
)
from mixplan.planning.fitting.steplaw import fit_steplaw, select_optimal_runs
from mixplan.planning.laws import GadreLaw, KaplanLaw
from mixplan.planning.schema import METRICS_SCHEMA, RUNS_SCHEMA, conform


def _runs(**columns) -> pl.DataFrame:
    return conform(pl.DataFrame(columns), RUNS_SCHEMA)


def _metrics(**columns) -> pl.DataFrame:
    return conform(pl.DataFrame(columns), METRICS_SCHEMA)


def test_default_recipes_name_the_published_choices():
    epoch = default_recipe("epoch-chinchilla")
    assert epoch.law == "chinchilla" and epoch.outlier_rule == "drop_highest_loss:5"
    tao = default_recipe("tao-vocab")
    assert tao.rows == "checkpoints" and tao.outlier_rule == "min_flops:2.18e17"
    assert default_recipe("nothing-like-this") is None


def test_recipe_for_unknown_experiments():
    runs = _runs(run_id=["x/a", "x/b"], experiment=["x", "x"], params=[1e8, 2e8], tokens=[2e9, 4e9])
    metrics = _metrics(
        run_id=["x/a", "x/b"], step=[-1, -1], split=["val"] * 2, domain=["all"] * 2, loss=[3.0, 2.9]
    )
    assert recipe_for("x", runs, metrics).law == "chinchilla"
    repeated = runs.with_columns(pl.Series("unique_tokens", [1e9, 1e9]))
    assert recipe_for("x", repeated, metrics).law == "muennighoff"
    no_size = runs.with_columns(pl.lit(None, pl.Float64).alias("params"))
    assert recipe_for("x", no_size, metrics) is None


def test_mixture_experiments_are_left_to_the_mixture_stage():
    mixture = pl.Series(
        "mixture",
        [
            [
                {"source": "a", "weight": 0.3, "unique_tokens": None},
                {"source": "b", "weight": 0.7, "unique_tokens": None},
            ],
            [
                {"source": "a", "weight": 0.6, "unique_tokens": None},
                {"source": "b", "weight": 0.4, "unique_tokens": None},
            ],
        ],
    )
    runs = _runs(run_id=["m/a", "m/b"], experiment=["m", "m"], params=[1e6, 1e6], tokens=[1e9, 1e9])
    runs = runs.with_columns(mixture.cast(runs.schema["mixture"]))
    metrics = _metrics(
        run_id=["m/a", "m/b"], step=[-1, -1], split=["val"] * 2, domain=["all"] * 2, loss=[3.0, 2.9]
    )
    assert recipe_for("m", runs, metrics) is None


def test_fit_table_final_rows_and_domains():
    runs = _runs(run_id=["e/a", "e/b"], experiment=["e", "e"], params=[1e8, 2e8], tokens=[2e9, 4e9])
    metrics = _metrics(
        run_id=["e/a", "e/a", "e/a", "e/b", "e/b"],
        step=[10, 20, 20, 20, 20],
        tokens_seen=[1e9, 2e9, 2e9, 4e9, 4e9],
        split=["val"] * 5,
        domain=["all", "all", "code", "all", "code"],
        loss=[3.5, 3.0, 2.0, 2.8, 1.9],
    )
    recipe = FitRecipe(name="e", experiment="e", law="chinchilla")
    table = fit_table(recipe, runs, metrics)
    assert table["loss"].to_list() == [3.0, 2.8]  # final step, aggregate domain
    assert table["flops"].to_list() == pytest.approx([6 * 1e8 * 2e9, 6 * 2e8 * 4e9])
    recipes = per_domain(recipe, ["all", "code"])
    assert [r.name for r in recipes] == ["e@all", "e@code"]
    code = fit_table(recipes[1], runs, metrics)
    assert code["loss"].to_list() == [2.0, 1.9]
    checkpoints = fit_table(
        FitRecipe(name="c", experiment="e", law="chinchilla", rows="checkpoints"), runs, metrics
    )
    assert checkpoints["tokens"].to_list() == [1e9, 2e9, 4e9]


@pytest.fixture(scope="module")
def design():
    rng = np.random.default_rng(0)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 40))
    tokens = params * np.exp(rng.uniform(1, 5, 40))
    return params, tokens


def test_gadre_law_is_recovered(design):
    params, tokens = design
    truth = GadreLaw(E=1.6, a=300.0, b=900.0, eta=-0.32)
    frame = pl.DataFrame(
        {"params": params, "tokens": tokens, "loss": truth.predict_tokens(params, tokens)}
    )
    law = fit_frame(frame, "gadre", n_bootstrap=0, backtest_quantile=None).law
    for name in truth.param_names():
        assert getattr(law, name) == pytest.approx(getattr(truth, name), rel=1e-4), name


def test_kaplan_law_is_recovered(design):
    params, tokens = design
    truth = KaplanLaw(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095)
    frame = pl.DataFrame(
        {"params": params, "tokens": tokens, "loss": truth.predict(params, tokens)}
    )
    law = fit_frame(frame, "kaplan", n_bootstrap=0, backtest_quantile=None).law
    np.testing.assert_allclose(
        law.predict(params, tokens), truth.predict(params, tokens), rtol=1e-6
    )


def test_steplaw_recipe_band_units_and_bootstrap_mean():
    """StepLaw recipe (laws.md 1.7): strict relative band on the smoothed loss per (N, D), an
    unweighted fit on every run in the band, and the bootstrap mean as the point estimate."""
    rng = np.random.default_rng(3)
    rows = []
    for n in (2e8, 4e8, 8e8, 1.6e9):
        for d in (5e9, 2e10, 8e10):
            lr0, bs0 = 2.0 * n**-0.7 * d**0.3, 0.5 * d**0.57
            for k, jitter in enumerate(rng.normal(0.0, 0.05, 4)):
                # runs 0..2 sit inside the 0.25% band, run 3 is 0.3% worse and far off the law
                off = 10.0 if k == 3 else 1.0
                loss = 2.0 * (1 + 0.001 * k + (0.0017 if k == 3 else 0.0))
                rows.append((n, d, lr0 * np.exp(jitter) * off, bs0 * np.exp(-jitter), loss))
    frame = pl.DataFrame(
        rows, schema=["params", "tokens", "learning_rate", "batch_size", "loss"], orient="row"
    )
    assert select_optimal_runs(frame).height == 36
    ls = fit_steplaw(frame, n_bootstrap=0, backtest_quantile=None)
    assert ls.options["estimate"] == "least_squares" and ls.n_runs == 36
    assert ls.law.lr_params_exp == pytest.approx(-0.7, abs=0.03)
    assert ls.law.lr_tokens_exp == pytest.approx(0.3, abs=0.03)
    assert ls.law.bs_tokens_exp == pytest.approx(0.57, abs=0.03)
    bm = fit_steplaw(frame, n_bootstrap=400, seed=0, backtest_quantile=None)
    assert bm.options["estimate"] == "bootstrap_mean"
    assert bm.law.lr_params_exp == pytest.approx(bm.bootstrap_["lr_params_exp"].mean())
    assert bm.law.lr_params_exp != ls.law.lr_params_exp
    assert bm.law.lr_params_exp == pytest.approx(ls.law.lr_params_exp, abs=0.02)
