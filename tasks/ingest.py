"""Ingest: discover -> parse -> validate -> write, as plain functions and as Prefect tasks.

``ingest_paths`` is the whole ingest as one plain function (the CLI calls it); the Prefect flow
``flows.ingest.ingest`` runs the same four steps as tasks (``discover_task``, ``parse_task``,
``validate_task``, ``write_task``). Both produce the same ``IngestReport``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mixplan.planning.mappings import Mapping, load_mappings
from mixplan.planning.readers import (
    PARTNER_FORMAT,
    ParsedSource,
    Restage,
    StreamedSource,
    ValidatedSource,
    changed_while_read,
    detect_format,
    is_log_file,
    parse_source,
    partner_of,
    rawfile,
    read_together,
    stream_source,
    validate_source,
)
from mixplan.planning.validation import now_utc
from mixplan.tasks.lake import (
    data_files,
    discard_data_file,
    ensure_lake,
    is_url,
    lake_summary,
    run_ids_elsewhere,
    runs_from_other_files,
    source_hashes,
    write_source,
    write_streamed,
)


@dataclass
class SourcePlan:
    """One file discovery found: its path, format, content hash and what to do with it."""

    path: str
    format: str | None
    content_hash: str
    """``<algorithm>:<hex>`` (see ``content_hash``; "" until hashed)."""
    size_bytes: int
    action: str
    """``"ingest"``, ``"unchanged"`` (same hash as in the lake) or ``"ignored"``."""
    partner_files: list[str] = field(default_factory=list)
    note: str = ""
    hash_from_read: bool = False
    """The hash is taken from the reader's own reads when the file is ingested (a new file of
    ``HASHED_WHILE_READ``, see ``settle``); ``content_hash`` stays "" until then."""
    mtime_ns: int = 0
    """Modification time when planned (with ``size_bytes``: whether the file changed since)."""


@dataclass
class FileReport:
    """What happened to one file."""

    path: str
    format: str | None
    status: str
    """``"ingested"``, ``"unchanged"``, ``"ignored"`` or ``"rejected"`` (nothing usable)."""
    runs: int = 0
    metric_rows: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class IngestReport:
    """The outcome of one ingest: per-file reports plus the lake's summary afterwards."""

    lake: str
    files: list[FileReport]
    lake_summary: dict

    @property
    def usable(self) -> bool:
        """Whether anything usable was read (rows accepted, or files already in the lake)."""
        return any(
            (f.status == "ingested" and (f.runs or f.metric_rows)) or f.status == "unchanged"
            for f in self.files
        )

    def totals(self) -> dict:
        """Counts over the files of this ingest."""
        quarantined: dict[str, int] = {}
        for report in self.files:
            for reason, rows in report.quarantined.items():
                quarantined[reason] = quarantined.get(reason, 0) + rows
        status = [f.status for f in self.files]
        return {
            "files": len(self.files),
            "files_ingested": status.count("ingested"),
            "files_unchanged": status.count("unchanged"),
            "files_ignored": status.count("ignored"),
            "files_rejected": status.count("rejected"),
            "runs": sum(f.runs for f in self.files),
            "metric_rows": sum(f.metric_rows for f in self.files),
            "quarantined": dict(sorted(quarantined.items())),
            "quarantined_rows": sum(quarantined.values()),
        }

    def to_dict(self) -> dict:
        """A JSON-ready summary (what ``mixplan ingest --json`` prints and the flow returns)."""
        return {
            "lake": self.lake,
            "usable": self.usable,
            "totals": self.totals(),
            "files": [asdict(f) for f in self.files],
            "lake_summary": self.lake_summary,
        }


# --------------------------------------------------------------------------- write lock

