"""Data mixture with per-source caps and the repetition penalty (laws.md 2 and 3).

At a training budget C and a total of D tokens (so ``N = C / (6D)``), the inner problem over
the tokens each source contributes, ``x_j = r_j D``, is convex (DCP):

    min  E + A N^-alpha + B D_eff^-beta + [M(r) - M(r_ref)]
    s.t. sum_j x_j = D,  0 <= x_j <= U_j * max_epochs_j,  (optionally x_j <= s_j D)
         D_eff = sum_j D'_j(x_j)   (Muennighoff effective tokens, concave in x_j)

``M(r)`` is the mixture law's user-weighted target (``loss_expression(weights, domain_weights)``,
convex) and ``r_ref`` the mixture the scale law was measured on: the scale law gives the level,
the mixture law the difference a mixture makes, and repeated tokens count through ``D'``. The
concave ``D'(x) = x`` for ``x <= U`` and ``U + U R* (1 - exp(-(x - U)/(U R*)))`` beyond is
written as ``max_{s + z = x, s <= U} s + U R* (1 - exp(-z/(U R*)))``; the loss falls in D_eff, so
the solver picks the split. The optional trust region ``r_j <= s_j`` keeps each source within the
largest share ``s_j`` the mixture law saw in its training runs (the law extrapolates badly
beyond them).

Two inner solvers, one program. Where the law has analytic derivatives
(planning/programs/mixture_derivatives.py) the inner problem is solved in the shares
``r = x / D`` by Newton's method on the capped simplex (planning/programs/simplex_newton.py),
which stops on a certified Frank-Wolfe gap; the conic form above (cvxpy, built once with D a
``cp.Parameter``) answers where the law has none or the certificate fails, and is the
independent reference in the tests (``method="cvxpy"``). The outer problem over D is 1-D:
with Newton, Newton's method on ``V(log D)``, V the best loss at D, its slope and curvature the
inner solution's sensitivity (the envelope theorem and the KKT system's derivative, caps moving
as ``1/D``), safeguarded by the bracket the slopes' signs set; with the conic program, a grid
then golden section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import cvxpy as cp
import numpy as np

from mixplan.planning.errors import SpecError
from mixplan.planning.laws.repetition import effective_tokens
from mixplan.planning.programs.budget import closed_form
from mixplan.planning.programs.common import (
    SOLVER,
    PlanStatus,
    ScaleLaw,
    as_constants,
    bracket_on_grid,
    golden_section,
    solve,
)
from mixplan.planning.programs.joint_newton import minimize_jointly
from mixplan.planning.programs.mixture_derivatives import DataTerm, target_derivatives
from mixplan.planning.programs.mixture_forms import scaled_target
from mixplan.planning.programs.simplex_newton import (
    Sensitivity,
    SimplexSolution,
    active_bounds,
    minimize_on_simplex,
    sensitivity,
)

RD_STAR = 15.387756
"""Muennighoff et al.'s R_D* (datablations), the default repetition scale."""

UNIT = 1e9
"""Token unit inside the program (billions) to keep the solver well scaled."""

METHODS = ("newton", "cvxpy")
"""Inner solvers: Newton on the analytic objective (the conic program where the law has no
analytic form or Newton's certificate fails), or the conic program alone (the reference)."""

GAP_TOL = 1e-10
"""Newton stops when its certified gap is below this fraction of the objective."""

JOINT_DECREMENT = 1e-12
"""The joint Newton iteration stops when its Newton decrement (the predicted decrease) is below
this fraction of the objective: the Frank-Wolfe gap that certifies the shares is linear in their
error where the decrement is quadratic, so a decrement at GAP_TOL would leave the certificate
short by a step or two."""

SLOPE_STEP = 0.5
"""First step (in log D) of the outer search where Newton's step is not defined; it doubles."""

MAX_LOG_STEP = 2.0
"""Longest step of the outer Newton search in log D (a factor e^2 = 7.4 in D)."""

NEWTON_SHARE = 0.25
"""Once the slope's root is bracketed, Newton's step is taken only when it is shorter than this
share of the bracket; otherwise the secant through the bracket's ends."""

MAX_OUTER_STEPS = 40
"""Inner solves the outer Newton search may take before the golden section takes over."""


