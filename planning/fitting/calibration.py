"""Prediction intervals calibrated on extrapolation, with their coverage measured honestly.

A fit's raw uncertainty (the run-clustered delta-method error of the curve plus run noise,
:class:`~mixplan.planning.fitting.rolling.Uncertainty`) has the right *shape* (it grows with
the distance past the data) but not the right *size*: a law that is slightly wrong, or runs
whose noise is correlated, make extrapolation errors larger than any in-sample estimate says.
Extrapolation error also grows with the distance past the data faster than the curve's standard
error does (misspecification does not average out), so the scale is widened linearly in decades
of compute past the fit's largest run: ``width = scale * (1 + w d)``, ``d = log10(C / C_max)``
(zero inside the data), ``w = DISTANCE_WEIGHT``. The width is then calibrated conformally on
the rolling-origin backtests: every held-out run gives a score ``|residual| / width``; the
interval at level ``p`` is ``prediction +- k * width`` on the law's residual scale (log loss
for nats), where ``k`` is the split-conformal quantile of the scores (rank ``ceil((n + 1) p)``)
over the ``WINDOW`` latest origins (the extrapolations most like the one asked for).

Measured coverage never uses a run to calibrate the interval that is scored on it: for each
origin, ``k`` is calibrated only on the ``WINDOW`` earlier origins' predictions of runs *below*
that origin's cut-off (what a user fitting there would have had), and then the origin's
held-out runs are checked against their intervals. The pooled fraction covered is the
measured coverage reported next to every calibrated interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixplan.planning.fitting.data import FitData, run_flops
from mixplan.planning.fitting.rolling import Uncertainty, uncertainty
from mixplan.planning.fitting.specs import Columns, FitSpec

NOMINAL_LEVEL = 0.9
"""The level of the calibrated prediction intervals mixplan reports."""

DISTANCE_WEIGHT = 2.0
"""Growth of the width per decade past the data, in units of the in-data scale (one constant
for every law and data set: at 2, a prediction one decade out is three times as uncertain as
one inside the data)."""

WINDOW = 2
"""Origins a calibration pools: the latest ones (closest to the extrapolation it serves)."""

MIN_SCORES = 5
"""Fewest held-out runs a calibration needs (fewer: no calibrated interval, say so)."""


@dataclass(frozen=True)
class Calibration:
    """A conformal width factor and how it was obtained."""

    level: float
    factor: float
    n_scores: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"level": self.level, "factor": self.factor, "n_scores": self.n_scores}


def conformal_quantile(scores: Sequence[float], level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest score.

    When that rank exceeds ``n`` (too few scores for the level) the largest score is used,
    which under-covers slightly; callers report the measured coverage, which shows it.
    """
    values = np.sort(np.asarray(scores, float))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    rank = math.ceil((values.size + 1) * level)
    return float(values[min(rank, values.size) - 1])


def distance_factor(flops: np.ndarray | float, data_flops: float) -> np.ndarray:
    """``1 + w d`` with ``d`` the decades of compute past ``data_flops`` (0 inside the data)
    and ``w`` :data:`DISTANCE_WEIGHT`."""
    ratio = np.asarray(flops, float) / data_flops
    return 1.0 + DISTANCE_WEIGHT * np.log10(np.maximum(ratio, 1.0))


def _scores(origin: Mapping[str, Any], below: float = math.inf) -> list[float]:
    top = origin["cutoff_flops"]
    return [
        abs(run["residual"]) / (run["scale"] * float(distance_factor(run["flops"], top)))
        for run in origin.get("runs", [])
        if run["flops"] <= below and run["scale"] > 0
    ]