_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def lake_write_lock(lake: str | Path) -> Iterator[None]:
    """Hold the lake's lock while an ingest decides and writes (one ingest at a time per lake).

    Two ingests of files sharing runs must not both decide "these runs are new" and each
    write them: the second must see the first one's commit and MERGE (or report a
    ``conflict``). Delta cannot see this race (the two writes replace different files' rows),
    so the ingest holds ``tasks.locking.lake_lock`` (an ``flock`` dropped by the kernel if the
    holder dies, or an S3 lease object) plus a lock per lake for threads of this process.
    Inside a pipeline run, which already holds the lake's lock in this process
    (``held_by_this_process``), only the thread lock is taken.
    """
    from mixplan.tasks.locking import held_by_this_process, lake_lock  # lazy: fsspec ~0.15 s

    key = str(lake)
    with _LOCAL_LOCKS_GUARD:
        local = _LOCAL_LOCKS.setdefault(key, threading.Lock())
    with local, contextlib.ExitStack() as stack:
        if not held_by_this_process(lake):
            stack.enter_context(lake_lock(lake))
        yield


# --------------------------------------------------------------------------- garbage collector


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist before the ingest out of the garbage collector's scans.

    An ingest allocates many short-lived Python objects (polars expressions, Arrow wrappers);
    each full collection then walks every object of the process (polars, pyarrow, deltalake:
    hundreds of thousands), holding the GIL while the parse, hash and write threads wait: ~7%
    of the CPU and far more of the wall time. ``gc.freeze`` moves the objects alive now into a
    permanent generation that collections skip; ``gc.unfreeze`` hands them back afterwards, so
    nothing leaks in a long-lived process (a Prefect worker) and garbage made during the ingest
    is collected as usual. Both calls are process-wide: two ingests in threads of one process
    stay correct, the one still running only loses the speed-up.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --------------------------------------------------------------------------- plain steps


HASH_ALGORITHM = rawfile.HASH_ALGORITHM
"""The content hash recorded for new files (see ``rawfile.HASH_ALGORITHM``). Lakes written
before hold bare sha256 hex digests: those are still recognised (``stored_algorithm``) and
compared by recomputing sha256, so re-ingesting an old lake stays idempotent."""

HASHED_WHILE_READ = ("jsonl",)
"""Formats whose reader hashes the bytes it reads (``ReaderOutput.content_hash``): a new file of
these is not read a second time just to be hashed (see ``settle``)."""

KNOWN_HASHES = ("xxh3_128", "sha256")
"""Content hashes ``content_hash`` computes (a recorded hash of another kind means "changed")."""

HASH_BLOCK = 1024 * 1024
"""Bytes hashed per read (a buffer that stays in the cache: ~20% less CPU than 4 MB reads)."""


def stored_algorithm(key: str) -> str | None:
    """The algorithm of a recorded content hash: the name before ``:``, ``"sha256"`` for a
    bare 64-digit hex digest (lakes written before), None for no hash (``""``)."""
    if ":" in key:
        return key.split(":", 1)[0]
    return "sha256" if len(key) == 64 else None


def content_hash(paths: Iterable[str | Path], algorithm: str = HASH_ALGORITHM) -> str:
    """The content hash of ``paths`` (in order) as recorded in ``sources.sha256``.

    ``xxh3_128`` gives ``"xxh3_128:<hex>"`` over each file's bytes followed by its length;
    ``"sha256"`` gives the bare hex digest of the bytes, as lakes written before recorded it.
    Files are read in blocks (never memory-mapped: a log truncated meanwhile must not kill the
    process; both hashes release the GIL).
    """
    if algorithm == HASH_ALGORITHM:
        digest = rawfile.ContentDigest()
    elif algorithm == "sha256":
        digest = hashlib.sha256()
    else:
        raise ValueError(f"unknown content hash {algorithm!r}; known: {', '.join(KNOWN_HASHES)}")
    buffer = bytearray(HASH_BLOCK)  # one buffer read into again and again (no new block per read)
    view = memoryview(buffer)
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while size := handle.readinto(buffer):
                digest.update(view[:size])
        if isinstance(digest, rawfile.ContentDigest):
            digest.end_file()
    return digest.hexdigest()


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_log_file(p))
        else:
            found.append(path)
    unique: dict[Path, None] = dict.fromkeys(found)
    return list(unique)


