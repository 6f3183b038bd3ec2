"""Step 1 of a plan: resolve the laws a spec names (scale law, mixture law, hyperparameter law).

Published constants, inline numbers, or fits stored by ``mixplan fit`` in a lake (read through
fsspec: a local directory or a URL). Pure apart from reading the files the spec names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from mixplan.planning.errors import FitError, SpecError
from mixplan.planning.fitting.downstream import downstream_law
from mixplan.planning.fitting.leaderboard import leaderboard_path, winner
from mixplan.planning.fitting.result import FitResult, fit_path
from mixplan.planning.laws import DATABLATIONS, DEEPSEEK, STEPLAW, ChinchillaLaw, MuennighoffLaw
from mixplan.planning.laws.hyperparams import DeepSeekHyperparams, StepLaw
from mixplan.planning.mixture import AdditiveLaw, AdditiveScaleLaw, ExponentialLaw, PerSourceLaw
from mixplan.planning.mixture.combined import CombinedLaw
from mixplan.planning.mixture.data import TRAINING_MAX_SHARE
from mixplan.planning.programs.mixture import ExponentialMixture
from mixplan.planning.spec import PUBLISHED_LAWS, PlanSpec

MIXTURE_LAWS = {
    cls.__name__: cls
    for cls in (ExponentialLaw, AdditiveLaw, AdditiveScaleLaw, PerSourceLaw, CombinedLaw)
}
"""Stored mixture-law classes by the ``law`` name their JSON carries (planning/mixture)."""

MIXTURE_PROVENANCE = ("chosen_route", "target", "selection", "step_warning", "best_observed")
"""Keys a mixture law chosen across scale (``<experiment>-mixture-scale``) stores next to
itself: the route, the (N, D) it was refitted at, the selection scores, the step stage's
warning and the best observed run at the largest size."""

STEPLAW_FIT = "steplaw"
"""Name of the stored StepLaw fit ``mixplan fit`` writes (``<lake>/fits/steplaw.json``)."""


@dataclass(frozen=True)
class ResolvedLaw:
    """The scale law a plan uses, where it came from, and its bootstrap draws (if any)."""

    law: Any
    description: str
    draws: tuple = ()
    selection: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResolvedMixture:
    """The mixture law a plan uses and its trust region: the largest share of each source in
    the runs the law was fitted on (``None``: no limit beyond the sources' token caps)."""

    law: Any
    max_shares: dict[str, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


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
    if ls.kind == "leaderboard":
        board, board_location = read_leaderboard(spec, ls.experiment, lake)
        try:
            name = winner(board)
        except FitError as exc:
            raise SpecError(f"{spec.origin}: field 'law.experiment': {exc}") from exc
        fit_location = f"{board_location.rsplit('/', 1)[0]}/{name}.json"
        fit = _load_fit(spec, fit_location, lake, field_name="law.experiment")
        selection = law_selection(board, name, reason="leaderboard winner")
    else:
        fit_location = stored_fit_location(spec, ls.fit, lake, field_name="law.fit")
        fit = _load_fit(spec, ls.fit, lake, field_name="law.fit")
        selection = law_selection(fit.leaderboard, fit.name, reason="named by the spec")
    draws = tuple(fit.law_draws()) if fit.n_bootstrap and spec.draws else ()
    desc = f"stored fit {fit.name!r} ({fit_location}, {fit.n_runs} runs, data {fit.data_hash})"
    if selection is not None:
        desc += f"; {selection['summary']}"
    return ResolvedLaw(fit.law, desc, draws, selection)


def read_leaderboard(
    spec: PlanSpec, experiment: str, lake: str | Path | None
) -> tuple[dict[str, Any], str]:
    """``(board, location)`` of the law leaderboard ``<lake>/fits/<experiment>-leaderboard.json``
    (``experiment`` may also be a path to a leaderboard JSON).

    Raises ``SpecError`` naming the leaderboards the lake holds when there is none.
    """
    field_name = "law.experiment"
    if experiment.endswith(".json") or "/" in experiment:
        location = stored_fit_location(spec, experiment, lake, field_name=field_name)
    elif lake is None:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': the leaderboard of {experiment!r} lives in a "
            "lake; pass --lake DIR"
        )
    else:
        location = leaderboard_path(str(lake), experiment)
    try:
        with fsspec.open(location, "r", encoding="utf-8") as handle:
            board = json.loads(handle.read())
    except FileNotFoundError:
        folder = location.rsplit("/", 1)[0]
        present = _leaderboards_in(folder)
        raise SpecError(
            f"{spec.origin}: field '{field_name}': no law leaderboard for {experiment!r} "
            f"({location}); leaderboards in {folder}: {', '.join(present) or 'none'} (run "
            "`mixplan fit` on the experiment, or name a fit with law.fit)"
        ) from None
    except (OSError, ValueError) as exc:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': cannot read {location}: {exc}"
        ) from exc
    if not isinstance(board, dict) or not isinstance(board.get("entries"), list):
        raise SpecError(f"{spec.origin}: field '{field_name}': {location} is not a law leaderboard")
    return board, location


