"""The convex programs: DPP re-solves, limits, duals, statuses, robust plan, frontier, mixture."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest

from mixplan.planning.errors import SpecError
from mixplan.planning.laws.chinchilla import EPOCH, SARDANA
from mixplan.planning.laws.repetition import effective_tokens
from mixplan.planning.programs.budget import BudgetProgram, closed_form, robust_budget
from mixplan.planning.programs.common import PlanStatus, golden_section
from mixplan.planning.programs.frontier import frontier
from mixplan.planning.programs.inference import TargetProgram
from mixplan.planning.programs.mixture import (
    ExponentialMixture,
    MixtureProgram,
    Source,
    simplex_grid,
)
from mixplan.planning.programs.vocabulary import VocabularyProgram


@pytest.fixture(scope="module")
def budget() -> BudgetProgram:
    return BudgetProgram()


def test_whatif_resolves_the_same_problem_object(budget):
    problem = budget.problem(False)[0]
    for flops in (1e21, 1e22, 1e23):
        r = budget.solve(SARDANA, flops=flops)
        assert r.params == pytest.approx(closed_form(SARDANA, flops)[0], rel=1e-3)
    assert budget.problem(False)[0] is problem
    # a different law is a parameter change too
    r = budget.solve(EPOCH, flops=1e23)
    assert r.params == pytest.approx(closed_form(EPOCH, 1e23)[0], rel=1e-3)
    assert budget.problem(False)[0] is problem


@pytest.mark.parametrize("law", [SARDANA, EPOCH], ids=["sardana", "epoch"])
def test_budget_plan_is_the_closed_form_n_and_d(budget, law):
    """N and D each against Chinchilla's closed form (not only N, and not N D alone, which
    an N <-> D swap would keep), and against the ratio limit's own closed form."""
    for flops in (1e21, 1e23):
        params, tokens, _ = closed_form(law, flops)
        r = budget.solve(law, flops=flops)
        assert r.params == pytest.approx(params, rel=1e-3)
        assert r.tokens == pytest.approx(tokens, rel=1e-3)
        assert 6 * r.params * r.tokens == pytest.approx(flops, rel=1e-6)
    # D/N <= 5 binds (the free optimum is ~20 tokens a parameter): 6 N (5 N) = C
    r = budget.solve(law, flops=1e23, max_tokens_per_param=5)
    assert r.params == pytest.approx(math.sqrt(1e23 / 30), rel=1e-5)
    assert r.tokens == pytest.approx(5 * math.sqrt(1e23 / 30), rel=1e-5)


def test_max_params_binds_with_a_shadow_price_matching_finite_differences(budget):
    cap = 2e10
    r = budget.solve(SARDANA, flops=1e24, max_params=cap)
    assert r.params == pytest.approx(cap, rel=1e-6)
    assert set(r.binding) == {"budget", "max_params"}
    # dual of log N <= log cap is -dL/dlog(cap)
    step = 1e-3
    looser = budget.solve(SARDANA, flops=1e24, max_params=cap * math.exp(step))
    assert (r.loss - looser.loss) / step == pytest.approx(r.duals["max_params"], rel=1e-2)
    # budget shadow price against a re-solve
    more = budget.solve(SARDANA, flops=1e24 * math.exp(step), max_params=cap)
    assert (r.loss - more.loss) / step == pytest.approx(r.duals["budget"], rel=1e-2)


def test_data_time_and_ratio_limits(budget):
    r = budget.solve(SARDANA, flops=1e24, max_tokens=1e12)
    assert r.tokens == pytest.approx(1e12, rel=1e-6)
    assert "max_tokens" in r.binding
    r = budget.solve(SARDANA, flops=1e24, max_train_flops=1e23)
    assert r.train_flops == pytest.approx(1e23, rel=1e-6)
    assert r.binding == ["train_time"]
    r = budget.solve(SARDANA, flops=1e24, max_tokens_per_param=20)
    assert r.tokens_per_param == pytest.approx(20, rel=1e-5)
    r = budget.solve(SARDANA, flops=1e24, min_tokens_per_param=500)
    assert r.tokens_per_param == pytest.approx(500, rel=1e-5)


def test_budget_statuses(budget):
    r = budget.solve(SARDANA, flops=math.inf)
    assert r.status is PlanStatus.UNBOUNDED and "E = 1.69" in r.reason
    r = budget.solve(SARDANA, flops=1e23, min_tokens_per_param=100, max_tokens_per_param=10)
    assert r.status is PlanStatus.INFEASIBLE and "min_tokens_per_param" in r.reason
    # no budget, but both caps: best reachable model
    r = budget.solve(SARDANA, flops=math.inf, max_params=1e10, max_tokens=1e12)
    assert r.status is PlanStatus.OPTIMAL
    assert r.params == pytest.approx(1e10, rel=1e-6) and r.tokens == pytest.approx(1e12, rel=1e-6)


