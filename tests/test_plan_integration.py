"""The planner on the other engineers' fits, on real bundled runs ingested into a real lake.

- issue 10 item 2: ``[law] experiment`` plans with the leaderboard winner's stored fit and says
  why (rank, held-out score); ``fit`` still names one;
- issue 10 item 5: ``budget.target_downstream`` turns a downstream error into the loss target
  of its stored loss -> error fit (Sardana's eval gauntlet), and says when it cannot be reached;
- issue 11 item 4: a mixture law fitted across scale at one D (5Mix, the scale route) pins the
  plan's D and reports the planned mixture's loss with its interval next to the best run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mixplan.planning.errors import SpecError
from mixplan.planning.fitting import downstream_law, leaderboard_path
from mixplan.planning.plan import make_plan, resolve_mixture_law
from mixplan.planning.report.plans import plan_section
from mixplan.planning.spec import parse_spec

SARDANA = "nikhilsardana__beyond-chinchilla/trainingresults.csv"
FIVE_MIX = "mixinglaws-5mix"
METRIC = "eval_gauntlet/core_average"
DOWNSTREAM = "sardana-downstream-eval_gauntlet_core_average"
SCALE_FIT = f"{FIVE_MIX}-mixture-scale"
NESTED_FIT = f"{FIVE_MIX}-mixture-nested-at-target"
TARGET_TOKENS = 30_000 * 2**20  # 5Mix step 30k (one step is 2^20 tokens)


@pytest.fixture(scope="module")
def lake(bundled: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Sardana's runs (leaderboard, fits, a downstream fit) and 5Mix's (a scale-route mixture
    law stored as the mixture flow stores it), through the ingest and fit code paths."""
    from mixplan.flows.fit_mixture import chosen_law, scale_summary
    from mixplan.planning.mixture.data import TRAINING_MAX_SHARE
    from mixplan.planning.mixture.selection import ROUTES
    from mixplan.tasks.fit import fit_downstream_lake, fit_lake
    from mixplan.tasks.ingest import ingest_paths
    from mixplan.tasks.mixture import (
        fit_family,
        read_mixture_curves,
        read_mixture_data,
        write_mixture_fit,
    )

    folder = str(tmp_path_factory.mktemp("plan-integration") / "lake")
    ingest_paths([bundled / SARDANA, bundled / "yegcjs__mixinglaws" / "5Mix"], folder)
    fit_lake(folder, experiments=["sardana"], n_bootstrap=4)
    fit_downstream_lake(folder, "sardana", METRIC, n_bootstrap=10)

    curves = read_mixture_curves(folder, FIVE_MIX)
    curves = curves.runs_where(np.isfinite(curves.params))
    params = float(np.unique(curves.params)[-1])
    route = ROUTES["scale (A in h)"](params, float(TARGET_TOKENS), n_bootstrap=3).fit(curves)
    chosen = {
        "route": route,
        "chosen": "scale (A in h)",
        "scores": pl.DataFrame(),
        "target": {"params": params, "tokens": float(TARGET_TOKENS)},
        "step_warning": "",
    }
    summary = scale_summary(chosen, curves)
    write_mixture_fit(
        folder,
        SCALE_FIT,
        chosen_law(route),
        data_hash="test",
        extra={
            "chosen_route": chosen["chosen"],
            "target": chosen["target"],
            "selection": [],
            "best_observed": summary["best_observed"],
            TRAINING_MAX_SHARE: curves.final().max_shares(),
        },
    )
    # the nested route's law: an additive law in the mixture alone, at the target (N, D)
    data, _ = read_mixture_data(folder, FIVE_MIX)
    nested = fit_family("additive", data.subset(data.params == params), n_bootstrap=2)
    write_mixture_fit(
        folder,
        NESTED_FIT,
        nested,
        data_hash="test",
        extra={"chosen_route": "nested", "target": chosen["target"]},
    )
    return folder


def _spec(law: dict, budget: dict | None = None, **extra) -> dict:
    return {"name": "integration", "law": law, "budget": budget or {"flops": 1e22}, **extra}


def _board(lake: str, name: str) -> dict:
    import json

    return json.loads(Path(leaderboard_path(lake, name)).read_text())


# ------------------------------------------------------------------ the law from the leaderboard


