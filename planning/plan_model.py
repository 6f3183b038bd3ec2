"""What a plan is: the frozen `Plan` a spec turns into, and its JSON form."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mixplan.planning.explain import render_text
from mixplan.planning.programs.common import PlanStatus, frozen_instance, frozen_maker

INTERVAL = (5.0, 50.0, 95.0)
"""Percentiles reported over bootstrap draws (a 90% interval and the median)."""


class _Deferred:
    """A `Plan` field that may be computed on first read (what-ifs defer the vocabulary and
    the advice that depends on it: most callers of a what-if read N, D and the loss only).

    `Plan.deferring` leaves the deferred fields unset and keeps one function computing all of
    them; the first read of any runs it once and stores the values, so every reader (the
    JSON form, the report, equality, pickling) sees the numbers an eager plan would hold.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, plan: Plan | None, owner: type | None = None) -> Any:
        if plan is None:
            return self  # the dataclass default: __set__ turns it into factory()
        values = plan.__dict__
        if self.name not in values:
            values.update(values["_pending"]())  # kept until it succeeds: a failure repeats
            del values["_pending"]
        return values[self.name]

    def __set__(self, plan: Plan, value: Any) -> None:
        plan.__dict__[self.name] = self.factory() if value is self else value


DEFERRED = ("vocabulary", "explanation", "warnings")
"""The fields `Plan.deferring` may leave to be computed on first read."""


@dataclass(frozen=True)
class Plan:
    """A plan: the decision, its predicted loss and cost, why, and how sure it is.

    ``params`` is the TOTAL parameter count (non-embedding plus the vocabulary's ``V d`` when a
    vocabulary is planned): the plan, its vocabulary section, the learning-rate advice and the
    report all describe this one model. ``warnings`` lists what to double-check (a solve that
    ended optimal-inaccurate, hyperparameters extrapolated beyond their sweep, ...).
    """

    name: str
    mode: str
    status: PlanStatus
    reason: str = ""
    params: float = math.nan
    tokens: float = math.nan
    train_flops: float = math.nan
    inference_flops: float = math.nan
    loss: float = math.nan
    epochs: float | None = None
    cost_dollars: float | None = None
    train_days: float | None = None
    vocabulary: dict[str, Any] | None = _Deferred(lambda: None)  # noqa: RUF009
    mixture: dict[str, float] | None = None
    mixture_plan: dict[str, Any] | None = None
    intervals: dict[str, Any] = field(default_factory=dict)
    interval_draws: int = 0
    robust: dict[str, Any] | None = None
    frontier: list[dict[str, float]] = field(default_factory=list)
    explanation: dict[str, Any] = _Deferred(dict)  # noqa: RUF009
    warnings: tuple[str, ...] = _Deferred(tuple)  # noqa: RUF009
    law: dict[str, Any] = field(default_factory=dict)
    downstream: dict[str, Any] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""

    def deferring(self, compute: Callable[[], dict[str, Any]]) -> Plan:
        """This plan with the `DEFERRED` fields left to ``compute()`` (a mapping of all of
        them), run on the first read of any."""
        for name in DEFERRED:
            self.__dict__.pop(name, None)
        self.__dict__["_pending"] = compute
        return self

    @classmethod
    def deferred(cls, compute: Callable[[], dict[str, Any]], **values: Any) -> Plan:
        """``Plan(**values).deferring(compute)`` without the frozen ``__init__`` (its 26
        guarded assignments were ~4 us of a ~20 us what-if; `frozen_instance`): the same
        defaults, fresh containers, the same plan. The `DEFERRED` fields are ``compute``'s."""
        plan = frozen_instance(cls, values, unset=_DEFERRED_SET)
        plan.__dict__["_pending"] = compute
        return plan

    @classmethod
    def deferred_maker(cls, fixed: dict[str, Any], varying: tuple[str, ...]) -> Callable[..., Plan]:
        """`deferred` for many plans that share ``fixed`` (immutable values only): a function
        ``make(compute, *values of varying)`` (`frozen_maker`: the field checks run once)."""
        make = frozen_maker(cls, fixed, varying, unset=_DEFERRED_SET)

        def deferred(compute: Callable[[], dict[str, Any]], *values: Any) -> Plan:
            plan = make(*values)
            plan.__dict__["_pending"] = compute
            return plan

        return deferred

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with every deferred field computed (the function is not pickled)."""
        if "_pending" in self.__dict__:
            self.__dict__.update(self.__dict__["_pending"]())
            del self.__dict__["_pending"]
        return self.__dict__

    @property
    def tokens_per_param(self) -> float:
        """Training tokens per parameter."""
        return self.tokens / self.params

    @property
    def ok(self) -> bool:
        """True when the plan has an answer (optimal, or optimal-inaccurate and flagged)."""
        return self.status.solved

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        out = asdict(self)
        out["status"] = self.status.value
        out["tokens_per_param"] = self.tokens_per_param
        out["vocab_size"] = (self.vocabulary or {}).get("vocab_size")
        out["cost"] = self.cost_dollars
        out["warnings"] = list(self.warnings)
        return clean(out)

    def to_json(self, **kwargs: Any) -> str:
        """The plan as JSON."""
        return json.dumps(self.to_dict(), **kwargs)

    def render(self) -> str:
        """The plan as readable text."""
        return render_text(self.to_dict())


_DEFERRED_SET = frozenset(DEFERRED)


def clean(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN as ``None`` (JSON-ready)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float | np.floating):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, PlanStatus):
        return value.value
    return value
