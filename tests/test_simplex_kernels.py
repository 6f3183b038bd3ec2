"""The compiled kernels of Newton's method on the capped simplex, each against an independent
method: LU against numpy's LAPACK solve, the Newton QP against cvxpy (Clarabel), the
Frank-Wolfe gap against scipy's LP solver, the projection against its defining properties.
(The mixture solves built on them are checked against SLSQP, random search and the conic
program in tests/test_mixture_optimality.py; the sensitivity against finite differences.)"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import linprog

from mixplan.planning.programs.simplex_kernels import lu_factor, lu_solve
from mixplan.planning.programs.simplex_newton import _feasible, newton_qp, vertex_gap


def _capped_simplex(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random caps with room for a mixture, and a point of the polytope."""
    upper = rng.uniform(0.02, 0.6, n)
    upper[rng.random(n) < 0.3] = 1.0
    upper *= max(1.0, 1.3 / upper.sum())
    upper = np.minimum(upper, 1.0)
    x = _feasible(rng.dirichlet(np.ones(n) * 0.5), np.zeros(n), upper)
    return upper, x


@pytest.mark.parametrize("n", [1, 2, 7, 18, 51])
def test_lu_solves_like_lapack(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, n)) + n * np.eye(n) * rng.choice([-1, 1], n)
    b = rng.normal(size=n)
    lu, piv, info = lu_factor(a)
    assert info == 0
    np.testing.assert_allclose(lu_solve(lu, piv, b), np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
    # a bordered KKT matrix has a zero on its diagonal: pivoting must handle it
    kkt = np.block([[np.eye(n) * 2.0, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
    rhs = rng.normal(size=n + 1)
    lu, piv, info = lu_factor(kkt)
    assert info == 0
    np.testing.assert_allclose(lu_solve(lu, piv, rhs), np.linalg.solve(kkt, rhs), atol=1e-12)
    # a zero (and a tiny) leading entry: only row exchanges make these solvable accurately
    for corner in (0.0, 1e-14):
        shuffled = rng.normal(size=(n + 1, n + 1))
        shuffled[0, 0] = corner
        lu, piv, info = lu_factor(shuffled)
        assert info == 0
        np.testing.assert_allclose(
            lu_solve(lu, piv, rhs), np.linalg.solve(shuffled, rhs), rtol=1e-8, atol=1e-10
        )


def test_lu_reports_a_singular_matrix():
    a = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]])
    assert lu_factor(a)[2] > 0


@pytest.mark.parametrize("seed", range(12))
def test_newton_qp_matches_cvxpy(seed):
    """``min g.d + d'Hd/2`` s.t. ``sum d = 0``, ``lo <= d <= hi`` for random convex QPs (some
    rank-deficient, as an exponential law's Hessian with fewer domains than sources)."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([3, 8, 17, 40]))
    upper, x = _capped_simplex(rng, n)
    rank = n if seed % 3 else max(1, n // 3)
    factor = rng.normal(size=(rank, n))
    h = factor.T @ factor + 1e-3 * np.eye(n)
    g = rng.normal(size=n)
    lo, hi = -x, upper - x
    step = newton_qp(g, h, lo, hi)
    d = cp.Variable(n)
    problem = cp.Problem(
        cp.Minimize(g @ d + 0.5 * cp.quad_form(d, cp.psd_wrap(h))),
        [cp.sum(d) == 0, d >= lo, d <= hi],
    )
    problem.solve(solver=cp.CLARABEL)
    assert problem.status == cp.OPTIMAL

    def model(v):
        return float(g @ v + 0.5 * v @ h @ v)

    assert abs(step.d.sum()) < 1e-10
    assert np.all(step.d >= lo - 1e-10) and np.all(step.d <= hi + 1e-10)
    assert model(step.d) <= model(d.value) + 1e-7 * max(1.0, abs(model(d.value)))
    # the price is the model gradient's common value on the free coordinates
    free = ~(step.at_lower | step.at_upper)
    if free.any():
        np.testing.assert_allclose((g + h @ step.d)[free], step.price, atol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_vertex_gap_matches_the_linear_program(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.choice([2, 5, 17, 50]))
    upper, x = _capped_simplex(rng, n)
    lower = np.where(rng.random(n) < 0.2, np.minimum(0.01, upper / 2), 0.0)
    x = _feasible(x, lower, upper)
    g = rng.normal(size=n)
    g[: n // 4] = g[0]  # ties
    lp = linprog(g, A_eq=np.ones((1, n)), b_eq=[1.0], bounds=list(zip(lower, upper, strict=True)))
    assert lp.status == 0
    assert vertex_gap(g, x, lower, upper) == pytest.approx(g @ x - lp.fun, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_feasible_projects_onto_the_polytope_keeping_its_bounds(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.choice([2, 6, 17]))
    upper, _ = _capped_simplex(rng, n)
    lower = np.zeros(n)
    start = rng.uniform(-0.1, 1.2, n) * upper
    start[0] = upper[0]  # a coordinate on its cap stays there when the others can take up
    y = _feasible(start, lower, upper)
    assert y.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(y >= lower) and np.all(y <= upper)
    clipped = np.minimum(np.maximum(start, lower), upper)
    inside = (clipped > lower) & (clipped < upper)
    excess = clipped.sum() - 1.0
    room = (clipped - lower if excess > 0 else upper - clipped)[inside].sum()
    if room >= abs(excess):  # the coordinates inside can take it: those on a bound stay
        assert y[0] == upper[0]
        np.testing.assert_array_equal(y[~inside], clipped[~inside])
