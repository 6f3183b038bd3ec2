"""Turn a table of runs (polars) into the arrays a fit needs, grouped by run for the bootstrap.

Input columns: ``run_id`` (optional: each row is its own run when absent), ``loss`` and the
columns the law reads (``params``, ``tokens``, ``unique_tokens``, ``non_vocab_params``,
``vocab_params``, ``s1``, ``s2``); ``flops`` is used for backtests and extrapolation checks and
defaults to ``6 * params * tokens``. Several rows may belong to one run (checkpoints): the
bootstrap resamples runs, never rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from mixplan.planning.errors import FitError, SchemaError
from mixplan.planning.fitting.specs import FitSpec

OUTLIER_RULES = ("none", "drop_highest_loss:<k>", "min_flops:<value>")
"""Outlier rules understood by :func:`apply_outlier_rule` (recorded with every fit)."""


@dataclass(frozen=True)
class FitData:
    """The arrays of one fit: law columns, loss, run grouping and compute per row."""

    columns: dict[str, np.ndarray]
    loss: np.ndarray
    run_index: np.ndarray
    run_ids: tuple[str, ...]
    flops: np.ndarray
    frame: pl.DataFrame
    spec_name: str

    @property
    def n_runs(self) -> int:
        """Number of distinct runs."""
        return len(self.run_ids)

    @property
    def n_points(self) -> int:
        """Number of rows (checkpoints)."""
        return int(self.loss.size)

    def subset(self, keep: np.ndarray) -> FitData:
        """The rows where ``keep`` is true."""
        from mixplan.planning.fitting.specs import SPECS

        return prepare_frame(self.frame.filter(pl.Series(np.asarray(keep))), SPECS[self.spec_name])


def apply_outlier_rule(frame: pl.DataFrame, rule: str) -> pl.DataFrame:
    """Apply an outlier rule: ``"none"``, ``"drop_highest_loss:5"`` or ``"min_flops:2.18e17"``."""
    if rule in ("", "none"):
        return frame
    match = re.fullmatch(r"drop_highest_loss:(\d+)", rule)
    if match:
        k = int(match.group(1))
        return frame.sort("loss").head(max(frame.height - k, 0))
    match = re.fullmatch(r"min_flops:([0-9.eE+-]+)", rule)
    if match:
        return frame.filter(pl.col("flops") >= float(match.group(1)))
    raise FitError(f"unknown outlier rule {rule!r}; use one of {OUTLIER_RULES}")


def prepare_frame(frame: pl.DataFrame, spec: FitSpec) -> FitData:
    """Validate ``frame`` for ``spec`` and build :class:`FitData` (rows sorted by run, then row).

    Raises
    ------
    SchemaError
        When a column the law needs is missing.
    FitError
        When values are missing or non-positive where the law takes logarithms.
    """
    needed = [*spec.columns, "loss"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{spec.name} fit: columns {missing} missing; the table has {frame.columns}. "
            f"Select runs that log {needed}."
        )
    if "run_id" not in frame.columns:
        frame = frame.with_row_index("run_id").with_columns(pl.col("run_id").cast(pl.String))
    if "flops" not in frame.columns:
        if "params" in frame.columns and "tokens" in frame.columns:
            frame = frame.with_columns((6.0 * pl.col("params") * pl.col("tokens")).alias("flops"))
        else:
            frame = frame.with_columns(pl.lit(np.nan).alias("flops"))
    frame = frame.filter(pl.all_horizontal(pl.col(needed).is_not_null()))
    if frame.height == 0:
        raise FitError(f"{spec.name} fit: no rows with all of {needed}")
    frame = frame.with_row_index("_row").sort(["run_id", "_row"]).drop("_row")
    columns = {c: frame[c].cast(pl.Float64).to_numpy() for c in spec.columns}
    for name, values in columns.items():
        if name not in ("s2",) and np.any(values <= 0):
            bad = frame.filter(pl.col(name) <= 0)["run_id"].head(3).to_list()
            raise FitError(
                f"{spec.name} fit: column {name!r} must be positive; runs {bad} are not. "
                "Drop or fix them before fitting."
            )
    run_ids, run_index = np.unique(frame["run_id"].to_numpy().astype(str), return_inverse=True)
    return FitData(
        columns=columns,
        loss=frame["loss"].cast(pl.Float64).to_numpy(),
        run_index=run_index.astype(np.int64),
        run_ids=tuple(str(r) for r in run_ids),
        flops=frame["flops"].cast(pl.Float64).to_numpy(),
        frame=frame,
        spec_name=spec.name,
    )


def run_flops(data: FitData) -> np.ndarray:
    """Compute of each run: the largest ``flops`` among its rows (``(n_runs,)``)."""
    out = np.full(data.n_runs, -np.inf)
    np.maximum.at(out, data.run_index, np.nan_to_num(data.flops, nan=-np.inf))
    return out