def discover(
    paths: Iterable[str | Path],
    lake: str | Path,
    *,
    format: str | None = None,
    mappings: list[Mapping] | None = None,
    storage_options: dict[str, str] | None = None,
    hash_now: bool = True,
) -> list[SourcePlan]:
    """Expand folders, detect formats, hash contents and decide which files need ingesting.

    A file whose content hash equals the one the lake recorded is ``"unchanged"``; a RegMix
    loss file is read with its mixture file (the pair is hashed together). With
    ``hash_now=False`` the hashes are left to the caller (``action == "pending"``; see
    ``settle``).
    """
    mappings = mappings if mappings is not None else load_mappings()
    known = source_hashes(lake, storage_options=storage_options)
    files = _expand(paths)
    listed = set(files)
    plans: list[SourcePlan] = []
    seen: set[Path] = set()
    for path in files:
        if not path.exists():
            plans.append(SourcePlan(str(path), None, "", 0, "ingest", note="missing"))
            continue
        name = format or detect_format(path, mappings=mappings)
        if name == PARTNER_FORMAT:
            main = partner_of(path, name)
            assert main is not None
            if main in listed:
                continue  # read with its main file
            if not main.exists():
                note = f"read only together with {main.name}, which is missing"
                plans.append(
                    SourcePlan(str(path), name, "", path.stat().st_size, "ignored", note=note)
                )
                continue
            path, name = main, detect_format(main, mappings=mappings)
        if path in seen:
            continue
        seen.add(path)
        if name == "ignore":
            plans.append(
                SourcePlan(str(path), name, "", path.stat().st_size, "ignored", note="not a log")
            )
            continue
        partners = [str(p) for p in read_together(path, name)] if name else []
        plan = SourcePlan(str(path), name, "", 0, "pending", partners)
        plans.append(settle(plan, known) if hash_now else plan)
    return plans


def settle(plan: SourcePlan, known: dict[str, str], *, hash_from_read: bool = False) -> SourcePlan:
    """Hash a pending plan's file(s) and decide: ``"unchanged"`` (the content hash the lake
    recorded for the path, in that hash's algorithm) or ``"ingest"``.

    With ``hash_from_read``, a file the lake has no hash for, of a format whose reader hashes
    what it reads (``HASHED_WHILE_READ``), is ingested without being hashed first: nothing
    recorded can make it unchanged, and its hash comes from the bytes its rows are read from
    (``hash_from_read`` is set on the plan; see ``recorded_hash``).
    """
    if plan.action != "pending":
        return plan
    files = [plan.path, *plan.partner_files]
    recorded = known.get(plan.path, "")
    try:
        stats = [os.stat(p) for p in files]
        plan.size_bytes = sum(stat.st_size for stat in stats)
        plan.mtime_ns = max(stat.st_mtime_ns for stat in stats)
        new = not recorded and not plan.partner_files
        if hash_from_read and new and plan.format in HASHED_WHILE_READ:
            plan.action, plan.hash_from_read = "ingest", True
            return plan
        plan.content_hash = content_hash(files)
        algorithm = stored_algorithm(recorded)
        if algorithm not in KNOWN_HASHES:  # none recorded, or one this mixplan cannot make
            unchanged = False
        elif algorithm == HASH_ALGORITHM:
            unchanged = recorded == plan.content_hash
        else:  # a hash an older mixplan recorded (sha256)
            unchanged = recorded == content_hash(files, algorithm)
    except OSError as error:
        plan.action, plan.note = "ingest", str(error)
        return plan
    plan.action = "unchanged" if unchanged else "ingest"
    return plan


def recorded_hash(plan: SourcePlan, result: ValidatedSource | StreamedSource) -> str:
    """The content hash the ``sources`` row records for an ingested file.

    "" when the file changed while read (so the next ingest reads it again). A plan hashed
    from the read (``hash_from_read``) takes the reader's hash; when the reader gave none (an
    empty or unreadable file, never parsed) the file is hashed now, but only if its size and
    modification time are still those ``settle`` saw (else "": read again next time).
    """
    if changed_while_read(result.warnings):
        return ""
    if not plan.hash_from_read:
        return plan.content_hash
    if result.content_hash:
        return result.content_hash
    files = [plan.path, *plan.partner_files]
    try:
        before = [os.stat(p) for p in files]
        digest = content_hash(files)
        after = [os.stat(p) for p in files]
    except OSError:
        return ""
    planned = (plan.size_bytes, plan.mtime_ns)
    for stats in (before, after):
        if (sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)) != planned:
            return ""
    return digest


