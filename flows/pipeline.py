"""The scheduled pipeline: ingest -> fit (scale, mixture) -> plan every spec -> drift -> report.

Run it once with ``mixplan pipeline`` (Prefect's ephemeral mode, no server needed), or on a
schedule with ``mixplan serve``. One run holds the lake's lock from ingest to the saved state,
so two runs never interleave their writes; a run killed mid-way leaves the lake readable (Delta
commits are atomic; state and reports are replaced atomically) and the next run completes.

Fits are cached: the cache key is the content hash of every ingested source file plus the fit
options and the code version (:func:`tasks.drift.cache_key`); while it is unchanged the stored
fits are reused. Plans are cached on top of that (:func:`tasks.drift.plan_key`: the fit key
plus every spec's content), so a run on an unchanged lake with unchanged specs only ingests
(nothing), checks drift and writes the report (whose law charts are reused too).

The stages (ingest, fit, mixture fit, plan) are the same flows the CLI runs, called *inline*:
their tasks run inside the pipeline's own flow run, because a subflow run costs API round trips
and buys nothing when the stages run one after another in this process. With a Dask address
each stage runs as a subflow instead, on a DaskTaskRunner (a subflow's task runner is the only
one Prefect lets a run choose at run time).

Every failure a run can survive (one experiment's fit, one spec's plan) becomes a line under
"problems" in the report and the CLI output, saying what failed, why and what to do.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, unmapped

from mixplan.flows.config import BUNDLED_DATA, DEFAULT_LAKE, DEFAULT_REPORTS, EXAMPLE_SPECS
from mixplan.planning.errors import MixplanError
from mixplan.planning.report.plans import flatten_plan, missing_fit_hint, whatif_grid
from mixplan.tasks.discover import (
    discover_specs,
    lake_experiments,
    lake_fingerprint,
    mixture_experiments,
)
from mixplan.tasks.drift import (
    cache_key,
    check_drift,
    load_state,
    new_runs_since,
    plan_key,
    publish_drift,
    reusable_fits,
    save_state,
)
from mixplan.tasks.locking import lake_lock
from mixplan.tasks.report import load_fits, publish_report, render_report
from mixplan.tasks.whatif import whatif_point

MIXTURE_FAMILIES = ("additive", "exponential", "linear")
"""Mixture laws the pipeline fits: the two convex families the planner optimises, and the
linear baseline for comparison (LightGBM and the per-source law are left to `mixplan fit
--mixture`, they take minutes)."""
MIXTURE_BOOTSTRAP_CAP = 8
"""Bootstrap draws per mixture law in the pipeline (each draw refits every domain)."""

DEFAULT_BOOTSTRAP = 40
"""Bootstrap refits per law in the default pipeline: enough for 95% intervals that are stable to
a few percent, small enough that the main job finishes in a few minutes on 2 cores."""


def _failure(
    logger: logging.Logger | logging.LoggerAdapter, what: str, error: Exception, next_step: str
) -> str:
    """Log a failure the run survives and return its line for "problems".

    Expected failures (bad spec, unfittable data: :class:`MixplanError`, whose message says
    what to fix) get one log line; anything else gets a traceback in the flow log.
    """
    if isinstance(error, MixplanError):
        logger.error("%s failed: %s", what, error)
        return f"{what} failed: {error}; {next_step}"
    logger.exception("%s failed", what)
    return (
        f"{what} failed unexpectedly ({type(error).__name__}: {error}); {next_step}; "
        "the flow run's log has the traceback"
    )


def _task_runner(dask_address: str | None):
    if not dask_address:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=dask_address)


def _stage(stage_flow, runner):
    """How the pipeline calls a stage's flow: inline (its tasks join the pipeline's flow run)
    or, with a Dask task runner, as a subflow run on that runner."""
    return stage_flow.fn if runner is None else stage_flow.with_options(task_runner=runner)


def _fit_name(path: str) -> str:
    """A stored fit's name: its file stem (``<lake>/fits/epoch-chinchilla.json``)."""
    return path.rsplit("/", 1)[-1].removesuffix(".json")


