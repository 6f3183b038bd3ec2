"""The fit stage's tasks (through .fn), the ``fit`` flow and the ``mixplan fit / predict`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from mixplan.planning.fitting import FitResult
from mixplan.tasks.fit import (
    discover_task,
    fit_path,
    load_table_task,
    point_fit_task,
    read_fit,
    steplaw_task,
    store_task,
)

FILES = (
    "epoch-research__analyzing-chinchilla/svg_extracted_data.csv",
    "step-law__steplaw/dense_lr_bs_loss.csv",
    "nikhilsardana__beyond-chinchilla/trainingresults.csv",
)


@pytest.fixture(scope="module")
def lake(bundled, tmp_path_factory):
    """A real Delta lake with three bundled sources ingested."""
    from mixplan.tasks.ingest import ingest_paths

    path = tmp_path_factory.mktemp("fit-flow") / "lake"
    ingest_paths([bundled / f for f in FILES], path)
    return str(path)


def test_discover_and_load_tasks(lake):
    recipes = {r.experiment: r for r in discover_task.fn(lake)}
    assert set(recipes) == {"epoch-chinchilla", "steplaw", "sardana"}
    assert recipes["steplaw"].law == "steplaw"
    table = load_table_task.fn(lake, recipes["sardana"])
    assert table.height == 47
    assert {"run_id", "params", "tokens", "flops", "loss"} <= set(table.columns)


def test_point_fit_and_store_tasks(lake):
    recipe = next(r for r in discover_task.fn(lake, ["steplaw"]))
    table = load_table_task.fn(lake, recipe)
    result = steplaw_task.fn(table, recipe, 50, 0, 0.8)
    path = store_task.fn(result, lake)
    assert path == fit_path(lake, "steplaw")
    again = read_fit(path)
    assert again.law == result.law
    assert again.n_bootstrap == 50
    # the sweep StepLaw holds over, for the planner's extrapolation warning
    span = again.data_range
    assert span["params_min"] < span["params"] and span["tokens_min"] < span["tokens"]
    assert span["flops_min"] < span["flops"]
    recipe = next(r for r in discover_task.fn(lake, ["sardana"]))
    data, search = point_fit_task.fn(load_table_task.fn(lake, recipe), recipe)
    assert data.n_runs == 47 and np.isfinite(search.objective)


@pytest.mark.flow
def test_fit_flow_stores_fits_with_bootstrap_chunks(lake, prefect_harness):
    from mixplan.flows.fit import fit

    paths = fit(lake, experiments=["epoch-chinchilla"], n_bootstrap=60, chunk_size=25)
    assert paths == [fit_path(lake, "epoch-chinchilla")]
    result = FitResult.from_json(paths[0])
    assert result.n_bootstrap == 60
    assert result.n_runs == 240
    assert result.backtest["status"] == "ok"
    assert result.options["selection"]["experiment"] == "epoch-chinchilla"
    assert result.code_version


def test_cli_fit_and_predict(lake, tmp_path):
    from mixplan.flows.cli import app

    runner = CliRunner()
    out = runner.invoke(
        app, ["fit", "--lake", lake, "--experiment", "sardana", "--bootstrap", "30", "--json"]
    )
    assert out.exit_code == 0, out.output
    fits = json.loads(out.stdout)
    # the recipe's law first, then the law that extrapolated best on the rolling backtests
    board = json.loads((Path(lake) / "fits" / "sardana-leaderboard.json").read_text())
    names = ["sardana-chinchilla"] + (
        ["sardana-" + board["winner"]] * (board["winner"] != "chinchilla")
    )
    assert [f["name"] for f in fits] == names
    assert fits[0]["n_bootstrap"] == 30
    assert "alpha" in fits[0]["intervals"]

    table = runner.invoke(app, ["fit", "--lake", lake, "-e", "sardana", "--bootstrap", "10"])
    assert table.exit_code == 0
    assert "backtest" in table.output and "tokens_per_param" in table.output

    rows = tmp_path / "rows.csv"
    pl.DataFrame({"params": [1e9, 7e10], "tokens": [2e10, 1.4e12]}).write_csv(rows)
    pred = runner.invoke(app, ["predict", "--fit", fits[0]["path"], "--at", str(rows), "--json"])
    assert pred.exit_code == 0, pred.output
    predicted = json.loads(pred.stdout)
    assert len(predicted) == 2
    assert predicted[0]["loss_low"] <= predicted[0]["predicted_loss"] <= predicted[0]["loss_high"]

    bad = runner.invoke(app, ["predict", "--fit", str(tmp_path / "nope.json"), "--at", str(rows)])
    assert bad.exit_code == 2


def test_cli_fit_law_and_target_options(lake, tmp_path):
    from mixplan.flows.cli import app

    runner = CliRunner()
    board_path = Path(lake) / "fits" / "sardana-leaderboard.json"
    board_path.unlink(missing_ok=True)
    out = runner.invoke(
        app, ["fit", "--lake", lake, "-e", "sardana", "--law", "gadre", "-b", "10", "--json"]
    )
    assert out.exit_code == 0, out.output
    fits = json.loads(out.stdout)
    assert [f["name"] for f in fits] == ["sardana-gadre"]
    assert fits[0]["law"]["law"] == "gadre"
    assert 0 < fits[0]["calibration"]["coverage"]["coverage"] <= 1
    assert not board_path.exists()  # a named law is not a leaderboard

    bad = runner.invoke(app, ["fit", "--lake", lake, "--law", "chinchila"])
    assert bad.exit_code == 2
    assert "unknown law 'chinchila'" in bad.output and "kaplan" in bad.output

    target = runner.invoke(
        app,
        [
            "fit",
            "--lake",
            lake,
            "-e",
            "sardana",
            "--target",
            "eval_gauntlet/world_knowledge",
            "-b",
            "10",
        ],
    )
    assert target.exit_code == 0, target.output
    assert "error = 1 - metric" in target.output and "(chosen)" in target.output
    stored = json.loads(
        (Path(lake) / "fits" / "sardana-downstream-eval_gauntlet_world_knowledge.json").read_text()
    )
    assert stored["kind"] == "downstream" and stored["n_runs"] == 47
    missing = runner.invoke(app, ["fit", "--lake", lake, "-e", "sardana", "--target", "nope"])
    assert missing.exit_code == 2 and "eval_gauntlet/core_average" in missing.output


def test_runs_with_several_domains_and_no_all_are_fitted_per_domain(tmp_path):
    """No aggregate domain: every domain is fitted, and the CLI says so."""
    from mixplan.flows.cli import app
    from mixplan.tasks.ingest import ingest_paths

    rng = np.random.default_rng(4)
    truth = {"web": (1.9, 400.0, 1800.0), "code": (1.2, 300.0, 1500.0)}
    lines = []
    for i, n in enumerate(np.geomspace(5e7, 3e9, 24)):
        tokens = n * float(rng.uniform(5, 100))
        for domain, (e, a, b) in truth.items():
            loss = (e + a / n**0.34 + b / tokens**0.36) * float(np.exp(rng.normal(0, 0.004)))
            record = {
                "run_id": f"dom/r{i}",
                "experiment": "dom",
                "params": float(n),
                "tokens": tokens,
                "step": -1,
                "split": "val",
                "domain": domain,
                "loss": loss,
            }
            lines.append(json.dumps(record))
    log = tmp_path / "domains.jsonl"
    log.write_text("\n".join(lines) + "\n")
    lake = tmp_path / "lake"
    ingest_paths([log], lake)
    out = CliRunner().invoke(
        app, ["fit", "--lake", str(lake), "--law", "chinchilla", "-b", "0", "--json"]
    )
    assert out.exit_code == 0, out.output
    names = sorted(f["name"] for f in json.loads(out.stdout))
    assert names == ["dom-chinchilla@code", "dom-chinchilla@web"]
    assert "logs 2 evaluation domains (code, web) and no aggregate 'all'" in out.stderr
    one = CliRunner().invoke(
        app, ["fit", "--lake", str(lake), "--law", "chinchilla", "-d", "web", "-b", "0", "--json"]
    )
    assert [f["name"] for f in json.loads(one.stdout)] == ["dom-chinchilla@web"]
    wrong = CliRunner().invoke(app, ["fit", "--lake", str(lake), "-d", "math"])
    assert wrong.exit_code == 2 and "no domain 'math'" in wrong.output


def test_loss_curves_are_fitted_from_logged_learning_rates(tmp_path):
    """Runs logging the learning rate at every step get a Tissue et al. loss-curve fit."""
    from mixplan.planning.laws import LossCurveLaw, schedule_areas
    from mixplan.tasks.fit import fit_lake
    from mixplan.tasks.ingest import ingest_paths

    truth = LossCurveLaw(L0=2.0, A=0.8, alpha=0.45, C=2e-4)
    lines = []
    for run, cooldown in enumerate([0.0, 0.15, 0.3]):
        lr = np.ones(1500)
        start = int(1500 * (1 - cooldown))
        lr[start:] = np.linspace(1.0, 0.05, 1500 - start)
        s1, s2 = schedule_areas(lr)
        loss = truth.predict_areas(s1, s2)
        lines += [
            json.dumps(
                {
                    "run_id": f"curve/r{run}",
                    "experiment": "curve",
                    "params": 1.24e8,
                    "step": s,
                    "tokens_seen": (s + 1) * 524_288,
                    "learning_rate": float(lr[s]),
                    "split": "train",
                    "domain": "all",
                    "loss": float(loss[s]),
                }
            )
            for s in range(0, 1500, 5)
        ]
    log = tmp_path / "curves.jsonl"
    log.write_text("\n".join(lines) + "\n")
    lake = tmp_path / "lake"
    ingest_paths([log], lake)
    [(result, path)] = fit_lake(lake, n_bootstrap=20)
    assert result.name == "curve-loss_curve"
    assert result.law.alpha == pytest.approx(truth.alpha, rel=0.05)
    assert result.backtest["status"] == "ok"
    assert result.backtest["max_relative_error"] < 0.01
