"""Readers: every supported run-log format, format detection, and parse -> validate of one file.

``FORMATS`` names every reader; ``detect_format`` picks one from a file's name and first bytes;
``parse_source`` runs a reader and the row-level checks, streaming good metric rows into a
staging Parquet file; ``validate_source`` runs the whole-file checks (runs, duplicates, rows of
rejected runs) and hands back what the lake should store. Nothing here writes outside the
staging folder it is given, and raw files are only ever opened for reading.

Bringing a new format
---------------------
* Raw dumps whose file paths or columns encode run facts (size, mixture, step, domain): declare
  a mapping, no code. Add a TOML file to ``data/mappings/`` (see ``planning.mappings`` for the
  keys); its ``files`` globs make detection pick it, and ``--format mapping:<name>`` forces it.
* A table or log with its own column names: write a reader ``read_<name>(path) ->
  ReaderOutput`` (see ``planning.readers.base``: ``read_text_table`` to parse, ``run_rows`` for
  the runs, one metrics row per loss), add it to ``FORMATS``, and, for a CSV, its identifying
  header columns to ``CSV_SIGNATURES`` so ``detect_format`` finds it.
* Or rename the columns to mixplan's own (``run_id``, ``step``, ``loss``, ...): the canonical
  readers take JSONL, CSV and Parquet as they are.

A file that nothing recognises is not an error: it is recorded as one ``unknown_format``
quarantine row whose message names what was seen and these three ways forward.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from mixplan.planning.errors import RunLogError
from mixplan.planning.mappings import Mapping, find_mapping, load_mappings, read_mapped
from mixplan.planning.readers.base import Chunk, ReaderOutput, prefetch
from mixplan.planning.readers.canonical import (
    read_canonical_csv,
    read_canonical_json,
    read_canonical_jsonl,
    read_canonical_parquet,
)
from mixplan.planning.readers.hf_trainer import read_hf_trainer
from mixplan.planning.readers.lm_eval import looks_like as is_lm_eval
from mixplan.planning.readers.lm_eval import read_lm_eval
from mixplan.planning.readers.rawfile import changed_while_read as changed_while_read
from mixplan.planning.readers.rawfile import inner_path, open_text
from mixplan.planning.readers.regmix import mixture_file_of, partner_loss_file, read_regmix
from mixplan.planning.readers.tables import (
    read_datablations,
    read_epoch_chinchilla,
    read_sardana,
    read_steplaw,
    read_tao_vocab,
)
from mixplan.planning.readers.tensorboard import is_event_file, read_tensorboard
from mixplan.planning.readers.wandb import SIGNATURE as WANDB_SIGNATURE
from mixplan.planning.readers.wandb import is_wandb_csv, read_wandb, read_wandb_csv
from mixplan.planning.schema import (
    METRICS_KEY,
    METRICS_SCHEMA,
    QUARANTINE_SCHEMA,
    RUNS_SCHEMA,
    conform,
)
from mixplan.planning.validation import (
    duplicate_split,
    file_problem,
    normalise_mixture,
    run_conflicts,
    split_by_checks,
    validate_metrics,
    validate_runs,
)

Reader = Callable[[Path], ReaderOutput]

FORMATS: dict[str, tuple[Reader, str]] = {
    "jsonl": (read_canonical_jsonl, "canonical per-step JSONL (mixplan column names)"),
    "csv": (read_canonical_csv, "canonical CSV (mixplan column names)"),
    "json": (read_canonical_json, "canonical JSON document: array of records, object of arrays"),
    "parquet": (read_canonical_parquet, "canonical Parquet (mixplan column names)"),
    "wandb": (read_wandb, "W&B history export, one JSON object per checkpoint (Gemstones)"),
    "wandb-csv": (read_wandb_csv, "W&B chart CSV export (Step, '<run> - <metric>' columns)"),
    "hf-trainer": (read_hf_trainer, "Hugging Face Trainer trainer_state.json (log_history)"),
    "tensorboard": (read_tensorboard, "TensorBoard event file (scalar loss tags)"),
    "lm-eval": (read_lm_eval, "lm-evaluation-harness results JSON (downstream metrics)"),
    "epoch-chinchilla": (read_epoch_chinchilla, "Epoch AI's Chinchilla CSV (N, C, loss)"),
    "datablations": (read_datablations, "datablations runs table (N, D, U, val_loss)"),
    "sardana": (read_sardana, "Sardana et al. training results (beyond-chinchilla)"),
    "steplaw": (read_steplaw, "StepLaw learning-rate / batch-size sweep"),
    "tao-vocab": (read_tao_vocab, "Tao et al. vocabulary sweep (Lossu, unigram-normalised)"),
    "regmix": (read_regmix, "RegMix mixture table + partner per-domain loss table"),
}
"""Format name -> (reader, one-line description). ``mapping:<name>`` selects a declared mapping."""

CSV_SIGNATURES: list[tuple[str, set[str]]] = [
    ("epoch-chinchilla", {"Model Size", "Training FLOP", "loss"}),
    ("datablations", {"params_N", "tokens_D", "unique_tokens_U", "val_loss"}),
    ("sardana", {"Model Name", "Parameters", "Tokens/Params", "Smoothed Loss"}),
    ("steplaw", {"lr", "bs", "ti", "smooth loss", "N", "D"}),
    ("tao-vocab", {"vocab_size", "embed_dim", "num_characters", "Non_vocab_parameters", "Lossu"}),
    ("canonical", {"run_id"}),
]
"""Header columns that identify each table format (checked in order)."""

LOG_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt", ".log"}
"""File suffixes that discovery considers run logs (others are ignored, e.g. ``.md``), also
inside a ``.gz`` / ``.zst`` / ``.bz2`` container; TensorBoard event files are found by name."""

PARTNER_FORMAT = "partner"
"""Pseudo-format of a file that is read together with another (RegMix loss file)."""


def _head(path: Path, limit: int = 65_536) -> str:
    """The first ``limit`` bytes of the file's text (decompressed and decoded, see ``rawfile``)."""
    blocks = open_text(path).blocks(limit)
    try:
        head = next(blocks, b"")
    finally:
        blocks.close()
    return head[:limit].decode("utf-8", "replace")


