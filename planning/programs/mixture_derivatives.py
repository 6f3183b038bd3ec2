"""Analytic value, gradient and Hessian of the mixture program's objective in the shares r.

At a fixed D the objective of planning/programs/mixture.py is, up to a constant,

    F(r) = M(r) + B (sum_j D'_j(D r_j))^-beta

with ``M`` the mixture law's user-weighted target and ``D'_j`` Muennighoff's effective tokens
of source j (``x`` up to its unique tokens ``U_j``, then
``U_j + U_j R* (1 - exp(-(x - U_j)/(U_j R*)))``: concave, once continuously differentiable).
Both parts are convex in r; these are their exact derivatives for every family with a closed
form (laws.md 2):

- exponential (Data Mixing Laws): ``sum_i w_i (c_i + k_i exp(t_i.r))``, Hessian ``T' diag(e) T``;
- additive (and its scale form): ``sum_i w_i (E_i + 1/S_i(r))``, ``S_i = sum_j C_ij r_j^g_ij``
  (slope infinite at ``r_j = 0`` when ``g_ij < 1``: those shares are kept interior);
- per-source: ``sum_i w_i (L_i + sum_j B_ij (N0_ij + u r_j)^-g_ij)``, a diagonal Hessian.

A law of another family has no entry (``target_derivatives`` returns ``None``) and the program
uses its conic form instead. The values agree with each law's own ``target_loss``
(tests/test_programs.py checks values and finite-difference gradients for every family).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.compiled import compiled
from mixplan.planning.programs.mixture_forms import additive_scale_terms, domain_vector

GAMMA_ONE = 1.0 - 1e-12
"""An additive exponent at least this is linear (finite slope at 0), as in the conic form."""


@dataclass(frozen=True)
class ExponentialTarget:
    """``const + sum_i exp(a_i + t_i.r)``, ``a_i = log w_i + log k_i`` (rows with ``w_i > 0``)."""

    constant: float
    offsets: np.ndarray
    t: np.ndarray

    interior = None

    def value(self, r: np.ndarray) -> float:
        return self.constant + float(np.exp(self.offsets + self.t @ r).sum())

    def derivatives(self, r: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        e = np.exp(self.offsets + self.t @ r)
        return self.constant + float(e.sum()), e @ self.t, self.t.T @ (e[:, None] * self.t)


@dataclass(frozen=True)
class AdditiveTarget:
    """``const + linear.r + sum_i w_i / sum_j C_ij r_j^g_ij``."""

    constant: float
    linear: np.ndarray
    w: np.ndarray
    c: np.ndarray
    gamma: np.ndarray

    @property
    def interior(self) -> np.ndarray:
        """Shares with an infinite slope at 0 (some ``g_ij < 1`` with ``C_ij > 0``)."""
        return np.any((self.gamma < GAMMA_ONE) & (self.c > 0), axis=0)

    def _sums(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        terms = self.c * r**self.gamma  # (domains, sources)
        return terms.sum(axis=1), terms

    def value(self, r: np.ndarray) -> float:
        s, _ = self._sums(r)
        return self.constant + float(self.linear @ r) + float(self.w @ (1.0 / s))

    def derivatives(self, r: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        s, _ = self._sums(r)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = self.c * self.gamma * r ** (self.gamma - 1)  # dS_i/dr_j
            curve = slope * (self.gamma - 1) / r  # d2S_i/dr_j^2 (0 where gamma = 1)
        curve = np.where(self.gamma >= GAMMA_ONE, 0.0, curve)
        u = self.w / s**2
        grad = self.linear - u @ slope
        hess = (slope.T * (2 * u / s)) @ slope - np.diag(u @ curve)
        value = self.constant + float(self.linear @ r) + float(self.w @ (1.0 / s))
        return value, grad, hess


@dataclass(frozen=True)
class PerSourceTarget:
    """``const + sum_ij K_ij (N0_ij + u r_j)^-g_ij`` (``K = w B``)."""

    constant: float
    k: np.ndarray
    offset: np.ndarray
    gamma: np.ndarray
    units: float

    interior = None

    def value(self, r: np.ndarray) -> float:
        return self.constant + float(np.sum(self.k * (self.offset + self.units * r) ** -self.gamma))

    def derivatives(self, r: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        base = self.offset + self.units * r
        terms = self.k * base**-self.gamma
        slope = -self.gamma * terms / base * self.units
        curve = -(self.gamma + 1) * slope / base * self.units
        return self.constant + float(terms.sum()), slope.sum(axis=0), np.diag(curve.sum(axis=0))


def target_derivatives(law, domain_weights):
    """The analytic target of ``law`` (by family), or ``None`` when it has none here."""
    family = type(law).__name__
    if family == "CombinedLaw":  # a weighted sum of laws: the sum of their targets
        from mixplan.planning.programs.combined_target import combined_target

        members = [target_derivatives(m, domain_weights) for m in law.members]
        return combined_target(law.weights, members)
    w = domain_vector(law, domain_weights)
    if family == "ExponentialMixture":
        return _exponential(w, law.c, np.log(law.k), law.t)
    thetas = [np.asarray(f.theta, dtype=float) for f in getattr(law, "fits_", None) or ()]
    if not thetas:
        return None
    theta = np.stack(thetas)
    sources = len(law.sources_)
    if family == "ExponentialLaw":
        return _exponential(w, theta[:, 0], theta[:, 1], theta[:, 2:])
    if family in ("AdditiveLaw", "AdditiveScaleLaw"):
        keep = w > 0
        constant, linear = float(w @ theta[:, 0]), np.zeros(sources)
        if family == "AdditiveScaleLaw":
            constant, linear = additive_scale_terms(law, w, theta)
        return AdditiveTarget(
            constant=constant,
            linear=linear,
            w=w[keep],
            c=np.exp(theta[keep, 1 : sources + 1]),
            gamma=theta[keep, sources + 1 : 2 * sources + 1],
        )
    if family == "PerSourceLaw":
        keep = w > 0
        return PerSourceTarget(
            constant=float(w @ theta[:, 0]),
            k=w[keep, None] * np.exp(theta[keep, 1 : sources + 1]),
            offset=np.exp(theta[keep, sources + 1 : 2 * sources + 1]),
            gamma=theta[keep, 2 * sources + 1 :],
            units=law._tokens_units(),
        )
    return None


def _exponential(w, c, log_k, t) -> ExponentialTarget:
    keep = w > 0
    return ExponentialTarget(
        constant=float(w @ np.asarray(c, dtype=float)),
        offsets=np.log(w[keep]) + np.asarray(log_k, dtype=float)[keep],
        t=np.ascontiguousarray(np.asarray(t, dtype=float)[keep]),
    )


@compiled
def _data_term_kernel(b, beta, tokens, unique, scale, rate, r, order):
    """`DataTerm`'s value and, up to ``order`` (0, 2, or 3 with the partials in log D), its
    derivatives in one compiled pass over the sources (unused outputs are empty)."""
    n = r.shape[0]
    first, second = np.empty(n), np.empty(n)
    total = 0.0
    for j in range(n):
        x = tokens * r[j]
        repeats = max(x - unique[j], 0.0)
        decay = np.exp(repeats * rate[j])  # 1 within the first epoch
        # min(x, U) + U R* (1 - decay) = (x - repeats) + scale (1 - decay)
        total += x - repeats + scale[j] * (1.0 - decay)
        first[j] = decay  # dD'/dx
        second[j] = decay * rate[j] if repeats > 0 else 0.0  # d2D'/dx2
    value = b * total**-beta
    gradient, hessian, t_r = np.empty(0), np.empty((0, 0)), np.empty(0)
    t_u = t_uu = 0.0
    if order < 2:
        return value, gradient, hessian, t_u, t_uu, t_r
    outer = -beta * value / total  # d value / d total
    outer2 = beta * (beta + 1) * value / total**2
    gradient, hessian = np.empty(n), np.empty((n, n))
    for i in range(n):
        gradient[i] = outer * tokens * first[i]
        for j in range(n):
            hessian[i, j] = outer2 * tokens * tokens * first[i] * first[j]
        hessian[i, i] += outer * tokens * tokens * second[i]
    if order < 3:
        return value, gradient, hessian, t_u, t_uu, t_r
    # in u = log D at fixed shares: dx/du = x, so d total/du = sum D'_j x_j, ...
    total_u = total_uu = 0.0
    for j in range(n):
        x = tokens * r[j]
        total_u += first[j] * x
        total_uu += second[j] * x * x
    total_uu += total_u
    t_r = np.empty(n)
    for j in range(n):
        x = tokens * r[j]
        t_r[j] = outer2 * total_u * tokens * first[j] + outer * tokens * (second[j] * x + first[j])
    t_u = outer * total_u
    t_uu = outer2 * total_u * total_u + outer * total_uu
    return value, gradient, hessian, t_u, t_uu, t_r


@dataclass(frozen=True)
class DataTerm:
    """``B (sum_j D'_j(D r_j))^-beta`` at ``D = tokens``; ``unique`` as in
    planning/laws/repetition.py's ``effective_tokens``, ``decay_scale`` its repeats' decay
    scale ``U R_D*`` and ``decay_rate`` = ``-1 / decay_scale`` (constants of the program).
    Computed by one compiled pass over the sources (``_data_term_kernel``)."""

    b: float
    beta: float
    tokens: float
    unique: np.ndarray
    decay_scale: np.ndarray
    decay_rate: np.ndarray

    def _kernel(self, r: np.ndarray, order: int):
        return _data_term_kernel(
            self.b, self.beta, self.tokens, self.unique, self.decay_scale, self.decay_rate,
            r, order,
        )  # fmt: skip

    def value(self, r: np.ndarray) -> float:
        return float(self._kernel(r, 0)[0])

    def derivatives(self, r: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        value, gradient, hessian, _, _, _ = self._kernel(r, 2)
        return value, gradient, hessian

    def log_tokens_partials(self, r: np.ndarray) -> tuple[float, float, np.ndarray]:
        """The term's partials in ``u = log D`` at fixed shares r: ``d/du``, ``d2/du2`` and
        ``d2/du dr`` (``x = e^u r``, so ``dx/du = x``, ``dx/dr = D``)."""
        return self._kernel(r, 3)[3:]

    def joint_derivatives(self, r: np.ndarray):
        """`derivatives` and `log_tokens_partials` at once (one pass over the sources)."""
        return self._kernel(r, 3)
