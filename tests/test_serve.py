"""A real Prefect server on 127.0.0.1 runs the pipeline: served on a schedule, and through a
work pool by a real worker.

Starts `prefect server start` (own PREFECT_HOME, free port), then `mixplan serve --interval 5`
against it and waits until a scheduled run has COMPLETED and written its report. Then registers
the deployment on a process work pool (`mixplan serve --work-pool`), creates a run of it and
starts `prefect worker start --pool ... --run-once`, which runs the deployment's entrypoint
(the installed module mixplan.flows.pipeline) in its own process, and waits for that run to
complete. Waits poll for readiness; their ceiling (conftest's STARTUP_SECONDS, 10 minutes) is
only reached by a run that never finishes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from test_pipeline_support import (
    REPO_ROOT,
    STARTUP_SECONDS,
    free_port,
    http_ok,
    mixplan_command,
    pipeline_args,
    small_inputs,
    small_specs,
    stop,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.slow


def _completed_runs(api: str) -> list[dict]:
    return _post(
        f"{api}/flow_runs/filter",
        {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 10},
    )


def _post(url: str, payload: dict) -> dict | list:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _tail(path) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-3000:]


def test_served_and_pooled_deployments_run_the_pipeline(tmp_path, bundled):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "prefect-home"
    env = subprocess_env(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        PREFECT_WORKER_QUERY_SECONDS="2",
    )
    env.pop("PREFECT_API_KEY", None)
    server_log = tmp_path / "server.log"
    serve_log = tmp_path / "serve.log"
    worker_log = tmp_path / "worker.log"
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
    served = worker = None
    try:
        wait_until(
            lambda: http_ok(f"{api}/health"), "prefect server", process=server, log=server_log
        )
        logs = small_inputs(tmp_path, bundled)
        specs = small_specs(tmp_path)
        args = pipeline_args(tmp_path, logs, specs)
        # serve takes inputs as repeatable --input options
        serve_args = ["--input", args[0], *args[1:]]
        served = subprocess.Popen(
            mixplan_command("serve", *serve_args, "--interval", "5"),
            env=env,
            cwd=REPO_ROOT,
            stdout=serve_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        report = tmp_path / "reports" / "report.html"
        completed: list[dict] = []

        def scheduled_run_completed() -> bool:
            completed[:] = [
                run for run in _completed_runs(api) if run.get("deployment_id") is not None
            ]
            return bool(completed) and report.exists()

        wait_until(scheduled_run_completed, "a scheduled run", process=served, log=serve_log)
        assert completed[0]["auto_scheduled"] is True  # created by the schedule, not by hand
        assert "mixplan planning report" in report.read_text(encoding="utf-8")
        stop(served)  # the work pool's run gets the machine to itself

        # the work-pool route: register the deployment on a process pool, a worker runs it
        _post(f"{api}/work_pools/", {"name": "mixplan-pool", "type": "process"})
        registered = subprocess.run(
            mixplan_command(
                "serve",
                *_with_reports(serve_args, tmp_path / "reports-pool"),
                "--cron",
                "0 0 1 1 *",  # yearly: the only run is the one created below
                "--work-pool",
                "mixplan-pool",
                "--name",
                "pooled",
            ),
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=STARTUP_SECONDS,
        )
        assert registered.returncode == 0, registered.stdout + registered.stderr
        assert "prefect worker start --pool mixplan-pool" in registered.stdout
        (deployment,) = _post(
            f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["pooled"]}}}
        )
        assert deployment["work_pool_name"] == "mixplan-pool"
        assert deployment["entrypoint"] == "mixplan.flows.pipeline.pipeline"
        run = _post(f"{api}/deployments/{deployment['id']}/create_flow_run", {})
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                "mixplan-pool",
                "--run-once",
            ],
            env=env,
            cwd=tmp_path,  # not the checkout: the entrypoint is found as an installed module
            stdout=worker_log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def pooled_run_state() -> str:
            with urllib.request.urlopen(f"{api}/flow_runs/{run['id']}", timeout=10) as response:
                return json.loads(response.read())["state"]["type"]

        wait_until(
            lambda: pooled_run_state() in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"),
            "the work pool's run",
            log=worker_log,
        )
        assert pooled_run_state() == "COMPLETED", worker_log.read_text(errors="replace")[-3000:]
        pooled_report = tmp_path / "reports-pool" / "report.html"
        assert "mixplan planning report" in pooled_report.read_text(encoding="utf-8")
    finally:
        for process in (worker, served, server):
            if process is not None:
                stop(process)


def _with_reports(args: list[str], reports) -> list[str]:
    """``args`` with the ``--reports`` value replaced."""
    out = list(args)
    out[out.index("--reports") + 1] = str(reports)
    return out