def _first_line(path: Path) -> str:
    for line in _head(path).splitlines():
        if line.strip():
            return line.strip()
    return ""


def is_log_file(path: Path) -> bool:
    """Whether discovery considers ``path`` a run log (by its inner suffix or its name)."""
    return inner_path(path).suffix.lower() in LOG_SUFFIXES or is_event_file(path)


def _json_format(path: Path, head: str) -> str:
    """The format of a ``.json``/``.jsonl`` file from its first text (see ``detect_format``)."""
    text = head.lstrip()
    first = text.splitlines()[0] if text else ""
    try:
        record = json.loads(first)
    except (ValueError, TypeError):
        record = None
    columnar = isinstance(record, dict) and any(
        isinstance(v, list) for k, v in record.items() if k != "mixture"
    )
    if isinstance(record, dict) and not columnar:  # one object per line: JSONL
        if set(record) >= WANDB_SIGNATURE and "run_id" not in record:
            return "wandb"
        if "log_history" in record:
            return "hf-trainer"
        if is_lm_eval(record):
            return "lm-eval"
        return "jsonl"
    if text.startswith("{"):  # a pretty-printed document (or one object of arrays)
        if re.search(r'^\s*"log_history"\s*:', text, re.MULTILINE):
            return "hf-trainer"
        if re.search(r'^\s{0,4}"results"\s*:', text, re.MULTILINE):
            return "lm-eval"
        return "json"
    if text.startswith("["):
        return "json"
    return "jsonl"  # malformed first line: let the JSONL reader quarantine it