def test_inference_budget_covers_lifetime_compute(budget):
    r = budget.solve(SARDANA, flops=1e24, inference_tokens=5e12)
    assert r.train_flops + r.inference_flops == pytest.approx(1e24, rel=1e-6)
    plain = budget.solve(SARDANA, flops=1e24)
    assert r.params < plain.params and r.tokens_per_param > plain.tokens_per_param


def test_target_infeasible_names_best_reachable():
    program = TargetProgram()
    r = program.solve(SARDANA, target_loss=1.8, max_tokens=1e12, max_params=1e12)
    assert r.status is PlanStatus.INFEASIBLE
    assert "no model reaches loss 1.8" in r.reason and "best reachable is 1.893" in r.reason
    assert r.best_reachable_loss == pytest.approx(float(SARDANA.predict(1e12, 1e12)), rel=1e-6)
    r = program.solve(SARDANA, target_loss=1.8, max_tokens=1e12)
    assert r.status is PlanStatus.INFEASIBLE and "approaches 1.855" in r.reason
    r = program.solve(SARDANA, target_loss=1.5)
    assert r.status is PlanStatus.INFEASIBLE and "irreducible" in r.reason
    r = program.solve(SARDANA, target_loss=1.95, max_params=1e10)
    assert r.status is PlanStatus.OPTIMAL and "max_params" in r.binding


def test_robust_plan_is_best_worst_case():
    rng = np.random.default_rng(0)
    draws = [
        SARDANA.replace(A=SARDANA.A * f, B=SARDANA.B * g, alpha=SARDANA.alpha + h)
        for f, g, h in zip(
            rng.lognormal(0, 0.2, 12),
            rng.lognormal(0, 0.2, 12),
            rng.normal(0, 0.01, 12),
            strict=True,
        )
    ]
    robust = robust_budget(draws, flops=1e23)
    assert robust.status is PlanStatus.OPTIMAL
    assert 6 * robust.params * robust.tokens == pytest.approx(1e23, rel=1e-6)
    worst_at = lambda n, d: max(float(law.predict(n, d)) for law in draws)  # noqa: E731
    assert robust.loss == pytest.approx(worst_at(robust.params, robust.tokens), rel=1e-9)
    for factor in (0.5, 0.8, 1.25, 2.0):
        n = robust.params * factor
        assert worst_at(n, 1e23 / (6 * n)) >= robust.loss - 1e-9
    nominal = BudgetProgram().solve(SARDANA, flops=1e23)
    assert worst_at(nominal.params, nominal.tokens) >= robust.loss - 1e-9


def test_frontier_is_monotone_and_priced():
    points = frontier(SARDANA, np.logspace(21, 25, 9), dollars_per_flop=1e-18)
    losses = [p.loss for p in points]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert points[0].dollars == pytest.approx(1e21 * 1e-18, rel=1e-5)
    capped = frontier(SARDANA, [1e23, 1e24, 1e25], max_params=1e10, max_tokens=1e12)
    assert capped[1].loss == pytest.approx(capped[2].loss, rel=1e-6)


def test_vocabulary_joint_program_beats_pinned_nv():
    program = VocabularyProgram()
    joint = program.solve(flops=1e22)
    pinned = program.solve(flops=1e22, non_vocab_params=joint.non_vocab_params * 3)
    assert joint.status is PlanStatus.OPTIMAL
    assert joint.loss_unigram <= pinned.loss_unigram + 1e-9
    bounded = program.solve(flops=1e22, max_vocab=32000)
    assert bounded.vocab_size == pytest.approx(32000, rel=1e-5)
    assert bounded.characters > 0


def test_golden_section_finds_a_minimum():
    x, fx, _ = golden_section(lambda v: (v - 1.3) ** 2 + 2, -5, 5, tol=1e-9)
    assert x == pytest.approx(1.3, abs=1e-6) and fx == pytest.approx(2)


# -- mixture --------------------------------------------------------------------------------


def _law_and_sources(count: int = 5, seed: int = 1):
    rng = np.random.default_rng(seed)
    names = tuple(f"s{j}" for j in range(count))
    domains = ("a", "b", "c")
    t = -rng.uniform(0.2, 2.0, size=(3, count))
    t[0, 0] = 0.4  # one source hurts one domain
    law = ExponentialMixture(
        names, domains, np.array([1.9, 1.2, 1.5]), np.array([0.5, 0.8, 0.6]), t
    )
    unique = np.array([1e12, 2e11, 8e10, 3e10, 1e10])[:count]
    sources = [Source(n, u, e) for n, u, e in zip(names, unique, [1, 3, 4, 8, 10], strict=False)]
    return law, sources


def test_program_effective_tokens_equal_the_law_at_its_optimum():
    # the program's split form equals the formula at its optimum
    law, sources = _law_and_sources()
    program = MixtureProgram(sources, law, scale_law=SARDANA, method="cvxpy")
    r = program.solve_at(1.5e12, flops=1e23)
    x = np.array(list(r.source_tokens.values()))
    unique_all = np.array([s.unique_tokens for s in sources])
    assert program.d_eff.value * 1e9 == pytest.approx(
        effective_tokens(x, unique_all, 15.387756).sum(), rel=1e-4
    )


