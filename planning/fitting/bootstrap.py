"""Bootstrap by run: resample runs (never checkpoints) and refit every draw in one batch.

Each draw is a vector of resampling counts over runs; a run's count weights all of its rows.
All draws start from the full-data optimum and its distinct runners-up and are advanced together
by the engine's batched Levenberg-Marquardt iteration (draws are rows of a weight matrix), then
optionally polished one by one with L-BFGS-B. Counts come from one seed, so splitting the draws
into chunks (Prefect tasks) gives the same answer as one call.
"""

from __future__ import annotations

import numpy as np

from mixplan.planning.fitting.data import FitData
from mixplan.planning.fitting.engine import (
    MAX_ELEMENTS,
    batched_lm,
    polish,
    residual_target,
    single_threaded_blas,
)
from mixplan.planning.fitting.huber import DEFAULT_DELTA
from mixplan.planning.fitting.specs import FitSpec


def resample_counts(n_runs: int, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """``(n_bootstrap, n_runs)`` multinomial resampling counts of runs (each row sums to n_runs)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_bootstrap)


@single_threaded_blas()
def bootstrap_chunk(
    spec: FitSpec,
    data: FitData,
    starts: np.ndarray,
    counts: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    iterations: int = 120,
    polish_draws: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit the draws given by ``counts`` (``(B, n_runs)``); returns ``thetas (B, P)``, objectives.

    Parameters
    ----------
    starts : ``(K, P)`` warm starts (full-data optimum first); every draw tries all K.
    polish_draws : also polish each draw with L-BFGS-B (slower, rarely changes the answer).
    """
    target = residual_target(spec, data.loss)
    starts = np.atleast_2d(starts)
    n_draws, n_starts = counts.shape[0], starts.shape[0]
    per_batch = max(1, MAX_ELEMENTS // max(n_starts * data.n_points * len(spec.theta_names), 1))
    if n_draws > per_batch:  # bounded memory: refit the draws in batches (same answer)
        parts = [
            bootstrap_chunk(
                spec,
                data,
                starts,
                counts[i : i + per_batch],
                delta=delta,
                iterations=iterations,
                polish_draws=polish_draws,
            )
            for i in range(0, n_draws, per_batch)
        ]
        return np.concatenate([t for t, _ in parts]), np.concatenate([o for _, o in parts])
    weights = counts[:, data.run_index].astype(float)
    theta0 = np.repeat(starts[None], n_draws, axis=0).reshape(n_draws * n_starts, -1)
    w = np.repeat(weights, n_starts, axis=0)
    theta, f, _ = batched_lm(
        spec, theta0, data.columns, target, w, delta=delta, iterations=iterations
    )
    theta = theta.reshape(n_draws, n_starts, -1)
    f = f.reshape(n_draws, n_starts)
    best = np.argmin(f, axis=1)
    thetas = theta[np.arange(n_draws), best]
    objectives = f[np.arange(n_draws), best]
    if polish_draws:
        for i in range(n_draws):
            x, v, _ = polish(spec, thetas[i], data.columns, target, weights[i], delta=delta)
            if v <= objectives[i]:
                thetas[i], objectives[i] = x, v
    return thetas, objectives
