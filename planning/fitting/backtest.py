"""Backtest built into every fit: fit below a compute cut-off, predict the larger runs.

The default cut-off is the 80th percentile of run compute ("fit on C below the top 20% of
compute, predict the rest"). Errors are relative, ``|predicted - observed| / |observed|``, per
held-out run (its last row, the largest token count) and summarised by the median and maximum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixplan.planning.errors import FitError
from mixplan.planning.fitting.data import FitData, run_flops
from mixplan.planning.fitting.engine import search
from mixplan.planning.fitting.huber import DEFAULT_DELTA
from mixplan.planning.fitting.specs import FitSpec

DEFAULT_HOLDOUT_QUANTILE = 0.8


def backtest(
    spec: FitSpec,
    data: FitData,
    *,
    quantile: float = DEFAULT_HOLDOUT_QUANTILE,
    delta: float = DEFAULT_DELTA,
    starts: np.ndarray | None = None,
    keep: int = 4,
) -> dict[str, Any]:
    """Fit on runs with compute below the ``quantile`` cut-off; predict the runs above it.

    Returns
    -------
    dict with ``cutoff_flops``, ``quantile``, ``n_train_runs``, ``n_test_runs``, ``law`` (the
    backtest fit), ``runs`` (per held-out run: ``run_id``, ``flops``, ``observed``,
    ``predicted``, ``relative_error``) and ``median_relative_error``, ``max_relative_error``,
    ``mean_signed_relative_error``. ``status`` is ``"ok"`` or says why it could not run.
    """
    flops = run_flops(data)
    if not np.all(np.isfinite(flops)):
        if "s1" in data.columns:
            return _backtest_steps(spec, data, quantile=quantile, delta=delta, starts=starts)
        return {"status": "skipped: runs have no compute (flops) to order them by"}
    cutoff = float(np.quantile(flops, quantile))
    train_runs = flops <= cutoff
    if train_runs.all():
        train_runs = flops < cutoff
    n_train, n_test = int(train_runs.sum()), int((~train_runs).sum())
    if n_test == 0 or n_train < len(spec.theta_names) + 1:
        return {
            "status": f"skipped: {n_train} runs below and {n_test} above the cut-off",
            "cutoff_flops": cutoff,
        }
    row_train = train_runs[data.run_index]
    train = data.subset(row_train)
    try:
        result = search(spec, train.columns, train.loss, delta=delta, starts=starts, keep=keep)
    except FitError as err:
        return {"status": f"failed: {err}", "cutoff_flops": cutoff}
    test = data.subset(~row_train)
    # last row of each held-out run (largest tokens / steps: rows are in logged order)
    last = np.zeros(test.n_runs, dtype=int)
    last[test.run_index] = np.arange(test.n_points)
    cols = {k: v[last] for k, v in test.columns.items()}
    predicted = spec.predict_loss(result.theta[None], cols)[0]
    observed = test.loss[last]
    rel = (predicted - observed) / np.abs(observed)
    test_flops = run_flops(test)
    runs = [
        {
            "run_id": rid,
            "flops": float(f),
            "observed": float(o),
            "predicted": float(p),
            "relative_error": float(abs(r)),
        }
        for rid, f, o, p, r in zip(test.run_ids, test_flops, observed, predicted, rel, strict=True)
    ]
    return {
        "status": "ok",
        "quantile": quantile,
        "cutoff_flops": cutoff,
        "n_train_runs": n_train,
        "n_test_runs": n_test,
        "law": spec.to_law(result.theta).to_dict(),
        "objective": result.objective,
        "runs": runs,
        "median_relative_error": float(np.median(np.abs(rel))),
        "max_relative_error": float(np.max(np.abs(rel))),
        "mean_signed_relative_error": float(np.mean(rel)),
    }


def _backtest_steps(
    spec: FitSpec,
    data: FitData,
    *,
    quantile: float,
    delta: float,
    starts: np.ndarray | None,
) -> dict[str, Any]:
    """Loss curves: fit the steps before the ``quantile`` of the forward area S1 (a proxy of
    compute within one model size), predict the later steps of every run."""
    s1 = data.columns["s1"]
    cutoff = float(np.quantile(s1, quantile))
    train_rows = s1 <= cutoff
    if train_rows.all() or train_rows.sum() <= len(spec.theta_names):
        return {"status": "skipped: too few steps on one side of the cut-off"}
    try:
        result = search(
            spec,
            {k: v[train_rows] for k, v in data.columns.items()},
            data.loss[train_rows],
            delta=delta,
            starts=starts,
            keep=2,
        )
    except FitError as err:
        return {"status": f"failed: {err}"}
    test_cols = {k: v[~train_rows] for k, v in data.columns.items()}
    predicted = spec.predict_loss(result.theta[None], test_cols)[0]
    observed = data.loss[~train_rows]
    rel = (predicted - observed) / np.abs(observed)
    return {
        "status": "ok",
        "quantile": quantile,
        "cutoff": "forward area S1 (steps x learning rate)",
        "cutoff_flops": cutoff,
        "n_train_runs": int(np.unique(data.run_index[train_rows]).size),
        "n_test_runs": int(np.unique(data.run_index[~train_rows]).size),
        "n_test_points": int((~train_rows).sum()),
        "law": spec.to_law(result.theta).to_dict(),
        "objective": result.objective,
        "median_relative_error": float(np.median(np.abs(rel))),
        "max_relative_error": float(np.max(np.abs(rel))),
        "mean_signed_relative_error": float(np.mean(rel)),
    }