def detect_format(path: Path, *, mappings: list[Mapping] | None = None) -> str | None:
    """The format of ``path`` from its name and first text, or None when none fits.

    Containers (``.gz``, ``.zst``, ``.bz2``) are looked through: the inner name and the
    decompressed, decoded text decide. Tried in this order:

    1. declared mappings (their ``files`` globs): ``mapping:<name>``, or ``"ignore"`` for a
       file the mapping excludes (``proportions.txt``);
    2. TensorBoard event files (``events.out.tfevents.*``): ``tensorboard``;
    3. ``.parquet``: canonical Parquet;
    4. ``.jsonl`` / ``.ndjson`` / ``.json``: one object per line is ``wandb`` when the first
       record has the W&B keys (``wandb.SIGNATURE``) and no ``run_id``, else canonical JSONL;
       a pretty-printed document is ``hf-trainer`` with a ``log_history``, ``lm-eval`` with
       ``results``, else canonical ``json`` (an array of records or an object of arrays);
    5. ``.csv`` / ``.tsv`` by header: RegMix (``index`` + ``train_*`` columns), ``"partner"``
       for a RegMix loss file (``index`` + ``metric/*``; read by its mixture file's reader),
       a W&B UI export (``Step`` + ``<run> - <metric>`` columns), then the first of
       ``CSV_SIGNATURES`` whose columns are all present.

    None means no reader fits; ``unrecognised(path)`` says why and what to do.
    """
    mapping = find_mapping(path, mappings if mappings is not None else load_mappings())
    if mapping is not None:
        return "ignore" if mapping.excludes(path) else f"mapping:{mapping.name}"
    if is_event_file(path):
        return "tensorboard"
    suffix = inner_path(path).suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    try:
        head = _head(path)
    except (OSError, EOFError, ValueError):
        return None
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return _json_format(path, head)
    if suffix in {".csv", ".tsv"}:
        first = next((line.strip() for line in head.splitlines() if line.strip()), "")
        header = {c.strip().strip('"') for c in first.split("\t" if suffix == ".tsv" else ",")}
        if "index" in header and any(c.startswith("train_") for c in header):
            return "regmix"
        if "index" in header and any(c.startswith("metric/") for c in header):
            return PARTNER_FORMAT
        if is_wandb_csv(header):
            return "wandb-csv"
        for name, signature in CSV_SIGNATURES:
            if signature <= header:
                return "csv" if name == "canonical" else name
        return None
    return None


def unrecognised(path: Path) -> str:
    """Why ``detect_format`` found no reader for ``path``, and what the user can do."""
    suffix = inner_path(path).suffix.lower()
    if suffix in {".csv", ".tsv"}:
        try:
            header = _first_line(path)
        except (OSError, EOFError, ValueError):
            header = ""
        seen = f"its header is {header[:120]!r}"
    else:  # JSONL and Parquet always have a reader (the canonical one)
        seen = f"no reader handles {suffix or 'files without a suffix'}"
    return (
        f"no reader recognises {path.name} ({seen}). Force one with --format "
        f"({', '.join(FORMATS)}, mapping:<name>), declare a mapping in data/mappings/*.toml "
        "for a raw dump, or name the columns as mixplan does (run_id, step, loss, ...)"
    )


def partner_of(path: Path, format_name: str) -> Path | None:
    """The file whose reader consumes ``path`` (RegMix loss file -> its mixture file)."""
    if format_name != PARTNER_FORMAT:
        return None
    return mixture_file_of(path)


def read_together(path: Path, format_name: str) -> list[Path]:
    """The other existing files that the reader of ``format_name`` reads with ``path``."""
    if format_name != "regmix":
        return []
    loss = partner_loss_file(path)
    return [loss] if loss.exists() else []


def reader_for(format_name: str, *, mappings: list[Mapping] | None = None) -> Reader:
    """The reader of a format name (``FORMATS`` key or ``mapping:<name>``)."""
    if format_name.startswith("mapping:"):
        wanted = format_name.split(":", 1)[1]
        for mapping in mappings if mappings is not None else load_mappings():
            if mapping.name == wanted:
                return lambda path, m=mapping: read_mapped(path, m)
        raise RunLogError(f"no declared mapping named {wanted!r} (see data/mappings/*.toml)")
    if format_name not in FORMATS:
        known = ", ".join([*FORMATS, "mapping:<name>"])
        raise RunLogError(f"unknown format {format_name!r}; known formats: {known}")
    return FORMATS[format_name][0]


