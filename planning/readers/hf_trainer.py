"""Hugging Face Trainer's ``trainer_state.json``: the ``log_history`` of one training run.

The Trainer writes ``trainer_state.json`` into its output folder and into every
``checkpoint-<step>/`` folder. ``log_history`` is a list of entries, each with ``step`` and
``epoch``:

* training entries ``{"loss", "learning_rate", "grad_norm", ...}`` -> metrics rows, split
  ``train``, domain ``all``;
* evaluation entries ``{"eval_loss", ...}`` -> split ``val``, domain ``all``; with several
  evaluation sets the Trainer prefixes them ``eval_<name>_loss`` -> domain ``<name>``;
  ``predict_loss`` / ``test_loss`` (``trainer.predict`` on a test set) -> split ``val``,
  domain ``predict`` / ``test``. An entry without ``step`` (the Trainer logs predictions
  so) takes the step of the entry before it;
* the closing entry ``{"train_loss", "train_runtime", "total_flos", ...}`` gives the run's
  compute: ``flops = total_flos`` (the Trainer's ``floating_point_ops``: 6 x tokens x
  non-embedding parameters, hence ``flop_convention = "6N_nonemb_D"``).

``num_input_tokens_seen`` (logged with ``include_num_input_tokens_seen``) becomes
``tokens_seen``; the run's ``tokens`` is its last value. The run is named after the output
folder (the folder holding ``checkpoint-<step>/`` for a checkpoint's copy), experiment
``hf-trainer``; the state's batch size, epochs and best checkpoint go into ``tags``. Each
row keeps the line of its ``log_history`` entry.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from mixplan.planning.readers.base import ReaderOutput, failed, merge_tags, single
from mixplan.planning.readers.documents import (
    DocumentError,
    array_items,
    frame_of_records,
    load_text,
    parse_document,
)
from mixplan.planning.readers.rawfile import inner_path

EXPERIMENT = "hf-trainer"
_EVAL_LOSS = re.compile(r"^(?P<prefix>eval|predict|test)_(?:(?P<domain>.+)_)?loss$")
_STATE_TAGS = ("train_batch_size", "num_train_epochs", "max_steps", "best_model_checkpoint")


def run_name(path: Path) -> str:
    """The run a ``trainer_state.json`` belongs to: its output folder's name."""
    folder = inner_path(path).resolve().parent
    if re.fullmatch(r"checkpoint-\d+", folder.name):
        folder = folder.parent
    return folder.name or "run"


def read_hf_trainer(path: Path) -> ReaderOutput:
    """Read a Trainer ``trainer_state.json`` into one run and its logged losses."""
    warnings: list[str] = []
    try:
        text = load_text(path, warnings)
        state = parse_document(text)
        if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
            raise DocumentError("no log_history list at the top level")
        start = text.index("[", re.search(r'"log_history"\s*:', text).end())
        entries, quarantine = frame_of_records(array_items(text, start), str(path))
    except (OSError, EOFError, UnicodeDecodeError, DocumentError) as error:
        return failed(path, "unreadable_file", f"not a Trainer state: {error}")
    if entries.height == 0:
        return failed(path, "empty_file", "log_history has no entries")
    run_id = f"{EXPERIMENT}/{run_name(path)}"
    if "step" in entries.columns:
        entries = entries.with_columns(pl.col("step").forward_fill())
    metrics = _metrics(entries, run_id, str(path))
    columns = entries.columns
    final = (
        entries.filter(pl.col("train_runtime").is_not_null())
        if "train_runtime" in columns
        else entries.clear()
    )
    flops = final["total_flos"].drop_nulls().max() if "total_flos" in final.columns else None
    tokens = (
        entries["num_input_tokens_seen"].drop_nulls().max()
        if "num_input_tokens_seen" in columns
        else None
    )
    peak_lr = entries["learning_rate"].drop_nulls().max() if "learning_rate" in columns else None
    tags = {key: state[key] for key in _STATE_TAGS if state.get(key) is not None}
    tags["assumptions"] = (
        "run = output folder; flops = total_flos of the closing entry (6N_nonemb_D)"
    )
    runs = pl.DataFrame(
        {
            "run_id": [run_id],
            "experiment": [EXPERIMENT],
            "flops": [flops],
            "flop_convention": ["6N_nonemb_D" if flops is not None else None],
            "tokens": [tokens],
            "learning_rate": [peak_lr],
            "tags": [merge_tags(None, tags)],
            "source_file": [str(path)],
            "source_line": [int(entries["source_line"].min())],
        },
        schema_overrides={"flops": pl.Float64, "tokens": pl.Float64, "learning_rate": pl.Float64},
    )
    return ReaderOutput(chunks=single(runs, metrics, quarantine), warnings=warnings)


def _metrics(entries: pl.DataFrame, run_id: str, source_file: str) -> pl.DataFrame:
    """One metrics row per loss in each ``log_history`` entry."""
    columns = entries.columns
    base = [
        pl.lit(run_id).alias("run_id"),
        (pl.col("step") if "step" in columns else pl.lit(None)).alias("step"),
        (
            pl.col("num_input_tokens_seen") if "num_input_tokens_seen" in columns else pl.lit(None)
        ).alias("tokens_seen"),
        pl.lit(source_file).alias("source_file"),
        "source_line",
        "_record",
    ]
    parts = []
    if "loss" in columns:
        parts.append(
            entries.filter(pl.col("loss").is_not_null()).select(
                *base,
                (pl.col("learning_rate") if "learning_rate" in columns else pl.lit(None)).alias(
                    "learning_rate"
                ),
                pl.lit("train").alias("split"),
                pl.lit("all").alias("domain"),
                pl.col("loss"),
            )
        )
    for column in columns:
        match = _EVAL_LOSS.match(column)
        if not match:
            continue
        parts.append(
            entries.filter(pl.col(column).is_not_null()).select(
                *base,
                pl.lit(None, pl.Float64).alias("learning_rate"),
                pl.lit("val").alias("split"),
                pl.lit(
                    match["domain"] or ("all" if match["prefix"] == "eval" else match["prefix"])
                ).alias("domain"),
                pl.col(column).alias("loss"),
            )
        )
    if not parts:
        return pl.DataFrame()
    frame = pl.concat(parts, how="diagonal_relaxed")
    return frame.with_columns(pl.lit("nats").alias("loss_kind")).sort("source_line")


def looks_like(record: dict) -> bool:
    """Whether a parsed JSON object is a Trainer state."""
    return isinstance(record.get("log_history"), list)
