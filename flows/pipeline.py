"""The scheduled pipeline: ingest -> fit (scale, mixture) -> plan every spec -> drift -> report.

Run it once with ``mixplan pipeline`` (Prefect's ephemeral mode, no server needed), or on a
schedule with ``mixplan serve``. One run holds the lake's lock from ingest to the saved state,
so two runs never interleave their writes; a run killed mid-way leaves the lake readable (Delta
commits are atomic; state and reports are replaced atomically) and the next run completes.

Fits are cached: the cache key is the content hash of every ingested source file plus the fit
options and the code version (:func:`tasks.drift.cache_key`); while it is unchanged the stored
fits are reused and only planning, drift and the report run again.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from flows.config import BUNDLED_DATA, DEFAULT_LAKE, DEFAULT_REPORTS, EXAMPLE_SPECS
from planning.errors import MixplanError
from planning.report.plans import flatten_plan, whatif_grid
from tasks.drift import (
    cache_key,
    check_drift,
    load_state,
    new_runs_since,
    publish_drift,
    save_state,
)
from tasks.locking import is_local, lake_lock, local_path
from tasks.report import load_fits, publish_report, render_report
from tasks.whatif import whatif_point

MIXTURE_FAMILIES = ("additive", "exponential", "linear")
"""Mixture laws the pipeline fits: the two convex families the planner optimises, and the
linear baseline for comparison (LightGBM and the per-source law are left to `mixplan fit
--mixture`, they take minutes)."""
MIXTURE_BOOTSTRAP_CAP = 8
"""Bootstrap draws per mixture law in the pipeline (each draw refits every domain)."""

DEFAULT_BOOTSTRAP = 40
"""Bootstrap refits per law in the default pipeline: enough for 95% intervals that are stable to
a few percent, small enough that the main job finishes in a few minutes on 2 cores."""


def _exists(url: str) -> bool:
    if is_local(url):
        return local_path(url).exists()
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


@task(name="discover-specs", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def discover_specs(specs: str) -> dict[str, dict]:
    """Every ``*.toml`` plan spec in a folder (or one file), parsed, by file stem."""
    root = Path(specs)
    files = [root] if root.is_file() else sorted(root.glob("*.toml"))
    parsed = {}
    for path in files:
        with path.open("rb") as handle:
            parsed[path.stem] = tomllib.load(handle)
    return parsed


@task(name="lake-fingerprint", retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def lake_fingerprint(lake: str) -> dict[str, Any]:
    """The lake's table versions and per-source content hashes (the fit cache's input)."""
    from tasks.lake import lake_version, source_hashes

    return {"versions": lake_version(lake), "sources": source_hashes(lake)}


@task(name="lake-experiments", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def lake_experiments(lake: str) -> list[str]:
    """Every experiment in the lake, sorted."""
    from tasks.lake import read_runs

    return read_runs(lake).get_column("experiment").unique().sort().to_list()


@task(name="mixture-experiments", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def mixture_experiments(lake: str) -> list[tuple[str, str | None]]:
    """Experiments whose runs trained on more than one source, each with its held-out partner.

    An ``X-test`` experiment next to an ``X-train`` one (RegMix's split) scores the laws fitted
    on ``X-train`` instead of being fitted itself.
    """
    import polars as pl

    from tasks.lake import read_runs

    runs = read_runs(lake)
    if runs.height == 0:
        return []
    names = (
        runs.filter(pl.col("mixture").list.len() > 1)
        .get_column("experiment")
        .unique()
        .sort()
        .to_list()
    )
    pairs = []
    for name in names:
        if name.endswith("-test") and name.removesuffix("-test") + "-train" in names:
            continue
        partner = name.removesuffix("-train") + "-test" if name.endswith("-train") else None
        pairs.append((name, partner if partner in names else None))
    return pairs


def _log_failure(logger, what: str, error: Exception) -> None:
    """Expected failures (bad spec, unfittable data) get one line; anything else a traceback."""
    if isinstance(error, MixplanError):
        logger.error("%s failed: %s", what, error)
    else:
        logger.exception("%s failed", what)


def _task_runner(dask_address: str | None):
    if not dask_address:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=dask_address)


def _with_runner(subflow, runner):
    return subflow if runner is None else subflow.with_options(task_runner=runner)


@flow(name="plan-specs", description="plan every spec and sweep its what-ifs (fans out)")
def plan_specs(
    specs: dict[str, dict], lake: str | None = None
) -> tuple[dict[str, Any], dict[str, list[dict]], list[str]]:
    """Plan every spec and re-plan it over its what-if grid.

    The what-if points are mapped as tasks, so they run on whatever task runner this flow is
    given (a DaskTaskRunner when the pipeline has a Dask address). Returns the plans and the
    what-if rows by spec name, and the problems met (a failing spec does not stop the others).
    """
    from flows.plan import plan as plan_flow

    logger = get_run_logger()
    plans: dict[str, Any] = {}
    futures = {}
    problems: list[str] = []
    for name, spec in specs.items():
        try:
            plans[name] = plan_flow(spec, lake)
            grid = whatif_grid(spec)
        except Exception as error:  # a broken spec is reported, the other plans still run
            problems.append(f"plan {name} failed: {error}")
            _log_failure(logger, f"plan {name}", error)
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
                problems.append(f"what-if point of {name} failed: {error}")
        whatifs[name] = rows
    return plans, whatifs, problems


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
        ``plans`` (name -> status), ``drift`` (summary), ``ingest`` (the ingest summary).
    """
    from flows.fit import fit as fit_flow
    from flows.ingest import ingest as ingest_flow

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
        ingest_summary = ingest_flow(inputs, lake)
        fingerprint = lake_fingerprint(lake)
        options = {"n_bootstrap": n_bootstrap, "mixture": mixture}
        key = cache_key(fingerprint["sources"], options)
        stored = previous.get("fit_paths", []) + previous.get("mixture_paths", [])
        cached = (
            not refit
            and previous.get("fit_key") == key
            and bool(previous.get("fit_paths"))
            and all(_exists(path) for path in stored)
        )
        if cached:
            logger.info(
                "lake unchanged since %s: reusing %d stored fits",
                previous.get("run_at"),
                len(stored),
            )
            fit_paths = list(previous["fit_paths"])
            mixture_paths = list(previous.get("mixture_paths", []))
            mixture_results = list(previous.get("mixture_results", []))
        else:
            fit_paths = []
            for experiment in lake_experiments(lake):
                # one subflow per experiment: a law that cannot be fitted to one experiment
                # is reported, and the other experiments' fits still land
                try:
                    written = _with_runner(fit_flow, runner)(
                        lake, experiments=[experiment], n_bootstrap=n_bootstrap
                    )
                except Exception as error:
                    problems.append(f"fit of experiment {experiment} failed: {error}")
                    _log_failure(logger, f"fit of experiment {experiment}", error)
                    continue
                fit_paths.extend(str(path) for path in written)
            mixture_paths = []
            mixture_results = []
            mixture_flow = None
            if mixture:
                try:
                    from flows.fit_mixture import fit_mixture as mixture_flow
                except ImportError as error:
                    problems.append(f"mixture laws not fitted: {error}")
            if mixture_flow is not None:
                for experiment, held_out in mixture_experiments(lake):
                    try:
                        result = _with_runner(mixture_flow, runner)(
                            lake,
                            experiment,
                            held_out_experiment=held_out,
                            families=list(MIXTURE_FAMILIES),
                            n_bootstrap=min(n_bootstrap, MIXTURE_BOOTSTRAP_CAP),
                        )
                    except Exception as error:  # one failing mixture fit must not hide the rest
                        problems.append(f"mixture fit for {experiment} failed: {error}")
                        _log_failure(logger, f"mixture fit for {experiment}", error)
                        continue
                    mixture_results.append(result)
                    mixture_paths.extend(
                        entry["path"] for entry in result["fits"].values() if entry.get("path")
                    )
        plans, whatifs, plan_problems = _with_runner(plan_specs, runner)(
            discover_specs(specs), lake
        )
        problems.extend(plan_problems)
        fits = load_fits(fit_paths)
        new_runs = new_runs_since(lake, previous.get("versions", {}).get("runs"))
        drift = check_drift(
            previous,
            new_runs=new_runs,
            previous_fits=previous_fits,
            plans={name: flatten_plan(result) for name, result in plans.items()},
        )
        publish_drift(drift)
        paths = render_report(
            lake=lake,
            reports=reports,
            fits=fits,
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
                "plans": {name: flatten_plan(result) for name, result in plans.items()},
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
        "plans": {name: _status(result) for name, result in plans.items()},
        "drift": drift.summary(),
        "problems": problems,
        "ingest": ingest_summary,
    }


def _status(result: Any) -> str:
    if isinstance(result, dict):
        return str(result.get("status", "unknown"))
    return str(getattr(result, "status", "unknown"))