# --------------------------------------------------------------------------- parse -> validate


@dataclass
class ParsedSource:
    """One file after parsing and row-level checks; metric rows are staged in Parquet."""

    source_file: str
    format: str
    staged: list[Path]
    runs: pl.DataFrame
    quarantine: pl.DataFrame
    partner_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mixture_tolerance: float = 1e-3
    normalise_mixture: bool = False
    staged_rows: int = 0
    content_hash: str = ""
    """The file's content hash from the reader's own reads ("" if it gave none, see
    ``ReaderOutput.content_hash``)."""


@dataclass
class ValidatedSource:
    """What the lake stores for one file: runs, metrics (staged Parquet), quarantine, counts."""

    source_file: str
    format: str
    runs: pl.DataFrame
    metric_files: list[Path]
    quarantine: pl.DataFrame
    metric_rows: int
    partner_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    content_hash: str = ""
    """As ``ParsedSource.content_hash``."""

    def metrics(self) -> pa.RecordBatchReader:
        """A fresh stream of the accepted metric rows (call again to re-read, e.g. on retry)."""
        if not self.metric_files:
            return pa.RecordBatchReader.from_batches(_METRICS_ARROW, [])
        import pyarrow.dataset as pads  # lazy: ~0.3 s of import the streamed path never needs

        dataset = pads.dataset([str(p) for p in self.metric_files], format="parquet")
        return dataset.scanner(batch_size=262_144).to_reader()


def _combine_runs(fragments: list[pl.DataFrame]) -> pl.DataFrame:
    fragments = [f for f in fragments if f.height]
    if not fragments:
        return conform(pl.DataFrame(), RUNS_SCHEMA)
    frame = pl.concat([conform(f, RUNS_SCHEMA) for f in fragments], how="vertical")
    columns = [c for c in RUNS_SCHEMA if c != "run_id"]
    aggs = [pl.col(c).first(ignore_nulls=True) for c in columns if c != "source_line"]
    aggs.append(pl.col("source_line").min())
    combined = frame.group_by("run_id", maintain_order=True).agg(aggs)
    return conform(combined, RUNS_SCHEMA)


def parse_source(
    path: str | Path,
    *,
    format: str | None = None,
    staging_dir: str | Path,
    mappings: list[Mapping] | None = None,
) -> ParsedSource:
    """Parse one file and run the row-level checks, staging good metric rows as Parquet.

    Parameters
    ----------
    path
        The raw file (opened read-only).
    format
        A ``FORMATS`` name or ``mapping:<name>``; detected when None.
    staging_dir
        Folder for the staged Parquet file (the caller removes it).

    Raises
    ------
    RunLogError
        When ``format`` is unknown. A file no reader recognises is not an error: it comes back
        with one ``unknown_format`` quarantine row.
    """
    path = Path(path)
    source_file = str(path)
    problem = _file_problem(path)
    if problem is not None:
        return ParsedSource(
            source_file=source_file,
            format=format or "unknown",
            staged=[],
            runs=conform(pl.DataFrame(), RUNS_SCHEMA),
            quarantine=problem,
        )
    name = format or detect_format(path, mappings=mappings)
    if name is None:
        return ParsedSource(
            source_file=source_file,
            format="unknown",
            staged=[],
            runs=conform(pl.DataFrame(), RUNS_SCHEMA),
            quarantine=file_problem(source_file, "unknown_format", unrecognised(path)),
        )
    output = reader_for(name, mappings=mappings)(path)
    staging = Path(staging_dir) / f"{uuid.uuid4().hex}.parquet"
    staging.parent.mkdir(parents=True, exist_ok=True)
    arrow_schema = conform(pl.DataFrame(), METRICS_SCHEMA).to_arrow().schema
    import pyarrow.parquet as pq  # lazy, as above

    writer: pq.ParquetWriter | None = None
    fragments: list[pl.DataFrame] = []
    quarantines: list[pl.DataFrame] = []
    staged_rows = 0
    try:
        for chunk in output.chunks:
            assert isinstance(chunk, Chunk)
            quarantines.append(conform(chunk.quarantine, QUARANTINE_SCHEMA))
            fragments.append(chunk.runs)
            if chunk.metrics.height == 0:
                continue
            good, bad = validate_metrics(
                conform_metrics(chunk.metrics), source_file=source_file_of(chunk.metrics, path)
            )
            quarantines.append(bad)
            if good.height == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(staging, arrow_schema, compression="lz4")
            writer.write_table(conform(good, METRICS_SCHEMA).to_arrow())
            staged_rows += good.height
    finally:
        if writer is not None:
            writer.close()
    quarantine = (
        pl.concat(quarantines) if quarantines else conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    )
    return ParsedSource(
        source_file=source_file,
        format=name,
        staged=[staging] if writer is not None else [],
        runs=_combine_runs(fragments),
        quarantine=quarantine,
        partner_files=output.partner_files,
        warnings=output.warnings,
        mixture_tolerance=output.mixture_tolerance,
        normalise_mixture=output.normalise_mixture,
        staged_rows=staged_rows,
        content_hash=output.content_hash,
    )


