"""The curves route: Kaplan's joint law in (N, D) on every checkpoint of every mixture, then a
mixture law at the target.

Why. Read at one D, two model sizes do not identify the size exponent of
``L(N) = E + A / N^alpha``: a different alpha is absorbed by E and A exactly (the scale route
then has to pool or assume alpha, :class:`mixplan.planning.mixture.scale.ScaleRoute`). The
Chinchilla form ``E + A/N^alpha + B/D^beta`` does not help either: N and D are separable in it,
so the curves in D fix each size's asymptote ``E + A/N^alpha``, still two numbers for three
unknowns. Kaplan et al.'s joint law (laws.md section 1.2)

    ``L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D``

is not separable: how fast a curve still falls in D depends on how far N is from its own limit,
so the curves of two sizes, each logged at many D, identify ``alpha_N`` and ``alpha_D``. (That
larger models gain more per step along a schedule is what the form describes and the additive
forms do not.) It has no separate floor: at the scales proxies are run at, the loss is far from
any floor, and a floor is what two sizes cannot place.

The route (a nested route whose first two stages are one law):

1. the joint law per (mixture, domain) on the checkpoints of every size of that mixture with
   tokens >= ``TAIL`` x the run's last tokens (:mod:`mixplan.planning.mixture.steps`: the early
   part of a curve is shaped by warm-up), by summed Huber on log residuals, all groups at once
   (:func:`mixplan.planning.mixture.nested.grouped_lm`) from a small start grid;
2. each mixture's loss at the target (N, D) from its law;
3. a mixture law across the mixtures (additive by default), as in
   :class:`mixplan.planning.mixture.nested.NestedRoute`, which the planner loads unchanged.

Extrapolating past the runs' last checkpoint is guarded like every route: refused past
``max_ratio`` x, warned with the backtested error of the step law beyond 1x. Its interval
(:meth:`CurvesRoute.scale_error`, carried by the stored law) is the mixture stage's bootstrap
widened by the error of extrapolating in N measured inside the fitted data
(:meth:`CurvesRoute.backtest_rmse`), per unit ``log N``, times ``log(N_target /
N_largest_fitted)``, and by the step law's backtested error of any extrapolation in D: the
bootstrap alone covers the mixture stage only (46% of the 410M losses at 90% on 5Mix fitted on
70M-160M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np

from mixplan.planning.errors import FitError, NotFittedError
from mixplan.planning.fitting.engine import single_threaded_blas
from mixplan.planning.mixture.engine import DEFAULT_DELTA
from mixplan.planning.mixture.nested import (
    PARAMS_UNIT,
    TOKENS_UNIT,
    MixtureCurves,
    MixtureLawName,
    MixtureStageRoute,
    grouped_lm,
    grouped_objective,
    mixtures_across_sizes,
)
from mixplan.planning.mixture.steps import (
    MAX_RATIO,
    TAIL,
    extrapolation_warning,
    tokens_error,
)

EXPONENT_BOUNDS = (1e-3, 3.0)
"""Bounds of ``alpha_N`` and ``alpha_D`` (Kaplan et al. fit 0.076 and 0.095-0.103)."""
LOG_SCALE_BOUNDS = (-30.0, 50.0)
"""Bounds of ``log N_c`` and ``log D_c`` (in PARAMS_UNIT and TOKENS_UNIT)."""
START_EXPONENTS = (0.05, 0.1, 0.3)
"""Start values of both exponents (the law is fitted from every start; the best is kept)."""
START_LOG_NC = (1.0, 5.0, 10.0)
"""Start values of ``log N_c`` (units of PARAMS_UNIT)."""
SCREEN = 30
"""Iterations every start gets before only the best one per group is iterated on."""
BACKTEST_RATIO = 1.5
"""How far the backtest of :meth:`CurvesRoute.backtest_rmse` extrapolates each curve (its first
two thirds predict its last checkpoint): a documented choice, well inside the step stage's
MAX_RATIO, so the backtest extrapolates in D about as far as a proxy study usually does in N."""
MIN_CHECKPOINTS = 5
"""Checkpoints a (mixture, domain) group needs for Kaplan's law (it has 4 parameters)."""


