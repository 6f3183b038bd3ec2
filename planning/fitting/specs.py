"""How each law family is fitted: free parameters, start grid, bounds and a vectorised predictor.

A :class:`FitSpec` turns a parameter matrix ``theta`` of shape ``(S, P)`` (S candidate parameter
vectors, e.g. 4,500 grid starts or 1,000 bootstrap draws) and the data columns into predictions of
shape ``(S, n)`` on the residual scale: log loss for the nats-per-token laws (the published
log-sum-exp parametrisation ``log L = LSE(...)`` where it applies), raw loss for Tao et al.'s
negative unigram-normalised loss. Laws with an analytic Jacobian provide one; the others get a
vectorised finite-difference Jacobian from the engine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import logsumexp

from mixplan.planning.errors import FitError
from mixplan.planning.laws.base import Law
from mixplan.planning.laws.chinchilla import ChinchillaLaw
from mixplan.planning.laws.kaplan import KaplanLaw
from mixplan.planning.laws.loss_curve import LossCurveLaw
from mixplan.planning.laws.overtraining import GadreLaw
from mixplan.planning.laws.repetition import MuennighoffLaw
from mixplan.planning.laws.vocabulary import TaoLaw

Columns = Mapping[str, np.ndarray]
PredictFn = Callable[[np.ndarray, Columns], np.ndarray]
JacobianFn = Callable[[np.ndarray, Columns], tuple[np.ndarray, np.ndarray]]

EPOCH_GRID: dict[str, np.ndarray] = {
    "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
    "alpha": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "beta": np.arange(0.0, 2.0 + 1e-9, 0.5),
}
"""The published 4,500-point start grid (Hoffmann et al.; Besiroglu et al. 2024)."""


@dataclass(frozen=True)
class FitSpec:
    """Everything the engine needs to fit one law family.

    Attributes
    ----------
    name : spec name (also the key in :data:`SPECS`).
    law_cls : the law class built from a fitted parameter vector.
    theta_names : names of the free parameters, in ``theta`` column order.
    columns : data columns the law reads (besides ``loss``).
    scale : ``"log"`` (residual ``log L_hat - log L``) or ``"raw"`` (``L_hat - L``).
    grid : start values per free parameter; the engine takes the Cartesian product.
    bounds : ``(low, high)`` per free parameter, used by the vectorised search and the polish.
    predict : ``(theta (S, P), columns) -> (S, n)`` predictions on the residual scale.
    to_law : ``theta (P,) -> law``.
    from_law : ``law -> theta (P,)`` (warm starts, simulations).
    jacobian : optional ``(theta, columns) -> (prediction (S, n), d prediction/d theta (S, n, P))``.
    """

    name: str
    law_cls: type[Law]
    theta_names: tuple[str, ...]
    columns: tuple[str, ...]
    scale: Literal["log", "raw"]
    grid: dict[str, np.ndarray]
    bounds: dict[str, tuple[float, float]]
    predict: PredictFn
    to_law: Callable[[np.ndarray], Law]
    from_law: Callable[[Law], np.ndarray]
    jacobian: JacobianFn | None = None
    notes: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    def theta_of(self, law: Law) -> np.ndarray:
        """``law``'s parameters as this family's ``theta`` (warm starts, bootstrap draws)."""
        if not isinstance(law, self.law_cls):
            raise FitError(
                f"a {type(law).__name__} cannot seed a {self.name} fit; refit with "
                f"--law {self.name} or pick the fit's own family"
            )
        return self.from_law(law)

    def grid_points(self, grid: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The Cartesian product of the start grid as an ``(S, P)`` array."""
        grid = dict(self.grid if grid is None else grid)
        axes = [np.asarray(grid[name], dtype=float) for name in self.theta_names]
        return np.array(list(itertools.product(*axes)), dtype=float)

    def bounds_array(self) -> np.ndarray:
        """Bounds as a ``(P, 2)`` array."""
        return np.array([self.bounds[name] for name in self.theta_names], dtype=float)

    def predict_loss(self, theta: np.ndarray, columns: Columns) -> np.ndarray:
        """Predicted loss (not log) for ``theta`` of shape ``(S, P)``."""
        pred = self.predict(np.atleast_2d(theta), columns)
        return np.exp(pred) if self.scale == "log" else pred


def _col(columns: Columns, name: str) -> np.ndarray:
    return np.asarray(columns[name], dtype=float)[None, :]


