"""Whole loss curves under a learning-rate schedule (Tissue et al. 2024), laws.md section 1.6.

``L(s) = L0 + A S1(s)^(-alpha) - C S2(s)`` where, over the steps of a schedule eta_0, eta_1, ...

- ``S1(s) = sum_{i<=s} eta_i`` (forward area);
- ``S2(s) = sum_{1<=i<=s} m_i`` with ``m_0 = 0`` and ``m_i = lambda m_{i-1} + (eta_{i-1} - eta_i)``
  (annealing area, momentum form, lambda = 0.999). S2 is summed from the second step: the first
  step has no previous learning rate. This discretisation is the one G16 pins down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixplan.planning.errors import SpecError
from mixplan.planning.laws.base import Law, as_float_array, register_law

DEFAULT_DECAY = 0.999


def schedule_areas(
    learning_rates: np.ndarray, decay: float = DEFAULT_DECAY
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative forward and annealing areas ``(S1, S2)`` at every step of a schedule.

    Parameters
    ----------
    learning_rates : 1-D array, the learning rate at each optimizer step (step 0 first).
    decay : lambda of the momentum recursion.

    Returns
    -------
    S1, S2 : arrays of the same length; element ``s`` is the area up to and including step s,
        so ``S1[-1], S2[-1]`` are the totals of the whole schedule (G16).
    """
    eta = as_float_array(learning_rates)
    if eta.ndim != 1 or eta.size == 0:
        raise SpecError(
            f"learning_rates must be a non-empty 1-D array, got shape {eta.shape}; "
            "pass one learning rate per optimizer step"
        )
    s1 = np.cumsum(eta)
    drops = np.zeros_like(eta)
    drops[1:] = eta[:-1] - eta[1:]
    from scipy.signal import lfilter  # here: scipy.signal costs ~1 s to import, rarely needed

    momentum = lfilter([1.0], [1.0, -decay], drops)
    s2 = np.cumsum(momentum)
    return s1, s2


@register_law
@dataclass(frozen=True)
class LossCurveLaw(Law):
    """``L(s) = L0 + A S1^(-alpha) - C S2`` (Tissue et al. 2024)."""

    L0: float
    A: float
    alpha: float
    C: float

    name = "loss_curve"
    decay = DEFAULT_DECAY

    def predict(self, learning_rates: np.ndarray) -> np.ndarray:
        """The loss after every step of the schedule ``learning_rates``."""
        s1, s2 = schedule_areas(learning_rates, self.decay)
        return self.predict_areas(s1, s2)

    def predict_areas(self, s1: np.ndarray | float, s2: np.ndarray | float) -> np.ndarray:
        """Loss from precomputed areas (S1 > 0)."""
        return self.L0 + self.A * as_float_array(s1) ** (-self.alpha) - self.C * as_float_array(s2)
