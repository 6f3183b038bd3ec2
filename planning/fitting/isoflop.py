"""IsoFLOP fits: Chinchilla's approaches 1 and 2 for ``N* ~ C^a`` and ``D* ~ C^b``.

Runs are grouped into compute budgets (isoFLOP slices): sorted by ``log10 C``, a new slice
starts where the gap to the previous run exceeds ``gap`` decades or the slice would span more
than ``span`` decades. A slice is used when it holds at least ``MIN_SLICE_RUNS`` runs of
``MIN_SLICE_SIZES`` distinct sizes; its budget is the geometric mean of its runs' compute.

- Approach 1 (per-budget minima): the lowest-loss run of each slice gives ``N*``.
- Approach 2 (Hoffmann et al.'s isoFLOP profiles): a parabola of loss in ``log N`` per slice;
  its vertex gives ``N*`` (slices whose parabola opens downwards, or whose vertex lies outside
  the slice's sizes, are dropped).

Then ``log N* = a log C + c`` by least squares over slices, and ``D* = C / (6 N*)`` so
``b = 1 - a`` under the ``6ND`` convention. Intervals: percentile bootstrap by run (runs are
resampled, the slices refitted). The parametric law's implied exponents are
``beta / (alpha + beta)`` and ``alpha / (alpha + beta)`` (:func:`implied_exponents`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_SLICE_RUNS = 4
MIN_SLICE_SIZES = 3
MIN_SLICES = 3
DEFAULT_GAP = 0.05
DEFAULT_SPAN = 0.2


def isoflop_slices(
    flops: np.ndarray,
    params: np.ndarray,
    *,
    gap: float = DEFAULT_GAP,
    span: float = DEFAULT_SPAN,
) -> list[np.ndarray]:
    """Index arrays of the usable isoFLOP slices (see the module docstring), smallest first."""
    log_c = np.log10(np.asarray(flops, float))
    order = np.argsort(log_c)
    slices: list[list[int]] = []
    for i in order:
        if (
            slices
            and log_c[i] - log_c[slices[-1][-1]] <= gap
            and (log_c[i] - log_c[slices[-1][0]] <= span)
        ):
            slices[-1].append(int(i))
        else:
            slices.append([int(i)])
    keep = []
    for members in slices:
        idx = np.array(members)
        n_sizes = np.unique(np.round(np.log(params[idx]), 3)).size
        if idx.size >= MIN_SLICE_RUNS and n_sizes >= MIN_SLICE_SIZES:
            keep.append(idx)
    return keep


def _optimum(log_n: np.ndarray, loss: np.ndarray, weights: np.ndarray, approach: int) -> float:
    """``log N*`` of one slice (NaN when approach 2's parabola has no usable vertex)."""
    present = weights > 0
    if approach == 1:
        return float(log_n[present][np.argmin(loss[present])])
    if np.unique(np.round(log_n[present], 3)).size < 3:
        return math.nan
    c2, c1, _ = np.polyfit(log_n, loss, 2, w=np.sqrt(weights))
    if c2 <= 0:
        return math.nan
    vertex = -c1 / (2 * c2)
    inside = log_n[present].min() <= vertex <= log_n[present].max()
    return float(vertex) if inside else math.nan


def _exponent(
    slices: Sequence[np.ndarray],
    flops: np.ndarray,
    log_n: np.ndarray,
    loss: np.ndarray,
    weights: np.ndarray,
    approach: int,
) -> tuple[float, float, list[tuple[float, float]]]:
    """``(a, intercept, [(budget, N*), ...])`` from the slices; NaN when too few slices."""
    points = []
    for idx in slices:
        w = weights[idx]
        if np.count_nonzero(w) < MIN_SLICE_SIZES:
            continue
        opt = _optimum(log_n[idx], loss[idx], w, approach)
        if np.isfinite(opt):
            budget = float(np.exp(np.mean(np.log(flops[idx]))))
            points.append((budget, float(np.exp(opt))))
    if len(points) < MIN_SLICES:
        return math.nan, math.nan, points
    c, n = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    a, intercept = np.polyfit(c, n, 1)
    return float(a), float(intercept), points


def isoflop_fits(
    flops: np.ndarray,
    params: np.ndarray,
    loss: np.ndarray,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.9,
    gap: float = DEFAULT_GAP,
    span: float = DEFAULT_SPAN,
) -> dict[str, Any]:
    """Approaches 1 and 2 on one row per run, with percentile bootstrap intervals by run.

    Returns
    -------
    dict with ``n_slices``, ``budgets`` and, per approach (``"approach_1"``,
    ``"approach_2"``): ``a``, ``b`` (``1 - a``), ``a_interval``, ``b_interval`` (at
    ``level``), ``intercept`` (of ``log N*``), ``optima`` (``[budget, N*]`` per slice) and
    ``status``. ``status`` at the top says why nothing was fitted when the runs form fewer than
    ``MIN_SLICES`` slices.
    """
    flops, params, loss = (np.asarray(x, float) for x in (flops, params, loss))
    slices = isoflop_slices(flops, params, gap=gap, span=span)
    out: dict[str, Any] = {
        "n_slices": len(slices),
        "budgets": [float(np.exp(np.mean(np.log(flops[i])))) for i in slices],
        "level": level,
        "convention": "D* = C / (6 N*), so b = 1 - a",
    }
    if len(slices) < MIN_SLICES:
        out["status"] = (
            f"skipped: the runs form {len(slices)} isoFLOP slices with >= {MIN_SLICE_RUNS} runs "
            f"of >= {MIN_SLICE_SIZES} sizes (need {MIN_SLICES})"
        )
        return out
    out["status"] = "ok"
    log_n = np.log(params)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(flops.size, np.full(flops.size, 1.0 / flops.size), size=n_bootstrap)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    for approach in (1, 2):
        a, intercept, points = _exponent(slices, flops, log_n, loss, np.ones_like(loss), approach)
        draws = np.array(
            [_exponent(slices, flops, log_n, loss, c.astype(float), approach)[0] for c in counts]
        )
        finite = draws[np.isfinite(draws)]
        interval = (
            [float(x) for x in np.percentile(finite, [lo_q, hi_q])]
            if finite.size >= 10
            else [math.nan, math.nan]
        )
        out[f"approach_{approach}"] = {
            "status": "ok" if np.isfinite(a) else f"skipped: {len(points)} usable slices",
            "a": a,
            "b": 1 - a,
            "a_interval": interval,
            "b_interval": [1 - interval[1], 1 - interval[0]],
            "intercept": intercept,
            "optima": [list(p) for p in points],
            "n_bootstrap": int(finite.size),
        }
    return out


def implied_exponents(law_params: Mapping[str, Any]) -> tuple[float, float]:
    """``(a, b) = (beta / (alpha + beta), alpha / (alpha + beta))`` of a Chinchilla-form law."""
    alpha, beta = float(law_params["alpha"]), float(law_params["beta"])
    return beta / (alpha + beta), alpha / (alpha + beta)


def compare_with_parametric(
    iso: Mapping[str, Any],
    law_params: Mapping[str, Any],
    draws: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``iso`` plus ``parametric``: the Chinchilla-form fit's implied ``a``, ``b`` with
    percentile intervals from its bootstrap ``draws`` (``alpha``, ``beta`` arrays), at
    ``iso``'s level."""
    a, b = implied_exponents(law_params)
    entry: dict[str, Any] = {"a": a, "b": b, "a_interval": [math.nan, math.nan]}
    if draws is not None and len(draws.get("alpha", ())) >= 10:
        alpha, beta = np.asarray(draws["alpha"], float), np.asarray(draws["beta"], float)
        implied = beta / (alpha + beta)
        level = float(iso.get("level", 0.9))
        lo, hi = np.nanpercentile(implied, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
        entry["a_interval"] = [float(lo), float(hi)]
    entry["b_interval"] = [1 - entry["a_interval"][1], 1 - entry["a_interval"][0]]
    return {**iso, "parametric": entry}
