"""The fitting engine on synthetic data from known laws: recovery, coverage, bootstrap by run."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixplan.planning.errors import FitError, NotFittedError, SchemaError
from mixplan.planning.fitting import FitResult, LawFitter, fit_frame, predict_with_interval, prepare
from mixplan.planning.fitting.bootstrap import bootstrap_chunk, resample_counts
from mixplan.planning.fitting.engine import search
from mixplan.planning.fitting.fit import point_fit, warm_starts
from mixplan.planning.fitting.huber import huber
from mixplan.planning.fitting.specs import CHINCHILLA, LOSS_CURVE, MUENNIGHOFF
from mixplan.planning.laws import DATABLATIONS, ChinchillaLaw, LossCurveLaw, schedule_areas

SMALL_GRID = {
    "a": [3.0, 6.0, 9.0],
    "b": [3.0, 7.0, 11.0],
    "e": [0.0, 0.5],
    "alpha": [0.2, 0.5],
    "beta": [0.2, 0.5],
}
TRUTH = ChinchillaLaw(E=1.8, A=400.0, B=1800.0, alpha=0.34, beta=0.36)


def synthetic_runs(
    law: ChinchillaLaw, *, n_runs: int = 60, noise: float = 0.005, seed: int = 0
) -> pl.DataFrame:
    """Runs on isoFLOP-like slices with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(5e7), np.log(5e9), n_runs))
    tokens = params * np.exp(rng.uniform(np.log(2), np.log(200), n_runs))
    loss = law.predict(params, tokens) * np.exp(rng.normal(0, noise, n_runs))
    return pl.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n_runs)],
            "params": params,
            "tokens": tokens,
            "loss": loss,
        }
    )


def test_huber_matches_scipy():
    from scipy.special import huber as scipy_huber

    r = np.linspace(-0.01, 0.01, 41)
    np.testing.assert_allclose(huber(r, 1e-3), scipy_huber(1e-3, r))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alpha=st.floats(0.25, 0.45),
    beta=st.floats(0.25, 0.45),
    E=st.floats(1.5, 2.2),
    seed=st.integers(0, 1000),
)
def test_known_law_is_recovered(alpha, beta, E, seed):
    """Data from a known law plus 0.2% noise: the fit predicts the truth within 0.5% in range."""
    truth = ChinchillaLaw(E=E, A=400.0, B=1800.0, alpha=alpha, beta=beta)
    frame = synthetic_runs(truth, n_runs=80, noise=0.002, seed=seed)
    data = prepare(frame, "chinchilla")
    result = point_fit(data, "chinchilla", grid=SMALL_GRID)
    law = CHINCHILLA.to_law(result.theta)
    n = np.geomspace(1e8, 4e9, 7)
    rel = law.predict(n, 20 * n) / truth.predict(n, 20 * n) - 1
    assert np.max(np.abs(rel)) < 5e-3
    assert pytest.approx(E, abs=0.15) == law.E


def test_vectorised_search_equals_one_by_one_lbfgs():
    """The batched search reaches the objective of scipy L-BFGS-B run from every start."""
    from mixplan.planning.fitting.engine import baseline_search

    data = prepare(synthetic_runs(TRUTH, n_runs=50, seed=3), "chinchilla")
    starts = CHINCHILLA.grid_points({k: np.asarray(v) for k, v in SMALL_GRID.items()})
    ours = search(CHINCHILLA, data.columns, data.loss, starts=starts)
    _, base = baseline_search(CHINCHILLA, data.columns, data.loss, starts=starts[::8])
    assert ours.objective <= base * (1 + 1e-4)


def test_threaded_batches_equal_one_batch():
    """Splitting the starts over threads changes nothing: every start advances on its own."""
    from mixplan.planning.fitting.engine import batched_lm, batched_lm_threaded, residual_target

    data = prepare(synthetic_runs(TRUTH, n_runs=50, seed=4), "chinchilla")
    target = residual_target(CHINCHILLA, data.loss)
    weights = np.ones_like(target)
    starts = CHINCHILLA.grid_points()[:1200]
    one = batched_lm(CHINCHILLA, starts, data.columns, target, weights, iterations=3)
    split = batched_lm_threaded(
        CHINCHILLA, starts, data.columns, target, weights, iterations=3, workers=3
    )
    for a, b in zip(one, split, strict=True):
        np.testing.assert_array_equal(a, b)


