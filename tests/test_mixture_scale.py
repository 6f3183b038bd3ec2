"""Mixture laws across scale on the real 5Mix runs (yegcjs/mixinglaws), through the ingest path.

Issue 11: the step (tokens) stage with its extrapolation guard and backtest, the joint law in
(mixture, N) fitted across every size at once, model selection by leave-largest-scale-out, the
fit-mixture flow storing the chosen law where the planner loads it, and the faster engine path
of the mixture laws (issue 13) reaching the generic search's objective.
"""

from __future__ import annotations

import json
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from mixplan.planning.errors import ExtrapolationError, FitError, NotFittedError, SpecError
from mixplan.planning.fitting.engine import search
from mixplan.planning.fitting.huber import huber
from mixplan.planning.mixture.additive import AdditiveLaw, AdditiveScaleLaw
from mixplan.planning.mixture.combined import CombinedLaw
from mixplan.planning.mixture.curves import (
    CurvesRoute,
    fit_kaplan_laws,
    kaplan_log_model,
)
from mixplan.planning.mixture.engine import fit_law, law_spec
from mixplan.planning.mixture.exponential import ExponentialLaw
from mixplan.planning.mixture.nested import MixtureCurves, NestedRoute
from mixplan.planning.mixture.scale import ScaleRoute, best_mixture
from mixplan.planning.mixture.selection import ROUTES, best_route, leave_largest_scale_out
from mixplan.planning.mixture.stacking import (
    STACKED_ROUTE,
    StackedRoute,
    extrapolation_rmse,
    stacking_weights,
)
from mixplan.planning.mixture.steps import losses_at_tokens, step_backtest
from mixplan.planning.report.laws import mixture_section
from mixplan.tasks.ingest import ingest_paths
from mixplan.tasks.mixture import (
    DEFAULT_ROUTE,
    read_mixture_curves,
    read_mixture_data,
    select_and_fit_route,
)

FIVE_MIX = "mixinglaws-5mix"
STEP_TOKENS = 2**20
"""One 5Mix optimizer step, in tokens (PROVENANCE.md)."""


