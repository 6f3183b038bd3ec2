"""Each run's loss at a target number of training tokens, and what extrapolating it costs.

The step (tokens) stage of the mixture routes. A run's curve is read at the target D by

- **interpolation** when D lies inside the run's logged checkpoints (log loss linear in log
  tokens between the two neighbouring checkpoints; exact at a checkpoint), and
- **extrapolation** past the last checkpoint with a power law with a floor on the run's tail,
  ``L(D) = E + (D0 / D)^alpha`` (the batched fits of :mod:`mixplan.planning.mixture.nested`).

Extrapolating a loss curve in training length is where mixture predictions break: the power law
knows nothing about the learning-rate schedule (a cosine run's last steps fall faster than its
middle predicts; a truncated constant-LR curve keeps falling). So every extrapolation is
measured first: :func:`step_backtest` fits the same law on the early part of every run's own
curve and predicts its last checkpoint from ``ratio`` times fewer tokens. Predictions past
``ratio`` x the last logged step carry that measured error in a warning, and beyond
``max_ratio`` they are refused (:class:`mixplan.planning.errors.ExtrapolationError`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.errors import ExtrapolationError, FitError
from mixplan.planning.mixture.data import MixtureData
from mixplan.planning.mixture.engine import DEFAULT_DELTA
from mixplan.planning.mixture.nested import TOKENS_UNIT, MixtureCurves, fit_floor_power_laws

MAX_RATIO = 3.0
"""Default refusal threshold: target tokens over a run's last logged tokens."""
TAIL = 0.3
"""The step law is fitted on checkpoints with tokens >= TAIL x the last fitted tokens (the early
part of a curve is shaped by warm-up, not by the law)."""


@dataclass(frozen=True)
class StepBacktest:
    """How well the step law predicts a run's last checkpoint from ``ratio`` x fewer tokens.

    Attributes
    ----------
    ratio
        Extrapolation factor tested (last tokens / last fitted tokens).
    mae, max_error, rmse
        Mean, largest and root-mean-square absolute error (nats) over every (run, domain)
        backtested; ``rmse`` is what the routes' intervals take in (``tokens_error``).
    bias
        Mean signed error (prediction - observed).
    points
        (run, domain) pairs backtested (runs with at least 3 checkpoints in the fitted part).
    """

    ratio: float
    mae: float
    max_error: float
    bias: float
    points: int
    rmse: float


@dataclass(frozen=True)
class StepStage:
    """What the step stage did for one target D.

    Attributes
    ----------
    tokens
        Target training tokens.
    interpolated, extrapolated, dropped
        Runs read inside their logged range, extrapolated past it, and left out (their first
        checkpoint is after the target: a curve is not extrapolated backwards).
    max_ratio
        Largest target / last-logged-tokens ratio among the extrapolated runs (1 if none).
    backtest
        The measured error of extrapolating by ``max_ratio`` (``None`` when nothing was
        extrapolated or no run is long enough to backtest).
    warning
        A sentence for the user when runs were extrapolated, else ``""``.
    """

    tokens: float
    interpolated: int
    extrapolated: int
    dropped: int
    max_ratio: float
    backtest: StepBacktest | None
    warning: str


def _curve_order(curves: MixtureCurves) -> np.ndarray:
    return np.lexsort((curves.tokens, curves.row_run))


