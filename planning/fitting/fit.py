"""Fit any law to a table of runs: point fit, bootstrap by run, decisions, warnings, backtest.

The pure functions (:func:`prepare`, :func:`point_fit`, :func:`bootstrap_chunk`,
:func:`assemble`, :func:`fit_frame`) are what the Prefect tasks call step by step;
:class:`LawFitter` is a scikit-learn-style wrapper (``fit`` returns self, learned values end in
``_``, predicting before ``fit`` raises :class:`~mixplan.planning.errors.NotFittedError`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from mixplan.planning.errors import FitError, NotFittedError
from mixplan.planning.fitting.backtest import DEFAULT_HOLDOUT_QUANTILE, backtest
from mixplan.planning.fitting.bootstrap import bootstrap_chunk, resample_counts
from mixplan.planning.fitting.calibration import (
    NOMINAL_LEVEL,
    calibration_record,
    coverage_note,
    prediction_interval,
)
from mixplan.planning.fitting.data import FitData, apply_outlier_rule, prepare_frame
from mixplan.planning.fitting.engine import (
    SearchResult,
    objective_values,
    prediction_and_jacobian,
    residual_target,
    search,
    tie_break_relative_mse,
)
from mixplan.planning.fitting.huber import DEFAULT_DELTA, irls_weights
from mixplan.planning.fitting.isoflop import compare_with_parametric, isoflop_fits
from mixplan.planning.fitting.result import FitResult
from mixplan.planning.fitting.rolling import ORIGINS, last_rows, rolling_origin
from mixplan.planning.fitting.specs import SPECS, FitSpec
from mixplan.planning.laws.base import Law
from mixplan.planning.provenance import code_version, frame_hash

logger = logging.getLogger(__name__)

__all__ = [
    "LawFitter",
    "assemble",
    "bootstrap_chunk",
    "decision_values",
    "fit_frame",
    "fit_options",
    "get_spec",
    "point_fit",
    "predict_with_interval",
    "prepare",
    "resample_counts",
    "warm_starts",
]

MIN_RUNS_PER_PARAM = 3
MIN_SIZES = 3
EXTRAPOLATION_LIMIT = 10.0
ISOFLOP_LAWS = ("chinchilla",)
"""Laws whose fits are compared with isoFLOP approaches 1 and 2 (exponents alpha, beta)."""


def get_spec(law: str | FitSpec) -> FitSpec:
    """The fit spec of a law name (``chinchilla``, ``muennighoff``, ``tao``, ...)."""
    if isinstance(law, FitSpec):
        return law
    if law not in SPECS:
        raise FitError(f"no fitting recipe for law {law!r}; known: {sorted(SPECS)}")
    return SPECS[law]


def prepare(frame: pl.DataFrame, law: str | FitSpec, *, outlier_rule: str = "none") -> FitData:
    """Apply the outlier rule and build the fit arrays (see ``mixplan.planning.fitting.data``)."""
    spec = get_spec(law)
    if "flops" not in frame.columns and {"params", "tokens"} <= set(frame.columns):
        frame = frame.with_columns((6.0 * pl.col("params") * pl.col("tokens")).alias("flops"))
    return prepare_frame(apply_outlier_rule(frame, outlier_rule), spec)


def point_fit(
    data: FitData,
    law: str | FitSpec,
    *,
    delta: float = DEFAULT_DELTA,
    grid: Mapping[str, Sequence[float]] | None = None,
    keep: int = 3,
    tie_break: str | None = None,
    tie_tolerance: float = 1e-5,
) -> SearchResult:
    """The full-data fit: vectorised multi-start search over the grid, then L-BFGS-B polish.

    ``tie_break="relative_mse"`` then moves along the (flat) optimum to the point of least
    relative MSE whose objective is within ``tie_tolerance`` of the best (Tao et al.'s selection).
    """
    spec = get_spec(law)
    starts = spec.grid_points({k: np.asarray(v, float) for k, v in grid.items()}) if grid else None
    result = search(spec, data.columns, data.loss, delta=delta, starts=starts, keep=keep)
    if tie_break is None:
        return result
    if tie_break != "relative_mse":
        raise FitError(f"unknown tie_break {tie_break!r}; use None or 'relative_mse'")
    theta = tie_break_relative_mse(
        spec,
        data.columns,
        data.loss,
        result.theta,
        result.objective,
        delta=delta,
        tolerance=tie_tolerance,
    )
    target = residual_target(spec, data.loss)
    value = float(
        objective_values(spec, theta[None], data.columns, target, np.ones_like(target), delta)[0]
    )
    candidates = np.vstack([theta[None], result.candidates])
    return dataclasses.replace(
        result,
        theta=theta,
        objective=value,
        candidates=candidates,
        candidate_objectives=np.concatenate([[value], result.candidate_objectives]),
    )


def warm_starts(result: SearchResult, *, max_starts: int = 2, tol: float = 1e-2) -> np.ndarray:
    """Distinct polished optima (best first) used as bootstrap warm starts."""
    chosen = [result.candidates[0]]
    for cand in result.candidates[1:]:
        if len(chosen) >= max_starts:
            break
        if all(np.max(np.abs(cand - c)) > tol for c in chosen):
            chosen.append(cand)
    return np.array(chosen)


def decision_values(law: Law, flops: np.ndarray) -> dict[str, np.ndarray]:
    """Compute-optimal params, tokens, tokens per parameter and loss at each budget.

    Empty for laws without a closed-form allocation (the planner solves those).
    """
    if not hasattr(law, "compute_optimal"):
        return {}
    params, tokens = law.compute_optimal(flops)  # type: ignore[attr-defined]
    return {
        "params": np.asarray(params, float),
        "tokens": np.asarray(tokens, float),
        "tokens_per_param": np.asarray(tokens / params, float),
        "loss": np.asarray(law.predict(params, tokens), float),  # type: ignore[attr-defined]
    }


def _default_budgets(data: FitData) -> list[float]:
    top = float(np.nanmax(data.flops)) if np.isfinite(data.flops).any() else float("nan")
    if not np.isfinite(top):
        return []
    return [top, 10 * top]


def _diagnose(
    spec: FitSpec,
    data: FitData,
    result: SearchResult,
    delta: float,
    law_draws: dict[str, np.ndarray],
    budgets: list[float],
) -> list[str]:
    warnings: list[str] = []
    p = len(spec.theta_names)
    if data.n_runs < MIN_RUNS_PER_PARAM * p:
        warnings.append(
            f"too few runs: {data.n_runs} runs for {p} free parameters "
            f"(want at least {MIN_RUNS_PER_PARAM * p})"
        )
    size_col = next((c for c in ("params", "non_vocab_params") if c in data.columns), None)
    if size_col is not None:
        n_sizes = np.unique(np.round(np.log(data.columns[size_col]), 3)).size
        if n_sizes < MIN_SIZES:
            warnings.append(f"too few model sizes: {n_sizes} distinct {size_col} values")
    bounds = spec.bounds_array()
    span = bounds[:, 1] - bounds[:, 0]
    for i, name in enumerate(spec.theta_names):
        if min(result.theta[i] - bounds[i, 0], bounds[i, 1] - result.theta[i]) < 1e-6 * span[i]:
            warnings.append(f"parameter {name} = {result.theta[i]:.4g} is at its bound {bounds[i]}")
    target = residual_target(spec, data.loss)
    pred, jac = prediction_and_jacobian(spec, result.theta[None], data.columns)
    w = irls_weights(pred[0] - target, delta)
    hess = jac[0].T @ (jac[0] * w[:, None])
    scale = np.sqrt(np.maximum(np.diag(hess), 1e-300))
    corr = hess / np.outer(scale, scale)
    eigval, eigvec = np.linalg.eigh(corr)
    if eigval[0] < 1e-8 * max(eigval[-1], 1e-300):
        loading = np.argsort(-np.abs(eigvec[:, 0]))[:2]
        names = " and ".join(spec.theta_names[k] for k in loading)
        warnings.append(
            f"flat direction: the objective barely changes along a combination of {names} "
            f"(curvature ratio {eigval[0] / eigval[-1]:.1e}); trust decisions, not these values"
        )
    for name, draws in law_draws.items():
        finite = draws[np.isfinite(draws)]
        if finite.size > 10 and np.all(finite > 0):
            lo, hi = np.percentile(finite, [2.5, 97.5])
            if hi / lo > 5:
                warnings.append(
                    f"parameter {name} poorly determined: its 95% bootstrap interval spans "
                    f"{hi / lo:.1f}x ({lo:.4g} to {hi:.4g})"
                )
    top = float(np.nanmax(data.flops)) if np.isfinite(data.flops).any() else float("nan")
    for budget in budgets:
        if np.isfinite(top) and budget > EXTRAPOLATION_LIMIT * top:
            warnings.append(
                f"extrapolating {budget / top:.0f}x past the largest run "
                f"({budget:.3g} vs {top:.3g} FLOPs)"
            )
    return warnings


def assemble(
    data: FitData,
    law: str | FitSpec,
    result: SearchResult,
    *,
    name: str,
    thetas: np.ndarray | None = None,
    draw_objectives: np.ndarray | None = None,
    backtest_result: dict[str, Any] | None = None,
    budgets: Sequence[float] | None = None,
    options: Mapping[str, Any] | None = None,
    delta: float = DEFAULT_DELTA,
    origins: Sequence[Mapping[str, Any]] | None = None,
) -> FitResult:
    """Build the :class:`FitResult` from a point fit, bootstrap draws and a backtest.

    ``origins`` (this law's :func:`~mixplan.planning.fitting.rolling.rolling_origin` results on
    the same data) calibrate the prediction intervals and measure their coverage; the
    compute-optimal loss at each budget then gets its calibrated interval
    (``decisions["loss_calibrated"]``: ``[low, high]`` per budget).
    """
    spec = get_spec(law)
    point_law = spec.to_law(result.theta)
    budget_list = [float(b) for b in (budgets if budgets is not None else _default_budgets(data))]
    flops = np.asarray(budget_list, float)
    bootstrap: dict[str, np.ndarray] = {}
    decision_draws: dict[str, np.ndarray] = {}
    if thetas is not None and len(thetas):
        laws = [spec.to_law(t) for t in thetas]
        for k in type(point_law).param_names():
            bootstrap[k] = np.array([getattr(lw, k) for lw in laws], float)
        if draw_objectives is not None:
            bootstrap["objective"] = np.asarray(draw_objectives, float)
        if budget_list:
            per_draw = [decision_values(lw, flops) for lw in laws]
            if per_draw and per_draw[0]:
                decision_draws = {k: np.stack([d[k] for d in per_draw]) for k in per_draw[0]}
    point_decisions = decision_values(point_law, flops) if budget_list else {}
    decisions = {k: v.tolist() for k, v in point_decisions.items()}
    if decisions:
        decisions["flops"] = budget_list
    calibration: dict[str, Any] = {}
    if origins:
        calibration = calibration_record(spec, data, result.theta, origins)
        if "params" in decisions and spec.columns == ("params", "tokens"):
            cols = {"params": point_decisions["params"], "tokens": point_decisions["tokens"]}
            _, low, high = prediction_interval(spec, result.theta, calibration, cols, flops)
            decisions["loss_calibrated"] = np.stack([low, high], axis=1).tolist()
    law_draws = {k: v for k, v in bootstrap.items() if k != "objective"}
    isoflop: dict[str, Any] = {}
    if spec.name in ISOFLOP_LAWS and {"params", "tokens"} <= set(data.columns):
        last = last_rows(data.run_index, data.n_runs)
        iso = isoflop_fits(
            6 * data.columns["params"][last] * data.columns["tokens"][last],
            data.columns["params"][last],
            data.loss[last],
        )
        isoflop = compare_with_parametric(iso, point_law.to_dict()["params"], law_draws)
    warnings = _diagnose(spec, data, result, delta, law_draws, budget_list if decisions else [])
    if not result.converged:
        warnings.append("L-BFGS-B polish did not report convergence at the best candidate")
    data_range = {
        c: float(np.max(data.columns[c])) for c in ("params", "tokens") if c in data.columns
    }
    data_range.update(
        {
            f"{c}_min": float(np.min(data.columns[c]))
            for c in ("params", "tokens")
            if c in data.columns
        }
    )
    data_range["flops"] = float(np.nanmax(data.flops)) if np.isfinite(data.flops).any() else 0.0
    opts = {
        "law": spec.name,
        "objective": "sum of Huber(delta) over residuals",
        "residual_scale": spec.scale,
        "delta": delta,
        "parametrisation": spec.notes,
        "n_starts": result.n_starts,
        "candidates": int(result.candidates.shape[0]),
        "bootstrap": "by run",
        **dict(options or {}),
    }
    return FitResult(
        name=name,
        law=point_law,
        objective=result.objective,
        options=opts,
        data_hash=frame_hash(data.frame),
        code_version=code_version(),
        n_runs=data.n_runs,
        n_points=data.n_points,
        warnings=tuple(warnings),
        bootstrap_=bootstrap,
        decisions=decisions,
        decision_draws_=decision_draws,
        backtest=backtest_result or {},
        data_range=data_range,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        calibration=calibration,
        isoflop=isoflop,
    )


def fit_options(
    *,
    flop_convention: str,
    outlier_rule: str,
    tie_break: str | None,
    grid: Mapping[str, Sequence[float]] | None,
    n_bootstrap: int,
    seed: int,
    backtest_quantile: float | None,
    selection: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The options recorded with a fit (``FitResult.options``), JSON-ready."""
    return {
        "flop_convention": flop_convention,
        "outlier_rule": outlier_rule,
        "tie_break": tie_break,
        "grid": "default" if grid is None else {k: list(map(float, v)) for k, v in grid.items()},
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "backtest_quantile": backtest_quantile,
        "selection": dict(selection or {}),
    }


def fit_frame(
    frame: pl.DataFrame,
    law: str | FitSpec = "chinchilla",
    *,
    name: str | None = None,
    delta: float = DEFAULT_DELTA,
    grid: Mapping[str, Sequence[float]] | None = None,
    keep: int = 3,
    n_bootstrap: int = 200,
    seed: int = 0,
    backtest_quantile: float | None = DEFAULT_HOLDOUT_QUANTILE,
    budgets: Sequence[float] | None = None,
    flop_convention: str = "6ND",
    outlier_rule: str = "none",
    selection: Mapping[str, Any] | None = None,
    polish_draws: bool = False,
    tie_break: str | None = None,
    chunk_size: int | None = None,
    on_progress: Callable[[str], None] | None = None,
    extra_options: Mapping[str, Any] | None = None,
    rolling_quantiles: Sequence[float] | None = ORIGINS,
    origins: Sequence[Mapping[str, Any]] | None = None,
) -> FitResult:
    """Fit ``law`` to ``frame`` end to end (point fit, bootstrap by run, backtest, warnings).

    Parameters
    ----------
    frame : runs with ``loss``, the law's columns and optionally ``run_id`` and ``flops``.
    law : a law name from ``mixplan.planning.fitting.specs.SPECS`` or a :class:`FitSpec`.
    delta : Huber delta on the residual scale.
    grid : start grid per free parameter (default: the spec's grid; 4,500 points for Chinchilla).
    n_bootstrap : bootstrap draws (resampling runs); 0 for none.
    backtest_quantile : compute quantile of the backtest cut-off; ``None`` to skip.
    budgets : FLOP budgets for decision intervals (default: largest run x 1 and x 10).
    flop_convention, outlier_rule, selection : recorded with the fit (the rule is applied).
    chunk_size : bootstrap draws refitted per batch (default all at once; same draws either way).
    on_progress : called with a short description after the point fit, each bootstrap batch and
        the backtest.
    extra_options : recorded with the fit next to the options above (e.g. the recipe).
    rolling_quantiles : origins of the rolling backtests that calibrate the prediction
        intervals (:mod:`~mixplan.planning.fitting.calibration`); ``None`` to skip.
    origins : those backtests already run on the same table (a leaderboard's), reused as is.
    """
    progress = on_progress or (lambda _: None)
    spec = get_spec(law)
    data = prepare(frame, spec, outlier_rule=outlier_rule)
    result = point_fit(data, spec, delta=delta, grid=grid, keep=keep, tie_break=tie_break)
    progress("point fit")
    thetas = objectives = None
    if n_bootstrap > 0:
        counts = resample_counts(data.n_runs, n_bootstrap, seed)
        step = chunk_size or n_bootstrap
        draws = []
        for start in range(0, n_bootstrap, step):
            draws.append(
                bootstrap_chunk(
                    spec,
                    data,
                    warm_starts(result),
                    counts[start : start + step],
                    delta=delta,
                    polish_draws=polish_draws,
                )
            )
            progress(f"bootstrap {min(start + step, n_bootstrap)}/{n_bootstrap}")
        thetas = np.concatenate([t for t, _ in draws])
        objectives = np.concatenate([o for _, o in draws])
    bt = None
    if backtest_quantile is not None:
        starts = None
        if grid:
            starts = spec.grid_points({k: np.asarray(v, float) for k, v in grid.items()})
        bt = backtest(spec, data, quantile=backtest_quantile, delta=delta, starts=starts)
        progress("backtest")
    if origins is None and rolling_quantiles:
        origins = rolling_origin(spec, data, quantiles=rolling_quantiles, delta=delta)
        progress("calibration")
    options = fit_options(
        flop_convention=flop_convention,
        outlier_rule=outlier_rule,
        tie_break=tie_break,
        grid=grid,
        n_bootstrap=n_bootstrap,
        seed=seed,
        backtest_quantile=backtest_quantile,
        selection=selection,
    )
    return assemble(
        data,
        spec,
        result,
        name=name or spec.name,
        thetas=thetas,
        draw_objectives=objectives,
        backtest_result=bt,
        budgets=budgets,
        options={**options, **dict(extra_options or {})},
        delta=delta,
        origins=origins,
    )


def predict_with_interval(
    fit: FitResult, frame: pl.DataFrame, *, level: float = NOMINAL_LEVEL
) -> pl.DataFrame:
    """Predicted loss with an interval for every row of ``frame``.

    The interval is the calibrated prediction interval when the fit has a calibration
    (:mod:`~mixplan.planning.fitting.calibration`: it covers held-out runs, not only the
    curve), else the bootstrap percentile interval of the curve. Adds ``predicted_loss``,
    ``loss_low``, ``loss_high``, ``interval`` (which kind, with the measured coverage) and
    ``extrapolation`` (how many times the row's compute exceeds the largest fitted run; > 10
    deserves caution).
    """
    law_name = fit.options.get("law", fit.law.name)
    if law_name not in SPECS:
        raise FitError(
            f"fit {fit.name!r} is a {law_name} law, which does not predict loss; "
            "use the law's own methods (e.g. StepLaw.learning_rate, .batch_size)"
        )
    spec = get_spec(law_name)
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise FitError(
            f"fit {fit.name!r} ({spec.name}) needs columns {list(spec.columns)}; "
            f"{missing} missing from the rows given"
        )
    cols = {c: frame[c].cast(pl.Float64).to_numpy() for c in spec.columns}
    theta = spec.theta_of(fit.law)
    point = spec.predict_loss(theta[None], cols)[0]
    if "flops" in frame.columns:
        flops = frame["flops"].cast(pl.Float64).to_numpy()
    elif {"params", "tokens"} <= set(frame.columns):
        flops = 6 * frame["params"].to_numpy() * frame["tokens"].to_numpy()
    else:
        flops = np.full_like(point, np.nan)
    low = high = np.full_like(point, np.nan)
    kind = "none"
    if fit.calibration:
        _, low, high = prediction_interval(spec, theta, fit.calibration, cols, flops, level)
        kind = f"calibrated {level:.0%}, {coverage_note(fit.calibration)}"
    elif fit.n_bootstrap:
        thetas = np.array([spec.theta_of(lw) for lw in fit.law_draws()])
        draws = spec.predict_loss(thetas, cols)
        q = 100 * (1 - level) / 2
        low, high = np.nanpercentile(draws, [q, 100 - q], axis=0)
        kind = f"bootstrap {level:.0%} (curve only, coverage not measured)"
    top = fit.data_range.get("flops") or np.nan
    return frame.with_columns(
        pl.Series("predicted_loss", point),
        pl.Series("loss_low", low),
        pl.Series("loss_high", high),
        pl.lit(kind).alias("interval"),
        pl.Series("extrapolation", flops / top),
    )


class LawFitter:
    """scikit-learn-style estimator over :func:`fit_frame`.

    Examples
    --------
    >>> fitter = LawFitter("chinchilla", n_bootstrap=100).fit(frame)  # doctest: +SKIP
    >>> fitter.law_, fitter.bootstrap_["alpha"].std()  # doctest: +SKIP
    """

    def __init__(self, law: str = "chinchilla", **options: Any) -> None:
        self.law = law
        self.options = options

    def fit(self, frame: pl.DataFrame) -> LawFitter:
        """Fit to ``frame``; returns self."""
        self.result_ = fit_frame(frame, self.law, **self.options)
        self.law_ = self.result_.law
        self.bootstrap_ = self.result_.bootstrap_
        self.backtest_ = self.result_.backtest
        self.warnings_ = self.result_.warnings
        return self

    def _check(self) -> FitResult:
        if not hasattr(self, "result_"):
            raise NotFittedError(
                f"this LawFitter({self.law!r}) is not fitted yet; call .fit(frame) first"
            )
        return self.result_

    def predict(self, frame: pl.DataFrame, *, level: float = NOMINAL_LEVEL) -> pl.DataFrame:
        """Predicted loss and interval for each row (see :func:`predict_with_interval`)."""
        return predict_with_interval(self._check(), frame, level=level)

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
        """Parameter and decision intervals of the fitted law."""
        return self._check().intervals(level)
