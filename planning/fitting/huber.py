"""The Huber loss used by every fit: quadratic within ``delta``, linear outside (summed)."""

from __future__ import annotations

import numpy as np

DEFAULT_DELTA = 1e-3


def huber(residuals: np.ndarray, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """Elementwise Huber loss, identical to ``scipy.special.huber(delta, r)``."""
    abs_r = np.abs(residuals)
    return np.where(abs_r <= delta, 0.5 * residuals**2, delta * (abs_r - 0.5 * delta))


def huber_psi(residuals: np.ndarray, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """Derivative of :func:`huber` with respect to the residual (the clipped residual)."""
    return np.clip(residuals, -delta, delta)


def irls_weights(residuals: np.ndarray, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """IRLS weights ``psi(r) / r``: 1 inside ``delta``, ``delta / |r|`` outside."""
    abs_r = np.abs(residuals)
    return np.where(abs_r <= delta, 1.0, delta / np.maximum(abs_r, 1e-300))