@flow(name="plan-specs", description="plan every spec and sweep its what-ifs (fans out)")
def plan_specs(
    specs: dict[str, dict], lake: str | None = None, fits_written: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, list[dict]], list[str]]:
    """Plan every spec and re-plan it over its what-if grid.

    The what-if points are mapped as tasks, so they run on whatever task runner this flow is
    given (a DaskTaskRunner when the pipeline has a Dask address). Returns the plans and the
    what-if rows by spec name, and the problems met (a failing spec does not stop the others).
    ``fits_written`` (stored fit names) lets a problem say which fit a failing spec could use.
    """
    from mixplan.flows.plan import plan as plan_flow

    logger = get_run_logger()
    plans: dict[str, Any] = {}
    futures = {}
    problems: list[str] = []
    for name, spec in specs.items():
        try:
            plans[name] = plan_flow.fn(spec, lake)
            grid = whatif_grid(spec)
        except Exception as error:  # a broken spec is reported, the other plans still run
            hint = missing_fit_hint(spec, fits_written) if fits_written is not None else None
            if hint is None:
                problems.append(_failure(logger, f"plan {name}", error, "fix the spec"))
            else:  # the planner's own advice (run `mixplan fit`) does not fit a pipeline run
                logger.error("plan %s failed: %s", name, error)
                problems.append(f"plan {name} failed: {hint}")
            continue
        if grid:
            budgets, tokens = zip(*grid, strict=True)
            futures[name] = whatif_point.map(
                unmapped(spec), list(budgets), list(tokens), unmapped(lake)
            )
    whatifs: dict[str, list[dict]] = {}
    for name, mapped in futures.items():
        rows = []
        for future in mapped:
            try:
                rows.append(future.result())
            except Exception as error:  # noqa: BLE001 - one failed what-if point is a gap
                problems.append(
                    f"a what-if point of plan {name} failed ({error}); its row is missing "
                    "from the what-if table, the plan itself stands"
                )
        whatifs[name] = rows
    return plans, whatifs, problems


def _fit_scale_laws(lake: str, n_bootstrap: int, runner, problems: list[str]) -> list[str]:
    """Fit every experiment in its own subflow; returns the stored fit paths."""
    from mixplan.flows.fit import fit as fit_flow

    logger = get_run_logger()
    paths: list[str] = []
    for experiment in lake_experiments(lake):
        # one subflow per experiment: a law that cannot be fitted to one experiment is
        # reported, and the other experiments' fits still land
        try:
            written = _stage(fit_flow, runner)(
                lake, experiments=[experiment], n_bootstrap=n_bootstrap
            )
        except Exception as error:
            problems.append(
                _failure(
                    logger,
                    f"fit of experiment {experiment}",
                    error,
                    "its laws are left out; check them with "
                    f"`mixplan fit --lake {lake} -e {experiment}`",
                )
            )
            continue
        paths.extend(str(path) for path in written)
    return paths


def _fit_mixture_laws(
    lake: str, n_bootstrap: int, runner, problems: list[str]
) -> list[dict[str, Any]]:
    """Fit the mixture laws of every experiment that varies the mixture; returns the results."""
    from mixplan.flows.fit_mixture import fit_mixture as mixture_flow

    logger = get_run_logger()
    results = []
    for experiment, held_out in mixture_experiments(lake):
        try:
            results.append(
                _stage(mixture_flow, runner)(
                    lake,
                    experiment,
                    held_out_experiment=held_out,
                    families=list(MIXTURE_FAMILIES),
                    n_bootstrap=min(n_bootstrap, MIXTURE_BOOTSTRAP_CAP),
                )
            )
        except Exception as error:  # one failing mixture fit must not hide the rest
            problems.append(
                _failure(
                    logger,
                    f"mixture fit for {experiment}",
                    error,
                    "its mixture laws are left out; check them with "
                    f"`mixplan fit --mixture --lake {lake} -e {experiment}`",
                )
            )
    return results