def test_a_law_by_experiment_plans_with_the_leaderboard_winner(lake):
    board = _board(lake, "sardana")
    plan = make_plan(parse_spec(_spec({"experiment": "sardana"})), lake=lake)
    assert plan.ok
    selection = plan.law["selection"]
    best = board["entries"][0]
    assert selection["law"] == board["winner"] == best["law"]
    assert selection["fit"] == best["fit"] and selection["reason"] == "leaderboard winner"
    assert selection["rank"] == 1 and selection["score"] == pytest.approx(best["score"])
    assert f"stored fit '{best['fit']}'" in plan.law["description"]
    text = plan.render()
    assert f"leaderboard winner: {best['law']} ranks 1 of {len(board['entries'])}" in text
    assert f"held-out error {best['score']:.2%}" in text
    report = plan_section("integration", plan.to_dict())
    assert any("leaderboard winner" in line for line in report.explanations)


def test_a_named_fit_is_kept_and_its_rank_shown(lake):
    board = _board(lake, "sardana")
    other = next(
        e for e in board["entries"] if e["law"] != board["winner"] and e["law"] == "chinchilla"
    )
    plan = make_plan(parse_spec(_spec({"fit": other["fit"]})), lake=lake)
    assert plan.law["selection"]["reason"] == "named by the spec"
    assert plan.law["selection"]["law"] == "chinchilla"
    assert plan.law["selection"]["rank"] == other["rank"] > 1
    winner = make_plan(parse_spec(_spec({"experiment": "sardana"})), lake=lake)
    assert winner.law["selection"]["fit"] != other["fit"] and winner.params != plan.params


def test_an_experiment_without_a_leaderboard_lists_those_there(lake):
    spec = parse_spec(_spec({"experiment": "epoch-chinchilla"}), origin="s.toml")
    with pytest.raises(SpecError) as err:
        make_plan(spec, lake=lake)
    message = str(err.value)
    assert "s.toml: field 'law.experiment'" in message and "leaderboards in" in message
    assert message.rstrip(")").split("leaderboards in ")[1].split(": ")[1].startswith("sardana")
    for law in ({"experiment": "sardana", "fit": "x"}, {"experiment": ""}, {"experiment": 3}):
        with pytest.raises(SpecError, match="field 'law"):
            parse_spec(_spec(law))


# ----------------------------------------------------------------------- downstream targets


def _downstream(lake: str) -> tuple[dict, object]:
    import json

    fit = json.loads((Path(lake) / "fits" / f"{DOWNSTREAM}.json").read_text())
    return fit, downstream_law(fit)


def test_a_downstream_error_target_plans_the_loss_it_needs(lake):
    fit, law = _downstream(lake)
    low, high = fit["loss_range"]
    error = float(law.predict(0.5 * (low + high)))
    target = {"fit": DOWNSTREAM, "error": error, "metric": METRIC}
    spec = parse_spec(_spec({"experiment": "sardana"}, {"target_downstream": target}))
    assert spec.mode == "target"
    plan = make_plan(spec, lake=lake)
    assert plan.ok and plan.mode == "target"
    required = float(law.required_loss(error))
    assert plan.downstream["required_loss"] == pytest.approx(required)
    assert required == pytest.approx(0.5 * (low + high), rel=1e-6)
    assert plan.loss == pytest.approx(required, rel=1e-6)  # the cheapest plan meets it exactly
    assert not any("downstream target needs loss" in w for w in plan.warnings)
    assert f"{METRIC} error {error:g}" in plan.render()
    # below every fitted loss: an extrapolation of the loss -> error law, said so
    error = float(law.predict(low - 0.1))
    spec = parse_spec(
        _spec({"experiment": "sardana"}, {"target_downstream": {**target, "error": error}})
    )
    plan = make_plan(spec, lake=lake)
    assert any("below the lowest loss of the runs" in w for w in plan.warnings)


