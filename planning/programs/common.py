"""Shared pieces of the convex programs: statuses, solver options, the law protocol, and the
log-space limits the budget and loss-target programs share (``n = log N``, ``d = log D``)."""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, Protocol, runtime_checkable

import cvxpy as cp

from mixplan.planning.errors import PlanningError, SpecError

SOLVER = cp.CLARABEL
"""The default solver (cvxpy 1.9 ships Clarabel; ECOS is not installed)."""

OFF = 700.0
"""Log-space value that switches a bound off (e^700 is beyond any budget; still finite)."""

SOLVER_OPTIONS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}
"""Tighter than Clarabel's defaults: the optimum is flat in N, so N needs a small gap."""

BINDING_TOL = 1e-7
"""A constraint binds when its dual value exceeds this."""

LOG6 = math.log(6.0)
"""``log 6``: training costs ``6 N D`` FLOPs."""

CONSTRAINT_LABELS = {
    "budget": "compute budget",
    "train_time": "wall-clock training time",
    "max_params": "maximum parameters",
    "max_tokens": "available data (sum of unique tokens x max epochs)",
    "min_tokens_per_param": "minimum tokens per parameter",
    "max_tokens_per_param": "maximum tokens per parameter",
    "mixture_trust_region": "mixture trust region (a source at its largest share in the runs the "
    "mixture law was fitted on)",
}
"""Readable names of the constraints a plan reports as binding."""


class PlanStatus(enum.StrEnum):
    """How a planning program ended. Expected outcomes are statuses, never exceptions."""

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    SOLVER_ERROR = "solver_error"

    @property
    def solved(self) -> bool:
        """True for an answer to use: optimal, or optimal to a looser tolerance (flagged)."""
        return self in (PlanStatus.OPTIMAL, PlanStatus.OPTIMAL_INACCURATE)


@runtime_checkable
class ScaleLaw(Protocol):
    """Any Chinchilla-form law ``E + A / N**alpha + B / D**beta`` (ChinchillaLaw fits this)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float


@dataclass(frozen=True)
class Constants:
    """Plain Chinchilla-form constants, for callers without a law object."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def predict(self, params: float, tokens: float) -> float:
        """Loss at ``params`` parameters trained on ``tokens`` tokens."""
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta


def as_constants(law: ScaleLaw) -> Constants:
    """Read E, A, B, alpha, beta off any law-like object (validated as finite, positive)."""
    try:
        values = {k: float(getattr(law, k)) for k in ("E", "A", "B", "alpha", "beta")}
    except (AttributeError, TypeError, ValueError) as exc:
        raise PlanningError(
            f"a {type(law).__name__} has no Chinchilla-form constants E, A, B, alpha, beta "
            f"({exc}); use a Chinchilla-form law here"
        ) from exc
    for key, value in values.items():
        if not math.isfinite(value) or (key != "E" and value <= 0):
            raise PlanningError(
                f"law constant {key} = {value} is not usable: A, B, alpha and beta must be "
                "positive and finite, E finite; refit the law or fix the spec's [law]"
            )
    return Constants(**values)


class BuiltOnce:
    """Builds each structure of a program (e.g. with and without the inference term) once, on
    first use; later solves only change ``cp.Parameter`` values. Subclasses define ``_build``."""

    def __init__(self) -> None:
        self._built: dict = {}

    def _build(self, structure):
        raise NotImplementedError

    def problem(self, structure):
        """The built (problem, parameters, ...) tuple for one structure."""
        if structure not in self._built:
            self._built[structure] = self._build(structure)
        return self._built[structure]


def law_parameters() -> dict[str, cp.Parameter]:
    """Parameters of a Chinchilla-form law in logs: ``logA``, ``logB``, ``alpha``, ``beta``."""
    return {
        "logA": cp.Parameter(name="logA"),
        "logB": cp.Parameter(name="logB"),
        "alpha": cp.Parameter(name="alpha", nonneg=True),
        "beta": cp.Parameter(name="beta", nonneg=True),
    }


def set_law(p: dict[str, cp.Parameter], law: Constants) -> None:
    """Load a law's constants into `law_parameters`."""
    p["logA"].value = math.log(law.A)
    p["logB"].value = math.log(law.B)
    p["alpha"].value = law.alpha
    p["beta"].value = law.beta


def limit_parameters() -> dict[str, cp.Parameter]:
    """Parameters of the optional limits (log bounds, switched off with +-OFF)."""
    names = ("log_train_cap", "log_max_params", "log_max_tokens", "log_min_ratio", "log_max_ratio")
    return {name: cp.Parameter(name=name) for name in names}


def limit_constraints(n, d, p: dict[str, cp.Parameter]) -> dict[str, cp.Constraint]:
    """The limits on ``n = log N`` and ``d = log D``, by the names plans report."""
    return {
        "train_time": LOG6 + n + d <= p["log_train_cap"],
        "max_params": n <= p["log_max_params"],
        "max_tokens": d <= p["log_max_tokens"],
        "min_tokens_per_param": d - n >= p["log_min_ratio"],
        "max_tokens_per_param": d - n <= p["log_max_ratio"],
    }


def set_limits(
    p: dict[str, cp.Parameter],
    *,
    max_params: float | None = None,
    max_tokens: float | None = None,
    min_tokens_per_param: float | None = None,
    max_tokens_per_param: float | None = None,
    max_train_flops: float | None = None,
) -> None:
    """Load the limits into `limit_parameters` (``None`` switches a limit off)."""
    p["log_train_cap"].value = log_or_off(max_train_flops)
    p["log_max_params"].value = log_or_off(max_params)
    p["log_max_tokens"].value = log_or_off(max_tokens)
    p["log_min_ratio"].value = log_or_off(min_tokens_per_param, upper=False)
    p["log_max_ratio"].value = log_or_off(max_tokens_per_param)


