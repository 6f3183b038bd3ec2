"""Mixture-law inputs as arrays, built from the canonical lake tables (planning/schema.py).

A mixture law sees a matrix of training mixtures ``mixture`` (runs x sources, rows on the simplex)
and a matrix of validation losses ``losses`` (runs x domains). Training sources and validation
domains are different lists (RegMix trains on 17 Pile domains and validates on 13); they are
matched by name with :func:`match_domains` when a law needs the pairing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import norm

from mixplan.planning.errors import SchemaError, SpecError
from mixplan.planning.schema import FINAL_STEP

TRAINING_MAX_SHARE = "training_max_share"
"""Key of a stored mixture fit's trust region: each source's largest share in the fitted runs."""


@dataclass(frozen=True)
class MixtureData:
    """Final losses of a set of runs against their training mixtures.

    Attributes
    ----------
    run_ids
        One id per run.
    sources
        Training source names (columns of ``mixture``).
    domains
        Validation domain names (columns of ``losses``).
    mixture
        Mixture weights, shape ``(runs, sources)``, each row sums to 1.
    losses
        Validation losses, nats, shape ``(runs, domains)``.
    params
        Model parameters per run (``nan`` when unknown), shape ``(runs,)``.
    tokens
        Training tokens per run (``nan`` when unknown), shape ``(runs,)``.
    """

    run_ids: tuple[str, ...]
    sources: tuple[str, ...]
    domains: tuple[str, ...]
    mixture: np.ndarray
    losses: np.ndarray
    params: np.ndarray
    tokens: np.ndarray

    def max_shares(self) -> dict[str, float]:
        """The largest weight each source has in these runs: the trust region of a law fitted
        on them (mixture laws extrapolate badly outside the mixtures they were fitted on)."""
        return dict(zip(self.sources, self.mixture.max(axis=0).tolist(), strict=True))

    def __post_init__(self) -> None:
        runs = len(self.run_ids)
        if self.mixture.shape != (runs, len(self.sources)):
            raise SchemaError(
                f"mixture has shape {self.mixture.shape}, expected ({runs}, {len(self.sources)})"
            )
        if self.losses.shape != (runs, len(self.domains)):
            raise SchemaError(
                f"losses have shape {self.losses.shape}, expected ({runs}, {len(self.domains)})"
            )

    @classmethod
    def from_arrays(
        cls,
        mixture: np.ndarray,
        losses: np.ndarray,
        *,
        sources: Sequence[str],
        domains: Sequence[str],
        run_ids: Sequence[str] | None = None,
        params: np.ndarray | None = None,
        tokens: np.ndarray | None = None,
    ) -> MixtureData:
        """Build from plain arrays; rows of ``mixture`` are renormalised to sum to 1."""
        mixture = np.asarray(mixture, dtype=float)
        losses = np.asarray(losses, dtype=float)
        if mixture.ndim == 1:
            mixture = mixture[:, None]
        if losses.ndim == 1:
            losses = losses[:, None]
        totals = mixture.sum(axis=1, keepdims=True)
        if np.any(totals <= 0) or np.any(mixture < 0):
            raise SchemaError("every mixture row needs non-negative weights with a positive sum")
        runs = mixture.shape[0]
        nan = np.full(runs, np.nan)
        return cls(
            run_ids=tuple(run_ids) if run_ids is not None else tuple(map(str, range(runs))),
            sources=tuple(sources),
            domains=tuple(domains),
            mixture=mixture / totals,
            losses=losses,
            params=nan if params is None else np.asarray(params, dtype=float),
            tokens=nan if tokens is None else np.asarray(tokens, dtype=float),
        )

    def subset(self, rows: np.ndarray) -> MixtureData:
        """The runs selected by an index or boolean array."""
        rows = np.asarray(rows)
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        return MixtureData(
            run_ids=tuple(self.run_ids[i] for i in index),
            sources=self.sources,
            domains=self.domains,
            mixture=self.mixture[index],
            losses=self.losses[index],
            params=self.params[index],
            tokens=self.tokens[index],
        )

    def select_domains(self, domains: Sequence[str]) -> MixtureData:
        """Keep only the named validation domains (in the order given)."""
        missing = [d for d in domains if d not in self.domains]
        if missing:
            raise SpecError(f"unknown domains {missing}; known: {list(self.domains)}")
        columns = [self.domains.index(d) for d in domains]
        return MixtureData(
            run_ids=self.run_ids,
            sources=self.sources,
            domains=tuple(domains),
            mixture=self.mixture,
            losses=self.losses[:, columns],
            params=self.params,
            tokens=self.tokens,
        )

    @classmethod
    def from_lake(
        cls,
        runs: pl.DataFrame,
        metrics: pl.DataFrame,
        *,
        split: str = "val",
        step: int | None = None,
        domains: Sequence[str] | None = None,
    ) -> MixtureData:
        """Final (or step ``step``) validation loss of every run that has a mixture.

        Parameters
        ----------
        runs, metrics
            Canonical lake tables (planning/schema.py).
        split
            Metrics split to read.
        step
            Optimizer step to read; ``None`` takes each run's last logged step
            (``FINAL_STEP`` rows count as last).
        domains
            Domains to keep; ``None`` keeps every domain logged for all runs.

        ``params`` is the run's total parameter count, or its non-embedding count when the source
        gives only that (the 5Mix mapping does).

        Raises
        ------
        SchemaError
            If no run has a mixture or a run lacks a kept domain's loss.
        """
        with_mixture = runs.filter(pl.col("mixture").list.len() > 0).sort("run_id")
        if with_mixture.height == 0:
            raise SchemaError("runs table: no run has a `mixture`; ingest mixture runs first")
        rows = metrics.filter(
            (pl.col("split") == split) & pl.col("run_id").is_in(with_mixture["run_id"].implode())
        )
        if step is None:
            order = pl.when(pl.col("step") == FINAL_STEP).then(2**62).otherwise(pl.col("step"))
            rows = rows.with_columns(_order=order).filter(
                pl.col("_order") == pl.col("_order").max().over("run_id", "domain")
            )
        else:
            rows = rows.filter(pl.col("step") == step)
        wide = (
            rows.group_by("run_id", "domain")
            .agg(pl.col("loss").mean())
            .pivot(on="domain", index="run_id", values="loss")
            .sort("run_id")
        )
        available = sorted(c for c in wide.columns if c != "run_id")
        keep = list(domains) if domains is not None else available
        missing = [d for d in keep if d not in available]
        if missing:
            raise SchemaError(f"metrics: no {split} loss for domains {missing} (step={step})")
        joined = with_mixture.join(wide, on="run_id", how="inner").sort("run_id")
        complete = joined.select(keep).to_numpy()
        ok = np.all(np.isfinite(complete), axis=1)
        joined = joined.filter(pl.Series(ok))
        if joined.height == 0:
            raise SchemaError(f"metrics: no run has a {split} loss for every domain {keep}")
        mixture_long = (
            joined.select("run_id", "mixture")
            .explode("mixture")
            .unnest("mixture")
            .group_by("run_id", "source")
            .agg(pl.col("weight").sum())
        )
        sources = sorted(mixture_long["source"].unique().to_list())
        mixture_wide = (
            mixture_long.pivot(on="source", index="run_id", values="weight")
            .sort("run_id")
            .select(["run_id", *sources])
            .fill_null(0.0)
        )
        return cls.from_arrays(
            mixture_wide.select(sources).to_numpy(),
            joined.select(keep).to_numpy(),
            sources=sources,
            domains=keep,
            run_ids=joined["run_id"].to_list(),
            params=joined.select(pl.coalesce(pl.col("params"), pl.col("non_embedding_params")))
            .to_series()
            .to_numpy()
            .astype(float),
            tokens=joined["tokens"].to_numpy().astype(float),
        )


def _normalise_name(name: str) -> str:
    name = name.lower()
    for prefix in ("metric/", "train_", "val_", "valid_", "the_pile_", "pythia-pile.valid."):
        name = name.removeprefix(prefix)
    for prefix in ("the_pile_",):
        name = name.removeprefix(prefix)
    for suffix in ("_val_loss", "_loss", ".bin", "_val"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]", "", name)


def match_domains(sources: Sequence[str], domains: Sequence[str]) -> dict[str, str | None]:
    """Pair each validation domain with the training source of the same name, if any.

    Names are compared after dropping common prefixes and suffixes (``train_``, ``metric/``,
    ``the_pile_``, ``_val_loss``) and non-alphanumerics, so ``train_the_pile_pile_cc`` matches
    ``metric/the_pile_pile_cc_val_loss``.
    """
    by_key = {_normalise_name(s): s for s in sources}
    return {d: by_key.get(_normalise_name(d)) for d in domains}


def domain_weight_vector(
    domains: Sequence[str], target: Mapping[str, float] | np.ndarray | None = None
) -> np.ndarray:
    """A user's target as a weight per validation domain, normalised to sum to 1.

    Parameters
    ----------
    domains
        The law's domains, in order.
    target
        Weight per domain name (missing domains weigh 0), or one weight per domain in order;
        ``None`` weighs all domains equally.

    Raises
    ------
    SpecError
        On unknown domains, a vector of the wrong length, negative weights or an all-zero target.
    """
    if target is None:
        return np.full(len(domains), 1.0 / len(domains))
    if isinstance(target, Mapping):
        unknown = sorted(set(target) - set(domains))
        if unknown:
            raise SpecError(f"target: unknown domains {unknown}; known domains: {list(domains)}")
        weights = np.array([float(target.get(d, 0.0)) for d in domains])
    else:
        weights = np.asarray(target, dtype=float)
        if weights.shape != (len(domains),):
            raise SpecError(
                f"target: {weights.shape} domain weights for {len(domains)} domains "
                f"{list(domains)}; give one weight per domain or a mapping domain -> weight"
            )
    if np.any(weights < 0) or weights.sum() <= 0:
        raise SpecError("target: domain weights must be non-negative with a positive sum")
    return weights / weights.sum()


class DomainTarget:
    """The user-weighted target ``sum_i w_i L_i(mixture)`` of anything with ``domains_`` and
    ``predict`` (mixture laws, their combination, the baselines).

    ``scale_error_`` is the RMSE (nats) a route measured for carrying the law's inputs across
    scale, which a law's bootstrap over mixtures does not see: N past the fitted sizes, D past
    the runs' last checkpoints (planning/mixture/nested.py's ``LawRoute.scale_error``). The
    route sets it on the law it stores, so the interval the planner and the report show
    (`widened`) is the one the route's coverage was measured with; 0 for a law fitted at
    its own scale.
    """

    domains_: tuple[str, ...]
    predict: Callable[[np.ndarray], np.ndarray]
    scale_error_: float = 0.0

    def widened(
        self,
        weights: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        extra: np.ndarray | float,
        level: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A bootstrap interval ``(low, high)`` of ``predict(weights)`` widened by an error of
        RMSE ``extra`` in quadrature: half-width ``sqrt(h_boot^2 + (z extra)^2)`` around the
        prediction, ``h_boot`` the interval's larger side, ``z`` the normal quantile of
        ``level``; unchanged where ``extra`` is 0."""
        if not np.any(extra):
            return low, high
        centre = self.predict(weights)
        boot = np.maximum(centre - low, high - centre)
        half = np.sqrt(boot**2 + (float(norm.ppf(0.5 + level / 2)) * extra) ** 2)
        return centre - half, centre + half

    def target_weights(self, domain_weights: np.ndarray | Mapping[str, float] | None) -> np.ndarray:
        """Domain weights as a vector in ``domains_`` order, normalised to sum to 1."""
        return domain_weight_vector(self.domains_, domain_weights)

    def target_loss(
        self, weights: np.ndarray, domain_weights: np.ndarray | Mapping[str, float] | None
    ) -> np.ndarray:
        """Numeric value of the target for one or many mixtures."""
        return self.predict(weights) @ self.target_weights(domain_weights)


def mixture_rows(law: str, weights: np.ndarray, sources: Sequence[str]) -> tuple[np.ndarray, bool]:
    """Mixture weights as ``(mixtures, sources)`` rows, and whether one mixture was given.

    Raises
    ------
    SpecError
        If the number of sources differs from the ``sources`` the law ``law`` was fitted on.
    """
    weights = np.asarray(weights, dtype=float)
    single = weights.ndim == 1
    weights = np.atleast_2d(weights)
    if weights.shape[1] != len(sources):
        raise SpecError(
            f"{law}: mixture has {weights.shape[1]} sources, the law was fitted on "
            f"{len(sources)} ({list(sources)})"
        )
    return weights, single
