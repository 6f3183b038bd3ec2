"""Every mixture solve checked against two independent methods on the same objective.

Each family the planner optimises (exponential, additive, additive with N and D, joint
additive, per-source) with 5, 7, 17 and 50 sources, with and without token caps and repetition:
the convex solve at D must be no worse than a multi-start SLSQP on ``MixtureProgram.objective``
(by more than 1e-6 relative) and no worse than the best of 100,000 random Dirichlet mixtures.
Real fitted laws come from RegMix (17 Pile sources, 512 runs) and 5Mix (5 sources, 70M-410M),
synthetic ones cover 50 sources. Laws are fitted once per module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize

from mixplan.planning.laws.chinchilla import SARDANA
from mixplan.planning.laws.repetition import effective_tokens
from mixplan.planning.mixture.additive import AdditiveLaw, AdditiveScaleLaw
from mixplan.planning.mixture.base import DomainFit
from mixplan.planning.mixture.data import MixtureData
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.mixture.per_source import PerSourceLaw
from mixplan.planning.programs.mixture import MixtureProgram, Source

FLOPS = 1e21
TOKENS = 7e10
RANDOM_MIXTURES = 100_000
SLSQP_STARTS = 4
REL_TOL = 1e-6


def _regmix(bundled: Path, domains: int | None = None) -> MixtureData:
    folder = bundled / "sail-sg__regmix"
    mix = pl.read_csv(folder / "train_mixture_1m.csv")
    loss = pl.read_csv(folder / "train_pile_loss_1m.csv")
    sources = [c.removeprefix("train_the_pile_") for c in mix.columns[1:]]
    names = [c.removeprefix("metric/the_pile_").removesuffix("_val_loss") for c in loss.columns[1:]]
    keep = slice(None) if domains is None else slice(0, domains)
    return MixtureData.from_arrays(
        mix.select(mix.columns[1:]).to_numpy(),
        loss.select(loss.columns[1:]).to_numpy()[:, keep],
        sources=sources,
        domains=names[keep],
    )


@pytest.fixture(scope="module")
def regmix_exponential(bundled) -> ExponentialLaw:
    """The 17-source exponential law of the issue (several domains at log k = -30)."""
    return ExponentialLaw().fit(_regmix(bundled))


@pytest.fixture(scope="module")
def regmix_additive(bundled) -> AdditiveLaw:
    return AdditiveLaw().fit(_regmix(bundled, domains=2))


@pytest.fixture(scope="module")
def regmix_per_source(bundled) -> PerSourceLaw:
    return PerSourceLaw(tokens=1e9).fit(_regmix(bundled, domains=2))


@pytest.fixture(scope="module")
def five_mix(bundled, tmp_path_factory) -> MixtureData:
    """5Mix (Pythia-style 70M-410M on 5-domain Pile mixtures) through the ingest stage: every
    64th complete checkpoint, each with its N and D."""
    from mixplan.tasks.ingest import ingest_paths
    from mixplan.tasks.mixture import read_mixture_curves

    lake = tmp_path_factory.mktemp("five-mix") / "lake"
    assert ingest_paths([bundled / "yegcjs__mixinglaws" / "5Mix"], lake).usable
    curves = read_mixture_curves(str(lake), "mixinglaws-5mix")
    complete = np.flatnonzero(np.all(np.isfinite(curves.losses), axis=1))
    rows = complete[::64]
    runs = curves.row_run[rows]
    return MixtureData.from_arrays(
        curves.mixture[runs],
        curves.losses[rows],
        sources=curves.sources,
        domains=curves.domains,
        run_ids=[curves.run_ids[r] for r in runs],
        params=curves.params[runs],
        tokens=curves.tokens[rows],
    )


def _synthetic(family: str, sources: int, domains: int = 4, seed: int = 0):
    """A law of ``family`` with random convex parameters, set directly (no fit)."""
    rng = np.random.default_rng(seed)
    names = tuple(f"s{j}" for j in range(sources))
    if family == "exponential":
        law = ExponentialLaw()
        thetas = [
            np.r_[rng.uniform(1, 3), rng.uniform(-30, 2), rng.uniform(-8, 3, sources)]
            for _ in range(domains)
        ]
    elif family == "additive":
        law = AdditiveLaw()
        thetas = [
            np.r_[rng.uniform(1, 3), rng.uniform(-5, 8, sources), rng.uniform(0.1, 1.0, sources)]
            for _ in range(domains)
        ]
    else:
        law = PerSourceLaw(tokens=1e9)  # each source's term of order 1 / sources nats
        thetas = [
            np.r_[
                rng.uniform(1, 2),
                rng.uniform(-2, 0.5, sources) - np.log(sources),
                rng.uniform(np.log(1e-3), np.log(10), sources),
                rng.uniform(0.05, 0.8, sources),
            ]
            for _ in range(domains)
        ]
    law.sources_ = names
    law.domains_ = tuple(f"d{i}" for i in range(domains))
    law.fits_ = tuple(DomainFit(d, t, 0.0, True) for d, t in zip(law.domains_, thetas, strict=True))
    return law


def _sources(names, regime: str) -> list[Source]:
    """Token caps: ``free`` (never bind), ``caps`` (one pass, some bind), ``repeat`` (small
    sources repeated up to 8 epochs, so effective tokens D' < D)."""
    count = len(names)
    if regime == "free":
        return [Source(n, 1e15, 1.0) for n in names]
    shares = np.linspace(0.3, 3.0, count) / count  # some sources hold less than D / count
    if regime == "caps":
        return [Source(n, float(TOKENS * s * 1.5), 1.0) for n, s in zip(names, shares, strict=True)]
    return [Source(n, float(TOKENS * s / 4), 8.0) for n, s in zip(names, shares, strict=True)]


def _slsqp(program: MixtureProgram, tokens: float, rng) -> float:
    """Best SLSQP answer over several starts on the program's own numeric objective."""
    upper = np.minimum(1.0, program.caps / tokens)
    if program.max_shares is not None:
        upper = np.minimum(upper, program.max_shares)

    def f(r):
        return float(program.objective(np.clip(r, 0, upper), tokens, FLOPS)[0])

    def grad(r):  # forward differences, all coordinates in one vectorised call
        h = 1e-7
        r = np.clip(r, 0, upper - h)
        values = program.objective(np.vstack([r, r + h * np.eye(len(r))]), tokens, FLOPS)
        return (values[1:] - values[0]) / h

    best = np.inf
    count = len(upper)
    extra = SLSQP_STARTS if count <= 20 else 1  # 50 dimensions: fewer, slower starts
    starts = [upper / upper.sum()] + [rng.dirichlet(np.ones(count)) for _ in range(extra)]
    for x0 in starts:
        x0 = np.minimum(x0, upper)
        x0 = x0 / x0.sum() if x0.sum() > 0 else upper / upper.sum()
        res = minimize(
            f,
            x0,
            method="SLSQP",
            jac=grad,
            bounds=list(zip(np.zeros(count), upper, strict=True)),
            constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0}],
            options={"ftol": 1e-12, "maxiter": 400 if count <= 20 else 200},
        )
        r = np.clip(res.x, 0, upper)
        if abs(r.sum() - 1) < 1e-7:
            best = min(best, f(r / r.sum()) if np.all(r / r.sum() <= upper * (1 + 1e-9)) else f(r))
    return best