def test_mixture_convex_solve_beats_grid_and_random_search():
    law, sources = _law_and_sources()
    program = MixtureProgram(
        sources, law, scale_law=SARDANA, domain_weights={"a": 0.5, "b": 0.3, "c": 0.2}
    )
    tokens, flops = 1.5e12, 1e23
    r = program.solve_at(tokens, flops=flops)
    assert r.status is PlanStatus.OPTIMAL
    assert sum(r.mixture.values()) == pytest.approx(1, abs=1e-6)
    caps = {s.name: s.cap for s in sources}
    assert all(r.source_tokens[k] <= caps[k] * (1 + 1e-6) for k in caps)
    grid = simplex_grid(len(sources), 16)
    assert grid.shape == (math.comb(20, 4), 5)
    best_grid = program.objective(grid, tokens, flops).min()
    random = np.random.default_rng(0).dirichlet(np.ones(len(sources)), 20000)
    best_random = program.objective(random, tokens, flops).min()
    assert np.isfinite(best_grid) and np.isfinite(best_random)
    assert r.loss <= best_grid + 1e-7 and r.loss <= best_random + 1e-7


def test_mixture_plan_searches_tokens_and_respects_caps():
    law, sources = _law_and_sources()
    program = MixtureProgram(sources, law, scale_law=SARDANA)
    r = program.plan(flops=1e24)
    assert r.status is PlanStatus.OPTIMAL
    total_cap = sum(s.cap for s in sources)
    assert r.tokens <= total_cap * (1 + 1e-9)
    # the outer optimum is a local minimum in D
    for factor in (0.8, 1.25):
        other = program.solve_at(min(r.tokens * factor, total_cap), flops=1e24)
        assert other.loss >= r.loss - 1e-6
    too_much = program.solve_at(total_cap * 2, flops=1e24)
    assert too_much.status is PlanStatus.INFEASIBLE and "max_epochs" in too_much.reason


def test_mixture_rejects_mismatched_sources_and_nonconvex_law():
    law, sources = _law_and_sources()
    with pytest.raises(SpecError, match="sources"):
        MixtureProgram(sources[::-1], law, scale_law=SARDANA)

    class Concave(ExponentialMixture):
        def loss_expression(self, weights, domain_weights):
            return -cp.sum(cp.exp(weights))

    bad = Concave(law.sources, law.domains, law.c, law.k, law.t)
    with pytest.raises(SpecError, match="not convex"):
        MixtureProgram(sources, bad, scale_law=SARDANA)


def test_mixture_trust_region_limits_each_share():
    law, sources = _law_and_sources()
    free = MixtureProgram(sources, law, scale_law=SARDANA).solve_at(1.5e12, flops=1e23)
    top = max(free.mixture, key=free.mixture.get)
    limit = free.mixture[top] * 0.6
    program = MixtureProgram(sources, law, scale_law=SARDANA, max_shares={top: limit})
    r = program.solve_at(1.5e12, flops=1e23)
    assert r.mixture[top] == pytest.approx(limit, rel=1e-5)
    assert r.at_share_limit == (top,) and r.share_limit_duals[top] > 0
    assert r.loss >= free.loss
    # no mixture inside the trust region beats the convex answer
    random = np.random.default_rng(0).dirichlet(np.ones(len(sources)), 20000)
    values = program.objective(random, 1.5e12, 1e23)
    column = [s.name for s in sources].index(top)
    assert np.all(np.isinf(values[random[:, column] > limit * 1.001]))
    assert r.loss <= values.min() + 1e-7
    with pytest.raises(SpecError, match="sum to at least 1"):
        MixtureProgram(sources, law, scale_law=SARDANA, max_shares={s.name: 0.1 for s in sources})


def test_frozen_instance_builds_what_the_constructor_builds():
    """The hot paths' constructor (`frozen_instance`) gives what ``Allocation(**values)``
    gives: the same defaults, a fresh dict per instance from the default factory, and an
    unknown or missing field refused as ``__init__`` refuses it."""
    from mixplan.planning.programs.allocation import Allocation
    from mixplan.planning.programs.common import PlanStatus, frozen_instance
    from mixplan.planning.programs.limits import Limits

    values = {"status": PlanStatus.OPTIMAL, "params": 2.0, "tokens": 3.0, "loss": 1.5}
    first, second = frozen_instance(Allocation, values), frozen_instance(Allocation, values)
    assert first == Allocation(**values) == second
    assert first.duals == {} and first.duals is not second.duals
    assert first.budget_flops is None and first.reason == ""
    with pytest.raises(TypeError, match="unexpected fields"):
        frozen_instance(Allocation, {**values, "flops": 1.0})
    with pytest.raises(TypeError, match="missing fields"):
        frozen_instance(Allocation, {"params": 2.0})
    with pytest.raises(TypeError, match="__post_init__"):
        frozen_instance(Limits, {})  # its checks must run
