"""What every mixture law shares: per-domain fitting, bootstrap by run, the planner hook.

The planner hook (agreed with planning/programs): every fitted law exposes

- ``predict(weights) -> ndarray``: loss per domain for one mixture (``(sources,)`` ->
  ``(domains,)``) or many (``(runs, sources)`` -> ``(runs, domains)``);
- ``loss_expression(weights, domain_weights) -> cp.Expression``: the user-weighted target loss
  ``sum_i w_i L_i(weights)`` as a convex DCP expression of a cvxpy variable ``weights``.

A subclass supplies the law (a pure numpy function, see planning/mixture/engine.py), its start
grid and bounds (the bounds are what keep it convex), and its cvxpy form.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import NotFittedError, SpecError
from mixplan.planning.mixture.data import (
    DomainTarget,
    MixtureData,
    mixture_rows,
)
from mixplan.planning.mixture.engine import DEFAULT_DELTA, bootstrap_law, fit_law, law_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainFit:
    """One domain's fitted law.

    Attributes
    ----------
    domain
        Validation domain.
    theta
        Fitted parameters (the law's internal parametrisation, see ``param_names``).
    objective
        Summed Huber objective.
    converged
        L-BFGS-B success flag.
    bootstrap
        Refitted ``theta`` per bootstrap replicate, shape ``(n_bootstrap, n_params)``.
    """

    domain: str
    theta: np.ndarray
    objective: float
    converged: bool
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))


class MixtureLaw(DomainTarget, ABC):
    """A law ``L_i(mixture)`` per validation domain, fitted independently per domain."""

    name: str = "mixture law"

    def __init__(
        self, *, delta: float = DEFAULT_DELTA, n_bootstrap: int = 0, seed: int = 0
    ) -> None:
        self.delta = delta
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.fits_: tuple[DomainFit, ...] | None = None
        self.sources_: tuple[str, ...] = ()
        self.domains_: tuple[str, ...] = ()

    # -- what a law defines ------------------------------------------------------------------
    @abstractmethod
    def param_names(self, n_sources: int) -> list[str]:
        """Names of the entries of ``theta``."""

    @abstractmethod
    def model(
        self, theta: np.ndarray, mixture: np.ndarray, *, jac: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The law (engine convention)."""

    @abstractmethod
    def starts(self, losses: np.ndarray, inputs: Any) -> np.ndarray:
        """Start grid, shape ``(n_starts, n_params)``."""

    @abstractmethod
    def bounds(self, losses: np.ndarray, n_sources: int) -> np.ndarray:
        """Bounds ``(n_params, 2)``; they keep the fitted law convex in the mixture."""

    @abstractmethod
    def domain_expression(self, theta: np.ndarray, weights: cp.Expression) -> cp.Expression:
        """One domain's loss as a convex cvxpy expression of ``weights``."""

    def inputs(self, data: MixtureData) -> Any:
        """What ``model`` reads from the runs (default: the mixture matrix)."""
        return data.mixture

    def inputs_for(self, weights: np.ndarray) -> Any:
        """What ``model`` reads for new mixtures at the law's target scale (default: weights)."""
        return weights

    def options(self) -> dict[str, Any]:
        """Constructor options, recorded with the fit and used by :meth:`from_json`."""
        return {"delta": self.delta, "n_bootstrap": self.n_bootstrap, "seed": self.seed}

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, data: MixtureData) -> Self:
        """Fit one law per domain of ``data``; bootstrap by run if ``n_bootstrap > 0``.

        Returns
        -------
        self
        """
        fits = []
        inputs = self.inputs(data)
        n_sources = data.mixture.shape[1]
        for column, domain in enumerate(data.domains):
            losses = data.losses[:, column]
            spec = law_spec(
                f"{self.name}: {domain}",
                self.model,
                self.bounds(losses, n_sources),
                self.param_names(n_sources),
            )
            result = fit_law(spec, self.starts(losses, inputs), inputs, losses, delta=self.delta)
            draws = np.empty((0, len(result.theta)))
            if self.n_bootstrap > 0:
                draws = bootstrap_law(
                    spec,
                    result.theta,
                    inputs,
                    losses,
                    data.run_ids,
                    n_bootstrap=self.n_bootstrap,
                    seed=self.seed,
                    delta=self.delta,
                )
            fits.append(
                DomainFit(
                    domain=domain,
                    theta=result.theta,
                    objective=result.objective,
                    converged=result.converged,
                    bootstrap=draws,
                )
            )
            logger.info("%s: %s objective %.4g", self.name, domain, result.objective)
        self.fits_ = tuple(fits)
        self.sources_ = data.sources
        self.domains_ = data.domains
        return self

    def _fits(self) -> tuple[DomainFit, ...]:
        if self.fits_ is None:
            raise NotFittedError(f"{self.name}: call fit(data) before predicting")
        return self.fits_

    def _weights(self, weights: np.ndarray) -> tuple[np.ndarray, bool]:
        self._fits()
        return mixture_rows(self.name, weights, self.sources_)

    # -- the planner hook ------------------------------------------------------------------
    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain: ``(sources,) -> (domains,)``, ``(runs, sources) -> (runs, domains)``."""
        weights, single = self._weights(weights)
        inputs = self.inputs_for(weights)
        out = np.stack([self.model(f.theta, inputs) for f in self._fits()], axis=-1)
        return out[0] if single else out

    def predict_interval(
        self, weights: np.ndarray, *, level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile interval of ``predict(weights)`` (needs ``n_bootstrap > 0``),
        widened by ``scale_error_`` (`DomainTarget.widened`) when a route measured one."""
        single = np.asarray(weights).ndim == 1
        draws = self.bootstrap_predictions(weights)
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
        low, high = self.widened(np.atleast_2d(weights), low, high, self.scale_error_, level)
        return (low[0], high[0]) if single else (low, high)

    def bootstrap_predictions(self, weights: np.ndarray) -> np.ndarray:
        """Every bootstrap draw's loss per domain, ``(n_bootstrap, mixtures, domains)``."""
        weights, _ = self._weights(weights)
        fits = self._fits()
        if fits[0].bootstrap.shape[0] == 0:
            raise NotFittedError(f"{self.name}: fit with n_bootstrap > 0 to get intervals")
        inputs = self.inputs_for(weights)
        return np.stack([self.model(f.bootstrap, inputs) for f in fits], axis=-1)

    def loss_expression(
        self, weights: cp.Expression, domain_weights: np.ndarray | Mapping[str, float] | None
    ) -> cp.Expression:
        """The target ``sum_i w_i L_i(weights)`` as a convex DCP expression.

        Parameters
        ----------
        weights
            cvxpy expression of the mixture, shape ``(sources,)``.
        domain_weights
            Non-negative weight per domain (array in ``domains_`` order or a mapping by name);
            ``None`` weighs domains equally.
        """
        fits = self._fits()
        vector = self.target_weights(domain_weights)
        terms = [
            w * self.domain_expression(f.theta, weights)
            for w, f in zip(vector, fits, strict=True)
            if w > 0
        ]
        return cp.sum(cp.hstack(terms))

    def target_weights(self, domain_weights: np.ndarray | Mapping[str, float] | None) -> np.ndarray:
        """Domain weights as a vector in ``domains_`` order, normalised to sum to 1."""
        self._fits()
        return super().target_weights(domain_weights)

    # -- reporting ---------------------------------------------------------------------------
    def params_table(self) -> list[dict[str, Any]]:
        """One row per domain: every named parameter, with a 95% bootstrap interval if any."""
        rows = []
        names = self.param_names(len(self.sources_))
        for f in self._fits():
            row: dict[str, Any] = {"domain": f.domain, "objective": f.objective}
            for k, name in enumerate(names):
                row[name] = float(f.theta[k])
                if f.bootstrap.shape[0]:
                    row[f"{name}_lo"] = float(np.percentile(f.bootstrap[:, k], 2.5))
                    row[f"{name}_hi"] = float(np.percentile(f.bootstrap[:, k], 97.5))
            rows.append(row)
        return rows

    def to_json(self) -> str:
        """Serialise the fitted law (options, sources, domains, parameters, bootstrap draws)."""
        fits = self._fits()
        return json.dumps(
            {
                "law": type(self).__name__,
                "options": self.options(),
                "sources": list(self.sources_),
                "domains": list(self.domains_),
                "scale_error": float(self.scale_error_),
                "fits": [
                    {
                        "domain": f.domain,
                        "theta": f.theta.tolist(),
                        "objective": f.objective,
                        "converged": f.converged,
                        "bootstrap": f.bootstrap.tolist(),
                    }
                    for f in fits
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Rebuild a fitted law written by :meth:`to_json`."""
        payload = json.loads(text)
        if payload["law"] != cls.__name__:
            raise SpecError(f"JSON holds a {payload['law']}, not a {cls.__name__}")
        law = cls(**payload["options"])
        law.sources_ = tuple(payload["sources"])
        law.domains_ = tuple(payload["domains"])
        law.scale_error_ = float(payload.get("scale_error", 0.0))  # 0 in fits stored before it
        law.fits_ = tuple(
            DomainFit(
                domain=f["domain"],
                theta=np.asarray(f["theta"], dtype=float),
                objective=float(f["objective"]),
                converged=bool(f["converged"]),
                bootstrap=np.asarray(f["bootstrap"], dtype=float).reshape(-1, len(f["theta"])),
            )
            for f in payload["fits"]
        )
        return law
