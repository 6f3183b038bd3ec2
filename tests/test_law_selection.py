"""Law selection by extrapolation and calibrated intervals, on the real bundled runs.

Rolling-origin backtests (fit below compute quantiles, predict above) rank the laws; the 90%
prediction intervals calibrated on them must cover 80-97% of held-out runs on every bundled
experiment, measured on origins never used to calibrate them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixplan.planning.errors import FitError
from mixplan.planning.fitting import get_spec, prepare
from mixplan.planning.fitting.calibration import (
    conformal_quantile,
    measured_coverage,
)
from mixplan.planning.fitting.leaderboard import applicable_laws, leaderboard, winner
from mixplan.planning.fitting.recipes import default_recipe, fit_table, recipe_for
from mixplan.planning.fitting.rolling import rolling_origin

FILES = (
    "epoch-research__analyzing-chinchilla/svg_extracted_data.csv",
    "nikhilsardana__beyond-chinchilla/trainingresults.csv",
    "huggingface__datablations/parametric_fit_runs.csv",
    "sail-sg__scaling-with-vocab/exp_data.csv",
    "mcleish7__gemstone-scaling-laws/wandb_df_for_fitting_hot.jsonl",
    "mcleish7__gemstone-scaling-laws/wandb_df_for_fitting_cool_end.jsonl",
)


@pytest.fixture(scope="module")
def lake(bundled, tmp_path_factory):
    """A real Delta lake with every bundled scale-law source ingested."""
    from mixplan.tasks.ingest import ingest_paths

    path = tmp_path_factory.mktemp("selection") / "lake"
    ingest_paths([bundled / f for f in FILES], path)
    return str(path)


def _table(lake, experiment):
    from mixplan.tasks.lake import read_metrics, read_runs

    runs, metrics = (
        read_runs(lake, experiment=experiment),
        read_metrics(lake, experiment=experiment),
    )
    recipe = default_recipe(experiment) or recipe_for(experiment, runs, metrics)
    return recipe, fit_table(recipe, runs, metrics)


def test_sardana_leaderboard_ranks_laws_by_held_out_error(lake):
    recipe, table = _table(lake, "sardana")
    assert applicable_laws(table) == ["chinchilla", "kaplan", "gadre"]
    board, origins = leaderboard(table, name="sardana")
    scores = [e["score"] for e in board["entries"]]
    assert scores == sorted(scores) and [e["rank"] for e in board["entries"]] == [1, 2, 3]
    # Sardana's long-trained runs (10-10,000 tokens per parameter) are extrapolated best by
    # Kaplan's joint law: 1.7% mean held-out error against Chinchilla's 4.5%
    assert board["winner"] == "kaplan"
    assert winner(board) == "sardana-kaplan"
    assert board["entries"][0]["score"] < 0.6 * board["entries"][-1]["score"]
    ok = [o for o in origins["kaplan"] if o["status"] == "ok"]
    assert len(ok) == len(board["quantiles"]) == 6
    for origin in ok:  # held-out runs are exactly those above the cut-off
        assert min(r["flops"] for r in origin["runs"]) > origin["cutoff_flops"]


def test_winner_of_a_board_without_backtests_is_a_clear_error():
    with pytest.raises(FitError, match="no winner"):
        winner({"name": "tiny", "winner": None, "entries": []})


# The law each bundled experiment's leaderboard picks (its winner): nominal 90% intervals must
# cover 80-97% of held-out runs.
COVERAGE_CASES = [
    ("epoch-chinchilla", "chinchilla"),
    ("sardana", "kaplan"),
    ("datablations", "kaplan"),  # second on datablations' board
    ("datablations", "muennighoff"),
    ("gemstones-hot", "chinchilla"),
    ("gemstones-cooldown", "chinchilla"),
    # Tao's law fitted on small runs predicts every larger run's (negative, raw-scale) loss too
    # high: the learned drift re-centres its intervals (57% -> 85% of 120 without it)
    ("tao-vocab", "tao"),
]


@pytest.mark.parametrize(("experiment", "law"), COVERAGE_CASES)
def test_calibrated_90_percent_intervals_cover_80_to_97_percent(lake, experiment, law):
    recipe, table = _table(lake, experiment)
    data = prepare(table, law, outlier_rule=recipe.outlier_rule)
    origins = rolling_origin(get_spec(law), data)
    coverage = measured_coverage(origins, level=0.9)
    assert coverage["n"] >= 30
    assert 0.80 <= coverage["coverage"] <= 0.97, coverage


def test_conformal_quantile_is_the_split_conformal_rank():
    scores = np.arange(1.0, 100.0)  # 99 scores: rank ceil(100 * 0.9) = 90
    assert conformal_quantile(scores, 0.9) == 90.0
    assert conformal_quantile(scores, 0.5) == 50.0
    assert conformal_quantile([1.0, 2.0], 0.9) == 2.0  # too few scores: the largest
    assert math.isnan(conformal_quantile([], 0.9))


def _drifting_origins(rng, drift, n_runs=300):
    """Six synthetic backtests whose held-out residuals are ``drift + N(0, s)`` (a law that is
    systematically off by ``drift`` past its data), with the true scale ``s`` recorded."""
    origins = []
    for i, q in enumerate(np.linspace(0.3, 0.8, 6)):
        scale = rng.uniform(0.5, 2.0, n_runs)
        origins.append(
            {
                "quantile": q,
                "status": "ok",
                "cutoff_flops": 1e20 * 10**i,
                "runs": [
                    {"flops": 1e20 * 10**i, "residual": r, "scale": s}
                    for r, s in zip(drift + rng.normal(0, scale), scale, strict=True)
                ],
            }
        )
    return origins


def test_coverage_of_gaussian_errors_is_nominal_on_both_sides():
    """Synthetic origins with N(0, s) residuals and the true scale: 90% intervals cover ~90%,
    50% ones ~50% (a 90% label on a 25/75-percentile width would cover ~50%)."""
    origins = _drifting_origins(np.random.default_rng(3), 0.0, n_runs=400)
    assert 0.87 <= measured_coverage(origins, 0.9)["coverage"] <= 0.93
    assert 0.46 <= measured_coverage(origins, 0.5)["coverage"] <= 0.54


def test_learned_drift_keeps_coverage_nominal_and_intervals_narrow():
    """A known drift of 4 noise scales: the backtests learn it (median residual, significant),
    90% intervals cover within the binomial band of 90% (1,500 scored runs: +-3 sd), and they
    are far narrower than intervals that widen to swallow the drift instead."""
    from mixplan.planning.fitting.calibration import calibrate, extrapolation_drift

    rng = np.random.default_rng(11)
    origins = _drifting_origins(rng, drift=4.0)
    coverage = measured_coverage(origins, 0.9)
    band = 3 * math.sqrt(0.9 * 0.1 / coverage["n"])
    assert coverage["n"] == 1500 and abs(coverage["coverage"] - 0.9) <= band, coverage
    assert all(o["drift"] == pytest.approx(4.0, abs=0.2) for o in coverage["origins"])
    assert calibrate(origins).drift == pytest.approx(4.0, abs=0.2)
    # the factor of an interval centred on the prediction must cover |4 + noise|: ~2.5x wider
    undrifted = conformal_quantile(
        [abs(r["residual"]) / r["scale"] for r in origins[-1]["runs"]], 0.9
    )
    assert coverage["origins"][-1]["factor"] < 0.5 * undrifted
    # no drift: none is learned (an unbiased law keeps intervals centred on its prediction)
    assert extrapolation_drift(rng.normal(0, 1, 400)) == 0.0
    assert calibrate(_drifting_origins(rng, drift=0.0)).drift == 0.0


def _widening_origins(rng, widening, n_runs=250):
    """Six synthetic backtests (cut-offs 0.4 decades apart) whose held-out runs reach up to
    3.5 decades past their cut-off, with residuals ``N(0, s (1 + widening d))`` at ``d``
    decades past it: a law whose error grows at a known rate."""
    origins = []
    for i, q in enumerate(np.linspace(0.3, 0.8, 6)):
        cutoff = 20 + 0.4 * i
        log_flops = rng.uniform(cutoff, 23.5, n_runs)
        scale = rng.uniform(0.5, 2.0, n_runs)
        sd = scale * (1 + widening * (log_flops - cutoff))
        origins.append(
            {
                "quantile": q,
                "status": "ok",
                "cutoff_flops": 10.0**cutoff,
                "runs": [
                    {"flops": 10.0**f, "residual": r, "scale": s}
                    for f, r, s in zip(log_flops, rng.normal(0, sd), scale, strict=True)
                ],
            }
        )
    return origins


@pytest.mark.parametrize("true_widening", [0.0, 3.0])
def test_widening_is_learned_from_the_backtests(true_widening):
    """Errors growing at a known rate per decade past the data: the widening learned by
    backtesting the calibration is close to it; the final calibrated 90% intervals cover fresh
    runs of the law within the binomial band of 90% (3 sd, calibration and test draws); the
    measured coverage is at least nominal (conservative before the rate can be learned)."""
    from mixplan.planning.fitting.calibration import calibrate, learn_widening

    origins = _widening_origins(np.random.default_rng(5), true_widening)
    widening = learn_widening(origins)
    assert widening.learned and abs(widening.rate - true_widening) <= 1.0, widening
    assert widening.reach > 3.0  # the backtests checked runs 3 decades past their cut-off
    calib = calibrate(origins)
    assert calib.widening == widening

    fresh = _widening_origins(np.random.default_rng(105), true_widening, n_runs=2000)[-1]
    residual, scale, flops = (np.array([r[k] for r in fresh["runs"]]) for k in RUN_FIELDS)
    half = calib.factor * scale * widening.factor(flops, fresh["cutoff_flops"])
    covered = np.mean(np.abs(residual - calib.drift) <= half)
    band = 3 * math.sqrt(0.9 * 0.1 * (1 / calib.n_scores + 1 / flops.size))
    assert abs(covered - 0.9) <= band, (covered, band)

    coverage = measured_coverage(origins, 0.9)
    band = 3 * math.sqrt(0.9 * 0.1 / coverage["n"])
    assert coverage["n"] == 1250 and 0.9 - band <= coverage["coverage"] <= 0.97, coverage


RUN_FIELDS = ("residual", "scale", "flops")


def test_widening_stays_conservative_until_the_backtests_can_learn_it():
    """Too few backtested runs to check a widening: none is learned, the width grows at the
    most conservative rate at every distance."""
    from mixplan.planning.fitting.calibration import MAX_WIDENING, Widening, learn_widening

    origins = _widening_origins(np.random.default_rng(5), 1.0, n_runs=3)
    assert learn_widening(origins) == Widening(rate=MAX_WIDENING, reach=0.0, learned=False)
    assert Widening().factor(1e22, 1e20) == pytest.approx(1 + 2 * MAX_WIDENING)
    # a learned rate holds up to its reach, the conservative one beyond
    assert Widening(1.0, reach=1.0).factor(1e22, 1e20) == pytest.approx(2 + MAX_WIDENING)


def test_widening_note_says_how_the_width_grows():
    from mixplan.planning.fitting.calibration import widening_note

    learned = {"widening": 1.5, "widening_reach": 2.42, "widening_learned": True, "drift": -0.19}
    assert widening_note(learned) == (
        "width grows by 1.5 in-data widths per decade up to 2.4 decades past the data, 16 beyond "
        "(learned on the backtests); drift -0.19 (residual scale)"
    )
    unlearned = {"widening": 16.0, "widening_reach": 0.0, "widening_learned": False}
    assert "too few backtests" in widening_note(unlearned)
    assert widening_note({}).endswith("(fixed); no drift")  # a record stored before learning


def test_fit_stores_calibrated_intervals_with_their_coverage(lake):
    """A full fit (sardana, Kaplan) carries the calibration; predictions use it, and the
    bootstrap parameter intervals are the 5th / 95th percentiles of the draws at level 0.9."""
    import polars as pl

    from mixplan.planning.fitting import fit_frame, predict_with_interval
    from mixplan.planning.fitting.calibration import MAX_WIDENING, Widening, conformal_quantile
    from mixplan.planning.fitting.rolling import Uncertainty

    _, table = _table(lake, "sardana")
    fit = fit_frame(table, "kaplan", name="sardana-kaplan", n_bootstrap=40, backtest_quantile=None)
    record = fit.calibration
    assert record["level"] == 0.9 and 0.80 <= record["coverage"]["coverage"] <= 0.97
    assert record["factor"] == conformal_quantile(record["scores"], 0.9)
    draws = fit.bootstrap_["alpha_N"]
    _, low, high = fit.intervals(level=0.9)["alpha_N"]
    assert (low, high) == tuple(np.nanpercentile(draws, [5, 95]))

    rows = pl.DataFrame({"params": [1e9, 3e10], "tokens": [2e10, 6e12]})
    out = predict_with_interval(fit, rows)
    spec = get_spec("kaplan")
    theta = spec.from_law(fit.law)
    cols = {c: rows[c].to_numpy() for c in spec.columns}
    scale = Uncertainty.from_dict(record["uncertainty"]).scale(spec, theta, cols)
    flops = 6 * rows["params"].to_numpy() * rows["tokens"].to_numpy()
    # Kaplan's errors on Sardana's runs grow past the data: a learned, nonzero widening
    assert record["widening_learned"] and 0 < record["widening"] < MAX_WIDENING
    widening = Widening.from_record(record)
    assert widening.reach > 1.0
    half = record["factor"] * scale * widening.factor(flops, record["data_flops"])
    point = out["predicted_loss"].to_numpy()
    shift = np.exp(record["drift"])  # the backtests' systematic drift (log loss), 0 if none
    assert out["loss_low"].to_numpy() == pytest.approx(point * shift * np.exp(-half))
    assert out["loss_high"].to_numpy() == pytest.approx(point * shift * np.exp(half))
    assert half[1] > half[0]  # wider past the data
    assert out["interval"][0].startswith("calibrated 90%, measured coverage")
