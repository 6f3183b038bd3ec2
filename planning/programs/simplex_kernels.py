"""Compiled kernels of Newton's method on the capped simplex (planning/programs/simplex_newton.py).

The mixture planner's steps are small dense problems (a few dozen shares): in numpy each of
their ~100 operations costs a microsecond of call overhead, far more than its arithmetic. These
are the same algorithms as loops compiled once by numba (``cache=True``: the machine code is
kept beside the module, so a later process loads it instead of compiling again):

- `lu_factor` / `lu_solve`: Gaussian elimination with partial pivoting (as LAPACK's getrf /
  getrs), for the free block's bordered KKT matrix;
- `newton_qp_kernel`: the Newton model's primal active-set QP (see `simplex_newton.newton_qp`);
- `sensitivity_kernel`: the minimum's slope, curvature and tangent in a parameter
  (see `simplex_newton.sensitivity`);
- `feasible_kernel` and `vertex_gap_kernel`: the projection of a warm start onto the polytope
  and the Frank-Wolfe gap.

Every entry takes and returns plain float64 / bool arrays and scalars; the wrappers in
simplex_newton.py give them their documented interfaces. `compiled` is the decorator (also
of the repeated-data term in planning/programs/mixture_derivatives.py), from
planning/compiled.py.
"""

from __future__ import annotations

import numpy as np

from mixplan.planning.compiled import compiled

_INF = np.inf


@compiled
def lu_factor(a):
    """``a`` (square, copied) factored in place as ``P a = L U``; returns ``(lu, piv, info)``,
    ``info > 0`` when a pivot is exactly 0 (singular, as getrf's ``info``)."""
    n = a.shape[0]
    lu = a.copy()
    piv = np.empty(n, dtype=np.int64)
    info = 0
    for k in range(n):
        best, row = abs(lu[k, k]), k
        for i in range(k + 1, n):
            if abs(lu[i, k]) > best:
                best, row = abs(lu[i, k]), i
        piv[k] = row
        if row != k:
            for j in range(n):
                lu[k, j], lu[row, j] = lu[row, j], lu[k, j]
        pivot = lu[k, k]
        if pivot == 0.0:
            if info == 0:
                info = k + 1
            continue
        for i in range(k + 1, n):
            factor = lu[i, k] / pivot
            lu[i, k] = factor
            if factor != 0.0:
                for j in range(k + 1, n):
                    lu[i, j] -= factor * lu[k, j]
    return lu, piv, info


@compiled
def lu_solve(lu, piv, b):
    """The solution of ``a x = b`` from `lu_factor`'s ``(lu, piv)``."""
    n = lu.shape[0]
    x = b.copy()
    for k in range(n):
        row = piv[k]
        if row != k:
            x[k], x[row] = x[row], x[k]
    for i in range(n):
        s = x[i]
        for j in range(i):
            s -= lu[i, j] * x[j]
        x[i] = s
    for i in range(n - 1, -1, -1):
        s = x[i]
        for j in range(i + 1, n):
            s -= lu[i, j] * x[j]
        x[i] = s / lu[i, i]
    return x


@compiled
def _free_indices(at_lower, at_upper, free):
    """The coordinates at neither bound written to ``free[:m]``; returns ``m``."""
    m = 0
    for i in range(at_lower.shape[0]):
        if not (at_lower[i] or at_upper[i]):
            free[m] = i
            m += 1
    return m


@compiled
def _free_block(kkt, free, m):
    """The bordered KKT matrix of the free coordinates ``free[:m]`` cut from ``kkt``."""
    a = np.empty((m + 1, m + 1))
    for i in range(m):
        fi = free[i]
        for j in range(m):
            a[i, j] = kkt[fi, free[j]]
        a[i, m] = 1.0
        a[m, i] = 1.0
    a[m, m] = 0.0
    return a


@compiled
def _gradient_at(g, h, d):
    """``q = g + H d``."""
    q = g.copy()
    n = g.shape[0]
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += h[i, j] * d[j]
        q[i] += s
    return q


