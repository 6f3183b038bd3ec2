"""What every reader returns, and helpers readers share.

A reader turns one raw file into a ``ReaderOutput``: an iterator of ``Chunk``s (one for small
tables, many for a streamed JSONL log) plus file-level facts. Each chunk holds

* ``runs``: run-level columns (any subset of ``RUNS_SCHEMA``; more rows per run are fine, the
  first non-null value of each column wins),
* ``metrics``: metric rows (``METRICS_SCHEMA`` columns, numbers already coerced), and
* ``quarantine``: records the reader itself could not parse.

Readers never write anything and never modify the raw file.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mixplan.planning.readers.rawfile import open_text
from mixplan.planning.schema import MIXTURE_DTYPE, QUARANTINE_SCHEMA, conform
from mixplan.planning.validation import MIXTURE_TOLERANCE, file_problem


@dataclass
class Chunk:
    """Part of a file, parsed: run fragments, metric rows and reader-level quarantine."""

    runs: pl.DataFrame
    metrics: pl.DataFrame
    quarantine: pl.DataFrame = field(
        default_factory=lambda: conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    )


@dataclass
class ReaderOutput:
    """A reader's result for one file.

    Attributes
    ----------
    chunks
        The parsed chunks (consumed once).
    partner_files
        Other files read together with this one (their rows are replaced together).
    warnings
        Human-readable warnings (e.g. unknown columns kept in tags); readers may append while
        the chunks are consumed.
    mixture_tolerance
        Tolerance on the mixture-weight sum for this source.
    normalise_mixture
        Rescale accepted mixtures to sum exactly to 1 (sources that publish rounded weights).
    content_hash
        Set by a reader that reads its file whole through ``rawfile.TextSource``, once the
        chunks are consumed: the file's content hash from the bytes it read
        (``TextSource.content_hash``; "" when it did not, or the file changed meanwhile).
    """

    chunks: Iterable[Chunk]
    partner_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mixture_tolerance: float = MIXTURE_TOLERANCE
    normalise_mixture: bool = False
    content_hash: str = ""


def single(runs: pl.DataFrame, metrics: pl.DataFrame, quarantine: pl.DataFrame) -> Iterator[Chunk]:
    """A one-chunk iterator (small, in-memory sources)."""
    yield Chunk(runs=runs, metrics=metrics, quarantine=quarantine)


def failed(path: Path, reason: str, detail: str) -> ReaderOutput:
    """The output of a file that cannot be read at all (one quarantine row, no data)."""
    empty = pl.DataFrame()
    return ReaderOutput(chunks=[Chunk(empty, empty, file_problem(str(path), reason, detail))])


def read_text_table(
    path: Path,
    *,
    separator: str = ",",
    has_header: bool = True,
    columns: list[str] | None = None,
    warnings: list[str] | None = None,
) -> pl.DataFrame | ReaderOutput:
    """Read a delimited text file with every column as text, plus ``source_line`` (1-based).

    The file is read as a snapshot through ``rawfile`` (containers, byte-order marks and
    legacy encodings handled; a note on how it was decoded is appended to ``warnings``).
    Returns a ``ReaderOutput`` with the file-level problem instead when the file is empty or
    cannot be parsed.
    """
    text = open_text(path)
    try:
        if path.stat().st_size == 0:
            return failed(path, "empty_file", "the file is empty (0 bytes)")
        data = text.read_all()
        if not data.strip():
            return failed(path, "empty_file", "the file has no text")
        frame = pl.read_csv(
            io.BytesIO(data),
            separator=separator,
            has_header=has_header,
            new_columns=columns,
            infer_schema=False,
            quote_char=None if separator == "\t" else '"',
            truncate_ragged_lines=False,
        )
    except (OSError, UnicodeDecodeError, pl.exceptions.PolarsError) as error:
        return failed(path, "unreadable_file", f"{type(error).__name__}: {error}")
    if warnings is not None:
        warnings += [note for note in (text.note, text.check()) if note]
    if frame.height == 0:
        return failed(path, "empty_file", "the file has a header but no rows")
    first_line = 2 if has_header else 1
    return frame.with_row_index("source_line", offset=first_line).with_columns(
        pl.col("source_line").cast(pl.Int64)
    )


def tags_json(columns: dict[str, pl.Expr]) -> pl.Expr:
    """A ``tags`` JSON-object column from named expressions (nulls dropped by the encoder)."""
    return pl.struct(**columns).struct.json_encode()


def run_id(experiment: str, name: pl.Expr) -> pl.Expr:
    """The run id ``<experiment>/<name>`` (every reader's runs are namespaced this way)."""
    return pl.concat_str(pl.lit(experiment + "/"), name)


def run_rows(
    table: pl.DataFrame,
    *,
    experiment: str,
    name: pl.Expr,
    source_file: str | Path,
    assumptions: str,
    tags: dict[str, pl.Expr] | None = None,
    **columns: pl.Expr,
) -> pl.DataFrame:
    """One runs row per row of ``table``, in ``RUNS_SCHEMA`` column names.

    Parameters
    ----------
    table
        Parsed rows with a ``source_line`` column.
    experiment, name
        The run is ``<experiment>/<name>`` (``name`` is evaluated per row).
    source_file
        The file the rows come from.
    assumptions
        Every conversion the reader made (stored in ``tags`` under ``"assumptions"``, last).
    tags
        Further facts kept in the run's JSON ``tags`` (nulls are dropped).
    **columns
        ``RUNS_SCHEMA`` column name -> expression (``params=pl.col("N")``, ...).
    """
    return table.select(
        run_id(experiment, name).alias("run_id"),
        pl.lit(experiment).alias("experiment"),
        *[expr.alias(column) for column, expr in columns.items()],
        tags_json({**(tags or {}), "assumptions": pl.lit(assumptions)}).alias("tags"),
        pl.lit(str(source_file)).alias("source_file"),
        "source_line",
    )


def mixture_from_columns(
    sources: list[str], weight_columns: list[str], unique_columns: list[str] | None = None
) -> pl.Expr:
    """A ``mixture`` list column from one weight column per source."""
    items = []
    for i, (source, weight) in enumerate(zip(sources, weight_columns, strict=True)):
        unique = (
            pl.col(unique_columns[i]).cast(pl.Float64)
            if unique_columns
            else pl.lit(None, pl.Float64)
        )
        items.append(
            pl.struct(
                pl.lit(source).alias("source"),
                pl.col(weight).cast(pl.Float64).alias("weight"),
                unique.alias("unique_tokens"),
            )
        )
    return pl.concat_list(items).cast(MIXTURE_DTYPE)


def merge_tags(base: str | None, extra: dict[str, Any]) -> str:
    """Merge ``extra`` into a JSON-object tags string (non-finite floats become strings)."""
    tags: dict[str, Any] = {}
    if base:
        try:
            loaded = json.loads(base)
            tags = loaded if isinstance(loaded, dict) else {"tags": loaded}
        except json.JSONDecodeError:
            tags = {"tags": base}
    for key, value in extra.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        tags[key] = value
    return json.dumps(tags, sort_keys=True, default=str)


def prefetch(items: Iterable[Any], *, depth: int = 1) -> Iterator[Any]:
    """Iterate ``items`` while a background thread produces the next ``depth`` ones.

    Parsing (polars releases the GIL) then overlaps with whatever the consumer does, e.g. the
    Delta writer encoding the previous chunk. Exceptions of the producer are re-raised here;
    when the consumer stops early the producer is told to stop and its thread ends.
    """
    import queue
    import threading

    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome = (done, None)
        except BaseException as error:  # handed to the consumer
            outcome = (done, error)
        while not stop.is_set():
            try:
                buffer.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=produce, name="mixplan-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
