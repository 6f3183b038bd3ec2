"""Vocabulary scaling (Tao et al. 2024, "Scaling Laws with Vocabulary"), laws.md section 1.5.

Loss on the unigram-normalised scale ``L_u`` (vocabulary independent, negative)::

    L_u(N_nv, N_v, D) = -E + A1 / N_nv^alpha1 + A2 / N_v^alpha2 + B / D^beta

with ``N_v = V d`` vocabulary parameters. **Units**: the constants are in the paper's units,
``N_nv`` and ``N_v`` in millions of parameters and ``D`` in billions of tokens.
:meth:`TaoLaw.predict` takes raw counts and converts them
(``NON_VOCAB_UNIT``, ``VOCAB_UNIT``, ``TOKENS_UNIT``).

Caveat from the released code (sail-sg/scaling-with-vocab, approach3_isoloss.py): the fit computed
``D = H * f(V)`` with V in *thousands* (``f(V/1000)``), while the approach-3 solve uses true tokens
``D = F / (6 (N_nv + V d))``. The published constants therefore carry that fit-time definition;
``mixplan.planning.fitting`` reproduces it when asked for the paper's recipe.

FLOPs ``C = 6 (N_nv + V d) D``; tokens per character ``f(V)`` (G14); the width rule ``d(N_nv)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.base import Law, as_float_array, register_law

TPC_COEFFS = (0.00639222, -0.15811069, 1.20470122)
"""``f(V) = a ln(V)^2 + b ln(V) + c`` tokens per character."""
TPC_VOCAB_CLIP = 200_000
"""V is clipped here before ``f`` is evaluated (as in the released code)."""

WIDTH_RULE: tuple[tuple[float, int], ...] = (
    (50e6, 512),
    (200e6, 768),
    (500e6, 1024),
    (1e9, 1536),
    (2e9, 2048),
    (5e9, 3200),
    (10e9, 4096),
    (20e9, 5120),
    (50e9, 6048),
    (100e9, 8192),
    (200e9, 12288),
    (500e9, 16384),
    (1e12, 20480),
)
"""``(upper bound on N_nv inclusive, width d)``; above the last bound d = 24576."""
WIDTH_MAX = 24576

ISOFLOP_NONVOCAB_LOG_COEF = -2.4846510161625193
"""Approach 1: ``N_nv,opt = exp(K) C^0.5``."""
ISOFLOP_NONVOCAB_EXP = 0.5
ISOFLOP_VOCAB_LOG_COEF = -1.589031299255507
"""Approach 1: ``N_v,opt = exp(K) C^0.4163622634135234``."""
ISOFLOP_VOCAB_EXP = 0.4163622634135234
DERIVATIVE_BASE_VOCAB_PARAMS = 3_145_728.0
"""Approach 2: best vocabulary parameters of the 33M model (6144 x 512)."""
DERIVATIVE_BASE_NON_VOCAB = 33e6
DERIVATIVE_EXP = 0.8353974035228025


def tokens_per_character(vocab_size: np.ndarray | float) -> np.ndarray:
    """Tokens per character ``f(V) = a ln(V)^2 + b ln(V) + c``, V clipped at 200,000 (G14)."""
    a, b, c = TPC_COEFFS
    log_v = np.log(np.minimum(as_float_array(vocab_size), TPC_VOCAB_CLIP))
    return a * log_v**2 + b * log_v + c


def width_for(non_vocab_params: np.ndarray | float) -> np.ndarray:
    """Model width d for ``N_nv`` non-vocabulary parameters (Tao et al.'s prediction rule)."""
    bounds = np.array([b for b, _ in WIDTH_RULE])
    widths = np.array([w for _, w in WIDTH_RULE] + [WIDTH_MAX], dtype=float)
    idx = np.searchsorted(bounds, as_float_array(non_vocab_params), side="left")
    return widths[idx]


def compute_optimal_flops(non_vocab_params: np.ndarray | float) -> np.ndarray:
    """``C_opt(N_nv)``: the budget at which N_nv is compute-optimal (approach 1 inverted).

    ``C = (N_nv / exp(K))^(1/0.5)`` with K = -2.4846510161625193 (G11/G12 use ``F = C_opt``).
    """
    n = as_float_array(non_vocab_params)
    return (n / np.exp(ISOFLOP_NONVOCAB_LOG_COEF)) ** (1.0 / ISOFLOP_NONVOCAB_EXP)


def optimal_vocab_isoflop(flops: np.ndarray | float, width: np.ndarray | float) -> np.ndarray:
    """Approach 1 (isoFLOP power law): ``V = exp(K) C^0.41636 / d`` (float, not truncated)."""
    nv = np.exp(ISOFLOP_VOCAB_LOG_COEF) * as_float_array(flops) ** ISOFLOP_VOCAB_EXP
    return nv / as_float_array(width)


def optimal_vocab_derivative(
    non_vocab_params: np.ndarray | float, width: np.ndarray | float
) -> np.ndarray:
    """Approach 2 (derivative-based): ``V = 3,145,728 (N_nv / 33e6)^0.8354 / d``."""
    ratio = as_float_array(non_vocab_params) / DERIVATIVE_BASE_NON_VOCAB
    return DERIVATIVE_BASE_VOCAB_PARAMS * ratio**DERIVATIVE_EXP / as_float_array(width)


@register_law
@dataclass(frozen=True)
class TaoLaw(Law):
    """``L_u = -E + A1/N_nv^alpha1 + A2/(V d)^alpha2 + B/D^beta`` (paper units, see module).

    Parameters are in the paper's units: N_nv and V*d in millions, D in billions of tokens.
    """

    E: float
    A1: float
    A2: float
    B: float
    alpha1: float
    alpha2: float
    beta: float

    name = "tao"
    NON_VOCAB_UNIT = 1e6
    VOCAB_UNIT = 1e6
    TOKENS_UNIT = 1e9

    def predict(
        self,
        non_vocab_params: np.ndarray | float,
        vocab_params: np.ndarray | float,
        tokens: np.ndarray | float,
    ) -> np.ndarray:
        """Unigram-normalised loss from raw counts N_nv, N_v = V d and D tokens (vectorised)."""
        n = as_float_array(non_vocab_params) / self.NON_VOCAB_UNIT
        v = as_float_array(vocab_params) / self.VOCAB_UNIT
        d = as_float_array(tokens) / self.TOKENS_UNIT
        return (
            -self.E
            + self.A1 * n ** (-self.alpha1)
            + self.A2 * v ** (-self.alpha2)
            + self.B * d ** (-self.beta)
        )

    def loss_at_budget(
        self,
        non_vocab_params: np.ndarray | float,
        vocab_size: np.ndarray | float,
        width: np.ndarray | float,
        flops: np.ndarray | float,
    ) -> np.ndarray:
        """L_u with ``D = F / (6 (N_nv + V d))`` (the approach-3 objective in V)."""
        n = as_float_array(non_vocab_params)
        nv = as_float_array(vocab_size) * as_float_array(width)
        return self.predict(n, nv, as_float_array(flops) / (6.0 * (n + nv)))

    def dloss_dvocab(
        self,
        non_vocab_params: np.ndarray | float,
        vocab_size: np.ndarray | float,
        width: np.ndarray | float,
        flops: np.ndarray | float,
    ) -> np.ndarray:
        """``dL_u/dV`` at fixed N_nv, d and budget F (approach 3 solves this for zero)."""
        n = as_float_array(non_vocab_params)
        d = as_float_array(width)
        nv = as_float_array(vocab_size) * d
        f = as_float_array(flops)
        tokens = f / (6.0 * (n + nv))
        vocab_term = -self.alpha2 * self.A2 * (nv / self.VOCAB_UNIT) ** (-self.alpha2) * d / nv
        dtokens_dv = -tokens * d / (n + nv)
        data_term = (
            -self.beta * self.B * (tokens / self.TOKENS_UNIT) ** (-self.beta) * dtokens_dv / tokens
        )
        return vocab_term + data_term


TAO = TaoLaw(
    E=5.5327846803337435,
    A1=1.8313851559554126,
    A2=0.19584238398665638,
    B=2.1241123120064955,
    alpha1=0.44660634152009615,
    alpha2=0.6707374679896795,
    beta=0.44660634152009615,
)
"""Tao et al. 2024 published parametric fit (alpha1 = beta tied), paper units."""
