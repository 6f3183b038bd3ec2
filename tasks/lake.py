"""The run-log lake: four Delta Lake tables (runs, metrics, quarantine, sources) under one folder.

Every later stage reads the lake only through the helpers here (``read_runs``, ``read_metrics``,
``final_losses``, ``lake_summary``, ``lake_version``); the ingest stage writes it only through
``write_source``. These are plain functions (no Prefect import) so that the CLI, the Prefect
tasks and tests call the same code.

Layout (``lake`` is a local folder or an object-store URL that ``deltalake`` supports, e.g.
``s3://bucket/lake``)::

    <lake>/runs/        Delta table, schema ``mixplan.planning.schema.RUNS_SCHEMA``
    <lake>/metrics/     Delta table, schema ``mixplan.planning.schema.METRICS_SCHEMA``
    <lake>/quarantine/  Delta table, schema ``mixplan.planning.schema.QUARANTINE_SCHEMA``
    <lake>/sources/     Delta table, schema ``mixplan.planning.schema.SOURCES_SCHEMA``

How writes stay correct
-----------------------
* One source file is the unit of replacement. Its rows are written with a *replace-where*
  overwrite (``predicate="source_file = '<file>'"``): one atomic Delta commit per table that
  removes the file's previous rows and adds the new ones. Re-ingesting a file therefore never
  duplicates rows, and a changed file replaces exactly its own rows.
* A streamed file's metrics in a local lake (``write_streamed``) take a shorter way to the same
  commit: polars writes them once as Parquet data files of the metrics table, and one Delta
  transaction adds those files and removes the file's earlier data files, found by their
  ``source_file`` statistics (a data file that mixes other files' rows, as a MERGE can leave,
  sends the file through the replace-where instead).
* When a file's runs already exist in the lake from *another* file (a run logged across two
  files), its runs and metrics are upserted with a Delta MERGE on the primary keys
  (``run_id`` / ``(run_id, step, split, domain, loss_kind)``) instead; the later file wins on
  equal keys (when its run facts agree: different facts are a ``conflict``, see validation).
* The ``sources`` row (path, content hash, size, counts) is committed last, so it marks a file
  as done: a crash mid-file leaves no ``sources`` row and the next ingest simply redoes the file.
* Row counts always come from the tables (never from globbing Parquet files: old file versions
  stay on disk until ``vacuum``).

Concurrency (deltalake 1.6): every commit is atomic (a new JSON entry in ``_delta_log`` created
with put-if-absent). A writer whose commit loses a race gets ``CommitFailedError`` and is retried
(``COMMIT_RETRIES``) against the new table version. Delta cannot detect the race of two ingests
of *different* files that bring the *same* runs (each replaces only its own file's rows, so
both would insert the runs): ingests therefore hold the lake's lock while they decide and write
(``tasks.ingest.lake_write_lock``). On S3, safe concurrent writes need a locking provider or
conditional puts (``storage_options``), as the deltalake documentation describes.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa

from mixplan.planning.errors import RunLogError
from mixplan.planning.schema import (
    METRICS_KEY,
    METRICS_SCHEMA,
    QUARANTINE_SCHEMA,
    RUNS_SCHEMA,
    SOURCES_SCHEMA,
    conform,
    empty_frame,
    final_rows,
)

log = logging.getLogger(__name__)

TABLES: dict[str, dict[str, pl.DataType]] = {
    "runs": RUNS_SCHEMA,
    "metrics": METRICS_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
    "sources": SOURCES_SCHEMA,
}
"""The lake's tables and their schemas."""

COMMIT_RETRIES = 8
"""How often a commit that lost a race with a concurrent writer is retried."""

T = TypeVar("T")


# --------------------------------------------------------------------------- paths


def is_url(lake: str | Path) -> bool:
    return "://" in str(lake)


def table_uri(lake: str | Path, table: str) -> str:
    """The URI of one table of the lake (works for local folders and object-store URLs)."""
    if table not in TABLES:
        raise ValueError(f"unknown lake table {table!r}; the lake has {sorted(TABLES)}")
    if is_url(lake):
        return f"{str(lake).rstrip('/')}/{table}"
    return str(Path(lake) / table)