def test_intervals_cover_the_truth_at_about_the_nominal_rate():
    """90% percentile intervals of the loss at a budget cover the truth in most simulations."""
    budget = 1e21
    truth_n, truth_d = TRUTH.compute_optimal(budget)
    truth_loss = float(TRUTH.predict(truth_n, truth_d))
    hits, sims = 0, 24
    for seed in range(sims):
        data = prepare(synthetic_runs(TRUTH, n_runs=40, noise=0.01, seed=100 + seed), "chinchilla")
        result = point_fit(data, "chinchilla", grid=SMALL_GRID, keep=2)
        counts = resample_counts(data.n_runs, 150, seed)
        thetas, _ = bootstrap_chunk(CHINCHILLA, data, warm_starts(result), counts)
        losses = [
            float(law.predict(*law.compute_optimal(budget)))
            for law in (CHINCHILLA.to_law(t) for t in thetas)
        ]
        lo, hi = np.percentile(losses, [5, 95])
        hits += lo <= truth_loss <= hi
    assert 0.7 <= hits / sims <= 1.0


def test_bootstrap_resamples_runs_not_checkpoints():
    """With noise shared by a run's checkpoints, by-run intervals are wider than by-row ones."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(16):
        n = float(np.exp(rng.uniform(np.log(1e8), np.log(3e9))))
        offset = rng.normal(0, 0.02)  # one noise draw per run
        for m in (5, 10, 20, 40, 80):
            d = n * m
            rows.append((f"run{i}", n, d, float(TRUTH.predict(n, d) * np.exp(offset))))
    frame = pl.DataFrame(rows, schema=["run_id", "params", "tokens", "loss"], orient="row")
    by_run = prepare(frame, "chinchilla")
    by_row = prepare(
        frame.with_columns(pl.int_range(pl.len()).cast(pl.String).alias("run_id")), "chinchilla"
    )
    assert by_run.n_runs == 16
    assert by_row.n_runs == 80

    def e_width(data):
        result = point_fit(data, "chinchilla", grid=SMALL_GRID, keep=2)
        thetas, _ = bootstrap_chunk(
            CHINCHILLA, data, warm_starts(result), resample_counts(data.n_runs, 200, 0)
        )
        lo, hi = np.percentile(np.exp(thetas[:, 2]), [5, 95])
        return hi - lo

    assert e_width(by_run) > 1.5 * e_width(by_row)


def test_bootstrap_chunks_equal_one_batch():
    data = prepare(synthetic_runs(TRUTH, n_runs=30, seed=5), "chinchilla")
    result = point_fit(data, "chinchilla", grid=SMALL_GRID, keep=2)
    counts = resample_counts(data.n_runs, 40, 3)
    whole, _ = bootstrap_chunk(CHINCHILLA, data, warm_starts(result), counts)
    parts = np.vstack(
        [
            bootstrap_chunk(CHINCHILLA, data, warm_starts(result), c)[0]
            for c in (counts[:25], counts[25:])
        ]
    )
    np.testing.assert_allclose(whole, parts, rtol=1e-10, atol=1e-12)


def test_bootstrap_batched_by_memory_equals_one_batch(monkeypatch):
    """Refits split to bound array sizes (``MAX_ELEMENTS``) give the same draws."""
    from mixplan.planning.fitting import engine

    data = prepare(synthetic_runs(TRUTH, n_runs=30, seed=5), "chinchilla")
    result = point_fit(data, "chinchilla", grid=SMALL_GRID, keep=2)
    counts = resample_counts(data.n_runs, 40, 3)
    whole, _ = bootstrap_chunk(CHINCHILLA, data, warm_starts(result), counts)
    monkeypatch.setattr(engine, "MAX_ELEMENTS", 2 * 30 * 5 * 7)  # 7 draws per batch
    monkeypatch.setattr("mixplan.planning.fitting.bootstrap.MAX_ELEMENTS", 2 * 30 * 5 * 7)
    batched, _ = bootstrap_chunk(CHINCHILLA, data, warm_starts(result), counts)
    np.testing.assert_allclose(whole, batched, rtol=1e-10, atol=1e-12)


def test_screening_on_a_subsample_still_finds_the_full_data_optimum(monkeypatch):
    """Past ``SCREEN_POINTS`` points the starts are screened on a subsample; the candidates are
    then iterated on every point, so the fit equals the full-screening one."""
    from mixplan.planning.fitting import engine

    frame = pl.concat(
        [synthetic_runs(TRUTH, n_runs=200, seed=s).with_columns(pl.lit(s).alias("s")) for s in (1,)]
    )
    data = prepare(frame, "chinchilla")
    full = search(CHINCHILLA, data.columns, data.loss)
    monkeypatch.setattr(engine, "SCREEN_POINTS", 40)
    monkeypatch.setattr(engine, "MAX_ELEMENTS", 4500 * 40 * 5 // 3)  # and blocks of starts
    sub = search(CHINCHILLA, data.columns, data.loss)
    assert sub.objective == pytest.approx(full.objective, rel=1e-6)
    np.testing.assert_allclose(sub.theta, full.theta, rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def small_fit() -> FitResult:
    frame = synthetic_runs(TRUTH, n_runs=40, seed=11).with_columns(
        (6 * pl.col("params") * pl.col("tokens")).alias("flops")
    )
    return fit_frame(frame, "chinchilla", grid=SMALL_GRID, n_bootstrap=60, budgets=[1e21, 1e24])


def test_fit_result_json_round_trip(small_fit, tmp_path):
    path = tmp_path / "fits" / "x.json"
    small_fit.to_json(path)
    again = FitResult.from_json(path)
    assert again.law == small_fit.law
    assert again.options == json.loads(json.dumps(small_fit.options))
    for key, draws in small_fit.bootstrap_.items():
        np.testing.assert_array_equal(again.bootstrap_[key], draws)
    for key, draws in small_fit.decision_draws_.items():
        np.testing.assert_array_equal(again.decision_draws_[key], draws)
    assert again.intervals() == small_fit.intervals()
    assert len(again.law_draws()) == 60
    assert again.data_hash == small_fit.data_hash and len(again.data_hash) == 16
    assert again.backtest["status"] == "ok"


def test_decisions_and_extrapolation_warning(small_fit):
    iv = small_fit.intervals()
    for key in ("params@1e+21", "tokens@1e+21", "tokens_per_param@1e+21", "loss@1e+24"):
        point, lo, hi = iv[key]
        assert lo <= point <= hi
    assert any("extrapolating" in w for w in small_fit.warnings)
    assert small_fit.options["bootstrap"] == "by run"


def test_predict_with_interval(small_fit):
    rows = pl.DataFrame({"params": [1e9, 1e11], "tokens": [2e10, 2e12]})
    out = predict_with_interval(small_fit, rows)
    assert (out["loss_low"] <= out["predicted_loss"]).all()
    assert (out["predicted_loss"] <= out["loss_high"]).all()
    width = (out["loss_high"] - out["loss_low"]).to_numpy()
    assert width[1] > width[0]  # further out, wider
    assert out["extrapolation"][1] > 10
    with pytest.raises(FitError, match="tokens"):
        predict_with_interval(small_fit, rows.drop("tokens"))


def test_law_fitter_estimator():
    fitter = LawFitter("chinchilla", grid=SMALL_GRID, n_bootstrap=0, backtest_quantile=None)
    with pytest.raises(NotFittedError):
        fitter.predict(pl.DataFrame({"params": [1e9], "tokens": [1e10]}))
    assert fitter.fit(synthetic_runs(TRUTH, n_runs=30)) is fitter
    assert isinstance(fitter.law_, ChinchillaLaw)
    assert fitter.bootstrap_ == {}


def test_too_few_runs_and_bad_input_are_reported():
    few = fit_frame(
        synthetic_runs(TRUTH, n_runs=8), grid=SMALL_GRID, n_bootstrap=0, backtest_quantile=None
    )
    assert any("too few runs" in w for w in few.warnings)
    with pytest.raises(SchemaError, match="tokens"):
        prepare(pl.DataFrame({"params": [1.0], "loss": [2.0]}), "chinchilla")
    with pytest.raises(FitError, match="positive"):
        prepare(
            pl.DataFrame({"params": [0.0, 1.0], "tokens": [1.0, 1.0], "loss": [2.0, 2.0]}),
            "chinchilla",
        )
    with pytest.raises(FitError, match="outlier rule"):
        fit_frame(synthetic_runs(TRUTH), outlier_rule="drop_everything")


def test_backtest_on_exact_data_is_near_zero():
    from mixplan.planning.fitting.backtest import backtest

    frame = synthetic_runs(TRUTH, n_runs=50, noise=0.0, seed=2)
    data = prepare(frame, "chinchilla")
    starts = CHINCHILLA.grid_points({k: np.asarray(v) for k, v in SMALL_GRID.items()})
    bt = backtest(CHINCHILLA, data, starts=starts)
    assert bt["n_test_runs"] == 10
    assert bt["max_relative_error"] < 1e-4


def test_muennighoff_recovered_from_the_datablations_design(bundled):
    """Losses from the published law at the real (N, D, U) design points are refitted."""
    design = pl.read_csv(bundled / "huggingface__datablations/parametric_fit_runs.csv")
    frame = design.select(
        pl.col("params_N").alias("params"),
        pl.col("tokens_D").alias("tokens"),
        pl.col("unique_tokens_U").alias("unique_tokens"),
    ).unique()
    frame = frame.with_columns(
        pl.Series(
            "loss",
            DATABLATIONS.predict(
                frame["params"].to_numpy(),
                frame["tokens"].to_numpy(),
                frame["unique_tokens"].to_numpy(),
            ),
        )
    )
    data = prepare(frame, "muennighoff")
    start = MUENNIGHOFF.from_law(DATABLATIONS) * np.array([1.1, 0.9, 1.05, 1.1, 0.9, 1.3, 0.8])
    result = search(MUENNIGHOFF, data.columns, data.loss, starts=start[None], keep=1)
    law = MUENNIGHOFF.to_law(result.theta)
    got = law.predict(6.34e9, 242e9, 25e9)
    assert got == pytest.approx(DATABLATIONS.predict(6.34e9, 242e9, 25e9), rel=1e-4)
    assert result.objective < 1e-6


def test_loss_curve_law_is_recovered():
    truth = LossCurveLaw(L0=2.0, A=0.8, alpha=0.45, C=2e-4)
    rows = []
    for run, (peak, cooldown) in enumerate([(3e-4, 0.2), (3e-4, 0.0), (6e-4, 0.1)]):
        steps = 4000
        lr = np.full(steps, peak)
        start = int(steps * (1 - cooldown))
        lr[start:] = np.linspace(peak, 0.1 * peak, steps - start) if cooldown else peak
        s1, s2 = schedule_areas(lr / peak)  # areas in units of the peak learning rate
        idx = np.arange(200, steps, 200)
        loss = truth.predict_areas(s1[idx], s2[idx])
        rows += [
            (f"run{run}", float(a), float(b), float(c))
            for a, b, c in zip(s1[idx], s2[idx], loss, strict=True)
        ]
    frame = pl.DataFrame(rows, schema=["run_id", "s1", "s2", "loss"], orient="row")
    data = prepare(frame, "loss_curve")
    result = search(LOSS_CURVE, data.columns, data.loss)
    law = LOSS_CURVE.to_law(result.theta)
    np.testing.assert_allclose(
        law.predict_areas(frame["s1"].to_numpy(), frame["s2"].to_numpy()),
        frame["loss"].to_numpy(),
        rtol=1e-4,
    )


def test_a_law_of_another_family_cannot_seed_a_fit():
    """Warm starts read a law's parameters through its family's spec: a law of another family
    is a FitError naming both, not an assert (or a silently mis-read parameter vector)."""
    assert np.allclose(CHINCHILLA.theta_of(ChinchillaLaw(1.7, 400.0, 410.0, 0.34, 0.28)),
                       [np.log(400.0), np.log(410.0), np.log(1.7), 0.34, 0.28])  # fmt: skip
    with pytest.raises(FitError, match="MuennighoffLaw cannot seed a chinchilla fit"):
        CHINCHILLA.theta_of(DATABLATIONS)
