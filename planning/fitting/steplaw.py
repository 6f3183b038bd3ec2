"""Fit the StepLaw hyperparameter laws from a learning-rate / batch-size sweep (laws.md 1.7).

Selection rule (step-law/steplaw ``query_optimal_lr_bs_data``): group runs by (N, D), keep the
runs whose smoothed loss is within ``threshold`` (0.25%) of the group's best, then regress
``log lr`` on ``(log N, log D)`` and ``log batch`` (tokens) on ``log D`` by least squares.
Uncertainty: bootstrap by run over the selected runs (every row is one run), all draws solved
at once as batched normal equations.

Input columns: ``params`` (non-embedding N), ``tokens`` (D), ``learning_rate``, ``batch_size``
(tokens per step), ``loss`` (smoothed final loss), optional ``run_id``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from planning.errors import FitError, SchemaError
from planning.fitting.result import FitResult
from planning.laws.hyperparams import StepLaw
from planning.provenance import code_version, frame_hash

DEFAULT_THRESHOLD = 0.0025
REQUIRED = ("params", "tokens", "learning_rate", "batch_size", "loss")


def select_optimal_runs(
    frame: pl.DataFrame, *, threshold: float = DEFAULT_THRESHOLD
) -> pl.DataFrame:
    """Runs within ``threshold`` (relative) of their (params, tokens) group's best loss."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise SchemaError(f"StepLaw fit: columns {missing} missing; the table has {frame.columns}")
    frame = frame.filter(pl.all_horizontal(pl.col(list(REQUIRED)).is_not_null()))
    best = frame.group_by("params", "tokens").agg(pl.col("loss").min().alias("_best"))
    return (
        frame.join(best, on=["params", "tokens"])
        .filter((pl.col("loss") / pl.col("_best") - 1).abs() < threshold)
        .drop("_best")
        .sort("params", "tokens", "learning_rate", "batch_size")
    )


def _solve(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Batched least squares: design ``(B, n, p)``, target ``(B, n)`` -> ``(B, p)``."""
    gram = np.einsum("bnp,bnq->bpq", design, design)
    rhs = np.einsum("bnp,bn->bp", design, target)
    return np.linalg.solve(gram, rhs[..., None])[..., 0]


def _coefficients(log_n: np.ndarray, log_d: np.ndarray, log_lr: np.ndarray, log_bs: np.ndarray):
    ones = np.ones_like(log_n)
    lr = _solve(np.stack([ones, log_n, log_d], -1), log_lr)
    bs = _solve(np.stack([ones, log_d], -1), log_bs)
    return lr, bs


def _law(lr: np.ndarray, bs: np.ndarray) -> StepLaw:
    return StepLaw(
        lr_coef=float(np.exp(lr[0])),
        lr_params_exp=float(lr[1]),
        lr_tokens_exp=float(lr[2]),
        bs_coef=float(np.exp(bs[0])),
        bs_tokens_exp=float(bs[1]),
    )


def fit_steplaw(
    frame: pl.DataFrame,
    *,
    name: str = "steplaw",
    threshold: float = DEFAULT_THRESHOLD,
    n_bootstrap: int = 200,
    seed: int = 0,
    backtest_quantile: float | None = 0.8,
    selection: dict[str, Any] | None = None,
) -> FitResult:
    """Fit StepLaw with the published selection rule; bootstrap by run; backtest on compute.

    The backtest fits on the (N, D) groups with compute ``6 N D`` at or below the quantile
    cut-off and reports the relative error of the predicted optimal learning rate and batch
    size on the groups above it (against their best run).
    """
    selected = select_optimal_runs(frame, threshold=threshold)
    n_groups = selected.select(pl.struct("params", "tokens").n_unique()).item()
    if n_groups < 4:
        raise FitError(f"StepLaw fit: only {n_groups} (N, D) groups; need at least 4")
    cols = [
        np.log(selected[c].cast(pl.Float64).to_numpy())
        for c in ("params", "tokens", "learning_rate", "batch_size")
    ]
    lr, bs = _coefficients(*(c[None] for c in cols))
    law = _law(lr[0], bs[0])
    bootstrap: dict[str, np.ndarray] = {}
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, selected.height, size=(n_bootstrap, selected.height))
        lr_b, bs_b = _coefficients(*(c[idx] for c in cols))
        bootstrap = {
            "lr_coef": np.exp(lr_b[:, 0]),
            "lr_params_exp": lr_b[:, 1],
            "lr_tokens_exp": lr_b[:, 2],
            "bs_coef": np.exp(bs_b[:, 0]),
            "bs_tokens_exp": bs_b[:, 1],
        }
    residual = cols[2] - (lr[0, 0] + lr[0, 1] * cols[0] + lr[0, 2] * cols[1])
    warnings = []
    if n_groups < 10:
        warnings.append(f"too few (N, D) groups: {n_groups}")
    backtest = _backtest(selected, backtest_quantile) if backtest_quantile else {}
    flops = 6 * selected["params"].to_numpy() * selected["tokens"].to_numpy()
    return FitResult(
        name=name,
        law=law,
        objective=float(np.sum(residual**2)),
        options={
            "law": "steplaw",
            "objective": "least squares on log lr (N, D) and log batch size (D)",
            "selection_rule": f"within {threshold:.2%} of the best smoothed loss per (N, D)",
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "bootstrap": "by run (selected runs)",
            "batch_size_unit": "tokens",
            "params": "non-embedding",
            "selection": dict(selection or {}),
        },
        data_hash=frame_hash(frame),
        code_version=code_version(),
        n_runs=selected.height,
        n_points=selected.height,
        warnings=tuple(warnings),
        bootstrap_=bootstrap,
        backtest=backtest,
        data_range={
            "params": float(selected["params"].max()),
            "tokens": float(selected["tokens"].max()),
            "flops": float(flops.max()),
        },
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _backtest(selected: pl.DataFrame, quantile: float) -> dict[str, Any]:
    groups = selected.with_columns((6 * pl.col("params") * pl.col("tokens")).alias("_c"))
    cutoff = float(np.quantile(groups["_c"].unique().to_numpy(), quantile))
    train = groups.filter(pl.col("_c") <= cutoff)
    test = groups.filter(pl.col("_c") > cutoff)
    if train.select(pl.struct("params", "tokens").n_unique()).item() < 4 or test.height == 0:
        return {"status": "skipped: too few (N, D) groups on one side of the cut-off"}
    cols = [
        np.log(train[c].cast(pl.Float64).to_numpy())[None]
        for c in ("params", "tokens", "learning_rate", "batch_size")
    ]
    lr, bs = _coefficients(*cols)
    law = _law(lr[0], bs[0])
    best = test.sort("loss").group_by("params", "tokens", maintain_order=True).first()
    pred_lr = law.learning_rate(best["params"].to_numpy(), best["tokens"].to_numpy())
    pred_bs = law.batch_size(best["tokens"].to_numpy())
    err_lr = np.abs(pred_lr / best["learning_rate"].to_numpy() - 1)
    err_bs = np.abs(pred_bs / best["batch_size"].to_numpy() - 1)
    return {
        "status": "ok",
        "quantile": quantile,
        "cutoff_flops": cutoff,
        "n_test_runs": best.height,
        "law": law.to_dict(),
        "median_relative_error": float(np.median(err_lr)),
        "max_relative_error": float(np.max(err_lr)),
        "median_relative_error_batch": float(np.median(err_bs)),
        "max_relative_error_batch": float(np.max(err_bs)),
        "target": "optimal learning rate (batch size in *_batch)",
    }