@pytest.fixture(scope="module")
def lake(bundled: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The 5Mix and RegMix logs ingested by the ingest stage."""
    folder = tmp_path_factory.mktemp("mixture-scale") / "lake"
    report = ingest_paths(
        [bundled / "yegcjs__mixinglaws" / "5Mix", bundled / "sail-sg__regmix"], folder
    )
    assert report.usable
    return str(folder)


@pytest.fixture(scope="module")
def curves(lake: str) -> MixtureCurves:
    return read_mixture_curves(lake, FIVE_MIX)


def _sizes(curves: MixtureCurves) -> np.ndarray:
    return np.unique(curves.params)


# --------------------------------------------------------------------------- step stage
def test_step_stage_reads_a_logged_step_exactly(curves: MixtureCurves) -> None:
    tokens = 30_000 * STEP_TOKENS
    data, stage = losses_at_tokens(curves, tokens)
    assert (stage.interpolated, stage.extrapolated, stage.dropped) == (104, 0, 0)
    assert stage.warning == "" and stage.backtest is None
    at_step = np.isclose(curves.tokens, tokens)
    observed = curves.losses[at_step][np.argsort(curves.row_run[at_step])]
    np.testing.assert_allclose(data.losses, observed, rtol=1e-12)


def test_step_stage_interpolates_between_checkpoints(curves: MixtureCurves) -> None:
    low_step, high_step = 27_000 * STEP_TOKENS, 30_000 * STEP_TOKENS
    between = (curves.tokens > low_step) & (curves.tokens < high_step)
    plain = ~np.isin(np.arange(len(curves.run_ids)), curves.row_run[between])
    data, _ = losses_at_tokens(curves, 29_000 * STEP_TOKENS)
    low, _ = losses_at_tokens(curves, low_step)
    high, _ = losses_at_tokens(curves, high_step)
    # log loss linear in log tokens: at 29k, 2/3 of the way in log space from 27k to 30k
    weight = np.log(29 / 27) / np.log(30 / 27)
    expected = np.exp((1 - weight) * np.log(low.losses) + weight * np.log(high.losses))
    assert plain.sum() > 90
    np.testing.assert_allclose(data.losses[plain], expected[plain], rtol=1e-12)


def test_step_stage_warns_with_the_backtested_error_and_refuses_far_extrapolation(
    curves: MixtureCurves,
) -> None:
    _, stage = losses_at_tokens(curves, 60_000 * STEP_TOKENS)
    assert stage.extrapolated == 96 and stage.max_ratio == pytest.approx(2.0)
    assert stage.backtest is not None and stage.backtest.ratio == pytest.approx(2.0)
    assert f"{stage.backtest.mae:.3g} nats" in stage.warning
    with pytest.raises(ExtrapolationError, match=r"3.33x past the last logged checkpoint"):
        losses_at_tokens(curves, 100_000 * STEP_TOKENS)


def test_nested_route_refuses_and_warns_like_the_step_stage(curves: MixtureCurves) -> None:
    sizes = _sizes(curves)
    small = curves.runs_where(curves.params <= sizes[1])
    with pytest.raises(ExtrapolationError, match="not trusted beyond 3x"):
        NestedRoute(params=sizes[-1], tokens=100_000 * STEP_TOKENS).fit(small)
    route = NestedRoute(params=sizes[-1], tokens=40_000 * STEP_TOKENS).fit(small)
    assert "runs end before D" in route.warning_ and "backtested" in route.warning_
    assert NestedRoute(params=sizes[-1], tokens=30_000 * STEP_TOKENS).fit(small).warning_ == ""


def test_step_backtest_error_grows_with_the_extrapolation(curves: MixtureCurves) -> None:
    short, far = step_backtest(curves, 1.5), step_backtest(curves, 3.0)
    assert short is not None and far is not None
    # measured: 0.028 nats at 1.5x, 0.109 at 3x (issue 11 saw 0.117 at 3x on 1B runs)
    assert 0.005 < short.mae < far.mae < 0.3
    assert far.points > 1000


# ---------------------------------------------------------------------- across scale
def test_scale_route_carries_the_mixture_law_to_the_largest_model(curves: MixtureCurves) -> None:
    sizes = _sizes(curves)
    held, _ = losses_at_tokens(curves.runs_where(curves.params == sizes[-1]), 30_000 * STEP_TOKENS)
    route = ScaleRoute(params=sizes[-1], tokens=30_000 * STEP_TOKENS)
    route.fit(curves.runs_where(curves.params < sizes[-1]))
    error = np.abs(route.predict(held.mixture) - held.losses)
    assert error.mean() < 0.0115  # measured 0.0101 nats (fit 70M-305M, predict 410M)
    law = route.law_
    assert isinstance(law, AdditiveScaleLaw) and not law.tokens_term
    assert all(f.theta[-1] >= 0 for f in law.fits_)  # alpha >= 0: monotone in N
    with pytest.raises(SpecError, match="fitted at D"):
        law.at(params=1e9, tokens=1e11)


def test_two_sizes_pool_the_size_exponent_across_domains(curves: MixtureCurves) -> None:
    sizes = _sizes(curves)
    tokens = 30_000 * STEP_TOKENS
    held, _ = losses_at_tokens(curves.runs_where(curves.params == sizes[-1]), tokens)
    two = curves.runs_where(curves.params <= sizes[1])  # 70M and 160M
    errors = {}
    for mode in ("auto", "free"):
        route = ScaleRoute(params=sizes[-1], tokens=tokens, size_exponent=mode).fit(two)
        errors[mode] = float(np.abs(route.predict(held.mixture) - held.losses).mean())
        alphas = {round(float(f.theta[-1]), 12) for f in route.law_.fits_}
        if mode == "auto":
            assert len(alphas) == 1 and "median of the per-domain fits" in route.notes_[0]
            assert route.law_.size_exponent == pytest.approx(alphas.pop())
        else:
            assert len(alphas) > 1 and route.notes_ == ()
    # measured 0.043 pooled vs 0.067 free (two sizes out: alpha is not identified per domain)
    assert errors["auto"] < 0.05 and errors["auto"] < errors["free"]
    with pytest.raises(SpecError, match="size_exponent"):
        ScaleRoute(params=1e9, tokens=1e10, size_exponent="median")


def test_leave_largest_scale_out_chooses_a_route_within_a_hundredth_of_a_nat(
    curves: MixtureCurves,
) -> None:
    scores = leave_largest_scale_out(curves)
    assert scores["route"].to_list() == list(ROUTES)
    assert (scores["status"] == "ok").all() and (scores["points"] == 26 * 22).all()
    chosen = best_route(scores)
    mae = dict(zip(scores["route"], scores["mae"], strict=True))
    assert mae[chosen] == min(mae.values())
    assert mae[chosen] <= 0.01  # issue 11: fit 70M-305M, 410M at its last step; measured 0.0092


def test_leave_largest_scale_out_reports_a_route_that_cannot_be_fitted(
    curves: MixtureCurves,
) -> None:
    sizes = _sizes(curves)
    two = curves.runs_where(curves.params <= sizes[1])  # fit on 70M only: no size law
    scores = leave_largest_scale_out(two, {"scale": ROUTES["scale (A in h)"]})
    assert scores["status"][0] != "ok" and "one model size" in scores["status"][0]
    assert best_route(scores) is None


def test_scale_law_round_trips_and_plans_through_the_hook(curves: MixtureCurves) -> None:
    sizes = _sizes(curves)
    route = ScaleRoute(params=sizes[-1], tokens=30_000 * STEP_TOKENS, n_bootstrap=3)
    route.fit(curves.runs_where(curves.params >= sizes[1]))
    again = AdditiveScaleLaw.from_json(route.law_.to_json())  # what the planner loads
    mixture = curves.mixture[:4]
    np.testing.assert_allclose(again.predict(mixture), route.predict(mixture), rtol=1e-12)
    low, high = again.predict_interval(mixture)
    assert np.all(low <= high) and np.any(high - low > 0)
    planned = best_mixture(
        route, curves.sources, max_shares=curves.final().max_shares(), candidates=curves.mixture
    )
    assert planned.sum() == pytest.approx(1.0) and np.all(planned <= 0.75 + 1e-6)
    # the optimum of the convex program is no worse than every observed mixture
    assert again.target_loss(planned, None) <= again.target_loss(curves.mixture, None).min() + 1e-6
    weights = cp.Variable(len(curves.sources), nonneg=True)
    assert again.loss_expression(weights, None).is_convex()


# ----------------------------------------------------- the law the pipeline chooses
@pytest.fixture(scope="module")
def largest_held_out(curves: MixtureCurves) -> tuple[object, float, float]:
    """The 410M runs at their last step (never fitted below) and that (N, D)."""
    sizes = _sizes(curves)
    tokens = 30_000 * STEP_TOKENS
    held, _ = losses_at_tokens(curves.runs_where(curves.params == sizes[-1]), tokens)
    return held, float(sizes[-1]), tokens


def _chosen_error(curves: MixtureCurves, largest_fitted: float, held_out) -> tuple[dict, float]:
    held, params, tokens = held_out
    chosen = select_and_fit_route(
        curves.runs_where(curves.params <= largest_fitted), params=params, tokens=tokens
    )
    return chosen, float(np.abs(chosen["route"].predict(held.mixture) - held.losses).mean())


@pytest.fixture(scope="module")
def chosen_from_two_sizes(curves: MixtureCurves, largest_held_out) -> tuple[dict, float]:
    """The pipeline's route fitted on 70M and 160M only, and its MAE on 410M."""
    return _chosen_error(curves, _sizes(curves)[1], largest_held_out)


@pytest.fixture(scope="module")
def chosen_from_three_sizes(curves: MixtureCurves, largest_held_out) -> tuple[dict, float]:
    """The pipeline's route selected and fitted within 70M-305M, and its MAE on 410M."""
    return _chosen_error(curves, _sizes(curves)[2], largest_held_out)


def test_two_sizes_choose_the_route_that_identifies_the_size_exponent(
    chosen_from_two_sizes: tuple[dict, float],
) -> None:
    chosen, mae = chosen_from_two_sizes
    assert chosen["scores"].height == 0  # two sizes: nothing to hold out
    assert chosen["chosen"] == DEFAULT_ROUTE and isinstance(chosen["route"], CurvesRoute)
    assert "alpha_N" in chosen["step_warning"]  # the exponents the curves gave, stored
    # issue 11: <= 0.02 nats two sizes out; measured 0.0175 (the scale route: 0.043)
    assert mae <= 0.02


def test_three_sizes_combine_the_routes_weighted_within_the_fitted_sizes(
    chosen_from_three_sizes: tuple[dict, float], curves: MixtureCurves
) -> None:
    chosen, mae = chosen_from_three_sizes
    scores = chosen["scores"]
    sizes = _sizes(curves)
    # selection saw 70M-160M -> 305M only, never 410M
    assert (scores["target_params"] == sizes[2]).all()
    route = chosen["route"]
    assert chosen["chosen"] == STACKED_ROUTE and isinstance(route, StackedRoute)
    # weights 1/MSE of those scores (independently: from the rmse column), every route fitted
    rmse = dict(zip(scores["route"], scores["rmse"], strict=True))
    inverse = {name: 1 / value**2 for name, value in rmse.items()}
    expected = {name: value / sum(inverse.values()) for name, value in inverse.items()}
    assert route.weights == pytest.approx(expected)
    assert set(route.fitted_) == set(ROUTES)
    assert route.extrapolation_rmse > 0  # 410M is past the fitted 305M: measured error added
    # issue 11 asks <= 0.01 nats on 410M; measured 0.0099 (0.0101 with one law refitted to the
    # weighted average; round 1's pick, the curves route
    # alone: 0.0126; the best single route seen with 410M in view, nested: 0.0092). A
    # regression bound between the two, not the goal.
    assert mae <= 0.0110


def test_stacked_route_law_is_the_weighted_sum_and_round_trips(
    chosen_from_three_sizes: tuple[dict, float], largest_held_out
) -> None:
    from mixplan.planning.plan import MIXTURE_LAWS

    route = chosen_from_three_sizes[0]["route"]
    held = largest_held_out[0]
    average = sum(
        weight * np.atleast_2d(route.fitted_[name].predict(held.mixture))
        for name, weight in route.weights.items()
    )
    # the stored law is the combination itself, not a law refitted to it
    assert isinstance(route.law_, CombinedLaw)
    np.testing.assert_allclose(route.predict(held.mixture), average, rtol=1e-12)
    again = MIXTURE_LAWS["CombinedLaw"].from_json(route.law_.to_json())  # what the planner loads
    np.testing.assert_allclose(again.predict(held.mixture), average, rtol=1e-12)
    assert again.labels == tuple(route.weights)
    spread = route.law_.member_spread(held.mixture)
    assert spread.shape == average.shape and np.all(spread >= 0) and spread.mean() > 0
    assert route.spread_ > 0 and "disagree" in chosen_from_three_sizes[0]["step_warning"]


def test_flow_preview_of_the_stacked_mixture_is_optimal_in_the_trust_region(
    chosen_from_three_sizes: tuple[dict, float], curves: MixtureCurves
) -> None:
    """The fit-mixture flow's planned-mixture preview (`best_mixture`, trust region: the
    largest share each source had) is no worse than multi-start SLSQP on the stored law with
    the same bounds, and than every observed mixture inside them."""
    from scipy.optimize import minimize

    route = chosen_from_three_sizes[0]["route"]
    trust = curves.final().max_shares()
    limits = np.array([trust.get(s, 1.0) for s in curves.sources])
    planned = best_mixture(route, curves.sources, max_shares=trust, candidates=curves.mixture)
    law = route.law_

    def f(r):
        return float(law.target_loss(np.clip(r, 0, None) / np.clip(r, 0, None).sum(), None))

    assert planned.sum() == pytest.approx(1.0) and np.all(planned <= limits + 1e-9)
    starts = [limits / limits.sum(), *np.random.default_rng(0).dirichlet(np.ones(len(limits)), 6)]
    best = np.inf
    for x0 in starts:
        res = minimize(
            f,
            np.minimum(x0, limits),
            method="SLSQP",
            bounds=list(zip(np.zeros(len(limits)), limits, strict=True)),
            constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if res.success and np.all(res.x <= limits + 1e-9):
            best = min(best, f(res.x))
    assert np.isfinite(best)
    assert f(planned) <= best + 1e-7 * abs(best), (f(planned), best)
    inside = np.all(curves.mixture <= limits + 1e-9, axis=1)
    assert f(planned) <= law.target_loss(curves.mixture[inside], None).min() + 1e-9


def _plan_checks(law, domain_weights) -> None:
    """Newton on the analytic target, the conic program and multi-start SLSQP agree; the
    analytic derivatives match central differences of the law's own target."""
    from scipy.optimize import minimize

    from mixplan.planning.laws.chinchilla import SARDANA
    from mixplan.planning.programs.mixture import MixtureProgram, Source
    from mixplan.planning.programs.mixture_derivatives import target_derivatives

    sources = [Source(name, 1e15, 1.0) for name in law.sources_]
    tokens, flops = 8e9, 1e20
    newton = MixtureProgram(sources, law, scale_law=SARDANA, domain_weights=domain_weights)
    conic = MixtureProgram(
        sources, law, scale_law=SARDANA, domain_weights=domain_weights, method="cvxpy"
    )
    first = newton.solve_at(tokens, flops=flops)
    second = conic.solve_at(tokens, flops=flops)
    assert first.solver == "newton" and first.status.solved and second.status.solved
    count = len(sources)

    def f(r):
        return float(newton.objective(np.clip(r, 0, 1)[None], tokens, flops)[0])

    best = np.inf
    for x0 in [np.full(count, 1 / count), *np.random.default_rng(0).dirichlet(np.ones(count), 4)]:
        res = minimize(
            f,
            x0,
            method="SLSQP",
            bounds=[(0, 1)] * count,
            constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1}],
            options={"ftol": 1e-12, "maxiter": 400},
        )
        best = min(best, f(res.x / res.x.sum()))
    assert first.loss <= best + 1e-6 * abs(best), (first.loss, best)
    assert second.loss == pytest.approx(first.loss, rel=1e-5)
    # derivatives of the analytic target at an interior mixture vs central differences
    target = target_derivatives(law, domain_weights)
    r = np.random.default_rng(1).dirichlet(np.ones(count))
    value, grad, hess = target.derivatives(r)
    vector = law.target_weights(domain_weights)
    assert value == pytest.approx(float(law.predict(r) @ vector))  # the whole target
    h = 1e-5
    eye = np.eye(count)
    numeric = np.array([(target.value(r + h * e) - target.value(r - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    law_grad = [
        (float(law.predict(r + h * e) @ vector) - float(law.predict(r - h * e) @ vector)) / (2 * h)
        for e in eye
    ]
    np.testing.assert_allclose(grad, law_grad, rtol=1e-5, atol=1e-8)
    numeric_hess = np.array(
        [
            (target.derivatives(r + h * e)[1] - target.derivatives(r - h * e)[1]) / (2 * h)
            for e in eye
        ]
    )
    np.testing.assert_allclose(hess, numeric_hess, rtol=1e-4, atol=1e-6)


def test_stacked_law_plans_like_slsqp_and_its_derivatives_are_exact(
    chosen_from_three_sizes: tuple[dict, float],
) -> None:
    from mixplan.planning.programs.combined_target import SumTarget
    from mixplan.planning.programs.mixture_derivatives import AdditiveTarget, target_derivatives

    law = chosen_from_three_sizes[0]["route"].law_
    weights = {law.domains_[0]: 0.6, law.domains_[-1]: 0.4}
    # every member additive: one additive target with every member's rows
    assert isinstance(target_derivatives(law, weights), AdditiveTarget)
    _plan_checks(law, weights)
    # a member of another family (an exponential law fitted at the same target): the generic sum
    nested = chosen_from_three_sizes[0]["route"].fitted_["nested"]
    mixed = CombinedLaw(
        [law.members[0], ExponentialLaw().fit(nested.at_target_)], [0.7, 0.3], ["a", "b"]
    )
    assert isinstance(target_derivatives(mixed, None), SumTarget)
    _plan_checks(mixed, None)


def test_combined_law_checks_its_members(chosen_from_three_sizes: tuple[dict, float]) -> None:
    members = chosen_from_three_sizes[0]["route"].law_.members
    with pytest.raises(SpecError, match="one weight"):
        CombinedLaw(members, [1.0])
    with pytest.raises(SpecError, match="finite"):
        CombinedLaw(members[:1], [-1.0])
    with pytest.raises(NotFittedError, match="not fitted"):
        CombinedLaw([AdditiveLaw()], [1.0])


def test_stacking_weights_and_inputs_are_checked() -> None:
    import polars as pl

    scores = pl.DataFrame(
        {
            "route": ["a", "b", "c"],
            "rmse": [0.01, 0.02, float("nan")],
            "status": ["ok", "ok", "failed: no sizes"],
        }
    )
    assert stacking_weights(scores) == pytest.approx({"a": 0.8, "b": 0.2})
    with pytest.raises(SpecError, match="no route was scored"):
        stacking_weights(scores.filter(pl.col("route") == "c"))
    with pytest.raises(SpecError, match="unknown routes"):
        StackedRoute(params=1e8, tokens=1e10, weights={"no such route": 1.0})
    with pytest.raises(SpecError, match="finite and >= 0"):
        StackedRoute(params=1e8, tokens=1e10, weights={"nested": -1.0})


def test_extrapolation_error_grows_with_the_log_size_ratio() -> None:
    import polars as pl

    scores = pl.DataFrame(
        {
            "route": ["a", "b"],
            "rmse": [0.01, 0.02],
            "largest_fit_params": [1e8, 1e8],
            "target_params": [2e8, 2e8],
        }
    )
    weights = {"a": 0.8, "b": 0.2}
    # sqrt(0.8 * 0.01^2 + 0.2 * 0.02^2) = sqrt(1.6e-4) per log 2, at a target 4x the largest
    one_doubling = extrapolation_rmse(scores, weights, params=4e8, largest_fitted=2e8)
    assert one_doubling == pytest.approx(np.sqrt(1.6e-4))
    two = extrapolation_rmse(scores, weights, params=8e8, largest_fitted=2e8)
    assert two == pytest.approx(2 * one_doubling)
    assert extrapolation_rmse(scores, weights, params=2e8, largest_fitted=2e8) == 0.0
    with pytest.raises(SpecError, match="no leave-largest-out score"):
        extrapolation_rmse(scores, {"c": 1.0}, params=4e8, largest_fitted=2e8)


def test_kaplan_fits_reach_an_independent_optimum() -> None:
    rng = np.random.default_rng(3)
    groups, sizes, steps = 12, np.array([2e7, 8e7]), np.geomspace(1e9, 3e10, 8)
    truth = np.column_stack(
        [
            rng.uniform(3, 8, groups),  # log N_c
            rng.uniform(0.05, 0.2, groups),  # alpha_N
            rng.uniform(0.05, 0.4, groups),  # alpha_D
            rng.uniform(-1, 3, groups),  # log D_c
        ]
    )
    n, d = np.meshgrid(sizes, steps, indexing="ij")
    n, d = np.tile(n.ravel(), groups), np.tile(d.ravel(), groups)
    group = np.repeat(np.arange(groups), len(sizes) * len(steps))
    log_n, log_d = np.log(n / 1e8), np.log(d / 1e9)
    clean = np.exp(kaplan_log_model(truth[group], log_n, log_d)[0])
    losses = clean * np.exp(rng.normal(0, 2e-4, clean.size))
    fits = fit_kaplan_laws(n, d, losses, group, groups)
    # noise-free shape recovered: predictions 4x past the largest size agree with the truth
    far = np.exp(kaplan_log_model(truth, np.full(groups, np.log(3.2)), np.full(groups, 3.4))[0])
    np.testing.assert_allclose(fits.predict(3.2e8, 3e10), far, rtol=2e-3)
    # and no worse than multi-start L-BFGS-B on the same objective
    from scipy.optimize import minimize

    bounds = [(-30, 50), (1e-3, 3), (1e-3, 3), (-30, 30)]
    for g in range(3):
        rows = group == g

        def objective(theta: np.ndarray, rows: np.ndarray = rows) -> float:
            rep = np.tile(theta, (rows.sum(), 1))
            r = kaplan_log_model(rep, log_n[rows], log_d[rows])[0] - np.log(losses[rows])
            return float(huber(r, 1e-3).sum())

        best = min(
            minimize(objective, [lnc, a, a, 2.3], method="L-BFGS-B", bounds=bounds).fun
            for lnc in (1, 5, 10)
            for a in (0.05, 0.1, 0.3)
        )
        assert fits.objective[g] <= best * (1 + 1e-6) + 1e-12
    with pytest.raises(FitError, match="fewer than 5 checkpoints"):
        fit_kaplan_laws(n[:4], d[:4], losses[:4], np.zeros(4, int), 1)


def _checkpoints_where(curves: MixtureCurves, keep: np.ndarray) -> MixtureCurves:
    """The same runs with only the checkpoints (rows) ``keep`` selects."""
    return MixtureCurves(
        run_ids=curves.run_ids,
        params=curves.params,
        mixture=curves.mixture,
        sources=curves.sources,
        domains=curves.domains,
        row_run=curves.row_run[keep],
        tokens=curves.tokens[keep],
        losses=curves.losses[keep],
    )


def _covered(held, low: np.ndarray, high: np.ndarray) -> float:
    return float(((held.losses >= low) & (held.losses <= high)).mean())


def test_the_stored_stacked_law_gives_the_interval_its_coverage_was_measured_with(
    curves: MixtureCurves, largest_held_out
) -> None:
    """The law the pipeline stores and the planner loads (read back from its JSON) carries the
    stacked route's whole interval: the members' bootstrap, their disagreement and the
    measured extrapolation error. Before, the stored law's interval was the bootstrap alone."""
    from mixplan.flows.fit_mixture import chosen_law

    held, params, tokens = largest_held_out
    sizes = _sizes(curves)
    chosen = select_and_fit_route(
        curves.runs_where(curves.params <= sizes[2]), params=params, tokens=tokens, n_bootstrap=10
    )
    route = chosen["route"]
    stored = CombinedLaw.from_json(chosen_law(route).to_json())
    assert stored.scale_error_ == pytest.approx(route.scale_error()) and stored.scale_error_ > 0
    low, high = stored.predict_interval(held.mixture, level=0.9)
    route_low, route_high = route.predict_interval(held.mixture, level=0.9)
    np.testing.assert_allclose(low, route_low, rtol=1e-12)
    np.testing.assert_allclose(high, route_high, rtol=1e-12)
    boot_low, boot_high = np.percentile(stored.bootstrap_predictions(held.mixture), [5, 95], 0)
    # measured on the 410M losses at 90%: 98% covered (width 0.066 nats); the bootstrap
    # alone, what the planner showed before: 31% (width 0.011)
    assert _covered(held, boot_low, boot_high) < 0.5
    assert _covered(held, low, high) >= 0.85 and float(np.mean(high - low)) < 0.1


def test_reading_runs_past_their_last_checkpoint_widens_the_interval(
    curves: MixtureCurves,
) -> None:
    """A target D past the runs' last checkpoints: the step law's backtested error of that
    extrapolation enters the stored law's interval. Fitted on the 70M-160M curves cut at 2/3
    of their length, predicting the 160M runs' real last step."""
    sizes = _sizes(curves)
    fitted = curves.runs_where(curves.params <= sizes[1])
    last = np.zeros(len(fitted.run_ids))
    np.maximum.at(last, fitted.row_run, fitted.tokens)
    cut = _checkpoints_where(fitted, fitted.tokens <= last[fitted.row_run] / 1.5 * (1 + 1e-9))
    tokens = float(last.min())
    held, _ = losses_at_tokens(fitted.runs_where(fitted.params == sizes[1]), tokens)
    route = NestedRoute(params=float(sizes[1]), tokens=tokens, n_bootstrap=10).fit(cut)
    cut_last = np.zeros(len(cut.run_ids))
    np.maximum.at(cut_last, cut.row_run, cut.tokens)
    backtest = step_backtest(cut, float(np.max(tokens / cut_last)))
    assert backtest is not None and route.tokens_error_ == pytest.approx(backtest.rmse)
    stored = AdditiveLaw.from_json(route.stored_law().to_json())
    assert stored.scale_error_ == pytest.approx(backtest.rmse)
    low, high = stored.predict_interval(held.mixture, level=0.9)
    boot_low, boot_high = np.percentile(stored.bootstrap_predictions(held.mixture), [5, 95], 0)
    # measured: 96% covered (width 0.21 nats; the step backtest's RMSE, 0.059, is about twice
    # the route's own error here, 0.027 MAE: conservative); the bootstrap alone: 47%
    assert _covered(held, boot_low, boot_high) < 0.6
    assert _covered(held, low, high) >= 0.85
    inside = NestedRoute(params=float(sizes[1]), tokens=tokens).fit(fitted)
    assert inside.tokens_error_ == 0.0  # every run reaches that D: nothing added


def test_curves_route_interval_adds_the_backtested_size_error(
    curves: MixtureCurves, largest_held_out
) -> None:
    held, params, tokens = largest_held_out
    sizes = _sizes(curves)
    route = CurvesRoute(params=params, tokens=tokens, n_bootstrap=10)
    route.fit(curves.runs_where(curves.params <= sizes[1]))  # 70M and 160M
    per_log = route.backtest_rmse()
    assert per_log > 0
    # closed form: per unit log N times how far past the largest fitted size the target is
    assert route.extrapolation_rmse() == pytest.approx(per_log * np.log(params / sizes[1]))
    inside = CurvesRoute(params=sizes[1], tokens=tokens).fit(
        curves.runs_where(curves.params <= sizes[1])
    )
    assert inside.extrapolation_rmse() == 0.0  # no extrapolation in N: nothing added
    low, high = route.predict_interval(held.mixture, level=0.9)
    boot_low, boot_high = route._law().predict_interval(held.mixture, level=0.9)
    assert np.all(high - low >= boot_high - boot_low - 1e-12)
    covered = float(((held.losses >= low) & (held.losses <= high)).mean())
    # measured: 94% (the mixture-stage bootstrap alone: 46%), mean width 0.105 nats
    assert covered >= 0.85 and float(np.mean(high - low)) < 0.15


def test_curves_route_says_when_its_size_error_cannot_be_measured(
    curves: MixtureCurves, largest_held_out
) -> None:
    _, params, tokens = largest_held_out
    sizes = _sizes(curves)
    two = curves.runs_where(curves.params <= sizes[1])
    last = np.zeros(len(two.run_ids))
    np.maximum.at(last, two.row_run, two.tokens)
    # no checkpoint to backtest on
    short = _checkpoints_where(two, two.tokens > last[two.row_run] / 1.5 * (1 + 1e-9))
    route = CurvesRoute(params=params, tokens=tokens).fit(short)
    assert np.isnan(route.backtest_rmse()) and route.extrapolation_rmse() == 0.0
    assert "covers the mixture stage only" in route.warning_
    assert "fewer than 5 checkpoints" in route.warning_
    inside = CurvesRoute(params=sizes[1], tokens=tokens).fit(short)
    assert "mixture stage only" not in inside.warning_  # no extrapolation in N: nothing missing
    full = CurvesRoute(params=params, tokens=tokens).fit(two)
    assert "mixture stage only" not in full.warning_  # measured (the test above)


def test_curves_route_refuses_one_size_and_far_extrapolation(curves: MixtureCurves) -> None:
    sizes = _sizes(curves)
    with pytest.raises(FitError, match="two or more model sizes"):
        CurvesRoute(params=sizes[-1], tokens=30_000 * STEP_TOKENS).fit(
            curves.runs_where(curves.params == sizes[0])
        )
    with pytest.raises(ExtrapolationError, match="not trusted beyond 3x"):
        CurvesRoute(params=sizes[-1], tokens=100_000 * STEP_TOKENS).fit(curves)


# ------------------------------------------------------------------------------ speed
def test_mixture_fit_reaches_the_generic_search_objective(lake: str) -> None:
    train, _ = read_mixture_data(lake, "regmix-1m-train", domains=["pile_cc"])
    law = AdditiveLaw()
    losses = train.losses[:, 0]
    spec = law_spec("pile_cc", law.model, law.bounds(losses, 17), law.param_names(17))
    starts = law.starts(losses, train.mixture)
    fast = fit_law(spec, starts, train.mixture, losses)
    generic = search(spec, {"inputs": train.mixture}, losses, starts=starts, refine_iterations=200)
    assert fast.objective <= generic.objective * (1 + 1e-4)


# ------------------------------------------------------------------------------- flow
@pytest.mark.flow
def test_fit_mixture_flow_stores_the_law_chosen_across_scale(
    prefect_harness: None, lake: str
) -> None:
    from mixplan.flows.fit_mixture import fit_mixture
    from mixplan.planning.plan import MIXTURE_LAWS

    result = fit_mixture(lake=lake, experiment=FIVE_MIX, families=["exponential"], n_bootstrap=2)
    scale = result["scale"]
    assert scale["chosen"] == STACKED_ROUTE
    assert "1/MSE" in scale["form"] and "C_ij" in scale["form"]  # the combination's formula
    assert [row["route"] for row in scale["scores"]] == list(ROUTES)
    assert result["fits"]["scale"]["path"] == scale["path"]  # listed with the other mixture fits
    assert result["fits"]["scale"]["params"][0]["E"] >= 0
    stored = json.loads(Path(scale["path"]).read_text())
    assert stored["chosen_route"] == scale["chosen"] and stored["selection"] == scale["scores"]
    assert stored["best_observed"] == scale["best_observed"]  # the planner compares with it
    law = MIXTURE_LAWS[stored["law"]].from_json(Path(scale["path"]).read_text())
    best = scale["best_observed"]
    assert law.target_loss(np.array(list(best["mixture"].values())), None) == pytest.approx(
        best["predicted_loss"]
    )
    assert scale["planned"]["predicted_loss"] <= best["predicted_loss"] + 1e-6
    low, high = scale["planned"]["interval_90"]  # bootstrap draws of the chosen route's law
    assert low < high and high - low < 0.2
    section = mixture_section(result)
    titles = [table.caption for table in section.tables]
    assert any("across scale" in t and scale["chosen"] in t for t in titles)
    assert any("best observed" in str(table.rows) for table in section.tables)


@pytest.mark.flow
def test_fit_mixture_flow_with_two_sizes_stores_the_curves_route_law(
    prefect_harness: None, bundled: Path, tmp_path: Path
) -> None:
    import shutil

    from mixplan.flows.fit_mixture import fit_mixture
    from mixplan.planning.plan import MIXTURE_LAWS

    logs = tmp_path / "5Mix"
    logs.mkdir()
    for name in ("70M.txt", "160M.txt", "proportions.txt"):
        shutil.copy(bundled / "yegcjs__mixinglaws" / "5Mix" / name, logs / name)
    lake = str(tmp_path / "lake")
    assert ingest_paths([logs], lake).usable
    result = fit_mixture(lake=lake, experiment=FIVE_MIX, families=["exponential"], n_bootstrap=2)
    scale = result["scale"]
    assert scale["chosen"] == DEFAULT_ROUTE and scale["scores"] == []
    assert "N_c" in scale["form"]  # Kaplan's joint law, not the scale route's formula
    stored = json.loads(Path(scale["path"]).read_text())
    assert "alpha_N" in stored["step_warning"]  # the exponents the curves identified
    law = MIXTURE_LAWS[stored["law"]].from_json(Path(scale["path"]).read_text())
    best = scale["best_observed"]
    assert law.target_loss(np.array(list(best["mixture"].values())), None) == pytest.approx(
        best["predicted_loss"]
    )
    assert scale["planned"]["predicted_loss"] <= best["predicted_loss"] + 1e-6
