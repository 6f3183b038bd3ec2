"""Step 1 of a plan: resolve the laws a spec names (scale law, mixture law, hyperparameter law).

Published constants, inline numbers, or fits stored by ``mixplan fit`` in a lake (read through
fsspec: a local directory or a URL). Pure apart from reading the files the spec names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from mixplan.planning.errors import FitError, SpecError
from mixplan.planning.fitting.result import FitResult, fit_path
from mixplan.planning.laws import DATABLATIONS, DEEPSEEK, STEPLAW, ChinchillaLaw, MuennighoffLaw
from mixplan.planning.laws.hyperparams import DeepSeekHyperparams, StepLaw
from mixplan.planning.mixture import AdditiveLaw, AdditiveScaleLaw, ExponentialLaw, PerSourceLaw
from mixplan.planning.mixture.data import TRAINING_MAX_SHARE
from mixplan.planning.programs.mixture import ExponentialMixture
from mixplan.planning.spec import PUBLISHED_LAWS, PlanSpec

MIXTURE_LAWS = {
    cls.__name__: cls for cls in (ExponentialLaw, AdditiveLaw, AdditiveScaleLaw, PerSourceLaw)
}
"""Stored mixture-law classes by the ``law`` name their JSON carries (planning/mixture)."""

STEPLAW_FIT = "steplaw"
"""Name of the stored StepLaw fit ``mixplan fit`` writes (``<lake>/fits/steplaw.json``)."""


@dataclass(frozen=True)
class ResolvedLaw:
    """The scale law a plan uses, where it came from, and its bootstrap draws (if any)."""

    law: Any
    description: str
    draws: tuple = ()


@dataclass(frozen=True)
class ResolvedMixture:
    """The mixture law a plan uses and its trust region: the largest share of each source in
    the runs the law was fitted on (``None``: no limit beyond the sources' token caps)."""

    law: Any
    max_shares: dict[str, float] | None = None


@dataclass(frozen=True)
class HyperparameterLaw:
    """The law for learning-rate and batch-size advice, and the sweep it was fitted on.

    ``law`` is a `StepLaw` (in N non-embedding, D) or `DeepSeekHyperparams` (in compute C).
    ``data_range`` holds the sweep's ``params`` / ``tokens`` extent (``*_min`` when recorded)
    so advice outside it carries an extrapolation warning.
    """

    law: StepLaw | DeepSeekHyperparams
    description: str
    data_range: dict[str, float] | None = None


def resolve_law(spec: PlanSpec, *, lake: str | Path | None = None) -> ResolvedLaw:
    """The scale law named by the spec: published constants, inline numbers, or a stored fit.

    Parameters
    ----------
    spec
        A validated spec; ``spec.law`` says where the law comes from.
    lake
        The lake (local directory or URL) holding stored fits, when ``law.fit`` names one.

    Returns
    -------
    ResolvedLaw
        The law, a one-line description of its origin and, for a stored fit with bootstrap
        draws and ``uncertainty.draws`` on, the draws.
    """
    ls = spec.law
    if ls.kind == "published":
        return ResolvedLaw(PUBLISHED_LAWS[ls.name], f"published constants {ls.name!r}")
    if ls.kind == "inline":
        c = ls.constants
        if "rd_star" in c or "rn_star" in c:
            law = MuennighoffLaw(
                **{k: c[k] for k in ("E", "A", "B", "alpha", "beta")},
                rd_star=c.get("rd_star", DATABLATIONS.rd_star),
                rn_star=c.get("rn_star", DATABLATIONS.rn_star),
            )
        else:
            law = ChinchillaLaw(**c)
        return ResolvedLaw(law, "inline constants " + ", ".join(f"{k}={v:g}" for k, v in c.items()))
    fit = _load_fit(spec, ls.fit, lake, field_name="law.fit")
    draws = tuple(fit.law_draws()) if fit.n_bootstrap and spec.draws else ()
    location = stored_fit_location(spec, ls.fit, lake, field_name="law.fit")
    desc = f"stored fit {fit.name!r} ({location}, {fit.n_runs} runs, data {fit.data_hash})"
    return ResolvedLaw(fit.law, desc, draws)


def resolve_hyperparameter_law(
    spec: PlanSpec, *, lake: str | Path | None = None
) -> HyperparameterLaw:
    """The learning-rate / batch-size law of ``[hyperparameters] law``.

    ``auto`` (default): the StepLaw fitted by ``mixplan fit`` when the spec's law comes from a
    lake that holds one, else StepLaw's published constants; ``fitted`` requires the stored fit;
    ``steplaw`` and ``deepseek`` use the published constants (laws.md 1.7).
    """
    choice = spec.hyperparameters
    if choice == "deepseek":
        return HyperparameterLaw(DEEPSEEK, "DeepSeek LLM published constants (in compute C)")
    if choice == "steplaw":
        return HyperparameterLaw(STEPLAW, "StepLaw published constants")
    fitted = None
    if lake is not None and (choice == "fitted" or spec.law.kind == "fit"):
        location = fit_path(lake, STEPLAW_FIT)
        try:
            with fsspec.open(location, "r", encoding="utf-8") as handle:
                fitted = FitResult.from_dict(json.loads(handle.read()))
        except (OSError, FitError, KeyError, TypeError, ValueError):
            fitted = None
        if fitted is not None and not isinstance(fitted.law, StepLaw):
            fitted = None
    if fitted is not None:
        return HyperparameterLaw(
            fitted.law,
            f"StepLaw fitted by `mixplan fit` ({location}, {fitted.n_runs} runs)",
            dict(fitted.data_range),
        )
    if choice == "fitted":
        raise SpecError(
            f"{spec.origin}: field 'hyperparameters.law': 'fitted' needs a StepLaw fit in the "
            f"lake ({'<no --lake given>' if lake is None else fit_path(lake, STEPLAW_FIT)}); run "
            "`mixplan fit` on a learning-rate sweep, or choose 'steplaw' or 'deepseek'"
        )
    return HyperparameterLaw(STEPLAW, "StepLaw published constants")


def stored_fit_location(
    spec: PlanSpec, name: str, lake: str | Path | None, *, field_name: str
) -> str:
    """Where a spec's stored fit lives: ``<lake>/fits/<name>.json``, or ``name`` itself when it
    is a path or URL (a relative path is taken from the spec file's folder if not found as is).

    The lake may be a local directory or an fsspec URL (``file://``, ``s3://``, ...): locations
    are joined as strings, never through ``pathlib`` (which would turn ``file://x`` into
    ``file:/x``).
    """
    if name.endswith(".json") or "/" in name:
        if "://" in name:
            return name
        path = Path(name)
        if not path.is_absolute() and not path.exists() and spec.origin != "<dict>":
            path = Path(spec.origin).parent / name
        return str(path)
    if lake is None:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': the stored fit {name!r} lives in a lake; "
            "pass --lake DIR (or give a path to the fit's JSON)"
        )
    return fit_path(lake, name)


