"""The plan stage's Prefect tasks (through .fn), one real flow run, and the CLI commands."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger
from typer.testing import CliRunner

from mixplan.flows.cli import app
from mixplan.tasks.plan import plan_spec, plan_whatifs, validate_spec

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


@pytest.fixture(scope="module")
def spec_dict() -> dict:
    return tomllib.loads((SPECS / "example.toml").read_text())


def test_tasks_through_fn(spec_dict):
    spec = validate_spec.fn(spec_dict)
    with disable_run_logger():
        plan = plan_spec.fn(spec)
        grid = plan_whatifs.fn(spec, budgets=[1e22, 1e23], inference_tokens=[0.0])
    assert plan["status"] == "optimal" and plan["mixture"]
    assert [p["inputs"]["budget_flops"] for p in grid] == [1e22, 1e23]


@pytest.mark.flow
def test_plan_flow_takes_the_spec_as_parameters(prefect_harness, spec_dict):
    from mixplan.flows.plan import plan

    result = plan(spec_dict)
    assert result["status"] == "optimal"
    assert result["name"] == "example-7-sources"
    assert result["vocab_size"] > 0


def test_cli_plan_and_whatif():
    runner = CliRunner()
    result = runner.invoke(app, ["plan", str(SPECS / "example.toml")])
    assert result.exit_code == 0, result.output
    assert "binding constraints" in result.output and "mixture" in result.output
    result = runner.invoke(
        app,
        [
            "whatif",
            str(SPECS / "example.toml"),
            "--budget",
            "1e22,1e24",
            "--inference-tokens",
            "0,1e12",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 4 and all(r["status"] == "optimal" for r in rows)
    table = runner.invoke(app, ["whatif", str(SPECS / "example.toml"), "--budget", "1e22"])
    assert table.exit_code == 0 and "what-if" in table.output


def test_cli_reports_bad_specs_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[law]\nname = "sardana"\n[budget]\nflops = -5\n')
    result = CliRunner().invoke(app, ["plan", str(bad)])
    assert result.exit_code == 2
    assert "budget.flops" in result.output and "Traceback" not in result.output
    infeasible = tmp_path / "far.toml"
    infeasible.write_text(
        '[law]\nname = "sardana"\n[budget]\ntarget_loss = 1.8\n'
        '[[sources]]\nname = "web"\nunique_tokens = 5e11\nmax_epochs = 2\n'
        "[limits]\nmax_params = 1e12\n"
    )
    result = CliRunner().invoke(app, ["plan", str(infeasible)])
    assert result.exit_code == 1 and "best reachable" in result.output
