"""Hyperparameter laws, laws.md section 1.7.

- StepLaw (Predictable Scale Part I): ``eta_opt = c_lr N^a D^b`` and ``B_opt = c_bs D^g`` with N
  non-embedding parameters, D tokens, batch size B in tokens.
- DeepSeek LLM: ``eta_opt = 0.3118 C^-0.1250``, ``B_opt = 0.2920 C^0.3271`` (tokens), and the
  compute-optimal model scale ``M_opt = 0.1715 C^0.5243`` (non-embedding FLOPs per token) and data
  ``D_opt = 5.8316 C^0.4757``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.laws.base import Law, as_float_array, register_law


@register_law
@dataclass(frozen=True)
class StepLaw(Law):
    """``lr = lr_coef N^lr_params_exp D^lr_tokens_exp``; ``bs = bs_coef D^bs_tokens_exp``."""

    lr_coef: float
    lr_params_exp: float
    lr_tokens_exp: float
    bs_coef: float
    bs_tokens_exp: float

    name = "steplaw"

    def learning_rate(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        """Optimal peak learning rate for N non-embedding params and D tokens."""
        n = as_float_array(params)
        d = as_float_array(tokens)
        return self.lr_coef * n**self.lr_params_exp * d**self.lr_tokens_exp

    def batch_size(self, tokens: np.ndarray | float) -> np.ndarray:
        """Optimal batch size in tokens for D training tokens."""
        return self.bs_coef * as_float_array(tokens) ** self.bs_tokens_exp


STEPLAW = StepLaw(
    lr_coef=1.7973,
    lr_params_exp=-0.71292,
    lr_tokens_exp=0.30749,
    bs_coef=0.58069,
    bs_tokens_exp=0.57094,
)
"""Published StepLaw (bootstrap-mean coefficients)."""
STEPLAW_LOG_INTERCEPT_SE = {"lr": 0.623, "bs": 0.437}
"""Published bootstrap SE of the log-intercepts (used as the spread in G15)."""


@register_law
@dataclass(frozen=True)
class DeepSeekHyperparams(Law):
    """DeepSeek LLM power laws in compute C: learning rate, batch (tokens), model scale, data."""

    lr_coef: float
    lr_exp: float
    bs_coef: float
    bs_exp: float
    scale_coef: float
    scale_exp: float
    tokens_coef: float
    tokens_exp: float

    name = "deepseek_hparams"

    def learning_rate(self, flops: np.ndarray | float) -> np.ndarray:
        """Optimal learning rate at compute C."""
        return self.lr_coef * as_float_array(flops) ** self.lr_exp

    def batch_size(self, flops: np.ndarray | float) -> np.ndarray:
        """Optimal batch size in tokens at compute C."""
        return self.bs_coef * as_float_array(flops) ** self.bs_exp

    def model_scale(self, flops: np.ndarray | float) -> np.ndarray:
        """Optimal non-embedding FLOPs per token ``M = 72 n_layer d^2 + 12 n_layer d l_seq``."""
        return self.scale_coef * as_float_array(flops) ** self.scale_exp

    def tokens(self, flops: np.ndarray | float) -> np.ndarray:
        """Optimal training tokens at compute C."""
        return self.tokens_coef * as_float_array(flops) ** self.tokens_exp


DEEPSEEK = DeepSeekHyperparams(
    lr_coef=0.3118,
    lr_exp=-0.1250,
    bs_coef=0.2920,
    bs_exp=0.3271,
    scale_coef=0.1715,
    scale_exp=0.5243,
    tokens_coef=5.8316,
    tokens_exp=0.4757,
)
"""DeepSeek LLM (2024) published hyperparameter and allocation laws."""
