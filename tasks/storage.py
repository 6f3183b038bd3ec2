"""One storage layer for everything a lake holds: its URL and its storage options.

A lake is a URL (a local folder, ``file://...``, ``s3://bucket/prefix``, ``memory://...``) plus
storage options (credentials, endpoint, region). Everything mixplan keeps in a lake goes through
this module with the same two: the Delta tables (:mod:`mixplan.tasks.lake` hands
:func:`storage_options` to deltalake and polars), and the small files: stored fits
(``<lake>/fits/*.json``), the pipeline state (``<lake>/pipeline/``) and, on object stores, the
lake's lock object (:mod:`mixplan.tasks.locking`), read and written through fsspec with the same
options translated for it (:func:`filesystem`).

Where the options come from, first match wins:

1. ``MIXPLAN_STORAGE_OPTIONS``: a JSON object of deltalake (object_store) keys, e.g.
   ``{"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "...",
   "AWS_SECRET_ACCESS_KEY": "...", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}``;
2. nothing: deltalake and s3fs both read the standard environment themselves
   (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
   ``~/.aws``).

The translated options are also registered as fsspec's defaults for the URL's protocol
(``fsspec.config.conf``), so any fsspec open of a lake URL (the planner reading a stored fit)
uses them too. ``pip install 'mixplan[s3]'`` brings the S3 file system (s3fs).

Small files are written whole: locally through a temporary file, ``fsync`` and a rename; on an
object store with one PUT (atomic there). A reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mixplan.planning.errors import MixplanError

OPTIONS_VARIABLE = "MIXPLAN_STORAGE_OPTIONS"

_FSSPEC_KEYS = {
    "aws_access_key_id": "key",
    "aws_secret_access_key": "secret",
    "aws_session_token": "token",
    "aws_endpoint_url": "endpoint_url",
    "aws_endpoint": "endpoint_url",
    "endpoint_url": "endpoint_url",
    "endpoint": "endpoint_url",
}
"""deltalake (object_store) option names -> s3fs keyword arguments."""

_FSSPEC_CLIENT_KEYS = {"aws_region": "region_name", "region": "region_name"}
"""deltalake option names -> botocore client keyword arguments (s3fs ``client_kwargs``)."""

_DELTA_ONLY = {"aws_allow_http", "allow_http", "aws_conditional_put", "conditional_put"}
"""deltalake options fsspec has no use for (s3fs talks plain HTTP to an http:// endpoint)."""


class StorageError(MixplanError):
    """The lake's storage cannot be reached or is misconfigured (what, where, what to do)."""


def is_local(url: str | os.PathLike[str]) -> bool:
    """True for plain paths and ``file://`` URLs, False for object-store URLs."""
    text = str(url)
    return "://" not in text or text.startswith("file://")


def local_path(url: str | os.PathLike[str]) -> Path:
    """A local path from a plain path or a ``file://`` URL."""
    return Path(str(url).removeprefix("file://"))


def join(url: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a path or URL with ``/`` (never through pathlib, which would turn
    ``file://x`` into ``file:/x``)."""
    return "/".join([str(url).rstrip("/"), *parts])


def protocol(url: str | os.PathLike[str]) -> str:
    """The URL's scheme (``s3``, ``memory``...), ``file`` for local paths."""
    text = str(url)
    return text.split("://", 1)[0] if "://" in text else "file"


def storage_options(url: str | os.PathLike[str]) -> dict[str, str] | None:
    """The deltalake storage options of a lake URL (None for local lakes and when nothing is
    configured, so the libraries' own environment applies).

    Raises
    ------
    StorageError
        When ``MIXPLAN_STORAGE_OPTIONS`` is not a JSON object of strings.
    """
    if is_local(url):
        return None
    text = os.environ.get(OPTIONS_VARIABLE, "").strip()
    if not text:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise StorageError(
            f"{OPTIONS_VARIABLE} is not valid JSON ({error}); set it to an object such as "
            '{"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "us-east-1"}'
        ) from error
    if not isinstance(options, dict) or not all(
        isinstance(key, str) and isinstance(value, str | bool | int)
        for key, value in options.items()
    ):
        raise StorageError(
            f"{OPTIONS_VARIABLE} must be a JSON object of option names to strings, got {text[:80]}"
        )
    return {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in options.items()
    }


def fsspec_options(options: dict[str, str] | None) -> dict[str, Any]:
    """The s3fs keyword arguments equivalent to deltalake storage ``options``."""
    kwargs: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in (options or {}).items():
        name = key.lower()
        if name in _FSSPEC_KEYS:
            kwargs[_FSSPEC_KEYS[name]] = value
        elif name in _FSSPEC_CLIENT_KEYS:
            client[_FSSPEC_CLIENT_KEYS[name]] = value
        elif name not in _DELTA_ONLY:
            kwargs[name] = value  # an fsspec option given by its own name
    if client:
        kwargs["client_kwargs"] = client
    return kwargs


def filesystem(url: str | os.PathLike[str]):
    """``(fsspec file system, path)`` of an object-store URL, with the lake's storage options
    (also registered as fsspec's defaults for the protocol, see the module docstring).

    Raises
    ------
    StorageError
        When no file system is installed for the URL's protocol (``s3://`` needs
        ``pip install 'mixplan[s3]'``).
    """
    import fsspec
    import fsspec.config

    text = str(url)
    kwargs = fsspec_options(storage_options(text))
    if kwargs:
        fsspec.config.conf[protocol(text)] = kwargs
    try:
        return fsspec.core.url_to_fs(text)
    except ImportError as error:
        raise StorageError(
            f"cannot open {text}: {error}; for s3:// lakes install the extra: "
            "pip install 'mixplan[s3]'"
        ) from error


def exists(url: str | os.PathLike[str]) -> bool:
    """True when the file at a local path or URL exists."""
    if is_local(url):
        return local_path(url).exists()
    fs, path = filesystem(url)
    return fs.exists(path)


def read_text(url: str | os.PathLike[str]) -> str | None:
    """The text of ``url``, or None when it does not exist."""
    if is_local(url):
        path = local_path(url)
        return path.read_text(encoding="utf-8") if path.exists() else None
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path).decode("utf-8")
    except FileNotFoundError:
        return None


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_UMASK = _read_umask()
"""The process's umask, read once at import: reading it means setting it, and a per-write
set-and-restore would briefly give files that other threads create meanwhile mode 0666."""


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
            # mkstemp creates the file owner-only (0600); a report or fit is read by others too,
            # so give it the mode an ordinary open() would (0666 less the umask)
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return str(path) if "://" not in str(url) else str(url)
    fs, path = filesystem(url)
    fs.pipe_file(path, text.encode("utf-8"))
    return str(url)
