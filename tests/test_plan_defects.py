"""One test per defect of issue 9 ("Plans a team can bet a budget on"); each failed on the
planner before the fix (commit c309de1). The 17-source mixture defect is tested in
test_mixture_optimality.py."""

from __future__ import annotations

import ast
import copy
import json
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mixplan.planning.errors import MixplanError, SpecError
from mixplan.planning.laws import DATABLATIONS, DEEPSEEK, SARDANA, ChinchillaLaw
from mixplan.planning.plan import Planner, ResolvedLaw, make_plan
from mixplan.planning.programs import common
from mixplan.planning.report.plans import plan_section
from mixplan.planning.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "data" / "specs"


def _draws(law, count: int = 20, seed: int = 0) -> tuple:
    """Bootstrap-like draws around ``law`` (A, B within 2x, exponents within 10%)."""
    rng = np.random.default_rng(seed)
    return tuple(
        law.replace(
            A=law.A * rng.uniform(0.5, 2),
            B=law.B * rng.uniform(0.5, 2),
            alpha=law.alpha * rng.uniform(0.9, 1.1),
            beta=law.beta * rng.uniform(0.9, 1.1),
        )
        for _ in range(count)
    )


def _spec(**sections) -> dict:
    return {"law": {"name": "sardana"}, "budget": {"flops": 1e23}, **sections}


def _robust(spec: dict, law, draws) -> object:
    data = {**spec, "uncertainty": {"draws": True, "robust": True}}
    return Planner().plan(parse_spec(data), resolved=ResolvedLaw(law, "test draws", draws))


def test_robust_plan_honours_tokens_per_parameter_limits():
    """Was: max_tokens_per_param = 5 at 1e23 FLOPs, 20 Sardana draws -> point D/N 5.0, robust
    D/N 73.5 (``robust_budget`` never received the ratio limits)."""
    for limits in ({"max_tokens_per_param": 5}, {"min_tokens_per_param": 200}):
        plan = _robust(_spec(limits=limits), SARDANA, _draws(SARDANA))
        ratio = plan.robust["tokens"] / plan.robust["params"]
        if "max_tokens_per_param" in limits:
            assert plan.tokens_per_param == pytest.approx(5) and ratio <= 5 * (1 + 1e-9)
        else:
            assert plan.tokens_per_param == pytest.approx(200) and ratio >= 200 * (1 - 1e-9)
        assert plan.robust["worst_loss"] <= plan.robust["point_worst_loss"] + 1e-12


def test_robust_plan_with_a_repetition_law():
    """Was: ``MuennighoffLaw.predict() missing 'unique_tokens'`` (draws read as Chinchilla)."""
    spec = _spec(
        law={"name": "datablations"},
        budget={"flops": 1e22},
        sources=[{"name": "web", "unique_tokens": 25e9, "max_epochs": 60}],
    )
    draws = _draws(DATABLATIONS, 12)
    plan = _robust(spec, DATABLATIONS, draws)
    assert plan.ok and plan.robust["status"] == "optimal"
    n, d = plan.robust["params"], plan.robust["tokens"]
    worst = max(float(x.predict(n, d, 25e9)) for x in draws)
    assert plan.robust["worst_loss"] == pytest.approx(worst, rel=1e-12)
    assert plan.robust["worst_loss"] <= plan.robust["point_worst_loss"] + 1e-12
    assert 6 * n * d <= 1e22 * (1 + 1e-9) and d <= 25e9 * 60 * (1 + 1e-9)


def test_robust_plan_uses_the_draws_not_the_point_law():
    """Issue 13 item 5: draws that all need more parameters than the point law must move the
    robust plan, and its worst case is the max over the draws, not the point law's loss."""
    draws = tuple(SARDANA.replace(A=SARDANA.A * f) for f in (2.0, 3.0, 4.0))
    plan = _robust(_spec(), SARDANA, draws)
    n, d = plan.robust["params"], plan.robust["tokens"]
    assert n > 1.2 * plan.params  # a bigger model hedges the larger A
    assert plan.robust["worst_loss"] == pytest.approx(float(draws[-1].predict(n, d)), rel=1e-12)
    assert plan.robust["worst_loss"] > float(SARDANA.predict(n, d)) + 0.01
    # and it beats the point plan on the draws' worst case, at the same budget
    assert plan.robust["worst_loss"] < plan.robust["point_worst_loss"]
    assert 6 * n * d == pytest.approx(1e23, rel=1e-9)


