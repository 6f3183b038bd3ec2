"""The mixture fit tasks (through ``.fn``) and one real ``fit-mixture`` flow run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from prefect.logging import disable_run_logger
from rich.console import Console

from mixplan.planning.mixture.additive import AdditiveLaw
from mixplan.tasks.ingest import ingest_paths
from mixplan.tasks.mixture import (
    fit_mixture_family,
    fit_name,
    load_mixture_data,
    score_mixture_family,
    store_mixture_fit,
)


@pytest.fixture(scope="module")
def regmix_lake(bundled: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A lake holding the RegMix runs, written by the ingest stage."""
    lake = tmp_path_factory.mktemp("mixture-flow") / "lake"
    assert ingest_paths([bundled / "sail-sg__regmix"], lake).usable
    return str(lake)


def test_tasks_fit_score_and_store_a_law(regmix_lake: str) -> None:
    with disable_run_logger():
        train, data_hash = load_mixture_data.fn(regmix_lake, "regmix-1m-train", domains=["github"])
        test, _ = load_mixture_data.fn(regmix_lake, "regmix-1m-test", domains=["github"])
        law = fit_mixture_family.fn("additive", train)
        scores = score_mixture_family.fn(law, test, "additive")
        path = store_mixture_fit.fn(
            regmix_lake, fit_name("regmix-1m-train", "additive"), law, data_hash, scores
        )
    assert scores["spearman"][0] > 0.99  # measured 0.9961
    stored = json.loads(Path(path).read_text())
    assert stored["law"] == "AdditiveLaw" and stored["data_hash"] == data_hash
    assert stored["held_out"][0]["domain"] == "github"
    again = AdditiveLaw.from_json(Path(path).read_text())  # what the planner loads
    np.testing.assert_allclose(again.predict(test.mixture), law.predict(test.mixture))


def test_unknown_family_is_rejected(regmix_lake: str) -> None:
    from mixplan.planning.errors import SpecError

    with disable_run_logger(), pytest.raises(SpecError, match="unknown mixture family"):
        train, _ = load_mixture_data.fn(regmix_lake, "regmix-1m-train", domains=["github"])
        fit_mixture_family.fn("cubic", train)


@pytest.mark.flow
def test_fit_mixture_flow_reports_laws_and_held_out_errors(
    prefect_harness: None, regmix_lake: str, bundled: Path
) -> None:
    from mixplan.flows.fit_mixture import fit_mixture, mixture_fit_report

    result = fit_mixture(
        lake=regmix_lake,
        experiment="regmix-1m-train",
        held_out_experiment="regmix-1m-test",
        families=["additive", "linear"],
        domains=["pile_cc"],
        n_bootstrap=4,
    )
    assert set(result["fits"]) == {"additive", "linear"}
    assert Path(result["fits"]["additive"]["path"]).is_file()
    assert result["fits"]["linear"]["path"] is None  # baselines are not stored for planning
    # the stored law carries its trust region: each source's largest share in the raw table
    raw = pl.read_csv(
        Path(__file__).parents[1] / "data/public/sail-sg__regmix/train_mixture_1m.csv"
    )
    stored = json.loads(Path(result["fits"]["additive"]["path"]).read_text())
    shares = stored["training_max_share"]
    assert len(shares) == 17
    for column in raw.columns[1:]:
        source = column.removeprefix("train_the_pile_")
        (name,) = [s for s in shares if s.endswith(source)]
        assert shares[name] == pytest.approx(raw[column].max(), abs=2e-3)  # renormalised rows
    row = result["fits"]["additive"]["params"][0]
    assert row["E_lo"] <= row["E"] <= row["E_hi"]
    scores = {r["model"]: r for r in result["scores"]}
    assert scores["additive"]["spearman"] >= 0.99 > scores["linear"]["spearman"]
    console = Console(record=True, width=160)
    mixture_fit_report(result, console=console)
    text = console.export_text()
    assert "pile_cc" in text and "Held-out Spearman" in text and "E [95% CI]" in text


@pytest.mark.flow
def test_fit_mixture_flow_fits_one_scale_laws_on_the_largest_size(
    prefect_harness: None, bundled: Path, tmp_path: Path
) -> None:
    from mixplan.flows.fit_mixture import fit_mixture

    lake = str(tmp_path / "lake")
    assert ingest_paths([bundled / "yegcjs__mixinglaws" / "5Mix"], lake).usable
    result = fit_mixture(
        lake=lake,
        experiment="mixinglaws-5mix",
        families=["exponential"],
        domains=["Pile-CC"],
        save=False,
    )
    assert result["runs"] == 26  # the 410M runs, not 104 runs of four sizes
    assert "largest model size" in result["fitted_on"]
    assert result["fits"]["exponential"]["path"] is None


@pytest.mark.flow
def test_fit_mixture_command_prints_laws_and_held_out_errors(
    prefect_harness: None, regmix_lake: str
) -> None:
    """``mixplan fit --mixture`` on a lake ingested from the bundled RegMix files."""
    from typer.testing import CliRunner

    from mixplan.flows.cli import app

    args = ["fit", "--mixture", "--lake", regmix_lake, "-e", "regmix-1m-train"]
    args += ["--held-out", "regmix-1m-test", "--domain", "github", "--bootstrap", "0"]
    stored_at = Path(regmix_lake) / "fits" / "regmix-1m-train-mixture-additive.json"
    stored_at.unlink(missing_ok=True)  # the tasks test above stores the same law
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for shown in ("regmix-1m-train", "additive", "exponential", "github", "Held-out Spearman"):
        assert shown in result.stdout
    (score,) = json.loads(stored_at.read_text())["held_out"]
    assert score["domain"] == "github" and score["spearman"] > 0.99  # measured 0.9961


def test_mixture_options_need_mixture(regmix_lake: str) -> None:
    from typer.testing import CliRunner

    from mixplan.flows.cli import app

    result = CliRunner().invoke(app, ["fit", "--lake", regmix_lake, "--held-out", "x"])
    assert result.exit_code == 2 and "--mixture" in result.output