# ---------------------------------------------------------------- Chinchilla
def _chinchilla_jac(theta: np.ndarray, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    log_n = np.log(_col(columns, "params"))
    log_d = np.log(_col(columns, "tokens"))
    t1 = a - alpha * log_n
    t2 = b - beta * log_d
    t3 = np.broadcast_to(e, t1.shape)
    m = np.maximum(np.maximum(t1, t2), t3)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(t3 - m)
    total = x1 + x2 + x3
    pred = m + np.log(total)
    p1, p2, p3 = x1 / total, x2 / total, x3 / total
    jac = np.stack([p1, p2, p3, -p1 * log_n, -p2 * log_d], axis=-1)
    return pred, jac


def _chinchilla_predict(theta: np.ndarray, columns: Columns) -> np.ndarray:
    a, b, e, alpha, beta = (theta[:, i : i + 1] for i in range(5))
    t1 = a - alpha * np.log(_col(columns, "params"))
    t2 = b - beta * np.log(_col(columns, "tokens"))
    m = np.maximum(np.maximum(t1, t2), e)
    return m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(e - m))


def _chinchilla_to_law(theta: np.ndarray) -> Law:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return ChinchillaLaw(
        E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta
    )


def _chinchilla_from_law(law: Law) -> np.ndarray:
    return np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])


CHINCHILLA = FitSpec(
    name="chinchilla",
    law_cls=ChinchillaLaw,
    theta_names=("a", "b", "e", "alpha", "beta"),
    columns=("params", "tokens"),
    scale="log",
    grid=EPOCH_GRID,
    bounds={
        "a": (-30.0, 60.0),
        "b": (-30.0, 60.0),
        "e": (-5.0, 5.0),
        "alpha": (0.0, 5.0),
        "beta": (0.0, 5.0),
    },
    predict=_chinchilla_predict,
    jacobian=_chinchilla_jac,
    to_law=_chinchilla_to_law,
    from_law=_chinchilla_from_law,
    notes="log L = LSE(a - alpha log N, b - beta log D, e); A, B, E = exp(a, b, e)",
)


# ---------------------------------------------------------------- Muennighoff
def _muennighoff_predict(theta: np.ndarray, columns: Columns) -> np.ndarray:
    a, b, e, alpha, beta, rd_star, rn_star = (theta[:, i : i + 1] for i in range(7))
    n = _col(columns, "params")
    d = _col(columns, "tokens")
    u = _col(columns, "unique_tokens")
    rd_star = np.maximum(rd_star, 1e-6)
    rn_star = np.maximum(rn_star, 1e-6)
    alpha_s = np.maximum(alpha, 1e-9)
    # log G = (log(alpha) + a - log(beta) - b) / (alpha + beta)
    log_g = (np.log(alpha_s) + a - np.log(np.maximum(beta, 1e-9)) - b) / (alpha_s + beta)
    log_n_opt = (np.log(u) + log_g) * (beta / alpha_s) + log_g
    log_un = np.minimum(np.log(n), log_n_opt)
    r_n = np.maximum(np.exp(np.minimum(np.log(n) - log_un, 50.0)) - 1.0, 0.0)
    log_n_eff = log_un + np.log1p(rn_star * -np.expm1(-r_n / rn_star))
    r_d = np.maximum(d / u - 1.0, 0.0)
    log_d_eff = np.log(u) + np.log1p(rd_star * -np.expm1(-r_d / rd_star))
    t1 = a - alpha * log_n_eff
    t2 = b - beta * log_d_eff
    t3 = np.broadcast_to(e, t1.shape)
    return logsumexp(np.stack([t1, t2, t3]), axis=0)


def _muennighoff_to_law(theta: np.ndarray) -> Law:
    a, b, e, alpha, beta, rd_star, rn_star = (float(x) for x in theta)
    return MuennighoffLaw(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=alpha,
        beta=beta,
        rd_star=rd_star,
        rn_star=rn_star,
    )


def _muennighoff_from_law(law: Law) -> np.ndarray:
    return np.array(
        [
            np.log(law.A),
            np.log(law.B),
            np.log(law.E),
            law.alpha,
            law.beta,
            law.rd_star,
            law.rn_star,
        ]
    )