def parse(
    plan: SourcePlan, *, staging_dir: str | Path, mappings: list[Mapping] | None = None
) -> ParsedSource:
    """Parse one planned file (row-level checks included); good metric rows are staged."""
    return parse_source(plan.path, format=plan.format, staging_dir=staging_dir, mappings=mappings)


def validate(
    parsed: ParsedSource,
    *,
    staging_dir: str | Path,
    lake: str | Path | None = None,
    storage_options: dict[str, str] | None = None,
) -> ValidatedSource:
    """Whole-file checks of a parsed file (runs, duplicates, rows of rejected runs); with
    ``lake``, also its runs against the same run ids from other files (``conflict``)."""
    existing = None
    if lake is not None:
        existing = runs_from_other_files(
            lake,
            [parsed.source_file, *parsed.partner_files],
            parsed.runs["run_id"].drop_nulls().to_list(),
            storage_options=storage_options,
        )
    return validate_source(parsed, staging_dir=staging_dir, existing_runs=existing)


def _source_row(plan: SourcePlan, result: ValidatedSource | StreamedSource) -> dict:
    return {
        "source_file": plan.path,
        "sha256": recorded_hash(plan, result),
        "size_bytes": plan.size_bytes,
        "format": result.format,
        "partner_files": json.dumps(result.partner_files),
        "runs": result.runs.height,
        "metric_rows": result.metric_rows,
        "quarantined_rows": result.quarantine.height,
        "warnings": json.dumps(result.warnings),
        "ingested_at": now_utc(),
    }


def _report(plan: SourcePlan, result: ValidatedSource | StreamedSource) -> FileReport:
    quarantined = (
        result.quarantine.group_by("reason").len().sort("reason").rows()
        if result.quarantine.height
        else []
    )
    usable = result.runs.height > 0 or result.metric_rows > 0
    # a whole-file problem (empty, unreadable, unknown format) is a quarantine row without a
    # line; its text says what was wrong and what to do, so the report carries it
    whole_file = result.quarantine.filter(pl.col("source_line").is_null())["record"]
    return FileReport(
        path=plan.path,
        format=result.format,
        status="ingested" if usable else "rejected",
        runs=result.runs.height,
        metric_rows=result.metric_rows,
        quarantined={reason: int(n) for reason, n in quarantined},
        warnings=list(result.warnings),
        note="; ".join(whole_file.drop_nulls().unique(maintain_order=True).to_list()),
    )


class _Pump:
    """Consume a stream (frames, or the data files written from them) in a background thread,
    up to ``depth`` items ahead of its reader.

    The stream's own work (parsing, row checks, Parquet encoding) then runs beside the writer
    that reads ``items()``, and a file's stream can be started while the previous file is still
    being committed. ``depth`` bounds the items held, so memory stays bounded; ``on_drop``
    cleans up items no reader will get. Exceptions of the stream are re-raised to the reader.
    """

    _DONE = object()

    def __init__(
        self,
        stream: Iterator[Any],
        *,
        depth: int = 4,
        on_drop: Callable[[Any], None] | None = None,
    ) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._on_drop = on_drop  # called with each item produced that no reader will get
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(stream,), name="mixplan-stream", daemon=True
        )
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        self._drop(item)
        return False

    def _drop(self, item: tuple) -> None:
        if self._on_drop is not None and item[0] is not self._DONE:
            self._on_drop(item[0])

    def _run(self, stream: Iterator[Any]) -> None:
        try:
            for frame in stream:
                if not self._put((frame, None)):
                    break
            else:
                self._put((self._DONE, None))
        except BaseException as error:  # handed to the reader
            self._put((self._DONE, error))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def items(self) -> Iterator[Any]:
        """The stream's items, in order (readable once)."""
        while True:
            item, error = self._queue.get()
            if item is self._DONE:
                if error is not None:
                    raise error
                return
            yield item

    def stop(self) -> None:
        """Stop the background thread (it ends after the frame it is producing)."""
        self._stop.set()  # the thread's next put gives up within 0.1 s
        self._thread.join(timeout=30)
        while True:
            try:
                self._drop(self._queue.get_nowait())
            except queue.Empty:
                break


