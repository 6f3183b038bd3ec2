"""Keep concurrent pipeline runs from interleaving their writes to one lake.

Delta commits are atomic on their own, but a pipeline run is a sequence of writes (ingest, fit
files, pipeline state) that must not interleave with another run's. :func:`lake_lock` takes an
exclusive advisory lock (``fcntl.flock``) for the whole read-modify-write of a run. The kernel
drops the lock when its holder dies, so a run killed with SIGKILL never leaves a stale lock
behind; the next run simply takes it. Lakes on object stores (``s3://...``) are locked through a
lock file in a local folder keyed by the URL, which serialises runs on one machine; across
machines, rely on Delta's optimistic commits and run one scheduler per lake.

:func:`write_text_atomic` writes small files (state, reports) through a temporary name and a
rename, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec

from mixplan.planning.errors import MixplanError

LOCK_NAME = ".mixplan.lock"


class LakeBusyError(MixplanError):
    """Another pipeline run held the lake's lock for longer than the timeout."""


def is_local(url: str | os.PathLike[str]) -> bool:
    """True for plain paths and ``file://`` URLs, False for object-store URLs."""
    text = str(url)
    return "://" not in text or text.startswith("file://")


def local_path(url: str | os.PathLike[str]) -> Path:
    """A local path from a plain path or a ``file://`` URL."""
    text = str(url)
    return Path(text.removeprefix("file://"))


def lock_path(lake: str | os.PathLike[str]) -> Path:
    """Where the lock file of ``lake`` lives (inside it when local, else in a temp folder)."""
    if is_local(lake):
        return local_path(lake) / LOCK_NAME
    digest = hashlib.sha256(str(lake).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "mixplan-locks" / f"{digest}.lock"


@contextlib.contextmanager
def lake_lock(
    lake: str | os.PathLike[str], *, timeout: float = 1800.0, poll: float = 0.2
) -> Iterator[Path]:
    """Hold the lake's exclusive lock for the duration of the ``with`` block.

    Parameters
    ----------
    lake
        The lake's path or URL.
    timeout
        Seconds to wait for another run to finish before raising :class:`LakeBusyError`.
    poll
        Seconds between attempts.

    Yields
    ------
    pathlib.Path
        The lock file (it stays on disk; holding it is what counts).
    """
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
                    raise LakeBusyError(
                        f"the lake {lake} is locked by another pipeline run (lock file {path}) "
                        f"and stayed locked for {timeout:.0f} s; wait for that run to finish "
                        "or raise the timeout"
                    ) from None
                time.sleep(poll)
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def write_text_atomic(url: str | os.PathLike[str], text: str) -> str:
    """Write ``text`` to ``url`` so that readers see the old or the new file, never half of one.

    Local files go through a temporary file in the same folder, ``fsync`` and ``os.replace``;
    object stores get a single PUT (atomic there). Returns the URL as a string.
    """
    if is_local(url):
        path = local_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return str(path)
    with fsspec.open(str(url), "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(url)


def exists(url: str | os.PathLike[str]) -> bool:
    """True when the file at a local path or URL exists."""
    if is_local(url):
        return local_path(url).exists()
    fs, path = fsspec.core.url_to_fs(str(url))
    return fs.exists(path)


def read_text(url: str | os.PathLike[str]) -> str | None:
    """The text of ``url``, or ``None`` when it does not exist."""
    if is_local(url):
        path = local_path(url)
        return path.read_text(encoding="utf-8") if path.exists() else None
    fs, path = fsspec.core.url_to_fs(str(url))
    if not fs.exists(path):
        return None
    return fs.cat_file(path).decode("utf-8")


def join(url: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a path or URL with ``/``."""
    return "/".join([str(url).rstrip("/"), *parts])
