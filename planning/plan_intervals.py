"""Step 6 of a plan: intervals on the decisions, the plan re-solved under every bootstrap draw.

Each draw goes through the same allocation core, at the same limits, as the point plan; the
vocabulary is re-split at the point plan's width, the mixture re-planned under the draw's scale
law. An interval that would miss the point plan (a skewed bootstrap distribution) is widened to
include it and says so (``widened``): an interval never excludes the plan it describes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mixplan.planning.plan_allocate import allocate, loss_model
from mixplan.planning.plan_mixture import mixture_intervals
from mixplan.planning.plan_model import INTERVAL
from mixplan.planning.plan_vocabulary import split_vocabulary
from mixplan.planning.programs.allocation import Allocation
from mixplan.planning.programs.mixture import MixtureProgram
from mixplan.planning.spec import PlanSpec

MAX_VOCAB_DRAWS = 200


def plan_intervals(
    spec: PlanSpec,
    draws: tuple,
    point: Allocation,
    t_inf: float,
    *,
    vocab_width: float | None = None,
    point_vocab: float | None = None,
    mixture_program: MixtureProgram | None = None,
) -> tuple[dict[str, Any], int]:
    """5 / 50 / 95% of N, D, loss, D/N, FLOPs (V, mixture) over the draws; and how many solved.

    Parameters
    ----------
    spec
        The spec (its limits and mode apply to every draw).
    draws
        Bootstrap draws of the scale law.
    point
        The point plan's allocation (included as a row).
    t_inf
        Inference tokens of the spec.
    vocab_width, point_vocab
        The point plan's width and vocabulary size, when a vocabulary is planned.
    mixture_program
        The built mixture program, when a mixture is planned.
    """
    if not draws:
        return {}, 0
    rows, solved = [], []
    for draw in draws:
        r = allocate(spec, loss_model(spec, draw), t_inf, flops=point.budget_flops)
        if r.ok:
            rows.append((r.params, r.tokens, r.loss))
            solved.append(draw)
    if not rows:
        return {}, 0
    arr = np.array(rows)
    columns = {
        "params": arr[:, 0],
        "tokens": arr[:, 1],
        "loss": arr[:, 2],
        "tokens_per_param": arr[:, 1] / arr[:, 0],
        "train_flops": 6 * arr[:, 0] * arr[:, 1],
    }
    if vocab_width is not None and spec.vocabulary is not None:
        vmin, vmax = spec.vocabulary
        sizes = []
        for n, d, _ in rows[:MAX_VOCAB_DRAWS]:
            split = split_vocabulary(n, d, min_vocab=vmin, max_vocab=vmax, width=vocab_width)
            sizes.append(split.vocab_size if split is not None else np.nan)
        columns["vocab_size"] = np.array(sizes)
    points = {
        "params": point.params,
        "tokens": point.tokens,
        "loss": point.loss,
        "tokens_per_param": point.tokens_per_param,
        "train_flops": point.train_flops,
        "vocab_size": point_vocab,
    }
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if not np.any(np.isfinite(values)):
            continue
        low, median, high = (float(v) for v in np.nanpercentile(values, INTERVAL))
        entry = {"low": low, "median": median, "high": high}
        value = points.get(name)
        if value is not None and not low <= value <= high:
            entry.update(low=min(low, value), high=max(high, value), widened=True)
        out[name] = entry
    if mixture_program is not None:
        spread = mixture_intervals(spec, mixture_program, solved, [r[:2] for r in rows])
        if spread:
            out["mixture"] = spread
    return out, len(rows)
