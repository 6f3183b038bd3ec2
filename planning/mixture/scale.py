"""The joint mixture-and-size law at the target tokens: one law in (mixture, N), all sizes at once.

:class:`ScaleRoute` reads every run's loss at the target D (:mod:`mixplan.planning.mixture.steps`:
interpolated inside the logged checkpoints, a power law with a floor past them, refused beyond
``max_ratio`` x the last checkpoint, with the backtested error of any extrapolation), then fits
Shukor et al.'s additive law with its size term,

    ``L_i(h, N) = E_i + 1 / (sum_j C_ij h_j^gamma_ij) + A_i(h) / N^alpha_i``,

across every model size at once (``A_i(h) = sum_j A_ij h_j`` when ``joint``, else a constant),
by the shared engine, bootstrapped by run. Why at one D rather than on every checkpoint: the
Chinchilla form's ``B / D^beta`` is independent of N, but along a learning-rate schedule larger
models gain more per step (on 5Mix the 410M model gains 25% more loss from 10k to 30k steps
than the 70M one), so fitting it on all checkpoints mis-predicts the target (see
:class:`mixplan.planning.mixture.nested.JointRoute`, kept for comparison). The law has an
irreducible floor (``E_i + 1/sum``), is monotone decreasing in N (``A >= 0``, ``alpha >= 0``)
and convex in h at any N (``gamma`` in (0, 1], ``A(h)`` linear), so the fitted law is an
:class:`mixplan.planning.mixture.additive.AdditiveScaleLaw` and the planner uses it unchanged.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from typing import Self

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import FitError, SpecError
from mixplan.planning.mixture.additive import AdditiveScaleLaw
from mixplan.planning.mixture.data import domain_weight_vector
from mixplan.planning.mixture.engine import DEFAULT_DELTA
from mixplan.planning.mixture.nested import LawRoute, MixtureCurves
from mixplan.planning.mixture.steps import (
    MAX_RATIO,
    StepStage,
    losses_at_tokens,
    tokens_error,
)
from mixplan.planning.programs.mixture import GAP_TOL
from mixplan.planning.programs.mixture_derivatives import target_derivatives
from mixplan.planning.programs.mixture_forms import scaled_target
from mixplan.planning.programs.simplex_newton import minimize_on_simplex

EXPONENT_MODES = ("auto", "free", "pooled")
"""How :class:`ScaleRoute` sets the size exponent (or give a number)."""


class ScaleRoute(LawRoute):
    """Step stage to the target D, then the additive law in (mixture, N) across all sizes.

    Parameters
    ----------
    params, tokens
        Target model parameters N and training tokens D.
    joint
        ``True``: the size term's amplitude depends on the mixture (``A(h) = sum_j A_j h_j``),
        so the best mixture may move with N; ``False``: one A per domain.
    max_ratio
        Refuse to extrapolate a run's curve past ``max_ratio`` x its last checkpoint.
    size_exponent
        How alpha is set: ``"free"`` (fitted per domain), ``"pooled"`` (the median of the
        per-domain fits, then every domain refitted with it), a number (held fixed, e.g. from a
        scale-law fit of the same model family), or ``"auto"``: free with three or more model
        sizes, pooled with two. Two sizes do not identify alpha per domain (the floor and the
        amplitude absorb it); pooling across domains keeps it from the noise (5Mix, fit
        70M-160M, predict 410M: 0.067 nats free, 0.043 pooled; 0.013 if alpha were known) but
        does not identify it either: with two sizes the pipeline fits
        :class:`mixplan.planning.mixture.curves.CurvesRoute` instead (0.0175), whose law
        identifies the exponent from the curves in D.
    n_bootstrap, seed
        Bootstrap draws (resampling runs) of the law, for intervals.
    delta
        Huber threshold of the step laws and of the law.
    """

    def __init__(
        self,
        *,
        params: float,
        tokens: float,
        joint: bool = True,
        max_ratio: float = MAX_RATIO,
        size_exponent: str | float = "auto",
        n_bootstrap: int = 0,
        seed: int = 0,
        delta: float = DEFAULT_DELTA,
    ) -> None:
        if isinstance(size_exponent, str) and size_exponent not in EXPONENT_MODES:
            raise SpecError(
                f"ScaleRoute: size_exponent must be a number or one of {EXPONENT_MODES}, "
                f"got {size_exponent!r}"
            )
        if not (params > 0 and tokens > 0):
            raise SpecError("ScaleRoute: params and tokens must be positive")
        if not max_ratio >= 1:
            raise SpecError(f"ScaleRoute: max_ratio must be at least 1, got {max_ratio}")
        self.params, self.tokens = float(params), float(tokens)
        self.joint = joint
        self.max_ratio = max_ratio
        self.size_exponent = size_exponent
        self.delta = delta
        self.n_bootstrap, self.seed = n_bootstrap, seed
        self.law_ = self._new_law(
            size_exponent if isinstance(size_exponent, (int, float)) else None
        )
        self.notes_: tuple[str, ...] = ()
        self.name = f"scale route ({'A in h' if joint else 'shared A'}, at target D)"
        self.stage_: StepStage | None = None
        self.sources_: tuple[str, ...] = ()
        self.domains_: tuple[str, ...] = ()

    def fit(self, curves: MixtureCurves) -> Self:
        """Read every run at the target D, fit the law across all sizes.

        Raises
        ------
        ExtrapolationError
            If a run would be extrapolated past ``max_ratio`` x its last checkpoint.
        FitError
            If fewer than two model sizes reach the target D.
        """
        data, self.stage_ = losses_at_tokens(
            curves, self.tokens, max_ratio=self.max_ratio, delta=self.delta
        )
        self.tokens_error_ = tokens_error(self.stage_.backtest)
        sizes = np.unique(data.params)
        if len(sizes) < 2:
            raise FitError(
                f"{self.name}: the runs at D = {self.tokens:.4g} have one model size "
                f"({sizes.tolist()}); a size law needs two or more"
            )
        mode = self.size_exponent
        if mode == "auto":
            mode = "free" if len(sizes) >= 3 else "pooled"
        notes = []
        if mode == "pooled":
            free = self._new_law(None, n_bootstrap=0).fit(data)
            alpha = float(np.median([f.theta[-1] for f in free._fits()]))
            self.law_ = self._new_law(alpha)
            notes.append(
                f"size exponent alpha = {alpha:.3g}: the median of the per-domain fits, held in "
                f"every domain ({len(sizes)} model sizes do not identify it per domain; give "
                "size_exponent from a scale-law fit of the same model family if you have one)"
            )
        self.law_.fit(data)
        self.notes_ = tuple(notes)
        self.sources_, self.domains_ = curves.sources, curves.domains
        return self

    def _new_law(
        self, size_exponent: float | None, *, n_bootstrap: int | None = None
    ) -> AdditiveScaleLaw:
        return AdditiveScaleLaw(
            joint=self.joint,
            tokens_term=False,
            size_exponent=size_exponent,
            params=self.params,
            tokens=self.tokens,
            delta=self.delta,
            n_bootstrap=self.n_bootstrap if n_bootstrap is None else n_bootstrap,
            seed=self.seed,
        )

    def _fitted(self) -> bool:
        return self.stage_ is not None


def best_mixture(
    route: object,
    sources: tuple[str, ...],
    *,
    max_shares: Mapping[str, float] | None = None,
    domain_weights: np.ndarray | Mapping[str, float] | None = None,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """The mixture minimising a route's convex target at its (N, D), within a trust region.

    A preview of the planner's mixture program with no source caps: ``min sum_i w_i L_i(r)``
    over the simplex, each share at most ``max_shares[source]`` (the largest share the law saw),
    solved as the planner solves it: Newton on the capped simplex with its certificate when the
    law has analytic derivatives, else the conic program (which can end "optimal_inaccurate" on
    the additive law's power cones). The answer is checked numerically against ``candidates``
    (e.g. the fitted runs' mixtures inside the trust region) and the lowest is returned.

    Raises
    ------
    FitError
        If neither solver reaches an (even inaccurate) optimum and no candidate is given.
    """
    limits = np.array([float((max_shares or {}).get(s, 1.0)) for s in sources])
    vector = domain_weight_vector(route.domains_, domain_weights)  # type: ignore[attr-defined]

    def target(mixtures: np.ndarray) -> np.ndarray:
        return np.atleast_2d(route.predict(mixtures)) @ vector  # type: ignore[attr-defined]

    law = route._law() if hasattr(route, "_law") else route  # type: ignore[attr-defined]
    options = []
    solution = _newton_mixture(law, domain_weights, limits)
    if solution is not None:
        options.append(solution)
    else:
        # the planner's well-scaled convex form of the law (a combination of laws has terms of
        # very different scales that leave the conic solver inaccurate on its own expression)
        weights = cp.Variable(len(sources), nonneg=True)
        problem = cp.Problem(
            cp.Minimize(scaled_target(law, weights, domain_weights)),
            [cp.sum(weights) == 1, weights <= limits],
        )
        with warnings.catch_warnings(), contextlib.suppress(cp.SolverError):
            warnings.simplefilter("ignore", UserWarning)  # "may be inaccurate": checked below
            problem.solve()
        if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) and weights.value is not None:
            value = np.maximum(weights.value, 0.0)
            options.append(value / value.sum())
    if candidates is not None:
        inside = np.all(candidates <= limits * (1 + 1e-9), axis=1)
        options.extend(np.asarray(candidates)[inside])
    if not options:
        raise FitError("best mixture: the convex program reached no optimum and no candidate given")
    options_array = np.array(options)
    return options_array[int(np.argmin(target(options_array)))]


def _newton_mixture(law, domain_weights, limits: np.ndarray) -> np.ndarray | None:
    """The planner's certified Newton solve of ``min sum_i w_i L_i(r)`` over the capped simplex
    (`minimize_on_simplex` on the law's analytic target); ``None`` when the law has no analytic
    target or the certificate failed (then the conic program decides)."""
    target = target_derivatives(law, domain_weights)
    if target is None or limits.sum() < 1 - 1e-12:
        return None
    solution = minimize_on_simplex(
        target.derivatives,
        target.value,
        limits / limits.sum(),
        limits,
        interior=target.interior,
        gap_tol=GAP_TOL,
    )
    return solution.x if solution.certified else None
