"""Additive mixture law (Shukor et al. 2025; laws.md section 2).

``L(N, D, h) = E + 1 / (sum_j C_j h_j^gamma_j) + A / N^alpha + B / D^beta``

- :class:`AdditiveLaw` is the law at one scale (``A/N^alpha + B/D^beta`` folds into ``E``):
  ``L_i(h) = E_i + 1 / (sum_j C_ij h_j^gamma_ij)``.
- :class:`AdditiveScaleLaw` is the full law in N, D and h; ``joint=True`` is the joint variant in
  which ``A(h) = sum_j A_j h_j`` and ``B(h) = sum_j B_j h_j`` depend on the mixture, so the best
  mixture moves with compute.

Convexity: with ``C_j > 0`` and ``gamma_j`` in (0, 1] the sum is concave in h, ``inv_pos`` of a
concave expression is convex (DCP), and ``A(h), B(h)`` are linear: the law is convex in h. The
bounds below enforce exactly this (``gamma`` in ``[GAMMA_MIN, 1]``, amplitudes as logs).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cvxpy as cp
import numpy as np
from scipy.optimize import nnls

from mixplan.planning.errors import SpecError
from mixplan.planning.mixture.base import MixtureLaw
from mixplan.planning.mixture.data import MixtureData

GAMMA_MIN = 0.02
PARAMS_UNIT = 1e8
"""N is divided by this inside the law (conditioning only)."""
TOKENS_UNIT = 1e10
"""D is divided by this inside the law (conditioning only)."""

START_FLOOR_FRACTIONS = (0.0, 0.5, 0.8, 0.9, 0.95)
"""Start values of the floor E, as fractions of the lowest observed loss."""
START_GAMMAS = (0.25, 0.5, 1.0)
"""Start values of the shared exponent gamma."""
ALPHA_MAX = 3.0
"""Upper bound of the size exponent alpha."""
START_ALPHAS = (0.1, 0.2, 0.35, 0.6)
"""Start values of the size exponent alpha of :class:`AdditiveScaleLaw`."""


def linear_starts(losses: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Starts ``[E, logC, gamma]`` with C solved by non-negative least squares per (E, gamma).

    Sources whose least-squares C is zero start at a small positive C (``logC`` finite), so the
    batched iteration can still move them.
    """
    sources = mixture.shape[1]
    grid = []
    for fraction in START_FLOOR_FRACTIONS:
        energy = fraction * losses.min()
        inverse_gap = 1.0 / np.maximum(losses - energy, 1e-9)
        for gamma in START_GAMMAS:
            coefficients, _ = nnls(mixture**gamma, inverse_gap)
            floor = 1e-6 * max(float(coefficients.max()), 1e-12)
            log_c = np.log(np.maximum(coefficients, floor))
            grid.append(np.r_[energy, log_c, np.full(sources, gamma)])
    return np.array(grid)


class LogMixture(NamedTuple):
    """Mixture weights with their logs computed once (a fit evaluates the law ~10^3 times).

    Attributes
    ----------
    values
        Weights ``(runs, sources)``.
    log
        ``log h`` where ``h > 0``, 0 elsewhere.
    present
        ``h > 0`` as 0/1 floats (a source with zero weight contributes nothing).
    """

    values: np.ndarray
    log: np.ndarray
    present: np.ndarray


def log_mixture(mixture: np.ndarray | LogMixture) -> LogMixture:
    """``mixture`` with its logs (returned as is when already a :class:`LogMixture`)."""
    if isinstance(mixture, LogMixture):
        return mixture
    mixture = np.asarray(mixture, dtype=float)
    present = mixture > 0
    log = np.log(np.where(present, mixture, 1.0))
    return LogMixture(mixture, log, present.astype(float))


