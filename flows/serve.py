"""Serve the pipeline as a scheduled Prefect deployment (``mixplan serve``).

``flow.serve`` registers a deployment with the Prefect API and runs its scheduled runs in this
process. It needs a long-lived API with a scheduler: start one with ``prefect server start`` and
point ``PREFECT_API_URL`` at it (the ephemeral mode used by ``mixplan pipeline`` has no
scheduler). To run through a work pool instead, see :func:`deploy_to_work_pool`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from datetime import timedelta
from typing import Any

from prefect.deployments.runner import EntrypointType

from mixplan.flows.pipeline import pipeline

DEPLOYMENT_NAME = "mixplan-scheduled"
DEFAULT_CRON = "0 * * * *"
"""Hourly: new logs are picked up, refitted if they changed, re-planned and reported."""
DESCRIPTION = "mixplan: ingest new run logs, refit, re-plan, report what changed"
PATH_PARAMETERS = ("lake", "specs", "reports")
"""Pipeline parameters that are paths (made absolute for a served run)."""


def deployment_parameters(**parameters: Any) -> dict[str, Any]:
    """The pipeline parameters a scheduled run uses: the given ones (``None`` values dropped)
    over the pipeline's defaults, with paths made absolute (a served run's working directory is
    not the caller's)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(pipeline.fn).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    given = {name: value for name, value in parameters.items() if value is not None}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(f"the pipeline has no parameter {unknown[0]!r}; known: {sorted(defaults)}")
    merged = {name: value for name, value in {**defaults, **given}.items() if value is not None}

    def absolute(path: str) -> str:
        return path if "://" in str(path) else os.path.abspath(path)

    for name in PATH_PARAMETERS:
        merged[name] = absolute(merged[name])
    if merged.get("inputs"):
        merged["inputs"] = [absolute(path) for path in merged["inputs"]]
    return merged


def _schedule(cron: str | None, interval: float | None) -> dict[str, Any]:
    """``flow.serve`` / ``flow.deploy`` schedule keywords: an interval, else a cron string."""
    return {"interval": timedelta(seconds=interval)} if interval else {"cron": cron or DEFAULT_CRON}


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
    pipeline.serve(
        name=name,
        parameters=deployment_parameters(**parameters),
        limit=limit,
        tags=["mixplan"],
        description=DESCRIPTION,
        **_schedule(cron, interval),
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

    A worker (``prefect worker start --pool <work_pool>``) then runs the scheduled runs. By
    default the deployment's entrypoint is the installed module ``mixplan.flows.pipeline``, so
    any worker whose environment has mixplan installed runs it, wherever this command ran. With
    ``source`` (a git URL or a mixplan checkout) the worker pulls the code from there instead
    (for Docker or Kubernetes pools). Returns the deployment id.
    """
    if source is None:
        flow, entrypoint = pipeline, {"entrypoint_type": EntrypointType.MODULE_PATH}
    else:
        flow, entrypoint = pipeline.from_source(source, "flows/pipeline.py:pipeline"), {}
    return flow.deploy(
        name=name,
        work_pool_name=work_pool,
        parameters=deployment_parameters(**parameters),
        tags=["mixplan"],
        description=DESCRIPTION,
        build=False,
        push=False,
        print_next_steps=False,
        **entrypoint,
        **_schedule(cron, interval),
    )