def test_robust_plan_in_target_mode_reaches_the_target_in_the_worst_case():
    plan = _robust(
        {"law": {"name": "sardana"}, "budget": {"target_loss": 2.0}}, SARDANA, _draws(SARDANA, 8)
    )
    assert plan.robust["worst_loss"] <= 2.0 * (1 + 1e-12)
    assert plan.robust["train_flops"] > plan.train_flops  # hedging costs compute


def test_robust_without_draws_is_a_spec_error_naming_the_field():
    """Was: silently no robust plan."""
    data = _spec(uncertainty={"robust": True})
    with pytest.raises(SpecError, match="uncertainty.robust"):
        make_plan(parse_spec(data))


def test_vocabulary_describes_the_same_model_as_the_plan():
    """Was (data/specs/example.toml): plan N 1.378e10, D 1.043e12; vocabulary N_nv 1.378e10
    plus V d 5.98e8 and D 9.996e11; the learning rate at N - V d."""
    example = tomllib.loads((SPECS / "example.toml").read_text())
    plan = make_plan(parse_spec(example))
    voc = plan.vocabulary
    assert voc["non_vocab_params"] + voc["vocab_params"] == pytest.approx(plan.params, rel=1e-12)
    assert voc["params"] == plan.params and voc["tokens"] == plan.tokens
    assert voc["vocab_params"] == pytest.approx(voc["vocab_size"] * voc["width"])
    hp = plan.explanation["hyperparameters"]
    assert hp["non_embedding_params"] == pytest.approx(voc["non_vocab_params"], rel=1e-12)
    section = plan_section("example", plan.to_dict())
    assert any("non-vocabulary parameters plus" in e for e in section.explanations)


def test_mixture_program_uses_the_fitted_repetition_constant():
    """Was: R_D* = 15.39 (published) whatever the scale law."""
    example = tomllib.loads((SPECS / "example.toml").read_text())
    for key in ("vocabulary", "limits", "inference", "training"):
        example.pop(key)
    law = {k: getattr(DATABLATIONS, k) for k in ("E", "A", "B", "alpha", "beta")}
    example["law"] = {**law, "rd_star": 2.0, "rn_star": 5.3}
    plan = make_plan(parse_spec(example))
    assert plan.mixture_plan["rd_star"] == 2.0
    from mixplan.planning.laws.repetition import effective_tokens

    x = np.array(list(plan.mixture_plan["source_tokens"].values()))
    unique = np.array([s["unique_tokens"] for s in example["sources"]])
    assert plan.mixture_plan["effective_tokens"] == pytest.approx(
        float(effective_tokens(x, unique, 2.0).sum()), rel=1e-9
    )


def test_optimal_inaccurate_is_kept_and_flagged(monkeypatch):
    """Was: OPTIMAL_INACCURATE reported as optimal. A solver held to unreachable tolerances
    ends "optimal_inaccurate": the answer is kept and flagged in the plan and the report.
    Newton's certificate is made unreachable too, so the mixture falls back to the conic
    program (the path a law without analytic derivatives takes)."""
    from mixplan.planning.programs import mixture

    example = tomllib.loads((SPECS / "example.toml").read_text())
    monkeypatch.setattr(
        common, "SOLVER_OPTIONS", {"tol_gap_abs": 1e-30, "tol_gap_rel": 1e-30, "tol_feas": 1e-30}
    )
    monkeypatch.setattr(mixture, "GAP_TOL", -1.0)
    plan = make_plan(parse_spec(example))
    assert plan.ok and plan.mixture_plan["status"] == "optimal_inaccurate"
    assert any("optimal-inaccurate" in w for w in plan.warnings)
    assert "warning: the mixture solve ended optimal-inaccurate" in plan.render()
    section = plan_section("example", plan.to_dict())
    assert any("OPTIMAL-INACCURATE" in e for e in section.explanations)


def test_loss_target_with_a_repetition_law_is_planned():
    """Was: an unsupported combination reported as "infeasible"."""
    data = {
        "law": {"name": "datablations"},
        "budget": {"target_loss": 2.3},
        "sources": [{"name": "web", "unique_tokens": 25e9, "max_epochs": 60}],
    }
    plan = make_plan(parse_spec(data))
    assert plan.ok and plan.loss <= 2.3 * (1 + 1e-12)
    assert float(DATABLATIONS.predict(plan.params, plan.tokens, 25e9)) == pytest.approx(2.3)
    cheaper = 0.99 * plan.train_flops  # nothing cheaper reaches the target
    grid = np.logspace(8, 12, 2001)
    best = DATABLATIONS.predict(grid, cheaper / (6 * grid), 25e9).min()
    assert best > 2.3


