"""Keep concurrent pipeline runs from interleaving their writes to one lake.

Delta commits are atomic on their own, but a pipeline run is a sequence of writes (ingest, fit
files, pipeline state) that must not interleave with another run's. :func:`lake_lock` holds an
exclusive lock on the lake for the whole read-modify-write of a run:

* **Local lakes** (paths, ``file://``): an advisory ``fcntl.flock`` on ``<lake>/.mixplan.lock``.
  The kernel drops it when its holder dies, so a run killed with SIGKILL never leaves a stale
  lock behind; the next run simply takes it.
* **S3 lakes** (``s3://``): a lock object ``<lake>/_mixplan.lock``, created with a conditional
  PUT (``If-None-Match: *``): of several runs, on any machines, exactly one creates it. It holds
  a lease (owner, expiry); the holder renews it every third of the lease with a PUT conditioned
  on its own ETag (``If-Match``) and deletes it when done. A holder that dies stops renewing:
  once its lease has expired, a waiter takes the lock over with a PUT conditioned on the
  expired object's ETag, so of several waiters exactly one wins. Leases compare the machines'
  wall clocks: keep them NTP-synchronised (the lease, :data:`LEASE_SECONDS`, dwarfs ordinary
  skew). A holder whose renewal is refused (it stalled past its lease and was taken over) logs
  an error; Delta's commit protocol (put-if-absent log entries) still keeps every table
  consistent.
* **Other URL schemes** (``memory://``, ``gs://``...): a lock file in a local folder keyed by
  the URL, which serialises runs on one machine only; across machines run one scheduler per lake.

The files themselves go through :mod:`mixplan.tasks.storage` (the same URL and storage options
as the Delta tables).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from mixplan.planning.errors import MixplanError
from mixplan.tasks.storage import (
    exists,
    filesystem,
    is_local,
    join,
    local_path,
    protocol,
    read_text,
    write_text_atomic,
)

__all__ = [
    "LakeBusyError",
    "exists",
    "held_by_this_process",
    "join",
    "lake_lock",
    "lock_path",
    "read_text",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".mixplan.lock"
OBJECT_LOCK_NAME = "_mixplan.lock"
LEASE_SECONDS = 60.0
"""How long an S3 lock lives without renewal (renewed every third of it while held)."""


class LakeBusyError(MixplanError):
    """Another pipeline run held the lake's lock for longer than the timeout."""


_HELD: dict[str, int] = {}
"""Lakes whose lock this process holds, with how many ``lake_lock`` blocks hold it."""
_HELD_GUARD = threading.Lock()


def _lock_key(lake: str | os.PathLike[str]) -> str:
    return str(local_path(lake).resolve()) if is_local(lake) else str(lake).rstrip("/")


def held_by_this_process(lake: str | os.PathLike[str]) -> bool:
    """Whether a ``lake_lock`` block of this process holds ``lake``'s lock right now.

    Code that runs both on its own and inside a pipeline run (the ingest) asks this instead of
    taking the lock a second time: an ``flock`` would merely be re-taken, but an S3 lock object
    held by this very process would never be released, a self-deadlock.
    """
    with _HELD_GUARD:
        return _HELD.get(_lock_key(lake), 0) > 0


@contextlib.contextmanager
def _registered(lake: str | os.PathLike[str]) -> Iterator[None]:
    key = _lock_key(lake)
    with _HELD_GUARD:
        _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]


