"""Joining mixture laws with scale: the nested route and the joint route.

Nested route (Ye et al. 2025, laws.md section 2):

1. a step law per run and domain, ``L(D) = E + (D0/D)^alpha``, evaluated at the target tokens;
2. a size law per mixture and domain, ``L(N) = E + (N0/N)^alpha``, evaluated at the target N;
3. a mixture law (exponential by default) fitted across mixtures to those predictions.

Joint route: one law in N, D and the mixture per domain (the additive law's joint variant,
:class:`mixplan.planning.mixture.additive.AdditiveScaleLaw`), fitted on every checkpoint at once.

:func:`compare_routes` scores both on held-out runs (for example the largest model).

The many small step and size laws are fitted all at once by a batched (per-group)
Levenberg-Marquardt iteration on the summed Huber objective of log residuals: one numpy array
holds every curve's parameters. This is the one solver in planning/mixture that is not the shared
engine (planning/fitting/engine.py, which the mixture laws themselves use through
planning/mixture/engine.py), and on purpose: the engine's ``batched_lm`` advances S parameter
vectors against one shared data set (grid starts or bootstrap draws of the same runs), so its
arrays are ``(S, points)``. Here every group (one run and domain, or one mixture and domain) has
its own few points; fed to the engine, each group would be a row weighted by a 0/1 mask over all
points, i.e. ``(groups, groups x points per group)`` arrays: hundreds of groups make that
hundreds of times the work and memory of the grouped sums below (``np.bincount`` by group). The
Huber pieces (:mod:`mixplan.planning.fitting.huber`) are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import cvxpy as cp
import numpy as np
import polars as pl

from mixplan.planning.errors import FitError, NotFittedError, SchemaError, SpecError
from mixplan.planning.fitting.engine import single_threaded_blas
from mixplan.planning.fitting.huber import huber, huber_psi, irls_weights
from mixplan.planning.mixture.additive import AdditiveLaw, AdditiveScaleLaw
from mixplan.planning.mixture.base import MixtureLaw
from mixplan.planning.mixture.data import MixtureData
from mixplan.planning.mixture.engine import DEFAULT_DELTA
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.schema import FINAL_STEP

TOKENS_UNIT = 1e9
PARAMS_UNIT = 1e8


# ------------------------------------------------------------------------------ curves data
@dataclass(frozen=True)
class MixtureCurves:
    """Loss curves of mixture runs: every checkpoint of every run, per validation domain.

    Attributes
    ----------
    run_ids, params, mixture
        Per run: id, model parameters, mixture weights ``(runs, sources)``.
    sources, domains
        Column names of ``mixture`` and ``losses``.
    row_run
        Run index of each checkpoint row, shape ``(rows,)``.
    tokens
        Tokens seen at each checkpoint, shape ``(rows,)``.
    losses
        Loss per checkpoint and domain, ``(rows, domains)`` (``nan`` when not logged).
    """

    run_ids: tuple[str, ...]
    params: np.ndarray
    mixture: np.ndarray
    sources: tuple[str, ...]
    domains: tuple[str, ...]
    row_run: np.ndarray
    tokens: np.ndarray
    losses: np.ndarray

    @classmethod
    def from_lake(
        cls,
        runs: pl.DataFrame,
        metrics: pl.DataFrame,
        *,
        split: str = "val",
        domains: Sequence[str] | None = None,
    ) -> MixtureCurves:
        """Build from the canonical lake tables (every run with a mixture and logged steps)."""
        with_mixture = runs.filter(pl.col("mixture").list.len() > 0).sort("run_id")
        if with_mixture.height == 0:
            raise SchemaError("runs table: no run has a `mixture`; ingest mixture runs first")
        rows = metrics.filter(
            (pl.col("split") == split)
            & (pl.col("step") != FINAL_STEP)
            & pl.col("run_id").is_in(with_mixture["run_id"].implode())
            & pl.col("tokens_seen").is_not_null()
        )
        if domains is not None:
            rows = rows.filter(pl.col("domain").is_in(list(domains)))
        wide = (
            rows.group_by("run_id", "tokens_seen", "domain")
            .agg(pl.col("loss").mean())
            .pivot(on="domain", index=["run_id", "tokens_seen"], values="loss")
            .sort("run_id", "tokens_seen")
        )
        keep = list(domains) if domains is not None else sorted(wide.columns[2:])
        data = MixtureData.from_lake(with_mixture, metrics, split=split, domains=keep)
        index = {run: k for k, run in enumerate(data.run_ids)}
        wide = wide.filter(pl.col("run_id").is_in(list(index)))
        return cls(
            run_ids=data.run_ids,
            params=data.params,
            mixture=data.mixture,
            sources=data.sources,
            domains=tuple(keep),
            row_run=np.array([index[r] for r in wide["run_id"].to_list()], dtype=int),
            tokens=wide["tokens_seen"].to_numpy().astype(float),
            losses=wide.select(keep).to_numpy().astype(float),
        )

    def runs_where(self, keep: np.ndarray) -> MixtureCurves:
        """The runs selected by a boolean array over runs (and their checkpoints)."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1
        rows = keep[self.row_run]
        return MixtureCurves(
            run_ids=tuple(r for r, k in zip(self.run_ids, keep, strict=True) if k),
            params=self.params[keep],
            mixture=self.mixture[keep],
            sources=self.sources,
            domains=self.domains,
            row_run=new_index[self.row_run[rows]],
            tokens=self.tokens[rows],
            losses=self.losses[rows],
        )

    def final(self) -> MixtureData:
        """Each run's last checkpoint as :class:`MixtureData` (tokens = tokens at that step)."""
        last = np.full(len(self.run_ids), -1)
        order = np.lexsort((self.tokens, self.row_run))
        last[self.row_run[order]] = order
        return MixtureData(
            run_ids=self.run_ids,
            sources=self.sources,
            domains=self.domains,
            mixture=self.mixture,
            losses=self.losses[last],
            params=self.params,
            tokens=self.tokens[last],
        )

    def checkpoints(self) -> MixtureData:
        """Every checkpoint as a row (run ids repeat, so the bootstrap still resamples runs)."""
        complete = np.all(np.isfinite(self.losses), axis=1)
        rows = np.flatnonzero(complete)
        return MixtureData(
            run_ids=tuple(self.run_ids[self.row_run[i]] for i in rows),
            sources=self.sources,
            domains=self.domains,
            mixture=self.mixture[self.row_run[rows]],
            losses=self.losses[rows],
            params=self.params[self.row_run[rows]],
            tokens=self.tokens[rows],
        )


