"""CLI commands of the pipeline stage: ``mixplan pipeline`` (run once) and ``mixplan serve``."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mixplan.flows.config import DEFAULT_LAKE, DEFAULT_REPORTS, EXAMPLE_SPECS
from mixplan.flows.console import cli_console

console = cli_console()


EPHEMERAL_STARTUP_SECONDS = 300
"""How long the throwaway Prefect API may take to answer (it migrates a fresh SQLite database
first; on a busy 2-core machine that has taken over a minute). Overridden by
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``."""


class LocalPrefectAPI:
    """A throwaway Prefect API server on 127.0.0.1, started in the background.

    What Prefect's ephemeral mode does on the first API call (the same ``uvicorn`` command and
    environment), but started *before* the pipeline's imports, so the server boots on the other
    core while this process imports the pipeline, and this process never imports the server
    code itself (~3 s of imports it would otherwise pay on every run).
    """

    def __init__(self) -> None:
        import prefect

        self.app_dir = str(Path(prefect.__file__).parent.parent)
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._start()

    def _start(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        # the throwaway server's telemetry writes race the run's writes on its SQLite file
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                self.app_dir,
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_ready(self, timeout: float) -> None:
        """Poll the server's health until it answers (restarting it once on a port clash)."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as client:
            while True:
                code = self.process.poll()
                if code == 3:  # uvicorn could not bind: the port was taken meanwhile
                    self._start()
                elif code is not None:
                    error = self.process.stderr.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the Prefect API server exited ({code}):\n{error}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"the Prefect API server did not answer within {timeout:.0f} s; raise "
                        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or start one with "
                        "`prefect server start` and set PREFECT_API_URL"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def prefect_api():
    """The Prefect API a CLI run reports to: the configured one (``PREFECT_API_URL``), else a
    :class:`LocalPrefectAPI` started now and stopped on exit.

    Start this before importing the pipeline (the server boots meanwhile) and call the yielded
    function before the first flow call: it waits until the API answers.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield lambda: None
        return
    timeout = float(
        os.environ.get(
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS
        )
    )
    server = LocalPrefectAPI()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}):
            try:
                yield lambda: server.wait_ready(timeout)
            finally:
                # send the queued logs and events while the server still answers
                from prefect.events.worker import EventsWorker
                from prefect.logging.handlers import APILogWorker

                APILogWorker.drain_all(timeout=60)
                EventsWorker.drain_all(timeout=60)
    finally:
        server.stop()


@contextlib.contextmanager
def dask_scheduler(dask: bool, dask_address: str | None, workers: int):
    """The Dask scheduler address to use: the given one, a fresh local cluster, or None."""
    if dask_address:
        yield dask_address
        return
    if not dask:
        yield None
        return
    from distributed import LocalCluster

    # threads in this process: tasks share the Prefect API settings of the flow run
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        console.print(f"[dim]local Dask cluster at {cluster.scheduler_address}[/dim]")
        yield cluster.scheduler_address


def pipeline_parameters(
    inputs: list[Path] | None,
    lake: str,
    specs: Path,
    reports: Path,
    bootstrap: int | None,
    mixture: bool,
) -> dict[str, Any]:
    """The pipeline parameters both commands share, from their options (left out when unset,
    so the pipeline's own default applies)."""
    parameters = {
        "inputs": [str(path) for path in inputs] if inputs else None,
        "lake": lake,
        "specs": str(specs),
        "reports": str(reports),
        "n_bootstrap": bootstrap,
        "mixture": mixture,
    }
    return {name: value for name, value in parameters.items() if value is not None}


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``mixplan`` app."""

    @app.command("pipeline")
    def pipeline_command(
        inputs: Annotated[
            list[Path] | None,
            typer.Argument(help="Run logs (files or folders); default: the bundled real data."),
        ] = None,
        lake: Annotated[str, typer.Option(help="Lake folder or object-store URL.")] = str(
            DEFAULT_LAKE
        ),
        specs: Annotated[Path, typer.Option(help="Folder of plan specs (*.toml) or one spec.")] = (
            EXAMPLE_SPECS
        ),
        reports: Annotated[Path, typer.Option(help="Where report.html / report.md go.")] = (
            DEFAULT_REPORTS
        ),
        bootstrap: Annotated[
            int | None, typer.Option(min=0, help="Bootstrap refits per law [default: 40].")
        ] = None,
        mixture: Annotated[bool, typer.Option(help="Also fit mixture laws.")] = True,
        refit: Annotated[bool, typer.Option(help="Refit even if the lake is unchanged.")] = False,
        dask: Annotated[
            bool, typer.Option(help="Run the fit/plan fan-out on a local Dask cluster.")
        ] = False,
        dask_address: Annotated[
            str | None, typer.Option(help="Use an existing Dask scheduler (tcp://host:8786).")
        ] = None,
        dask_workers: Annotated[int, typer.Option(min=1, help="Local Dask workers.")] = 2,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Show Prefect's log line for every task.")
        ] = False,
    ) -> None:
        """Run the whole pipeline once: ingest -> fit -> plan -> drift -> report.

        Runs on the bundled real data by default, in Prefect's ephemeral mode (no server), and
        prints where the HTML report is. A second run on an unchanged lake reuses the fits.

        Examples:

        * `mixplan pipeline` - the bundled real data into out/lake, report in out/reports

        * `mixplan pipeline runs/ --lake s3://bucket/lake --specs specs/` - your logs, an S3 lake
          (`pip install 'mixplan[s3]'`)

        * `mixplan pipeline --dask` - the fit and plan fan-out on a local Dask cluster
        """
        started = time.perf_counter()
        with (
            console.status("running the pipeline: ingest -> fit -> plan -> drift -> report"),
            prefect_api() as api_ready,
        ):
            from mixplan.flows.pipeline import pipeline  # while the API server starts

            if not verbose:  # warnings and errors still show; the flow run's log keeps all
                logging.getLogger("prefect").setLevel(logging.WARNING)
            api_ready()
            with dask_scheduler(dask, dask_address, dask_workers) as address:
                result = pipeline(
                    **pipeline_parameters(inputs, lake, specs, reports, bootstrap, mixture),
                    refit=refit,
                    dask_address=address,
                )
        elapsed = time.perf_counter() - started
        for name, status in result["plans"].items():
            console.print(f"plan [bold]{name}[/bold]: {status}")
        console.print(result["drift"])
        for problem in result["problems"]:
            console.print(f"[yellow]problem:[/yellow] {escape(problem)}")
        fits = "reused (lake unchanged)" if result["cached_fit"] else "refitted"
        console.print(f"fits {fits}; finished in {elapsed:.0f} s")
        console.print(f"[bold green]report:[/bold green] {Path(result['report']).resolve()}")
        console.print(f"markdown: {Path(result['markdown']).resolve()}")

    @app.command("serve")
    def serve_command(
        cron: Annotated[str, typer.Option(help="Cron schedule of the runs.")] = "0 * * * *",
        interval: Annotated[
            float | None, typer.Option(help="Seconds between runs (instead of --cron).")
        ] = None,
        inputs: Annotated[
            list[Path] | None, typer.Option("--input", help="Run logs to ingest (repeatable).")
        ] = None,
        lake: Annotated[str, typer.Option(help="Lake folder or object-store URL.")] = str(
            DEFAULT_LAKE
        ),
        specs: Annotated[Path, typer.Option(help="Folder of plan specs.")] = EXAMPLE_SPECS,
        reports: Annotated[Path, typer.Option(help="Where reports go.")] = DEFAULT_REPORTS,
        bootstrap: Annotated[
            int | None, typer.Option(min=0, help="Bootstrap refits per law [default: 40].")
        ] = None,
        mixture: Annotated[bool, typer.Option(help="Also fit mixture laws.")] = True,
        dask_address: Annotated[
            str | None, typer.Option(help="Run the fan-out on this Dask scheduler.")
        ] = None,
        name: Annotated[str, typer.Option(help="Deployment name.")] = "mixplan-scheduled",
        work_pool: Annotated[
            str | None,
            typer.Option(help="Register on this work pool and exit (a worker runs the runs)."),
        ] = None,
    ) -> None:
        """Serve the pipeline on a schedule (needs a Prefect server: `prefect server start`,
        then `export PREFECT_API_URL=http://127.0.0.1:4200/api`).

        Examples:

        * `mixplan serve --interval 3600 --input runs/` - hourly runs in this process

        * `mixplan serve --work-pool my-pool` - register on a work pool, then start a worker:
          `prefect worker start --pool my-pool`
        """
        from mixplan.flows.serve import deploy_to_work_pool, serve

        parameters = pipeline_parameters(inputs, lake, specs, reports, bootstrap, mixture)
        parameters["dask_address"] = dask_address
        if work_pool:
            deployment = deploy_to_work_pool(
                work_pool, cron=cron, interval=interval, name=name, **parameters
            )
            console.print(f"deployment {name} ({deployment}) registered on work pool {work_pool}")
            console.print(f"start a worker:  prefect worker start --pool {work_pool}")
            return
        serve(cron=cron, interval=interval, name=name, **parameters)