def _fit_tails(
    curves: MixtureCurves, runs: np.ndarray, last_tokens: np.ndarray, *, delta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor power laws on each (run, domain) tail of checkpoints with tokens <= last_tokens.

    Returns the fits' group ids ``run * domains + domain``, the fits, and a mask of the groups
    that had enough points.
    """
    domains = len(curves.domains)
    row, column = np.nonzero(np.isfinite(curves.losses))
    run = curves.row_run[row]
    tokens = curves.tokens[row]
    limit = np.full(len(curves.run_ids), -np.inf)
    limit[runs] = last_tokens
    keep = (tokens <= limit[run] * (1 + 1e-9)) & (tokens >= TAIL * limit[run])
    groups = run[keep] * domains + column[keep]
    counts = np.bincount(groups, minlength=len(curves.run_ids) * domains)
    enough = counts >= 3
    use = enough[groups]
    ids, dense = np.unique(groups[use], return_inverse=True)
    if ids.size == 0:
        return ids, np.empty((0, 3)), enough
    fits = fit_floor_power_laws(
        tokens[keep][use] / TOKENS_UNIT,
        curves.losses[row[keep][use], column[keep][use]],
        dense,
        len(ids),
        delta=delta,
    )
    return ids, fits.theta, enough


def step_backtest(
    curves: MixtureCurves, ratio: float, *, delta: float = DEFAULT_DELTA
) -> StepBacktest | None:
    """Fit the step law on each run's checkpoints up to ``last / ratio``; predict the last one.

    Parameters
    ----------
    curves
        Checkpoints of the runs.
    ratio
        Extrapolation factor to measure (> 1).
    delta
        Huber threshold of the step laws.

    Returns
    -------
    StepBacktest or None
        ``None`` when no run has three checkpoints in its fitted part.
    """
    if ratio <= 1:
        raise FitError(f"step backtest: ratio must exceed 1, got {ratio}")
    order = _curve_order(curves)
    last = np.full(len(curves.run_ids), -1)
    last[curves.row_run[order]] = order
    runs = np.arange(len(curves.run_ids))
    ids, theta, _ = _fit_tails(curves, runs, curves.tokens[last] / ratio, delta=delta)
    if ids.size == 0:
        return None
    domains = len(curves.domains)
    run, column = ids // domains, ids % domains
    x = curves.tokens[last[run]] / TOKENS_UNIT
    predicted = theta[:, 0] + np.exp(theta[:, 2] * (theta[:, 1] - np.log(x)))
    observed = curves.losses[last[run], column]
    ok = np.isfinite(observed)
    error = predicted[ok] - observed[ok]
    if error.size == 0:
        return None
    return StepBacktest(
        ratio=float(ratio),
        mae=float(np.mean(np.abs(error))),
        max_error=float(np.max(np.abs(error))),
        bias=float(np.mean(error)),
        points=int(error.size),
        rmse=float(np.sqrt(np.mean(error**2))),
    )


def _logged_range(curves: MixtureCurves) -> tuple[np.ndarray, np.ndarray]:
    """First and last logged tokens of every run."""
    first = np.full(len(curves.run_ids), np.inf)
    last = np.zeros(len(curves.run_ids))
    np.minimum.at(first, curves.row_run, curves.tokens)
    np.maximum.at(last, curves.row_run, curves.tokens)
    return first, last


def _refuse_past(
    curves: MixtureCurves, tokens: float, ratio: np.ndarray, last: np.ndarray, max_ratio: float
) -> None:
    if np.any(ratio > max_ratio * (1 + 1e-9)):
        worst = int(np.argmax(ratio))
        raise ExtrapolationError(
            f"step stage: D = {tokens:.4g} tokens is {ratio[worst]:.3g}x past the last logged "
            f"checkpoint of run {curves.run_ids[worst]} ({last[worst]:.4g} tokens); the step law "
            f"is not trusted beyond {max_ratio:g}x. Train the proxies longer, plan at a smaller "
            "D, or raise max_ratio knowingly"
        )


def _measured(backtest: StepBacktest | None) -> str:
    if backtest is None:
        return "no run is long enough to backtest that extrapolation"
    return (
        f"backtested on these runs' own curves, extrapolating {backtest.ratio:.2g}x misses "
        f"the last checkpoint by {backtest.mae:.3g} nats on average "
        f"(max {backtest.max_error:.3g}, bias {backtest.bias:+.3g})"
    )


def extrapolation_warning(
    curves: MixtureCurves,
    tokens: float,
    *,
    max_ratio: float = MAX_RATIO,
    delta: float = DEFAULT_DELTA,
) -> tuple[str, StepBacktest | None]:
    """The guard of any route that extrapolates run curves to ``tokens``.

    Returns ``("", None)`` when every run reaches ``tokens``, else a sentence with how far past
    its last checkpoint the farthest run goes and the backtested error of extrapolating that
    far, with that backtest (``None`` when no run is long enough for one).

    Raises
    ------
    ExtrapolationError
        If a run would be extrapolated past ``max_ratio`` x its last logged tokens.
    """
    _, last = _logged_range(curves)
    ratio = tokens / last
    _refuse_past(curves, tokens, ratio, last, max_ratio)
    beyond = ratio > 1 + 1e-9
    if not beyond.any():
        return "", None
    backtest = step_backtest(curves, float(ratio[beyond].max()), delta=delta)
    return (
        f"{int(beyond.sum())} runs end before D = {tokens:.4g} tokens (up to "
        f"{ratio[beyond].max():.2g}x past their last checkpoint); their losses there come from "
        f"a power law with a floor on each curve: {_measured(backtest)}",
        backtest,
    )


def tokens_error(backtest: StepBacktest | None) -> float:
    """The error a route's interval takes in for reading the runs at a D past their last
    checkpoint: the RMSE of the step law's backtest over that extrapolation (0 when nothing is
    extrapolated; 0 too when no run is long enough to backtest it, which the route's warning
    then says)."""
    return 0.0 if backtest is None else backtest.rmse


def losses_at_tokens(
    curves: MixtureCurves,
    tokens: float,
    *,
    max_ratio: float = MAX_RATIO,
    delta: float = DEFAULT_DELTA,
) -> tuple[MixtureData, StepStage]:
    """Every run's loss per domain at ``tokens`` training tokens.

    Parameters
    ----------
    curves
        Checkpoints of the runs.
    tokens
        Target training tokens D.
    max_ratio
        Refuse when a run would be extrapolated past ``max_ratio`` x its last logged tokens.
    delta
        Huber threshold of the step laws.

    Returns
    -------
    tuple
        ``(data, stage)``: one row per kept run (``data.tokens`` is the target D) and what the
        stage did, with the backtested error of any extrapolation.

    Raises
    ------
    ExtrapolationError
        If some run would be extrapolated past ``max_ratio`` x its last logged tokens.
    FitError
        If no run reaches the target even by extrapolation.
    """
    if not tokens > 0:
        raise FitError(f"step stage: target tokens must be positive, got {tokens}")
    runs, domains = len(curves.run_ids), len(curves.domains)
    first, last = _logged_range(curves)
    ratio = tokens / last
    _refuse_past(curves, tokens, ratio, last, max_ratio)
    inside = (first <= tokens * (1 + 1e-9)) & (ratio <= 1 + 1e-9)
    beyond = ratio > 1 + 1e-9
    out = np.full((runs, domains), np.nan)
    log_target = np.log(tokens)
    for r in np.flatnonzero(inside):
        rows = np.flatnonzero(curves.row_run == r)
        rows = rows[np.argsort(curves.tokens[rows])]
        log_x = np.log(curves.tokens[rows])
        for d in range(domains):
            y = curves.losses[rows, d]
            ok = np.isfinite(y)
            if ok.sum() >= 1 and log_x[ok][0] <= log_target + 1e-12:
                out[r, d] = np.exp(np.interp(log_target, log_x[ok], np.log(y[ok])))
    backtest = None
    if beyond.any():
        ids, theta, _ = _fit_tails(curves, np.flatnonzero(beyond), last[beyond], delta=delta)
        run, column = ids // domains, ids % domains
        x = tokens / TOKENS_UNIT
        out[run, column] = theta[:, 0] + np.exp(theta[:, 2] * (theta[:, 1] - np.log(x)))
        backtest = step_backtest(curves, float(ratio[beyond].max()), delta=delta)
    keep = np.all(np.isfinite(out), axis=1)
    if not keep.any():
        raise FitError(
            f"step stage: no run has a loss for every domain at D = {tokens:.4g} tokens "
            "(runs start after it, or too few checkpoints to extrapolate)"
        )
    warning = ""
    if beyond.any():
        warning = (
            f"{int(beyond[keep].sum())} runs end before D = {tokens:.4g} tokens (up to "
            f"{ratio[beyond].max():.2g}x past their last checkpoint); their losses there come "
            f"from a power law with a floor on each curve's tail: {_measured(backtest)}"
        )
    index = np.flatnonzero(keep)
    data = MixtureData(
        run_ids=tuple(curves.run_ids[i] for i in index),
        sources=curves.sources,
        domains=curves.domains,
        mixture=curves.mixture[index],
        losses=out[index],
        params=curves.params[index],
        tokens=np.full(len(index), float(tokens)),
    )
    stage = StepStage(
        tokens=float(tokens),
        interpolated=int(np.sum(inside & keep)),
        extrapolated=int(np.sum(beyond & keep)),
        dropped=int(np.sum(~keep)),
        max_ratio=float(max(1.0, ratio[beyond].max())) if beyond.any() else 1.0,
        backtest=backtest,
        warning=warning,
    )
    return data, stage