def test_an_unreachable_downstream_error_is_an_infeasible_plan(lake):
    _, law = _downstream(lake)
    # at or above the law's ceiling (its error at any loss): no loss target to plan
    ceiling = float(law.predict(1e3))
    assert math.isnan(float(law.required_loss(ceiling)))
    target = {"fit": DOWNSTREAM, "error": ceiling}
    plan = make_plan(
        parse_spec(_spec({"experiment": "sardana"}, {"target_downstream": target})), lake=lake
    )
    assert plan.status.value == "infeasible"
    assert f"the downstream target {METRIC} error {ceiling:g} cannot be planned" in plan.reason
    assert "every loss meets it" in plan.reason and plan.reason in plan.render()
    # a loss below the scale law's floor E: the allocation's reason, naming the target
    error = float(law.predict(1.68))
    target = {"fit": DOWNSTREAM, "error": error}
    plan = make_plan(
        parse_spec(_spec({"name": "hoffmann"}, {"target_downstream": target})), lake=lake
    )
    assert plan.status.value == "infeasible"
    assert plan.reason.startswith(f"the downstream target {METRIC} error {error:g} needs loss 1.68")
    wrong = {"fit": DOWNSTREAM, "error": 0.5, "metric": "mmlu"}
    with pytest.raises(SpecError, match="target_downstream.metric"):
        make_plan(
            parse_spec(_spec({"experiment": "sardana"}, {"target_downstream": wrong})), lake=lake
        )
    with pytest.raises(SpecError, match="not a stored downstream fit"):
        bad = {"fit": "sardana-chinchilla", "error": 0.5}
        make_plan(parse_spec(_spec({"name": "sardana"}, {"target_downstream": bad})), lake=lake)
    for bad in ({"fit": DOWNSTREAM, "error": 1.5}, {"error": 0.5}, {"fit": DOWNSTREAM}):
        with pytest.raises(SpecError, match="budget.target_downstream"):
            parse_spec(_spec({"name": "sardana"}, {"target_downstream": bad}))
    with pytest.raises(SpecError, match="exactly one of"):
        parse_spec(_spec({"name": "sardana"}, {"flops": 1e22, "target_downstream": wrong}))


# ---------------------------------------------------------- mixture laws fitted at one D


def _mixture_spec(lake: str, flops: float, fit: str = SCALE_FIT, **limits) -> dict:
    from mixplan.tasks.mixture import read_mixture_curves

    sources = read_mixture_curves(lake, FIVE_MIX).sources
    return _spec(
        {"name": "hoffmann"},
        {"flops": flops},
        sources=[{"name": s, "unique_tokens": 1e12} for s in sources],
        mixture={"fit": fit},
        **({"limits": limits} if limits else {}),
    )


def test_a_mixture_law_fitted_at_one_d_pins_the_plan_there(lake):
    params = 2e9
    flops = 6 * params * TARGET_TOKENS
    spec = parse_spec(_mixture_spec(lake, flops))
    plan = make_plan(spec, lake=lake)
    assert plan.ok
    assert plan.tokens == pytest.approx(TARGET_TOKENS) and plan.params == pytest.approx(params)
    assert any("D is pinned at" in w for w in plan.warnings)
    scale = plan.mixture_plan["scale"]
    law = resolve_mixture_law(spec, lake=lake).law.at(params=params, tokens=TARGET_TOKENS)
    planned = np.array([plan.mixture[s.name] for s in spec.sources])
    assert scale["predicted_loss"] == pytest.approx(float(law.target_loss(planned, None)))
    low, high = scale["interval_90"]
    assert low < scale["predicted_loss"] < high
    # the planned mixture beats every observed 5Mix mixture at this N (all inside the trust
    # region: it is the largest share each source had in those runs)
    from mixplan.tasks.mixture import read_mixture_curves

    observed = read_mixture_curves(lake, FIVE_MIX).final().mixture
    assert scale["predicted_loss"] <= float(law.target_loss(observed, None).min()) + 1e-4
    best = scale["best_observed"]
    assert best["loss"] > 0 and best["run_predicted_loss"] == pytest.approx(
        best["predicted_loss"], rel=1e-9
    )
    text = plan.render()
    assert "route scale (A in h)" in text and "best observed run" in text
    report = plan_section("integration", plan.to_dict())
    assert any("best observed run" in line for line in report.explanations)


def test_a_pinned_d_the_limits_forbid_is_an_infeasible_plan(lake):
    flops = 6 * 2e9 * TARGET_TOKENS
    plan = make_plan(parse_spec(_mixture_spec(lake, flops, max_params=1e9)), lake=lake)
    assert plan.status.value == "infeasible"
    assert "holds only at D = " in plan.reason and "limits.max_params" in plan.reason


def test_the_nested_routes_law_pins_d_and_says_it_holds_at_its_own_n(lake):
    flops = 6 * 2e9 * TARGET_TOKENS
    spec = parse_spec(_mixture_spec(lake, flops, NESTED_FIT))
    plan = make_plan(spec, lake=lake)
    assert plan.ok and plan.tokens == pytest.approx(TARGET_TOKENS)
    scale = plan.mixture_plan["scale"]
    law = resolve_mixture_law(spec, lake=lake).law
    planned = np.array([plan.mixture[s.name] for s in spec.sources])
    assert scale["predicted_loss"] == pytest.approx(float(law.target_loss(planned, None)))
    assert scale["route"] == "nested" and scale["params"] == pytest.approx(
        scale["fitted_at"]["params"]
    )
    assert "fitted at N" in scale["note"] and scale["note"] in plan.render()
