"""Rolling-origin backtests: fit below a compute quantile, predict the runs above, for several.

For each origin ``q`` (a quantile of run compute), the law is refitted on the runs whose compute
is at most the ``q`` cut-off and predicts the last row (largest token count) of every run above
it. Each held-out run records its observed and predicted loss, the residual on the law's scale
(log loss, or raw loss for Tao's negative unigram-normalised loss) and the *predictive scale*
of that prediction: the run-clustered delta-method standard error of the fitted curve at the
run combined with the run-level noise of the training fit. Law selection
(:mod:`~mixplan.planning.fitting.leaderboard`) scores the errors; interval calibration
(:mod:`~mixplan.planning.fitting.calibration`) scores residual / scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixplan.planning.errors import FitError
from mixplan.planning.fitting.data import FitData, run_flops
from mixplan.planning.fitting.engine import prediction_and_jacobian, residual_target, search
from mixplan.planning.fitting.huber import DEFAULT_DELTA
from mixplan.planning.fitting.specs import Columns, FitSpec

ORIGINS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Default origins: compute quantiles below which each backtest fits (above which it predicts)."""

MAD_TO_SD = 1.4826
"""Scale of the median absolute deviation to a normal standard deviation."""


@dataclass(frozen=True)
class Uncertainty:
    """What a prediction's scale needs from a fit: the run-clustered parameter covariance
    (sandwich, least-squares form) and the run-level noise, both on the law's residual scale."""

    covariance: np.ndarray
    noise: float

    def scale(self, spec: FitSpec, theta: np.ndarray, columns: Columns) -> np.ndarray:
        """Predictive standard deviation at the rows of ``columns`` (residual scale)."""
        _, jac = prediction_and_jacobian(spec, np.asarray(theta, float)[None], columns)
        var = np.einsum("np,pq,nq->n", jac[0], self.covariance, jac[0])
        return np.sqrt(np.maximum(var, 0.0) + self.noise**2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"covariance": self.covariance.tolist(), "noise": self.noise}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Uncertainty:
        """Rebuild from :meth:`to_dict`."""
        return cls(np.asarray(data["covariance"], float), float(data["noise"]))


def last_rows(run_index: np.ndarray, n_runs: int) -> np.ndarray:
    """Index of each run's last row (rows are in logged order within a run)."""
    last = np.zeros(n_runs, dtype=int)
    last[run_index] = np.arange(run_index.size)
    return last


def uncertainty(spec: FitSpec, data: FitData, theta: np.ndarray) -> Uncertainty:
    """The run-clustered sandwich covariance of ``theta`` and the run-level noise of a fit.

    ``cov = (J'J)^+ (sum_runs J_g' r_g r_g' J_g) (J'J)^+`` (checkpoints of one run share their
    noise, so they are summed before the outer product); the noise is the MAD of the residuals
    at each run's last row, scaled to a standard deviation.
    """
    target = residual_target(spec, data.loss)
    pred, jac = prediction_and_jacobian(spec, np.asarray(theta, float)[None], data.columns)
    resid = target - pred[0]
    j = jac[0]
    bread = np.linalg.pinv(j.T @ j, rcond=1e-12)
    score = np.zeros((data.n_runs, j.shape[1]))
    np.add.at(score, data.run_index, j * resid[:, None])
    meat = score.T @ score
    n, p = data.n_runs, j.shape[1]
    correction = n / max(n - p, 1)
    cov = correction * bread @ meat @ bread
    final = resid[last_rows(data.run_index, data.n_runs)]
    noise = MAD_TO_SD * float(np.median(np.abs(final - np.median(final))))
    return Uncertainty(covariance=(cov + cov.T) / 2, noise=noise)


def rolling_origin(
    spec: FitSpec,
    data: FitData,
    *,
    quantiles: Sequence[float] = ORIGINS,
    delta: float = DEFAULT_DELTA,
    starts: np.ndarray | None = None,
    keep: int = 3,
) -> list[dict[str, Any]]:
    """One backtest per origin in ``quantiles`` (see the module docstring).

    Returns
    -------
    list of dicts, one per origin: ``quantile``, ``cutoff_flops``, ``status`` (``"ok"`` or why
    not), and when ok ``n_train_runs``, ``n_test_runs`` and ``runs``: per held-out run
    ``run_id``, ``flops``, ``observed``, ``predicted``, ``residual`` (observed - predicted on the
    residual scale) and ``scale`` (its predictive standard deviation).
    """
    flops = run_flops(data)
    if not np.all(np.isfinite(flops)):
        return [{"quantile": q, "status": "skipped: runs have no compute"} for q in quantiles]
    out = []
    for q in quantiles:
        cutoff = float(np.quantile(flops, q))
        train_runs = flops <= cutoff
        n_train, n_test = int(train_runs.sum()), int((~train_runs).sum())
        entry: dict[str, Any] = {"quantile": float(q), "cutoff_flops": cutoff}
        if n_test == 0 or n_train < len(spec.theta_names) + 2:
            out.append({**entry, "status": f"skipped: {n_train} runs below, {n_test} above"})
            continue
        rows = train_runs[data.run_index]
        train, test = data.subset(rows), data.subset(~rows)
        try:
            fit = search(spec, train.columns, train.loss, delta=delta, starts=starts, keep=keep)
        except FitError as err:
            out.append({**entry, "status": f"failed: {err}"})
            continue
        last = last_rows(test.run_index, test.n_runs)
        cols = {k: v[last] for k, v in test.columns.items()}
        pred = spec.predict(fit.theta[None], cols)[0]
        observed = test.loss[last]
        resid = residual_target(spec, observed) - pred
        spread = uncertainty(spec, train, fit.theta)
        scale = spread.scale(spec, fit.theta, cols)
        predicted = np.exp(pred) if spec.scale == "log" else pred
        test_flops = run_flops(test)
        out.append(
            {
                **entry,
                "status": "ok",
                "n_train_runs": n_train,
                "n_test_runs": n_test,
                "noise": spread.noise,
                "runs": [
                    {
                        "run_id": rid,
                        "flops": float(f),
                        "observed": float(o),
                        "predicted": float(p),
                        "residual": float(r),
                        "scale": float(s),
                    }
                    for rid, f, o, p, r, s in zip(
                        test.run_ids, test_flops, observed, predicted, resid, scale, strict=True
                    )
                ],
            }
        )
    return out
