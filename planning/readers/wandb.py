"""Weights & Biases exports: history dumps (one JSON object per checkpoint) and UI chart CSVs.

The Gemstones exports (McLeish et al. 2025, ``wandb_df_for_fitting_{hot,cool_end}.jsonl``) have
``run_name, params_active_precise, width, depth, tokens, step, num_nodes, seconds_per_step,
final_loss`` per checkpoint, where ``tokens`` are the tokens seen at that checkpoint and
``final_loss`` the training loss there.

Decision: a run is one learning-rate trajectory.

* ``*_hot.jsonl`` -> experiment ``gemstones-hot``: one run per ``run_name`` (constant learning
  rate, ``lr_schedule = "constant"``) with one metrics row per checkpoint (split ``train``).
* ``*_cool_end.jsonl`` -> experiment ``gemstones-cooldown``: every row is the end of a separate
  cooldown branched from the hot run at that checkpoint, so each row is its own run
  ``<run_name>@<step>`` (``lr_schedule = "wsd"``, tokens = the checkpoint's tokens, tag
  ``branch_of`` = the hot run) with one metrics row. ``final_losses`` therefore yields one
  (N, D, L) point per cooldown, which is what a Chinchilla-style fit needs.

Other W&B exports with the same columns read the same way; the experiment is
``wandb-<file stem>`` unless the file name matches a Gemstones file.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mixplan.planning.readers.base import (
    ReaderOutput,
    failed,
    read_text_table,
    run_id,
    run_rows,
    single,
)
from mixplan.planning.readers.canonical import jsonl_frames
from mixplan.planning.readers.rawfile import inner_path
from mixplan.planning.validation import coerce_numeric, quarantine_frame

NUMERIC = {
    "params_active_precise": pl.Float64,
    "width": pl.Int64,
    "depth": pl.Int64,
    "tokens": pl.Float64,
    "step": pl.Int64,
    "num_nodes": pl.Float64,
    "seconds_per_step": pl.Float64,
    "final_loss": pl.Float64,
}
SIGNATURE = {"run_name", "step", "final_loss"}
"""Keys that identify a W&B history export."""


def _experiment(path: Path) -> tuple[str, bool]:
    stem = path.stem
    if "cool" in stem:
        return "gemstones-cooldown", True
    if "hot" in stem:
        return "gemstones-hot", False
    return f"wandb-{stem}", False


def read_wandb(path: Path) -> ReaderOutput:
    """Read a W&B history export (Gemstones layout) into runs and metrics."""
    experiment, branches = _experiment(inner_path(path))
    warnings: list[str] = []
    frames, quarantine = jsonl_frames(path, warnings)
    if frames.height == 0:
        return ReaderOutput(
            chunks=single(pl.DataFrame(), pl.DataFrame(), quarantine), warnings=warnings
        )
    table, q_numeric = coerce_numeric(frames, NUMERIC, source_file=str(path))
    hot_name = pl.concat_str(pl.lit("gemstones-hot/"), pl.col("run_name"))
    if branches:
        name = pl.format("{}@{}", pl.col("run_name"), pl.col("step"))
        extra = {"branch_of": hot_name, "branch_step": pl.col("step")}
        schedule = "wsd"
    else:
        name = pl.col("run_name")
        extra = {}
        schedule = "constant"
    final_tokens = pl.col("tokens").max().over(run_id(experiment, name))
    runs = run_rows(
        table.sort("run_name", "tokens", descending=[False, True], nulls_last=True),
        experiment=experiment,
        name=name,
        source_file=path,
        assumptions=(
            "params = params_active_precise; tokens = last checkpoint's tokens; "
            "flops = 6 * params * tokens"
        ),
        tags={
            "run_name": pl.col("run_name"),
            "num_nodes": pl.col("num_nodes"),
            "seconds_per_step": pl.col("seconds_per_step"),
            **extra,
        },
        params=pl.col("params_active_precise"),
        width=pl.col("width"),
        depth=pl.col("depth"),
        tokens=final_tokens,
        flops=6 * pl.col("params_active_precise") * final_tokens,
        flop_convention=pl.lit("6ND"),
        lr_schedule=pl.lit(schedule),
    )
    metrics = table.select(
        run_id(experiment, name).alias("run_id"),
        pl.col("step"),
        pl.col("tokens").alias("tokens_seen"),
        pl.lit("train").alias("split"),
        pl.lit("all").alias("domain"),
        pl.col("final_loss").alias("loss"),
        pl.lit("nats").alias("loss_kind"),
        pl.lit(str(path)).alias("source_file"),
        "source_line",
        "_record",
    )
    return ReaderOutput(
        chunks=single(runs, metrics, pl.concat([quarantine, q_numeric])), warnings=warnings
    )


# --------------------------------------------------------------------------- W&B UI CSV export

CSV_EXPERIMENT = "wandb"
EVAL_WORDS = ("eval", "val", "valid", "validation", "test")
_ENVELOPE = ("__MIN", "__MAX")


def is_wandb_csv(header: set[str]) -> bool:
    """Whether CSV header columns are a W&B chart export (``Step`` + ``<run> - <metric>``)."""
    return bool({"Step", "_step"} & header) and any(" - " in column for column in header)


def _split_of(metric: str) -> str:
    words = set(metric.lower().replace("/", "_").replace("-", "_").split("_"))
    return "val" if words & set(EVAL_WORDS) else "train"


def read_wandb_csv(path: Path) -> ReaderOutput:
    """Read a CSV downloaded from a W&B chart: ``Step`` plus ``<run> - <metric>`` columns.

    Every loss column (metric name containing ``loss``) gives one metrics row per non-empty
    cell: run ``wandb/<run>``, split ``val`` for evaluation metrics (``eval/loss``,
    ``val_loss``), else ``train``, domain ``all``. The ``__MIN`` / ``__MAX`` columns are the
    chart's sampling envelope, not data: they are skipped. Other metrics are listed in the
    warnings. A cell that is not a number is quarantined with its column as the field.
    """
    warnings: list[str] = []
    table = read_text_table(path, warnings=warnings)
    if isinstance(table, ReaderOutput):
        return table
    step = "Step" if "Step" in table.columns else "_step"
    series = {}
    skipped = []
    for column in table.columns:
        if " - " not in column or column.endswith(_ENVELOPE):
            continue
        run, metric = column.rsplit(" - ", 1)
        if "loss" in metric.lower():
            series[column] = (run.strip(), metric.strip())
        else:
            skipped.append(column)
    if skipped:
        warnings.append(f"{path.name}: columns not read as losses: {', '.join(skipped)}")
    if not series:
        return failed(path, "empty_file", "no '<run> - <loss metric>' column in the export")
    long = (
        table.select("source_line", step, *series)
        .unpivot(index=["source_line", step], variable_name="_column", value_name="_text")
        .filter(pl.col("_text").is_not_null() & (pl.col("_text").str.strip_chars() != ""))
        .with_columns(
            pl.col("_text").str.strip_chars().cast(pl.Float64, strict=False).alias("loss"),
            pl.col(step).str.strip_chars().cast(pl.Float64, strict=False).alias("_step"),
        )
    )
    bad_loss = long.filter(pl.col("loss").is_null())
    bad_step = long.filter(pl.col("loss").is_not_null() & pl.col("_step").is_null())
    quarantine = pl.concat(
        [
            quarantine_frame(
                str(path),
                lines=frame["source_line"].to_list(),
                fields=fields,
                reasons=["non_numeric"] * frame.height,
                records=[
                    f"{c} = {t!r}" for c, t in zip(frame["_column"], frame["_text"], strict=True)
                ],
            )
            for frame, fields in (
                (bad_loss, bad_loss["_column"].to_list()),
                (bad_step, [step] * bad_step.height),
            )
        ]
    )
    names = pl.col("_column").replace_strict({c: r for c, (r, _) in series.items()})
    splits = pl.col("_column").replace_strict({c: _split_of(m) for c, (_, m) in series.items()})
    good = long.filter(pl.col("loss").is_not_null() & pl.col("_step").is_not_null())
    metrics = good.select(
        run_id(CSV_EXPERIMENT, names).alias("run_id"),
        pl.col("_step").cast(pl.Int64, strict=False).alias("step"),
        splits.alias("split"),
        pl.lit("all").alias("domain"),
        "loss",
        pl.lit("nats").alias("loss_kind"),
        pl.lit(str(path)).alias("source_file"),
        "source_line",
        pl.format("{} = {}", "_column", "_text").alias("_record"),
    )
    runs = (
        metrics.group_by("run_id", maintain_order=True)
        .agg(pl.col("source_line").min())
        .with_columns(
            pl.lit(CSV_EXPERIMENT).alias("experiment"),
            pl.lit(str(path)).alias("source_file"),
            pl.lit(
                '{"assumptions": "W&B chart export: run and metric from the column name"}'
            ).alias("tags"),
        )
    )
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)