@flow(name="mixplan-pipeline", description="ingest -> fit -> plan -> drift -> report")
def pipeline(
    inputs: list[str] | None = None,
    lake: str = str(DEFAULT_LAKE),
    specs: str = str(EXAMPLE_SPECS),
    reports: str = str(DEFAULT_REPORTS),
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    mixture: bool = True,
    refit: bool = False,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Run the whole planning pipeline on run logs and write a report.

    Parameters
    ----------
    inputs
        Run-log files or folders to ingest (default: the bundled real data, data/public/).
    lake
        The lake folder or object-store URL (``s3://...``, anything fsspec/deltalake reads).
    specs
        A folder of plan specs (``*.toml``) or one spec file.
    reports
        Where ``report.html`` and ``report.md`` are written (a local folder).
    n_bootstrap
        Bootstrap refits per law (intervals on parameters and on plans).
    mixture
        Also fit mixture laws for experiments whose runs vary the data mixture.
    refit
        Ignore the fit cache and refit even when the lake did not change.
    dask_address
        Run the fit and plan fan-out on this Dask scheduler (``tcp://host:8786``) through
        prefect-dask's DaskTaskRunner; None runs it on Prefect's default thread pool.

    Returns
    -------
    dict
        ``report`` and ``markdown`` (paths), ``cached_fit``, ``fits``, ``mixture_fits``,
        ``plans`` (name -> status), ``drift`` (summary), ``problems`` (sentences that say what
        to do), ``ingest`` (the ingest summary).
    """
    from mixplan.flows.ingest import ingest as ingest_flow

    logger = get_run_logger()
    inputs = [str(path) for path in (inputs or [BUNDLED_DATA])]
    lake = str(lake)
    runner = _task_runner(dask_address)
    problems: list[str] = []
    started = datetime.now(UTC)
    with lake_lock(lake):
        previous = load_state(lake)
        # read before refitting: a refit may overwrite the stored fit files in place
        previous_fits = load_fits(previous.get("fit_paths", [])) if previous else []
        ingest_summary = _stage(ingest_flow, runner)(inputs, lake)
        fingerprint = lake_fingerprint(lake)
        key = cache_key(fingerprint["sources"], {"n_bootstrap": n_bootstrap, "mixture": mixture})
        cached = not refit and reusable_fits(previous, key)
        if cached:
            fit_paths = list(previous["fit_paths"])
            mixture_results = list(previous.get("mixture_results", []))
            logger.info(
                "lake unchanged since %s: reusing %d stored fits",
                previous.get("run_at"),
                len(fit_paths) + len(previous.get("mixture_paths", [])),
            )
        else:
            fit_paths = _fit_scale_laws(lake, n_bootstrap, runner, problems)
            mixture_results = (
                _fit_mixture_laws(lake, n_bootstrap, runner, problems) if mixture else []
            )
        mixture_paths = [
            entry["path"]
            for result in mixture_results
            for entry in result["fits"].values()
            if entry.get("path")
        ]
        spec_dicts = discover_specs(specs)
        plans_key = plan_key(key, spec_dicts)
        if cached and previous.get("plan_key") == plans_key:
            # same fits, same specs, same code: the plans are the previous run's
            plans = previous["plan_results"]
            whatifs = previous["whatifs"]
            plan_problems = previous.get("plan_problems", [])
        else:
            plans, whatifs, plan_problems = _stage(plan_specs, runner)(
                spec_dicts, lake, [_fit_name(path) for path in fit_paths]
            )
        problems.extend(plan_problems)
        flat_plans = {name: flatten_plan(result) for name, result in plans.items()}
        drift = check_drift(
            previous,
            new_runs=new_runs_since(lake, previous.get("versions", {}).get("runs")),
            previous_fits=previous_fits,
            plans=flat_plans,
        )
        publish_drift(drift)
        paths = render_report(
            lake=lake,
            reports=reports,
            fits=previous_fits if cached else load_fits(fit_paths),
            fit_key=key,
            fits_reused=cached,
            mixture_fits=mixture_results,
            plans=plans,
            drift=drift,
            whatifs=whatifs,
            problems=problems,
            run_facts={
                "fit cache": "reused" if cached else "refitted",
                "bootstrap": str(n_bootstrap),
                "started": started.strftime("%Y-%m-%d %H:%M UTC"),
            },
        )
        publish_report(paths["markdown"])
        save_state(
            lake,
            {
                "run_at": started.isoformat(timespec="seconds"),
                "versions": fingerprint["versions"],
                "fit_key": key,
                "fit_paths": fit_paths,
                "mixture_paths": mixture_paths,
                "mixture_results": mixture_results,
                "plan_key": plans_key,
                "plan_results": plans,
                "plan_problems": plan_problems,
                "whatifs": whatifs,
                "plans": flat_plans,
                "report": paths["html"],
            },
        )
    logger.info("report written to %s", paths["html"])
    return {
        "report": paths["html"],
        "markdown": paths["markdown"],
        "cached_fit": cached,
        "fits": fit_paths,
        "mixture_fits": mixture_paths,
        "plans": {name: str(result.get("status", "unknown")) for name, result in plans.items()},
        "drift": drift.summary(),
        "problems": problems,
        "ingest": ingest_summary,
    }