def lock_path(lake: str | os.PathLike[str]) -> Path:
    """Where the lock file of ``lake`` lives (inside it when local, else in a temp folder)."""
    if is_local(lake):
        return local_path(lake) / LOCK_NAME
    digest = hashlib.sha256(str(lake).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mixplan-locks" / f"{digest}.lock"


@contextlib.contextmanager
def lake_lock(
    lake: str | os.PathLike[str],
    *,
    timeout: float = 1800.0,
    poll: float = 0.2,
    lease: float | None = None,
) -> Iterator[Path | str]:
    """Hold the lake's exclusive lock for the duration of the ``with`` block.

    Parameters
    ----------
    lake
        The lake's path or URL.
    timeout
        Seconds to wait for another run to finish before raising :class:`LakeBusyError`.
    poll
        Seconds between attempts.
    lease
        S3 lakes only: seconds a holder's lock lives without renewal (default
        :data:`LEASE_SECONDS`); a dead holder's lock is taken over after it.

    Yields
    ------
    pathlib.Path or str
        The lock file (local; it stays on disk, holding it is what counts) or the lock
        object's URL (S3; deleted on exit).
    """
    if protocol(lake) == "s3":
        with (
            _object_lock(str(lake), timeout, poll, lease or LEASE_SECONDS) as url,
            _registered(lake),
        ):
            yield url
        return
    with _file_lock(lake, timeout, poll) as path, _registered(lake):
        yield path


def _busy(lake: object, where: object, timeout: float, holder: str = "") -> LakeBusyError:
    by = f" ({holder})" if holder else ""
    return LakeBusyError(
        f"the lake {lake} is locked by another pipeline run{by} (lock {where}) and stayed "
        f"locked for {timeout:.0f} s; wait for that run to finish or raise the timeout"
    )


@contextlib.contextmanager
def _file_lock(lake: str | os.PathLike[str], timeout: float, poll: float) -> Iterator[Path]:
    """An exclusive ``flock`` on the lake's local lock file."""
    path = lock_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(lake, f"file {path}", timeout) from None
                time.sleep(poll)
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


class _ObjectLease:
    """The lease on an S3 lake's lock object (see the module docstring for the protocol)."""

    def __init__(self, lake: str, lease: float) -> None:
        self.url = join(lake, OBJECT_LOCK_NAME)
        self.fs, self.path = filesystem(self.url)
        self.lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.holder = ""
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires_at": time.time() + self.lease}).encode()

    def try_acquire(self) -> bool:
        """Create the lock object, or take it over when its lease has expired."""
        try:
            self.etag = self.fs.pipe_file(self.path, self._body(), mode="create")["ETag"]
            return True
        except FileExistsError:
            pass
        self.fs.invalidate_cache(self.path)
        try:
            # the ETag first: the body read next is at least that new, and the take-over
            # below only succeeds if nothing was written since
            stale = self.fs.info(self.path)["ETag"]
            held = json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return False  # released meanwhile: the next attempt creates it
        except (ValueError, TypeError):
            held = {}  # not a lease we understand: only its age could tell, treat as expired
        self.holder = str(held.get("owner", "unknown holder"))
        if float(held.get("expires_at", 0.0)) > time.time():
            return False
        try:
            self.etag = self.fs.pipe_file(self.path, self._body(), IfMatch=stale)["ETag"]
        except OSError:
            return False  # another waiter took it over first
        log.warning("took over the lock of %s from %s (its lease expired)", self.url, self.holder)
        return True

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew, name="mixplan-lock-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.etag = self.fs.pipe_file(self.path, self._body(), IfMatch=self.etag)["ETag"]
            except FileNotFoundError:
                self.lost = True
            except OSError as error:
                if "pre-condition" not in str(error) and "PreconditionFailed" not in str(error):
                    log.warning("could not renew the lock of %s (%s); retrying", self.url, error)
                    continue
                self.lost = True
            if self.lost:
                log.error(
                    "the lock of %s was taken over by another run (this run stalled past its "
                    "%.0f s lease); Delta commits stay consistent, but the runs may interleave",
                    self.url,
                    self.lease,
                )
                return

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost:
            return
        self.fs.invalidate_cache(self.path)
        with contextlib.suppress(FileNotFoundError):
            if self.fs.info(self.path)["ETag"] == self.etag:
                self.fs.rm_file(self.path)


@contextlib.contextmanager
def _object_lock(lake: str, timeout: float, poll: float, lease: float) -> Iterator[str]:
    """Hold the S3 lake's lock object (conditional PUTs, a renewed lease)."""
    held = _ObjectLease(lake, lease)
    deadline = time.monotonic() + timeout
    while not held.try_acquire():
        if time.monotonic() >= deadline:
            raise _busy(lake, f"object {held.url}", timeout, held.holder)
        time.sleep(poll)
    held.start_renewing()
    try:
        yield held.url
    finally:
        held.release()
