"""Newton's method jointly in a scalar parameter and the shares on a moving capped simplex.

Minimises ``f(t, x)`` over ``t`` in ``[t_lower, t_upper]`` and ``x`` in ``{sum x = 1,
lower <= x <= upper(t)}`` (the mixture plan's ``t = log D``, whose caps ``U_j epochs_j / D``
move with t). Each step:

- solves the shares' Newton model at fixed t exactly (`newton_qp`: ``x -> x + d0``);
- moves t by the Newton step of the model's minimum in t, ``dt = -V'/V''``, from the
  `sensitivity` of that minimum (its slope and curvature in t, the shares' tangent ``T``), the
  shares following ``d0 + T dt``: block elimination of the joint Newton system, so near the
  optimum the iterates converge quadratically in (t, x) together;
- backtracks (Armijo) on ``f`` along the joint direction, or along ``d0`` alone when the joint
  one does not descend (``V'' <= 0`` far from the optimum: f need not be jointly convex).

It stops when the joint Newton decrement is below the caller's tolerance and the step in t
below ``t_tol``, returning the point after that last step. The caller then certifies the
shares at that t with `minimize_on_simplex` (its Frank-Wolfe gap), and falls back to a 1-D
search over t when this returns ``None``: no convergence, a step against a t bound, or a
non-finite value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mixplan.planning.programs.simplex_newton import (
    ARMIJO,
    ROUNDING,
    TO_BOUNDARY,
    _feasible,
    newton_qp,
    sensitivity,
)

JointModel = Callable[[float, np.ndarray], tuple]
"""``(t, x) -> (f, gradient, Hessian, f_t, f_tt, f_tx)``: f and its derivatives in x and t."""

Bounds = Callable[[float], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``t -> (upper, upper'(t), upper''(t))``: the shares' upper bounds and how they move."""

MAX_T_STEP = 2.0
"""Longest step in t (a factor e^2 = 7.4 in D for t = log D)."""


@dataclass(frozen=True)
class JointSolution:
    """Where the joint iteration stopped (to be certified by the caller)."""

    t: float
    x: np.ndarray
    iterations: int


def minimize_jointly(
    model: JointModel,
    bounds: Bounds,
    t: float,
    start: np.ndarray,
    t_lower: float,
    t_upper: float,
    *,
    t_tol: float,
    decrement_tol: float,
    interior: np.ndarray | None = None,
    max_iter: int = 40,
) -> JointSolution | None:
    """Joint Newton iterations from ``(t, start)``; ``None`` when they do not settle inside
    ``(t_lower, t_upper)`` (see the module docstring). ``decrement_tol`` is relative to
    ``max(1, |f|)``; ``interior`` marks shares kept off 0 (infinite slope there)."""
    n = len(start)
    lower = np.zeros(n)
    interior = None if interior is None or not interior.any() else interior
    upper, rate, curve = bounds(t)
    x = _feasible(np.asarray(start, dtype=float), lower, upper)
    f, g, h, f_t, f_tt, f_tx = model(t, x)
    for iteration in range(max_iter):
        if not np.isfinite(f):
            return None
        floor = lower if interior is None else np.where(interior, (1 - TO_BOUNDARY) * x, 0.0)
        step = newton_qp(g, h, floor - x, upper - x)
        d0 = step.d
        change = sensitivity(
            g + h @ d0,
            h,
            step.price,
            step.at_upper,
            step.at_lower,
            f_t + f_tx @ d0,
            f_tt,
            f_tx,
            rate,
            curve,
            factor=step.factor,
        )
        dt = -change.slope / change.curvature if change.curvature > 0 else 0.0
        dt = min(max(dt, -MAX_T_STEP), MAX_T_STEP)
        if not t_lower < t + dt < t_upper:
            return None  # the optimum may sit at a bound of t: the 1-D search handles it
        d = d0 + change.tangent * dt
        slope = f_t * dt + float(g @ d)
        if not slope < 0:  # the joint direction does not descend: the shares' step alone
            d, dt, slope = d0, 0.0, float(g @ d0)
        scale = max(1.0, abs(f))
        if -slope <= decrement_tol * scale and abs(dt) < t_tol:
            # the last step, untested: its predicted decrease is below the tolerance, and it
            # cuts the shares' error (which the certifying gap is linear in) quadratically
            return JointSolution(t + dt, _feasible(x + d, floor, bounds(t + dt)[0]), iteration)
        tau = 1.0
        while True:
            t_trial = t + tau * dt
            upper_trial, rate_trial, curve_trial = bounds(t_trial)
            x_trial = x + tau * d
            if tau == 1.0:  # the step's upper bounds exactly, so the next QP starts from them
                x_trial = np.where(step.at_upper, upper_trial, x_trial)
            x_trial = _feasible(x_trial, floor, upper_trial)
            trial = model(t_trial, x_trial)
            # the full step when its predicted decrease is below what f's rounding resolves
            if -slope <= ROUNDING * scale or trial[0] <= f + ARMIJO * tau * slope:
                break
            tau *= 0.5
            if tau < 1e-12:
                return None
        t, x, upper, rate, curve = t_trial, x_trial, upper_trial, rate_trial, curve_trial
        f, g, h, f_t, f_tt, f_tx = trial
    return None