def read_stored_fit(spec: PlanSpec, name: str, lake, *, field_name: str) -> tuple[str, str]:
    """``(location, JSON text)`` of a stored fit, read through fsspec (local path or URL)."""
    location = stored_fit_location(spec, name, lake, field_name=field_name)
    try:
        with fsspec.open(location, "r", encoding="utf-8") as handle:
            return location, handle.read()
    except OSError as exc:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': cannot read {location}: {exc}; run "
            "`mixplan fit` (or `mixplan pipeline`) to write it, or check --lake"
        ) from exc


def _load_fit(spec: PlanSpec, name: str, lake, *, field_name: str) -> FitResult:
    location, text = read_stored_fit(spec, name, lake, field_name=field_name)
    try:
        return FitResult.from_dict(json.loads(text))
    except (FitError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': {location} is not a stored scale-law fit "
            f"({exc}); name a fit written by `mixplan fit`"
        ) from exc


def resolve_mixture_law(
    spec: PlanSpec, *, lake: str | Path | None = None
) -> ResolvedMixture | None:
    """The mixture law of the spec (``None`` when the spec has no ``[mixture]``).

    Inline exponential numbers carry no trust region. A stored fitted law does when its JSON
    records ``training_max_share`` (the largest share of each source in the fitted runs) and
    ``mixture.trust_region`` is on (the default).
    """
    ms = spec.mixture
    if ms is None:
        return None
    if ms.fit is None:
        law = ExponentialMixture(
            tuple(s.name for s in spec.sources),
            ms.domains,
            np.array(ms.c),
            np.array(ms.k),
            np.array(ms.t),
        )
        return ResolvedMixture(law)
    location, text = read_stored_fit(spec, ms.fit, lake, field_name="mixture.fit")
    try:
        payload = json.loads(text)
        kind = payload.get("law")
    except (AttributeError, ValueError) as exc:
        raise SpecError(f"{spec.origin}: field 'mixture.fit': {location}: {exc}") from exc
    law_class = MIXTURE_LAWS.get(kind)
    if law_class is None:
        raise SpecError(
            f"{spec.origin}: field 'mixture.fit': {location} holds an unknown law {kind!r}; "
            f"stored mixture laws are {sorted(MIXTURE_LAWS)}"
        )
    shares = payload.get(TRAINING_MAX_SHARE) if ms.trust_region else None
    try:
        law = law_class.from_json(text)
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(
            f"{spec.origin}: field 'mixture.fit': {location} is not a readable {kind} ({exc}); "
            "refit it with `mixplan fit`"
        ) from exc
    return ResolvedMixture(law, shares)