def _file_problem(path: Path) -> pl.DataFrame | None:
    """A quarantine row when ``path`` is missing, unreadable or empty, else None."""
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        return file_problem(str(path), "unreadable_file", f"{type(error).__name__}: {error}")
    if empty:
        return file_problem(str(path), "empty_file", "the file is empty (0 bytes)")
    return None


def source_file_of(metrics: pl.DataFrame, path: Path) -> str:
    """The file named in a metrics chunk's quarantine rows (a partner file for RegMix)."""
    if "source_file" in metrics.columns and metrics.height:
        value = metrics["source_file"][0]
        if value:
            return str(value)
    return str(path)


def conform_metrics(metrics: pl.DataFrame) -> pl.DataFrame:
    """``METRICS_SCHEMA`` columns plus ``_record`` when the reader kept the raw text; a missing
    ``loss_kind`` is ``"nats"`` (it is part of the metrics key, so never null)."""
    frame = conform(metrics, METRICS_SCHEMA)
    if frame["loss_kind"].null_count():  # a copy of the column only when one is missing
        frame = frame.with_columns(pl.col("loss_kind").fill_null("nats"))
    if "_record" in metrics.columns:
        frame = frame.with_columns(metrics["_record"].cast(pl.String))
    return frame


def validate_source(
    parsed: ParsedSource,
    *,
    staging_dir: str | Path,
    existing_runs: pl.DataFrame | None = None,
) -> ValidatedSource:
    """Whole-file checks: runs, rows of rejected runs, duplicate keys. Streams the metrics.

    ``existing_runs`` are the lake's runs of the same ids from other files (``RUNS_SCHEMA``):
    a run whose facts differ from them is a ``conflict`` (see ``validation.run_conflicts``).
    """
    staging_dir = Path(staging_dir)
    source_file = parsed.source_file
    runs, q_runs = validate_runs(
        parsed.runs, source_file=source_file, mixture_tolerance=parsed.mixture_tolerance
    )
    if existing_runs is not None and existing_runs.height:
        runs, q_conflicts = run_conflicts(runs, existing_runs, source_file=source_file)
        q_runs = pl.concat([q_runs, q_conflicts])
    if parsed.normalise_mixture:
        runs = normalise_mixture(runs)
    rejected = sorted(set(parsed.runs["run_id"].drop_nulls()) - set(runs["run_id"]))
    quarantines = [parsed.quarantine, q_runs]
    staged = list(parsed.staged)
    metric_rows = parsed.staged_rows
    if staged:
        scan = pl.scan_parquet(staged)
        key_hash = pl.struct(list(METRICS_KEY)).hash(seed=0)
        dup_hashes = (
            scan.select(key_hash.alias("_h"))
            .filter(pl.col("_h").is_duplicated())
            .unique()
            .collect()["_h"]
        )
        keep = pl.lit(True)
        extra: list[pl.DataFrame] = []
        if rejected:
            orphans = scan.filter(pl.col("run_id").is_in(rejected)).collect()
            _, q_orphans = split_by_checks(
                orphans,
                [(pl.lit(True), "run_id", "run_rejected")],
                source_file=source_file,
            )
            quarantines.append(q_orphans)
            keep = keep & ~pl.col("run_id").is_in(rejected)
        if dup_hashes.len():
            hashes = dup_hashes.to_list()
            duplicates = scan.filter(key_hash.is_in(hashes) & keep).collect().sort("source_line")
            good_dups, q_dups = duplicate_split(duplicates, source_file=source_file)
            quarantines.append(q_dups)
            extra.append(good_dups)
            keep = keep & ~key_hash.is_in(hashes)
        if rejected or dup_hashes.len():
            filtered = staging_dir / f"{uuid.uuid4().hex}.parquet"
            scan.filter(keep).sink_parquet(filtered)
            staged = [filtered]
            for frame in extra:
                if frame.height:
                    path = staging_dir / f"{uuid.uuid4().hex}.parquet"
                    conform(frame, METRICS_SCHEMA).write_parquet(path)
                    staged.append(path)
            import pyarrow.parquet as pq

            metric_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in staged)
    return ValidatedSource(
        source_file=source_file,
        format=parsed.format,
        runs=runs,
        metric_files=staged,
        quarantine=pl.concat([conform(q, QUARANTINE_SCHEMA) for q in quarantines]),
        metric_rows=metric_rows,
        partner_files=parsed.partner_files,
        warnings=parsed.warnings,
        content_hash=parsed.content_hash,
    )


