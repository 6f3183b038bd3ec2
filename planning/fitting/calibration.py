"""Prediction intervals calibrated on extrapolation, with their coverage measured honestly.

A fit's raw uncertainty (the run-clustered delta-method error of the curve plus run noise,
:class:`~mixplan.planning.fitting.rolling.Uncertainty`) has the right *shape* (it grows with
the distance past the data) but not the right *size*: a law that is slightly wrong, or runs
whose noise is correlated, make extrapolation errors larger than any in-sample estimate says.
Extrapolation error also grows with the distance past the data faster than the curve's standard
error does (misspecification does not average out), so the scale is widened linearly in decades
of compute past the fit's largest run: ``width = scale * (1 + w d)``, ``d = log10(C / C_max)``
(zero inside the data), ``w = DISTANCE_WEIGHT``.

A law can also be systematically off when it extrapolates (Tao's law fitted on small runs
predicts every larger run's loss too high): the backtests show it as residuals of one sign. The
*drift* ``b`` is the median residual of the calibration origins' held-out runs, kept only when
it is significant (more than :data:`DRIFT_SIGNIFICANCE` standard errors of a median from zero;
otherwise 0, so a law without drift keeps intervals centred on its prediction). It is learned
per experiment and law from its own backtests, never a constant.

The width is then calibrated conformally on the rolling-origin backtests: every held-out run
gives a score ``|residual - b| / width``; the interval at level ``p`` is
``prediction + b +- k * width`` on the law's residual scale (log loss for nats, raw loss for
Tao's negative unigram-normalised loss), where ``k`` is the split-conformal quantile of the
scores (rank ``ceil((n + 1) p)``) over the ``WINDOW`` latest origins (the extrapolations most
like the one asked for). With a drift the interval need not contain the law's point
prediction: the backtests say the truth lies to one side of it.

Measured coverage never uses a run to calibrate the interval that is scored on it: for each
origin, ``k`` is calibrated only on the ``WINDOW`` earlier origins' predictions of runs *below*
that origin's cut-off (what a user fitting there would have had; the drift too), and then the
origin's held-out runs are checked against their intervals. The pooled fraction covered is the
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

DRIFT_SIGNIFICANCE = 2.0
"""Standard errors of a median (``1.2533 sd / sqrt(n)``, normal errors) the median backtest
residual must exceed to count as a systematic extrapolation drift (about a 5% two-sided test)."""

MEDIAN_SE = 1.2533
"""Standard error of a sample median in units of ``sd / sqrt(n)`` (normal errors: sqrt(pi / 2))."""


@dataclass(frozen=True)
class Calibration:
    """A conformal width factor and how it was obtained."""

    level: float
    factor: float
    n_scores: int
    drift: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "level": self.level,
            "factor": self.factor,
            "n_scores": self.n_scores,
            "drift": self.drift,
        }


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


def extrapolation_drift(residuals: Sequence[float]) -> float:
    """The systematic part of backtest residuals: their median when it is significantly
    nonzero (beyond :data:`DRIFT_SIGNIFICANCE` standard errors of a median), else 0."""
    values = np.asarray(residuals, float)
    values = values[np.isfinite(values)]
    if values.size < MIN_SCORES:
        return 0.0
    median = float(np.median(values))
    stderr = MEDIAN_SE * float(np.std(values, ddof=1)) / math.sqrt(values.size)
    return median if abs(median) > DRIFT_SIGNIFICANCE * stderr else 0.0


def _held_out(
    origins: Sequence[Mapping[str, Any]], below: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and widths (``scale x distance factor``) of the origins' held-out runs at or
    below ``below`` compute."""
    runs = [
        (run["residual"], run["scale"] * float(distance_factor(run["flops"], o["cutoff_flops"])))
        for o in origins
        for run in o.get("runs", [])
        if run["flops"] <= below and run["scale"] > 0
    ]
    pairs = np.asarray(runs, float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _drift_and_scores(
    origins: Sequence[Mapping[str, Any]], below: float = math.inf
) -> tuple[float, list[float]]:
    residuals, widths = _held_out(origins, below)
    drift = extrapolation_drift(residuals)
    return drift, (np.abs(residuals - drift) / widths).tolist()


def _ok(origins: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((o for o in origins if o.get("status") == "ok"), key=lambda o: o["quantile"])


def calibrate(origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL) -> Calibration:
    """The drift and width factor from the latest origins' held-out runs (for the final,
    full-data fit)."""
    drift, scores = _drift_and_scores(_ok(origins)[-WINDOW:])
    if len(scores) < MIN_SCORES:
        return Calibration(level=level, factor=math.nan, n_scores=len(scores))
    factor = conformal_quantile(scores, level)
    return Calibration(level=level, factor=factor, n_scores=len(scores), drift=drift)


def measured_coverage(
    origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL
) -> dict[str, Any]:
    """Coverage of calibrated ``level`` intervals on held-out runs, calibrated without them.

    Returns
    -------
    dict with ``level``, ``covered``, ``n`` (held-out run predictions scored), ``coverage``
    (``covered / n``, NaN when nothing could be scored), ``mean_width`` and ``median_width``
    (half-width on the residual scale) and ``origins`` (per scored origin: ``quantile``,
    ``factor``, ``drift``, ``covered``, ``n``).
    """
    usable = _ok(origins)
    covered = total = 0
    widths: list[float] = []
    per_origin = []
    for i, origin in enumerate(usable):
        cutoff = origin["cutoff_flops"]
        window = usable[max(0, i - WINDOW) : i]
        drift, calib = _drift_and_scores(window, below=cutoff)
        if len(calib) < MIN_SCORES:
            continue
        factor = conformal_quantile(calib, level)
        residuals, scales = _held_out([origin])
        half = factor * scales
        hits = int(np.sum(np.abs(residuals - drift) <= half))
        widths.extend(half.tolist())
        covered += hits
        total += residuals.size
        per_origin.append(
            {
                "quantile": origin["quantile"],
                "factor": factor,
                "drift": drift,
                "covered": hits,
                "n": int(residuals.size),
            }
        )
    return {
        "level": level,
        "covered": covered,
        "n": total,
        "coverage": covered / total if total else math.nan,
        "mean_width": float(np.mean(widths)) if widths else math.nan,
        "median_width": float(np.median(widths)) if widths else math.nan,
        "origins": per_origin,
    }


METHOD = (
    "split-conformal on rolling-origin backtests: |residual - drift| / (clustered delta-method "
    f"scale x (1 + {DISTANCE_WEIGHT:g} x decades past the data)), pooled over the latest origins; "
    "drift: the backtests' median residual when significantly nonzero"
)


def calibration_record(
    spec: FitSpec,
    data: FitData,
    theta: np.ndarray,
    origins: Sequence[Mapping[str, Any]],
    level: float = NOMINAL_LEVEL,
) -> dict[str, Any]:
    """What a fit stores to give calibrated intervals anywhere: the factor, the drift, the scores
    (any level), the full-data fit's :class:`~mixplan.planning.fitting.rolling.Uncertainty`, the
    compute of its largest run and the measured coverage (per-run detail dropped)."""
    _, scores = _drift_and_scores(_ok(origins)[-WINDOW:])
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
    The interval is centred on the prediction shifted by the record's drift (0 for records
    stored before drifts were learned).
    """
    pred = spec.predict(np.asarray(theta, float)[None], columns)[0]
    level = record.get("level", NOMINAL_LEVEL) if level is None else level
    scores = record.get("scores", [])
    factor = conformal_quantile(scores, level) if len(scores) >= MIN_SCORES else math.nan
    scale = Uncertainty.from_dict(record["uncertainty"]).scale(spec, theta, columns)
    half = factor * scale * distance_factor(flops, record["data_flops"])
    centre = pred + float(record.get("drift", 0.0))
    if spec.scale == "log":
        return np.exp(pred), np.exp(centre - half), np.exp(centre + half)
    return pred, centre - half, centre + half


def coverage_note(record: Mapping[str, Any]) -> str:
    """``"measured coverage 88% of 216 held-out runs"`` (or why there is none)."""
    coverage = record.get("coverage", {})
    if not coverage.get("n"):
        return "coverage not measurable (too few backtests)"
    return (
        f"measured coverage {coverage['coverage']:.0%} of {coverage['n']} held-out run predictions"
    )
