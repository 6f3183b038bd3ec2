"""Newton's method on the capped simplex, with a certificate of optimality.

Minimises a smooth convex ``f(r)`` over ``{r : sum_j r_j = 1, lower_j <= r_j <= upper_j}`` (the
mixture polytope: shares, per-source caps, trust region) from its analytic gradient and Hessian:

- each step solves the Newton model ``min g.d + d'(H + damping I)d / 2`` over the polytope
  exactly, with a primal active-set QP (a few linear solves of the free block's KKT system,
  warm-started from the bounds active at the current point);
- a backtracking (Armijo) line search along that feasible direction;
- it stops on the Frank-Wolfe gap ``g.(r - s)``, ``s`` the polytope vertex minimising ``g.s``
  (a fractional knapsack: fill the cheapest coordinates to their upper bounds). For convex
  ``f`` that gap is an upper bound on ``f(r) - min f``: a certificate, not a heuristic, as far
  as the gradient is exact.

The bound multipliers (the shadow prices of the caps) come from the last gradient. Coordinates
marked ``interior`` (an infinite slope at 0, as in ``h^gamma`` with gamma < 1) never move more
than 99% of the way to 0 in one step, so the gradient stays finite.

The QP, the sensitivity, the projection and the gap run as compiled loops
(planning/programs/simplex_kernels.py); this module keeps the method and its interfaces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mixplan.planning.programs.simplex_kernels import (
    feasible_kernel,
    newton_qp_kernel,
    sensitivity_kernel,
    vertex_gap_kernel,
)

Derivatives = Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]]
"""``r -> (f(r), gradient, Hessian)``."""

ARMIJO = 1e-4
"""Sufficient-decrease constant of the line search (Nocedal & Wright's usual choice)."""

DAMPING = 1e-10
"""Levenberg damping relative to the Hessian's largest diagonal entry: keeps the KKT system
nonsingular where ``f`` is flat (an exponential law with fewer domains than sources)."""

ROUNDING = 1e-13
"""Relative decrease below which the line search takes the full step (values carry ~1e-16
relative rounding, sums of a few dozen terms a few times that)."""

BATCHES = 3
"""Newton-QP passes that fix every violated bound at once before the one-at-a-time primal
active-set method (which a cold start would otherwise take one pass per bound)."""

_NO_FACTOR, _NO_PIVOTS = np.empty((0, 0)), np.empty(0, dtype=np.int64)
"""Placeholders for `sensitivity`'s factors when the caller has none (the kernel factors)."""

TO_BOUNDARY = 0.99
"""Largest fraction of the way to 0 an ``interior`` coordinate moves in one step."""


class NewtonStep(NamedTuple):
    """A Newton step ``d`` on the polytope (`newton_qp`) and what its QP knows at ``x + d``:
    the model gradient's common value on the free coordinates (``price``), the working set,
    and the LU factors (`simplex_kernels.lu_factor`'s ``lu, piv``) of the free block's KKT
    matrix (``None`` at a vertex)."""

    d: np.ndarray
    price: float
    at_lower: np.ndarray
    at_upper: np.ndarray
    factor: tuple[np.ndarray, np.ndarray] | None


@dataclass(frozen=True)
class SimplexSolution:
    """The minimiser, its value, the certificate and the multipliers.

    ``gap`` bounds ``f(x) - min f`` (Frank-Wolfe gap); ``upper_duals`` / ``lower_duals`` are the
    non-negative multipliers of ``x <= upper`` / ``x >= lower`` (``d min f / d upper_j`` is
    ``-upper_duals_j``); ``price`` is the multiplier of ``sum x = 1``.
    """

    x: np.ndarray
    value: float
    gap: float
    certified: bool
    iterations: int
    upper_duals: np.ndarray
    lower_duals: np.ndarray
    price: float
    gradient: np.ndarray
    hessian: np.ndarray
    """``f``'s gradient and Hessian at ``x`` (for the sensitivity of the minimum)."""


def vertex_gap(gradient: np.ndarray, x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """The Frank-Wolfe gap ``g.(x - s)``, ``s = argmin g.s`` over the capped simplex: fill the
    cheapest coordinates to their upper bounds until the shares sum to 1."""
    return float(vertex_gap_kernel(gradient, x, lower, upper))


def minimize_on_simplex(
    derivatives: Derivatives,
    value: Callable[[np.ndarray], float],
    start: np.ndarray,
    upper: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    interior: np.ndarray | None = None,
    gap_tol: float = 1e-10,
    max_iter: int = 60,
) -> SimplexSolution:
    """Minimise ``f`` over ``{sum x = 1, lower <= x <= upper}`` from a feasible ``start``.

    Parameters
    ----------
    derivatives
        ``x -> (f, gradient, Hessian)``, exact (the certificate is only as true as the gradient).
    value
        ``x -> f`` (the line search's evaluations).
    start
        A point of the polytope (projected onto it if slightly off).
    upper, lower
        Bounds (``lower`` defaults to 0); ``sum lower <= 1 <= sum upper``.
    interior
        Coordinates whose slope is infinite at their lower bound (kept strictly above it).
    gap_tol
        Stop when the certified gap is at most ``gap_tol * max(1, |f|)``.
    """
    n = len(upper)
    lower = np.zeros(n) if lower is None else lower
    interior = None if interior is None or not interior.any() else interior
    x = _feasible(np.asarray(start, dtype=float), lower, upper)
    if interior is not None and np.any(interior & (x <= lower)):
        # an interior share at its bound has an infinite slope: move 1% of the way to the
        # polytope's centre (a feasible point with every share above its bound)
        centre = lower + (upper - lower) * ((1.0 - lower.sum()) / (upper - lower).sum())
        x = TO_BOUNDARY * x + (1 - TO_BOUNDARY) * centre
    f, g, h = derivatives(x)
    gap = vertex_gap(g, x, lower, upper)
    iterations = 0
    while iterations < max_iter and np.isfinite(f) and gap > gap_tol * max(1.0, abs(f)):
        iterations += 1
        floor = (
            lower
            if interior is None
            else np.where(interior, lower + (1 - TO_BOUNDARY) * (x - lower), lower)
        )
        d = newton_qp(g, h, floor - x, upper - x).d
        slope = float(g @ d)
        if not np.any(d) or slope > ROUNDING * max(1.0, abs(f)):
            break  # no step, or none downhill: the gap is what rounding leaves
        t = 1.0
        trial = _feasible(x + d, lower, upper)
        f_trial, g_trial, h_trial = derivatives(trial)
        # the full Newton step when its predicted decrease is below what f's rounding resolves
        # (there a value comparison is noise; the gap, not the value, certifies the point)
        while -slope > ROUNDING * max(1.0, abs(f)) and not f_trial <= f + ARMIJO * t * slope:
            t *= 0.5
            if t < 1e-12:
                break
            trial = _feasible(x + t * d, lower, upper)
            f_trial = value(trial)
        if t < 1e-12:
            break
        if t < 1.0:
            f_trial, g_trial, h_trial = derivatives(trial)
        x, f, g, h = trial, f_trial, g_trial, h_trial
        gap = vertex_gap(g, x, lower, upper)
    upper_duals, lower_duals, price = multipliers(g, x, lower, upper)
    return SimplexSolution(
        x=x,
        value=float(f),
        gap=max(gap, 0.0),
        certified=bool(np.isfinite(f) and gap <= gap_tol * max(1.0, abs(f))),
        iterations=iterations,
        upper_duals=upper_duals,
        lower_duals=lower_duals,
        price=price,
        gradient=g,
        hessian=h,
    )


def _feasible(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``x`` clipped to its bounds with ``sum x = 1`` restored through the coordinates strictly
    inside them (in proportion to their room), so a warm start keeps its bounds active; all
    coordinates' room when those cannot take it."""
    return feasible_kernel(x, lower, upper)


def newton_qp(g: np.ndarray, h: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> NewtonStep:
    """``argmin g.d + d'Hd/2`` s.t. ``sum d = 0``, ``lo <= d <= hi`` (``lo <= 0 <= hi``):
    a primal active-set method from ``d = 0``, its working set the bounds active at 0.

    Each pass solves the free block's KKT system ``[H_FF 1; 1' 0] [p_F; nu] = [-q_F; -sum d]``
    (``q = g + H d``; the working set's ``p_j = 0``), cut from the bordered, damped matrix built
    once; a blocked step adds the blocking bound, a full step reaches the working set's
    minimiser, where the bound with the most negative multiplier is dropped (none: done).
    Returns the step with its working set, price and the free block's factorisation.
    """
    d, price, at_lower, at_upper, lu, piv, has_factor = newton_qp_kernel(
        g, h, lo, hi, DAMPING, BATCHES
    )
    return NewtonStep(d, float(price), at_lower, at_upper, (lu, piv) if has_factor else None)


def active_bounds(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which coordinates sit at their upper / lower bound (within ``1e-9`` of their range)."""
    tol = 1e-9 * np.maximum(upper - lower, 1e-300)
    at_upper = x >= upper - tol
    return at_upper, (x <= lower + tol) & ~at_upper


def multipliers(
    g: np.ndarray, x: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """KKT multipliers at ``x``: the price of ``sum x = 1`` from the free coordinates'
    gradient, then each bound's non-negative multiplier ``g_j - price`` (lower) or
    ``price - g_j`` (upper)."""
    at_upper, at_lower = active_bounds(x, lower, upper)
    free = ~(at_upper | at_lower)
    if free.any():
        price = float(g[free].mean())  # equal at a KKT point; the mean averages rounding
    else:
        low = np.max(g[at_upper], initial=-np.inf)
        high = np.min(g[at_lower], initial=np.inf)
        price = float(low if np.isfinite(low) else high)
    upper_duals = np.where(at_upper, np.maximum(price - g, 0.0), 0.0)
    lower_duals = np.where(at_lower, np.maximum(g - price, 0.0), 0.0)
    return upper_duals, lower_duals, price


@dataclass(frozen=True)
class Sensitivity:
    """How the minimum ``V(t) = min f(t, x)`` over the polytope moves with a parameter ``t``.

    ``slope`` and ``curvature`` are ``V'(t)`` and ``V''(t)``; ``tangent`` is ``dx*/dt`` (the
    minimiser's path), all for the active set held at the solution's.
    """

    slope: float
    curvature: float
    tangent: np.ndarray


def sensitivity(
    gradient: np.ndarray,
    hessian: np.ndarray,
    price: float,
    at_upper: np.ndarray,
    at_lower: np.ndarray,
    f_t: float,
    f_tt: float,
    f_tx: np.ndarray,
    upper_rate: np.ndarray,
    upper_curve: np.ndarray,
    factor: tuple[np.ndarray, np.ndarray] | None = None,
) -> Sensitivity:
    """``V'``, ``V''`` and ``dx*/dt`` at a minimiser of ``f(t, .)`` over
    ``{sum x = 1, lower <= x <= upper(t)}`` (``gradient``, ``hessian`` and the sum's ``price``
    there, the bounds ``at_upper`` / ``at_lower`` active), from ``f``'s partials in ``t``
    (``f_t``, ``f_tt``, the mixed ``f_tx``) and the bounds' ``upper'(t)`` / ``upper''(t)``
    (``upper_rate`` / ``upper_curve``; 0 where a bound does not move). ``factor``: the LU
    factors of the free block's KKT matrix when the caller has them (`NewtonStep`).

    With the active set fixed, coordinates at a moving upper bound follow it (``x_C =
    upper_C(t)``), those at a fixed bound stay, and the free block ``F`` solves
    ``min phi(t, x_F)`` s.t. ``sum x_F = b(t)``, ``b = 1 - sum`` of the bound coordinates.
    The envelope theorem gives ``V' = phi_t + nu b'`` (``nu`` the price of the sum), and
    differentiating the free block's KKT conditions ``[H_FF 1; 1' 0] [x_F'; -nu'] =
    [-phi_tF; b']`` gives ``V'' = phi_tt + phi_tF.x_F' + nu' b' + nu b''``.
    """
    lu, piv = factor if factor is not None else (_NO_FACTOR, _NO_PIVOTS)
    slope, curvature, tangent = sensitivity_kernel(
        gradient, hessian, float(price), at_upper, at_lower, float(f_t), float(f_tt), f_tx,
        upper_rate, upper_curve, lu, piv, factor is not None,
    )  # fmt: skip
    return Sensitivity(float(slope), float(curvature), tangent)
