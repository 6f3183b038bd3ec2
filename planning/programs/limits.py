"""The limits a plan must respect, in one frozen value every planning mode reads.

``Limits`` bounds the model (parameters), the data (tokens), the shape of the run (tokens per
parameter, both ways) and its cost (training FLOPs, wall-clock days at a given throughput). The
allocation core, the convex programs, the robust plan and the property tests all take the same
object, so a limit cannot be honoured by one mode and forgotten by another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property

from mixplan.planning.errors import SpecError

RTOL = 1e-6
"""Relative slack when checking a solved plan against its limits (solver round-off)."""


@dataclass(frozen=True)
class Limits:
    """Optional limits on a plan (``None``: no limit).

    Attributes
    ----------
    max_params
        Most parameters N (memory, latency).
    max_tokens
        Most training tokens D (e.g. the sources' ``sum_j U_j * max_epochs_j``).
    min_tokens_per_param, max_tokens_per_param
        Bounds on ``D / N``.
    max_train_flops
        Most training FLOPs ``6 N D``.
    max_days, train_flops_per_day
        Wall-clock limit and the delivered training FLOPs per day (GPUs x peak x MFU x 86,400);
        together they cap ``6 N D`` at ``max_days * train_flops_per_day``.
    """

    max_params: float | None = None
    max_tokens: float | None = None
    min_tokens_per_param: float | None = None
    max_tokens_per_param: float | None = None
    max_train_flops: float | None = None
    max_days: float | None = None
    train_flops_per_day: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(f"field 'limits.{f.name}': must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise SpecError(
                    f"field 'limits.{f.name}': must be a positive finite number, got {value!r}; "
                    "leave it out for no limit"
                )
            object.__setattr__(self, f.name, float(value))
        lo, hi = self.min_tokens_per_param, self.max_tokens_per_param
        if lo is not None and hi is not None and lo > hi:
            raise SpecError(
                f"field 'limits.min_tokens_per_param': {lo:g} exceeds max_tokens_per_param "
                f"{hi:g}; lower the minimum or raise the maximum"
            )
        if self.max_days is not None and self.train_flops_per_day is None:
            raise SpecError(
                "field 'limits.max_days': a wall-clock limit needs the training throughput "
                "([training] gpu, gpus and mfu)"
            )

    @cached_property
    def train_flops_cap(self) -> float | None:
        """The binding cap on ``6 N D``: the smaller of ``max_train_flops`` and the wall clock."""
        caps = [c for c in (self.max_train_flops, self.wall_clock_flops) if c is not None]
        return min(caps) if caps else None

    @cached_property
    def wall_clock_flops(self) -> float | None:
        """Training FLOPs that fit in ``max_days`` (``None`` without a wall-clock limit)."""
        if self.max_days is None or self.train_flops_per_day is None:
            return None
        return self.max_days * self.train_flops_per_day

    def violations(self, params: float, tokens: float, *, rtol: float = RTOL) -> list[str]:
        """Names of the limits that ``(params, tokens)`` breaks (beyond ``rtol``)."""
        ratio = tokens / params
        checks = {
            "max_params": (params, self.max_params, 1),
            "max_tokens": (tokens, self.max_tokens, 1),
            "min_tokens_per_param": (ratio, self.min_tokens_per_param, -1),
            "max_tokens_per_param": (ratio, self.max_tokens_per_param, 1),
            "train_flops": (6 * params * tokens, self.train_flops_cap, 1),
        }
        out = []
        for name, (value, bound, sign) in checks.items():
            if bound is None:
                continue
            if sign > 0 and value > bound * (1 + rtol):
                out.append(name)
            if sign < 0 and value < bound * (1 - rtol):
                out.append(name)
        return out

    def as_kwargs(self) -> dict[str, float | None]:
        """The limits as the keyword arguments of the cvxpy budget / loss-target programs."""
        return {
            "max_params": self.max_params,
            "max_tokens": self.max_tokens,
            "min_tokens_per_param": self.min_tokens_per_param,
            "max_tokens_per_param": self.max_tokens_per_param,
            "max_train_flops": self.train_flops_cap,
        }
