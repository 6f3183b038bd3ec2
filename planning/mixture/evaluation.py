"""Held-out evaluation of mixture laws and baselines: Spearman, relative error, comparisons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from mixplan.planning.errors import SpecError
from mixplan.planning.mixture.data import MixtureData


class MixturePredictor(Protocol):
    """Anything with ``predict(weights) -> (runs, domains)`` and ``domains_``."""

    domains_: tuple[str, ...]

    def predict(self, weights: np.ndarray) -> np.ndarray: ...


def spearman(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Spearman rank correlation between predictions and observations of one domain."""
    return float(spearmanr(predicted, observed).statistic)


def mean_relative_error(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Mean of ``|predicted - observed| / observed`` (a fraction, not percent)."""
    return float(np.mean(np.abs(predicted - observed) / np.abs(observed)))


def evaluate(
    model: MixturePredictor, test: MixtureData, *, name: str | None = None
) -> pl.DataFrame:
    """Score one fitted model on held-out runs, per domain.

    Returns
    -------
    polars.DataFrame
        Columns ``model, domain, spearman, mre, mae, runs``.
    """
    missing = [d for d in model.domains_ if d not in test.domains]
    if missing:
        raise SpecError(f"held-out data lacks domains {missing}")
    predicted = np.atleast_2d(model.predict(test.mixture))
    rows = []
    for k, domain in enumerate(model.domains_):
        observed = test.losses[:, test.domains.index(domain)]
        rows.append(
            {
                "model": name or getattr(model, "name", type(model).__name__),
                "domain": domain,
                "spearman": spearman(predicted[:, k], observed),
                "mre": mean_relative_error(predicted[:, k], observed),
                "mae": float(np.mean(np.abs(predicted[:, k] - observed))),
                "runs": len(observed),
            }
        )
    return pl.DataFrame(rows)


def compare(
    models: Mapping[str, MixturePredictor], train: MixtureData, test: MixtureData
) -> pl.DataFrame:
    """Fit every model on ``train`` and score it on ``test``, in one run.

    Each value must have ``fit(data)``; returns the stacked :func:`evaluate` tables.
    """
    tables = []
    for name, model in models.items():
        model.fit(train)  # type: ignore[attr-defined]
        tables.append(evaluate(model, test, name=name))
    return pl.concat(tables)


def comparison_table(scores: pl.DataFrame, *, metric: str = "spearman") -> pl.DataFrame:
    """Wide view: one row per domain, one column per model, plus a ``mean`` row."""
    if metric not in scores.columns:
        raise SpecError(f"unknown metric {metric!r}; one of {scores.columns}")
    models = scores["model"].unique(maintain_order=True).to_list()
    wide = scores.pivot(on="model", index="domain", values=metric).select(["domain", *models])
    mean = wide.select(pl.lit("mean").alias("domain"), *[pl.col(m).mean() for m in models])
    return pl.concat([wide, mean])
