"""CLI commands of the pipeline stage: ``mixplan pipeline`` (run once) and ``mixplan serve``."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mixplan.flows.config import DEFAULT_LAKE, DEFAULT_REPORTS, EXAMPLE_SPECS
from mixplan.flows.console import cli_console

console = cli_console()


EPHEMERAL_STARTUP_SECONDS = 120
"""Prefect's default (20 s) is too short for a first start on a busy 2-core machine (the
ephemeral server migrates a fresh SQLite database before it answers)."""


@contextlib.contextmanager
def patient_ephemeral_server():
    """Give Prefect's ephemeral API server time to start, unless the user configured it."""
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ:
        yield
        return
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates = {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: EPHEMERAL_STARTUP_SECONDS}
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        # the throwaway server's telemetry writes race the run's writes on its SQLite file
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    with temporary_settings(updates=updates):
        yield


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
        prints where the HTML report is.
        """
        from mixplan.flows.pipeline import pipeline

        if not verbose:  # warnings and errors still show; the flow run's log keeps everything
            logging.getLogger("prefect").setLevel(logging.WARNING)
        started = time.perf_counter()
        with (
            console.status("running the pipeline: ingest -> fit -> plan -> drift -> report"),
            patient_ephemeral_server(),
            dask_scheduler(dask, dask_address, dask_workers) as address,
        ):
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
        then `export PREFECT_API_URL=http://127.0.0.1:4200/api`)."""
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