def test_infeasible_names_the_binding_limit():
    data = {
        "law": {"name": "sardana"},
        "budget": {"target_loss": 1.8},
        "limits": {"max_params": 1e9, "max_tokens": 1e12},
    }
    plan = make_plan(parse_spec(data))
    assert plan.status == "infeasible"
    assert "max_params and max_tokens" in plan.reason and "best reachable" in plan.reason


def test_no_assert_as_a_runtime_check_in_planning():
    """Was: ``assert problem.is_dcp(dpp=True)`` in the programs (skipped under python -O)."""
    offenders = []
    planner = [
        *(ROOT / "planning").glob("plan*.py"),
        *(ROOT / "planning" / "programs").glob("*.py"),
    ]
    for path in [*planner, ROOT / "planning" / "spec.py", ROOT / "planning" / "explain.py"]:
        tree = ast.parse(path.read_text())
        offenders += [f"{path}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert offenders == []


def test_unusable_law_constants_are_a_mixplan_error():
    """Was: a bare ValueError (the pipeline called it "failed unexpectedly")."""
    from mixplan.planning.programs.allocation import LossModel

    with pytest.raises(MixplanError, match="law constant A"):
        LossModel.of(ChinchillaLaw(E=1.7, A=-1.0, B=400.0, alpha=0.3, beta=0.3))
    with pytest.raises(MixplanError, match="sources"):
        LossModel.of(DATABLATIONS)


def test_tiny_unique_tokens_is_a_spec_error():
    """Was: a source with unique_tokens = 1e-308 -> cvxpy "Problem data contains NaN or Inf"."""
    example = tomllib.loads((SPECS / "example.toml").read_text())
    example["sources"][0]["unique_tokens"] = 1e-308
    with pytest.raises(SpecError, match=r"sources\[0\].unique_tokens"):
        parse_spec(example)


MUTATIONS = (0.0, -1.0, 1e-308, 1e308, float("nan"), float("inf"), "x", True, None, [], 1e40)


def _mutants(data, rng, count):
    """Copies of ``data`` with one number swapped for a hostile value (or a key dropped)."""
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))
        elif isinstance(node, int | float) and not isinstance(node, bool):
            paths.append(path)

    walk(data, ())
    for _ in range(count):
        path = paths[rng.integers(len(paths))]
        copy_ = copy.deepcopy(data)
        node = copy_
        for key in path[:-1]:
            node = node[key]
        value = MUTATIONS[rng.integers(len(MUTATIONS))]
        if value is None:
            node.pop(path[-1]) if isinstance(node, dict) else node.pop()
        else:
            node[path[-1]] = value
        yield path, copy_


def test_fuzzed_specs_never_end_in_a_traceback():
    """300 mutated specs: each is a plan or a MixplanError with a message, never a traceback.
    Was: 3 of 300 ended in one (e.g. unique_tokens = 1e-308)."""
    example = tomllib.loads((SPECS / "example.toml").read_text())
    example["budget"]["flops"] = 1e22
    rng = np.random.default_rng(9)
    planner = Planner()
    outcomes = {"plan": 0, "error": 0}
    for path, data in _mutants(example, rng, 300):
        try:
            plan = planner.plan(parse_spec(data))
        except MixplanError as exc:
            assert str(exc), path
            outcomes["error"] += 1
            continue
        json.dumps(plan.to_dict())  # the plan serialises
        outcomes["plan"] += 1
    assert outcomes["plan"] > 30 and outcomes["error"] > 30