def kaplan_log_model(
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``log L = alpha_D log((N_c/N)^(alpha_N/alpha_D) + D_c/D)`` per row and its Jacobian.

    ``theta`` rows ``[log N_c, alpha_N, alpha_D, log D_c]``; ``log_n``, ``log_d`` in the units.
    """
    log_nc, alpha_n, alpha_d, log_dc = theta.T
    size_part = (alpha_n / alpha_d) * (log_nc - log_n)
    data_part = log_dc - log_d
    total = np.logaddexp(size_part, data_part)
    size_share = np.exp(size_part - total)
    jacobian = np.stack(
        [
            alpha_n * size_share,
            size_share * (log_nc - log_n),
            total - size_share * size_part,
            alpha_d * (1.0 - size_share),
        ],
        axis=1,
    )
    return alpha_d * total, jacobian


@dataclass(frozen=True)
class KaplanFits:
    """Kaplan's joint law fitted per group.

    Attributes
    ----------
    theta
        ``(groups, 4)`` rows ``[log N_c, alpha_N, alpha_D, log D_c]`` (N in PARAMS_UNIT, D in
        TOKENS_UNIT).
    objective
        Summed Huber objective per group.
    """

    theta: np.ndarray
    objective: np.ndarray

    def predict(self, params: float, tokens: float) -> np.ndarray:
        """Every group's loss at (N, D)."""
        rows = len(self.theta)
        log_n = np.full(rows, np.log(params / PARAMS_UNIT))
        log_d = np.full(rows, np.log(tokens / TOKENS_UNIT))
        return np.exp(kaplan_log_model(self.theta, log_n, log_d)[0])


@single_threaded_blas()
def fit_kaplan_laws(
    params: np.ndarray,
    tokens: np.ndarray,
    losses: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    *,
    delta: float = DEFAULT_DELTA,
    iterations: int = 300,
) -> KaplanFits:
    """Fit Kaplan's joint law to every group by summed Huber on log residuals, batched.

    Every start of the grid (:data:`START_EXPONENTS` x :data:`START_LOG_NC`) is advanced
    :data:`SCREEN` iterations as its own copy of the group; the best copy per group is then
    iterated to convergence.

    Raises
    ------
    FitError
        If a group has fewer than 5 points (4 parameters) or a value is not positive.
    """
    params, tokens, losses = (np.asarray(a, float) for a in (params, tokens, losses))
    group = np.asarray(group, int)
    counts = np.bincount(group, minlength=n_groups)
    if np.any(counts < MIN_CHECKPOINTS):
        raise FitError(
            f"Kaplan joint law: groups {np.flatnonzero(counts < MIN_CHECKPOINTS)[:5].tolist()} "
            f"have fewer than {MIN_CHECKPOINTS} checkpoints (the law has 4 parameters); log more "
            "checkpoints per run"
        )
    if np.any(losses <= 0) or np.any(params <= 0) or np.any(tokens <= 0):
        raise FitError("Kaplan joint law: losses, params and tokens must be positive")
    starts = [
        (log_nc, exponent, exponent, np.log(1e10 / TOKENS_UNIT))
        for exponent in START_EXPONENTS
        for log_nc in START_LOG_NC
    ]
    copies = len(starts)
    # every start is a copy of every group: group g of start s is row s * n_groups + g
    big_group = (np.arange(copies)[:, None] * n_groups + group[None, :]).ravel()
    log_n = np.tile(np.log(params / PARAMS_UNIT), copies)
    log_d = np.tile(np.log(tokens / TOKENS_UNIT), copies)
    log_y = np.tile(np.log(losses), copies)
    lower = np.array([LOG_SCALE_BOUNDS[0], EXPONENT_BOUNDS[0], EXPONENT_BOUNDS[0], -30.0])
    upper = np.array([LOG_SCALE_BOUNDS[1], EXPONENT_BOUNDS[1], EXPONENT_BOUNDS[1], 30.0])

    def clip(theta: np.ndarray) -> np.ndarray:
        return np.clip(theta, lower, upper)

    def log_model(theta_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return kaplan_log_model(theta_rows, log_n, log_d)

    theta = np.repeat(np.array(starts), n_groups, axis=0)
    objective = grouped_objective(log_model, theta, log_y, big_group, delta)
    theta, objective = grouped_lm(
        log_model, theta, objective, log_y, big_group, clip, delta=delta, iterations=SCREEN
    )
    best = np.argmin(objective.reshape(copies, n_groups), axis=0)
    pick = best * n_groups + np.arange(n_groups)

    def log_model_one(theta_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return kaplan_log_model(theta_rows, log_n[: len(group)], log_d[: len(group)])

    theta, objective = grouped_lm(
        log_model_one,
        theta[pick],
        objective[pick],
        log_y[: len(group)],
        group,
        clip,
        delta=delta,
        iterations=iterations,
    )
    return KaplanFits(theta=theta, objective=objective)


class CurvesRoute(MixtureStageRoute):
    """Kaplan's joint law per (mixture, domain) on every checkpoint -> mixture law at (N, D).

    Parameters
    ----------
    params, tokens
        Target model parameters N and training tokens D.
    mixture_law
        Law fitted across mixtures at the target: ``"additive"`` or ``"exponential"``.
    max_ratio
        Refuse a target D past ``max_ratio`` x a run's last checkpoint.
    delta
        Huber threshold of the joint laws and the mixture law.
    n_bootstrap, seed
        Bootstrap draws of the mixture stage (resampling mixtures), for intervals; the joint
        laws are not refitted per draw.
    """

    name = "curves (Kaplan N-D law -> mixture)"

    def __init__(
        self,
        *,
        params: float,
        tokens: float,
        mixture_law: MixtureLawName = "additive",
        max_ratio: float = MAX_RATIO,
        delta: float = DEFAULT_DELTA,
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
        self.max_ratio = max_ratio
        self.warning_ = ""
        self.notes_: tuple[str, ...] = ()
        self.fits_: KaplanFits | None = None
        self.curves_: MixtureCurves | None = None
        self.mixture_of_run_: np.ndarray | None = None
        self.extrapolation_rmse_: float | None = None

    def fit(self, curves: MixtureCurves) -> Self:
        """Fit the joint law per (mixture, domain), then the mixture law at the target.

        Raises
        ------
        ExtrapolationError
            If the target D is past ``max_ratio`` x a run's last checkpoint.
        FitError
            If a mixture was run at one model size only, or has too few checkpoints.
        """
        self.warning_, backtest = extrapolation_warning(
            curves, self.tokens, max_ratio=self.max_ratio, delta=self.delta
        )
        self.tokens_error_ = tokens_error(backtest)
        mixtures, mixture_of_run = mixtures_across_sizes(curves, self.name)
        last = np.zeros(len(curves.run_ids))
        np.maximum.at(last, curves.row_run, curves.tokens)
        self.fits_ = self._fit_curves(curves, mixture_of_run, len(mixtures), last)
        self.curves_, self.mixture_of_run_ = curves, mixture_of_run
        self.extrapolation_rmse_ = None  # measured when an interval is first asked for
        unmeasured = self._unmeasured_size_error(curves, mixture_of_run, len(mixtures), last)
        self.warning_ = "; ".join(w for w in (self.warning_, unmeasured) if w)
        domains = len(curves.domains)
        at_target = self.fits_.predict(self.params, self.tokens).reshape(len(mixtures), domains)
        alpha_n, alpha_d = np.median(self.fits_.theta[:, 1:3], axis=0)
        self.notes_ = (
            f"size and tokens exponents fitted per mixture and domain from the curves of "
            f"{len(np.unique(curves.params))} model sizes (Kaplan's joint law, no prior): median "
            f"alpha_N = {alpha_n:.3g}, alpha_D = {alpha_d:.3g} (Kaplan et al.: 0.076, 0.095)",
        )
        return self._fit_mixture_stage(curves, mixtures, at_target)

    @staticmethod
    def _window(
        curves: MixtureCurves, mixture_of_run: np.ndarray, cut: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each run's logged checkpoints in ``[TAIL cut_run, cut_run]``: their rows, their
        (mixture, domain) group and their run."""
        domains = len(curves.domains)
        row, column = np.nonzero(np.isfinite(curves.losses))
        run = curves.row_run[row]
        tokens = curves.tokens[row]
        keep = (tokens >= TAIL * cut[run] * (1 - 1e-9)) & (tokens <= cut[run] * (1 + 1e-9))
        row, column, run = row[keep], column[keep], run[keep]
        return row, mixture_of_run[run] * domains + column, run

    def _fit_curves(
        self, curves: MixtureCurves, mixture_of_run: np.ndarray, n_mixtures: int, cut: np.ndarray
    ) -> KaplanFits:
        """Kaplan's law per (mixture, domain) on each run's checkpoints in
        ``[TAIL cut_run, cut_run]``."""
        row, group, run = self._window(curves, mixture_of_run, cut)
        return fit_kaplan_laws(
            curves.params[run],
            curves.tokens[row],
            curves.losses[row, group % len(curves.domains)],
            group,
            n_mixtures * len(curves.domains),
            delta=self.delta,
        )

    def _unmeasured_size_error(
        self, curves: MixtureCurves, mixture_of_run: np.ndarray, n_mixtures: int, last: np.ndarray
    ) -> str:
        """``""``, or the warning that the interval at a target N past the fitted sizes leaves
        out the error of carrying the curves across N, because the curves' early parts (up to
        ``last / BACKTEST_RATIO``) hold too few checkpoints for :meth:`backtest_rmse`."""
        if self.params <= float(np.max(curves.params)) * (1 + 1e-9):
            return ""
        _, group, _ = self._window(curves, mixture_of_run, last / BACKTEST_RATIO)
        short = np.bincount(group, minlength=n_mixtures * len(curves.domains)) < MIN_CHECKPOINTS
        if not short.any():
            return ""
        return (
            f"the interval at N = {self.params:.4g} covers the mixture stage only: the error of "
            f"carrying the curves past N = {float(np.max(curves.params)):.4g} is not measured, "
            f"because {int(short.sum())} of {short.size} (mixture, domain) curves log fewer than "
            f"{MIN_CHECKPOINTS} checkpoints before 1/{BACKTEST_RATIO:g} of their length; log more "
            "checkpoints per run to measure it"
        )

    def backtest_rmse(self, ratio: float = BACKTEST_RATIO) -> float:
        """RMSE of the size effect per unit ``log N``, measured where the law saw no data.

        The law is refitted on every run's checkpoints up to ``last / ratio`` and predicts,
        for each mixture run at both the largest and the smallest fitted size, the gap
        ``L(N_max) - L(N_min)`` between those runs' last checkpoints (every domain). The gap's
        RMSE against the observed gaps, divided by ``log(N_max / N_min)``, is the error of
        carrying a curve across ``log N`` at a D the law did not see. Why the gap and not the
        losses: along a learning-rate schedule the early part of a curve does not see the
        decay, an error common to both sizes that the gap cancels (5Mix 70M-160M, ratio 2: the
        last-step losses miss by 0.063 nats MAE, the gaps by 0.047 RMSE; ratio 1.5: 0.033 and
        0.033, i.e. 0.022 per unit log N, which carried to 410M widens the 90% interval from
        covering 46% of the 410M losses to 94%). ``nan`` when the early parts are too
        short to fit.
        """
        if self.fits_ is None or self.curves_ is None or self.mixture_of_run_ is None:
            raise NotFittedError(f"{self.name}: call fit(curves) first")
        curves, mixture_of_run = self.curves_, self.mixture_of_run_
        last = np.zeros(len(curves.run_ids))
        np.maximum.at(last, curves.row_run, curves.tokens)
        try:
            early = self._fit_curves(
                curves, mixture_of_run, int(mixture_of_run.max()) + 1, last / ratio
            )
        except FitError:
            return float("nan")
        final = curves.final()
        domains = len(curves.domains)
        groups = (mixture_of_run[:, None] * domains + np.arange(domains)[None, :]).ravel()
        predicted = np.exp(
            kaplan_log_model(
                early.theta[groups],
                np.repeat(np.log(final.params / PARAMS_UNIT), domains),
                np.repeat(np.log(final.tokens / TOKENS_UNIT), domains),
            )[0]
        ).reshape(final.losses.shape)
        largest, smallest = final.params.max(), final.params.min()
        errors = []
        for mixture in np.unique(mixture_of_run):
            big = np.flatnonzero((final.params == largest) & (mixture_of_run == mixture))
            small = np.flatnonzero((final.params == smallest) & (mixture_of_run == mixture))
            if big.size and small.size:
                observed = final.losses[big[0]] - final.losses[small[0]]
                errors.append(predicted[big[0]] - predicted[small[0]] - observed)
        gaps = np.concatenate(errors) if errors else np.empty(0)
        gaps = gaps[np.isfinite(gaps)]
        if gaps.size == 0:
            return float("nan")
        return float(np.sqrt(np.mean(gaps**2)) / np.log(largest / smallest))

    def extrapolation_rmse(self) -> float:
        """Expected RMSE of carrying the curves to the target N: :meth:`backtest_rmse` per unit
        ``log N`` times ``log(N / N_largest_fitted)`` (0 inside the fitted sizes, and 0 when the
        backtest cannot be fitted because the curves' early parts hold fewer than
        :data:`MIN_CHECKPOINTS` checkpoints; ``fit`` then says so in ``warning_``)."""
        if self.extrapolation_rmse_ is None:
            fitted = self.curves_
            if fitted is None:
                raise NotFittedError(f"{self.name}: call fit(curves) first")
            ratio = max(float(np.log(self.params / float(np.max(fitted.params)))), 0.0)
            per_log = self.backtest_rmse() if ratio > 0 else 0.0
            self.extrapolation_rmse_ = float(per_log * ratio) if np.isfinite(per_log) else 0.0
        return self.extrapolation_rmse_

    def scale_error(self) -> float:
        """The errors the mixture stage's bootstrap leaves out, in quadrature: carrying the
        curves to the target N (:meth:`extrapolation_rmse`) and reading them past the runs'
        last checkpoints in D (``tokens_error_``)."""
        return float(np.hypot(self.extrapolation_rmse(), self.tokens_error_))
