"""The allocation core: the loss-optimal (N, D) at a budget, or the cheapest (N, D) reaching a loss
target, under `Limits`, for any loss that falls with N and with D.

Every planning mode calls this one core: a point law (Chinchilla form), a repetition-aware law
at the sources' unique tokens (Muennighoff), and the worst case over bootstrap draws (robust
plan) are three `LossModel`s of the same problem.

In logs (``n = log N``, ``d = log D``) the budget problem is

    min L(n, d)  s.t.  log(6 N D + 2 N T_inf) <= log C,  n + d <= log(cap / 6),
                       n <= log N_max,  d <= log D_max,  log r_min <= d - n <= log r_max.

The loss falls in both N and D, so at the optimum growing both (the direction (1, 1), which
keeps D/N) must be blocked: one of the budget, the training-FLOP cap, N_max or D_max binds.
Each of those four boundaries is a curve on which every other limit cuts out an interval (in
closed form below), so the optimum is the best of at most four 1-D minimisations over an
interval: a closed form for a Chinchilla-form law (laws.md 1.1), a bracketed root of the
derivative (brentq) when inference enters, a grid-bracketed golden section for any other loss
(a repetition law, a worst case over draws). No solver tolerance is involved; limits hold to
round-off.

The loss-target problem, ``min 6 N D + 2 N T_inf  s.t.  L(N, D) <= l``, is the inverse: the best
loss at budget C falls with C, so its answer is the budget plan at the C where the best loss
reaches l (a bracketed root in log C).

Shadow prices come from the KKT conditions at the answer (non-negative least squares on the
gradients of the active constraints), in log units as the convex programs report them: the
budget's is ``-dL/dlog C``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq, nnls

from mixplan.planning.errors import PlanningError, SpecError
from mixplan.planning.programs.common import (
    BINDING_TOL,
    Constants,
    PlanStatus,
    as_constants,
    bracket_on_grid,
    frozen_maker,
    golden_section,
)
from mixplan.planning.programs.limits import Limits

LOG6 = math.log(6.0)
INF = math.inf
GRID_POINTS = 257
"""Grid that brackets the optimum on a curve for a loss without a closed form."""
NO_LIMITS = Limits()
ACTIVE_TOL = 1e-9
"""A constraint is active at the answer when it holds with equality to this (log units)."""


# -- what is minimised ------------------------------------------------------------------------


@dataclass(frozen=True)
class LossModel:
    """A loss ``L(N, D)`` that does not rise with N or with D (vectorised ``predict``).

    ``constants`` is set for a single Chinchilla-form law, which unlocks the closed forms.
    """

    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    name: str
    constants: Constants | None = None

    @classmethod
    def of(cls, law, *, unique_tokens: float | None = None) -> LossModel:
        """The loss model of a law: Chinchilla form, Muennighoff at ``unique_tokens``, or any law
        with ``predict(params, tokens)`` (e.g. Kaplan's joint law)."""
        name = type(law).__name__
        if hasattr(law, "rd_star") and hasattr(law, "effective_tokens"):
            if not unique_tokens or not math.isfinite(unique_tokens):
                raise SpecError(
                    "field 'sources': a repetition (Muennighoff) law needs the [[sources]] and "
                    "their unique_tokens to count repeated data"
                )
            return cls(
                lambda n, d: law.predict(n, d, unique_tokens), f"{name} at U={unique_tokens:.3g}"
            )
        if all(hasattr(law, k) for k in ("E", "A", "B", "alpha", "beta")):
            constants = as_constants(law)
            return cls(constants.predict, name, constants)
        if callable(getattr(law, "predict", None)):
            return cls(lambda n, d: law.predict(n, d), name)
        raise PlanningError(
            f"a {name} cannot plan N and D; use a Chinchilla-form or repetition law"
        )

    @classmethod
    def worst_case(cls, models: Sequence[LossModel]) -> LossModel:
        """``max_k L_k(N, D)`` over draws: falls with N and D when every draw does."""
        models = list(models)
        if not models:
            raise PlanningError("a worst case needs at least one law draw")
        if all(m.constants is not None for m in models):
            c = [m.constants for m in models]
            E = np.array([x.E for x in c])[:, None]
            A = np.array([x.A for x in c])[:, None]
            B = np.array([x.B for x in c])[:, None]
            alpha = np.array([x.alpha for x in c])[:, None]
            beta = np.array([x.beta for x in c])[:, None]

            def predict(n, d):
                n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
                return np.max(E + A * n[None] ** -alpha + B * d[None] ** -beta, axis=0)

        else:

            def predict(n, d):
                return np.max(np.stack([np.asarray(m.predict(n, d), float) for m in models]), 0)

        return cls(predict, f"worst case over {len(models)} draws")

    def loss(self, params: float, tokens: float) -> float:
        """Scalar loss (plain float arithmetic for a Chinchilla-form law)."""
        c = self.constants
        if c is not None:
            return c.E + c.A * params**-c.alpha + c.B * tokens**-c.beta
        return float(np.asarray(self.predict(np.asarray(params), np.asarray(tokens))).ravel()[0])


# -- the answer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """The N/D decision: status, the answer, its cost, and which limits shape it."""

    status: PlanStatus
    params: float = math.nan
    tokens: float = math.nan
    loss: float = math.nan
    budget_flops: float | None = None
    inference_tokens: float = 0.0
    duals: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    best_reachable_loss: float = math.nan

    @property
    def ok(self) -> bool:
        """True when solved."""
        return self.status.solved

    @property
    def binding(self) -> tuple[str, ...]:
        """Constraints with a positive shadow price."""
        return tuple(k for k, v in self.duals.items() if v > BINDING_TOL)

    @property
    def train_flops(self) -> float:
        """``6 N D``."""
        return 6 * self.params * self.tokens

    @property
    def inference_flops(self) -> float:
        """``2 N T_inf``."""
        return 2 * self.params * self.inference_tokens

    @property
    def tokens_per_param(self) -> float:
        """``D / N``."""
        return self.tokens / self.params


_optimal = frozen_maker(
    Allocation,
    {"status": PlanStatus.OPTIMAL},
    ("params", "tokens", "loss", "budget_flops", "inference_tokens", "duals"),
)
"""``Allocation(OPTIMAL, params, tokens, loss, budget_flops, inference_tokens, duals)`` without
the frozen ``__init__`` (the budget problem answers every what-if query)."""


def _failed(status: PlanStatus, reason: str, **extra) -> Allocation:
    return Allocation(status, reason=reason, **extra)


# -- the log-space problem --------------------------------------------------------------------


@dataclass(slots=True)
class _Problem:
    """Budget problem data in logs (+-inf: no bound). Built once per query: a plain slotted
    class (a frozen dataclass's ``__init__`` cost a what-if ~1 us), the limits' logs read from
    `_limit_logs`."""

    C: float  # total budget (FLOPs), inf when none
    T: float  # inference tokens (training-FLOP equivalents of 2N each)
    k: float  # log(cap / 6): n + d <= k
    nm: float
    dm: float
    rlo: float
    rhi: float

    @classmethod
    def of(cls, limits: Limits, flops: float | None, inference_tokens: float) -> _Problem:
        return cls(
            flops if flops is not None else INF, float(inference_tokens), *_limit_logs(limits)
        )

    # the constraints g(n, d) <= 0, by the names plans report, with their (dg/dn, dg/dd)
    def constraints(self, n: float, d: float) -> dict[str, tuple[float, tuple[float, float]]]:
        out: dict[str, tuple[float, tuple[float, float]]] = {}
        if self.C < INF:
            tokens = math.exp(d)
            total = math.log(6 * tokens + 2 * self.T) + n
            out["budget"] = (
                total - math.log(self.C),
                (1.0, 6 * tokens / (6 * tokens + 2 * self.T)),
            )
        if self.k < INF:
            out["train_time"] = (n + d - self.k, (1.0, 1.0))
        if self.nm < INF:
            out["max_params"] = (n - self.nm, (1.0, 0.0))
        if self.dm < INF:
            out["max_tokens"] = (d - self.dm, (0.0, 1.0))
        if self.rlo > -INF:
            out["min_tokens_per_param"] = (self.rlo - (d - n), (1.0, -1.0))
        if self.rhi < INF:
            out["max_tokens_per_param"] = ((d - n) - self.rhi, (-1.0, 1.0))
        return out

    # -- the four boundary curves: (lo, hi) of the free coordinate, and the point -------------
    def budget_curve(self) -> tuple[float, float] | None:
        C, T = self.C, self.T
        if C == INF:
            return None
        lo, hi = 0.0, math.log(C / (6 + 2 * T))  # N >= 1, D >= 1
        hi = min(hi, self.nm)
        if self.dm < INF:
            lo = max(lo, math.log(C / (6 * math.exp(self.dm) + 2 * T)))
        if self.rlo > -INF:
            hi = min(hi, math.log(_ratio_root(C, T, self.rlo)))
        if self.rhi < INF:
            lo = max(lo, math.log(_ratio_root(C, T, self.rhi)))
        if self.k < INF and 6 * math.exp(self.k) < C:
            if T <= 0:
                return None
            lo = max(lo, math.log((C - 6 * math.exp(self.k)) / (2 * T)))
        return (lo, hi) if lo <= hi else None

    def budget_tokens(self, n: float) -> float:
        # D >= 1 on the curve by construction; when inference takes nearly all of the budget
        # the subtraction cancels to <= 0 in floating point, so clip to that bound
        rest = max(self.C - 2 * self.T * math.exp(n), 6 * math.exp(n))
        return math.log(rest) - LOG6 - n

    def cap_curve(self) -> tuple[float, float] | None:
        if self.k == INF:
            return None
        k = self.k
        lo, hi = max(0.0, (k - self.rhi) / 2), min(k, self.nm, (k - self.rlo) / 2)
        if self.dm < INF:
            lo = max(lo, k - self.dm)
        if self.C < INF:
            room = self.C - 6 * math.exp(k)
            if room < -1e-12 * self.C:
                return None
            if self.T > 0:
                if room <= 0:
                    return None
                hi = min(hi, math.log(room / (2 * self.T)))
        return (lo, hi) if lo <= hi else None

    def params_line(self) -> tuple[float, float] | None:
        """n = nm; the free coordinate is d."""
        if self.nm == INF:
            return None
        n = self.nm
        lo, hi = max(0.0, n + self.rlo), min(self.dm, n + self.rhi, self.k - n)
        if self.C < INF:
            room = self.C - 2 * self.T * math.exp(n)
            if room <= 0:
                return None
            hi = min(hi, math.log(room / 6) - n)
        return (lo, hi) if lo <= hi else None

    def tokens_line(self) -> tuple[float, float] | None:
        """d = dm; the free coordinate is n."""
        if self.dm == INF:
            return None
        d = self.dm
        lo, hi = max(0.0, d - self.rhi), min(self.nm, d - self.rlo, self.k - d)
        if self.C < INF:
            hi = min(hi, math.log(self.C) - math.log(6 * math.exp(d) + 2 * self.T))
        return (lo, hi) if lo <= hi else None


def _limit_logs(limits: Limits) -> tuple[float, float, float, float, float]:
    """``(k, nm, dm, rlo, rhi)`` of `_Problem` for ``limits``, computed once per `Limits`
    object (a what-if grid re-plans one spec's limits many times)."""
    kept = _LIMIT_LOGS.get(id(limits))
    if kept is not None and kept[0] is limits:  # the object itself, not a reused id
        return kept[1]

    def log(x, default):
        return math.log(x) if x is not None else default

    cap = limits.train_flops_cap
    logs = (
        log(cap, INF) - LOG6 if cap is not None else INF,
        log(limits.max_params, INF),
        log(limits.max_tokens, INF),
        log(limits.min_tokens_per_param, -INF),
        log(limits.max_tokens_per_param, INF),
    )
    if len(_LIMIT_LOGS) >= 64:  # a handful of specs at a time: keep it small
        _LIMIT_LOGS.clear()
    _LIMIT_LOGS[id(limits)] = (limits, logs)
    return logs


_LIMIT_LOGS: dict[int, tuple[Limits, tuple[float, float, float, float, float]]] = {}


def _ratio_root(C: float, T: float, log_ratio: float) -> float:
    """N on the budget curve where ``D / N = e^log_ratio``: root of ``6 r N^2 + 2 T N = C``."""
    r = math.exp(log_ratio)
    return 2 * C / (2 * T + math.sqrt(4 * T * T + 24 * r * C))


# -- minimising along a curve -----------------------------------------------------------------


def _argmin(f_vec: Callable[[np.ndarray], np.ndarray], lo: float, hi: float) -> float:
    """Minimise a 1-D function on ``[lo, hi]``: grid bracket, then golden section."""
    if hi - lo < 1e-12:
        return hi
    grid = np.linspace(lo, hi, GRID_POINTS)
    values = np.asarray(f_vec(grid), dtype=float)
    if not np.any(np.isfinite(values)):
        return hi
    a, b = bracket_on_grid(values, grid)
    x, fx, _ = golden_section(lambda t: float(f_vec(np.array([t]))[0]), a, b, tol=1e-11)
    i = int(np.nanargmin(values))
    return x if fx <= values[i] else float(grid[i])


def _along_budget(model: LossModel, p: _Problem, lo: float, hi: float) -> float:
    c = model.constants
    C, T = p.C, p.T
    if c is not None and T == 0:  # laws.md 1.1 closed form, clipped to the limits
        s = c.alpha + c.beta
        G = (c.alpha * c.A / (c.beta * c.B)) ** (1 / s)
        return min(max(math.log(G) + (c.beta / s) * math.log(C / 6), lo), hi)
    if c is not None:  # convex along the curve: the derivative's root, bracketed

        def slope(n):
            e = math.exp(n)
            rest = C - 2 * T * e  # the training FLOPs left at N = e^n
            if rest <= 0:  # round-off at the curve's end, where inference takes everything:
                return math.inf  # D -> 0 there, so the loss rises steeply
            d = math.log(rest) - LOG6 - n
            dd = -2 * T * e / rest - 1
            return (
                -c.alpha * c.A * math.exp(-c.alpha * n) - c.beta * c.B * math.exp(-c.beta * d) * dd
            )

        return _bracketed_root(slope, lo, hi)

    def f(n):
        d = np.log(C - 2 * T * np.exp(n)) - LOG6 - n
        return model.predict(np.exp(n), np.exp(d))

    return _argmin(f, lo, hi)


def _along_cap(model: LossModel, p: _Problem, lo: float, hi: float) -> float:
    c, k = model.constants, p.k
    if c is not None:
        n = (math.log(c.alpha * c.A / (c.beta * c.B)) + c.beta * k) / (c.alpha + c.beta)
        return min(max(n, lo), hi)
    return _argmin(lambda n: model.predict(np.exp(n), np.exp(k - n)), lo, hi)


def _bracketed_root(slope: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of an increasing derivative on ``[lo, hi]`` (an endpoint when it keeps its sign)."""
    if hi - lo < 1e-12:
        return hi
    s_lo, s_hi = slope(lo), slope(hi)
    if s_lo >= 0:
        return lo
    if s_hi <= 0:
        return hi
    return brentq(slope, lo, hi, xtol=1e-13, rtol=1e-15)


# -- the budget problem -----------------------------------------------------------------------


def allocate_budget(
    model: LossModel,
    *,
    limits: Limits = NO_LIMITS,
    flops: float | None,
    inference_tokens: float = 0.0,
) -> Allocation:
    """Lowest loss for a budget of ``flops`` (training ``6ND`` plus inference ``2 N T_inf``).

    Parameters
    ----------
    model
        The loss to minimise (`LossModel.of(law)`, or a worst case over draws).
    limits
        Every limit of the plan.
    flops
        The budget in FLOPs; ``None``: only the limits bound the answer.
    inference_tokens
        Lifetime inference tokens ``T_inf`` (in training-FLOP equivalents).

    Returns
    -------
    Allocation
        OPTIMAL with shadow prices, UNBOUNDED when nothing bounds the model, or INFEASIBLE with
        the limits that conflict named.
    """
    if flops is not None and not (math.isfinite(flops) and flops > 0):
        raise SpecError(f"field 'budget.flops': must be positive and finite, got {flops!r}")
    if not (math.isfinite(inference_tokens) and inference_tokens >= 0):
        raise SpecError(
            f"field 'inference.tokens': must be >= 0 and finite, got {inference_tokens!r}"
        )
    p = _Problem.of(limits, flops, inference_tokens)
    if p.C == INF and p.k == INF and (p.nm == INF or p.dm == INF):
        return _failed(
            PlanStatus.UNBOUNDED,
            "no budget and no limit on both parameters and tokens: the loss keeps falling as the "
            "model grows; give budget.flops, a wall-clock or FLOP limit, or both max_params and "
            "data sources",
        )
    candidates: list[tuple[float, float]] = []
    span = p.budget_curve()
    if span is not None:
        n = _along_budget(model, p, *span)
        # on the interval every limit holds exactly; the clip only removes the round-off of
        # D = (C - 2 T N) / 6N, large when inference takes nearly all of the budget
        d = min(max(p.budget_tokens(n), n + p.rlo), n + p.rhi, p.dm, p.k - n)
        candidates.append((n, d))
    span = p.cap_curve()
    if span is not None:
        n = _along_cap(model, p, *span)
        candidates.append((n, p.k - n))
    span = p.params_line()
    if span is not None:
        candidates.append((p.nm, span[1]))
    span = p.tokens_line()
    if span is not None:
        candidates.append((span[1], p.dm))
    if not candidates:
        return _failed(PlanStatus.INFEASIBLE, _conflict(p, limits), budget_flops=flops)
    if len(candidates) == 1:  # the budget curve alone (no other limit can bind)
        (n, d), loss = (
            candidates[0],
            model.loss(math.exp(candidates[0][0]), math.exp(candidates[0][1])),
        )
    else:
        losses = [model.loss(math.exp(n), math.exp(d)) for n, d in candidates]
        best = min(range(len(losses)), key=losses.__getitem__)
        (n, d), loss = candidates[best], losses[best]
    duals = _duals(model, p, n, d)
    return _optimal(math.exp(n), math.exp(d), loss, flops, inference_tokens, duals)


def _conflict(p: _Problem, limits: Limits) -> str:
    """Which limits leave no (N >= 1, D >= 1) at all."""
    named = []
    if p.rlo > -INF:
        named.append(f"min_tokens_per_param = {limits.min_tokens_per_param:g}")
    if p.nm < INF:
        named.append(f"max_params = {limits.max_params:g}")
    if p.dm < INF:
        named.append(f"max_tokens = {limits.max_tokens:g}")
    if p.C < INF:
        named.append(f"the budget {p.C:.3g} FLOPs")
    if p.k < INF:
        named.append(f"the training-FLOP cap {6 * math.exp(p.k):.3g}")
    return (
        "no model with at least one parameter and one token fits these limits together ("
        + ", ".join(named)
        + "); relax one of them"
    )


def _gradient(model: LossModel, n: float, d: float) -> tuple[float, float]:
    c = model.constants
    if c is not None:
        return -c.alpha * c.A * math.exp(-c.alpha * n), -c.beta * c.B * math.exp(-c.beta * d)
    h = 1e-5
    pts = np.exp(np.array([n + h, n - h, n, n]))
    tok = np.exp(np.array([d, d, d + h, d - h]))
    v = np.asarray(model.predict(pts, tok), dtype=float)
    return (v[0] - v[1]) / (2 * h), (v[2] - v[3]) / (2 * h)


def _duals(model: LossModel, p: _Problem, n: float, d: float) -> dict[str, float]:
    """Shadow prices from the KKT conditions ``-grad L = sum_i lambda_i grad g_i``, lambda >= 0."""
    cons = p.constraints(n, d)
    active = [name for name, (g, _) in cons.items() if g >= -ACTIVE_TOL]
    duals = dict.fromkeys(cons, 0.0)
    if not active:
        return duals
    grad = _gradient(model, n, d)
    if len(active) == 1:  # one active constraint: lambda = -grad . a / |a|^2
        a = cons[active[0]][1]
        duals[active[0]] = max(0.0, -(grad[0] * a[0] + grad[1] * a[1]) / (a[0] ** 2 + a[1] ** 2))
        return duals
    matrix = np.array([cons[name][1] for name in active]).T
    grad = np.array(grad)
    try:
        lam, _ = nnls(matrix, -grad)
    except (ValueError, RuntimeError):
        return duals
    for name, value in zip(active, lam, strict=True):
        duals[name] = float(value)
    return duals


# -- the loss-target problem ------------------------------------------------------------------


def allocate_target(
    model: LossModel,
    *,
    limits: Limits = NO_LIMITS,
    target_loss: float,
    inference_tokens: float = 0.0,
) -> Allocation:
    """Cheapest ``6 N D + 2 N T_inf`` whose predicted loss is at most ``target_loss``.

    The best loss at budget C does not rise with C, so the answer is the budget plan at the
    smallest C where it reaches the target: a root in log C, bracketed by factors of 10.
    INFEASIBLE (with the best reachable loss and the limits that stop it) when no model within
    the limits reaches the target.
    """
    if not math.isfinite(target_loss):
        raise SpecError(f"field 'budget.target_loss': must be finite, got {target_loss!r}")
    floor = model.constants.E if model.constants is not None else -INF
    if target_loss <= floor:
        return _failed(
            PlanStatus.INFEASIBLE,
            f"no model reaches loss {target_loss:.4g}: it is at or below the law's irreducible "
            f"loss E = {floor:.4g}; aim above E",
            best_reachable_loss=floor,
        )
    best = allocate_budget(model, limits=limits, flops=None, inference_tokens=inference_tokens)
    if best.ok and best.loss > target_loss:
        named = " and ".join(k for k in best.binding if k != "budget") or "the limits"
        return _failed(
            PlanStatus.INFEASIBLE,
            f"no model reaches loss {target_loss:.4g} within the limits ({named} bind): the "
            f"best reachable is {best.loss:.4g} at {best.train_flops:.3g} training FLOPs; relax "
            "those limits or aim higher",
            best_reachable_loss=best.loss,
        )

    def gap(log_c: float) -> float:
        r = allocate_budget(
            model, limits=limits, flops=math.exp(log_c), inference_tokens=inference_tokens
        )
        return (r.loss - target_loss) if r.ok else INF

    lo = math.log(6.0 * (1 + 2 * inference_tokens / 6.0)) + 1.0  # N = D = 1 and a bit
    hi = max(lo + 1.0, 60.0)
    while gap(hi) > 0:
        if hi > 230:  # 1e100 FLOPs: the target is only approached asymptotically
            return _failed(
                PlanStatus.INFEASIBLE,
                f"no model reaches loss {target_loss:.4g}: the law approaches it only as the "
                "model grows without bound; aim higher or add data",
                best_reachable_loss=best.loss if best.ok else math.nan,
            )
        lo, hi = hi, hi + 23.0
    if gap(lo) <= 0:
        log_c = lo
    else:
        log_c = brentq(gap, lo, hi, xtol=1e-12, rtol=1e-14)
        # stay on the feasible side of the root (the target holds, to round-off)
        for _ in range(8):
            if gap(log_c) <= 1e-12 * abs(target_loss):
                break
            log_c += 1e-11
    r = allocate_budget(
        model, limits=limits, flops=math.exp(log_c), inference_tokens=inference_tokens
    )
    scale = r.duals.get("budget", 0.0)
    duals = {"target_loss": 1.0 / scale if scale > 0 else 0.0}
    for name, value in r.duals.items():
        if name != "budget":
            duals[name] = value / scale if scale > 0 else value
    return Allocation(
        PlanStatus.OPTIMAL,
        params=r.params,
        tokens=r.tokens,
        loss=r.loss,
        budget_flops=r.train_flops + r.inference_flops,
        inference_tokens=inference_tokens,
        duals=duals,
    )