def test_fitted_steplaw_gives_the_learning_rate_with_an_extrapolation_warning(bundled, tmp_path):
    """Issue 10 item 7: the StepLaw `mixplan fit` stored in the lake, with a warning beyond
    its sweep; DeepSeek's published constants as an option."""
    from mixplan.planning.fitting import fit_frame
    from mixplan.planning.fitting.steplaw import fit_steplaw

    raw = pl.read_csv(bundled / "step-law__steplaw" / "dense_lr_bs_loss.csv")
    frame = raw.select(
        pl.col("N").cast(pl.Float64).alias("params"),
        pl.col("D").cast(pl.Float64).alias("tokens"),
        pl.col("lr").alias("learning_rate"),
        (pl.col("D") / pl.col("ti")).alias("batch_size"),
        pl.col("smooth loss").alias("loss"),
    )
    steplaw = fit_steplaw(frame, n_bootstrap=0, backtest_quantile=None)
    steplaw.to_json(tmp_path / "fits" / "steplaw.json")
    epoch = pl.read_csv(bundled / "epoch-research__analyzing-chinchilla" / "svg_extracted_data.csv")
    epoch = epoch.select(
        pl.col("Model Size").alias("params"),
        (pl.col("Training FLOP") / (6 * pl.col("Model Size"))).alias("tokens"),
        pl.col("loss"),
    )
    grid = {"alpha": [0.3], "beta": [0.3], "e": [0.5], "a": [6], "b": [7]}
    fit = fit_frame(epoch, "chinchilla", n_bootstrap=0, backtest_quantile=None, grid=grid)
    fit.to_json(tmp_path / "fits" / "epoch-chinchilla.json")
    data = {"law": {"fit": "epoch-chinchilla"}, "budget": {"flops": 1e23}}
    plan = make_plan(parse_spec(data), lake=tmp_path)
    hp = plan.explanation["hyperparameters"]
    assert "fitted by `mixplan fit`" in hp["law"]
    expected = float(steplaw.law.learning_rate(plan.params, plan.tokens))
    assert hp["learning_rate"] == pytest.approx(expected, rel=1e-12)
    assert hp["learning_rate"] != pytest.approx(
        float(common_steplaw().learning_rate(plan.params, plan.tokens)), rel=1e-3
    )
    assert any("extrapolates" in w for w in plan.warnings)  # N ~ 1e10 > the sweep's 1.1e9
    deepseek = make_plan(
        parse_spec({**data, "hyperparameters": {"law": "deepseek"}}), lake=tmp_path
    )
    flops = 6 * deepseek.params * deepseek.tokens
    got = deepseek.explanation["hyperparameters"]
    assert got["learning_rate"] == pytest.approx(float(DEEPSEEK.learning_rate(flops)))
    assert got["batch_size_tokens"] == pytest.approx(float(DEEPSEEK.batch_size(flops)))
    with pytest.raises(SpecError, match="hyperparameters.law"):
        make_plan(parse_spec({**_spec(), "hyperparameters": {"law": "fitted"}}))


def common_steplaw():
    from mixplan.planning.laws import STEPLAW

    return STEPLAW


def test_whatif_plans_match_full_plans_without_per_query_extras():
    """A what-if is the same allocation as a full plan, without recomputing the frontier."""
    from mixplan.planning.plan import whatif

    spec = parse_spec(_spec(inference={"tokens": 1e12}, limits={"max_params": 3e10}))
    plans = whatif(spec, budgets=[1e22, 1e24], inference_tokens=[0, 1e12])
    for p in plans:
        full = make_plan(
            parse_spec(
                _spec(
                    budget={"flops": p.inputs["budget_flops"]},
                    inference={"tokens": p.inputs["inference_tokens"]},
                    limits={"max_params": 3e10},
                )
            )
        )
        assert p.params == full.params and p.tokens == full.tokens and p.frontier == []
        assert full.frontier


def test_inference_taking_nearly_all_of_the_budget_is_planned_not_a_math_error():
    """Found by the API's schema fuzz: with T_inf so large that a 1e22 budget leaves about 87
    training FLOPs, ``C - 2 T N`` cancels to <= 0 at the budget curve's end and math.log
    raised ValueError (a 500 through the API)."""
    from mixplan.planning.plan import whatif

    spec = parse_spec(
        {
            "name": "inference-heavy",
            "law": {"name": "sardana"},
            "budget": {"flops": 1e23},
            "limits": {"max_days": 60, "max_params": 7e10},
            "training": {"gpu": "h100", "gpus": 1024, "mfu": 0.4, "precision": "bf16"},
            "inference": {"tokens_in": 3.588181429998398e23, "tokens_out": 1.2469455967155794e-05},
            "sources": [{"name": "web", "unique_tokens": 1.4063244642143072e17, "max_epochs": 2}],
        }
    )
    plans = whatif(spec, budgets=[1e22, 1e23], inference_tokens=[3.450965559314892e20])
    assert len(plans) == 2
    for plan in plans:
        assert plan.status.value in {"optimal", "infeasible", "optimal_inaccurate"}
        if plan.status.solved:
            assert (
                plan.train_flops + 2 * plan.params * 3.450965559314892e20
                <= 1.0001 * (plan.inputs["budget_flops"])
            )
