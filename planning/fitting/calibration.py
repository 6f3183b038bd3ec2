"""Prediction intervals calibrated on extrapolation, with their coverage measured honestly.

A fit's raw uncertainty (the run-clustered delta-method error of the curve plus run noise,
:class:`~mixplan.planning.fitting.rolling.Uncertainty`) has the right *shape* (it grows with
the distance past the data) but not the right *size*: a law that is slightly wrong, or runs
whose noise is correlated, make extrapolation errors larger than any in-sample estimate says.
Extrapolation error can also grow with the distance past the data faster than the curve's
standard error does (misspecification does not average out), so the scale is widened linearly in
decades of compute past the fit's largest run: ``width = scale * (1 + w d)``,
``d = log10(C / C_max)`` (zero inside the data).

The *widening* ``w`` is learned per experiment and law by backtesting the calibration itself
(:func:`learn_widening`): for each candidate ``w`` on a grid from 0 to :data:`MAX_WIDENING`,
every earlier origin is given the interval a user would have calibrated there (from the origins
before it) and checked against its held-out runs; ``w`` is the smallest widening whose intervals
covered at least the nominal level. A law whose errors do not grow past the data gets ``w = 0``;
one whose errors grow fast gets a large ``w``. The learned rate holds as far past the data as
those checks reached (its *reach*, in decades); beyond it, and until the backtests hold
:data:`MIN_NESTED` checks at all, the width grows at the grid's most conservative rate,
:data:`MAX_WIDENING` (wide until learned).

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
origin, the widening is learned, and ``k`` and the drift calibrated, only on earlier origins'
predictions of runs *below* that origin's cut-off (what a user fitting there would have had),
and then the origin's held-out runs are checked against their intervals. The pooled fraction
covered is the measured coverage reported next to every calibrated interval.
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

MAX_WIDENING = 16.0
"""Largest widening :func:`learn_widening` considers (growth of the width per decade past the
data in units of the in-data scale: at 16 a prediction one decade out is 17 times as uncertain
as one inside the data), and the widening used until the backtests can learn one."""

WIDENING_STEP = 0.25
"""Spacing of the widening grid."""

LEGACY_WIDENING = 2.0
"""The widening of calibration records stored before it was learned (one constant then, with
no reach)."""

WINDOW = 2
"""Origins a calibration pools: the latest ones (closest to the extrapolation it serves)."""

MIN_SCORES = 5
"""Fewest held-out runs a calibration needs (fewer: no calibrated interval, say so)."""

MIN_NESTED = 2 * MIN_SCORES
"""Fewest held-out runs the backtest of the calibration must check to learn a widening."""

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
    widening: Widening | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "level": self.level,
            "factor": self.factor,
            "n_scores": self.n_scores,
            "drift": self.drift,
            **(self.widening or Widening()).to_dict(),
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


@dataclass(frozen=True)
class Widening:
    """How the width grows past the data: ``rate`` per decade up to ``reach`` decades (as far
    as the backtests checked it), :data:`MAX_WIDENING` per decade beyond."""

    rate: float = MAX_WIDENING
    reach: float = 0.0
    learned: bool = False

    def growth(self, decades: np.ndarray | float) -> np.ndarray:
        """``1 + rate min(d, reach) + MAX_WIDENING max(d - reach, 0)`` at ``d`` decades of
        compute past the data (0 inside it)."""
        d = np.asarray(decades, float)
        within = np.minimum(d, self.reach)
        return 1.0 + self.rate * within + MAX_WIDENING * (d - within)

    def factor(self, flops: np.ndarray | float, data_flops: float) -> np.ndarray:
        """:meth:`growth` at the decades of compute ``flops`` lies past ``data_flops``."""
        return self.growth(np.log10(np.maximum(np.asarray(flops, float) / data_flops, 1.0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``widening``, ``widening_reach``, ``widening_learned``)."""
        return {
            "widening": self.rate,
            "widening_reach": self.reach,
            "widening_learned": self.learned,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Widening:
        """The widening a calibration record stores (legacy records: :data:`LEGACY_WIDENING`
        at any distance)."""
        if "widening" not in record:
            return cls(rate=LEGACY_WIDENING, reach=math.inf)
        return cls(
            float(record["widening"]),
            float(record.get("widening_reach", math.inf)),
            bool(record.get("widening_learned", False)),
        )


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


@dataclass(frozen=True)
class HeldOut:
    """An origin's held-out runs as arrays: residual, predictive scale, compute and decades of
    compute past the origin's cut-off."""

    cutoff_flops: float
    residual: np.ndarray
    scale: np.ndarray
    flops: np.ndarray
    decades: np.ndarray

    @classmethod
    def of(cls, origin: Mapping[str, Any]) -> HeldOut:
        """The held-out runs of a rolling-origin result (runs with a positive scale)."""
        rows = [
            (run["residual"], run["scale"], run["flops"])
            for run in origin.get("runs", [])
            if run["scale"] > 0
        ]
        values = np.asarray(rows, float).reshape(-1, 3)
        cutoff = float(origin["cutoff_flops"])
        decades = np.log10(np.maximum(values[:, 2] / cutoff, 1.0))
        return cls(cutoff, values[:, 0], values[:, 1], values[:, 2], decades)

    def below(self, flops: float) -> HeldOut:
        """The runs at or below ``flops`` compute."""
        keep = self.flops <= flops
        return HeldOut(
            self.cutoff_flops,
            self.residual[keep],
            self.scale[keep],
            self.flops[keep],
            self.decades[keep],
        )

    def widths(self, widening: Widening) -> np.ndarray:
        """``scale x distance factor`` of each run."""
        return self.scale * widening.growth(self.decades)


def _held_out(origins: Sequence[Mapping[str, Any]]) -> list[HeldOut]:
    return [HeldOut.of(o) for o in _ok(origins)]


def _drift_and_scores(
    pool: Sequence[HeldOut], widening: Widening, below: float = math.inf
) -> tuple[float, np.ndarray]:
    """The drift of the pooled runs at or below ``below`` compute and their scores."""
    runs = [h.below(below) for h in pool]
    residuals = np.concatenate([h.residual for h in runs]) if runs else np.zeros(0)
    widths = np.concatenate([h.widths(widening) for h in runs]) if runs else np.zeros(0)
    drift = extrapolation_drift(residuals)
    return drift, np.abs(residuals - drift) / widths


def _check(
    held_out: Sequence[HeldOut],
    i: int,
    widening: Widening,
    level: float,
    below: float = math.inf,
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray] | None:
    """Calibrate origin ``i``'s interval on the ``WINDOW`` origins before it (their runs below
    its cut-off) and check its held-out runs at or below ``below`` against it: the calibration
    (``factor``, ``drift``), whether each run was covered, the half-widths and the runs' decades
    past the cut-off; ``None`` when the calibration has fewer than :data:`MIN_SCORES` scores."""
    target = held_out[i]
    window = held_out[max(0, i - WINDOW) : i]
    drift, calib = _drift_and_scores(window, widening, below=target.cutoff_flops)
    if calib.size < MIN_SCORES:
        return None
    factor = conformal_quantile(calib, level)
    runs = target.below(below)
    half = factor * runs.widths(widening)
    covered = np.abs(runs.residual - drift) <= half
    return {"factor": factor, "drift": drift}, covered, half, runs.decades


def widening_grid() -> np.ndarray:
    """The widenings :func:`learn_widening` considers: 0 to :data:`MAX_WIDENING`."""
    return np.arange(0.0, MAX_WIDENING + WIDENING_STEP / 2, WIDENING_STEP)


def _nested_checks(
    held_out: Sequence[HeldOut], rate: float, level: float, below: float
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each run checked in the backtest of the calibration at widening ``rate`` was
    covered, and its decades past its origin's cut-off."""
    widening = Widening(rate=rate, reach=math.inf)
    checks = [_check(held_out, i, widening, level, below) for i in range(1, len(held_out))]
    done = [c for c in checks if c is not None]
    if not done:
        return np.zeros(0, bool), np.zeros(0)
    return np.concatenate([c[1] for c in done]), np.concatenate([c[3] for c in done])


def learn_widening(
    origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL, below: float = math.inf
) -> Widening:
    """The smallest widening rate whose calibrated intervals covered ``level`` in a backtest of
    the calibration (see the module docstring), using only held-out runs at or below ``below``
    compute (a later origin's cut-off, to learn what a user there would have learned), and its
    reach: the farthest distance past a cut-off those checks covered.

    Fewer than :data:`MIN_NESTED` runs checked: not learned, :data:`MAX_WIDENING` everywhere.
    """
    return _learn_widening(_held_out(origins), level, below)


def _learn_widening(held_out: Sequence[HeldOut], level: float, below: float) -> Widening:
    runs = [h for h in held_out if h.cutoff_flops < below]
    covered, decades = _nested_checks(runs, 0.0, level, below)
    if covered.size < MIN_NESTED:
        return Widening()
    reach = float(decades.max())
    if reach == 0.0:  # every check inside the data: the rate changes nothing
        return Widening(rate=0.0, reach=0.0, learned=True)
    rate = next(
        (
            float(rate)
            for rate in widening_grid()
            if _nested_checks(runs, float(rate), level, below)[0].mean() >= level
        ),
        MAX_WIDENING,
    )
    return Widening(rate=rate, reach=reach, learned=True)


def _ok(origins: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((o for o in origins if o.get("status") == "ok"), key=lambda o: o["quantile"])


def calibrate(origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL) -> Calibration:
    """The widening (learned on every origin), drift and width factor (from the latest
    origins' held-out runs) for the final, full-data fit."""
    held_out = _held_out(origins)
    widening = _learn_widening(held_out, level, math.inf)
    drift, scores = _drift_and_scores(held_out[-WINDOW:], widening)
    if scores.size < MIN_SCORES:
        return Calibration(level=level, factor=math.nan, n_scores=int(scores.size))
    return Calibration(
        level=level,
        factor=conformal_quantile(scores, level),
        n_scores=int(scores.size),
        drift=drift,
        widening=widening,
    )


def measured_coverage(
    origins: Sequence[Mapping[str, Any]], level: float = NOMINAL_LEVEL
) -> dict[str, Any]:
    """Coverage of calibrated ``level`` intervals on held-out runs, calibrated without them.

    Returns
    -------
    dict with ``level``, ``covered``, ``n`` (held-out run predictions scored), ``coverage``
    (``covered / n``, NaN when nothing could be scored), ``mean_width`` and ``median_width``
    (half-width on the residual scale) and ``origins`` (per scored origin: ``quantile``,
    ``widening``, ``widening_reach``, ``factor``, ``drift``, ``covered``, ``n``).
    """
    usable = _ok(origins)
    held_out = _held_out(usable)
    covered = total = 0
    widths: list[float] = []
    per_origin = []
    for i, origin in enumerate(usable):
        widening = _learn_widening(held_out, level, held_out[i].cutoff_flops)
        checked = _check(held_out, i, widening, level)
        if checked is None:
            continue
        calib, hit, half, _ = checked
        widths.extend(half.tolist())
        covered += int(hit.sum())
        total += hit.size
        per_origin.append(
            {
                "quantile": origin["quantile"],
                "widening": widening.rate,
                "widening_reach": widening.reach,
                **calib,
                "covered": int(hit.sum()),
                "n": int(hit.size),
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
    "scale x (1 + widening x decades past the data)), pooled over the latest origins; widening: "
    "the smallest rate that covered the nominal level in a backtest of the calibration, as far "
    f"as that backtest reached ({MAX_WIDENING:g} per decade beyond); drift: the backtests' "
    "median residual when significantly nonzero"
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
    calib = calibrate(origins, level)
    widening = calib.widening or Widening()
    _, scores = _drift_and_scores(_held_out(origins)[-WINDOW:], widening)
    coverage = measured_coverage(origins, level)
    return {
        "method": METHOD,
        **calib.to_dict(),
        "scores": scores.tolist(),
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
    widening = Widening.from_record(record)
    half = factor * scale * widening.factor(flops, record["data_flops"])
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


def widening_note(record: Mapping[str, Any]) -> str:
    """How the record's intervals were shaped, e.g. ``"width grows by 1.5 in-data widths per
    decade up to 2.4 decades past the data, 16 beyond (learned on the backtests); no drift"``."""
    widening = Widening.from_record(record)
    drift = float(record.get("drift", 0.0))
    drift_text = f"; drift {drift:+.3g} (residual scale)" if drift else "; no drift"
    if "widening" not in record:
        return (
            f"width grows by {widening.rate:g} in-data widths per decade past the data "
            f"(fixed){drift_text}"
        )
    if not widening.learned:
        return (
            f"width grows by {MAX_WIDENING:g} in-data widths per decade past the data (too few "
            f"backtests to learn a smaller rate){drift_text}"
        )
    return (
        f"width grows by {widening.rate:g} in-data widths per decade up to {widening.reach:.1f} "
        f"decades past the data, {MAX_WIDENING:g} beyond (learned on the backtests){drift_text}"
    )
