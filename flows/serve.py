"""Serve the pipeline as a scheduled Prefect deployment (``mixplan serve``).

``flow.serve`` registers a deployment with the Prefect API and runs its scheduled runs in this
process. It needs a long-lived API with a scheduler: start one with ``prefect server start`` and
point ``PREFECT_API_URL`` at it (the ephemeral mode used by ``mixplan pipeline`` has no
scheduler). To run through a work pool instead, see :func:`deploy_to_work_pool`.
"""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import timedelta
from typing import Any

from flows.config import DEFAULT_LAKE, DEFAULT_REPORTS, EXAMPLE_SPECS, REPO_ROOT
from flows.pipeline import DEFAULT_BOOTSTRAP, pipeline

DEPLOYMENT_NAME = "mixplan-scheduled"
DEFAULT_CRON = "0 * * * *"
"""Hourly: new logs are picked up, refitted if they changed, re-planned and reported."""


def deployment_parameters(
    *,
    inputs: list[str] | None = None,
    lake: str = str(DEFAULT_LAKE),
    specs: str = str(EXAMPLE_SPECS),
    reports: str = str(DEFAULT_REPORTS),
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    mixture: bool = True,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """The pipeline parameters a scheduled run uses (paths made absolute: a served run's working
    directory is not the caller's)."""

    def absolute(path: str) -> str:
        return path if "://" in path else os.path.abspath(path)

    parameters: dict[str, Any] = {
        "lake": absolute(lake),
        "specs": absolute(specs),
        "reports": absolute(reports),
        "n_bootstrap": n_bootstrap,
        "mixture": mixture,
    }
    if inputs:
        parameters["inputs"] = [absolute(p) for p in inputs]
    if dask_address:
        parameters["dask_address"] = dask_address
    return parameters


def serve(
    *,
    cron: str | None = DEFAULT_CRON,
    interval: float | None = None,
    name: str = DEPLOYMENT_NAME,
    limit: int | None = 1,
    **parameters: Any,
) -> None:
    """Serve the pipeline on a schedule until interrupted (Ctrl-C or SIGTERM).

    Parameters
    ----------
    cron
        A cron schedule (default hourly); ignored when ``interval`` is given.
    interval
        Seconds between runs instead of a cron schedule.
    name
        The deployment's name (the flow is ``mixplan-pipeline``).
    limit
        Most runs at once in this process (1: scheduled runs queue rather than overlap; the
        lake lock would serialise them anyway).
    **parameters
        Pipeline parameters (see :func:`deployment_parameters`).
    """
    # flow.serve stops on KeyboardInterrupt; turn SIGTERM (process managers) into that too
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    schedule: dict[str, Any] = (
        {"interval": timedelta(seconds=interval)} if interval else {"cron": cron or DEFAULT_CRON}
    )
    pipeline.serve(
        name=name,
        parameters=deployment_parameters(**parameters),
        limit=limit,
        tags=["mixplan"],
        description="mixplan: ingest new run logs, refit, re-plan, report what changed",
        **schedule,
    )


def deploy_to_work_pool(
    work_pool: str,
    *,
    cron: str | None = DEFAULT_CRON,
    interval: float | None = None,
    name: str = DEPLOYMENT_NAME,
    source: str | None = None,
    **parameters: Any,
) -> Any:
    """Register the deployment on a work pool instead of serving it in this process.

    A worker (``prefect worker start --pool <work_pool>``) then runs the scheduled runs. The
    code comes from ``source`` (a git URL or a folder; default: this checkout), so a process
    worker on this machine needs nothing else; for Docker or Kubernetes pools give a git URL.
    Returns the deployment id.
    """
    schedule: dict[str, Any] = (
        {"interval": timedelta(seconds=interval)} if interval else {"cron": cron or DEFAULT_CRON}
    )
    flow = pipeline.from_source(source or str(REPO_ROOT), "flows/pipeline.py:pipeline")
    return flow.deploy(
        name=name,
        work_pool_name=work_pool,
        parameters=deployment_parameters(**parameters),
        tags=["mixplan"],
        description="mixplan: ingest new run logs, refit, re-plan, report what changed",
        build=False,
        push=False,
        print_next_steps=False,
        **schedule,
    )
