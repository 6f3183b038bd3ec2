"""The ingest entry points: the CLI command, the Prefect flow and its tasks (real runs)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from mixplan.flows.cli import app
from mixplan.tasks.lake import lake_summary, read_metrics, read_quarantine

runner = CliRunner()


def test_cli_ingest_prints_a_summary_and_json(tmp_path, bundled):
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", str(bundled / "sail-sg__regmix"), "--lake", str(lake)])
    assert result.exit_code == 0, result.output
    assert "rows accepted" in result.output
    assert "6656" in result.output  # 512 train runs x 13 validation domains
    again = runner.invoke(
        app, ["ingest", str(bundled / "sail-sg__regmix"), "--lake", str(lake), "--json"]
    )
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["totals"]["files_unchanged"] == 2
    assert summary["lake_summary"]["runs"] == 512 + 256


def test_cli_exits_non_zero_when_nothing_usable(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(app, ["ingest", str(empty), "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 1
    assert "empty_file" in result.output
    assert "empty.jsonl: the file is empty (0 bytes)" in result.output  # the why, per file


def test_cli_partial_file_still_succeeds(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_text('{"run_id": "r", "step": 1, "loss": 3.0}\n{oops\n')
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", str(log), "--lake", str(lake)])
    assert result.exit_code == 0, result.output
    assert "malformed_json" in result.output
    assert "Each quarantined record" in result.output  # points at the quarantine table
    assert read_metrics(lake).height == 1


def test_cli_forced_format_and_help(tmp_path, bundled):
    folder = tmp_path / "dumps"
    folder.mkdir()
    shutil.copy(bundled / "yegcjs__mixinglaws/5Mix/410M.txt", folder / "renamed.tsv")
    lake = tmp_path / "lake"
    result = runner.invoke(
        app,
        [
            "ingest",
            str(folder / "renamed.tsv"),
            "--lake",
            str(lake),
            "--format",
            "mapping:mixinglaws-5mix",
        ],
    )
    assert result.exit_code == 0, result.output
    assert lake_summary(lake)["experiments"]["mixinglaws-5mix"]["metric_rows"] == 6292
    help_text = runner.invoke(app, ["ingest", "--help"]).output
    for word in ("wandb", "regmix", "mapping:", "quarantine", "Examples"):
        assert word in help_text


def test_unknown_forced_format_is_a_clear_error(tmp_path, bundled):
    result = runner.invoke(
        app,
        [
            "ingest",
            str(bundled / "sail-sg__regmix"),
            "--lake",
            str(tmp_path / "l"),
            "--format",
            "nope",
        ],
    )
    assert result.exit_code == 2
    assert "unknown format 'nope'" in result.output  # a message, not a traceback
    assert "known formats:" in result.output


def test_task_functions_run_without_a_flow(tmp_path, bundled):
    from mixplan.tasks.ingest import discover_task, parse_task, validate_task, write_task

    lake = str(tmp_path / "lake")
    plans = discover_task.fn([str(bundled / "step-law__steplaw")], lake)
    assert [p.format for p in plans] == ["steplaw"]
    parsed = parse_task.fn(plans[0], str(tmp_path / "stage"))
    validated = validate_task.fn(parsed, str(tmp_path / "stage"))
    report = write_task.fn(validated, plans[0], lake)
    assert (report.runs, report.metric_rows) == (1911, 1911)


@pytest.mark.flow
def test_ingest_flow_matches_the_cli_path(prefect_harness, tmp_path, bundled):
    from mixplan.flows.ingest import ingest
    from mixplan.tasks.ingest import ingest_paths

    folder = tmp_path / "logs"
    shutil.copytree(bundled / "mcleish7__gemstone-scaling-laws", folder / "gem")
    (folder / "bad.jsonl").write_text('{"run_id": "x", "step": 1, "loss": -1}\n')
    flow_lake, plain_lake = tmp_path / "flow_lake", tmp_path / "plain_lake"
    summary = ingest([str(folder)], str(flow_lake))
    plain = ingest_paths([folder], plain_lake).to_dict()
    assert summary["totals"] == plain["totals"]
    assert summary["lake_summary"]["experiments"] == plain["lake_summary"]["experiments"]
    assert summary["totals"]["quarantined"] == {"negative_loss": 1}
    assert read_quarantine(flow_lake)["reason"].to_list() == ["negative_loss"]
    again = ingest([str(folder)], str(flow_lake))
    assert again["totals"]["files_unchanged"] == 3


def test_a_regmix_loss_file_without_its_mixture_file_is_reported(tmp_path, bundled):
    from mixplan.tasks.ingest import ingest_paths

    folder = tmp_path / "logs"
    folder.mkdir()
    shutil.copy(bundled / "sail-sg__regmix/train_pile_loss_1m.csv", folder)
    report = ingest_paths([folder], tmp_path / "lake")
    [file] = report.files
    assert file.status == "ignored"
    assert "train_mixture_1m.csv, which is missing" in file.note
    assert not report.usable


def test_a_missing_mappings_folder_is_a_clear_error(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_text('{"run_id": "r", "step": 1, "loss": 3.0}\n')
    missing = tmp_path / "no-such-folder"
    result = runner.invoke(
        app, ["ingest", str(log), "--lake", str(tmp_path / "lake"), "--mappings", str(missing)]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "lake").exists()  # nothing was written
