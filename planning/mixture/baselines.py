"""Regression baselines for mixture laws, in the same code path as the laws.

- :class:`LightGBMBaseline`: RegMix's regression (Liu et al. 2025): one LightGBM regressor per
  domain on the mixture weights, with RegMix's hyper-parameters. Early stopping uses a split of
  the *training* runs (RegMix's released code stopped on the test set). Not convex: no
  ``loss_expression``; it is here for comparison only.
- :class:`LinearBaseline`: least squares ``L_i(r) = b_i . r`` (r on the simplex, so the
  intercept is absorbed). Affine, hence convex: it exposes ``loss_expression``.

Both follow the mixture-law interface: ``fit(data) -> self``, ``predict(weights)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import FitError, NotFittedError, SpecError
from mixplan.planning.mixture.data import (
    DomainTarget,
    MixtureData,
    mixture_rows,
)
from mixplan.planning.mixture.steps import losses_at_tokens

LIGHTGBM_PARAMS = {
    "boosting_type": "gbdt",
    "objective": "regression",
    "metric": "l2",
    "learning_rate": 1e-2,
    "verbosity": -1,
    "num_threads": 1,
}
"""RegMix's hyper-parameters (regmix/regression_fitting); their ``seed`` comes from ``seed``."""
LIGHTGBM_ROUNDS = 1000
"""RegMix's ``num_iterations``."""


class _Baseline(DomainTarget):
    name = "baseline"

    def __init__(self) -> None:
        self.sources_: tuple[str, ...] = ()
        self.domains_: tuple[str, ...] = ()

    def _check(self, weights: np.ndarray) -> tuple[np.ndarray, bool]:
        if not self.domains_:
            raise NotFittedError(f"{self.name}: call fit(data) before predicting")
        return mixture_rows(self.name, weights, self.sources_)


class LightGBMBaseline(_Baseline):
    """RegMix-style LightGBM regression per domain.

    Parameters
    ----------
    validation_fraction
        Share of the training runs held out for early stopping.
    stopping_rounds
        Early-stopping patience (RegMix: 3).
    seed
        Seed of the split and of LightGBM.
    """

    name = "LightGBM (RegMix)"

    def __init__(
        self, *, validation_fraction: float = 0.1, stopping_rounds: int = 3, seed: int = 42
    ) -> None:
        super().__init__()
        if not 0 < validation_fraction < 1:
            raise SpecError("validation_fraction must be in (0, 1)")
        self.validation_fraction = validation_fraction
        self.stopping_rounds = stopping_rounds
        self.seed = seed
        self.models_: list[object] = []

    def fit(self, data: MixtureData) -> Self:
        """Fit one regressor per domain; early stopping on a split of ``data``'s runs."""
        self.fit_features(data.mixture, data.losses)
        self.sources_, self.domains_ = data.sources, data.domains
        return self

    def fit_features(self, features: np.ndarray, losses: np.ndarray) -> None:
        """Fit one regressor per column of ``losses`` on any feature matrix (runs x features)."""
        import lightgbm as lgb

        runs = len(features)
        if runs < 10:
            raise FitError(f"{self.name}: needs at least 10 runs, got {runs}")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(runs)
        n_val = max(1, round(self.validation_fraction * runs))
        val, train = order[:n_val], order[n_val:]
        self.models_ = []
        for column in range(losses.shape[1]):
            train_set = lgb.Dataset(features[train], losses[train, column])
            val_set = lgb.Dataset(features[val], losses[val, column], reference=train_set)
            booster = lgb.train(
                {**LIGHTGBM_PARAMS, "seed": self.seed},
                train_set,
                num_boost_round=LIGHTGBM_ROUNDS,
                valid_sets=[val_set],
                callbacks=[lgb.early_stopping(self.stopping_rounds, verbose=False)],
            )
            self.models_.append(booster)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Predictions ``(runs, domains)`` for a feature matrix."""
        return np.stack(
            [m.predict(features, num_iteration=m.best_iteration) for m in self.models_], axis=-1
        )

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain for one or many mixtures."""
        weights, single = self._check(weights)
        out = self.predict_features(weights)
        return out[0] if single else out


class LinearBaseline(_Baseline):
    """Least-squares linear law per domain, ``L_i(r) = b_i . r`` (convex: affine)."""

    name = "linear"

    def __init__(self) -> None:
        super().__init__()
        self.coef_: np.ndarray | None = None

    def fit(self, data: MixtureData) -> Self:
        """Ordinary least squares on the mixture weights (no separate intercept)."""
        coef, *_ = np.linalg.lstsq(data.mixture, data.losses, rcond=None)
        self.coef_ = coef  # (sources, domains)
        self.sources_, self.domains_ = data.sources, data.domains
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain for one or many mixtures."""
        weights, single = self._check(weights)
        assert self.coef_ is not None
        out = weights @ self.coef_
        return out[0] if single else out

    def loss_expression(
        self, weights: cp.Expression, domain_weights: np.ndarray | Mapping[str, float] | None
    ) -> cp.Expression:
        """``(B w) . r``: affine in the mixture."""
        self._check(np.zeros(len(self.sources_)))
        assert self.coef_ is not None
        return (self.coef_ @ self.target_weights(domain_weights)) @ weights


class LightGBMScaleBaseline(_Baseline):
    """RegMix's regression carried across scale: LightGBM on (mixture, log N) at the target D.

    Every run is read at the target tokens by the step stage
    (:func:`mixplan.planning.mixture.steps.losses_at_tokens`), then one regressor per domain is
    fitted on the mixture weights and ``log N``. Trees cannot extrapolate: at a larger N than
    any fitted run the prediction is the largest fitted size's. Comparison only (bench).

    Parameters
    ----------
    params, tokens
        Target N and D.
    seed
        Seed of LightGBM and of its early-stopping split.
    """

    name = "LightGBM (mixture, log N)"

    def __init__(self, *, params: float, tokens: float, seed: int = 42) -> None:
        super().__init__()
        self.params, self.tokens = float(params), float(tokens)
        self.model_ = LightGBMBaseline(seed=seed)

    def fit(self, curves: Any) -> Self:
        """Read the runs (:class:`MixtureCurves`) at the target D, fit on (mixture, log N)."""
        data, _ = losses_at_tokens(curves, self.tokens)
        self.model_.fit_features(np.column_stack([data.mixture, np.log(data.params)]), data.losses)
        self.sources_, self.domains_ = data.sources, data.domains
        return self

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain at the target (N, D) for one or many mixtures."""
        weights, single = self._check(weights)
        features = np.column_stack([weights, np.full(len(weights), np.log(self.params))])
        out = self.model_.predict_features(features)
        return out[0] if single else out
