"""Drift checks: new runs against the previous fit's intervals, plans that moved."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from prefect.logging import disable_run_logger

from mixplan.planning.drift import flag_runs, plan_moves
from mixplan.planning.fitting import fit_frame
from mixplan.planning.report.build import build_report
from mixplan.planning.report.drift import drift_section
from mixplan.planning.report.laws import law_section, runs_of_fit
from mixplan.planning.report.plans import flatten_plan, plan_section
from mixplan.tasks.drift import check_drift

EPOCH_CSV = "epoch-research__analyzing-chinchilla/svg_extracted_data.csv"


def test_flag_runs_marks_only_losses_outside_the_interval():
    frame = flag_runs(
        ["a", "b", "c"], [2.0, 2.5, 1.0], [2.0, 2.0, 2.0], [1.9, 1.9, 1.9], [2.1, 2.1, 2.1]
    )
    # flagged first, largest relative error first: c is 50% low, b 25% high
    assert frame.filter(pl.col("outside"))["run_id"].to_list() == ["c", "b"]
    assert frame.filter(~pl.col("outside"))["run_id"].to_list() == ["a"]
    with pytest.raises(ValueError, match="one length"):
        flag_runs(["a"], [1.0, 2.0], [1.0], [1.0], [1.0])


def test_plan_moves_need_to_leave_both_intervals():
    before = {
        "params": (10e9, 8e9, 12e9),
        "tokens": (1e12, None, None),
        "mixture:web": (0.5, None, None),
    }
    inside = {
        "params": (11e9, 9e9, 13e9),
        "tokens": (1.05e12, None, None),
        "mixture:web": (0.52, None, None),
    }
    assert plan_moves("p", before, inside) == []
    moved = {
        "params": (20e9, 18e9, 22e9),
        "tokens": (2e12, None, None),
        "mixture:web": (0.7, None, None),
    }
    moves = {m.quantity: m for m in plan_moves("p", before, moved)}
    assert set(moves) == {"params", "tokens", "mixture:web"}
    assert moves["params"].relative_change == pytest.approx(1.0)
    # the new value leaves the old interval but the old value is inside the (wide) new one
    wide = {"params": (13e9, 5e9, 30e9)}
    assert plan_moves("p", before, wide) == []


@pytest.fixture(scope="module")
def epoch_fit(bundled):
    raw = pl.read_csv(bundled / EPOCH_CSV)
    frame = (
        raw.select(
            pl.format("epoch/{}", pl.int_range(pl.len())).alias("run_id"),
            pl.col("Model Size").alias("params"),
            pl.col("Training FLOP").alias("flops"),
            "loss",
        )
        .with_columns((pl.col("flops") / (6 * pl.col("params"))).alias("tokens"))
        .sort("loss")
        .head(240)  # Besiroglu et al. drop the 5 highest-loss points
    )
    grid = {"a": [5.0, 10.0], "b": [5.0, 10.0], "e": [0.0, 0.5], "alpha": [0.5], "beta": [0.5]}
    fit = fit_frame(frame, "chinchilla", grid=grid, n_bootstrap=8, selection={"experiment": "ep"})
    return fit, frame


def test_new_runs_outside_the_previous_fit_are_flagged(epoch_fit):
    fit, frame = epoch_fit
    new = frame.head(3).with_columns(pl.lit("ep").alias("experiment"))
    expected = fit.law.predict(new["params"].to_numpy(), new["tokens"].to_numpy())
    # run 0 behaves as the law says, run 1 is 20% worse, run 2 is from another experiment
    new = new.with_columns(
        pl.Series("loss", [expected[0], expected[1] * 1.2, expected[2] * 1.2]),
        pl.Series("experiment", ["ep", "ep", "other"]),
        pl.Series("run_id", ["new/ok", "new/bad", "new/other"]),
    )
    previous = {
        "run_at": "2026-01-01T00:00:00+00:00",
        "plans": {"x": {"params": [1e10, 9e9, 11e9]}},
    }
    with disable_run_logger():
        result = check_drift.fn(
            previous,
            new_runs=new,
            previous_fits=[fit],
            plans={"x": {"params": [2e10, 1.9e10, 2.1e10]}, "y": {"params": [1e9, None, None]}},
        )
    assert result.flagged["run_id"].to_list() == ["new/bad"]
    assert result.checked_runs.height == 3  # the other experiment is predicted as NaN
    assert [m.quantity for m in result.moves] == ["params"]
    assert "plan y is new" in result.notes
    section = drift_section(result)
    assert section.has_flags and section.flagged_runs.rows[0][0] == "new/bad"
    assert "1 outside" in section.summary


def test_first_run_has_nothing_to_compare():
    with disable_run_logger():
        result = check_drift.fn({}, new_runs=pl.DataFrame(), previous_fits=[], plans={})
    assert result.summary().startswith("First pipeline run")
    assert not drift_section(result).has_flags


def test_plans_flatten_with_intervals_and_render():
    plan = {
        "name": "p",
        "status": "optimal",
        "params": 1.4e10,
        "tokens": 1.0e12,
        "loss": 2.01,
        "train_flops": 8.6e22,
        "vocab_size": 116740.2,
        "mixture": {"web": 0.42, "code": 0.55, "math": 0.03},
        "intervals": {"params": {"low": 1.2e10, "median": 1.4e10, "high": 1.6e10}},
        "explanation": {
            "binding": ["budget"],
            "binding_labels": ["compute budget"],
            "shadow_prices": {"budget": 0.0535},
            "flat_params_range": [7.9e9, 3.9e10],
            "marginal_loss_per_10x": 0.09998,
            "hyperparameters": {"learning_rate": 5.27e-4, "batch_size_tokens": 4.2e6},
        },
    }
    flat = flatten_plan(plan)
    assert flat["params"] == [1.4e10, 1.2e10, 1.6e10]
    assert flat["mixture:code"] == [0.55, None, None]
    rows = [
        {
            "budget": 1e22,
            "inference_tokens": 0.0,
            "params": 6.5e9,
            "tokens": 2.5e11,
            "loss": 2.14,
            "train_flops": 1e22,
            "status": "optimal",
        },
        {
            "budget": 1e23,
            "inference_tokens": 0.0,
            "params": 1.4e10,
            "tokens": 1e12,
            "loss": 2.01,
            "train_flops": 1e23,
            "status": "optimal",
        },
    ]
    section = plan_section("p", plan, rows)
    text = " ".join(section.explanations)
    assert "compute budget (shadow price 0.0535)" in text
    assert "7.9B to 39.0B parameters" in text
    assert "lower the predicted loss by 0.100 nats" in text
    assert [f.title for f in section.figures] == ["planned mixture", "loss-cost frontier"]
    assert section.tables[0].rows[1][2] == "14.0B"
    assert np.isclose(section.decisions[-1].value, 1e12 / 1.4e10)


def test_a_point_outside_its_own_interval_is_not_a_move():
    skewed = {"vocab_size": (128_367.0, 109_442.0, 127_242.0)}  # seen in a real plan
    assert plan_moves("p", skewed, skewed) == []
    nudged = {"vocab_size": (128_400.0, 109_442.0, 127_242.0)}
    assert plan_moves("p", skewed, nudged) == []


def test_a_fitted_law_is_shown_with_its_runs_and_a_broken_section_becomes_a_problem(epoch_fit):
    fit, frame = epoch_fit
    section = law_section(fit, frame)
    assert section.title == f"chinchilla law · experiment ep ({fit.name})"
    assert [f.title for f in section.figures] == ["loss vs compute", "isoFLOP curves"]
    assert [p.name for p in section.parameters] == list(type(fit.law).param_names())
    assert all(p.low is not None for p in section.parameters)  # bootstrap intervals shown
    broken_mixture = {"experiment": "m", "scores": [{"model": "linear"}]}  # no domain
    report = build_report(
        lake="lake",
        code="test",
        generated_at="now",
        coverage=None,
        fits=[(fit, frame)],
        mixture_fits=[broken_mixture],
        plans={},
        drift=None,
        problems=["fit of experiment x failed: ...; its laws are left out"],
    )
    assert report.laws == (section,)
    assert report.problems[0].startswith("fit of experiment x failed")
    assert report.problems[1].startswith("mixture fit of m: not shown")
    assert dict(report.facts)["laws fitted"] == "2"


def test_a_fit_is_charted_with_one_validation_loss_in_nats_per_run(epoch_fit):
    fit, frame = epoch_fit
    rows = frame.head(3).sort("run_id")
    final_losses = pl.concat(
        [
            rows.with_columns(
                split=pl.lit(split), domain=pl.lit(domain), loss_kind=pl.lit(kind)
            ).with_columns(pl.col("loss") + offset)
            for split, domain, kind, offset in [
                ("train", "all", "nats", 1.0),
                ("val", "web", "nats", 2.0),
                ("val", "all", "nats", 0.0),
                ("val", "all", "unigram_normalized", -5.0),
            ]
        ]
    )
    charted = runs_of_fit(fit, final_losses)
    assert charted["run_id"].to_list() == rows["run_id"].to_list()
    assert charted["loss"].to_list() == rows["loss"].to_list()
