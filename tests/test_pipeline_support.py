"""Shared helpers for the pipeline, serve, concurrency and Dask tests (no tests here).

Small inputs keep these tests fast: one real bundled file (Epoch's 245 Chinchilla runs) and
one spec, a handful of bootstrap draws, no mixture fits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EPOCH = "epoch-research__analyzing-chinchilla"
SMALL_BOOTSTRAP = 4


def small_inputs(tmp_path: Path, bundled: Path, folders: tuple[str, ...] = (EPOCH,)) -> Path:
    """A logs folder holding copies of some bundled real data sets (folder names kept)."""
    logs = tmp_path / "logs"
    for folder in folders:
        shutil.copytree(bundled / folder, logs / folder)
    return logs


def small_specs(tmp_path: Path) -> Path:
    """A specs folder with the bundled example spec."""
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "data" / "specs" / "example.toml", specs / "example.toml")
    return specs


def pipeline_args(tmp_path: Path, logs: Path, specs: Path, *, name: str = "") -> list[str]:
    """`mixplan pipeline` arguments for a small run under ``tmp_path``."""
    return [
        str(logs),
        "--lake",
        str(tmp_path / "lake"),
        "--specs",
        str(specs),
        "--reports",
        str(tmp_path / f"reports{name}"),
        "--bootstrap",
        str(SMALL_BOOTSTRAP),
        "--no-mixture",
    ]


def mixplan_command(*args: str) -> list[str]:
    """Run the CLI with this interpreter (`python -m mixplan`, no reliance on PATH)."""
    return [sys.executable, "-m", "mixplan", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: quiet Prefect, no analytics."""
    env = dict(os.environ)
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_TO_API_ENABLED="false",
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a child started with ``start_new_session=True`` and its whole process group."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


STARTUP_SECONDS = 600
"""How long a server the suite starts (Prefect's test API, moto's S3) may take to answer. Only
a server that never comes up waits this long; readiness is polled, so a healthy start on a
busy 2-core machine (a fresh SQLite migration has taken over a minute) never fails a test."""


def wait_until(ready, what: str, *, process=None, log=None, poll: float = 0.2) -> None:
    """Poll ``ready()`` until it is true; fail naming ``what`` after :data:`STARTUP_SECONDS`
    or as soon as ``process`` (a Popen) exits, with the tail of ``log`` (a path) if given."""

    def tail() -> str:
        return Path(log).read_text(errors="replace")[-3000:] if log and Path(log).exists() else ""

    deadline = time.monotonic() + STARTUP_SECONDS
    while not ready():
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not answer within {STARTUP_SECONDS} s:\n{tail()}")
        time.sleep(poll)


def http_ok(url: str) -> bool:
    """True when GET ``url`` answers 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False
