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
from test_pipeline_support import STARTUP_SECONDS, http_ok, wait_until  # noqa: E402

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


def _die_with_parent() -> None:
    """In a child before exec: on Linux, ask for SIGTERM when the test process dies, so a
    killed pytest run leaves no server behind (elsewhere, a no-op)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
            preexec_fn=_die_with_parent,
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