def _leaderboards_in(folder: str) -> list[str]:
    """Experiments with a leaderboard in ``folder`` (a fits folder, local or URL)."""
    suffix = "-leaderboard.json"
    try:
        fs, path = fsspec.core.url_to_fs(folder)
        names = [str(p).rsplit("/", 1)[-1] for p in fs.glob(f"{path}/*{suffix}")]
    except (OSError, ValueError):
        return []
    return sorted(n.removesuffix(suffix) for n in names)


def law_selection(board: dict[str, Any], fit_name: str, *, reason: str) -> dict[str, Any] | None:
    """Which law a plan uses and why: its leaderboard entry (rank, held-out score, coverage)
    and the runner-up's score; ``None`` when the fit has no leaderboard or is not on it."""
    entries = (board or {}).get("entries") or []
    chosen = next((e for e in entries if e.get("fit") == fit_name), None)
    if chosen is None:
        return None
    others = [e for e in entries if e is not chosen and e.get("n_origins")]
    score = float(chosen.get("score", float("nan")))
    summary = (
        f"{reason}: {chosen['law']} ranks {chosen.get('rank')} of {len(entries)} on the "
        f"{board.get('name')!r} leaderboard, held-out error {score:.2%} over "
        f"{chosen.get('n_origins')} origins"
    )
    if others:
        summary += f" (next: {others[0]['law']} {float(others[0]['score']):.2%})"
    return {
        "experiment": board.get("name"),
        "law": chosen["law"],
        "fit": fit_name,
        "reason": reason,
        "rank": chosen.get("rank"),
        "score": score,
        "n_origins": chosen.get("n_origins"),
        "coverage": chosen.get("coverage"),
        "winner": board.get("winner"),
        "board": [
            {"law": e["law"], "rank": e.get("rank"), "score": e.get("score")} for e in entries
        ],
        "summary": summary,
    }


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
    if lake is not None and (choice == "fitted" or spec.law.kind in ("fit", "leaderboard")):
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
    provenance = {k: payload[k] for k in MIXTURE_PROVENANCE if k in payload}
    return ResolvedMixture(law, shares, provenance)


def resolve_downstream(spec: PlanSpec, *, lake: str | Path | None = None) -> dict[str, Any]:
    """The loss a ``budget.target_downstream`` error needs, from its stored downstream fit.

    Returns
    -------
    dict
        ``metric``, ``error``, ``fit`` (location), ``law`` (its name), ``required_loss`` (NaN
        when no loss reaches the error), ``loss_range`` (the fitted runs' losses) and
        ``met_at_any_loss`` (no loss needed: the law's error stays below the target) and
        ``warning`` (``""``, or why the required loss is an extrapolation).
    """
    target = spec.downstream
    field_name = "budget.target_downstream.fit"
    location, text = read_stored_fit(spec, target.fit, lake, field_name=field_name)
    try:
        fit = json.loads(text)
        if not isinstance(fit, dict) or fit.get("kind", "downstream") != "downstream":
            raise ValueError(f"kind {fit.get('kind') if isinstance(fit, dict) else None!r}")
        law = downstream_law(fit)
        required = float(np.asarray(law.required_loss(target.error)))
        low, high = (float(x) for x in fit["loss_range"])
        # the error at a loss far above every fitted run's: the law's ceiling
        ceiling = float(np.asarray(law.predict(10.0 * max(high, 1.0))))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise SpecError(
            f"{spec.origin}: field '{field_name}': {location} is not a stored downstream fit "
            f"({exc}); write one with `mixplan fit --target METRIC`"
        ) from exc
    metric = fit.get("metric")
    if target.metric is not None and target.metric != metric:
        raise SpecError(
            f"{spec.origin}: field 'budget.target_downstream.metric': {target.metric!r}, but "
            f"{location} relates the loss to {metric!r}; name that metric's fit"
        )
    warning = ""
    if np.isfinite(required) and not low <= required <= high:
        side = "below the lowest" if required < low else "above the highest"
        warning = (
            f"the downstream target needs loss {required:.4g}, {side} loss of the runs the "
            f"loss -> error law was fitted on ({low:.4g} .. {high:.4g}): an extrapolation of "
            "that law; check it on a run near this loss"
        )
    return {
        "metric": metric,
        "relation": fit.get("target"),
        "error": target.error,
        "fit": location,
        "law": law.name,
        "required_loss": required,
        "met_at_any_loss": not np.isfinite(required) and target.error >= ceiling,
        "loss_range": [low, high],
        "warning": warning,
    }
