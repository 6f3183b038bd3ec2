"""A real Prefect server on 127.0.0.1 runs the served pipeline deployment on its schedule.

Starts `prefect server start` (own PREFECT_HOME, free port), then `mixplan serve --interval 5`
against it, waits until a scheduled run has COMPLETED and written its report, and stops both
process groups. Every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from test_pipeline_support import (
    REPO_ROOT,
    free_port,
    mixplan_command,
    pipeline_args,
    small_inputs,
    small_specs,
    stop,
    subprocess_env,
)

pytestmark = pytest.mark.slow


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except (urllib.error.URLError, OSError):
        return 0


def _completed_runs(api: str) -> list[dict]:
    body = json.dumps(
        {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 10}
    ).encode()
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _post(url: str, payload: dict) -> dict | list:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _tail(path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-3000:]


def test_served_deployment_runs_on_schedule_and_writes_report(tmp_path, bundled):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    env = subprocess_env(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    env.pop("PREFECT_API_KEY", None)
    server_log = tmp_path / "server.log"
    serve_log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=server_log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    served = None
    try:
        deadline = time.monotonic() + 90
        while _get(f"{api}/health") != 200:
            assert server.poll() is None, f"prefect server exited:\n{_tail(server_log)}"
            assert time.monotonic() < deadline, f"server not ready in 90 s:\n{_tail(server_log)}"
            time.sleep(0.5)
        logs = small_inputs(tmp_path, bundled)
        specs = small_specs(tmp_path)
        args = pipeline_args(tmp_path, logs, specs)
        # serve takes inputs as repeatable --input options
        serve_args = ["--input", args[0], *args[1:], "--interval", "5"]
        served = subprocess.Popen(
            mixplan_command("serve", *serve_args),
            env=env,
            cwd=REPO_ROOT,
            stdout=serve_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        report = tmp_path / "reports" / "report.html"
        deadline = time.monotonic() + 150
        completed: list[dict] = []
        while not (completed and report.exists()):
            assert served.poll() is None, f"mixplan serve exited:\n{_tail(serve_log)}"
            assert time.monotonic() < deadline, (
                f"no completed scheduled run in 150 s:\n{_tail(serve_log)}"
            )
            time.sleep(1)
            completed = [
                run for run in _completed_runs(api) if run.get("deployment_id") is not None
            ]
        assert completed[0]["auto_scheduled"] is True  # created by the schedule, not by hand
        assert "mixplan planning report" in report.read_text(encoding="utf-8")

        # the work-pool route: register the deployment on a process pool instead of serving
        _post(f"{api}/work_pools/", {"name": "mixplan-pool", "type": "process"})
        registered = subprocess.run(
            mixplan_command(
                "serve", *serve_args, "--work-pool", "mixplan-pool", "--name", "pooled"
            ),
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        assert "prefect worker start --pool mixplan-pool" in registered.stdout
        deployments = _post(
            f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["pooled"]}}}
        )
        assert [d["work_pool_name"] for d in deployments] == ["mixplan-pool"]
        assert deployments[0]["entrypoint"] == "mixplan.flows.pipeline.pipeline"
    finally:
        if served is not None:
            stop(served)
        stop(server)