def status_of(problem: cp.Problem) -> PlanStatus:
    """Map a cvxpy status to a PlanStatus."""
    status = problem.status
    if status == cp.OPTIMAL:
        return PlanStatus.OPTIMAL
    if status == cp.OPTIMAL_INACCURATE:
        return PlanStatus.OPTIMAL_INACCURATE
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return PlanStatus.INFEASIBLE
    if status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
        return PlanStatus.UNBOUNDED
    return PlanStatus.SOLVER_ERROR


def solve(problem: cp.Problem) -> PlanStatus:
    """Solve with the default solver; a solver failure becomes a status, not a traceback.

    Tight tolerances first (the optimum is flat in N); Clarabel's defaults if that fails.
    """
    for options in (SOLVER_OPTIONS, {}):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=SOLVER, **options)
        except (cp.error.SolverError, ValueError, ArithmeticError):
            # a failed solve, or problem data the solver cannot represent (NaN / inf)
            continue
        status = status_of(problem)
        if status is not PlanStatus.SOLVER_ERROR:
            return status
    return PlanStatus.SOLVER_ERROR


def log_or_off(value: float | None, *, upper: bool = True) -> float:
    """Log of a bound, or +-OFF when the bound is absent (None or infinite)."""
    if value is None or math.isinf(value):
        return OFF if upper else -OFF
    if not value > 0:
        raise SpecError(f"a limit must be positive, got {value}; leave it out for no limit")
    return math.log(value)


def dual(constraint: cp.Constraint) -> float:
    """The (non-negative) dual value of a scalar inequality, 0.0 when unavailable."""
    value = constraint.dual_value
    if value is None:
        return 0.0
    return float(abs(float(value)))


def require_dpp(problem: cp.Problem, what: str) -> cp.Problem:
    """``problem`` if it is DCP and DPP (re-solvable with new parameters), else PlanningError."""
    if not problem.is_dcp(dpp=True):
        raise PlanningError(f"{what} is not a convex parametrised (DPP) program; report this bug")
    return problem


def golden_section(f, lo: float, hi: float, *, tol: float = 1e-6, max_iter: int = 200):
    """Minimise a unimodal scalar function on ``[lo, hi]``; returns ``(x, f(x), evaluations)``."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    evaluations = 2
    while abs(b - a) > tol and evaluations < max_iter:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
        evaluations += 1
    return (c, fc, evaluations) if fc <= fd else (d, fd, evaluations)


def bracket_on_grid(values, grid) -> tuple[float, float]:
    """The bracket ``[grid[i-1], grid[i+1]]`` around the smallest finite value on a grid."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    i = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
    return float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])


def frozen_instance(cls: type, values: dict[str, Any], *, unset: frozenset[str] = frozenset()):
    """``cls(**values)`` for a frozen dataclass without ``__post_init__``, its fields set
    directly instead of through the frozen ``__init__``'s guarded assignments (~0.15 us a
    field: ~1-4 us of a ~20 us what-if for `Allocation` and `Plan`). The same defaults, a
    fresh container from each default factory; an unknown or missing field is a TypeError as
    in ``__init__``. Fields named in ``unset`` are neither accepted nor given their default
    (`Plan.deferred` computes them later)."""
    layout = _LAYOUTS.get((cls, unset))
    if layout is None:
        if hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__} validates in __post_init__: construct it normally")
        known = [f for f in fields(cls) if f.init and f.name not in unset]
        layout = _LAYOUTS[(cls, unset)] = (
            frozenset(f.name for f in known),
            frozenset(
                f.name for f in known if f.default is MISSING and f.default_factory is MISSING
            ),
            {f.name: f.default for f in known if f.default is not MISSING},
            tuple((f.name, f.default_factory) for f in known if f.default_factory is not MISSING),
        )
    allowed, required, defaults, factories = layout
    if not values.keys() <= allowed:
        raise TypeError(f"{cls.__name__} got unexpected fields {sorted(values.keys() - allowed)}")
    if not required <= values.keys():
        raise TypeError(f"{cls.__name__} is missing fields {sorted(required - values.keys())}")
    out = object.__new__(cls)
    state = out.__dict__
    state.update(defaults)
    for name, factory in factories:
        if name not in values:
            state[name] = factory()
    state.update(values)
    return out


def frozen_maker(
    cls: type,
    fixed: dict[str, Any],
    varying: tuple[str, ...],
    *,
    unset: frozenset[str] = frozenset(),
) -> Callable[..., Any]:
    """A maker of ``cls(**fixed, **dict(zip(varying, args)))`` for many instances that share
    ``fixed`` (`frozen_instance` with its checks run once, here): each call sets the fields
    directly, a fresh container from each default factory not given."""
    probe = dict.fromkeys(varying)
    frozen_instance(cls, {**fixed, **probe}, unset=unset)  # the same TypeErrors, once
    allowed, _, defaults, factories = _LAYOUTS[(cls, unset)]
    given = fixed.keys() | probe.keys()
    template = {**defaults, **fixed}
    fresh = tuple((name, factory) for name, factory in factories if name not in given)
    new = object.__new__

    def make(*args: Any) -> Any:
        out = new(cls)
        state = out.__dict__
        state.update(template)
        for name, factory in fresh:
            state[name] = factory()
        state.update(zip(varying, args, strict=True))
        return out

    return make


_LAYOUTS: dict[tuple[type, frozenset[str]], tuple] = {}
"""Per dataclass (and unset fields): what `frozen_instance` reads of its fields, once."""
