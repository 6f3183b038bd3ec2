"""Well-scaled convex forms of the mixture laws' targets, built before anything reaches the solver.

A fitted mixture law's parameters span many orders of magnitude (RegMix's exponential law has
domains with ``log k = -30`` at its bound and exponents ``t`` up to +-50), and the laws' own
``loss_expression`` writes them as coefficients: ``k * exp(t . r)`` with ``k = e^-30`` next to
terms of order one. A conic solver then stops at a point it calls optimal that is not (the
17-source RegMix plan came back at 1.8909 where SLSQP found 1.8401). The forms here are the same
functions written so every coefficient the solver sees is of order one:

- exponential: ``w k exp(t . r) = exp(log w + log k + t . r)`` (the coefficient moves into the
  exponent, where the exponential cone handles any offset);
- additive: ``1 / sum_j C_j h_j^g_j = (1/s) / sum_j (C_j / s) h_j^g_j`` with ``s = max_j C_j``;
- per-source: ``B (N0 + u p)^-g = B m^-g (N0/m + (u/m) p)^-g`` with ``m = max(N0, u)``.

Laws of other families fall back to their own ``loss_expression``.
"""

from __future__ import annotations

from collections.abc import Mapping

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import SpecError


def domain_vector(law, domain_weights) -> np.ndarray:
    """The eval-domain weights as a vector in the law's domain order."""
    if hasattr(law, "target_weights"):
        return np.asarray(law.target_weights(domain_weights), dtype=float)
    domains = tuple(law.domains_)
    if domain_weights is None:
        return np.full(len(domains), 1.0 / len(domains))
    if isinstance(domain_weights, Mapping):
        unknown = sorted(set(domain_weights) - set(domains))
        if unknown:
            raise SpecError(f"field 'eval.weights': unknown domain(s) {unknown}; known {domains}")
        return np.array([float(domain_weights.get(d, 0.0)) for d in domains])
    return np.asarray(domain_weights, dtype=float)


def scaled_target(law, weights: cp.Expression, domain_weights) -> cp.Expression:
    """The target ``sum_i w_i L_i(weights)`` as a well-scaled convex DCP expression."""
    family = type(law).__name__
    if family == "CombinedLaw":  # a weighted sum of laws: the sum of their forms
        from mixplan.planning.programs.combined_target import combined_scaled_target

        return combined_scaled_target(law, weights, domain_weights, scaled_target)
    w = domain_vector(law, domain_weights)
    if family == "ExponentialMixture":
        return _exponential(w, law.c, np.log(law.k), law.t, weights)
    thetas = [np.asarray(f.theta, dtype=float) for f in getattr(law, "fits_", None) or ()]
    if not thetas:
        return law.loss_expression(weights, domain_weights)
    theta = np.stack(thetas)
    sources = len(law.sources_)
    if family == "ExponentialLaw":
        return _exponential(w, theta[:, 0], theta[:, 1], theta[:, 2:], weights)
    if family == "AdditiveLaw":
        return _additive(w, theta, sources, weights) + float(w @ theta[:, 0])
    if family == "AdditiveScaleLaw":
        return _additive(w, theta, sources, weights) + _additive_scale(law, w, theta, weights)
    if family == "PerSourceLaw":
        return _per_source(law, w, theta, sources, weights)
    return law.loss_expression(weights, domain_weights)


LOG_NEGLIGIBLE = float(np.log(1e-12))
"""Additive-law terms smaller than this (relative to a row's largest) are left out."""


def _exponential(w, c, log_k, t, weights) -> cp.Expression:
    keep = w > 0
    offsets = np.log(w[keep]) + np.asarray(log_k, dtype=float)[keep]
    return float(w @ np.asarray(c, dtype=float)) + cp.sum(
        cp.exp(offsets + np.asarray(t, dtype=float)[keep] @ weights)
    )


def _power(weight: cp.Expression, gamma: float) -> cp.Expression:
    return weight if gamma >= 1.0 - 1e-12 else cp.power(weight, gamma, approx=False)


def _additive(w, theta, sources: int, weights) -> cp.Expression:
    """``sum_i w_i / (sum_j C_ij h_j^g_ij)`` with each row's coefficients scaled to max 1."""
    terms = []
    for wi, row in zip(w, theta, strict=True):
        if wi <= 0:
            continue
        log_c, gamma = row[1 : sources + 1], row[sources + 1 : 2 * sources + 1]
        top = float(log_c.max())
        # a source whose coefficient is below NEGLIGIBLE of the row's largest adds nothing a
        # double can hold to the sum, but its cone (often with gamma at its bound) can stall
        # the solver: leave it out
        parts = [
            float(np.exp(lc - top)) * _power(weights[j], float(g))
            for j, (lc, g) in enumerate(zip(log_c, gamma, strict=True))
            if lc - top > LOG_NEGLIGIBLE
        ]
        terms.append(float(wi * np.exp(-top)) * cp.inv_pos(cp.sum(cp.hstack(parts))))
    return cp.sum(cp.hstack(terms))


def _additive_scale(law, w, theta, weights) -> cp.Expression | float:
    """The scale terms ``A(h)/N^alpha + B(h)/D^beta`` (linear in h) plus E, domain-weighted."""
    constant, linear = additive_scale_terms(law, w, theta)
    return constant + (linear @ weights if law.joint else 0.0)


def additive_scale_terms(law, w, theta) -> tuple[float, np.ndarray]:
    """An `AdditiveScaleLaw`'s domain-weighted ``E + A(h)/N^alpha + B(h)/D^beta`` at its N, D
    as ``constant + linear . h`` (``linear`` is zero unless the law is joint)."""
    from mixplan.planning.mixture.additive import PARAMS_UNIT, TOKENS_UNIT

    sources = len(law.sources_)
    k = sources if law.joint else 1
    start = 2 * sources + 1
    total = 0.0
    linear = np.zeros(sources)
    for wi, row in zip(w, theta, strict=True):
        a, alpha = np.exp(row[start : start + k]), row[start + k]
        part = a * (law.params / PARAMS_UNIT) ** (-alpha)
        if law.tokens_term:  # a law fitted at one D has no B(h) / D^beta (it is in E)
            b, beta = np.exp(row[start + k + 1 : start + 2 * k + 1]), row[start + 2 * k + 1]
            part = part + b * (law.tokens / TOKENS_UNIT) ** (-beta)
        total += wi * row[0]
        if law.joint:
            linear += wi * part
        else:
            total += wi * float(part[0])
    return float(total), linear


def _per_source(law, w, theta, sources: int, weights) -> cp.Expression:
    """``sum_i w_i (L_inf,i + sum_j B_ij (N0_ij + u p_j)^-g_ij)``, each base scaled to max 1."""
    units = law._tokens_units()
    terms = []
    constant = 0.0
    for wi, row in zip(w, theta, strict=True):
        if wi <= 0:
            continue
        constant += wi * row[0]
        log_b = row[1 : sources + 1]
        offset = np.exp(row[sources + 1 : 2 * sources + 1])
        gamma = row[2 * sources + 1 :]
        for j in range(sources):
            m = max(offset[j], units)
            coefficient = float(wi * np.exp(log_b[j]) * m ** (-gamma[j]))
            base = offset[j] / m + (units / m) * weights[j]
            terms.append(coefficient * cp.power(base, -float(gamma[j]), approx=False))
    return constant + cp.sum(cp.hstack(terms))
