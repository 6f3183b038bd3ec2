"""Canonical logs: JSONL, CSV or Parquet whose columns are mixplan's own schema names.

A canonical file is *long*: one record per evaluation, with the run's facts repeated (or given
once) on its records::

    {"run_id": "r1", "experiment": "sweep", "params": 1.2e8, "step": 100, "tokens_seen": 2.6e7,
     "learning_rate": 3e-4, "split": "train", "domain": "all", "loss": 3.91,
     "mixture": {"web": 0.7, "code": 0.3}}

Rules
-----
* Required: ``run_id``; records without ``loss`` describe runs only (a runs table).
* Column names are those of ``RUNS_SCHEMA`` / ``METRICS_SCHEMA``. ``learning_rate`` is the
  per-step value in a long file (the run's ``learning_rate`` is ``peak_learning_rate`` if given,
  else the largest logged value); in a runs-only file it is the run's peak.
* Defaults: ``experiment`` = file stem, ``step`` = ``FINAL_STEP`` when the file has no step
  column, ``split`` = ``"train"``, ``domain`` = ``"all"``, ``loss_kind`` = ``"nats"``.
  ``run_id`` gets the ``<experiment>/`` prefix when it lacks it.
* ``mixture`` is either an object ``{source: weight}`` (with optional
  ``mixture_unique_tokens: {source: tokens}``) or a list of ``{source, weight,
  unique_tokens}``; in CSV it is that JSON as text.
* Unknown columns are kept: the first value per run goes into the run's ``tags`` under
  ``"extra"``, and the file's warnings list them.

JSONL is read in byte chunks (``CHUNK_BYTES``) cut at line ends, so memory does not grow with
the file. A chunk of flat records (the usual log) is read by the compiled scanner of
``flatjson``; any other chunk is parsed by polars; only a chunk that polars rejects is parsed
line by line to find the bad lines (``malformed_json``; ``truncated_line`` for an unterminated
last line).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from mixplan.planning.readers.base import Chunk, ReaderOutput, failed, merge_tags
from mixplan.planning.readers.documents import (
    DocumentError,
    document_frames,
    frame_from_objects,
    load_text,
)
from mixplan.planning.readers.flatjson import FlatScanner
from mixplan.planning.readers.rawfile import (
    CHANGED,
    LEGACY_ENCODINGS,
    TextSource,
    compression_of,
    count_lines,
    inner_path,
    legacy_encoding,
    line_blocks,
    open_text,
    read_decompressed,
)
from mixplan.planning.schema import (
    FINAL_STEP,
    METRICS_SCHEMA,
    MIXTURE_DTYPE,
    QUARANTINE_SCHEMA,
    RUNS_SCHEMA,
    conform,
)
from mixplan.planning.validation import coerce_numeric, quarantine_frame, split_by_checks

CHUNK_BYTES = 16 * 1024 * 1024
"""Bytes of JSONL parsed at once (16 MB: below glibc's 32 MB mmap threshold, so chunk buffers
are reused instead of page-faulted in again: about half the system time of 64 MB chunks)."""
CSV_BATCH_ROWS = 500_000
"""Rows of Parquet parsed at once."""
CSV_BLOCK_BYTES = 32 * 1024 * 1024
"""Bytes of CSV parsed at once."""
INFER_BYTES = 1024 * 1024
"""Bytes at the start of each JSONL chunk whose lines set the column types (see
``ChunkSchema``: keys first seen later are still kept)."""
SAMPLE_LINES_PER_MB = 32
"""Lines per MB, spread evenly over each chunk, whose keys are read to find keys that start late."""

_BOOKKEEPING = {"source_file", "source_line", "_record"}
RUN_COLUMNS = [c for c in RUNS_SCHEMA if c not in _BOOKKEEPING]
METRIC_COLUMNS = [c for c in METRICS_SCHEMA if c not in _BOOKKEEPING]
KNOWN = set(RUN_COLUMNS) | set(METRIC_COLUMNS) | {"peak_learning_rate", "mixture_unique_tokens"}
NUMERIC: dict[str, pl.DataType] = {
    name: dtype
    for name, dtype in {**RUNS_SCHEMA, **METRICS_SCHEMA}.items()
    if dtype.is_numeric() and name not in _BOOKKEEPING
} | {"peak_learning_rate": pl.Float64}


def _empty_quarantine() -> pl.DataFrame:
    return conform(pl.DataFrame(), QUARANTINE_SCHEMA)


# --------------------------------------------------------------------------- JSONL parsing


ROW_KEYS = ("split", "domain", "loss_kind", "step", "tokens_seen", "learning_rate", "loss")
"""Keys that define metric rows: declared in every chunk's schema, wherever they first appear."""


