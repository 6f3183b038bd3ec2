"""IsoFLOP approaches 1 and 2, and loss -> downstream error laws (real and synthetic runs)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mixplan.planning.errors import FitError
from mixplan.planning.fitting.downstream import downstream_table, fit_downstream
from mixplan.planning.fitting.isoflop import implied_exponents, isoflop_fits, isoflop_slices
from mixplan.planning.laws import ChinchillaLaw, DownstreamErrorLaw, SigmoidErrorLaw

TRUTH = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def _isoflop_runs(rng: np.random.Generator, noise: float = 0.003):
    """Nine budgets, eleven sizes around each budget's optimum, log-normal noise."""
    flops, params = [], []
    for budget in np.geomspace(6e18, 3e21, 9):
        n_opt, _ = TRUTH.compute_optimal(budget)
        for n in float(n_opt) * np.geomspace(0.2, 5, 11):
            flops.append(budget * rng.uniform(0.97, 1.03))
            params.append(n)
    flops, params = np.array(flops), np.array(params)
    loss = TRUTH.predict(params, flops / (6 * params)) * np.exp(rng.normal(0, noise, flops.size))
    return flops, params, loss


def test_isoflop_approaches_recover_the_true_exponent_on_synthetic_runs():
    flops, params, loss = _isoflop_runs(np.random.default_rng(0))
    assert len(isoflop_slices(flops, params)) == 9
    a_true, b_true = implied_exponents(TRUTH.to_dict()["params"])
    iso = isoflop_fits(flops, params, loss, n_bootstrap=100)
    assert iso["status"] == "ok" and iso["n_slices"] == 9
    for key in ("approach_1", "approach_2"):
        entry = iso[key]
        assert entry["a"] == pytest.approx(a_true, abs=0.03)
        assert entry["b"] == pytest.approx(b_true, abs=0.03)
        low, high = entry["a_interval"]
        assert low <= a_true <= high
    # the parabola vertex is finer than the per-budget minimum on an 11-size grid
    assert abs(iso["approach_2"]["a"] - a_true) <= 0.01


def test_isoflop_on_the_epoch_chinchilla_runs(bundled):
    raw = pl.read_csv(bundled / "epoch-research__analyzing-chinchilla/svg_extracted_data.csv")
    flops, params, loss = (raw[c].to_numpy() for c in ("Training FLOP", "Model Size", "loss"))
    iso = isoflop_fits(flops, params, loss, n_bootstrap=100)
    assert iso["n_slices"] >= 9
    # Hoffmann et al. Table 2: approach 2 gives a = 0.49 (0.462, 0.534)
    a2 = iso["approach_2"]
    assert 0.46 <= a2["a"] <= 0.53
    assert a2["a_interval"][0] < a2["a"] < a2["a_interval"][1]


def test_too_few_budgets_is_reported_not_fitted():
    rng = np.random.default_rng(1)
    flops = 10 ** rng.uniform(18, 22, 30)  # scattered compute: no isoFLOP slices
    iso = isoflop_fits(flops, rng.uniform(1e8, 1e10, 30), rng.uniform(2, 3, 30))
    assert iso["status"].startswith("skipped")


def test_downstream_laws_invert_to_the_loss_they_predict():
    gadre = DownstreamErrorLaw(eps=0.95, k=12.0, gamma=1.6)
    sigmoid = SigmoidErrorLaw(floor=0.3, ceiling=0.75, slope=4.0, midpoint=2.6)
    losses = np.array([2.0, 2.5, 3.0])
    for law in (gadre, sigmoid):
        assert law.required_loss(law.predict(losses)) == pytest.approx(losses)
    assert np.isnan(gadre.required_loss(0.99))  # above eps: no loss reaches it
    assert np.isnan(sigmoid.required_loss(0.2))  # below the floor


def test_gadre_law_is_recovered_on_synthetic_runs():
    rng = np.random.default_rng(2)
    truth = DownstreamErrorLaw(eps=0.93, k=9.0, gamma=1.5)
    loss = rng.uniform(2.2, 3.6, 40)
    accuracy = 1 - truth.predict(loss) + rng.normal(0, 0.004, loss.size)
    fit = fit_downstream(loss, accuracy, metric_name="acc", n_bootstrap=60)
    gadre = next(c for c in fit["candidates"] if c["name"] == "gadre")
    assert gadre["law"]["params"]["eps"] == pytest.approx(0.93, abs=0.02)
    assert gadre["law"]["params"]["gamma"] == pytest.approx(1.5, rel=0.15)
    assert gadre["holdout_rmse"] < 0.02  # noise 0.004; extrapolated to the 10 lowest losses
    assert fit["n_runs"] == 40 and fit["n_holdout"] == 10


def test_sardana_downstream_metric_comes_from_the_run_tags(bundled, tmp_path):
    """Sardana's eval columns land in run tags (the reader keeps them there)."""
    from mixplan.tasks.fit import fit_downstream_lake
    from mixplan.tasks.ingest import ingest_paths
    from mixplan.tasks.lake import final_losses

    lake = tmp_path / "lake"
    ingest_paths([bundled / "nikhilsardana__beyond-chinchilla/trainingresults.csv"], lake)
    final = final_losses(lake, experiment="sardana")
    table = downstream_table(final, "eval_gauntlet/core_average")
    assert table.height == 47
    with pytest.raises(FitError, match="mmlu_5_shot_avg"):
        downstream_table(final, "hellaswag")
    fit, path = fit_downstream_lake(lake, "sardana", "eval_gauntlet/core_average", n_bootstrap=30)
    assert path.endswith("fits/sardana-downstream-eval_gauntlet_core_average.json")
    # Gadre's exponential law beats the sigmoid on the lowest-loss quarter of the runs
    assert fit["law"]["law"] == "downstream_error"
    best = min(c["holdout_rmse"] for c in fit["candidates"])
    assert best < 0.02
