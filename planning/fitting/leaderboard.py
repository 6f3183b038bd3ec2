"""Choose the law by how well it extrapolates: a rolling-origin leaderboard per experiment.

Every law that applies to an experiment's columns is refitted at each origin (compute quantile
``q``: fit the runs below, predict the runs above; :mod:`~mixplan.planning.fitting.rolling`) and
scored by its mean relative error on the held-out runs, averaged over origins so that each
origin counts once. A law that could not be fitted at every origin the others managed ranks
after those that could. The board also carries each law's calibrated 90% interval factor and
its measured coverage (:mod:`~mixplan.planning.fitting.calibration`).

The stored form (``<lake>/fits/<experiment>-leaderboard.json``, :func:`leaderboard_path`) is
plain JSON; :func:`winner` reads the name of the fit to plan with from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from mixplan.planning.errors import FitError, MixplanError
from mixplan.planning.fitting.calibration import NOMINAL_LEVEL, calibrate, measured_coverage
from mixplan.planning.fitting.data import apply_outlier_rule, prepare_frame
from mixplan.planning.fitting.huber import DEFAULT_DELTA
from mixplan.planning.fitting.rolling import ORIGINS, rolling_origin
from mixplan.planning.fitting.specs import SPECS

SCALE_LAWS: tuple[str, ...] = ("chinchilla", "kaplan", "gadre", "muennighoff", "tao")
"""Laws of final loss against scale that compete on a leaderboard."""

LEADERBOARD_FORMAT = 1


def leaderboard_path(lake: str, name: str) -> str:
    """Where the leaderboard ``name`` lives: ``<lake>/fits/<name>-leaderboard.json``."""
    return f"{str(lake).rstrip('/')}/fits/{name}-leaderboard.json"


def applicable_laws(table: pl.DataFrame) -> list[str]:
    """The scale laws ``table``'s columns support (negative losses: only raw-scale laws).

    Muennighoff's law competes only when some run repeats data (tokens > unique tokens); Tao's
    when vocabulary parameters are logged.
    """
    cols = {c for c in table.columns if table[c].null_count() < table.height}
    negative = "loss" in cols and bool((table["loss"] <= 0).any())
    laws = []
    for name in SCALE_LAWS:
        spec = SPECS[name]
        if not set(spec.columns) <= cols or (negative and spec.scale == "log"):
            continue
        if name == "muennighoff" and not (table["tokens"] > 1.01 * table["unique_tokens"]).any():
            continue
        laws.append(name)
    return laws


def _summary(law: str, origins: list[dict[str, Any]], level: float) -> dict[str, Any]:
    per_origin = []
    for origin in origins:
        row = {k: origin.get(k) for k in ("quantile", "cutoff_flops", "status", "n_test_runs")}
        if origin.get("status") == "ok":
            errors = [
                abs(r["predicted"] - r["observed"]) / abs(r["observed"]) for r in origin["runs"]
            ]
            row["mean_relative_error"] = float(np.mean(errors))
            row["max_relative_error"] = float(np.max(errors))
        per_origin.append(row)
    scored = [o["mean_relative_error"] for o in per_origin if "mean_relative_error" in o]
    calibration = calibrate(origins, level)
    return {
        "law": law,
        "score": float(np.mean(scored)) if scored else math.inf,
        "n_origins": len(scored),
        "origins": per_origin,
        "calibration": calibration.to_dict(),
        "coverage": measured_coverage(origins, level),
    }


def leaderboard(
    table: pl.DataFrame,
    *,
    name: str,
    laws: Sequence[str] | None = None,
    quantiles: Sequence[float] = ORIGINS,
    outlier_rule: str = "none",
    delta: float = DEFAULT_DELTA,
    level: float = NOMINAL_LEVEL,
    fit_names: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Score every applicable law on rolling-origin backtests of ``table``.

    Parameters
    ----------
    table : a fit table (:func:`mixplan.planning.fitting.recipes.fit_table`).
    name : what the board ranks (an experiment, or ``experiment@domain``).
    laws : laws to compare (default :func:`applicable_laws`).
    fit_names : law -> name of its stored fit (default ``<name>-<law>``); recorded per entry.

    Returns
    -------
    board, origins : the JSON-ready board (``name``, ``quantiles``, ``level``, ``entries``
        best first, each with ``law``, ``rank``, ``score``, ``fit``, ``origins``,
        ``calibration``, ``coverage``, and ``winner``) and, per law, the full rolling-origin
        results (held-out runs included) that calibrate that law's fit.
    """
    names = list(laws) if laws is not None else applicable_laws(table)
    if not names:
        raise FitError(f"{name}: no scale law applies to columns {table.columns}")
    frame = apply_outlier_rule(table, outlier_rule)
    entries, all_origins = [], {}
    for law in names:
        try:
            data = prepare_frame(frame, SPECS[law])
            origins = rolling_origin(SPECS[law], data, quantiles=quantiles, delta=delta)
        except MixplanError as err:
            origins = [{"quantile": q, "status": f"failed: {err}"} for q in quantiles]
        all_origins[law] = origins
        entry = _summary(law, origins, level)
        entry["fit"] = (fit_names or {}).get(law, f"{name}-{law}")
        entries.append(entry)
    most = max(e["n_origins"] for e in entries)
    entries.sort(key=lambda e: (e["n_origins"] < most or e["n_origins"] == 0, e["score"]))
    for rank, entry in enumerate(entries, start=1):
        entry["rank"] = rank
    board = {
        "format_version": LEADERBOARD_FORMAT,
        "name": name,
        "quantiles": [float(q) for q in quantiles],
        "level": level,
        "score": "mean over origins of the mean relative error of held-out runs' final loss",
        "entries": entries,
        "winner": entries[0]["law"] if entries[0]["n_origins"] else None,
    }
    return board, all_origins


def winner(board: Mapping[str, Any]) -> str:
    """The name of the stored fit to plan with: the best-ranked law's fit on ``board``.

    Raises :class:`FitError` when no law could be backtested (the board names none).
    """
    best = board.get("winner")
    if best is None:
        raise FitError(
            f"leaderboard {board.get('name')!r} has no winner: no law could be backtested "
            "(too few runs per compute quantile); name a law in the spec instead"
        )
    return next(e["fit"] for e in board["entries"] if e["law"] == best)
