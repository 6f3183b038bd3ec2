"""Validation of parsed run logs: each bad record goes to quarantine with a reason; none is lost.

Readers turn raw files into frames shaped like the canonical schema (plus a ``_record`` column
with the raw text and ``source_line``); the functions here split each frame into the good rows
and quarantine rows (``QUARANTINE_SCHEMA``). All checks are vectorised polars expressions, so
they run per chunk of a streamed file. One bad record gives exactly one quarantine row, naming
the first failing field.

Decisions (documented for the README)
-------------------------------------
* Malformed JSON lines and a truncated last line are quarantined (``malformed_json`` /
  ``truncated_line``); the file's other lines go through.
* Required fields: metrics rows need ``run_id`` and ``loss``; runs need ``run_id``.
* Losses must be finite; negative losses are rejected unless ``loss_kind`` is
  ``"unigram_normalized"`` (Tao et al.'s Lossu is negative by construction).
* Sizes (params, tokens, FLOPs, width, depth, vocab, context, batch size, learning rate,
  unique tokens) must be > 0 when present; missing sizes are allowed (null).
* Every number must lie in its physical range (``PHYSICAL_RANGES``, ``out_of_range``): far
  beyond any model trained or plannable, so a value outside is a unit or logging error (params
  1e30, step 2^64). A number too large for its column's type (an integer past 2^63) is
  ``out_of_range`` too, never silently nulled.
* A field of the wrong type (text where a number belongs, in any format, Parquet included)
  quarantines that row with the field named (``non_numeric``); the other rows land.
* A run whose id another file already brought into the lake with different run facts
  (``CONFLICT_COLUMNS``: sizes, tokens, FLOPs, schedule) is a ``conflict``: the later file's
  run and its rows are quarantined, naming both files, and the lake keeps the first one.
* Mixture weights must be >= 0 and sum to 1 within ``MIXTURE_TOLERANCE`` (a reader may pass a
  looser tolerance for sources that publish rounded weights, and then stores renormalised
  weights with the original sum in ``tags``).
* Duplicate ``(run_id, step, split, domain, loss_kind)`` rows: identical duplicates (same loss,
  tokens and learning rate) are collapsed to the first; conflicting ones are all quarantined
  (``duplicate_conflict``): mixplan cannot know which one is right.
* A rejected run takes its metrics rows with it (``run_rejected``), since they cannot be
  interpreted without the run.
* Unknown columns are not an error: their first value per run is kept in the run's ``tags``
  under ``"extra"`` and the file's ``sources`` row lists them in ``warnings``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from mixplan.planning.schema import (
    FINAL_STEP,
    METRICS_KEY,
    QUARANTINE_SCHEMA,
    SPLITS,
    conform,
)

REASONS: dict[str, str] = {
    "malformed_json": "the line is not a JSON object",
    "truncated_line": "the last line is cut off (a run still being written?)",
    "malformed_row": "the row cannot be split into the expected fields",
    "missing_field": "a required field is absent or null",
    "non_numeric": "a numeric field holds text that is not a number",
    "non_finite": "a numeric field is NaN or infinite",
    "negative_loss": "a loss in nats is negative",
    "negative_value": "a step or token count is negative",
    "non_positive_size": "a size (params, tokens, FLOPs, ...) is zero or negative",
    "bad_value": "a field holds a value outside its allowed set",
    "out_of_range": "a number is outside its physical range (PHYSICAL_RANGES) or its type",
    "conflict": "another file already brought this run id with different run facts",
    "mixture_negative": "a mixture weight is negative or not finite",
    "mixture_sum": "mixture weights do not sum to 1",
    "duplicate_conflict": (
        "several rows share (run_id, step, split, domain, loss_kind) with different values"
    ),
    "run_rejected": "the row belongs to a run that was rejected",
    "unmatched_path": "the record does not match the declared mapping's pattern",
    "empty_file": "the file has no records",
    "unreadable_file": "the file cannot be opened or decoded",
    "unknown_format": "no reader recognises the file",
}
"""Quarantine reason codes and what they mean."""

MIXTURE_TOLERANCE = 1e-3
"""Default tolerance on ``|sum(weights) - 1|``."""

RECORD_CHARS = 500
"""Raw record text kept in quarantine rows (characters)."""

SIZE_COLUMNS = (
    "params",
    "non_embedding_params",
    "vocab_params",
    "vocab_size",
    "width",
    "depth",
    "context",
    "tokens",
    "unique_tokens",
    "flops",
    "batch_size",
    "learning_rate",
)
"""Run columns that must be > 0 when present."""

PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "params": (0, 1e15),  # 1,000x the largest dense models trained so far
    "non_embedding_params": (0, 1e15),
    "vocab_params": (0, 1e15),
    "vocab_size": (0, 1e8),
    "width": (0, 1e7),
    "depth": (0, 1e5),
    "context": (0, 1e9),
    "tokens": (0, 1e17),  # ~1,000x the largest training sets
    "unique_tokens": (0, 1e17),
    "flops": (0, 1e32),
    "batch_size": (0, 1e10),  # tokens per optimizer step
    "learning_rate": (0, 1e3),
    "step": (-1, 1e13),  # FINAL_STEP = -1 allowed
    "tokens_seen": (0, 1e17),
}
"""Inclusive physical range of each numeric column; values outside are ``out_of_range``."""

CONFLICT_COLUMNS = (*SIZE_COLUMNS, "flop_convention", "lr_schedule")
"""Run facts that must agree when two files bring the same run id."""


def now_utc() -> datetime:
    """The ingest timestamp stored with quarantine and sources rows."""
    return datetime.now(UTC)


def quarantine_frame(
    source_file: str,
    *,
    lines: Sequence[int | None],
    fields: Sequence[str | None],
    reasons: Sequence[str],
    records: Sequence[str | None],
) -> pl.DataFrame:
    """Build quarantine rows from parallel lists (for record-level problems found in Python)."""
    stamp = now_utc()
    frame = pl.DataFrame(
        {
            "source_file": [source_file] * len(reasons),
            "source_line": list(lines),
            "field": list(fields),
            "reason": list(reasons),
            "record": [None if r is None else r[:RECORD_CHARS] for r in records],
            "ingested_at": [stamp] * len(reasons),
        },
        schema=QUARANTINE_SCHEMA,
    )
    return frame


def file_problem(source_file: str, reason: str, detail: str) -> pl.DataFrame:
    """One quarantine row for a whole-file problem (empty, unreadable, unknown format)."""
    if reason not in REASONS:
        raise ValueError(f"unknown quarantine reason {reason!r}")
    return quarantine_frame(
        source_file, lines=[None], fields=[None], reasons=[reason], records=[detail]
    )


def _record_expr(frame: pl.DataFrame) -> pl.Expr:
    if "_record" in frame.columns:
        return pl.col("_record").cast(pl.String).str.slice(0, RECORD_CHARS)
    others = [c for c in frame.columns if not c.startswith("_")]
    return pl.struct(others).struct.json_encode().str.slice(0, RECORD_CHARS)


def split_by_checks(
    frame: pl.DataFrame,
    checks: Sequence[tuple[pl.Expr, str, str]],
    *,
    source_file: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into rows passing every check and quarantine rows for the rest.

    Parameters
    ----------
    frame
        Rows to check; must have ``source_line``; ``_record`` (raw text) is used if present.
    checks
        ``(bad_expr, field, reason)`` in priority order: a row for which ``bad_expr`` is true
        fails with that field and reason (the first failing check is reported).
    source_file
        File named in the quarantine rows.

    Returns
    -------
    good, quarantine
        ``good`` keeps the input's columns; ``quarantine`` is in ``QUARANTINE_SCHEMA``.
    """
    if frame.height == 0 or not checks:
        return frame, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    # one pass: the index of the first failing check (null when every check passes)
    first_bad = pl.when(checks[0][0].fill_null(False)).then(pl.lit(0, pl.UInt32))
    for index, (bad, _, _) in enumerate(checks[1:], start=1):
        first_bad = first_bad.when(bad.fill_null(False)).then(pl.lit(index, pl.UInt32))
    tagged = frame.with_columns(first_bad.otherwise(None).alias("_q_check"))
    if tagged["_q_check"].null_count() == frame.height:  # the usual case: no filtered copies
        return frame, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    good = tagged.filter(pl.col("_q_check").is_null()).drop("_q_check")
    bad_rows = tagged.filter(pl.col("_q_check").is_not_null())
    indices = list(range(len(checks)))
    quarantine = bad_rows.select(
        pl.lit(source_file).alias("source_file"),
        pl.col("source_line").cast(pl.Int64),
        pl.col("_q_check")
        .replace_strict(indices, [field for _, field, _ in checks], return_dtype=pl.String)
        .alias("field"),
        pl.col("_q_check")
        .replace_strict(indices, [reason for _, _, reason in checks], return_dtype=pl.String)
        .alias("reason"),
        _record_expr(frame).alias("record"),
        pl.lit(now_utc()).cast(QUARANTINE_SCHEMA["ingested_at"]).alias("ingested_at"),
    )
    return good, conform(quarantine, QUARANTINE_SCHEMA)