def _options(lake: str | Path, storage_options: dict[str, str] | None) -> dict[str, str] | None:
    """The given storage options, else the lake's own
    (:func:`mixplan.tasks.storage.storage_options`: the tables, fits, state and lock share one
    set)."""
    from mixplan.tasks.storage import storage_options as lake_options

    return storage_options if storage_options is not None else lake_options(lake)


def _exists(lake: str | Path, table: str, storage_options: dict[str, str] | None = None) -> bool:
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(
        table_uri(lake, table), storage_options=_options(lake, storage_options)
    )


def _require_lake(lake: str | Path, storage_options: dict[str, str] | None = None) -> None:
    if not _exists(lake, "runs", storage_options):
        raise RunLogError(
            f"no run-log lake at {lake} (no Delta table {table_uri(lake, 'runs')}); "
            f"create it with `mixplan ingest <logs> --lake {lake}`"
        )


# --------------------------------------------------------------------------- reading


def _scan(
    lake: str | Path,
    table: str,
    version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.LazyFrame:
    _require_lake(lake, storage_options)
    if not _exists(lake, table, storage_options):
        return empty_frame(TABLES[table]).lazy()
    return pl.scan_delta(
        table_uri(lake, table), version=version, storage_options=_options(lake, storage_options)
    )


def read_runs(
    lake: str | Path,
    *,
    experiment: str | None = None,
    version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Read the runs table (one row per run, schema ``RUNS_SCHEMA``), sorted by ``run_id``.

    Parameters
    ----------
    lake
        Lake folder or object-store URL.
    experiment
        Keep only this experiment's runs.
    version
        Read the runs table as it was at this Delta version (see ``lake_version``).
    storage_options
        Passed to deltalake for object stores.

    Raises
    ------
    RunLogError
        When there is no lake at ``lake``.
    """
    frame = _scan(lake, "runs", version, storage_options)
    if experiment is not None:
        frame = frame.filter(pl.col("experiment") == experiment)
    return conform(frame.collect(), RUNS_SCHEMA).sort("run_id")


def read_metrics(
    lake: str | Path,
    *,
    experiment: str | None = None,
    split: str | None = None,
    domain: str | None = None,
    version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Read the metrics table (schema ``METRICS_SCHEMA``), sorted by run, split, domain, step.

    ``experiment`` keeps the runs of one experiment (via the runs table); ``split`` and
    ``domain`` filter the rows; ``version`` reads the metrics table as of that Delta version
    (the runs table is then read at its latest version for the experiment filter).
    """
    frame = _scan(lake, "metrics", version, storage_options)
    if experiment is not None:
        run_ids = (
            _scan(lake, "runs", None, storage_options)
            .filter(pl.col("experiment") == experiment)
            .select("run_id")
        )
        frame = frame.join(run_ids, on="run_id", how="semi")
    if split is not None:
        frame = frame.filter(pl.col("split") == split)
    if domain is not None:
        frame = frame.filter(pl.col("domain") == domain)
    return conform(frame.collect(), METRICS_SCHEMA).sort(["run_id", "split", "domain", "step"])


def final_losses(
    lake: str | Path,
    *,
    experiment: str | None = None,
    split: str | None = None,
    domain: str | None = None,
    version: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """The loss at each run's end: one row per ``(run_id, split, domain, loss_kind)``, with the
    run joined.

    The final row of a (run, split, domain, loss_kind) is chosen by
    ``mixplan.planning.schema.final_rows``.
    Columns: every ``RUNS_SCHEMA`` column, then ``split``, ``domain``, ``step``,
    ``tokens_seen``, ``learning_rate_at_step``, ``loss``, ``loss_kind``.
    Sorted by ``run_id, split, domain``.
    """
    metrics = read_metrics(
        lake,
        experiment=experiment,
        split=split,
        domain=domain,
        version=version,
        storage_options=storage_options,
    )
    runs = read_runs(lake, experiment=experiment, version=None, storage_options=storage_options)
    last = final_rows(metrics).select(
        "run_id",
        "split",
        "domain",
        "step",
        "tokens_seen",
        pl.col("learning_rate").alias("learning_rate_at_step"),
        "loss",
        "loss_kind",
    )
    return runs.join(last, on="run_id", how="inner").sort(["run_id", "split", "domain"])


def read_quarantine(
    lake: str | Path, *, storage_options: dict[str, str] | None = None
) -> pl.DataFrame:
    """Every quarantined record (schema ``QUARANTINE_SCHEMA``), by file, line and reason."""
    frame = _scan(lake, "quarantine", None, storage_options).collect()
    return conform(frame, QUARANTINE_SCHEMA).sort(["source_file", "source_line", "reason"])


def read_sources(
    lake: str | Path, *, storage_options: dict[str, str] | None = None
) -> pl.DataFrame:
    """Every source file the lake has ingested, with its content hash and counts
    (``SOURCES_SCHEMA``)."""
    frame = _scan(lake, "sources", None, storage_options).collect()
    return conform(frame, SOURCES_SCHEMA).sort("source_file")


def lake_version(
    lake: str | Path, *, storage_options: dict[str, str] | None = None
) -> dict[str, int]:
    """The current Delta version of each table (``-1`` for a table not yet created).

    Later stages record this with their outputs, and pass a version back to ``read_runs`` /
    ``read_metrics`` to see the lake as it was.
    """
    from deltalake import DeltaTable

    _require_lake(lake, storage_options)
    versions: dict[str, int] = {}
    for table in TABLES:
        if _exists(lake, table, storage_options):
            versions[table] = DeltaTable(
                table_uri(lake, table), storage_options=_options(lake, storage_options)
            ).version()
        else:
            versions[table] = -1
    return versions


def lake_summary(lake: str | Path, *, storage_options: dict[str, str] | None = None) -> dict:
    """Counts of the lake, read through the tables.

    Returns
    -------
    dict
        ``experiments`` (name -> {"runs", "metric_rows"}), ``runs``, ``metric_rows``,
        ``quarantined`` (reason -> rows), ``quarantined_rows``, ``sources`` (files ingested),
        ``versions`` (table -> Delta version).
    """
    runs = _scan(lake, "runs", None, storage_options).select("run_id", "experiment")
    metrics = _scan(lake, "metrics", None, storage_options).select("run_id")
    per_run = metrics.group_by("run_id").agg(pl.len().alias("metric_rows"))
    per_experiment = (
        runs.join(per_run, on="run_id", how="left")
        .group_by("experiment")
        .agg(pl.len().alias("runs"), pl.col("metric_rows").fill_null(0).sum())
        .sort("experiment")
        .collect()
    )
    quarantine = (
        _scan(lake, "quarantine", None, storage_options)
        .group_by("reason")
        .agg(pl.len().alias("rows"))
        .sort("reason")
        .collect()
    )
    n_sources = _scan(lake, "sources", None, storage_options).select(pl.len()).collect().item()
    n_metrics = metrics.select(pl.len()).collect().item()
    return {
        "experiments": {
            row["experiment"]: {"runs": row["runs"], "metric_rows": row["metric_rows"]}
            for row in per_experiment.iter_rows(named=True)
        },
        "runs": int(per_experiment["runs"].sum()) if per_experiment.height else 0,
        "metric_rows": int(n_metrics),
        "quarantined": {row["reason"]: row["rows"] for row in quarantine.iter_rows(named=True)},
        "quarantined_rows": int(quarantine["rows"].sum()) if quarantine.height else 0,
        "sources": int(n_sources),
        "versions": lake_version(lake, storage_options=storage_options),
    }


def source_hashes(
    lake: str | Path, *, storage_options: dict[str, str] | None = None
) -> dict[str, str]:
    """``source_file -> content hash`` (column ``sha256``, see ``tasks.ingest.content_hash``) of
    every file the lake has ingested ({} for a new lake)."""
    if not _exists(lake, "sources", storage_options):
        return {}
    frame = pl.scan_delta(
        table_uri(lake, "sources"), storage_options=_options(lake, storage_options)
    )
    frame = frame.select("source_file", "sha256").collect()
    return dict(zip(frame["source_file"].to_list(), frame["sha256"].to_list(), strict=True))


# --------------------------------------------------------------------------- writing


def _arrow_schema(schema: dict[str, pl.DataType]) -> pa.Schema:
    return empty_frame(schema).to_arrow().schema


def ensure_lake(lake: str | Path, *, storage_options: dict[str, str] | None = None) -> None:
    """Create the lake's empty tables where they do not exist yet (idempotent)."""
    from deltalake import write_deltalake

    if not is_url(lake):
        Path(lake).mkdir(parents=True, exist_ok=True)
    for table, schema in TABLES.items():
        if _exists(lake, table, storage_options):
            continue
        try:
            write_deltalake(
                table_uri(lake, table),
                empty_frame(schema).to_arrow(),
                mode="ignore",
                storage_options=_options(lake, storage_options),
            )
        except Exception as error:  # a concurrent writer created it first
            if not _exists(lake, table, storage_options):
                raise RunLogError(
                    f"cannot create lake table {table_uri(lake, table)}: {error}"
                ) from error


def _writer_properties():
    from deltalake import WriterProperties

    # snappy: ~25% less CPU than the default codec when writing large metrics streams
    return WriterProperties(compression="SNAPPY")


def _retry_commit(action: Callable[[], T], what: str) -> T:
    from deltalake.exceptions import CommitFailedError

    for attempt in range(COMMIT_RETRIES):
        try:
            return action()
        except CommitFailedError as error:
            if attempt == COMMIT_RETRIES - 1:
                raise
            wait = 0.05 * (2**attempt) * (1 + random.random())
            log.info("commit of %s lost a race (%s); retrying in %.2fs", what, error, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def sql_literal(text: str) -> str:
    """A SQL string literal for Delta predicates (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _replace_file_rows(
    lake: str | Path,
    table: str,
    data: pa.RecordBatchReader | pa.Table | Callable[[], pa.RecordBatchReader],
    source_files: list[str],
    storage_options: dict[str, str] | None,
) -> None:
    """One atomic commit: drop ``table``'s rows of ``source_files`` and add ``data``.

    A table, or a callable giving a fresh stream, is retried when a concurrent commit wins
    the race; a bare stream can be consumed once, so its ``CommitFailedError`` propagates.
    """
    from deltalake import write_deltalake

    predicate = _file_predicate(source_files, "")

    def action() -> None:
        write_deltalake(
            table_uri(lake, table),
            data() if callable(data) else data,
            mode="overwrite",
            predicate=predicate,
            storage_options=_options(lake, storage_options),
            writer_properties=_writer_properties(),
        )

    if isinstance(data, pa.RecordBatchReader):
        action()
        return
    _retry_commit(action, f"{table} of {source_files[0]}")


def _file_predicate(source_files: list[str], alias: str) -> str:
    listed = ", ".join(sql_literal(name) for name in source_files)
    return f"{alias}source_file IN ({listed})"


def _merge_file_rows(
    lake: str | Path,
    table: str,
    frame: pl.DataFrame,
    key: Iterable[str],
    source_files: list[str],
    storage_options: dict[str, str] | None,
) -> None:
    """One atomic MERGE: upsert ``frame`` on ``key``; drop the file's rows no longer present."""
    from deltalake import DeltaTable

    predicate = " AND ".join(f"s.{name} = t.{name}" for name in key)
    data = frame.to_arrow()

    def action() -> None:
        target = DeltaTable(table_uri(lake, table), storage_options=_options(lake, storage_options))
        (
            target.merge(data, predicate=predicate, source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(predicate=_file_predicate(source_files, "t."))
            .execute()
        )

    _retry_commit(action, f"merge {table} of {source_files[0]}")


def write_source(
    lake: str | Path,
    *,
    source: dict[str, Any],
    runs: pl.DataFrame,
    metrics: pl.DataFrame | Callable[[], pa.RecordBatchReader],
    quarantine: pl.DataFrame,
    partner_files: list[str] | None = None,
    storage_options: dict[str, str] | None = None,
) -> None:
    """Write one source file's validated rows into the lake, replacing that file's old rows.

    Parameters
    ----------
    lake
        Lake folder or URL (created when missing).
    source
        The ``sources`` row (``SOURCES_SCHEMA`` fields; ``source_file`` is the replacement key).
    runs, quarantine
        Frames in ``RUNS_SCHEMA`` / ``QUARANTINE_SCHEMA``.
    metrics
        A frame in ``METRICS_SCHEMA``, or a callable returning a fresh Arrow stream of it (large
        files are streamed to Delta without materialising them; retried on commit races).
    partner_files
        Further files read together with this one (RegMix's loss file next to its mixture
        file); their rows are replaced together.
    """
    ensure_lake(lake, storage_options=storage_options)
    files = [str(source["source_file"]), *(partner_files or [])]
    runs = conform(runs, RUNS_SCHEMA)
    elsewhere = run_ids_elsewhere(lake, files, storage_options=storage_options)
    if not elsewhere.isdisjoint(runs["run_id"].to_list()):
        if callable(metrics):
            metrics = pl.from_arrow(metrics().read_all())
        metrics_frame = conform(metrics, METRICS_SCHEMA)
        _merge_file_rows(lake, "metrics", metrics_frame, METRICS_KEY, files, storage_options)
        _merge_file_rows(lake, "runs", runs, ("run_id",), files, storage_options)
        rest = {"quarantine": quarantine, "sources": pl.DataFrame([source])}
    else:
        if isinstance(metrics, pl.DataFrame):
            metrics = conform(metrics, METRICS_SCHEMA).to_arrow()
        _replace_file_rows(lake, "metrics", metrics, files, storage_options)
        rest = {"runs": runs, "quarantine": quarantine, "sources": pl.DataFrame([source])}
    _replace_file_tables(lake, rest, files, storage_options)


def _replace_file_tables(
    lake: str | Path,
    frames: dict[str, pl.DataFrame],
    source_files: list[str],
    storage_options: dict[str, str] | None,
) -> None:
    """Replace the rows of ``source_files`` in each named table, in order (``sources`` last:
    its row marks the file as done)."""
    for table, frame in frames.items():
        rows = conform(frame, TABLES[table]).to_arrow()
        _replace_file_rows(lake, table, rows, source_files, storage_options)


def run_ids_elsewhere(
    lake: str | Path,
    source_files: list[str],
    *,
    storage_options: dict[str, str] | None = None,
) -> set[str]:
    """The run ids the lake holds from files other than ``source_files`` (empty for no lake)."""
    if not _exists(lake, "runs", storage_options):
        return set()
    frame = (
        pl.scan_delta(table_uri(lake, "runs"), storage_options=_options(lake, storage_options))
        .filter(~pl.col("source_file").is_in(source_files))
        .select("run_id")
        .collect()
    )
    return set(frame["run_id"].to_list())


def runs_from_other_files(
    lake: str | Path,
    source_files: list[str],
    run_ids: list[str],
    *,
    storage_options: dict[str, str] | None = None,
) -> pl.DataFrame:
    """The lake's rows of ``run_ids`` that came from files other than ``source_files``
    (``RUNS_SCHEMA``; empty for no lake): what a new file's runs must agree with."""
    if not run_ids or not _exists(lake, "runs", storage_options):
        return empty_frame(RUNS_SCHEMA)
    frame = (
        pl.scan_delta(table_uri(lake, "runs"), storage_options=storage_options)
        .filter(~pl.col("source_file").is_in(source_files) & pl.col("run_id").is_in(run_ids))
        .collect()
    )
    return conform(frame, RUNS_SCHEMA)


def write_streamed(
    lake: str | Path,
    *,
    metrics: Iterable[pl.DataFrame] | Iterable[Any],
    finish: Callable[[], tuple[dict[str, Any], pl.DataFrame, pl.DataFrame]],
    partner_files: list[str] | None = None,
    source_file: str,
    storage_options: dict[str, str] | None = None,
    written: bool = False,
) -> None:
    """Write a file's metrics straight from a stream of frames, then its runs, quarantine and
    source row. With ``written`` (a local lake only), ``metrics`` yields the ``AddAction`` of
    data files ``data_files`` has already written (in a thread of the caller's), to commit.

    In a local lake the frames are written once, as Parquet data files of the metrics table,
    and committed with the removal of the file's earlier data files in one Delta transaction
    (``_commit_data_files``); on an object store they are streamed to ``write_deltalake``. If
    the stream raises, nothing is committed (and the files written are deleted). Once it is
    consumed, ``finish()`` gives the ``sources`` row, the runs and the quarantine rows, each
    committed with the file's replace-where (the ``sources`` row last, marking the file done).
    """
    ensure_lake(lake, storage_options=storage_options)
    files = [source_file, *(partner_files or [])]
    if is_url(lake):
        batches = (
            batch
            for frame in metrics
            for batch in conform(frame, METRICS_SCHEMA).to_arrow().to_batches()
        )
        reader = pa.RecordBatchReader.from_batches(_arrow_schema(METRICS_SCHEMA), batches)
        _replace_file_rows(lake, "metrics", reader, files, storage_options)
    else:
        _replace_with_data_files(lake, metrics, files, written=written)
    source, runs, quarantine = finish()
    rest = {"runs": runs, "quarantine": quarantine, "sources": pl.DataFrame([source])}
    _replace_file_tables(lake, rest, files, storage_options)


# --------------------------------------------------------------------------- data files

DATA_FILE_ROWS = 250_000
"""Metric rows per Parquet data file of a streamed write: the frames held until a file is
written (~25 MB per file being read; two files are read at once, see ``data_files``). On the
4 GB bench 500k rows gave a peak RSS of 0.91-0.94 GB, 250k 0.87 GB and no slower."""

DATA_FILE_COMPRESSION = "snappy"
"""Codec of those data files (the Delta writers' default; ~25% less CPU than zstd)."""


def data_files(lake: str | Path, frames: Iterable[pl.DataFrame]) -> Iterator[Any]:
    """Write ``frames`` (``METRICS_SCHEMA``) as new Parquet data files of the local metrics
    table, ``DATA_FILE_ROWS`` rows each; yields each file's ``AddAction`` once it is written
    (nothing is committed: the consumer commits the actions or deletes the files with
    ``discard_data_file``). Run in a file's own stream thread, a file's Parquet encoding
    overlaps with the commits of the files before it, and its frames never wait in memory."""
    root = Path(table_uri(lake, "metrics"))
    pending: list[pl.DataFrame] = []
    rows = 0
    for frame in frames:
        if frame.height == 0:
            continue
        pending.append(conform(frame, METRICS_SCHEMA))
        rows += frame.height
        if rows >= DATA_FILE_ROWS:
            yield _write_data_file(root, pending)
            pending, rows = [], 0
    if pending:
        yield _write_data_file(root, pending)


def discard_data_file(lake: str | Path, action: Any) -> None:
    """Delete a data file ``data_files`` wrote that will not be committed."""
    (Path(table_uri(lake, "metrics")) / action.path).unlink(missing_ok=True)


def _replace_with_data_files(
    lake: str | Path, frames: Iterable[Any], files: list[str], *, written: bool = False
) -> None:
    """Write ``frames`` as data files of the local metrics table (``data_files``; with
    ``written``, ``frames`` already yields their ``AddAction``), then commit them replacing the
    rows of ``files`` (one transaction; retried against the new version on a lost race).

    Each frame is encoded once, by polars' Parquet writer, instead of being handed to the Delta
    writer as Arrow (which re-encodes it at ~2.5x the CPU). When an earlier data file mixes
    these files' rows with other files' (a MERGE wrote it), only a row-level rewrite can remove
    them: the new data files are then streamed through ``_replace_file_rows`` instead. Data
    files that end up in no commit are deleted.
    """
    root = Path(table_uri(lake, "metrics"))
    added: list[Any] = []
    committed = False
    try:
        for action in frames if written else data_files(lake, frames):
            added.append(action)
        committed = _retry_commit(
            lambda: _commit_data_files(root, added, files), f"metrics of {files[0]}"
        )
        if not committed:
            paths = [str(root / action.path) for action in added]
            _replace_file_rows(lake, "metrics", lambda: _parquet_reader(paths), files, None)
    finally:
        if not committed:
            for action in added:
                discard_data_file(lake, action)


def _write_data_file(root: Path, frames: list[pl.DataFrame]) -> Any:
    """Write ``frames`` (``METRICS_SCHEMA``) as one new Parquet file under the table's root;
    returns its Delta ``AddAction`` (not committed yet)."""
    from deltalake.transaction import AddAction

    name = f"part-00000-{uuid.uuid4()}-c000.{DATA_FILE_COMPRESSION}.parquet"
    frame = pl.concat(frames, rechunk=False) if len(frames) > 1 else frames[0]
    path = root / name
    frame.write_parquet(path, compression=DATA_FILE_COMPRESSION)
    stat = path.stat()
    return AddAction(
        path=name,
        size=stat.st_size,
        partition_values={},
        modification_time=stat.st_mtime_ns // 1_000_000,
        data_change=True,
        stats=file_statistics(frame, path),
    )


EXACT_STATISTICS = ("source_file",)
"""Columns whose data-file statistics are computed from the rows, not taken from the Parquet
footer: ``_commit_data_files`` needs a file's exact ``source_file`` range (the footer may hold a
truncated prefix of a long path)."""


def file_statistics(frame: pl.DataFrame, path: Path) -> str:
    """A data file's Delta statistics (``numRecords``, per-column ``minValues``, ``maxValues``
    and ``nullCount``) as the JSON the transaction log stores; readers skip files by them and
    ``_commit_data_files`` finds a source file's data files by them.

    The minima and maxima are those polars wrote into the file's Parquet footer (one pass less
    over the rows: ~0.03 CPU-s per 125 MB of log); they are bounds, as Delta requires (a long
    string is a truncated prefix), except ``EXACT_STATISTICS``, computed from the rows.
    """
    import pyarrow.parquet as pq

    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    unknown: set[str] = set(EXACT_STATISTICS)
    metadata = pq.read_metadata(path)
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for position in range(group.num_columns):
            column = group.column(position)
            name, statistics = column.path_in_schema, column.statistics
            if name in unknown:
                continue
            if statistics is None or not statistics.has_min_max:
                continue  # a row group without values of this column (all null)
            try:
                least, most = statistics.min, statistics.max
            except UnicodeDecodeError:  # a truncated bound cut inside a character: no bounds
                unknown.add(name)
                low.pop(name, None)
                high.pop(name, None)
                continue
            low[name] = min(low.get(name, least), least)
            high[name] = max(high.get(name, most), most)
    exact = [c for c in EXACT_STATISTICS if c in frame.columns]
    if exact:
        bounds = frame.select(
            *[pl.col(c).min().alias(f"min/{c}") for c in exact],
            *[pl.col(c).max().alias(f"max/{c}") for c in exact],
        ).row(0)
        for name, least, most in zip(
            exact, bounds[: len(exact)], bounds[len(exact) :], strict=True
        ):
            if least is not None:
                low[name], high[name] = least, most
    return json.dumps(
        {
            "numRecords": frame.height,
            "minValues": {c: low[c] for c in frame.columns if c in low},
            "maxValues": {c: high[c] for c in frame.columns if c in high},
            "nullCount": {c: frame[c].null_count() for c in frame.columns},
        }
    )


def _commit_data_files(root: Path, added: list[Any], files: list[str]) -> bool:
    """Commit ``added`` with the removal of every data file holding only rows of ``files``.

    Returns False (nothing committed) when some data file may hold rows of ``files`` mixed with
    other rows, or has no statistics to tell: its rows need a row-level rewrite.
    """
    from deltalake import DeltaTable
    from deltalake.transaction import RemoveAction

    table = DeltaTable(str(root))
    existing = pl.DataFrame(table.get_add_actions(flatten=True))
    removed: list[Any] = []
    if existing.height:
        low, high = "min.source_file", "max.source_file"
        if low not in existing.columns or high not in existing.columns:
            return False
        lo, hi = pl.col(low), pl.col(high)
        nulls = (
            pl.col("null_count.source_file")
            if "null_count.source_file" in existing.columns
            else pl.lit(None, pl.Int64)
        )
        only_these = (lo == hi) & lo.is_in(files) & (nulls.fill_null(1) == 0)
        may_hold = lo.is_null() | hi.is_null()
        for name in files:
            may_hold = may_hold | ((lo <= name) & (hi >= name))
        rows = pl.col("num_records").fill_null(1) > 0
        if existing.filter(~only_these.fill_null(False) & may_hold & rows).height:
            return False
        now = int(time.time() * 1000)
        removed = [
            RemoveAction(path=path, data_change=True, deletion_timestamp=now, size=size)
            for path, size in existing.filter(only_these.fill_null(False))
            .select("path", "size_bytes")
            .iter_rows()
        ]
    if added or removed:
        table.create_write_transaction([*added, *removed], mode="append", schema=table.schema())
    return True


def _parquet_reader(paths: list[str]) -> pa.RecordBatchReader:
    """A fresh Arrow stream of Parquet files' rows (``METRICS_SCHEMA``)."""
    import pyarrow.dataset as pads

    if not paths:
        return pa.RecordBatchReader.from_batches(_arrow_schema(METRICS_SCHEMA), [])
    return pads.dataset(paths, format="parquet").scanner(batch_size=262_144).to_reader()
