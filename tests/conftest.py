"""Test configuration: an isolated Prefect home and one session-wide Prefect test harness.

Prefect reads its settings at import, so the environment is set before anything imports it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="mixplan-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "false")
# rich sizes tables to COLUMNS: pin it, so no assertion depends on the terminal pytest runs in
# (messages never wrap anyway: flows.console.cli_console uses soft_wrap)
os.environ["COLUMNS"] = "120"

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED = REPO_ROOT / "data" / "public"
SHARED = REPO_ROOT.parent / "shared" / "data" / "public"


@pytest.fixture(scope="session")
def bundled() -> Path:
    """The real public run logs shipped in data/public/."""
    return BUNDLED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/public, present in CI; tests needing it skip with a reason elsewhere."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (only CI and developer machines have ../shared)")
    return SHARED


STARTUP_SECONDS = 600
"""How long a server the suite starts (Prefect's test API, moto's S3) may take to answer. Only
a server that never comes up waits this long; readiness is polled, so a healthy start on a
busy 2-core machine (a fresh SQLite migration has taken over a minute) never fails a test."""


def wait_until(ready, what: str, *, process=None, log=None, poll: float = 0.2) -> None:
    """Poll ``ready()`` until it is true; fail naming ``what`` after :data:`STARTUP_SECONDS`
    or as soon as ``process`` (a Popen) exits, with the tail of ``log`` (a path) if given."""
    import time

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
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def prefect_harness():
    """A real ephemeral Prefect API (SQLite) for the whole session; flow tests request it."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=STARTUP_SECONDS),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1 for the session.

    A subprocess, not moto's in-process thread: deltalake holds the GIL while it waits for an
    S3 answer, so a server thread in the test process could never answer it.
    """
    import socket
    import subprocess
    import sys

    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (test extra)")
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs (mixplan[s3])")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), "moto server", process=server, log=log)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