def _sampled_keys(data: bytes, start: int) -> set[str]:
    """Keys of lines spread evenly over ``data[start:]`` (``SAMPLE_LINES_PER_MB``) and of its
    last line (a closing summary)."""
    keys: set[str] = set()
    span = len(data) - start
    if span <= 0:
        return keys
    step = max(1, int(1e6 / SAMPLE_LINES_PER_MB))
    last = data.rfind(b"\n", 0, len(data) - 1) + 1
    begins = [data.find(b"\n", at) + 1 for at in range(start, len(data), step)]
    for begin in [*begins, last]:
        if begin <= 0 or begin >= len(data):
            continue
        end = data.find(b"\n", begin)
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            keys.update(orjson.loads(data[begin : len(data) if end == -1 else end]))
    return keys


class ChunkSchema:
    """The column types of one JSONL file's chunks, without a fixed window that drops late keys.

    Types are inferred once per file, from the lines in its first ``INFER_BYTES``. Keys first
    seen later are declared as text (polars reads numbers and objects into a text column as
    their JSON text; they are coerced and checked later like any text): always the keys that
    define metric rows (``ROW_KEYS``: evaluation splits and domains that start late in a run),
    and any other key found on the lines ``_sampled_keys`` reads from every chunk. A chunk whose
    values no longer fit the types is inferred again (``refresh``).
    """

    def __init__(self) -> None:
        self.inferred: dict[str, pl.DataType] | None = None
        self.declared: set[str] = set()

    def refresh(self, data: bytes) -> None:
        """Infer the types from the first lines of ``data`` (raises on lines that are not JSON)."""
        cut = data.rfind(b"\n", 0, INFER_BYTES) + 1 if len(data) > INFER_BYTES else len(data)
        frame = pl.read_ndjson(data[: cut or len(data)], infer_schema_length=None)
        self.inferred = dict(frame.schema)
        self.declared = set()

    def of(self, data: bytes) -> tuple[dict[str, pl.DataType], list[str]]:
        """The schema of chunk ``data`` and the declared keys (dropped when no line has them)."""
        if self.inferred is None:
            self.refresh(data)
        assert self.inferred is not None
        self.declared |= (set(ROW_KEYS) | _sampled_keys(data, 0)) - set(self.inferred)
        declared = sorted(self.declared)
        return {**self.inferred, **dict.fromkeys(declared, pl.String)}, declared


def _fast_parse(data: bytes, schema: ChunkSchema) -> pl.DataFrame | None:
    """Parse a chunk with polars, or None when a line is not valid JSON (or does not fit)."""
    for attempt in range(2):
        try:
            columns, declared = schema.of(data)
            # the lazy reader parses ~2x faster than read_ndjson with a schema (polars 2.1)
            frame = pl.scan_ndjson(data, schema=columns).collect()
        except pl.exceptions.PolarsError:
            if attempt == 0 and schema.inferred is not None:
                try:  # the types changed (an integer column with a float): infer them again
                    schema.refresh(data)
                    continue
                except pl.exceptions.PolarsError:
                    return None
            return None
        unused = [c for c in declared if frame[c].null_count() == frame.height]
        return frame.drop(unused)
    return None


