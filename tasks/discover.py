"""What a pipeline run works on: the plan specs, and the lake's experiments and fingerprint."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from mixplan.planning.errors import SpecError
from mixplan.planning.experiments import held_out_pairs


@task(name="discover-specs", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def discover_specs(specs: str) -> dict[str, dict]:
    """Every ``*.toml`` plan spec in a folder (or one file), parsed, by file stem.

    Raises :class:`SpecError` naming the file when one is not valid TOML.
    """
    root = Path(specs)
    files = [root] if root.is_file() else sorted(root.glob("*.toml"))
    parsed = {}
    for path in files:
        try:
            parsed[path.stem] = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise SpecError(
                f"{path}: not valid TOML ({error}); fix that line or move the file out of {root}"
            ) from error
    return parsed


@task(name="lake-fingerprint", retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def lake_fingerprint(lake: str) -> dict[str, Any]:
    """The lake's table versions and per-source content hashes (the fit cache's input)."""
    from mixplan.tasks.lake import lake_version, source_hashes

    return {"versions": lake_version(lake), "sources": source_hashes(lake)}


@task(name="lake-experiments", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def lake_experiments(lake: str) -> list[str]:
    """Every experiment in the lake, sorted."""
    from mixplan.tasks.lake import read_runs

    return read_runs(lake).get_column("experiment").unique().sort().to_list()


@task(name="mixture-experiments", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def mixture_experiments(lake: str) -> list[tuple[str, str | None]]:
    """Experiments whose runs trained on more than one source, each with the experiment that
    scores its laws (:func:`mixplan.planning.experiments.held_out_pairs`), sorted."""
    import polars as pl

    from mixplan.tasks.lake import read_runs

    runs = read_runs(lake)
    if runs.height == 0:
        return []
    mixed = runs.filter(pl.col("mixture").list.len() > 1).get_column("experiment")
    return held_out_pairs(mixed.unique().sort().to_list())