def coerce_numeric(
    frame: pl.DataFrame,
    dtypes: dict[str, pl.DataType],
    *,
    source_file: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast the named columns to numbers; rows holding text that is not a number are quarantined.

    Strings such as ``"nan"``/``"inf"`` parse (and are caught later as ``non_finite``); a
    value that was present but does not parse fails as ``non_numeric``.
    """
    present = {name: dtype for name, dtype in dtypes.items() if name in frame.columns}
    if not present or frame.height == 0:
        return frame, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    casts = {}
    checks = []
    for name, dtype in present.items():
        column = frame.schema[name]
        if column == dtype:
            continue
        if column.is_nested():  # a list or object where a number belongs
            casts[name] = pl.lit(None, dtype)
            checks.append((pl.col(name).is_not_null(), name, "non_numeric"))
            continue
        if column.is_numeric() or column == pl.Boolean or column == pl.Null:
            cast = pl.col(name).cast(dtype, strict=False)
            casts[name] = cast
            # a cast to a float cannot fail; to an integer it can (e.g. an integer past 2^63
            # read as i128)
            if column.is_numeric() and not dtype.is_float():
                checks.append((pl.col(name).is_not_null() & cast.is_null(), name, "out_of_range"))
            continue
        text = pl.col(name).cast(pl.String, strict=False).str.strip_chars()
        parsed = text.cast(pl.Float64, strict=False)
        if dtype.is_integer():
            # integers past 2^63 become null here and are caught as out_of_range below
            parsed = pl.when(parsed.is_finite()).then(parsed).otherwise(None)
            parsed = parsed.cast(dtype, strict=False)
        else:
            parsed = parsed.cast(dtype)
        casts[name] = parsed
        as_float = text.cast(pl.Float64, strict=False)
        present = pl.col(name).is_not_null() & (text != "")
        checks.append((present & as_float.is_null(), name, "non_numeric"))
        if dtype.is_integer():
            checks.append((present & as_float.is_finite() & parsed.is_null(), name, "out_of_range"))
    good, quarantine = split_by_checks(frame, checks, source_file=source_file)
    if casts:
        good = good.with_columns(**casts)
    return good, quarantine


def metric_checks(frame: pl.DataFrame) -> list[tuple[pl.Expr, str, str]]:
    """The row-level checks of a metrics frame (see the module docstring)."""
    run_id = pl.col("run_id")
    checks: list[tuple[pl.Expr, str, str]] = [
        (run_id.is_null() | (run_id.str.len_bytes() == 0), "run_id", "missing_field"),
        (pl.col("loss").is_null(), "loss", "missing_field"),
        (~pl.col("loss").is_finite(), "loss", "non_finite"),
        (
            (pl.col("loss") < 0) & (pl.col("loss_kind").fill_null("nats") == "nats"),
            "loss",
            "negative_loss",
        ),
    ]
    if "step" in frame.columns:
        checks.append((pl.col("step") < FINAL_STEP, "step", "negative_value"))
    if "tokens_seen" in frame.columns:
        checks.append((~pl.col("tokens_seen").is_finite(), "tokens_seen", "non_finite"))
        checks.append((pl.col("tokens_seen") < 0, "tokens_seen", "negative_value"))
    if "learning_rate" in frame.columns:
        checks.append((~pl.col("learning_rate").is_finite(), "learning_rate", "non_finite"))
        checks.append((pl.col("learning_rate") < 0, "learning_rate", "negative_value"))
    if "split" in frame.columns:
        # equality with each split: ~2x cheaper than is_in on a three-value list
        known = pl.any_horizontal([pl.col("split") == name for name in SPLITS])
        checks.append((~known, "split", "bad_value"))
    checks += range_checks(frame, ("step", "tokens_seen"))
    return checks


def range_checks(frame: pl.DataFrame, columns: Sequence[str]) -> list[tuple[pl.Expr, str, str]]:
    """``out_of_range`` checks of the named columns present in ``frame`` (``PHYSICAL_RANGES``)."""
    checks = []
    for name in columns:
        if name in frame.columns and name in PHYSICAL_RANGES:
            low, high = PHYSICAL_RANGES[name]
            column = pl.col(name)
            checks.append(((column < low) | (column > high), name, "out_of_range"))
    return checks


def validate_metrics(frame: pl.DataFrame, *, source_file: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Row-level checks of metrics rows (numbers already coerced): ``(good, quarantine)``."""
    return split_by_checks(frame, metric_checks(frame), source_file=source_file)


def run_checks(
    frame: pl.DataFrame, *, mixture_tolerance: float = MIXTURE_TOLERANCE
) -> list[tuple[pl.Expr, str, str]]:
    """The checks of a runs frame: sizes > 0 and finite, mixture weights valid."""
    checks: list[tuple[pl.Expr, str, str]] = [
        (pl.col("run_id").is_null() | (pl.col("run_id") == ""), "run_id", "missing_field"),
    ]
    for name in SIZE_COLUMNS:
        if name not in frame.columns:
            continue
        column = pl.col(name)
        if frame.schema[name].is_float():
            checks.append((~column.is_finite(), name, "non_finite"))
        checks.append((column <= 0, name, "non_positive_size"))
    checks += range_checks(frame, SIZE_COLUMNS)
    if "mixture" in frame.columns and isinstance(frame.schema["mixture"], pl.List):
        weights = pl.col("mixture").list.eval(pl.element().struct.field("weight"))
        unique = pl.col("mixture").list.eval(pl.element().struct.field("unique_tokens"))
        has_mixture = pl.col("mixture").list.len() > 0
        checks.append(
            (
                has_mixture
                & (
                    weights.list.eval((pl.element() < 0) | ~pl.element().is_finite()).list.any()
                    | weights.list.eval(pl.element().is_null()).list.any()
                ),
                "mixture",
                "mixture_negative",
            )
        )
        checks.append(
            (
                has_mixture & ((weights.list.sum() - 1.0).abs() > mixture_tolerance),
                "mixture",
                "mixture_sum",
            )
        )
        checks.append(
            (unique.list.eval(pl.element() <= 0).list.any(), "mixture", "non_positive_size")
        )
    return checks


def validate_runs(
    frame: pl.DataFrame,
    *,
    source_file: str,
    mixture_tolerance: float = MIXTURE_TOLERANCE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Checks of runs rows: ``(good, quarantine)``."""
    checks = run_checks(frame, mixture_tolerance=mixture_tolerance)
    return split_by_checks(frame, checks, source_file=source_file)


def run_conflicts(
    runs: pl.DataFrame, existing: pl.DataFrame, *, source_file: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``runs`` into runs agreeing with ``existing`` (same ids from other files) and
    ``conflict`` quarantine rows naming the first differing fact and both files.

    A fact null on either side is not a conflict (one file may simply not know it); floats
    agree within a relative 1e-9.
    """
    if runs.height == 0 or existing.height == 0:
        return runs, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    other = existing.select(
        "run_id",
        pl.col("source_file").alias("_other_file"),
        *[pl.col(c).alias(f"_other_{c}") for c in CONFLICT_COLUMNS if c in existing.columns],
    ).unique(subset="run_id", keep="first")
    joined = runs.join(other, on="run_id", how="left")
    differs = []
    for name in CONFLICT_COLUMNS:
        if name not in runs.columns or f"_other_{name}" not in joined.columns:
            continue
        mine, theirs = pl.col(name), pl.col(f"_other_{name}")
        if runs.schema[name].is_numeric():
            unequal = (mine - theirs).abs() > 1e-9 * pl.max_horizontal(mine.abs(), theirs.abs())
        else:
            unequal = mine != theirs
        differs.append((name, mine.is_not_null() & theirs.is_not_null() & unequal))
    if not differs:
        return runs, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    record = pl.lit(None, pl.String)
    for name, bad in reversed(differs):
        text = pl.format(
            "run {}: {} = {} in this file, {} in {} (already in the lake); fix one of them "
            "or give the runs different ids",
            "run_id",
            pl.lit(name),
            pl.col(name).cast(pl.String),
            pl.col(f"_other_{name}").cast(pl.String),
            "_other_file",
        )
        record = pl.when(bad).then(text).otherwise(record)
    joined = joined.with_columns(record.alias("_record"))
    checks = [(bad, name, "conflict") for name, bad in differs]
    good, quarantine = split_by_checks(joined, checks, source_file=source_file)
    return good.select(runs.columns), quarantine


def normalise_mixture(frame: pl.DataFrame) -> pl.DataFrame:
    """Rescale each run's mixture weights to sum exactly to 1 (after validation)."""
    if "mixture" not in frame.columns or frame.height == 0:
        return frame
    total = pl.col("mixture").list.eval(pl.element().struct.field("weight")).list.sum()
    rescaled = pl.col("mixture").list.eval(
        pl.struct(
            pl.element().struct.field("source"),
            pl.element().struct.field("weight") / pl.element().struct.field("weight").sum(),
            pl.element().struct.field("unique_tokens"),
        )
    )
    return frame.with_columns(
        pl.when((pl.col("mixture").list.len() > 0) & (total > 0))
        .then(rescaled)
        .otherwise(pl.col("mixture"))
        .alias("mixture")
    )


VALUE_COLUMNS = ("loss", "tokens_seen", "learning_rate")
"""Metrics columns compared to tell identical from conflicting duplicates."""


def duplicate_split(frame: pl.DataFrame, *, source_file: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Resolve duplicate ``(run_id, step, split, domain, loss_kind)`` rows of one file.

    Identical duplicates collapse to their first row (by ``source_line``); keys whose rows
    disagree on any of ``VALUE_COLUMNS`` are quarantined entirely (``duplicate_conflict``).
    """
    key = [name for name in METRICS_KEY if name in frame.columns]
    if frame.height == 0:
        return frame, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    values = [c for c in VALUE_COLUMNS if c in frame.columns]
    duplicated = pl.struct(key).is_duplicated()
    if not frame.select(duplicated.any()).item():
        return frame, conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    conflicting = pl.struct(values).n_unique().over(key) > 1
    tagged = frame.with_columns(conflicting.alias("_conflict"))
    good = (
        tagged.filter(~pl.col("_conflict"))
        .sort("source_line")
        .unique(subset=key, keep="first", maintain_order=True)
        .drop("_conflict")
    )
    _, quarantine = split_by_checks(
        tagged.filter(pl.col("_conflict")).drop("_conflict"),
        [(pl.lit(True), "loss", "duplicate_conflict")],
        source_file=source_file,
    )
    return good, quarantine
