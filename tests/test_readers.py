"""Every real file in data/public parses, with row counts checked against the raw files.

Expected counts are computed here from the raw files with the standard library (csv / json /
line splitting), independently of the readers.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from mixplan.planning.readers import detect_format, parse_source, validate_source
from mixplan.planning.readers.tables import tao_tokens_per_character


def _read(path: Path, tmp_path: Path):
    parsed = parse_source(path, staging_dir=tmp_path)
    validated = validate_source(parsed, staging_dir=tmp_path)
    metrics = pl.from_arrow(validated.metrics().read_all())
    return validated, metrics


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("epoch-research__analyzing-chinchilla/svg_extracted_data.csv", "epoch-chinchilla"),
        ("huggingface__datablations/parametric_fit_runs.csv", "datablations"),
        ("nikhilsardana__beyond-chinchilla/trainingresults.csv", "sardana"),
        ("step-law__steplaw/dense_lr_bs_loss.csv", "steplaw"),
        ("sail-sg__scaling-with-vocab/exp_data.csv", "tao-vocab"),
        ("sail-sg__regmix/train_mixture_1m.csv", "regmix"),
        ("sail-sg__regmix/train_pile_loss_1m.csv", "partner"),
        ("mcleish7__gemstone-scaling-laws/wandb_df_for_fitting_hot.jsonl", "wandb"),
        ("yegcjs__mixinglaws/5Mix/70M.txt", "mapping:mixinglaws-5mix"),
        ("yegcjs__mixinglaws/5Mix/proportions.txt", "ignore"),
        ("PROVENANCE.md", None),
    ],
)
def test_formats_are_detected(bundled, relative, expected):
    assert detect_format(bundled / relative) == expected


@pytest.mark.parametrize(
    ("relative", "loss_column"),
    [
        ("epoch-research__analyzing-chinchilla/svg_extracted_data.csv", "loss"),
        ("huggingface__datablations/parametric_fit_runs.csv", "val_loss"),
        ("nikhilsardana__beyond-chinchilla/trainingresults.csv", "Smoothed Loss"),
        ("step-law__steplaw/dense_lr_bs_loss.csv", "smooth loss"),
    ],
)
def test_one_row_per_run_tables(bundled, tmp_path, relative, loss_column):
    path = bundled / relative
    rows = _csv_rows(path)
    validated, metrics = _read(path, tmp_path)
    assert validated.quarantine.height == 0
    assert validated.runs.height == len(rows)
    assert metrics.height == len(rows)
    assert validated.runs["run_id"].n_unique() == len(rows)
    assert sorted(metrics["loss"].to_list()) == pytest.approx(
        sorted(float(r[loss_column]) for r in rows)
    )
    assert (metrics["step"] == -1).all()


def test_epoch_tokens_follow_6nd(bundled, tmp_path):
    path = bundled / "epoch-research__analyzing-chinchilla/svg_extracted_data.csv"
    first = _csv_rows(path)[0]
    validated, _ = _read(path, tmp_path)
    run = validated.runs.filter(pl.col("source_line") == 2).row(0, named=True)
    n, c = float(first["Model Size"]), float(first["Training FLOP"])
    assert run["params"] == n
    assert run["tokens"] == pytest.approx(c / (6 * n), rel=1e-12)
    assert run["flop_convention"] == "6ND"


def test_steplaw_context_and_batch_in_tokens(bundled, tmp_path):
    path = bundled / "step-law__steplaw/dense_lr_bs_loss.csv"
    first = _csv_rows(path)[0]
    validated, _ = _read(path, tmp_path)
    run = validated.runs.filter(pl.col("source_line") == 2).row(0, named=True)
    assert run["context"] == 2048  # D / (bs * ti) rounds to 2048 for every row
    assert run["batch_size"] == float(first["bs"]) * 2048
    assert run["non_embedding_params"] == float(first["N"])
    assert run["learning_rate"] == float(first["lr"])
    assert set(validated.runs["context"].unique().to_list()) == {2048}


def test_datablations_keeps_unique_tokens_and_replicates(bundled, tmp_path):
    path = bundled / "huggingface__datablations/parametric_fit_runs.csv"
    rows = _csv_rows(path)
    validated, _ = _read(path, tmp_path)
    assert validated.runs["unique_tokens"].to_list() == [float(r["unique_tokens_U"]) for r in rows]
    replicated = sum(1 for r in rows if sum(q["name"] == r["name"] for q in rows) > 1)
    assert validated.runs.filter(pl.col("run_id").str.contains("-r2$")).height > 0
    assert replicated > 0


def test_tao_vocab_runs_and_tokens(bundled, tmp_path):
    path = bundled / "sail-sg__scaling-with-vocab/exp_data.csv"
    rows = _csv_rows(path)
    runs_expected = {(r["Non_vocab_parameters"], r["vocab_size"]) for r in rows}
    validated, metrics = _read(path, tmp_path)
    assert validated.runs.height == len(runs_expected) == 60
    assert metrics.height == len(rows) == 1200
    assert set(metrics["loss_kind"].to_list()) == {"unigram_normalized"}
    assert (metrics["loss"] < 0).all()  # Lossu is negative and must not be quarantined
    first = rows[0]
    v = float(first["vocab_size"])
    expected = float(first["num_characters"]) * (
        0.00639222 * math.log(v) ** 2 - 0.15811069 * math.log(v) + 1.20470122
    )
    line2 = metrics.filter(pl.col("source_line") == 2).row(0, named=True)
    assert line2["tokens_seen"] == pytest.approx(expected, rel=1e-12)
    run = validated.runs.row(0, named=True)
    assert run["vocab_params"] == run["vocab_size"] * run["width"]
    assert run["flop_convention"] == "6N_nonvocab_plus_Vd_D"


def test_tao_tokens_per_character_golden_g14():
    # laws.md G14: f(32000) = 0.252404, f(128000) = 0.229350, tol 1e-5
    frame = pl.DataFrame({"v": [32000.0, 128000.0]})
    values = frame.select(tao_tokens_per_character(pl.col("v")).alias("f"))["f"].to_list()
    assert values == pytest.approx([0.252404, 0.229350], abs=1e-5)


@pytest.mark.parametrize("prefix", ["train", "test"])
def test_regmix_joins_mixture_and_losses(bundled, tmp_path, prefix):
    mixture_rows = _csv_rows(bundled / f"sail-sg__regmix/{prefix}_mixture_1m.csv")
    loss_rows = _csv_rows(bundled / f"sail-sg__regmix/{prefix}_pile_loss_1m.csv")
    loss_columns = [c for c in loss_rows[0] if c != "index"]
    validated, metrics = _read(bundled / f"sail-sg__regmix/{prefix}_mixture_1m.csv", tmp_path)
    assert validated.runs.height == len(mixture_rows)
    assert metrics.height == len(loss_rows) * len(loss_columns)
    assert set(validated.runs["experiment"].to_list()) == {f"regmix-1m-{prefix}"}
    sums = validated.runs["mixture"].list.eval(pl.element().struct.field("weight")).list.sum()
    assert (sums - 1).abs().max() < 1e-9  # renormalised
    assert metrics["domain"].n_unique() == len(loss_columns)
    assert "arxiv" in metrics["domain"].to_list()


@pytest.mark.parametrize(("kind", "branches"), [("hot", False), ("cool_end", True)])
def test_gemstones_wandb_exports(bundled, tmp_path, kind, branches):
    path = bundled / f"mcleish7__gemstone-scaling-laws/wandb_df_for_fitting_{kind}.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    validated, metrics = _read(path, tmp_path)
    assert metrics.height == len(records)
    expected_runs = len(records) if branches else len({r["run_name"] for r in records})
    assert validated.runs.height == expected_runs
    by_name: dict[str, dict] = {}
    for r in records:
        if r["run_name"] not in by_name or r["step"] > by_name[r["run_name"]]["step"]:
            by_name[r["run_name"]] = r
    if not branches:
        run = validated.runs.filter(pl.col("run_id") == "gemstones-hot/PyGemma-1024x28_pretrain")
        assert run["tokens"].item() == by_name["PyGemma-1024x28_pretrain"]["tokens"]
        assert run["lr_schedule"].item() == "constant"


def test_mixinglaws_dumps_through_the_declared_mapping(bundled, tmp_path):
    path = bundled / "yegcjs__mixinglaws/5Mix/160M.txt"
    lines = [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    checkpoints = {ln[0].rstrip("/").rsplit("/", 1)[0] for ln in lines}
    validated, metrics = _read(path, tmp_path)
    assert metrics.height == len(lines)
    assert validated.runs.height == len(checkpoints)
    first = lines[0]
    step = int(first[0].rstrip("/").rsplit("/", 1)[1])
    row = metrics.filter(pl.col("source_line") == 1).row(0, named=True)
    assert row["step"] == step
    assert row["tokens_seen"] == step * 1_048_576
    assert row["domain"] == "Github"
    assert row["loss"] == float(first[2])
    run = validated.runs.filter(pl.col("run_id") == row["run_id"]).row(0, named=True)
    proportions = first[0].rstrip("/").rsplit("/", 2)[1].split("_", 1)[1].split("-")[1:]
    assert [m["weight"] for m in run["mixture"]] == [float(p) for p in proportions]
    assert [m["source"] for m in run["mixture"]][0] == "academic"
    assert run["non_embedding_params"] == 85_056_000


def test_unknown_format_is_reported_not_raised(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("a,b\n1,2\n")
    parsed = parse_source(path, staging_dir=tmp_path)
    assert parsed.format == "unknown"
    assert parsed.quarantine["reason"].to_list() == ["unknown_format"]


def test_step_ranges_match_the_grouped_aggregation():
    """The block shortcut gives each series' range and repeats exactly as a grouped min, max and
    n_unique, on logs in step order and on interleaved, repeated, backwards and null steps."""
    import numpy as np

    from mixplan.planning.readers import step_ranges

    group = ["run_id", "split", "domain", "loss_kind"]
    rng = np.random.default_rng(7)
    series = [("a", "train", "all"), ("a", "validation", "web"), ("b", "train", "all")]
    cases = []
    ordered = [(r, s, d, step) for r, s, d in series for step in range(1, 40)]
    cases.append(ordered)
    cases.append(sorted(ordered, key=lambda row: row[3]))  # series interleaved
    cases.append(ordered[:50] + [ordered[10]] + ordered[50:])  # a repeat
    cases.append(ordered[:50] + [(*ordered[49][:3], 3)] + ordered[50:])  # a step going back
    cases.append(ordered[:40] + ordered[:5])  # a series coming back in a later block
    for _ in range(20):
        cases.append([ordered[i] for i in rng.integers(0, len(ordered), 60)])
    for rows in cases:
        frame = pl.DataFrame(
            {
                "run_id": [r[0] for r in rows],
                "split": [r[1] for r in rows],
                "domain": [r[2] for r in rows],
                "loss_kind": ["nats"] * len(rows),
                "step": [r[3] for r in rows],
            }
        )
        for data in (
            frame,
            frame.with_columns(
                pl.when(pl.int_range(pl.len()) == 3)
                .then(None)
                .otherwise(pl.col("step"))
                .alias("step")
            ),
            frame.with_columns(  # null run ids group together, as in group_by
                pl.when(pl.int_range(pl.len()) < 5)
                .then(None)
                .otherwise(pl.col("run_id"))
                .alias("run_id")
            ),
        ):
            expected = data.group_by(group).agg(
                pl.col("step").min().alias("_min"),
                pl.col("step").max().alias("_max"),
                (pl.len() - pl.col("step").n_unique()).alias("_repeats"),
            )
            ranges, repeats = step_ranges(data, group)
            assert repeats == bool(expected["_repeats"].sum())
            assert_frame_equal(
                ranges.sort(group), expected.drop("_repeats").sort(group), check_column_order=False
            )


def test_canonical_chunk_one_run_row_when_runs_interleave():
    """A run whose rows come back after another run's is still one run, with its facts taken
    over all its rows (the block grouping falls back to grouping by run id)."""
    from mixplan.planning.readers.canonical import canonical_chunk

    frame = pl.DataFrame(
        {
            "run_id": ["e/a", "e/a", "e/b", "e/a", None],
            "params": [None, 1e8, 2e8, None, None],
            "step": [1, 2, 1, 3, 4],
            "learning_rate": [1e-4, 2e-4, 1e-4, 3e-4, 1e-4],
            "loss": [3.0, 2.9, 3.1, 2.8, 2.7],
            "source_line": pl.Series([1, 2, 3, 4, 5], dtype=pl.Int64),
        }
    )
    runs = canonical_chunk(frame, source_file="f.jsonl", experiment="e", warnings=[]).runs
    assert runs["run_id"].to_list() == ["e/a", "e/b"]
    assert runs["params"].to_list() == [1e8, 2e8]
    assert runs["learning_rate"].to_list() == [3e-4, 1e-4]
    assert runs["source_line"].to_list() == [1, 3]