def _parse_block(
    data: bytes | memoryview,
    first_line: int,
    unterminated: bool,
    source_file: str,
    keep_record: bool,
    warnings: list[str],
    schema: ChunkSchema | None = None,
    scanner: FlatScanner | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Parse complete lines ``data`` starting at line ``first_line``.

    Returns ``(frame, quarantine, lines)`` where ``lines`` is the number of lines consumed.
    """
    # numpy counts ~3x faster than bytes.count and releases the GIL (the writer runs beside)
    n_lines = count_lines(data) + (1 if unterminated else 0)
    frame = (scanner or FlatScanner()).parse(data, n_lines)  # flat records, else polars
    if frame is None:
        data = bytes(data)  # polars and the line-level parser take bytes, not a view
        frame = _fast_parse(data, schema or ChunkSchema())
    # one row per line means no blank or bad line: row i is line first_line + i
    if frame is not None and frame.height == n_lines:
        frame = frame.with_row_index("source_line", offset=first_line).with_columns(
            pl.col("source_line").cast(pl.Int64)
        )
        if keep_record:
            lines = bytes(data).split(b"\n")[:n_lines]
            frame = frame.with_columns(
                pl.Series("_record", [ln.decode("utf-8", "replace") for ln in lines])
            )
        return frame, _empty_quarantine(), n_lines
    # slow path: find the bad lines
    lines = data.split(b"\n")
    if not unterminated:
        lines = lines[:-1]
    objects, numbers, records = [], [], []
    bad_lines, bad_reasons, bad_records = [], [], []
    legacy: list[int] = []
    for offset, raw in enumerate(lines):
        text = raw.strip()
        if not text:
            continue
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:  # one line saved in a legacy code page
            text = text.decode(legacy_encoding(text)).encode("utf-8")
            raw = text
            legacy.append(first_line + offset)
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:  # NaN / Infinity literals written by Python's json module
                value = json.loads(text)
            except ValueError:
                value = None
        if isinstance(value, dict):
            objects.append(value)
            numbers.append(first_line + offset)
            records.append(raw.decode("utf-8", "replace"))
            continue
        is_last = offset == len(lines) - 1
        bad_lines.append(first_line + offset)
        bad_reasons.append("truncated_line" if unterminated and is_last else "malformed_json")
        bad_records.append(raw.decode("utf-8", "replace"))
    if legacy:
        shown = ", ".join(map(str, legacy[:5])) + (" ..." if len(legacy) > 5 else "")
        warnings.append(
            f"{Path(source_file).name}: {len(legacy)} line(s) not valid UTF-8, decoded as "
            f"{LEGACY_ENCODINGS[0]} (lines {shown}); save the file as UTF-8"
        )
    quarantine = quarantine_frame(
        source_file,
        lines=bad_lines,
        fields=[None] * len(bad_lines),
        reasons=bad_reasons,
        records=bad_records,
    )
    if not objects:
        empty = pl.DataFrame({"source_line": pl.Series([], dtype=pl.Int64)})
        return empty, quarantine, len(lines)
    frame = frame_from_objects(objects).with_columns(
        pl.Series("source_line", numbers, dtype=pl.Int64)
    )
    if keep_record:
        frame = frame.with_columns(pl.Series("_record", records))
    return frame, quarantine, len(lines)


def iter_jsonl(
    path: Path,
    *,
    chunk_bytes: int | None = None,
    keep_record: bool = False,
    warnings: list[str] | None = None,
    text: TextSource | None = None,
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Yield ``(frame, quarantine)`` per chunk of a JSONL file, with 1-based ``source_line``.

    The file is read (never memory-mapped, see ``rawfile``) as UTF-8 blocks cut at line ends
    every ``chunk_bytes`` (default ``CHUNK_BYTES``, read at call time); memory is bounded by the
    chunk (plus its parsed frame), whatever the file size. How the file was decoded and whether
    it changed while read are appended to ``warnings``. ``text`` is the file opened by the
    caller (``open_text(path)``), who can then read its ``content_hash`` afterwards.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    warnings = warnings if warnings is not None else []
    text = text or open_text(path)
    schema, scanner = ChunkSchema(), FlatScanner()
    line = 1
    # each block is parsed (copied out) before the next is read: one read buffer serves all
    for index, data in enumerate(line_blocks(text, chunk_bytes, reuse=True)):
        if index == 0 and text.note:
            warnings.append(text.note)
        unterminated = data[-1:] != b"\n"
        frame, quarantine, lines = _parse_block(
            data, line, unterminated, str(path), keep_record, warnings, schema, scanner
        )
        yield frame, quarantine
        line += lines
    change = text.check()
    if change:
        warnings.append(change)


def jsonl_frames(
    path: Path, warnings: list[str] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A whole (small) JSONL file as one frame with ``source_line`` and ``_record``.

    An empty or unreadable file gives an empty frame and one quarantine row; decoding notes
    go to ``warnings``.
    """
    try:
        if path.stat().st_size == 0:
            return pl.DataFrame(), failed_rows(path, "empty_file", "the file is empty (0 bytes)")
        parts = list(iter_jsonl(path, keep_record=True, warnings=warnings))
    except OSError as error:
        return pl.DataFrame(), failed_rows(path, "unreadable_file", str(error))
    frames = [frame for frame, _ in parts if frame.height]
    quarantine = pl.concat([q for _, q in parts]) if parts else _empty_quarantine()
    if not frames:
        if quarantine.height == 0:
            quarantine = failed_rows(path, "empty_file", "the file has no JSON records")
        return pl.DataFrame(), quarantine
    return pl.concat(frames, how="diagonal_relaxed"), quarantine


def failed_rows(path: Path, reason: str, detail: str) -> pl.DataFrame:
    """The quarantine rows of a whole-file failure."""
    return next(iter(failed(path, reason, detail).chunks)).quarantine


# --------------------------------------------------------------------------- normalisation


def _mixture_expr(frame: pl.DataFrame) -> pl.Expr | None:
    """An expression turning the file's ``mixture`` column into ``MIXTURE_DTYPE``."""
    if "mixture" not in frame.columns:
        return None
    dtype = frame.schema["mixture"]
    unique = frame.schema.get("mixture_unique_tokens")
    if isinstance(dtype, pl.Struct):
        items = []
        for fld in dtype.fields:
            tokens = (
                pl.col("mixture_unique_tokens").struct.field(fld.name).cast(pl.Float64)
                if isinstance(unique, pl.Struct) and fld.name in [f.name for f in unique.fields]
                else pl.lit(None, pl.Float64)
            )
            items.append(
                pl.struct(
                    pl.lit(fld.name).alias("source"),
                    pl.col("mixture").struct.field(fld.name).cast(pl.Float64).alias("weight"),
                    tokens.alias("unique_tokens"),
                )
            )
        listed = pl.concat_list(items).list.eval(
            pl.element().filter(pl.element().struct.field("weight").is_not_null())
        )
        return pl.when(pl.col("mixture").is_null()).then(None).otherwise(listed)
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        names = [f.name for f in dtype.inner.fields]
        return pl.col("mixture").list.eval(
            pl.struct(
                pl.element().struct.field("source").cast(pl.String).alias("source"),
                pl.element().struct.field("weight").cast(pl.Float64).alias("weight"),
                (
                    pl.element().struct.field("unique_tokens").cast(pl.Float64)
                    if "unique_tokens" in names
                    else pl.lit(None, pl.Float64)
                ).alias("unique_tokens"),
            )
        )
    return pl.lit(None, MIXTURE_DTYPE)


def _mixture_items(value: Any, unique: Any) -> list[dict] | None:
    """A decoded mixture (``{source: weight}`` or a list of items) as ``MIXTURE_DTYPE`` items;
    None when it has neither shape."""
    unique = unique if isinstance(unique, dict) else {}
    if isinstance(value, dict):
        value = [
            {"source": k, "weight": w, "unique_tokens": unique.get(k)} for k, w in value.items()
        ]
    if not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        return None
    items = []
    for item in value:
        weight, tokens = item.get("weight"), item.get("unique_tokens")
        if not all(v is None or isinstance(v, int | float) for v in (weight, tokens)):
            return None
        items.append(
            {
                "source": str(item.get("source")),
                "weight": None if weight is None else float(weight),
                "unique_tokens": None if tokens is None else float(tokens),
            }
        )
    return items


def _decode_text_mixture(
    frame: pl.DataFrame, source_file: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Mixtures given as JSON text (CSV cells, or JSON strings in a log) -> ``MIXTURE_DTYPE``;
    a text that is not a mixture is quarantined (field ``mixture``, ``bad_value``)."""
    if "mixture" not in frame.columns or frame.schema["mixture"] != pl.String:
        return frame, _empty_quarantine()
    unique_text = (
        frame["mixture_unique_tokens"].cast(pl.String).to_list()
        if "mixture_unique_tokens" in frame.columns
        else [None] * frame.height
    )
    values, bad = [], []
    for row, (text, unique) in enumerate(zip(frame["mixture"].to_list(), unique_text, strict=True)):
        if text is None or not text.strip():
            values.append(None)
            continue
        try:
            decoded = json.loads(text)
            extra = json.loads(unique) if unique else None
        except ValueError:
            decoded = extra = None
        items = _mixture_items(decoded, extra)
        if items is None:
            bad.append(row)
        values.append(items)
    frame = frame.with_columns(pl.Series("mixture", values, dtype=MIXTURE_DTYPE))
    if "mixture_unique_tokens" in frame.columns:
        frame = frame.drop("mixture_unique_tokens")
    if not bad:
        return frame, _empty_quarantine()
    flagged = frame.with_columns(pl.int_range(pl.len()).is_in(bad).alias("_bad_mixture"))
    good, quarantine = split_by_checks(
        flagged, [(pl.col("_bad_mixture"), "mixture", "bad_value")], source_file=source_file
    )
    return good.drop("_bad_mixture"), quarantine


def _group_runs(frame: pl.DataFrame, aggs: list[pl.Expr]) -> pl.DataFrame:
    """``frame.group_by("run_id", maintain_order=True).agg(aggs)``, cheaper for a log that
    writes each run's rows together: the rows are grouped by their block of equal run ids
    (an integer key, ~half the CPU of hashing the ids); when a run id comes back in a later
    block, by the run id itself."""
    blocks = frame.group_by(pl.col("run_id").rle_id().alias("_block"), maintain_order=True).agg(
        pl.col("run_id").first(), *aggs
    )
    if blocks["run_id"].is_unique().all():
        return blocks.drop("_block")
    return frame.group_by("run_id", maintain_order=True).agg(aggs)


def canonical_chunk(
    frame: pl.DataFrame, *, source_file: str, experiment: str, warnings: list[str]
) -> Chunk:
    """Turn one parsed chunk of a canonical file into a ``Chunk`` (runs fragments + metrics)."""
    if frame.height == 0:
        return Chunk(pl.DataFrame(), pl.DataFrame(), _empty_quarantine())
    frame = frame.rename({c: c.strip() for c in frame.columns})
    unknown = [c for c in frame.columns if c not in KNOWN and c not in _BOOKKEEPING]
    if unknown:
        note = f"unknown columns kept in tags.extra: {', '.join(sorted(unknown))}"
        if note not in warnings:
            warnings.append(note)
    frame, quarantine = coerce_numeric(frame, NUMERIC, source_file=source_file)
    if "run_id" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.String).alias("run_id"))
    frame, q_mixture = _decode_text_mixture(frame, source_file)
    quarantine = pl.concat([quarantine, q_mixture])
    experiment_col = (
        pl.col("experiment").cast(pl.String).fill_null(experiment)
        if "experiment" in frame.columns
        else pl.lit(experiment)
    )
    run_id = pl.col("run_id").cast(pl.String)
    has_prefix = run_id.str.starts_with(experiment_col + "/")
    prefixed = pl.when(has_prefix).then(run_id).otherwise(experiment_col + "/" + run_id)
    # one experiment (equality with the first value: ~5x cheaper than a string min and max)
    first, single = frame.select(
        experiment_col.first().alias("first"), (experiment_col == experiment_col.first()).all()
    ).row(0)
    if first is not None and single:  # check against a literal (no concatenation)
        has_prefix = run_id.str.starts_with(pl.lit(first + "/"))
    if frame.select((has_prefix | run_id.is_null()).all()).item():
        prefixed = run_id  # every id already has it (the usual case): skip the concatenation
    mixture = _mixture_expr(frame)
    frame = frame.with_columns(
        experiment_col.alias("experiment"),
        prefixed.alias("run_id"),
        *([mixture.cast(MIXTURE_DTYPE).alias("mixture")] if mixture is not None else []),
    )
    long = "loss" in frame.columns
    metrics = pl.DataFrame()
    if long:
        defaults = {
            "step": pl.lit(FINAL_STEP, pl.Int64),
            "split": pl.lit("train"),
            "domain": pl.lit("all"),
            "loss_kind": pl.lit("nats"),
        }
        columns = []
        for name in METRIC_COLUMNS:
            if name in frame.columns:
                expr = pl.col(name)
                if name in defaults and name != "step":
                    expr = expr.fill_null(defaults[name])
                columns.append(expr.alias(name))
            elif name in defaults:
                columns.append(defaults[name].alias(name))
        columns += [pl.lit(source_file).alias("source_file"), pl.col("source_line")]
        if "_record" in frame.columns:
            columns.append(pl.col("_record"))
        metrics = frame.select(columns)
    # run fragments: first non-null value per run of every run-level column
    run_level = [c for c in RUN_COLUMNS if c in frame.columns and c not in ("run_id",)]
    if long:
        run_level = [c for c in run_level if c != "learning_rate"]
    aggs = [pl.col(c).first(ignore_nulls=True) for c in run_level]
    if long and "peak_learning_rate" in frame.columns:
        aggs.append(pl.col("peak_learning_rate").first(ignore_nulls=True).alias("learning_rate"))
    elif long and "learning_rate" in frame.columns:
        aggs.append(pl.col("learning_rate").max().alias("learning_rate"))
    elif "peak_learning_rate" in frame.columns and "learning_rate" not in frame.columns:
        aggs.append(pl.col("peak_learning_rate").first(ignore_nulls=True).alias("learning_rate"))
    if unknown:
        aggs.append(
            pl.struct([pl.col(c).first(ignore_nulls=True) for c in unknown])
            .struct.json_encode()
            .alias("_extra")
        )
    aggs.append(pl.col("source_line").min())
    # grouped first, the rows without a run id dropped after (one group, no copy of the rows)
    runs = _group_runs(frame, aggs)
    runs = runs.filter(pl.col("run_id").is_not_null())
    if unknown:
        base = runs["tags"].to_list() if "tags" in runs.columns else [None] * runs.height
        tags = [
            merge_tags(b, {"extra": json.loads(e)})
            for b, e in zip(base, runs["_extra"].to_list(), strict=True)
        ]
        runs = runs.drop("_extra").with_columns(pl.Series("tags", tags))
    elif "tags" in runs.columns and runs.schema["tags"] != pl.String:
        runs = runs.with_columns(pl.col("tags").struct.json_encode())
    runs = runs.with_columns(pl.lit(source_file).alias("source_file"))
    if not long:
        # a runs-only record with a bad run id still has to show up somewhere
        missing = frame.filter(pl.col("run_id").is_null())
        if missing.height:
            quarantine = pl.concat(
                [
                    quarantine,
                    quarantine_frame(
                        source_file,
                        lines=missing["source_line"].to_list(),
                        fields=["run_id"] * missing.height,
                        reasons=["missing_field"] * missing.height,
                        records=[None] * missing.height,
                    ),
                ]
            )
    return Chunk(runs=runs, metrics=metrics, quarantine=quarantine)


# --------------------------------------------------------------------------- readers


def read_canonical_jsonl(path: Path) -> ReaderOutput:
    """Read a canonical JSONL log, streamed in chunks."""
    warnings: list[str] = []
    try:
        size = path.stat().st_size
    except OSError as error:
        return failed(path, "unreadable_file", str(error))
    if size == 0:
        return failed(path, "empty_file", "the file is empty (0 bytes)")

    def chunks() -> Iterator[Chunk]:
        seen_rows = 0
        text = open_text(path)
        for frame, quarantine in iter_jsonl(path, warnings=warnings, text=text):
            seen_rows += frame.height
            chunk = canonical_chunk(
                frame, source_file=str(path), experiment=inner_path(path).stem, warnings=warnings
            )
            chunk.quarantine = pl.concat([quarantine, chunk.quarantine])
            yield chunk
        output.content_hash = text.content_hash()
        if seen_rows == 0:
            yield Chunk(
                pl.DataFrame(), pl.DataFrame(), failed_rows(path, "empty_file", "no records")
            )

    output = ReaderOutput(chunks=chunks(), warnings=warnings)
    return output


def read_canonical_json(path: Path) -> ReaderOutput:
    """Read a canonical JSON document: an array of records or an object of arrays."""
    warnings: list[str] = []
    empty = pl.DataFrame()

    def chunks() -> Iterator[Chunk]:
        try:
            frame, quarantine = document_frames(path, load_text(path, warnings))
        except (OSError, EOFError, UnicodeDecodeError, DocumentError) as error:
            detail = f"{error}; a JSON log is one object per line, an array of records or an "
            detail += "object of equal-length arrays"
            yield Chunk(empty, empty, failed_rows(path, "unreadable_file", detail))
            return
        if frame.height == 0:
            rows = failed_rows(path, "empty_file", "the document has no records")
            yield Chunk(empty, empty, pl.concat([quarantine, rows]))
            return
        chunk = canonical_chunk(
            frame, source_file=str(path), experiment=inner_path(path).stem, warnings=warnings
        )
        chunk.quarantine = pl.concat([quarantine, chunk.quarantine])
        yield chunk

    return ReaderOutput(chunks=chunks(), warnings=warnings)


def read_canonical_csv(path: Path, *, separator: str | None = None) -> ReaderOutput:
    """Read a canonical CSV (or TSV) log in blocks of about ``CSV_BLOCK_BYTES``.

    The separator is a tab for ``.tsv`` files (also inside a container), else a comma.

    Every column is read as text (numbers are coerced, and checked, per column); a block is
    never cut inside a quoted field, so rows are numbered as data rows (header = line 1).
    """
    warnings: list[str] = []
    try:
        if path.stat().st_size == 0:
            return failed(path, "empty_file", "the file is empty (0 bytes)")
    except OSError as error:
        return failed(path, "unreadable_file", f"{type(error).__name__}: {error}")
    if separator is None:
        separator = "\t" if inner_path(path).suffix.lower() == ".tsv" else ","
    quote = None if separator == "\t" else b'"'

    def parse(data: bytes, header: list[str] | None) -> pl.DataFrame:
        return pl.read_csv(
            io.BytesIO(data),
            separator=separator,
            has_header=header is None,
            new_columns=header,
            infer_schema=False,
            quote_char=None if quote is None else '"',
        )

    def chunks() -> Iterator[Chunk]:
        text = open_text(path)
        rows, header = 0, None
        try:
            for index, data in enumerate(line_blocks(text, CSV_BLOCK_BYTES, quote=quote)):
                if index == 0 and text.note:
                    warnings.append(text.note)
                frame = parse(data, header)
                header = header or frame.columns
                frame = frame.with_row_index("source_line", offset=rows + 2).with_columns(
                    pl.col("source_line").cast(pl.Int64)
                )
                rows += frame.height
                if frame.height:
                    yield canonical_chunk(
                        frame,
                        source_file=str(path),
                        experiment=inner_path(path).stem,
                        warnings=warnings,
                    )
        except (pl.exceptions.PolarsError, OSError) as error:
            yield Chunk(
                pl.DataFrame(),
                pl.DataFrame(),
                failed_rows(path, "unreadable_file", f"after row {rows}: {error}"),
            )
            return
        change = text.check()
        if change:
            warnings.append(change)
        if rows == 0:
            yield Chunk(pl.DataFrame(), pl.DataFrame(), failed_rows(path, "empty_file", "no rows"))

    return ReaderOutput(chunks=chunks(), warnings=warnings)


def read_canonical_parquet(path: Path) -> ReaderOutput:
    """Read a canonical Parquet log, one row group batch at a time.

    A compressed container (``x.parquet.gz``) is decompressed into memory first. A file that
    fails or changes while read keeps the rows read before, with an ``unreadable_file`` row
    saying after which row, and a ``CHANGED`` warning (see ``rawfile``).
    """
    warnings: list[str] = []
    before = os.stat(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq  # lazy: only Parquet logs need it

        compressed = compression_of(path) is not None
        source = pa.BufferReader(read_decompressed(path)) if compressed else path
        parquet = pq.ParquetFile(source)
    except Exception as error:  # pyarrow raises several types for a bad file
        return failed(path, "unreadable_file", f"{type(error).__name__}: {error}")
    if parquet.metadata.num_rows == 0:
        return failed(path, "empty_file", "the Parquet file has no rows")

    def chunks() -> Iterator[Chunk]:
        start = 1
        try:
            for batch in parquet.iter_batches(batch_size=CSV_BATCH_ROWS):
                frame = pl.DataFrame(pl.from_arrow(batch))
                frame = frame.with_row_index("source_line", offset=start).with_columns(
                    pl.col("source_line").cast(pl.Int64)
                )
                start += frame.height
                yield canonical_chunk(
                    frame,
                    source_file=str(path),
                    experiment=inner_path(path).stem,
                    warnings=warnings,
                )
        except Exception as error:  # a file cut or replaced while read
            detail = f"after row {start - 1}: {type(error).__name__}: {error}"
            yield Chunk(
                pl.DataFrame(), pl.DataFrame(), failed_rows(path, "unreadable_file", detail)
            )
        after = os.stat(path) if path.exists() else None
        if after is None or (after.st_size, after.st_mtime_ns) != (
            before.st_size,
            before.st_mtime_ns,
        ):
            size = after.st_size if after else 0
            warnings.append(
                f"{CHANGED}: {path.name} went from {before.st_size:,} to {size:,} bytes while "
                "read; ingest again once the file is complete."
            )

    return ReaderOutput(chunks=chunks(), warnings=warnings)