def _ok(origins: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((o for o in origins if o.get("status") == "ok"), key=lambda o: o["quantile"])


def calibrate(origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL) -> Calibration:
    """The width factor from every origin's held-out runs (for the final, full-data fit)."""
    scores = [s for origin in _ok(origins)[-WINDOW:] for s in _scores(origin)]
    if len(scores) < MIN_SCORES:
        return Calibration(level=level, factor=math.nan, n_scores=len(scores))
    return Calibration(level=level, factor=conformal_quantile(scores, level), n_scores=len(scores))


def measured_coverage(
    origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL
) -> dict[str, Any]:
    """Coverage of calibrated ``level`` intervals on held-out runs, calibrated without them.

    Returns
    -------
    dict with ``level``, ``covered``, ``n`` (held-out run predictions scored), ``coverage``
    (``covered / n``, NaN when nothing could be scored), ``mean_width`` (mean half-width on the
    residual scale) and ``origins`` (per scored origin: ``quantile``, ``factor``, ``covered``,
    ``n``).
    """
    usable = _ok(origins)
    covered = total = 0
    widths: list[float] = []
    per_origin = []
    for i, origin in enumerate(usable):
        cutoff = origin["cutoff_flops"]
        window = usable[max(0, i - WINDOW) : i]
        calib = [s for earlier in window for s in _scores(earlier, below=cutoff)]
        if len(calib) < MIN_SCORES:
            continue
        factor = conformal_quantile(calib, level)
        runs = origin["runs"]
        half = [factor * r["scale"] * float(distance_factor(r["flops"], cutoff)) for r in runs]
        hits = sum(abs(r["residual"]) <= h for r, h in zip(runs, half, strict=True))
        widths.extend(half)
        covered += hits
        total += len(runs)
        per_origin.append(
            {"quantile": origin["quantile"], "factor": factor, "covered": hits, "n": len(runs)}
        )
    return {
        "level": level,
        "covered": covered,
        "n": total,
        "coverage": covered / total if total else math.nan,
        "mean_width": float(np.mean(widths)) if widths else math.nan,
        "origins": per_origin,
    }


METHOD = (
    "split-conformal on rolling-origin backtests: |residual| / (clustered delta-method scale x "
    f"(1 + {DISTANCE_WEIGHT:g} x decades past the data)), pooled over the latest origins"
)


def calibration_record(
    spec: FitSpec,
    data: FitData,
    theta: np.ndarray,
    origins: Sequence[Mapping[str, Any]],
    level: float = NOMINAL_LEVEL,
) -> dict[str, Any]:
    """What a fit stores to give calibrated intervals anywhere: the factor, the scores (any
    level), the full-data fit's :class:`~mixplan.planning.fitting.rolling.Uncertainty`, the
    compute of its largest run and the measured coverage (per-run detail dropped)."""
    usable = _ok(origins)[-WINDOW:]
    scores = [s for origin in usable for s in _scores(origin)]
    calib = calibrate(origins, level)
    coverage = measured_coverage(origins, level)
    return {
        "method": METHOD,
        **calib.to_dict(),
        "scores": scores,
        "uncertainty": uncertainty(spec, data, theta).to_dict(),
        "data_flops": float(np.max(run_flops(data))),
        "coverage": coverage,
        "origins": [
            {k: o.get(k) for k in ("quantile", "cutoff_flops", "status", "n_test_runs")}
            for o in origins
        ],
    }


def prediction_interval(
    spec: FitSpec,
    theta: np.ndarray,
    record: Mapping[str, Any],
    columns: Columns,
    flops: np.ndarray,
    level: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point prediction and calibrated ``level`` interval of the loss at the rows of
    ``columns`` (default: the record's level); NaN bounds when the fit could not be calibrated.
    """
    pred = spec.predict(np.asarray(theta, float)[None], columns)[0]
    level = record.get("level", NOMINAL_LEVEL) if level is None else level
    scores = record.get("scores", [])
    factor = conformal_quantile(scores, level) if len(scores) >= MIN_SCORES else math.nan
    scale = Uncertainty.from_dict(record["uncertainty"]).scale(spec, theta, columns)
    half = factor * scale * distance_factor(flops, record["data_flops"])
    if spec.scale == "log":
        return np.exp(pred), np.exp(pred - half), np.exp(pred + half)
    return pred, pred - half, pred + half


def coverage_note(record: Mapping[str, Any]) -> str:
    """``"measured coverage 88% of 216 held-out runs"`` (or why there is none)."""
    coverage = record.get("coverage", {})
    if not coverage.get("n"):
        return "coverage not measurable (too few backtests)"
    return (
        f"measured coverage {coverage['coverage']:.0%} of {coverage['n']} held-out run predictions"
    )
