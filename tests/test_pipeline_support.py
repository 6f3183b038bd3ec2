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
from pathlib import Path

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
