"""Provenance stamps recorded with every fit and plan: data hash and code version."""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import polars as pl


def frame_hash(frame: pl.DataFrame) -> str:
    """A content hash of a table, independent of row order (sha256 over sorted row hashes)."""
    if frame.height == 0:
        return hashlib.sha256(b"empty:" + ",".join(frame.columns).encode()).hexdigest()[:16]
    row_hashes = frame.hash_rows(seed=0).sort().to_numpy().tobytes()
    digest = hashlib.sha256(",".join(frame.columns).encode() + row_hashes)
    return digest.hexdigest()[:16]


@cache
def code_version() -> str:
    """mixplan's version plus the git commit when running from a checkout ("0.1.0+g1a2b3c4")."""
    try:
        version = metadata.version("mixplan")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" if commit else version
