"""The canonical schema of the run-log lake: a *runs* table and a *metrics* table.

Every reader turns its input format into these two tables; everything downstream reads only them.
Units are explicit in the column names' documentation below and in the README.

runs (one row per training run; primary key ``run_id``)
    run_id                str      unique id, ``<experiment>/<name>``
    experiment            str      the study / sweep / data set the run belongs to
    params                f64      total parameters (incl. embeddings), count
    non_embedding_params  f64      parameters excluding token embeddings and unembedding, count
    vocab_params          f64      vocabulary parameters ``V * d``, count
    vocab_size            i64      tokenizer vocabulary size V
    width                 i64      model width d_model
    depth                 i64      number of layers
    context               i64      training sequence length, tokens
    tokens                f64      training tokens D the run was planned for, tokens
    unique_tokens         f64      unique tokens U in the training pool, tokens (epochs = D/U)
    flops                 f64      training compute C, FLOPs
    flop_convention       str      how ``flops`` was counted (see ``FLOP_CONVENTIONS``)
    batch_size            f64      batch size, tokens per optimizer step
    learning_rate         f64      peak learning rate
    lr_schedule           str      "constant", "cosine", "wsd", "linear", ... or null
    mixture               list[struct{source: str, weight: f64, unique_tokens: f64}]
                                   training mixture: per-source weight (sums to 1) and unique tokens
    tags                  str      free-form JSON object (string -> string/number)
    source_file           str      the raw file the run came from
    source_line           i64      1-based line (or row) of the run's record in that file

metrics (one row per evaluation; primary key ``(run_id, step, split, domain, loss_kind)``)
    run_id         str   references runs.run_id
    step           i64   optimizer step; ``FINAL_STEP`` (-1) when only the final value is known
    tokens_seen    f64   tokens consumed up to this step, tokens
    learning_rate  f64   learning rate at this step (null when not logged)
    split          str   "train", "val", or "downstream" (a benchmark score, see below)
    domain         str   evaluation domain ("all" for an aggregate loss; the task downstream)
    loss           f64   cross-entropy, nats per token (``loss_kind`` says if otherwise)
    loss_kind      str   "nats" or "unigram_normalized" (Tao et al.'s Lossu, negative); for
                         downstream rows the benchmark's metric key (e.g. "acc,none")
    source_file    str   raw file
    source_line    i64   1-based line (or row) in the raw file

quarantine (one row per rejected record; see ``mixplan.planning.validation.REASONS``)
    source_file    str   raw file
    source_line    i64   1-based line (or data row, header = line 1) of the record; null when
                         the whole file is rejected (empty, unreadable, unrecognised format)
    field          str   the offending field (null when the record as a whole is bad)
    reason         str   a code from ``mixplan.planning.validation.REASONS`` ("malformed_json", ...)
    record         str   the raw record text (truncated to 500 characters)
    ingested_at    datetime[us, UTC]

sources (one row per ingested source file; primary key ``source_file``)
    source_file       str   absolute path (or URL) of the file as ingested
    sha256            str   content hash ``<algorithm>:<hex>`` (``xxh3_128:...``; a bare hex
                            digest is an older lake's sha256); unchanged: skipped next time
    size_bytes        i64   file size
    format            str   reader that parsed it (``mixplan.planning.readers.FORMATS``)
    partner_files     str   JSON list of files read together with it (RegMix loss file)
    runs              i64   runs accepted from the file
    metric_rows       i64   metrics rows accepted
    quarantined_rows  i64   records quarantined
    warnings          str   JSON list of warnings (unknown columns kept in tags, ...)
    ingested_at       datetime[us, UTC]

Conventions
-----------
* ``run_id`` is ``<experiment>/<name>`` so ids stay unique across studies.
* Facts a source has that the schema lacks (e.g. StepLaw's raw final loss, Gemstones'
  ``seconds_per_step``, unknown columns of a canonical file) go into ``tags`` (a JSON object);
  assumptions a reader makes are recorded there too (key ``assumptions``).
* Loss that is not nats per token says so in ``loss_kind``; a reader never converts it.
* Downstream metrics (lm-evaluation-harness scores) are metrics rows with
  ``split = "downstream"``, ``domain = <task>`` (``"hellaswag"``), ``loss = <score>`` and
  ``loss_kind = <metric key>`` (``"acc,none"``, ``"acc_norm,none"``, ``"perplexity,none"``;
  ``loss_kind`` is therefore part of the metrics key, so a task's metrics do not collide):
  they sit next to the losses of the same run (joinable on ``run_id`` and ``step``), and
  the loss fits, which select a ``train`` / ``val`` split, never take them for nats. Their
  standard errors are in the run's ``tags``.
"""