@dataclass
class _Job:
    """One file whose stream may already be running (see ``_start``)."""

    plan: SourcePlan
    streamed: StreamedSource | None = None
    pump: _Pump | None = None
    error: BaseException | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


def _start(
    plan: SourcePlan,
    lake: str | Path,
    *,
    mappings: list[Mapping] | None,
    storage_options: dict[str, str] | None,
    previous: threading.Event | None = None,
    committed: set[str] | None = None,
) -> _Job:
    """Start streaming one file (parse + row checks in a background thread).

    ``previous`` is set once the file before it in this ingest is committed and ``committed``
    then holds the run ids written by the earlier files of this ingest: the stream's last step
    waits for it, so a run shared with an earlier file is seen exactly as if the files had been
    read one after the other (the file is then restaged and MERGEd).
    """
    job = _Job(plan)
    files = [plan.path, *plan.partner_files]
    try:
        # read before streaming: the lake cannot be queried from inside the Delta writer's stream
        elsewhere = run_ids_elsewhere(lake, files, storage_options=storage_options)
    except Exception as error:  # raised when the file's turn comes, as if read in order
        job.error = error
        return job

    def before_end(runs) -> None:
        known = elsewhere
        if previous is not None:
            while not previous.wait(0.1):
                if job.cancel.is_set():
                    raise Restage("the ingest stopped before this file")
            known = elsewhere | (committed or set())
        if known and not known.isdisjoint(runs["run_id"].to_list()):
            raise Restage("runs already come from another file (MERGE needed)")

    if plan.format is not None:
        try:
            job.streamed = stream_source(
                plan.path, format=plan.format, mappings=mappings, before_end=before_end
            )
        except Restage:
            job.streamed = None
        except Exception as error:
            job.error = error
            return job
        if job.streamed is not None and is_url(lake):
            job.pump = _Pump(job.streamed.metrics)
        elif job.streamed is not None:
            # a local lake: the stream thread also writes the data files (commits stay in
            # order, in the caller's thread), so the next file is parsed and encoded while
            # this one is committed, and only small AddActions wait in the queue
            ensure_lake(lake)
            job.pump = _Pump(
                data_files(lake, job.streamed.metrics),
                depth=1024,
                on_drop=lambda action: discard_data_file(lake, action),
            )
    return job


def _finish(
    job: _Job,
    lake: str | Path,
    *,
    mappings: list[Mapping] | None,
    storage_options: dict[str, str] | None,
) -> tuple[FileReport, pl.DataFrame]:
    """Write a started file into the lake: ``(report, runs written)``."""
    plan, streamed = job.plan, job.streamed
    if job.error is not None:
        raise job.error
    if streamed is not None and job.pump is not None:
        try:
            write_streamed(
                lake,
                metrics=job.pump.items(),
                finish=lambda: (_source_row(plan, streamed), streamed.runs, streamed.quarantine),
                partner_files=streamed.partner_files,
                source_file=plan.path,
                storage_options=storage_options,
                written=not is_url(lake),  # the pump wrote the data files (see ``_start``)
            )
            return _report(plan, streamed), streamed.runs
        except Exception as error:
            from deltalake.exceptions import CommitFailedError

            # a restage signal, or a lost commit race (a stream cannot be replayed): staging
            if not streamed.restaged and not isinstance(error, CommitFailedError):
                raise
        finally:
            job.pump.stop()
    staging = tempfile.mkdtemp(prefix="mixplan-stage-")
    try:
        parsed = parse(plan, staging_dir=staging, mappings=mappings)
        validated = validate(
            parsed, staging_dir=staging, lake=lake, storage_options=storage_options
        )
        return write(validated, plan, lake, storage_options=storage_options), validated.runs
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _abandon(job: _Job) -> None:
    """Stop a started file that will not be written (the ingest failed before its turn)."""
    job.cancel.set()
    if job.pump is not None:
        job.pump.stop()