MUENNIGHOFF = FitSpec(
    name="muennighoff",
    law_cls=MuennighoffLaw,
    theta_names=("a", "b", "e", "alpha", "beta", "rd_star", "rn_star"),
    columns=("params", "tokens", "unique_tokens"),
    scale="log",
    grid={
        "a": np.array([5.0, 10.0]),
        "b": np.array([5.0, 10.0]),
        "e": np.array([0.5]),
        "alpha": np.array([0.3, 0.6]),
        "beta": np.array([0.3, 0.6]),
        "rd_star": np.array([5.0, 15.0, 40.0]),
        "rn_star": np.array([2.0, 5.0, 15.0]),
    },
    bounds={
        "a": (-30.0, 60.0),
        "b": (-30.0, 60.0),
        "e": (-5.0, 5.0),
        "alpha": (0.01, 3.0),
        "beta": (0.01, 3.0),
        "rd_star": (0.1, 1000.0),
        "rn_star": (0.1, 1000.0),
    },
    predict=_muennighoff_predict,
    to_law=_muennighoff_to_law,
    from_law=_muennighoff_from_law,
    notes="log L = LSE(a - alpha log N', b - beta log D', e) with N', D' of laws.md 1.4",
)


# ---------------------------------------------------------------- Tao (raw scale)
def _tao_jac(theta: np.ndarray, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
    a1, a2, b, e, alpha2, beta = (theta[:, i : i + 1] for i in range(6))
    log_n = np.log(_col(columns, "non_vocab_params") / TaoLaw.NON_VOCAB_UNIT)
    log_v = np.log(_col(columns, "vocab_params") / TaoLaw.VOCAB_UNIT)
    log_d = np.log(_col(columns, "tokens") / TaoLaw.TOKENS_UNIT)
    e1 = np.exp(a1 - beta * log_n)
    e2 = np.exp(a2 - alpha2 * log_v)
    e3 = np.exp(b - beta * log_d)
    e4 = np.broadcast_to(np.exp(e), e1.shape)
    pred = e1 + e2 + e3 - e4
    jac = np.stack([e1, e2, e3, -e4, -e2 * log_v, -e1 * log_n - e3 * log_d], axis=-1)
    return pred, jac


def _tao_predict(theta: np.ndarray, columns: Columns) -> np.ndarray:
    return _tao_jac(theta, columns)[0]


def _tao_to_law(theta: np.ndarray) -> Law:
    a1, a2, b, e, alpha2, beta = (float(x) for x in theta)
    return TaoLaw(
        E=float(np.exp(e)),
        A1=float(np.exp(a1)),
        A2=float(np.exp(a2)),
        B=float(np.exp(b)),
        alpha1=beta,
        alpha2=alpha2,
        beta=beta,
    )


def _tao_from_law(law: Law) -> np.ndarray:
    return np.array(
        [np.log(law.A1), np.log(law.A2), np.log(law.B), np.log(law.E), law.alpha2, law.beta]
    )


TAO = FitSpec(
    name="tao",
    law_cls=TaoLaw,
    theta_names=("a1", "a2", "b", "e", "alpha2", "beta"),
    columns=("non_vocab_params", "vocab_params", "tokens"),
    scale="raw",
    grid={
        "a1": np.linspace(0, 5, 3),
        "a2": np.linspace(0, 5, 3),
        "b": np.linspace(0, 5, 3),
        "e": np.linspace(0, 2, 2),
        "alpha2": np.linspace(0, 1, 3),
        "beta": np.linspace(0, 1, 3),
    },
    bounds={
        "a1": (-20.0, 20.0),
        "a2": (-20.0, 20.0),
        "b": (-20.0, 20.0),
        "e": (-5.0, 5.0),
        "alpha2": (0.1, 1.0),
        "beta": (0.1, 1.0),
    },
    predict=_tao_predict,
    jacobian=_tao_jac,
    to_law=_tao_to_law,
    from_law=_tao_from_law,
    notes=(
        "L_u = exp(a1 - beta log N_nv) + exp(a2 - alpha2 log Vd) + exp(b - beta log D) - exp(e); "
        "alpha1 = beta tied; Huber on raw L_u; exponents bounded to (0.1, 1) (Tao et al. recipe)"
    ),
)


# ---------------------------------------------------------------- Kaplan
def _kaplan_predict(theta: np.ndarray, columns: Columns) -> np.ndarray:
    log_nc, log_dc, alpha_n, alpha_d = (theta[:, i : i + 1] for i in range(4))
    log_n = np.log(_col(columns, "params"))
    log_d = np.log(_col(columns, "tokens"))
    alpha_d = np.maximum(alpha_d, 1e-9)
    t1 = (alpha_n / alpha_d) * (log_nc - log_n)
    t2 = log_dc - log_d
    return alpha_d * np.logaddexp(t1, t2)


KAPLAN = FitSpec(
    name="kaplan",
    law_cls=KaplanLaw,
    theta_names=("log_N_c", "log_D_c", "alpha_N", "alpha_D"),
    columns=("params", "tokens"),
    scale="log",
    grid={
        "log_N_c": np.array([20.0, 25.0, 30.0, 35.0]),
        "log_D_c": np.array([20.0, 25.0, 30.0, 35.0]),
        "alpha_N": np.array([0.05, 0.1, 0.3]),
        "alpha_D": np.array([0.05, 0.1, 0.3]),
    },
    bounds={
        "log_N_c": (0.0, 80.0),
        "log_D_c": (0.0, 80.0),
        "alpha_N": (1e-3, 3.0),
        "alpha_D": (1e-3, 3.0),
    },
    predict=_kaplan_predict,
    to_law=lambda t: KaplanLaw(
        N_c=float(np.exp(t[0])), D_c=float(np.exp(t[1])), alpha_N=float(t[2]), alpha_D=float(t[3])
    ),
    from_law=lambda law: np.array(
        [np.log(law.N_c), np.log(law.D_c), law.alpha_N, law.alpha_D]  # type: ignore[attr-defined]
    ),
    notes="log L = alpha_D * logaddexp((alpha_N/alpha_D)(log N_c - log N), log D_c - log D)",
)


# ---------------------------------------------------------------- Gadre
def _gadre_predict(theta: np.ndarray, columns: Columns) -> np.ndarray:
    a, b, e, eta = (theta[:, i : i + 1] for i in range(4))
    log_n = np.log(_col(columns, "params"))
    log_d = np.log(_col(columns, "tokens"))
    t1 = a + eta * log_n
    t2 = b + (eta / 2) * np.log(6.0) + eta * log_d
    return logsumexp(np.stack([t1, t2, np.broadcast_to(e, t1.shape)]), axis=0)


GADRE = FitSpec(
    name="gadre",
    law_cls=GadreLaw,
    theta_names=("a", "b", "e", "eta"),
    columns=("params", "tokens"),
    scale="log",
    grid={
        "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
        "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
        "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
        "eta": -np.arange(0.0, 2.0 + 1e-9, 0.5),
    },
    bounds={"a": (-30.0, 60.0), "b": (-30.0, 60.0), "e": (-5.0, 5.0), "eta": (-5.0, 0.0)},
    predict=_gadre_predict,
    to_law=lambda t: GadreLaw(
        E=float(np.exp(t[2])), a=float(np.exp(t[0])), b=float(np.exp(t[1])), eta=float(t[3])
    ),
    from_law=lambda law: np.array(
        [np.log(law.a), np.log(law.b), np.log(law.E), law.eta]  # type: ignore[attr-defined]
    ),
    notes="log L = LSE(a + eta log N, b + (eta/2) log 6 + eta log D, e)",
)


# ---------------------------------------------------------------- Tissue loss curve
def _loss_curve_predict(theta: np.ndarray, columns: Columns) -> np.ndarray:
    l0, log_a, alpha, c = (theta[:, i : i + 1] for i in range(4))
    s1 = _col(columns, "s1")
    s2 = _col(columns, "s2")
    loss = l0 + np.exp(log_a - alpha * np.log(s1)) - c * s2
    return np.log(np.maximum(loss, 1e-12))


LOSS_CURVE = FitSpec(
    name="loss_curve",
    law_cls=LossCurveLaw,
    theta_names=("L0", "log_A", "alpha", "C"),
    columns=("s1", "s2"),
    scale="log",
    grid={
        "L0": np.array([0.5, 1.5, 2.5]),
        "log_A": np.array([-2.0, 0.0, 2.0, 4.0]),
        "alpha": np.array([0.1, 0.3, 0.6, 1.0]),
        "C": np.array([0.0, 1e-4, 1e-2]),
    },
    bounds={"L0": (0.0, 20.0), "log_A": (-20.0, 20.0), "alpha": (1e-3, 3.0), "C": (0.0, 100.0)},
    predict=_loss_curve_predict,
    to_law=lambda t: LossCurveLaw(
        L0=float(t[0]), A=float(np.exp(t[1])), alpha=float(t[2]), C=float(t[3])
    ),
    from_law=lambda law: np.array(
        [law.L0, np.log(law.A), law.alpha, law.C]  # type: ignore[attr-defined]
    ),
    notes="log L(s) = log(L0 + exp(log_A) S1^-alpha - C S2); S1, S2 from the logged schedule",
)


SPECS: dict[str, FitSpec] = {
    spec.name: spec for spec in (CHINCHILLA, MUENNIGHOFF, TAO, KAPLAN, GADRE, LOSS_CURVE)
}
"""Fit specs by law name (the law classes' ``name``)."""