from __future__ import annotations

import polars as pl

FINAL_STEP = -1
"""Step value of a metric row when the source reports only the run's final loss."""

FLOP_CONVENTIONS: dict[str, str] = {
    "6ND": "6 * total params * tokens (Chinchilla)",
    "6N_nonemb_D": "6 * non-embedding params * tokens (Kaplan)",
    "6N_nonvocab_plus_Vd_D": "6 * (non-vocabulary params + V*d) * tokens (Porian standard, Tao)",
    "reported": "as reported by the source, convention unknown",
}

SPLITS = ("train", "val", "downstream")
LOSS_KINDS = ("nats", "unigram_normalized")
DEFAULT_DOMAIN = "all"

MIXTURE_DTYPE = pl.List(
    pl.Struct({"source": pl.String, "weight": pl.Float64, "unique_tokens": pl.Float64})
)

RUNS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String,
    "experiment": pl.String,
    "params": pl.Float64,
    "non_embedding_params": pl.Float64,
    "vocab_params": pl.Float64,
    "vocab_size": pl.Int64,
    "width": pl.Int64,
    "depth": pl.Int64,
    "context": pl.Int64,
    "tokens": pl.Float64,
    "unique_tokens": pl.Float64,
    "flops": pl.Float64,
    "flop_convention": pl.String,
    "batch_size": pl.Float64,
    "learning_rate": pl.Float64,
    "lr_schedule": pl.String,
    "mixture": MIXTURE_DTYPE,
    "tags": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}

METRICS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String,
    "step": pl.Int64,
    "tokens_seen": pl.Float64,
    "learning_rate": pl.Float64,
    "split": pl.String,
    "domain": pl.String,
    "loss": pl.Float64,
    "loss_kind": pl.String,
    "source_file": pl.String,
    "source_line": pl.Int64,
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String,
    "source_line": pl.Int64,
    "field": pl.String,
    "reason": pl.String,
    "record": pl.String,
    "ingested_at": pl.Datetime("us", "UTC"),
}

SOURCES_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String,
    "sha256": pl.String,
    "size_bytes": pl.Int64,
    "format": pl.String,
    "partner_files": pl.String,
    "runs": pl.Int64,
    "metric_rows": pl.Int64,
    "quarantined_rows": pl.Int64,
    "warnings": pl.String,
    "ingested_at": pl.Datetime("us", "UTC"),
}

RUNS_KEY = ("run_id",)
METRICS_KEY = ("run_id", "step", "split", "domain", "loss_kind")


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame with exactly the columns and types of ``schema``."""
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add missing columns as nulls, cast to the schema's types and order columns as the schema.

    Columns not in the schema are dropped: readers keep extra facts in ``tags``. A frame without
    columns gives an empty frame (not one row of nulls).
    """
    if frame.width == 0:
        return empty_frame(schema)
    if list(frame.schema.items()) == list(schema.items()):
        return frame  # already conforming (the streamed ingest conforms each chunk twice)
    columns = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(columns)


def final_rows(metrics: pl.DataFrame) -> pl.DataFrame:
    """The loss at each run's end: one metrics row per ``(run_id, split, domain, loss_kind)``
    (a loss has one ``loss_kind`` per run, split and domain; downstream scores have several).

    That is the ``FINAL_STEP`` row when the source reported only the final value, otherwise the
    row with the largest ``step`` (ties broken by the largest ``tokens_seen``). Keeps the input's
    columns, in first-seen order of the keys.
    """
    return (
        metrics.with_columns((pl.col("step") == FINAL_STEP).alias("_is_final"))
        .sort(["_is_final", "step", "tokens_seen"], nulls_last=False)
        .group_by(
            [c for c in ("run_id", "split", "domain", "loss_kind") if c in metrics.columns],
            maintain_order=True,
        )
        .last()
        .drop("_is_final")
    )