@compiled
def newton_qp_kernel(g, h, lo, hi, damping, batches):
    """`simplex_newton.newton_qp` compiled: returns ``(d, price, at_lower, at_upper, lu, piv,
    has_factor)``, ``lu`` / ``piv`` the free block's factors when ``has_factor``."""
    n = g.shape[0]
    kkt = h.copy()
    largest = 1e-300
    for i in range(n):
        largest = max(largest, abs(h[i, i]))
    for i in range(n):
        kkt[i, i] += damping * largest
    start_lower = lo >= -1e-12
    start_upper = (hi <= 1e-12) & ~start_lower
    at_lower, at_upper = start_lower.copy(), start_upper.copy()
    d = np.zeros(n)
    q = g.copy()
    nu = 0.0
    stationary = False
    lu = np.empty((0, 0))
    piv = np.empty(0, dtype=np.int64)
    free = np.empty(n, dtype=np.int64)
    for _ in range(4 * n + 10):
        m = _free_indices(at_lower, at_upper, free)
        if m == 0:
            # a vertex: optimal when some price nu makes every multiplier non-negative
            nu_low, nu_high, drop = -_INF, _INF, -1
            for i in range(n):
                if at_lower[i] and -q[i] > nu_low:
                    nu_low, drop = -q[i], i
                if at_upper[i] and -q[i] < nu_high:
                    nu_high = -q[i]
            if nu_low <= nu_high:
                price = -(nu_low if np.isfinite(nu_low) else nu_high)
                return d, price, at_lower, at_upper, lu, piv, False
            at_lower[drop] = False
            stationary = False
            continue
        if not stationary:
            rhs = np.empty(m + 1)
            total = 0.0
            for i in range(n):
                total += d[i]
            for i in range(m):
                rhs[i] = -q[free[i]]
            rhs[m] = -total  # 0 once d is feasible; restores sum d = 0 after a batch
            lu, piv, info = lu_factor(_free_block(kkt, free, m))
            if info != 0:
                if batches < 0:
                    d = np.zeros(n)
                return d, -nu, at_lower, at_upper, lu, piv, False
            solution = lu_solve(lu, piv, rhs)
            nu = solution[m]
            violated = False
            for i in range(m):
                full = d[free[i]] + solution[i]
                if full < lo[free[i]] or full > hi[free[i]]:
                    violated = True
                    break
            if violated:
                if batches > 0:
                    # from a poor start many bounds block: fix every violated one at once
                    batches -= 1
                    for i in range(m):
                        j = free[i]
                        full = d[j] + solution[i]
                        if full < lo[j]:
                            d[j], at_lower[j] = lo[j], True
                        elif full > hi[j]:
                            d[j], at_upper[j] = hi[j], True
                        else:
                            d[j] = full
                    q = _gradient_at(g, h, d)
                    continue
                if batches == 0:
                    # the batches did not settle: back to the primal method from d = 0
                    d, q, batches = np.zeros(n), g.copy(), -1
                    at_lower, at_upper = start_lower.copy(), start_upper.copy()
                    continue
                # ratio test: the longest step along p keeping the free coordinates in bounds
                best, k = _INF, 0
                for i in range(m):
                    j, p = free[i], solution[i]
                    if p != 0.0:
                        room = (lo[j] - d[j]) if p < 0 else (hi[j] - d[j])
                        ratio = room / p
                        if ratio < best:
                            best, k = ratio, i
                length = min(1.0, max(best, 0.0))
                for i in range(m):
                    d[free[i]] += length * solution[i]
                j = free[k]
                if solution[k] < 0:
                    d[j], at_lower[j] = lo[j], True
                else:
                    d[j], at_upper[j] = hi[j], True
                q = _gradient_at(g, h, d)
                continue
            batches = -1  # d is feasible from here on: one bound at a time
            for i in range(m):
                d[free[i]] += solution[i]
            q = _gradient_at(g, h, d)
            stationary = True
        # at the working set's minimiser: every bound's multiplier must be non-negative
        worst, least = -1, _INF
        for i in range(n):
            if at_lower[i]:
                value = q[i] + nu
            elif at_upper[i]:
                value = -(q[i] + nu)
            else:
                continue
            if value < least:
                least, worst = value, i
        if worst < 0 or least >= 0:
            return d, -nu, at_lower, at_upper, lu, piv, True
        at_lower[worst] = False
        at_upper[worst] = False
        stationary = False
    return d, -nu, at_lower, at_upper, lu, piv, False