# ------------------------------------------------------------- batched floor power laws
def _group_sum(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum ``values`` (rows, ...) into groups -> (n_groups, ...)."""
    flat = values.reshape(len(values), -1)
    out = np.stack(
        [np.bincount(group, weights=flat[:, k], minlength=n_groups) for k in range(flat.shape[1])],
        axis=1,
    )
    return out.reshape((n_groups, *values.shape[1:]))


def floor_power_model(theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``E + exp(alpha (log x0 - log x))`` per row; ``theta`` rows ``[E, log x0, alpha]``.

    Returns the prediction and its Jacobian ``(rows, 3)``.
    """
    energy, log_x0, alpha = theta[:, 0], theta[:, 1], theta[:, 2]
    term = np.exp(np.minimum(alpha * (log_x0 - log_x), 700.0))
    jacobian = np.stack([np.ones_like(term), alpha * term, (log_x0 - log_x) * term], axis=1)
    return energy + term, jacobian


@dataclass(frozen=True)
class FloorPowerFits:
    """Fitted ``L(x) = E + (x0/x)^alpha`` for many groups at once.

    Attributes
    ----------
    theta
        ``(groups, 3)`` rows ``[E, log x0, alpha]`` (x in the caller's unit).
    objective
        Summed Huber objective per group.
    n_points
        Points per group.
    """

    theta: np.ndarray
    objective: np.ndarray
    n_points: np.ndarray

    def predict(self, x: float | np.ndarray) -> np.ndarray:
        """Prediction of every group at ``x`` (scalar or one value per group)."""
        log_x = np.broadcast_to(np.log(np.asarray(x, dtype=float)), (len(self.theta),))
        return floor_power_model(self.theta, log_x)[0]


LogModel = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``theta_rows (points, p) -> (log prediction (points,), its Jacobian (points, p))``."""


def grouped_objective(
    log_model: LogModel, theta: np.ndarray, log_y: np.ndarray, group: np.ndarray, delta: float
) -> np.ndarray:
    """Summed Huber objective of the log residuals of every group (``inf`` where not finite)."""
    with np.errstate(all="ignore"):
        r = log_model(theta[group])[0] - log_y
        total = np.bincount(group, weights=huber(r, delta), minlength=len(theta))
    return np.where(np.isfinite(total), total, np.inf)


def grouped_lm(
    log_model: LogModel,
    theta: np.ndarray,
    objective: np.ndarray,
    log_y: np.ndarray,
    group: np.ndarray,
    clip: Callable[[np.ndarray], np.ndarray],
    *,
    delta: float,
    iterations: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the summed Huber objective of log residuals, one group at a time
    but all groups in one array.

    Parameters
    ----------
    log_model
        The law per point (:data:`LogModel`).
    theta, objective
        Start ``(groups, p)`` and its objective per group (``inf`` where unusable).
    log_y, group
        Log loss and group index per point.
    clip
        Projects ``(groups, p)`` parameters into their bounds.
    delta, iterations
        Huber threshold; most iterations.

    Returns
    -------
    tuple
        ``(theta, objective)`` per group (never worse than the start).
    """
    n_groups, n_params = theta.shape
    theta, f = theta.copy(), objective.copy()

    damping = np.full(n_groups, 1e-3)
    active = np.ones(n_groups, dtype=bool)
    stall = np.zeros(n_groups, dtype=int)
    for _ in range(iterations):
        if not active.any():
            break
        with np.errstate(all="ignore"):
            log_prediction, jr = log_model(theta[group])
            r = log_prediction - log_y
            w = irls_weights(r, delta)
            grad = _group_sum(jr * huber_psi(r, delta)[:, None], group, n_groups)
            hess = _group_sum(jr[:, :, None] * jr[:, None, :] * w[:, None, None], group, n_groups)
        diag = np.einsum("gpp->gp", hess)
        system = (
            hess
            + damping[:, None, None] * np.eye(n_params)[None] * np.maximum(diag, 1e-12)[:, None]
        )
        try:
            step = np.linalg.solve(system, -grad[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.einsum("gpq,gq->gp", np.linalg.pinv(system), -grad)
        step = np.where(np.isfinite(step) & active[:, None], step, 0.0)
        trial = clip(theta + step)
        trial_f = grouped_objective(log_model, trial, log_y, group, delta)
        better = (trial_f < f) & active
        improvement = np.where(better, (f - trial_f) / np.maximum(f, 1e-300), 0.0)
        theta[better], f[better] = trial[better], trial_f[better]
        damping = np.where(
            better, np.maximum(damping * 0.3, 1e-12), np.minimum(damping * 10.0, 1e12)
        )
        small = (better & (improvement < 1e-10)) | (~better & (damping > 1e10))
        stall = np.where(small, stall + 1, 0)
        active &= stall < 3
    return theta, f


@single_threaded_blas()
def fit_floor_power_laws(
    x: np.ndarray,
    losses: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    *,
    delta: float = DEFAULT_DELTA,
    iterations: int = 300,
    alpha_bounds: tuple[float, float] = (0.01, 3.0),
) -> FloorPowerFits:
    """Fit ``L = E + (x0/x)^alpha`` to every group by summed Huber on log residuals, batched.

    Parameters
    ----------
    x
        Positive abscissa per point (tokens or params, in a convenient unit).
    losses
        Positive losses per point.
    group
        Group index per point in ``[0, n_groups)``.
    n_groups
        Number of groups (every group needs at least 2 points).
    delta
        Huber threshold.
    iterations
        Maximum Levenberg-Marquardt iterations.
    alpha_bounds
        Bounds of the exponent.

    Returns
    -------
    FloorPowerFits

    Raises
    ------
    FitError
        If a group has fewer than two points or a loss is not positive.
    """
    x, losses, group = np.asarray(x, float), np.asarray(losses, float), np.asarray(group, int)
    counts = np.bincount(group, minlength=n_groups)
    if np.any(counts < 2):
        raise FitError(
            f"floor power law: groups {np.flatnonzero(counts < 2)[:5].tolist()} have fewer than "
            "2 points; drop them or give them more checkpoints / sizes"
        )
    if np.any(losses <= 0) or np.any(x <= 0):
        raise FitError("floor power law: losses and x must be positive")
    log_x, log_y = np.log(x), np.log(losses)
    group_min = np.full(n_groups, np.inf)
    np.minimum.at(group_min, group, losses)
    lower = np.array([0.0, -30.0, alpha_bounds[0]])
    upper_e = group_min * (1 - 1e-6)

    def clip(theta: np.ndarray) -> np.ndarray:
        theta = np.maximum(theta, lower)
        theta[:, 0] = np.minimum(theta[:, 0], upper_e)
        theta[:, 1] = np.minimum(theta[:, 1], 30.0)
        theta[:, 2] = np.minimum(theta[:, 2], alpha_bounds[1])
        return theta

    def log_model(theta_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prediction, jacobian = floor_power_model(theta_rows, log_x)
        return np.log(prediction), jacobian / prediction[:, None]

    def objective(theta: np.ndarray) -> np.ndarray:
        return grouped_objective(log_model, theta, log_y, group, delta)

    # start grid: E fraction x alpha; log x0 by least squares of log(L - E) on log x
    best_theta = np.zeros((n_groups, 3))
    best_f = np.full(n_groups, np.inf)
    mean_log_x = np.bincount(group, weights=log_x, minlength=n_groups) / counts
    for fraction in (0.0, 0.5, 0.8, 0.9, 0.97):
        energy = fraction * group_min
        gap = np.log(np.maximum(losses - energy[group], 1e-12))
        mean_gap = np.bincount(group, weights=gap, minlength=n_groups) / counts
        for alpha in (0.1, 0.3, 0.6, 1.0):
            theta = np.stack([energy, mean_gap / alpha + mean_log_x, np.full(n_groups, alpha)], 1)
            theta = clip(theta)
            f = objective(theta)
            better = f < best_f
            best_theta[better], best_f[better] = theta[better], f[better]
    theta, f = grouped_lm(
        log_model, best_theta, best_f, log_y, group, clip, delta=delta, iterations=iterations
    )
    return FloorPowerFits(theta=theta, objective=f, n_points=counts)


# --------------------------------------------------------------------------- nested route
MixtureLawName = Literal["exponential", "additive"]


SizeLawName = Literal["shared_exponent", "per_mixture"]


def fit_size_laws_shared_exponent(
    params: np.ndarray,
    losses: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    *,
    alphas: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``L = E_g + A_g N^(-alpha)`` per group with one ``alpha`` shared by all groups.

    For a fixed ``alpha`` the law is linear in ``(E_g, A_g)``: every group is solved in closed form
    (least squares) at once, and ``alpha`` is the grid value with the smallest total squared error.

    Parameters
    ----------
    params
        Model size per point (any fixed unit).
    losses
        Loss per point, shape ``(points,)``.
    group
        Group index per point.
    n_groups
        Number of groups; every group needs two or more distinct sizes.
    alphas
        Grid of exponents (default 300 values in [0.02, 3]).

    Returns
    -------
    tuple
        ``(theta (n_groups, 2) = [E, A], alpha)``.
    """
    alphas = np.linspace(0.02, 3.0, 300) if alphas is None else np.asarray(alphas, float)
    ones = np.bincount(group, minlength=n_groups).astype(float)
    sum_y = np.bincount(group, weights=losses, minlength=n_groups)
    best = (np.inf, None, None)
    for alpha in alphas:
        x = params ** (-alpha)
        sum_x = np.bincount(group, weights=x, minlength=n_groups)
        sum_xx = np.bincount(group, weights=x * x, minlength=n_groups)
        sum_xy = np.bincount(group, weights=x * losses, minlength=n_groups)
        det = ones * sum_xx - sum_x**2
        slope = (ones * sum_xy - sum_x * sum_y) / det
        intercept = (sum_y - slope * sum_x) / ones
        sse = float(np.sum((intercept[group] + slope[group] * x - losses) ** 2))
        if np.isfinite(sse) and sse < best[0]:
            best = (sse, np.stack([intercept, slope], axis=1), alpha)
    if best[1] is None:
        raise FitError("size law: no exponent gives a finite fit (need two sizes per group)")
    return best[1], float(best[2])


def distinct_mixtures(curves: MixtureCurves) -> tuple[np.ndarray, np.ndarray]:
    """The distinct mixtures of the runs (rounded to 1e-9) and each run's index among them."""
    mixtures, mixture_of_run = np.unique(np.round(curves.mixture, 9), axis=0, return_inverse=True)
    return mixtures, mixture_of_run.ravel()


def mixtures_across_sizes(curves: MixtureCurves, name: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`distinct_mixtures`, checking that every mixture was run at two or more sizes.

    Raises
    ------
    FitError
        If some mixture was run at one model size only (no size law can be fitted to it).
    """
    mixtures, mixture_of_run = distinct_mixtures(curves)
    sizes = np.array(
        [len(np.unique(curves.params[mixture_of_run == m])) for m in range(len(mixtures))]
    )
    if np.any(sizes < 2):
        raise FitError(
            f"{name}: every mixture needs runs at two or more model sizes; "
            f"{int(np.sum(sizes < 2))} mixtures have one"
        )
    return mixtures, mixture_of_run


class LawRoute:
    """A route that answers with one fitted law at the target (N, D): its predictions, their
    interval and the planner's convex target all come from that law."""

    name = "route"
    law_: MixtureLaw | None = None
    tokens_error_: float = 0.0
    """RMSE of reading the runs at a target D past their last checkpoints (the step law's
    backtest over that extrapolation, `steps.tokens_error`); 0 when no run is extrapolated."""

    def _fitted(self) -> bool:
        return self.law_ is not None

    def _law(self) -> MixtureLaw:
        if not self._fitted():
            raise NotFittedError(f"{self.name}: call fit(curves) first")
        return self.law_

    def scale_error(self) -> float:
        """The measured RMSE the law's bootstrap leaves out: here the D extrapolation's
        (routes that also carry the law across N add theirs)."""
        return self.tokens_error_

    def stored_law(self) -> MixtureLaw:
        """The fitted law with the route's :meth:`scale_error` in its intervals: what the
        pipeline stores and the planner loads."""
        law = self._law()
        law.scale_error_ = self.scale_error()
        return law

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain at the target (N, D)."""
        return self._law().predict(weights)

    def predict_interval(
        self, weights: np.ndarray, *, level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap interval of :meth:`predict` (fit with ``n_bootstrap > 0``) widened by
        :meth:`scale_error` (the stored law's interval, `DomainTarget.widened`)."""
        return self.stored_law().predict_interval(weights, level=level)

    def loss_expression(
        self, weights: cp.Expression, domain_weights: np.ndarray | Mapping[str, float] | None
    ) -> cp.Expression:
        """Convex target at (N, D)."""
        return self._law().loss_expression(weights, domain_weights)


class MixtureStageRoute(LawRoute):
    """A route ending in a mixture law fitted to its predictions at the target (N, D)."""

    name = "mixture stage"

    def __init__(
        self,
        *,
        params: float,
        tokens: float,
        mixture_law: MixtureLawName = "additive",
        delta: float = DEFAULT_DELTA,
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> None:
        kind = type(self).__name__
        if not (params > 0 and tokens > 0):
            raise SpecError(f"{kind}: params and tokens must be positive")
        if mixture_law not in ("exponential", "additive"):
            raise SpecError(f"{kind}: unknown mixture_law {mixture_law!r}")
        self.params, self.tokens = float(params), float(tokens)
        self.mixture_law: MixtureLawName = mixture_law
        self.delta = delta
        self.n_bootstrap, self.seed = n_bootstrap, seed
        self.at_target_: MixtureData | None = None
        self.law_: MixtureLaw | None = None
        self.sources_: tuple[str, ...] = ()
        self.domains_: tuple[str, ...] = ()

    def _fit_mixture_stage(
        self, curves: MixtureCurves, mixtures: np.ndarray, at_target: np.ndarray
    ) -> Self:
        """Fit the route's mixture law to ``at_target`` at the distinct ``mixtures``."""
        self.at_target_, self.law_ = fit_mixture_stage(
            curves,
            mixtures,
            at_target,
            params=self.params,
            tokens=self.tokens,
            mixture_law=self.mixture_law,
            delta=self.delta,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
        )
        self.sources_, self.domains_ = curves.sources, curves.domains
        return self


def fit_mixture_stage(
    curves: MixtureCurves,
    mixtures: np.ndarray,
    at_target: np.ndarray,
    *,
    params: float,
    tokens: float,
    mixture_law: MixtureLawName,
    delta: float,
    n_bootstrap: int,
    seed: int,
) -> tuple[MixtureData, MixtureLaw]:
    """The last stage of a nested route: a mixture law across the distinct ``mixtures`` fitted
    to their predicted losses ``at_target`` ``(mixtures, domains)`` at the target (N, D)."""
    data = MixtureData.from_arrays(
        mixtures,
        at_target,
        sources=curves.sources,
        domains=curves.domains,
        run_ids=[f"mixture{m}" for m in range(len(mixtures))],
        params=np.full(len(mixtures), params),
        tokens=np.full(len(mixtures), tokens),
    )
    law: MixtureLaw = (
        ExponentialLaw(delta=delta, n_bootstrap=n_bootstrap, seed=seed)
        if mixture_law == "exponential"
        else AdditiveLaw(delta=delta, n_bootstrap=n_bootstrap, seed=seed)
    )
    return data, law.fit(data)


class NestedRoute(MixtureStageRoute):
    """Step law per run -> size law per mixture -> mixture law at the target (N, D).

    Parameters
    ----------
    params, tokens
        Target model parameters N and training tokens D.
    mixture_law
        Law fitted across mixtures in step 3: ``"additive"`` or ``"exponential"`` (Ye et al.).
    size_law
        ``"shared_exponent"``: ``E + A N^-alpha`` per mixture with one alpha per domain (fewer
        free parameters: three sizes per mixture are enough); ``"per_mixture"``: the full
        ``E + (N0/N)^alpha`` per mixture and domain (Ye et al.; exactly determined by 3 sizes).
    step_window
        Step laws are fitted on checkpoints with tokens in ``[step_window * D, D]`` (the early
        part of a curve is shaped by warm-up, not by the law).
    prefer_observed
        When a run has a checkpoint at the target tokens, use its loss instead of the step law
        (the step law ``E + (D0/D)^alpha`` has no learning-rate-annealing term, so it misses the
        end of a decayed run by ~0.01 nats; it is for extrapolating in D).
    delta
        Huber threshold of the step laws and the mixture law.
    max_ratio
        Refuse a target D past ``max_ratio`` x a run's last checkpoint
        (:class:`mixplan.planning.errors.ExtrapolationError`); past 1x, ``warning_`` says how
        far and the backtested error of that extrapolation (:mod:`mixplan.planning.mixture.steps`).
    n_bootstrap, seed
        Bootstrap draws of the stage-3 mixture law (resampling mixtures), for intervals. They
        cover the mixture stage only: the step and size stages are not refitted per draw.
    """

    name = "nested (step -> size -> mixture)"

    def __init__(
        self,
        *,
        params: float,
        tokens: float,
        mixture_law: MixtureLawName = "additive",
        size_law: SizeLawName = "shared_exponent",
        step_window: float = 0.5,
        prefer_observed: bool = True,
        delta: float = DEFAULT_DELTA,
        max_ratio: float = 3.0,
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            params=params,
            tokens=tokens,
            mixture_law=mixture_law,
            delta=delta,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        if size_law not in ("shared_exponent", "per_mixture"):
            raise SpecError(f"NestedRoute: unknown size_law {size_law!r}")
        if not 0 <= step_window < 1:
            raise SpecError("NestedRoute: step_window must be in [0, 1)")
        self.size_law = size_law
        self.step_window = step_window
        self.prefer_observed = prefer_observed
        self.max_ratio = max_ratio
        self.warning_ = ""
        self.step_fits_: FloorPowerFits | None = None
        self.at_tokens_: np.ndarray | None = None
        self.size_theta_: np.ndarray | None = None
        self.size_alpha_: np.ndarray | None = None

    def _stage_tokens(self, curves: MixtureCurves) -> np.ndarray:
        """Stage 1: loss of every (run, domain) at the target tokens, ``(runs, domains)``."""
        # steps builds on this module's curves and step laws, hence the import here
        from mixplan.planning.mixture.steps import extrapolation_warning, tokens_error

        self.warning_, backtest = extrapolation_warning(
            curves, self.tokens, max_ratio=self.max_ratio, delta=self.delta
        )
        self.tokens_error_ = tokens_error(backtest)
        runs, domains = len(curves.run_ids), len(curves.domains)
        row, column = np.nonzero(np.isfinite(curves.losses))
        tokens = curves.tokens[row]
        keep = (tokens <= self.tokens * (1 + 1e-9)) & (tokens >= self.step_window * self.tokens)
        groups = curves.row_run[row] * domains + column
        counts = np.bincount(groups[keep], minlength=runs * domains)
        if np.any(counts < 2):
            # runs with too few checkpoints in the window fall back to all their checkpoints
            short = counts[groups] < 2
            keep |= short & (tokens <= self.tokens * (1 + 1e-9))
        row, column = row[keep], column[keep]
        self.step_fits_ = fit_floor_power_laws(
            curves.tokens[row] / TOKENS_UNIT,
            curves.losses[row, column],
            curves.row_run[row] * domains + column,
            runs * domains,
            delta=self.delta,
        )
        at_tokens = self.step_fits_.predict(self.tokens / TOKENS_UNIT).reshape(runs, domains)
        if self.prefer_observed:
            at_target = np.isclose(curves.tokens, self.tokens, rtol=1e-6)
            observed = np.full((runs, domains), np.nan)
            observed[curves.row_run[at_target]] = curves.losses[at_target]
            at_tokens = np.where(np.isfinite(observed), observed, at_tokens)
        return at_tokens

    def fit(self, curves: MixtureCurves) -> Self:
        """Run the three stages on ``curves``."""
        domains = len(curves.domains)
        at_tokens = self._stage_tokens(curves)
        self.at_tokens_ = at_tokens
        # 2. size law per (mixture, domain)
        mixtures, mixture_of_run = mixtures_across_sizes(curves, "nested route")
        size_x = curves.params / PARAMS_UNIT
        target_x = self.params / PARAMS_UNIT
        if self.size_law == "per_mixture":
            group = (mixture_of_run[:, None] * domains + np.arange(domains)[None, :]).ravel()
            fits = fit_floor_power_laws(
                np.repeat(size_x, domains),
                at_tokens.ravel(),
                group,
                len(mixtures) * domains,
                delta=self.delta,
            )
            self.size_theta_ = fits.theta.reshape(len(mixtures), domains, 3)
            at_target = fits.predict(target_x).reshape(-1, domains)
        else:
            at_target = np.empty((len(mixtures), domains))
            thetas, alphas = [], []
            for d in range(domains):
                theta, alpha = fit_size_laws_shared_exponent(
                    size_x, at_tokens[:, d], mixture_of_run, len(mixtures)
                )
                at_target[:, d] = theta[:, 0] + theta[:, 1] * target_x ** (-alpha)
                thetas.append(theta)
                alphas.append(alpha)
            self.size_theta_ = np.stack(thetas, axis=1)
            self.size_alpha_ = np.array(alphas)
        return self._fit_mixture_stage(curves, mixtures, at_target)

    def predict_size_stage(self, weights: np.ndarray) -> np.ndarray:
        """Stage-2 prediction (no mixture law) for mixtures that were among the fitted ones."""
        assert self.at_target_ is not None
        weights = np.atleast_2d(np.asarray(weights, dtype=float))
        index = []
        for w in np.round(weights, 9):
            match = np.flatnonzero(np.all(np.isclose(self.at_target_.mixture, w, atol=1e-7), 1))
            if match.size == 0:
                raise SpecError("predict_size_stage: mixture not among the fitted runs")
            index.append(match[0])
        return self.at_target_.losses[index]


# ---------------------------------------------------------------------------- joint route
class JointRoute:
    """One law in N, D and mixture per domain (the additive law's joint variant).

    Parameters
    ----------
    params, tokens
        Target (N, D) for :meth:`predict` and :meth:`loss_expression`.
    joint
        ``True`` lets A and B depend on the mixture (see :class:`AdditiveScaleLaw`).
    """

    name = "joint (additive in N, D, h)"

    def __init__(
        self,
        *,
        params: float,
        tokens: float,
        joint: bool = True,
        delta: float = DEFAULT_DELTA,
        n_bootstrap: int = 0,
    ) -> None:
        self.law_ = AdditiveScaleLaw(
            joint=joint, params=params, tokens=tokens, delta=delta, n_bootstrap=n_bootstrap
        )
        self.sources_: tuple[str, ...] = ()
        self.domains_: tuple[str, ...] = ()

    def fit(self, curves: MixtureCurves) -> Self:
        """Fit on every complete checkpoint of ``curves``."""
        self.law_.fit(curves.checkpoints())
        self.sources_, self.domains_ = curves.sources, curves.domains
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain at the target (N, D)."""
        return self.law_.predict(weights)

    def loss_expression(
        self, weights: cp.Expression, domain_weights: np.ndarray | Mapping[str, float] | None
    ) -> cp.Expression:
        """Convex target at (N, D)."""
        return self.law_.loss_expression(weights, domain_weights)


def held_out_errors(route: Any, held_out: MixtureData, *, name: str | None = None) -> pl.DataFrame:
    """Absolute and relative error of ``route.predict`` on each held-out run and domain.

    Returns
    -------
    polars.DataFrame
        ``route, run_id, domain, observed, predicted, abs_error, rel_error``.
    """
    predicted = np.atleast_2d(route.predict(held_out.mixture))
    columns = [held_out.domains.index(d) for d in route.domains_]
    observed = held_out.losses[:, columns]
    runs = np.repeat(np.array(held_out.run_ids), len(columns))
    return pl.DataFrame(
        {
            "route": name or route.name,
            "run_id": runs,
            "domain": np.tile(np.array(route.domains_), len(held_out.run_ids)),
            "observed": observed.ravel(),
            "predicted": predicted.ravel(),
            "abs_error": np.abs(predicted - observed).ravel(),
            "rel_error": (np.abs(predicted - observed) / observed).ravel(),
        }
    )


def compare_routes(
    curves: MixtureCurves,
    *,
    train_params_max: float,
    routes: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Fit routes on runs with ``params <= train_params_max``; score every larger run's last step.

    The target (N, D) of each route is taken from the held-out runs (they must share one N and D).
    Default routes: nested (exponential mixture law) and joint (additive, A and B in h).

    Returns
    -------
    polars.DataFrame
        :func:`held_out_errors` rows of every route.
    """
    train_mask = curves.params <= train_params_max
    if train_mask.all() or not train_mask.any():
        raise SpecError("compare_routes: need runs on both sides of train_params_max")
    train = curves.runs_where(train_mask)
    held_out = curves.runs_where(~train_mask).final()
    n_targets, d_targets = np.unique(held_out.params), np.unique(held_out.tokens)
    if len(n_targets) != 1 or len(d_targets) != 1:
        raise SpecError(
            "compare_routes: held-out runs must share one (params, tokens); got "
            f"{n_targets.tolist()} x {d_targets.tolist()}"
        )
    target = {"params": float(n_targets[0]), "tokens": float(d_targets[0])}
    if routes is None:
        routes = {
            "nested": NestedRoute(**target),
            "joint": JointRoute(**target),
        }
    tables = [held_out_errors(route.fit(train), held_out, name=k) for k, route in routes.items()]
    return pl.concat(tables)