def step_ranges(metrics: pl.DataFrame, group: list[str]) -> tuple[pl.DataFrame, bool]:
    """Each series' first and last step in ``metrics`` (``group`` columns, ``_min``, ``_max``)
    and whether some step repeats inside a series (``group`` = run, split, domain, loss kind).

    Logs are written in step order, one series after another: each series' rows then form one
    block whose steps strictly increase, so a comparison with the previous row finds the
    blocks and their first and last rows give the range, with no repeat possible (~3x less
    CPU than a grouped min, max and n_unique). Rows in any other order (series interleaved, a
    step going back, a null step) take the grouped aggregation.
    """
    # null equals null, as in the grouping; column by column: ~30% cheaper than a struct
    start = pl.any_horizontal([pl.col(c).ne_missing(pl.col(c).shift()) for c in group])
    marked = metrics.select(*group, "step", start.alias("_start"))
    in_order = marked.select(
        ((pl.col("step") > pl.col("step").shift()) | pl.col("_start")).fill_null(False).all()
    ).item()
    if in_order:
        starts = marked.filter(pl.col("_start"))
        if starts.select(pl.struct(group).is_unique().all()).item():
            ends = marked.filter(pl.col("_start").shift(-1).fill_null(True))["step"]
            ranges = starts.select(*group, pl.col("step").alias("_min"))
            return ranges.with_columns(ends.alias("_max")), False
    ranges = metrics.group_by(group).agg(
        pl.col("step").min().alias("_min"),
        pl.col("step").max().alias("_max"),
        (pl.len() - pl.col("step").n_unique()).alias("_repeats"),
    )
    return ranges.drop("_repeats"), bool(ranges["_repeats"].sum())


class Restage(Exception):  # noqa: N818 - a signal, not an error
    """The streamed path cannot finish a file alone; the caller re-reads it through staging."""


