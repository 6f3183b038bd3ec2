"""Weights & Biases history exports: one JSON object per logged checkpoint.

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

from mixplan.planning.readers.base import ReaderOutput, run_id, run_rows, single
from mixplan.planning.readers.canonical import jsonl_frames
from mixplan.planning.validation import coerce_numeric

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
    experiment, branches = _experiment(path)
    frames, quarantine = jsonl_frames(path)
    if frames.height == 0:
        return ReaderOutput(chunks=single(pl.DataFrame(), pl.DataFrame(), quarantine))
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
    return ReaderOutput(chunks=single(runs, metrics, pl.concat([quarantine, q_numeric])))