def ingest_file(
    plan: SourcePlan,
    lake: str | Path,
    *,
    mappings: list[Mapping] | None = None,
    storage_options: dict[str, str] | None = None,
) -> FileReport:
    """Ingest one planned file: streamed straight into Delta, else through staging.

    The streamed path (``stream_source`` + ``write_streamed``) skips the staging copy; when a
    file needs whole-file fix-ups (a rejected run, a key repeated across chunks, runs shared
    with another file) the stream stops before anything is committed and the file goes through
    ``parse`` -> ``validate`` -> ``write``, the path the Prefect flow uses. Both give the same
    lake.
    """
    job = _start(plan, lake, mappings=mappings, storage_options=storage_options)
    try:
        return _finish(job, lake, mappings=mappings, storage_options=storage_options)[0]
    finally:
        _abandon(job)


def write(
    validated: ValidatedSource,
    plan: SourcePlan,
    lake: str | Path,
    *,
    storage_options: dict[str, str] | None = None,
) -> FileReport:
    """Write one validated file into the lake (one atomic replace per table) and report it."""
    write_source(
        lake,
        source=_source_row(plan, validated),
        runs=validated.runs,
        metrics=validated.metrics,
        quarantine=validated.quarantine,
        partner_files=validated.partner_files,
        storage_options=storage_options,
    )
    return _report(plan, validated)


def has_lake(reports: list[FileReport]) -> bool:
    """Whether a lake exists after these reports: some file was written or already there
    (a run of only ignored files creates nothing, so there is no lake to summarise)."""
    return any(report.status != "ignored" for report in reports)


def skipped(plan: SourcePlan) -> FileReport:
    """The report of a file that is not read (unchanged or ignored)."""
    status = "unchanged" if plan.action == "unchanged" else "ignored"
    return FileReport(path=plan.path, format=plan.format, status=status, note=plan.note)


def _next_to_ingest(settled: list[Future], index: int) -> int | None:
    """The index of the first file after ``index`` that needs ingesting (None: none left)."""
    for following in range(index + 1, len(settled)):
        if settled[following].result().action == "ingest":
            return following
    return None


def ingest_paths(
    paths: Iterable[str | Path],
    lake: str | Path,
    *,
    format: str | None = None,
    mappings_dir: str | Path | None = None,
    on_file: Callable[[SourcePlan, FileReport | None], None] | None = None,
    storage_options: dict[str, str] | None = None,
) -> IngestReport:
    """Ingest run logs into the lake: the plain-function form of the ``ingest`` flow.

    Parameters
    ----------
    paths
        Files or folders (folders are searched recursively for run logs, see
        ``mixplan.planning.readers.is_log_file``).
    lake
        Lake folder or object-store URL (created when missing).
    format
        Force one format for every file (``mixplan.planning.readers.FORMATS`` key or
        ``mapping:<name>``); detected per file when None.
    mappings_dir
        Folder of declared mappings (default ``data/mappings``).
    on_file
        Called with ``(plan, None)`` before and ``(plan, report)`` after each file (progress).
    """
    with frozen_heap():
        return _ingest_paths(
            paths,
            lake,
            format=format,
            mappings_dir=mappings_dir,
            on_file=on_file,
            storage_options=storage_options,
        )