def _random(program: MixtureProgram, tokens: float, rng) -> float:
    """Best of 100,000 Dirichlet mixtures (RegMix's search), in chunks."""
    best = np.inf
    for _ in range(10):
        draws = rng.dirichlet(np.ones(len(program.sources)), RANDOM_MIXTURES // 10)
        best = min(best, float(np.min(program.objective(draws, tokens, FLOPS))))
    return best


def _check(law, regime: str, seed: int = 0, *, newton: bool = True) -> None:
    """``newton=False``: a case Newton does not certify (the conic program answers)."""
    program = MixtureProgram(_sources(law.sources_, regime), law, scale_law=SARDANA)
    result = program.solve_at(TOKENS, flops=FLOPS)
    assert result.status.solved, result.reason
    if newton:  # the planner's path: Newton on the analytic objective, certified by its gap
        assert result.solver == "newton" and result.gap <= 1e-9 * abs(result.loss), result
    else:
        assert result.solver == "clarabel"
    convex = result.loss
    mixture = np.array(list(result.mixture.values()))
    assert mixture.sum() == pytest.approx(1, abs=1e-8) and np.all(mixture >= -1e-9)
    for s, x in zip(program.sources, result.source_tokens.values(), strict=True):
        assert x <= s.cap * (1 + 1e-6)
    rng = np.random.default_rng(seed)
    slsqp = _slsqp(program, TOKENS, rng)
    random = _random(program, TOKENS, rng)
    assert convex <= slsqp + REL_TOL * abs(slsqp), (convex, slsqp)
    assert convex <= random, (convex, random)


@pytest.mark.parametrize("regime", ["free", "caps", "repeat"])
def test_regmix_exponential_17_sources(regmix_exponential, regime):
    """The issue's case: Clarabel returned 1.8909 where SLSQP found 1.8401 (unscaled log k)."""
    _check(regmix_exponential, regime)


@pytest.mark.parametrize("regime", ["free", "repeat"])
def test_regmix_additive_17_sources(regmix_additive, regime):
    # free: several shares' optima sit near 1e-13 on h^gamma terms with gamma near 0, where
    # Newton converges only linearly; its certificate fails and the conic program answers
    _check(regmix_additive, regime, newton=regime != "free")


@pytest.mark.parametrize("regime", ["free", "caps"])
def test_regmix_per_source_17_sources(regmix_per_source, regime):
    _check(regmix_per_source, regime)


@pytest.mark.parametrize(
    "law",
    [
        pytest.param(ExponentialLaw(), id="exponential"),
        pytest.param(AdditiveScaleLaw(params=4.1e8, tokens=2e10), id="additive-scale"),
        pytest.param(AdditiveScaleLaw(joint=True, params=4.1e8, tokens=2e10), id="joint"),
    ],
)
def test_five_mix_5_sources(five_mix, law):
    """Real 5Mix laws, including the joint additive law whose optimum moves with N and D."""
    fitted = law.fit(five_mix)
    for regime in ("free", "repeat"):
        _check(fitted, regime)


@pytest.mark.parametrize("family", ["exponential", "additive", "per_source"])
@pytest.mark.parametrize("sources", [7, 50])
def test_synthetic_laws(family, sources):
    law = _synthetic(family, sources, seed=sources)
    for regime in ("free", "caps", "repeat") if sources < 50 else ("caps", "repeat"):
        _check(law, regime, seed=sources)


def test_joint_plan_is_deterministic_and_beats_its_grid(regmix_exponential):
    """The D of the joint (D, mixture) plan is the same on every run, with a fresh or a reused
    program, and no D on a fine grid does better."""
    sources = _sources(regmix_exponential.sources_, "repeat")
    first = MixtureProgram(sources, regmix_exponential, scale_law=SARDANA).plan(flops=FLOPS)
    reused = MixtureProgram(sources, regmix_exponential, scale_law=SARDANA)
    reused.set_scale_law(SARDANA.replace(B=SARDANA.B * 2))
    reused.solve_at(TOKENS, flops=FLOPS)
    reused.set_scale_law(SARDANA)
    again = reused.plan(flops=FLOPS)
    assert first.status.solved and again.tokens == first.tokens
    # the optimum is flat in some directions: shares agree to the solver's tolerance
    assert again.mixture == pytest.approx(first.mixture, abs=1e-5)
    grid = np.exp(np.linspace(np.log(first.tokens) - 1, np.log(first.tokens) + 1, 9))
    others = [reused.solve_at(float(d), flops=FLOPS) for d in grid]
    assert all(first.loss <= r.loss + 1e-9 for r in others if r.status.solved)


@pytest.mark.parametrize("family", ["exponential", "additive", "per_source"])
@pytest.mark.parametrize("regime", ["free", "caps", "repeat", "trust"])
def test_newton_agrees_with_the_conic_program(family, regime):
    """Newton's certified answer against the conic (cvxpy / Clarabel) program, the reference,
    on the same instance: no worse, and the same loss to the conic solver's tolerance (with
    fewer domains than sources the optimum is flat: the shares themselves may differ)."""
    law = _synthetic(family, 7, seed=3)
    sources = _sources(law.sources_, "caps" if regime == "trust" else regime)
    shares = {"s0": 0.12, "s6": 0.2} if regime == "trust" else None
    newton, conic = (
        MixtureProgram(sources, law, scale_law=SARDANA, max_shares=shares, method=m).solve_at(
            TOKENS, flops=FLOPS
        )
        for m in ("newton", "cvxpy")
    )
    assert newton.solver == "newton" and conic.solver == "clarabel"
    assert newton.loss <= conic.loss + 1e-9 * abs(conic.loss)
    assert newton.loss == pytest.approx(conic.loss, rel=1e-7)


def test_newton_caps_and_shadow_prices_agree_with_the_conic_program(regmix_exponential):
    """On the 17-source RegMix law with repetition the binding caps are unique: the same
    sources capped, with the same shadow prices (per 1e9 tokens) as the conic duals."""
    weights = np.linspace(3.0, 0.3, len(regmix_exponential.sources_))
    sources = [
        Source(name, float(2e9 * w**2), 4.0 if w > 1 else 2.0)
        for name, w in zip(regmix_exponential.sources_, weights, strict=True)
    ]
    newton, conic = (
        MixtureProgram(sources, regmix_exponential, scale_law=SARDANA, method=m).solve_at(
            5.4e10, flops=FLOPS
        )
        for m in ("newton", "cvxpy")
    )
    assert newton.loss <= conic.loss + 1e-9 * abs(conic.loss)
    assert newton.capped == conic.capped and len(newton.capped) >= 2
    for name in newton.capped:
        assert newton.cap_duals[name] == pytest.approx(conic.cap_duals[name], rel=1e-4)


def test_newton_plan_agrees_with_the_conic_plan(regmix_exponential):
    """The joint (D, mixture) plan by Newton and the slope search against the conic program's
    grid and golden section: a loss no worse (to the searches' tolerance) at a D within it."""
    sources = _sources(regmix_exponential.sources_, "repeat")
    newton, conic = (
        MixtureProgram(sources, regmix_exponential, scale_law=SARDANA, method=m).plan(flops=FLOPS)
        for m in ("newton", "cvxpy")
    )
    assert newton.solver == "newton" and conic.solver == "clarabel"
    assert newton.loss <= conic.loss + 1e-8 * abs(conic.loss)
    assert np.log(newton.tokens) == pytest.approx(np.log(conic.tokens), abs=1e-2)


@pytest.mark.parametrize("family", ["exponential", "additive", "per_source"])
def test_analytic_derivatives_match_the_law(family):
    """Newton's objective is the law's own target (values), with exact gradient and Hessian
    (central differences), the effective-data term included (some shares past their caps)."""
    law = _synthetic(family, 7, seed=5)
    program = MixtureProgram(_sources(law.sources_, "repeat"), law, scale_law=SARDANA)
    derivatives, value = program._objective_at(TOKENS)
    rng = np.random.default_rng(1)
    for r in rng.dirichlet(np.ones(7), 3):
        f, g, h = derivatives(r)
        assert f == pytest.approx(value(r), rel=1e-13)
        # the law's own target plus B D'^-beta (caps aside: these shares may pass them)
        own = law.target_loss(r, None) + program.scale.B * float(
            effective_tokens(r * TOKENS, program.unique, program.rd_star).sum()
        ) ** (-program.scale.beta)
        assert f == pytest.approx(float(own), rel=1e-12)
        step = 1e-6
        for j in range(7):
            e = np.zeros(7)
            e[j] = step
            fd_g = (value(r + e) - value(r - e)) / (2 * step)
            fd_h = (derivatives(r + e)[1] - derivatives(r - e)[1]) / (2 * step)
            assert g[j] == pytest.approx(fd_g, rel=1e-5, abs=1e-8)
            np.testing.assert_allclose(h[:, j], fd_h, rtol=1e-4, atol=1e-6)


def test_slope_search_stops_within_its_tolerance_of_the_best_d(regmix_exponential):
    """The outer search stops once a Newton step on ``dV/dlog D`` is below ``tol / 10`` in
    log D: the plan's D is that close to the best D found by an
    independent golden section on the inner solves' losses (to 1e-6 in log D), and its loss
    no worse than there to the flatness of V over that distance."""
    from mixplan.planning.programs.common import golden_section

    sources = _sources(regmix_exponential.sources_, "repeat")
    program = MixtureProgram(sources, regmix_exponential, scale_law=SARDANA)
    plan = program.plan(flops=FLOPS)  # tol = 5e-3 in log D: the search stops at tol / 10
    centre = float(np.log(plan.tokens))
    best, value, _ = golden_section(
        lambda g: program.solve_at(float(np.exp(g)), flops=FLOPS).loss,
        centre - 0.05,
        centre + 0.05,
        tol=1e-6,
    )
    assert abs(centre - best) < 5e-4
    assert plan.loss <= value + 1e-8 * abs(value)


@pytest.mark.parametrize("trust_region", [False, True])
def test_outer_search_derivatives_match_finite_differences(regmix_exponential, trust_region):
    """The outer Newton search's ``dV/dlog D``, ``d2V/dlog D^2`` and the shares' tangent (the
    inner solution's sensitivity) against central differences of certified inner solves, at
    D's where sources sit at their moving caps (and, with a trust region, at fixed share
    limits): V is the best loss at D, so its derivatives come from solves, not formulas."""
    names = regmix_exponential.sources_
    weights = np.linspace(3.0, 0.3, len(names))
    sources = [
        Source(n, float(2e9 * w**2), 4.0 if w > 1 else 2.0)
        for n, w in zip(names, weights, strict=True)
    ]
    limits = {names[2]: 0.2, names[7]: 0.3} if trust_region else None
    program = MixtureProgram(sources, regmix_exponential, scale_law=SARDANA, max_shares=limits)
    step = 1e-3

    def solve(log_tokens: float):
        solution = program._newton(float(np.exp(log_tokens)), None)
        assert solution.certified
        value = solution.value + program._params_term(float(np.exp(log_tokens)), FLOPS)
        return value, solution

    moving_caps = share_limits = 0
    for log_tokens in (24.3, 24.7, 25.0):
        value, solution = solve(log_tokens)
        (up, above), (down, below) = solve(log_tokens + step), solve(log_tokens - step)
        change = program._sensitivity(solution, float(np.exp(log_tokens)), FLOPS)
        slope_up = program._sensitivity(above, float(np.exp(log_tokens + step)), FLOPS).slope
        slope_down = program._sensitivity(below, float(np.exp(log_tokens - step)), FLOPS).slope
        # central differences carry O(step^2) error: 1e-6 in slope is 5e-6 in log D at V'' ~ 0.2
        assert change.slope == pytest.approx((up - down) / (2 * step), rel=1e-4, abs=1e-6)
        assert change.curvature == pytest.approx(
            (slope_up - slope_down) / (2 * step), rel=1e-4, abs=1e-6
        )
        np.testing.assert_allclose(change.tangent, (above.x - below.x) / (2 * step), atol=1e-6)
        caps = program.caps / np.exp(log_tokens)
        moving_caps += int(np.sum(solution.x >= caps * (1 - 1e-9)))
        if limits is not None:
            share_limits += int(np.sum(solution.x >= program.max_shares * (1 - 1e-9)))
    assert moving_caps > 0  # the moving-cap terms are exercised
    assert share_limits > 0 or not trust_region


@pytest.mark.parametrize(
    ("family", "trust_region"),
    [("exponential", False), ("exponential", True), ("additive", False), ("per_source", False)],
)
def test_joint_newton_plan_matches_the_outer_search(
    family, trust_region, regmix_exponential, regmix_additive, regmix_per_source, monkeypatch
):
    """The joint Newton iteration in (log D, shares) lands where the outer 1-D search over
    certified inner solves does (D within its tolerance, 5e-4 in log D, and a loss no worse),
    in one certified inner solve, for every family with derivatives (the additive law's shares
    kept interior) and with a trust region."""
    import mixplan.planning.programs.mixture as mixture_module

    law = {
        "exponential": regmix_exponential,
        "additive": regmix_additive,
        "per_source": regmix_per_source,
    }[family]
    names = law.sources_
    limits = {names[2]: 0.2, names[7]: 0.3} if trust_region else None
    program = MixtureProgram(_sources(names, "repeat"), law, scale_law=SARDANA, max_shares=limits)
    joint = program.plan(flops=FLOPS)
    assert joint.solves == 1 and joint.status.solved and joint.gap <= 1e-9
    monkeypatch.setattr(mixture_module, "minimize_jointly", lambda *args, **kwargs: None)
    outer = program.plan(flops=FLOPS)
    assert outer.solves > 1
    assert abs(np.log(joint.tokens) - np.log(outer.tokens)) < 5e-4
    assert joint.loss <= outer.loss + 1e-9 * abs(outer.loss)