@compiled
def sensitivity_kernel(
    gradient, hessian, price, at_upper, at_lower, f_t, f_tt, f_tx, upper_rate, upper_curve,
    lu, piv, has_factor,
):  # fmt: skip
    """`simplex_newton.sensitivity` compiled: returns ``(slope, curvature, tangent)``
    (curvature NaN when the free block is singular)."""
    n = gradient.shape[0]
    rate = np.zeros(n)
    curve = np.zeros(n)
    for i in range(n):
        if at_upper[i] and upper_rate[i] != 0.0:
            rate[i], curve[i] = upper_rate[i], upper_curve[i]
    h_rate = np.zeros(n)
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += hessian[i, j] * rate[j]
        h_rate[i] = s
    phi_tt, b1, b2, slope = f_tt, 0.0, 0.0, f_t
    for i in range(n):
        phi_tt += 2 * f_tx[i] * rate[i] + rate[i] * h_rate[i] + gradient[i] * curve[i]
        b1 -= rate[i]
        b2 -= curve[i]
        slope += gradient[i] * rate[i]
    slope += price * b1
    tangent = rate.copy()
    free = np.empty(n, dtype=np.int64)
    m = _free_indices(at_lower, at_upper, free)
    if m == 0:
        return slope, phi_tt + price * b2, tangent
    rhs = np.empty(m + 1)
    for i in range(m):
        rhs[i] = -(f_tx[free[i]] + h_rate[free[i]])
    rhs[m] = b1
    if not has_factor:
        lu, piv, info = lu_factor(_free_block(hessian, free, m))
        if info != 0:  # a singular free block: no second-order information
            return slope, np.nan, tangent
    solution = lu_solve(lu, piv, rhs)
    curvature = phi_tt - solution[m] * b1 + price * b2
    for i in range(m):
        tangent[free[i]] = solution[i]
        curvature -= rhs[i] * solution[i]
    return slope, curvature, tangent


@compiled
def feasible_kernel(x, lower, upper):
    """`simplex_newton._feasible` compiled."""
    n = x.shape[0]
    y = np.minimum(np.maximum(x, lower), upper)
    for _ in range(2):
        excess = -1.0
        for i in range(n):
            excess += y[i]
        if abs(excess) <= 4e-16 * n:  # the rounding of the sum itself
            break
        room = np.empty(n)
        inside_total, total = 0.0, 0.0
        for i in range(n):
            room[i] = (y[i] - lower[i]) if excess > 0 else (upper[i] - y[i])
            total += room[i]
            if lower[i] < y[i] < upper[i]:
                inside_total += room[i]
        if inside_total >= abs(excess):
            total = 0.0
            for i in range(n):
                if not lower[i] < y[i] < upper[i]:
                    room[i] = 0.0
                total += room[i]
        if total <= 0:
            break
        for i in range(n):
            y[i] = min(max(y[i] - excess * room[i] / total, lower[i]), upper[i])
    return y


@compiled
def vertex_gap_kernel(gradient, x, lower, upper):
    """`simplex_newton.vertex_gap` compiled."""
    n = gradient.shape[0]
    order = np.argsort(gradient, kind="mergesort")  # stable: ties fill in index order
    left = 1.0
    gap = 0.0
    for i in range(n):
        left -= lower[i]
        gap += gradient[i] * (x[i] - lower[i])
    for k in range(n):
        j = order[k]
        fill = min(max(left, 0.0), upper[j] - lower[j])
        gap -= gradient[j] * fill
        left -= upper[j] - lower[j]
    return gap