@runtime_checkable
class MixtureTarget(Protocol):
    """The planner hook every mixture law exposes (see planning/mixture/base.py)."""

    sources_: tuple[str, ...]
    domains_: tuple[str, ...]

    def loss_expression(self, weights: cp.Expression, domain_weights) -> cp.Expression:
        """Convex DCP target ``sum_i w_i L_i(weights)``."""

    def target_loss(self, weights: np.ndarray, domain_weights) -> np.ndarray:
        """Numeric target for one ``(S,)`` or many ``(M, S)`` mixtures."""


@dataclass(frozen=True)
class ExponentialMixture:
    """Data Mixing Laws' ``L_i(r) = c_i + k_i exp(sum_j t_ij r_j)`` from given numbers.

    Convex in r for ``k_i > 0``. Used for inline specs and tests; fitted laws come from
    planning/mixture/ and expose the same hook.
    """

    sources: tuple[str, ...]
    domains: tuple[str, ...]
    c: np.ndarray
    k: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        c, k, t = (np.asarray(a, dtype=float) for a in (self.c, self.k, self.t))
        shape = (len(self.domains), len(self.sources))
        if c.shape != shape[:1] or k.shape != shape[:1] or t.shape != shape:
            raise SpecError(
                f"mixture.c, mixture.k need {shape[0]} numbers and mixture.t a "
                f"{shape[0]}x{shape[1]} matrix (domains x sources); got {c.shape}, {k.shape}, "
                f"{t.shape}"
            )
        if np.any(k <= 0):
            raise SpecError("mixture.k must be positive (the law is convex only for k > 0)")
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "t", t)

    @property
    def sources_(self) -> tuple[str, ...]:
        """Training sources, in weight order."""
        return tuple(self.sources)

    @property
    def domains_(self) -> tuple[str, ...]:
        """Validation domains, in c/k/t row order."""
        return tuple(self.domains)

    def _domain_vector(self, domain_weights) -> np.ndarray:
        if domain_weights is None:
            return np.full(len(self.domains), 1.0 / len(self.domains))
        if isinstance(domain_weights, Mapping):
            unknown = sorted(set(domain_weights) - set(self.domains))
            if unknown:
                raise SpecError(f"eval.weights: unknown domain(s) {unknown}; known {self.domains}")
            return np.array([float(domain_weights.get(d, 0.0)) for d in self.domains])
        return np.asarray(domain_weights, dtype=float)

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Loss per domain for ``(S,)`` or ``(M, S)`` mixtures."""
        weights = np.asarray(weights, dtype=float)
        return self.c + self.k * np.exp(weights @ self.t.T)

    def target_loss(self, weights: np.ndarray, domain_weights) -> np.ndarray:
        """The weighted target for one or many mixtures."""
        return self.predict(weights) @ self._domain_vector(domain_weights)

    def loss_expression(self, weights: cp.Expression, domain_weights) -> cp.Expression:
        """Convex DCP ``sum_i w_i (c_i + k_i exp(t_i . weights))``."""
        w = self._domain_vector(domain_weights)
        keep = w > 0
        return float(w @ self.c) + cp.sum(
            cp.multiply(w[keep] * self.k[keep], cp.exp(self.t[keep] @ weights))
        )


@dataclass(frozen=True)
class Source:
    """A training source: unique tokens and how often it may be repeated."""

    name: str
    unique_tokens: float
    max_epochs: float = 1.0

    @property
    def cap(self) -> float:
        """Most tokens the source can contribute."""
        return self.unique_tokens * self.max_epochs


@dataclass(frozen=True)
class MixtureResult:
    """A mixture plan at the chosen D (and N = C / 6D)."""

    status: PlanStatus
    mixture: dict[str, float]
    tokens: float
    params: float
    loss: float
    mixture_term: float
    effective_tokens: float
    source_tokens: dict[str, float] = field(default_factory=dict)
    epochs: dict[str, float] = field(default_factory=dict)
    capped: tuple[str, ...] = ()
    cap_duals: dict[str, float] = field(default_factory=dict)
    at_share_limit: tuple[str, ...] = ()
    share_limit_duals: dict[str, float] = field(default_factory=dict)
    solves: int = 0
    reason: str = ""
    solver: str = ""
    gap: float = float("nan")
    """Certified bound on the loss above the optimum at this D (Newton's Frank-Wolfe gap);
    NaN for a conic solve (whose own tolerances apply)."""


class MixtureProgram:
    """Inner convex mixture problem, built once per (sources, law); D is a parameter.

    Parameters
    ----------
    sources
        The training sources in the mixture law's source order.
    mixture_law
        Anything with the planner hook (`MixtureTarget`).
    scale_law
        Chinchilla-form law for the level and the N / effective-data terms; ``None`` plans the
        mixture alone at a given D.
    domain_weights
        Eval-domain weights of the objective (mapping or vector; ``None``: equal).
    reference
        The mixture the scale law was measured on (default: proportional to unique tokens).
    rd_star
        Repetition scale R_D* of the effective-token formula.
    max_shares
        Optional trust region: the largest share each source may take (a mapping by source
        name; sources left out are unlimited). Mixture laws extrapolate badly beyond the
        mixtures they were fitted on, so the planner caps each source at the largest share
        seen in the training runs when the stored law records it.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        mixture_law: MixtureTarget,
        *,
        scale_law: ScaleLaw | None = None,
        domain_weights=None,
        reference: np.ndarray | None = None,
        rd_star: float = RD_STAR,
        max_shares: Mapping[str, float] | None = None,
        method: str = "newton",
    ) -> None:
        if method not in METHODS:
            raise SpecError(f"mixture: method must be one of {METHODS}, got {method!r}")
        names = tuple(s.name for s in sources)
        if tuple(mixture_law.sources_) != names:
            raise SpecError(
                f"sources: the mixture law covers {list(mixture_law.sources_)}, the spec lists "
                f"{list(names)}; list every source of the law once, in the same order"
            )
        self.sources = tuple(sources)
        self.law = mixture_law
        self.scale = as_constants(scale_law) if scale_law is not None else None
        self.domain_weights = domain_weights
        self.rd_star = rd_star
        self.unique = np.array([s.unique_tokens for s in sources], dtype=float)
        self.caps = np.array([s.cap for s in sources], dtype=float)
        self.decay_scale = self.unique * rd_star  # the repeats' decay scale U R_D* ...
        self.decay_rate = -1.0 / self.decay_scale  # ... and its rate, once per program
        if reference is None:
            reference = self.unique / self.unique.sum()
        self.reference = np.asarray(reference, dtype=float)
        self.reference_target = float(self.law.target_loss(self.reference, domain_weights))
        self.max_shares = _share_limits(names, max_shares)
        self.target = target_derivatives(mixture_law, domain_weights)
        self.method = method if self.target is not None else "cvxpy"
        self.problem: cp.Problem | None = None
        if self.method == "cvxpy":
            self._build()  # the conic program checks convexity (DCP) up front

    def _build(self) -> None:
        count = len(self.sources)
        unique = self.unique / UNIT
        self.x = cp.Variable(count, nonneg=True, name="source_tokens")
        self.total = cp.Parameter(nonneg=True, name="tokens")
        self.inv_total = cp.Parameter(nonneg=True, name="inverse_tokens")
        # the repetition split only where a source can pass its unique tokens: elsewhere
        # D'_j = x_j exactly, and a huge U_j R* would only put a badly scaled term in the cone
        total_cap = float(self.caps.sum())
        repeats = np.flatnonzero((self.caps > self.unique) & (self.unique < total_cap))
        once = np.setdiff1d(np.arange(count), repeats)
        cons = []
        self.d_eff = cp.sum(self.x[once]) if len(once) else 0.0
        if len(repeats):
            s = cp.Variable(len(repeats), nonneg=True)
            z = cp.Variable(len(repeats), nonneg=True)
            scale_r = unique[repeats] * self.rd_star
            self.d_eff = (
                self.d_eff
                + cp.sum(s)
                + cp.sum(cp.multiply(scale_r, 1 - cp.exp(-cp.multiply(1 / scale_r, z))))
            )
            cons += [s + z == self.x[repeats], s <= unique[repeats]]
        weights = self.inv_total * self.x
        objective = scaled_target(self.law, weights, self.domain_weights)
        self.log_b = cp.Parameter(name="log_B")
        self.beta = cp.Parameter(nonneg=True, name="beta")
        if self.scale is not None:
            # B D_eff^-beta = exp(log B - beta log D_eff): convex, and DPP in (B, beta), so a
            # bootstrap draw of the scale law is a parameter change, not a rebuild.
            objective = objective + cp.exp(self.log_b - self.beta * cp.log(self.d_eff))
            self._set_scale_parameters()
        self.caps_constraint = self.x <= self.caps / UNIT
        cons += [cp.sum(self.x) == self.total, self.caps_constraint]
        self.share_constraint = None
        if self.max_shares is not None:
            self.share_constraint = self.x <= cp.multiply(self.max_shares, self.total)
            cons.append(self.share_constraint)
        problem = cp.Problem(cp.Minimize(objective), cons)
        if not problem.is_dcp(dpp=True):
            raise SpecError(
                "mixture: the mixture law's loss_expression is not convex (DCP) in the weights"
            )
        self.problem = problem

    @property
    def max_shares_by_source(self) -> dict[str, float] | None:
        """The trust region by source name (``None`` when there is none)."""
        if self.max_shares is None:
            return None
        return {s.name: float(v) for s, v in zip(self.sources, self.max_shares, strict=True)}

    def set_scale_law(self, scale_law: ScaleLaw) -> None:
        """Swap the scale law (e.g. a bootstrap draw) by changing parameter values."""
        if self.scale is None:
            raise SpecError("mixture: this program was built without a scale law")
        self.scale = as_constants(scale_law)
        if self.problem is not None:
            self._set_scale_parameters()

    def _set_scale_parameters(self) -> None:
        self.log_b.value = math.log(self.scale.B) - self.scale.beta * math.log(UNIT)
        self.beta.value = self.scale.beta

    # -- numeric objective (for searches and checks) ----------------------------------------
    def objective(self, weights: np.ndarray, tokens: float, flops: float | None) -> np.ndarray:
        """Predicted loss of many mixtures ``(M, S)`` at D = ``tokens``; inf where over a cap."""
        weights = np.atleast_2d(np.asarray(weights, dtype=float))
        return self._loss(
            weights, self.law.target_loss(weights, self.domain_weights), tokens, flops
        )

    def _loss(
        self, weights: np.ndarray, target: np.ndarray, tokens: float, flops: float | None
    ) -> np.ndarray:
        """`objective` from the mixture law's target of ``weights`` ``(M, S)``."""
        x = weights * tokens
        value = target - self.reference_target
        if self.scale is not None:
            d_eff = effective_tokens(x, self.unique, self.rd_star).sum(axis=1)
            value = value + self.scale.B * d_eff ** (-self.scale.beta) + self.scale.E
            if flops is not None:
                value = value + self.scale.A * (flops / (6 * tokens)) ** (-self.scale.alpha)
        over = np.any(x > self.caps * (1 + 1e-9), axis=1)
        if self.max_shares is not None:
            over |= np.any(weights > self.max_shares * (1 + 1e-9), axis=1)
        return np.where(over, np.inf, value)

    # -- solves ---------------------------------------------------------------------------
    def solve_at(
        self, tokens: float, *, flops: float | None = None, start: np.ndarray | None = None
    ) -> MixtureResult:
        """The best mixture at D = ``tokens`` (and N = flops / 6D when ``flops`` is given).

        Newton's method on the analytic objective when the law has one (``start``: a warm start,
        e.g. the mixture at a nearby D), certified by its Frank-Wolfe gap; the conic program
        when it has none or the certificate fails.
        """
        total_cap = float(self.caps.sum())
        if tokens > total_cap * (1 + 1e-9):
            return _failed(
                f"the sources hold at most {total_cap:.3g} tokens at their max_epochs but the "
                f"plan needs D = {tokens:.3g}; raise max_epochs or add data",
                tokens,
            )
        if self.method == "newton":
            result = self._solve_newton(tokens, flops, start)
            if result is not None:
                return result
        return self._solve_conic(tokens, flops)

    def _upper(self, tokens: float) -> np.ndarray:
        """Each share's upper bound at D: its cap ``U_j epochs_j / D``, its trust region, 1."""
        upper = np.minimum(1.0, self.caps / tokens)
        return upper if self.max_shares is None else np.minimum(upper, self.max_shares)

    def _data_term(self, tokens: float) -> DataTerm | None:
        if self.scale is None:
            return None
        return DataTerm(
            self.scale.B, self.scale.beta, tokens, self.unique, self.decay_scale, self.decay_rate
        )

    def _objective_at(self, tokens: float):
        """``(derivatives, value)`` of the objective in r at D (constants left out)."""
        target, data = self.target, self._data_term(tokens)
        if data is None:
            return target.derivatives, target.value

        def derivatives(r):
            f, g, h = target.derivatives(r)
            f2, g2, h2 = data.derivatives(r)
            return f + f2, g + g2, h + h2

        return derivatives, lambda r: target.value(r) + data.value(r)

    def _newton(self, tokens: float, start: np.ndarray | None) -> SimplexSolution | None:
        """Newton's solution at D (certified or not); ``None`` when no mixture fits the caps."""
        upper = self._upper(tokens)
        if upper.sum() < 1 - 1e-12:
            return None
        if start is None or len(start) != len(upper):
            start = upper / upper.sum()
        derivatives, value = self._objective_at(tokens)
        return minimize_on_simplex(
            derivatives, value, start, upper, interior=self.target.interior, gap_tol=GAP_TOL
        )

    def _solve_newton(
        self, tokens: float, flops: float | None, start: np.ndarray | None
    ) -> MixtureResult | None:
        solution = self._newton(tokens, start)
        if solution is None:
            return _failed(
                f"at D = {tokens:.3g} the sources' caps (unique tokens x max_epochs) and the "
                "trust region's max shares leave no mixture: raise max_epochs or the shares",
                tokens,
            )
        if not solution.certified:
            return None  # the conic program decides
        return self._newton_result(solution, tokens, flops)

    def _newton_result(
        self, solution: SimplexSolution, tokens: float, flops: float | None
    ) -> MixtureResult:
        at_cap = _cap_is_upper(self.caps / tokens, self.max_shares)
        duals = solution.upper_duals * UNIT / tokens  # per 1e9 tokens, as the conic duals
        at_share = False if self.max_shares is None else ~at_cap & (self.max_shares < 1.0)
        return self._result(
            solution.x,
            tokens,
            flops,
            PlanStatus.OPTIMAL,
            cap_duals=np.where(at_cap, duals, 0.0),
            share_duals=np.where(at_share, duals, 0.0),
            solver="newton",
            gap=solution.gap,
        )

    def _solve_conic(self, tokens: float, flops: float | None) -> MixtureResult:
        if self.problem is None:
            self._build()
        self.total.value = tokens / UNIT
        self.inv_total.value = UNIT / tokens
        status = solve(self.problem)
        if not status.solved or self.x.value is None:
            return _failed(f"the mixture program ended {self.problem.status}", tokens, status)
        x = np.maximum(self.x.value, 0.0) * UNIT
        share_duals = None
        if self.max_shares is not None:
            share_duals = np.abs(self.share_constraint.dual_value)
        return self._result(
            x / x.sum(),
            tokens,
            flops,
            status,
            cap_duals=np.abs(self.caps_constraint.dual_value),
            share_duals=share_duals,
            solver=str(SOLVER).lower(),
        )

    def _result(
        self,
        mixture: np.ndarray,
        tokens: float,
        flops: float | None,
        status: PlanStatus,
        *,
        cap_duals: np.ndarray,
        share_duals: np.ndarray | None,
        solver: str,
        gap: float = float("nan"),
    ) -> MixtureResult:
        names = [s.name for s in self.sources]
        x = mixture * tokens
        mixture_term = (  # the analytic target where there is one: the law's own, and leaner
            self.target.value(mixture)
            if self.target is not None
            else float(self.law.target_loss(mixture, self.domain_weights))
        )
        loss = float(self._loss(mixture[None, :], np.array([mixture_term]), tokens, flops)[0])
        capped = tuple(
            n for n, xi, cap in zip(names, x, self.caps, strict=True) if xi >= cap * (1 - 1e-5)
        )
        params = flops / (6 * tokens) if flops is not None else float("nan")
        at_share_limit, share_limit_duals = (), {}
        if self.max_shares is not None:
            at_share_limit = tuple(
                n
                for n, r, limit in zip(names, mixture, self.max_shares, strict=True)
                if limit < 1 and r >= limit * (1 - 1e-5)
            )
            share_limit_duals = dict(zip(names, share_duals.tolist(), strict=True))
        return MixtureResult(
            status=status,
            mixture=dict(zip(names, mixture.tolist(), strict=True)),
            tokens=tokens,
            params=params,
            loss=loss,
            mixture_term=mixture_term,
            effective_tokens=float(effective_tokens(x, self.unique, self.rd_star).sum()),
            source_tokens=dict(zip(names, x.tolist(), strict=True)),
            epochs=dict(zip(names, (x / self.unique).tolist(), strict=True)),
            capped=capped,
            cap_duals=dict(zip(names, cap_duals.tolist(), strict=True)),
            at_share_limit=at_share_limit,
            share_limit_duals=share_limit_duals,
            solves=1,
            solver=solver,
            gap=gap,
        )

    def _sensitivity(self, solution: SimplexSolution, tokens: float, flops: float) -> Sensitivity:
        """``dV/dlog D``, ``d2V/dlog D^2`` and the shares' path at a solved D, V the best loss at
        D: the objective's partials in ``u = log D`` (``A N^-alpha`` grows as ``e^(alpha u)``,
        the data term through ``x = e^u r``), with each source at its cap following it (a cap
        ``U_j epochs_j / D`` shrinks as ``e^-u``; the envelope theorem adds its multiplier times
        its share to the slope)."""
        t_u, t_uu, t_ur = self._data_term(tokens).log_tokens_partials(solution.x)
        _, p_u, p_uu = self._params_partials(tokens, flops)
        upper, rate = self._moving_upper(tokens)
        at_upper, at_lower = active_bounds(solution.x, np.zeros(len(upper)), upper)
        return sensitivity(
            solution.gradient,
            solution.hessian,
            solution.price,
            at_upper,
            at_lower,
            f_t=t_u + p_u,
            f_tt=t_uu + p_uu,
            f_tx=t_ur,
            upper_rate=rate,
            upper_curve=-rate,
        )

    def _moving_upper(self, tokens: float) -> tuple[np.ndarray, np.ndarray]:
        """The shares' upper bounds at D and their derivative in log D: ``-cap share`` where
        the bound is a cap ``U_j epochs_j / D`` (which shrinks as ``e^-u``; its second
        derivative is ``+cap share``), 0 where it is a trust-region share or 1."""
        upper = self._upper(tokens)
        return upper, np.where(_cap_is_upper(self.caps / tokens, self.max_shares), -upper, 0.0)

    def _params_partials(self, tokens: float, flops: float) -> tuple[float, float, float]:
        """``A N^-alpha`` at ``N = flops / 6D`` and its first two derivatives in ``log D``
        (it grows as ``e^(alpha u)``)."""
        params = self._params_term(tokens, flops)
        alpha = self.scale.alpha
        return params, alpha * params, alpha**2 * params

    def _params_term(self, tokens: float, flops: float) -> float:
        """``A N^-alpha`` at ``N = flops / 6D``."""
        return self.scale.A * (flops / (6 * tokens)) ** (-self.scale.alpha)

    def plan(
        self,
        *,
        flops: float,
        max_params: float | None = None,
        min_tokens: float | None = None,
        max_tokens: float | None = None,
        grid_points: int = 7,
        tol: float = 5e-3,
    ) -> MixtureResult:
        """Mixture and D jointly at budget ``flops``: a 1-D search on log D over inner solves.

        D ranges from ``max(flops / (6 max_params), min_tokens)`` to the sources' total cap,
        ``max_tokens`` and ``flops / 6`` (N >= 1), within 100x of the scale law's
        compute-optimal D. With Newton's inner solves the search is Newton's method on
        ``V(log D)`` from the compute-optimal D (`_plan_by_newton`), each solve warm-started on
        the shares' tangent at the last D; otherwise a fixed grid of ``grid_points``, then golden
        section. Both are deterministic: every run of a plan makes the same solves from the
        same starts, so it returns the same D.
        """
        if self.scale is None:
            raise SpecError("mixture: planning D needs a scale law (the [law] section)")
        total_cap = float(self.caps.sum())
        hi = math.log(min(total_cap, flops / 6.0, max_tokens or math.inf))
        lo = math.log(max(flops / (6.0 * max_params) if max_params else 1.0, min_tokens or 1.0))
        # search within 100x of the scale law's compute-optimal D (a mixture moves D less)
        _, chinchilla_tokens, _ = closed_form(self.scale, flops)
        window = math.log(100.0)
        centre = min(max(math.log(chinchilla_tokens), lo), hi)
        if hi > lo:
            lo, hi = max(lo, centre - window), min(hi, centre + window)
        if lo > hi:
            return _failed(
                f"the sources hold at most {total_cap:.3g} tokens at their max_epochs but "
                f"max_params = {max_params:.3g} needs D >= {math.exp(lo):.3g} at this budget",
                math.exp(lo),
            )
        if self.method == "newton":
            best = self._plan_jointly(flops, lo, hi, centre, tol)
            if best is None:
                best = self._plan_by_newton(flops, lo, hi, centre, tol)
            if best is not None:
                return best
        return self._plan_by_golden_section(flops, lo, hi, grid_points, tol)

    def _plan_jointly(
        self, flops: float, lo: float, hi: float, centre: float, tol: float
    ) -> MixtureResult | None:
        """Newton's method in (log D, shares) together from the compute-optimal D
        (planning/programs/joint_newton.py), the shares then certified at its D by the inner
        solve's Frank-Wolfe gap; ``None`` when it does not settle or the certificate fails
        (the outer 1-D search takes over)."""
        target = self.target

        def model(log_tokens: float, r: np.ndarray):
            tokens = math.exp(log_tokens)
            f, g, h = target.derivatives(r)
            value, g_data, h_data, t_u, t_uu, t_ur = self._data_term(tokens).joint_derivatives(r)
            params, p_u, p_uu = self._params_partials(tokens, flops)
            return f + value + params, g + g_data, h + h_data, t_u + p_u, t_uu + p_uu, t_ur

        def bounds(log_tokens: float):
            upper, rate = self._moving_upper(math.exp(log_tokens))
            return upper, rate, -rate

        upper = self._upper(math.exp(centre))
        if upper.sum() < 1 - 1e-12:
            return None
        joint = minimize_jointly(
            model,
            bounds,
            centre,
            upper / upper.sum(),
            lo,
            hi,
            t_tol=tol / 10,
            decrement_tol=JOINT_DECREMENT,
            interior=target.interior,
        )
        if joint is None:
            return None
        tokens = math.exp(joint.t)
        solution = self._newton(tokens, joint.x)
        if solution is None or not solution.certified:
            return None
        return self._newton_result(solution, tokens, flops)  # one inner solve: the certificate

    def _plan_by_newton(
        self, flops: float, lo: float, hi: float, centre: float, tol: float
    ) -> MixtureResult | None:
        """Newton's method on ``V(log D)`` from ``centre``, V the best loss at D: each step
        solves at ``u - V'/V''`` (both from the inner solution's `sensitivity`), warm-started on
        the shares' tangent; it stops at the first solved D whose Newton step is below
        ``tol / 10`` in log D. Safeguards: steps at most `MAX_LOG_STEP`; a step outside the
        bracket the slopes' signs have set (or where ``V'' <= 0``) bisects it, or walks on by
        doubling steps until the slope changes sign; an edge of ``[lo, hi]`` where the slope
        still points out is the optimum. ``None`` when a solve is not certified or the search
        does not settle (the caller falls back)."""
        xtol = tol / 10
        solutions: dict[float, SimplexSolution] = {}
        solutions_slope: dict[float, float] = {}
        left, right = lo, hi  # the root lies between (a solved D's slope says which side)
        left_solved = right_solved = False
        u, start, walk = centre, None, SLOPE_STEP
        for _ in range(MAX_OUTER_STEPS):
            solution = self._newton(math.exp(u), start)
            if solution is None or not solution.certified:
                return None
            solutions[u] = solution
            change = self._sensitivity(solution, math.exp(u), flops)
            slope, curvature = change.slope, change.curvature
            solutions_slope[u] = slope
            if slope == 0:
                break
            if slope < 0:
                left, left_solved = u, True
            else:
                right, right_solved = u, True
            if curvature > 0 and abs(slope) / curvature < xtol:
                break  # the next Newton step is within the tolerance
            if left_solved and right_solved and right - left < xtol:
                break
            step = -slope / curvature if curvature > 0 else -math.copysign(walk, slope)
            target = u + min(max(step, -MAX_LOG_STEP), MAX_LOG_STEP)
            if left_solved and right_solved and abs(step) > NEWTON_SHARE * (right - left):
                # V'' jumps where the active set changes, so far from the root Newton's step
                # can land worse than the secant through the bracket's ends
                a, b = solutions_slope[left], solutions_slope[right]
                target = left - a * (right - left) / (b - a)
            if not left < target < right:
                if left_solved and right_solved:
                    target = 0.5 * (left + right)
                elif target <= left:
                    target, walk = (left if left_solved else lo), 2 * walk
                else:
                    target, walk = (right if right_solved else hi), 2 * walk
                if target in solutions:  # an edge where the slope still points out
                    break
            if left_solved and right_solved:
                # between two solved D's: the line through their shares (sources enter and
                # leave the active set between them, which one end's tangent cannot see; a
                # cubic Hermite path through both tangents took more steps on RegMix)
                share = (target - left) / (right - left)
                start = solutions[left].x + share * (solutions[right].x - solutions[left].x)
            else:
                start = solution.x + change.tangent * (target - u)
                start = np.where(solution.upper_duals > 0, self._upper(math.exp(target)), start)
                start = np.where(solution.lower_duals > 0, 0.0, start)
            u = target
        else:
            return None
        # the best D solved: same constants (E, the reference's mixture term) at every D
        values = {g: s.value + self._params_term(math.exp(g), flops) for g, s in solutions.items()}
        best = min(values, key=values.__getitem__)
        result = self._newton_result(solutions[best], math.exp(best), flops)
        return _replace_solves(result, len(solutions))

    def _plan_by_golden_section(
        self, flops: float, lo: float, hi: float, grid_points: int, tol: float
    ) -> MixtureResult:
        cache: dict[float, MixtureResult] = {}

        def loss(log_tokens: float) -> float:
            result = self.solve_at(math.exp(log_tokens), flops=flops)
            cache[log_tokens] = result
            return result.loss if result.status.solved else math.inf

        grid = np.linspace(lo, hi, grid_points)
        values = [loss(g) for g in grid]
        if not any(math.isfinite(v) for v in values):  # no D gives a solved mixture
            return _replace_solves(cache[grid[len(grid) // 2]], len(cache))
        a, b = bracket_on_grid(values, grid)
        # golden section, not Brent: its steps depend only on comparisons of the inner losses,
        # so solver round-off (1e-12) cannot move D between runs as parabolic steps would
        golden_section(loss, a, b, tol=tol)
        best = min((r for r in cache.values() if r.status.solved), key=lambda r: r.loss)
        return _replace_solves(best, len(cache))


def _cap_is_upper(cap_shares: np.ndarray, max_shares: np.ndarray | None) -> np.ndarray:
    """Where a share's upper bound is its cap ``U_j epochs_j / D`` (not its trust-region share
    or 1)."""
    if max_shares is None:
        return cap_shares <= 1.0
    return cap_shares <= np.minimum(max_shares, 1.0)


def _share_limits(
    names: tuple[str, ...], max_shares: Mapping[str, float] | None
) -> np.ndarray | None:
    """The trust-region shares in source order (1 where a source is unlimited)."""
    if max_shares is None:
        return None
    unknown = sorted(set(max_shares) - set(names))
    if unknown:
        raise SpecError(f"mixture max_shares: unknown source(s) {unknown}; sources are {names}")
    limits = np.array([float(max_shares.get(n, 1.0)) for n in names])
    if np.any(limits <= 0) or np.any(limits > 1) or limits.sum() < 1 - 1e-9:
        raise SpecError(
            f"mixture max_shares must lie in (0, 1] and sum to at least 1 (so some mixture "
            f"fits), got {dict(zip(names, limits.tolist(), strict=True))}"
        )
    return limits


def _replace_solves(result: MixtureResult, solves: int) -> MixtureResult:
    from dataclasses import replace

    return replace(result, solves=solves)


def _failed(
    reason: str, tokens: float, status: PlanStatus = PlanStatus.INFEASIBLE
) -> MixtureResult:
    nan = float("nan")
    return MixtureResult(status, {}, tokens, nan, nan, nan, nan, reason=reason)


def simplex_grid(sources: int, steps: int) -> np.ndarray:
    """Every mixture on the ``1/steps`` simplex grid, shape ``(C(steps+S-1, S-1), S)``."""
    from itertools import combinations

    rows = []
    for bars in combinations(range(steps + sources - 1), sources - 1):
        edges = (-1, *bars, steps + sources - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(sources)])
    return np.asarray(rows, dtype=float) / steps