def _ingest_paths(
    paths: Iterable[str | Path],
    lake: str | Path,
    *,
    format: str | None,
    mappings_dir: str | Path | None,
    on_file: Callable[[SourcePlan, FileReport | None], None] | None,
    storage_options: dict[str, str] | None,
) -> IngestReport:
    mappings = load_mappings(mappings_dir)
    plans = discover(
        paths,
        lake,
        format=format,
        mappings=mappings,
        storage_options=storage_options,
        hash_now=False,
    )
    with lake_write_lock(lake):  # decide + write with no other ingest in between
        known = source_hashes(lake, storage_options=storage_options)
        # hash the next files in a background thread while the current one is ingested
        hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mixplan-hash")
        # (a new JSONL file is hashed from the reads that parse it: no second read)
        settled = [hasher.submit(settle, plan, known, hash_from_read=True) for plan in plans]
        hasher.shutdown(wait=False)
        # one file is written while the next one is already being parsed and checked (its
        # stream waits for this commit before its own last check, see ``_start``); Delta commits
        # stay one file after the other, in order
        reports: list[FileReport] = []
        committed: set[str] = set()
        options = {"mappings": mappings, "storage_options": storage_options}
        ahead: dict[int, _Job] = {}
        try:
            for index, future in enumerate(settled):
                plan = future.result()
                if on_file:
                    on_file(plan, None)
                if plan.action != "ingest":
                    report = skipped(plan)
                else:
                    job = ahead.pop(index, None) or _start(plan, lake, **options)
                    done = threading.Event()
                    following = _next_to_ingest(settled, index)
                    if following is not None:
                        ahead[following] = _start(
                            settled[following].result(),
                            lake,
                            **options,
                            previous=done,
                            committed=committed,
                        )
                    report, runs = _finish(job, lake, **options)
                    committed.update(runs["run_id"].to_list())
                    done.set()
                reports.append(report)
                if on_file:
                    on_file(plan, report)
        finally:
            for job in ahead.values():
                _abandon(job)
        summary = lake_summary(lake, storage_options=storage_options) if has_lake(reports) else {}
    return IngestReport(lake=str(lake), files=reports, lake_summary=summary)


# --------------------------------------------------------------------------- Prefect tasks


# The Prefect tasks are built on first use (PEP 562 module ``__getattr__``), so that the plain
# path above (the CLI, the bench) does not pay Prefect's import time (~1.5 s).


def _discover(
    paths: list[str], lake: str, format: str | None = None, mappings_dir: str | None = None
) -> list[SourcePlan]:
    """Find the files to ingest and which of them are unchanged."""
    return discover(paths, lake, format=format, mappings=load_mappings(mappings_dir))


def _parse(plan: SourcePlan, staging_dir: str, mappings_dir: str | None = None) -> ParsedSource:
    """Parse one file into staged rows (retried on I/O errors)."""
    return parse(plan, staging_dir=staging_dir, mappings=load_mappings(mappings_dir))


def _validate(parsed: ParsedSource, staging_dir: str, lake: str | None = None) -> ValidatedSource:
    """Run the whole-file checks of one parsed file (against the lake's runs when given)."""
    return validate(parsed, staging_dir=staging_dir, lake=lake)


def _write(validated: ValidatedSource, plan: SourcePlan, lake: str) -> FileReport:
    """Commit one file's rows to the lake."""
    return write(validated, plan, lake)


def _summary(lake: str) -> dict:
    """The lake's counts after the ingest."""
    return lake_summary(lake)


_TASKS = {
    "discover_task": (_discover, {"name": "discover-sources", "retries": 2}),
    "parse_task": (_parse, {"name": "parse-source", "retries": 2}),
    "validate_task": (_validate, {"name": "validate-source"}),
    "write_task": (_write, {"name": "write-source", "retries": 2}),
    "summary_task": (_summary, {"name": "lake-summary"}),
}
_BUILT: dict = {}


def __getattr__(name: str):
    """Build the Prefect tasks (``discover_task``, ``parse_task``, ``validate_task``,
    ``write_task``, ``summary_task``) on first access."""
    if name not in _TASKS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _BUILT:
        from prefect import task

        function, options = _TASKS[name]
        retry = {"retry_delay_seconds": 1} if options.get("retries") else {}
        _BUILT[name] = task(function, **options, **retry)
    return _BUILT[name]