@dataclass
class StreamedSource:
    """A file read on the streamed path: metrics arrive as frames, the rest afterwards.

    Consuming ``metrics`` may raise ``Restage`` (a duplicate key across chunks, a rejected
    run, or ``before_end`` objecting): the consumer must then discard what it wrote (commit
    nothing, delete its uncommitted data files) and use the staged path.
    """

    source_file: str
    format: str
    metrics: Iterator[pl.DataFrame]
    """Validated metric rows (``METRICS_SCHEMA``), one frame per chunk (consumed once)."""
    runs: pl.DataFrame = field(default_factory=lambda: conform(pl.DataFrame(), RUNS_SCHEMA))
    quarantine: pl.DataFrame = field(
        default_factory=lambda: conform(pl.DataFrame(), QUARANTINE_SCHEMA)
    )
    metric_rows: int = 0
    partner_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    restaged: str = ""
    content_hash: str = ""
    """As ``ParsedSource.content_hash`` (set once ``metrics`` is consumed)."""


def stream_source(
    path: str | Path,
    *,
    format: str | None = None,
    mappings: list[Mapping] | None = None,
    before_end: Callable[[pl.DataFrame], None] | None = None,
) -> StreamedSource:
    """Parse and validate one file chunk by chunk, yielding one validated metrics frame per chunk.

    The same checks as ``parse_source`` + ``validate_source``, without a staging copy: it holds
    while every run passes its checks and each (run, split, domain) has its steps in increasing
    order across chunks (so no key can repeat across chunks). Otherwise consuming ``metrics``
    raises ``Restage``. ``before_end(runs)`` is called after the last chunk and may raise
    ``Restage`` too (the lake uses it when the file's runs already come from another file).
    """
    path = Path(path)
    source_file = str(path)
    if _file_problem(path) is not None:
        raise Restage("missing, unreadable or empty file")
    name = format or detect_format(path, mappings=mappings)
    if name is None:
        raise Restage("format not recognised")
    output = reader_for(name, mappings=mappings)(path)
    result = StreamedSource(
        source_file=source_file,
        format=name,
        metrics=iter(()),
        partner_files=output.partner_files,
        warnings=output.warnings,
    )
    group = ["run_id", "split", "domain", "loss_kind"]

    def batches():
        fragments: list[pl.DataFrame] = []
        quarantines: list[pl.DataFrame] = []
        last_steps: pl.DataFrame | None = None
        rows = 0
        for chunk in prefetch(output.chunks):
            quarantines.append(conform(chunk.quarantine, QUARANTINE_SCHEMA))
            if chunk.runs.height:
                fragments.append(chunk.runs)
            if chunk.metrics.height == 0:
                continue
            good, bad = validate_metrics(
                conform_metrics(chunk.metrics), source_file=source_file_of(chunk.metrics, path)
            )
            quarantines.append(bad)
            steps, repeats = step_ranges(good, group)
            if repeats:
                good, q_dups = duplicate_split(good, source_file=source_file)
                quarantines.append(q_dups)
            if good.height == 0:
                continue
            if last_steps is not None:
                clash = steps.join(last_steps, on=group, how="inner").filter(
                    pl.col("_min") <= pl.col("_last")
                )
                if clash.height:
                    result.restaged = "steps repeat across chunks"
                    raise Restage(result.restaged)
                last_steps = (
                    pl.concat([last_steps, steps.select(*group, pl.col("_max").alias("_last"))])
                    .group_by(group)
                    .agg(pl.col("_last").max())
                )
            else:
                last_steps = steps.select(*group, pl.col("_max").alias("_last"))
            rows += good.height
            yield conform(good, METRICS_SCHEMA)
        runs = _combine_runs(fragments)  # checked once, as the staged path does
        _, bad_runs = validate_runs(
            runs, source_file=source_file, mixture_tolerance=output.mixture_tolerance
        )
        if bad_runs.height:
            result.restaged = "a run failed validation"
            raise Restage(result.restaged)
        if output.normalise_mixture:
            runs = normalise_mixture(runs)
        if before_end is not None:
            try:
                before_end(runs)
            except Restage as signal:
                result.restaged = str(signal)
                raise
        result.runs = runs
        result.quarantine = pl.concat(quarantines) if quarantines else result.quarantine
        result.metric_rows = rows
        result.content_hash = output.content_hash

    result.metrics = batches()
    return result


_METRICS_ARROW = conform(pl.DataFrame(), METRICS_SCHEMA).to_arrow().schema