def _mixture_term(
    log_c: np.ndarray, gamma: np.ndarray, mixture: np.ndarray | LogMixture
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``s = sum_j C_j h_j^gamma_j`` for batched parameters; also ``C_j h_j^g`` and ``log h``."""
    mixture = log_mixture(mixture)
    # (..., runs, sources)
    exponent = log_c[..., None, :] + gamma[..., None, :] * mixture.log
    terms = np.exp(np.minimum(exponent, 700.0)) * mixture.present
    return terms.sum(axis=-1), terms, mixture.log


def additive_model(
    theta: np.ndarray, mixture: np.ndarray, *, jac: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``E + 1/(sum_j exp(logC_j) h_j^gamma_j)``; ``theta = [E, logC_1..S, gamma_1..S]``."""
    theta = np.asarray(theta, dtype=float)
    mixture = log_mixture(mixture)
    sources = mixture.values.shape[1]
    energy = theta[..., 0]
    log_c, gamma = theta[..., 1 : sources + 1], theta[..., sources + 1 :]
    total, terms, log_h = _mixture_term(log_c, gamma, mixture)
    prediction = energy[..., None] + 1.0 / total
    if not jac:
        return prediction
    scale = (-1.0 / total**2)[..., None]  # (..., runs, 1)
    jacobian = np.concatenate([np.ones(scale.shape), scale * terms, scale * terms * log_h], axis=-1)
    return prediction, jacobian


class AdditiveLaw(MixtureLaw):
    """``L_i(h) = E_i + 1/(sum_j C_ij h_j^gamma_ij)`` per domain (one scale)."""

    name = "additive"

    def param_names(self, n_sources: int) -> list[str]:
        """``E``, ``logC[source]``, ``gamma[source]``."""
        return (
            ["E"]
            + [f"logC[{s}]" for s in self.sources_ or range(n_sources)]
            + [f"gamma[{s}]" for s in self.sources_ or range(n_sources)]
        )

    def inputs(self, data: MixtureData) -> Any:
        """The runs' mixtures with their logs (:class:`LogMixture`)."""
        return log_mixture(data.mixture)

    def inputs_for(self, weights: np.ndarray) -> Any:
        """New mixtures with their logs."""
        return log_mixture(weights)

    def model(
        self, theta: np.ndarray, mixture: np.ndarray, *, jac: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """See :func:`additive_model`."""
        return additive_model(theta, mixture, jac=jac)

    def starts(self, losses: np.ndarray, inputs: Any) -> np.ndarray:
        """E at fractions of the lowest loss x a shared gamma, C by least squares.

        For fixed E and gamma the law is linear in C: ``1 / (L - E) = sum_j C_j h_j^gamma``,
        so each start solves that non-negative least-squares problem (cheap, and close to the
        optimum, which is what lets the fit advance only the best few starts).
        """
        return linear_starts(losses, log_mixture(inputs).values)

    def bounds(self, losses: np.ndarray, n_sources: int) -> np.ndarray:
        """``0 <= E < min loss``, ``-30 <= logC <= 30``, ``GAMMA_MIN <= gamma <= 1``."""
        return np.array(
            [(0.0, losses.min() * (1 - 1e-9))]
            + [(-30.0, 30.0)] * n_sources
            + [(GAMMA_MIN, 1.0)] * n_sources
        )

    def domain_expression(self, theta: np.ndarray, weights: cp.Expression) -> cp.Expression:
        """``E + inv_pos(sum_j C_j power(h_j, gamma_j))``: convex for gamma in (0, 1]."""
        sources = len(self.sources_)
        coefficients = np.exp(theta[1 : sources + 1])
        gammas = theta[sources + 1 :]
        parts = [
            c * (weights[j] if g >= 1.0 - 1e-12 else cp.power(weights[j], g, approx=False))
            for j, (c, g) in enumerate(zip(coefficients, gammas, strict=True))
        ]
        return theta[0] + cp.inv_pos(cp.sum(cp.hstack(parts)))


def additive_scale_model(
    theta: np.ndarray,
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    jac: bool = False,
    joint: bool | None = None,
    tokens_term: bool = True,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Full additive law; ``theta = [E, logC(S), gamma(S), logA(k), alpha, logB(k), beta]``.

    ``k = 1`` (shared A, B) or ``k = S`` (``joint``: ``A(h) = sum_j A_j h_j``); ``joint=None``
    infers it from the length of theta. ``tokens_term=False`` drops ``logB, beta`` (a law
    fitted at one D, where ``B / D^beta`` is a constant that E absorbs).
    ``inputs = (mixture, params / PARAMS_UNIT, tokens / TOKENS_UNIT)``.
    """
    mixture, params, tokens = inputs
    mixture = log_mixture(mixture)
    theta = np.asarray(theta, dtype=float)
    sources = mixture.values.shape[1]
    if joint is None:
        k = (theta.shape[-1] - 1 - 2 * sources - 2) // 2 if tokens_term else 1
    else:
        k = sources if joint else 1
    energy = theta[..., 0]
    log_c, gamma = theta[..., 1 : sources + 1], theta[..., sources + 1 : 2 * sources + 1]
    start = 2 * sources + 1
    log_a, alpha = theta[..., start : start + k], theta[..., start + k]
    total, terms, log_h = _mixture_term(log_c, gamma, mixture)
    basis = mixture.values if k == sources else np.ones((len(params), 1))  # (runs, k)
    a_parts = np.exp(log_a)[..., None, :] * basis  # (..., runs, k)
    n_power = params ** (-alpha[..., None])  # (..., runs)
    a_h = a_parts.sum(axis=-1)
    prediction = energy[..., None] + 1.0 / total + a_h * n_power
    if tokens_term:
        log_b = theta[..., start + k + 1 : start + 2 * k + 1]
        beta = theta[..., start + 2 * k + 1]
        b_parts = np.exp(log_b)[..., None, :] * basis
        d_power = tokens ** (-beta[..., None])
        b_h = b_parts.sum(axis=-1)
        prediction = prediction + b_h * d_power
    if not jac:
        return prediction
    scale = (-1.0 / total**2)[..., None]
    columns = [
        np.ones(scale.shape),
        scale * terms,
        scale * terms * log_h,
        a_parts * n_power[..., None],
        (-a_h * n_power * np.log(params))[..., None],
    ]
    if tokens_term:
        columns += [b_parts * d_power[..., None], (-b_h * d_power * np.log(tokens))[..., None]]
    return prediction, np.concatenate(columns, axis=-1)


class AdditiveScaleLaw(MixtureLaw):
    """``E + 1/(sum_j C_j h_j^gamma_j) + A(h)/N^alpha + B(h)/D^beta`` per domain.

    Parameters
    ----------
    joint
        ``False``: A and B are constants (the optimal mixture is scale-invariant). ``True``: the
        joint variant, ``A(h) = sum_j A_j h_j`` and ``B(h) = sum_j B_j h_j``.
    params, tokens
        The target scale at which :meth:`predict` and :meth:`loss_expression` evaluate the law
        (change with :meth:`at`).
    tokens_term
        ``False`` drops ``B(h) / D^beta``: the law of runs read at one D (the target tokens, see
        :mod:`mixplan.planning.mixture.scale`), valid at that D only.
    size_exponent
        Hold alpha at this value in every domain instead of fitting it (two model sizes do not
        identify it; see :class:`mixplan.planning.mixture.scale.ScaleRoute`).
    """

    name = "additive (N, D, h)"

    def __init__(
        self,
        *,
        joint: bool = False,
        params: float = 1e9,
        tokens: float = 2e10,
        tokens_term: bool = True,
        size_exponent: float | None = None,
        delta: float = 1e-3,
        n_bootstrap: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(delta=delta, n_bootstrap=n_bootstrap, seed=seed)
        if size_exponent is not None and not 0 <= size_exponent <= ALPHA_MAX:
            raise SpecError(f"size_exponent must lie in [0, {ALPHA_MAX}], got {size_exponent}")
        self.joint = joint
        self.tokens_term = tokens_term
        self.size_exponent = size_exponent
        self.params = float(params)
        self.tokens = float(tokens)
        scale = "N, D, h" if tokens_term else "N, h at one D"
        self.name = f"additive {'joint ' if joint else ''}({scale})"

    def options(self) -> dict[str, Any]:
        """Constructor options."""
        return {
            **super().options(),
            "joint": self.joint,
            "tokens_term": self.tokens_term,
            "size_exponent": self.size_exponent,
            "params": self.params,
            "tokens": self.tokens,
        }

    def at(self, *, params: float, tokens: float) -> AdditiveScaleLaw:
        """Set the target scale (model parameters, training tokens) and return self.

        A law without its tokens term is valid at the D it was fitted at only: moving D raises.
        """
        if params <= 0 or tokens <= 0:
            raise SpecError("AdditiveScaleLaw.at: params and tokens must be positive")
        if not self.tokens_term and not np.isclose(tokens, self.tokens, rtol=1e-9):
            raise SpecError(
                f"{self.name}: fitted at D = {self.tokens:.4g} tokens only; refit it at "
                f"D = {tokens:.4g} (the step stage reads each run there)"
            )
        self.params, self.tokens = float(params), float(tokens)
        return self

    def _k(self, n_sources: int) -> int:
        return n_sources if self.joint else 1

    def param_names(self, n_sources: int) -> list[str]:
        """Names of the entries of theta."""
        names = list(self.sources_) or [str(j) for j in range(n_sources)]
        k_names = names if self.joint else [""]
        return (
            ["E"]
            + [f"logC[{s}]" for s in names]
            + [f"gamma[{s}]" for s in names]
            + [f"logA[{s}]" if s else "logA" for s in k_names]
            + ["alpha"]
            + (
                [f"logB[{s}]" if s else "logB" for s in k_names] + ["beta"]
                if self.tokens_term
                else []
            )
        )

    def inputs(self, data: MixtureData) -> Any:
        """(mixture, N / PARAMS_UNIT, D / TOKENS_UNIT) per run."""
        if not (np.all(np.isfinite(data.params)) and np.all(np.isfinite(data.tokens))):
            raise SpecError(f"{self.name}: every run needs params and tokens")
        return log_mixture(data.mixture), data.params / PARAMS_UNIT, data.tokens / TOKENS_UNIT

    def inputs_for(self, weights: np.ndarray) -> Any:
        """Mixtures at the target scale."""
        runs = len(weights)
        return (
            log_mixture(weights),
            np.full(runs, self.params / PARAMS_UNIT),
            np.full(runs, self.tokens / TOKENS_UNIT),
        )

    def model(
        self, theta: np.ndarray, inputs: Any, *, jac: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """See :func:`additive_scale_model`."""
        return additive_scale_model(
            theta, inputs, jac=jac, joint=self.joint, tokens_term=self.tokens_term
        )

    def starts(self, losses: np.ndarray, inputs: Any) -> np.ndarray:
        """For each size exponent alpha: A by least squares of the loss on ``N^-alpha``, then
        the one-scale law's linear starts (:func:`linear_starts`) on the loss minus ``A N^-alpha``.
        """
        mixture, params, tokens = inputs
        mixture = log_mixture(mixture).values
        sources = mixture.shape[1]
        k = self._k(sources)
        grid = []
        alphas = START_ALPHAS if self.size_exponent is None else (self.size_exponent,)
        for alpha in alphas:
            size_term = params ** (-alpha)
            slope = np.polyfit(size_term, losses, 1)[0] if np.ptp(size_term) > 0 else 0.0
            amplitude = max(float(slope), 1e-3 * float(losses.mean()))
            rest = np.maximum(losses - amplitude * size_term, 1e-3 * losses.min())
            for row in linear_starts(rest, mixture):
                tokens_part = (
                    [np.full(k, np.log(0.1 * float(losses.mean()))), 0.3]
                    if self.tokens_term
                    else []
                )
                grid.append(
                    np.r_[
                        row[: 2 * sources + 1],
                        np.full(k, np.log(amplitude)),
                        alpha,
                        *tokens_part,
                    ]
                )
        return np.array(grid)

    def bounds(self, losses: np.ndarray, n_sources: int) -> np.ndarray:
        """Convexity-preserving bounds (see the module docstring)."""
        k = self._k(n_sources)
        return np.array(
            [(0.0, losses.min() * (1 - 1e-9))]
            + [(-30.0, 30.0)] * n_sources
            + [(GAMMA_MIN, 1.0)] * n_sources
            + [(-30.0, 10.0)] * k
            + [(0.0, ALPHA_MAX) if self.size_exponent is None else (self.size_exponent,) * 2]
            + ([(-30.0, 10.0)] * k + [(0.0, 3.0)] if self.tokens_term else [])
        )

    def domain_expression(self, theta: np.ndarray, weights: cp.Expression) -> cp.Expression:
        """Mixture term as in :class:`AdditiveLaw` plus the scale terms, linear in h."""
        sources = len(self.sources_)
        k = self._k(sources)
        coefficients = np.exp(theta[1 : sources + 1])
        gammas = theta[sources + 1 : 2 * sources + 1]
        start = 2 * sources + 1
        a, alpha = np.exp(theta[start : start + k]), theta[start + k]
        if self.tokens_term:
            b, beta = np.exp(theta[start + k + 1 : start + 2 * k + 1]), theta[start + 2 * k + 1]
        else:
            b, beta = np.zeros(k), 0.0
        parts = [
            c * (weights[j] if g >= 1.0 - 1e-12 else cp.power(weights[j], g, approx=False))
            for j, (c, g) in enumerate(zip(coefficients, gammas, strict=True))
        ]
        n_power = (self.params / PARAMS_UNIT) ** (-alpha)
        d_power = (self.tokens / TOKENS_UNIT) ** (-beta)
        scale_term = (
            (a * n_power + b * d_power) @ weights
            if self.joint
            else float(a[0] * n_power + b[0] * d_power)
        )
        return theta[0] + cp.inv_pos(cp.sum(cp.hstack(parts))) + scale_term
