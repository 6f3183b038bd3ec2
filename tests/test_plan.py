"""make_plan end to end: stored fits from the bundled real data, statuses, what-ifs, rendering."""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mixplan.planning.errors import SpecError
from mixplan.planning.fitting import fit_frame
from mixplan.planning.laws.chinchilla import SARDANA
from mixplan.planning.plan import Planner, ResolvedLaw, make_plan, whatif
from mixplan.planning.programs.budget import closed_form
from mixplan.planning.spec import load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


@pytest.fixture(scope="module")
def lake(bundled, tmp_path_factory) -> Path:
    """A lake with a Chinchilla fit (30 bootstrap draws) of the bundled Epoch points."""
    frame = pl.read_csv(bundled / "epoch-research__analyzing-chinchilla" / "svg_extracted_data.csv")
    frame = frame.select(
        pl.col("Model Size").alias("params"),
        (pl.col("Training FLOP") / (6 * pl.col("Model Size"))).alias("tokens"),
        pl.col("loss"),
    )
    grid = {"alpha": [0.3, 0.5], "beta": [0.3, 0.5], "e": [0.5], "a": [5, 7], "b": [5, 8]}
    fit = fit_frame(frame, "chinchilla", n_bootstrap=30, backtest_quantile=None, grid=grid, seed=1)
    root = tmp_path_factory.mktemp("lake")
    fit.to_json(root / "fits" / "epoch-chinchilla.json")
    return root


@pytest.fixture(scope="module")
def example() -> dict:
    return tomllib.loads((SPECS / "example.toml").read_text())


def test_bundled_spec_plans_with_intervals_and_explanations(lake):
    spec = load_spec(SPECS / "bundled.toml")
    plan = make_plan(spec, lake=lake)
    assert plan.ok, plan.reason
    assert plan.interval_draws == 30
    for name in ("params", "tokens", "loss", "tokens_per_param", "vocab_size"):
        iv = plan.intervals[name]
        assert iv["low"] <= iv["median"] <= iv["high"]
    assert plan.intervals["params"]["low"] < plan.intervals["params"]["high"]
    # the point plan sits inside its own bootstrap interval
    assert plan.intervals["loss"]["low"] <= plan.loss * 1.001
    ex = plan.explanation
    assert ex["binding"] == ["budget"] and ex["shadow_prices"]["budget"] > 0
    assert ex["marginal_loss_per_10x"] > 0
    lo, hi = ex["flat_params_range"]
    assert lo < plan.params < hi
    assert 1e-5 < ex["hyperparameters"]["learning_rate"] < 1e-2
    assert plan.robust is not None
    assert plan.robust["worst_loss"] <= plan.robust["nominal_worst_loss"] + 1e-9
    text = plan.render()
    assert "90% interval" in text and "robust plan" in text and "vocabulary size" in text
    assert json.loads(plan.to_json())["status"] == "optimal"


def test_stored_fit_needs_a_lake():
    spec = load_spec(SPECS / "bundled.toml")
    with pytest.raises(SpecError, match="law.fit.*--lake"):
        make_plan(spec)


def test_example_plan_has_vocabulary_and_mixture(example):
    plan = make_plan(parse_spec(example))
    assert plan.ok
    assert plan.inference_flops == pytest.approx(2 * plan.params * 5e11)
    assert plan.train_flops + plan.inference_flops == pytest.approx(1e23, rel=1e-5)
    assert 8000 <= plan.vocabulary["vocab_size"] <= 512000
    assert sum(plan.mixture.values()) == pytest.approx(1, abs=1e-6)
    detail = plan.mixture_plan
    for name, tokens in detail["source_tokens"].items():
        cap = next(s.cap for s in parse_spec(example).sources if s.name == name)
        assert tokens <= cap * (1 + 1e-6)
    assert plan.cost_dollars > 0 and plan.train_days > 0
    losses = [p["loss"] for p in plan.frontier]
    assert len(losses) == 9 and all(a >= b - 1e-9 for a, b in zip(losses, losses[1:], strict=False))
    assert plan.frontier[4]["loss"] == pytest.approx(plan.loss, rel=1e-6)


def test_target_mode_and_infeasible_reason(example):
    data = copy.deepcopy(example)
    data["budget"] = {"target_loss": 1.947}
    data.pop("mixture")
    data.pop("eval")
    data["inference"] = {"tokens": 2e12}
    data["limits"] = {}
    plan = make_plan(parse_spec(data))
    assert plan.ok
    assert plan.params == pytest.approx(2.418e10, rel=1e-3)  # G5 through the spec path
    assert plan.explanation["flops_ratio_for_lower_target"] > 1
    data["budget"] = {"target_loss": 1.8}
    data["sources"] = [{"name": "web", "unique_tokens": 5e11, "max_epochs": 2}]
    data["limits"] = {"max_params": 1e12}
    plan = make_plan(parse_spec(data))
    assert plan.status == "infeasible"
    assert "no model reaches loss 1.8" in plan.reason and "best reachable" in plan.reason
    assert "infeasible" in plan.render()


def test_dollar_objective_prices_inference(example):
    data = copy.deepcopy(example)
    data["budget"] = {"target_loss": 1.947, "objective": "dollars"}
    data["training"] = {"gpu": "a100", "precision": "bf16", "price_per_hour": 1.4, "mfu": 0.5}
    data["inference"] = {
        "requests": 1e10,
        "tokens_in_per_request": 1000,
        "tokens_out_per_request": 250,
        "gpu": "a100",
        "precision": "int8",
        "price_per_hour": 0.6,
        "prefill_mfu": 0.4,
        "decode_mfu": 0.2,
    }
    for key in ("mixture", "eval", "sources", "limits", "vocabulary"):
        data.pop(key)
    plan = make_plan(parse_spec(data))
    assert plan.params == pytest.approx(2.053e10, rel=1e-3)  # G6 through the spec path
    assert plan.tokens == pytest.approx(3.302e12, rel=1e-3)


def test_repetition_law_by_name(example):
    data = {
        "law": {"name": "datablations"},
        "budget": {"flops": 1e22},
        "sources": [{"name": "web", "unique_tokens": 25e9, "max_epochs": 60}],
    }
    plan = make_plan(parse_spec(data))
    assert plan.tokens == pytest.approx(2.3734e11, rel=1e-3)  # G10 through the spec path
    assert plan.epochs == pytest.approx(9.4935, rel=1e-3)


def test_whatif_grid_reuses_programs(example):
    planner = Planner()
    data = copy.deepcopy(example)
    for key in ("mixture", "eval", "vocabulary", "limits"):
        data.pop(key)
    plans = whatif(
        parse_spec(data), budgets=[1e22, 1e23, 1e24], inference_tokens=[0, 1e12], planner=planner
    )
    assert len(plans) == 6
    no_inf = [p for p in plans if p.inputs["inference_tokens"] == 0]
    for plan, flops in zip(no_inf, [1e22, 1e23, 1e24], strict=True):
        assert plan.params == pytest.approx(closed_form(SARDANA, flops)[0], rel=1e-3)
    with_inf = [p for p in plans if p.inputs["inference_tokens"] == 1e12]
    assert all(a.params > b.params for a, b in zip(no_inf, with_inf, strict=True))
    losses = np.array([p.loss for p in no_inf])
    assert np.all(np.diff(losses) < 0)


def test_mixture_intervals_under_bootstrap_draws(lake, example):
    data = tomllib.loads((SPECS / "bundled.toml").read_text())
    for key in ("sources", "mixture", "eval"):
        data[key] = copy.deepcopy(example[key])
    data.pop("vocabulary")
    data["uncertainty"] = {"draws": True, "robust": False}
    plan = make_plan(parse_spec(data), lake=lake)
    assert plan.ok
    spread = plan.intervals["mixture"]
    assert set(spread) == set(plan.mixture)
    for name, share in plan.mixture.items():
        assert spread[name]["low"] - 1e-6 <= spread[name]["median"] <= spread[name]["high"] + 1e-6
        assert 0 <= share <= 1
    assert "90% interval" in plan.render()


REGMIX_SOURCES = ["pile_cc", "github", "arxiv", "wikipedia_en", "other"]


@pytest.fixture(scope="module")
def regmix(bundled):
    """An exponential mixture law fitted on real RegMix runs (4 Pile domains + the rest), with
    the run mixtures it was fitted on."""
    from mixplan.planning.mixture.data import MixtureData
    from mixplan.planning.mixture.exponential import ExponentialLaw

    keep = REGMIX_SOURCES[:-1]
    mix = pl.read_csv(bundled / "sail-sg__regmix" / "train_mixture_1m.csv")
    loss = pl.read_csv(bundled / "sail-sg__regmix" / "train_pile_loss_1m.csv")
    cols = [f"train_the_pile_{k}" for k in keep]
    weights = np.c_[mix.select(cols).to_numpy(), mix.drop(["index", *cols]).to_numpy().sum(1)]
    losses = loss.select([f"metric/the_pile_{d}_val_loss" for d in keep]).to_numpy()
    data = MixtureData.from_arrays(weights, losses, sources=REGMIX_SOURCES, domains=keep)
    return ExponentialLaw().fit(data), weights


def _regmix_spec(fit: str) -> dict:
    return {
        "law": {"name": "sardana"},
        "budget": {"flops": 1e22},
        "sources": [
            {"name": name, "unique_tokens": u, "max_epochs": 4}
            for name, u in zip(REGMIX_SOURCES, [5.7e10, 2.4e10, 1.4e10, 1.6e9, 1.2e11], strict=True)
        ],
        "mixture": {"fit": fit},
        "eval": {"weights": {"pile_cc": 0.4, "github": 0.2, "arxiv": 0.2, "wikipedia_en": 0.2}},
    }


def test_stored_mixture_fit_from_bundled_regmix_runs(regmix, lake):
    """A mixture law fitted by planning.mixture on real RegMix runs, loaded by name."""
    law, _ = regmix
    (lake / "fits" / "regmix_mixture.json").write_text(law.to_json())
    spec = _regmix_spec("regmix_mixture")
    plan = make_plan(parse_spec(spec), lake=lake.as_uri())  # a URL lake reads mixture fits too
    assert plan.ok, plan.reason
    detail = plan.mixture_plan
    assert detail["status"] == "optimal"
    assert detail["share_limits"] is None  # the fit records no training shares
    assert sum(plan.mixture.values()) == pytest.approx(1, abs=1e-6)
    assert detail["source_tokens"]["wikipedia_en"] <= 1.6e9 * 4 * (1 + 1e-6)
    # the convex answer is at least as good as the best of 5,000 random mixtures at its D
    program = Planner().mixtures.get(parse_spec(spec), SARDANA, law)
    draws = np.random.default_rng(0).dirichlet(np.ones(5), 5000)
    flops = 6 * detail["params"] * detail["tokens"]
    best = program.objective(draws, detail["tokens"], flops).min()
    assert detail["loss"] <= best + 1e-7


def test_mixture_trust_region_caps_shares_at_the_stored_training_shares(regmix, lake):
    """A stored ``training_max_share`` caps each source's share and is reported as binding;
    ``trust_region = false`` lets the law go past it."""
    law, _ = regmix
    spec = _regmix_spec("regmix_trusted")
    untrusted = {**spec, "mixture": {**spec["mixture"], "trust_region": False}}
    payload = json.loads(law.to_json())
    (lake / "fits" / "regmix_trusted.json").write_text(json.dumps(payload))
    free = make_plan(parse_spec(spec), lake=lake)  # no training shares stored: no limit
    assert free.mixture_plan["share_limits"] is None
    # as if the runs had never given the free plan's favourite source more than half its share
    top = max(free.mixture, key=free.mixture.get)
    limits = {name: 1.0 for name in REGMIX_SOURCES} | {top: free.mixture[top] / 2}
    payload["training_max_share"] = limits
    (lake / "fits" / "regmix_trusted.json").write_text(json.dumps(payload))
    assert make_plan(parse_spec(untrusted), lake=lake).mixture == pytest.approx(free.mixture)
    plan = make_plan(parse_spec(spec), lake=lake)
    assert plan.ok, plan.reason
    detail = plan.mixture_plan
    assert detail["share_limits"] == pytest.approx(limits)
    assert plan.mixture[top] == pytest.approx(limits[top], rel=1e-4)
    assert sum(plan.mixture.values()) == pytest.approx(1, abs=1e-6)
    assert detail["at_share_limit"] == [top] and detail["share_limit_shadow_prices"][top] > 0
    assert "mixture_trust_region" in plan.explanation["binding"]
    assert "trust region" in plan.render()
    assert detail["loss"] >= free.mixture_plan["loss"] - 1e-9  # a limit never lowers the loss


def test_explanations_match_closed_forms():
    plan = make_plan(parse_spec({"law": {"name": "sardana"}, "budget": {"flops": 1e23}}))
    ex = plan.explanation
    n1, d1, _ = closed_form(SARDANA, 1e23)
    n10, d10, _ = closed_form(SARDANA, 1e24)
    expected = float(SARDANA.predict(n1, d1) - SARDANA.predict(n10, d10))
    assert ex["marginal_loss_per_10x"] == pytest.approx(expected, rel=1e-4)
    # first-order check of the shadow price: dL/dlogC over one decade is about price * ln 10
    assert ex["shadow_prices"]["budget"] * np.log(10) > expected  # convex: tangent overshoots
    lo, hi = ex["flat_params_range"]
    best = plan.loss

    def along(n):
        return float(SARDANA.predict(n, 1e23 / (6 * n)))

    assert along(lo) <= best * 1.005 + 1e-12 and along(hi) <= best * 1.005 + 1e-12
    assert along(lo * 0.99) > best * 1.005 and along(hi * 1.01) > best * 1.005
    hp = ex["hyperparameters"]
    assert hp["batch_size_tokens"] == pytest.approx(0.58069 * plan.tokens**0.57094, rel=1e-9)


def test_stored_fits_read_from_a_url_lake(lake):
    """A ``file://`` lake (the fsspec form object stores use) reads like a local one."""
    spec = load_spec(SPECS / "bundled.toml")
    local = make_plan(spec, lake=lake)
    remote = make_plan(spec, lake=lake.as_uri())
    assert remote.ok and f"{lake.as_uri()}/fits/epoch-chinchilla.json" in remote.law["description"]
    assert remote.params == local.params and remote.interval_draws == local.interval_draws
    with pytest.raises(SpecError, match="cannot read file://.*missing.json.*mixplan fit"):
        make_plan(replace(spec, law=replace(spec.law, fit="missing")), lake=lake.as_uri())


def test_vocabulary_point_lies_inside_its_interval_across_a_width_step():
    """Draws whose N straddles a step of Tao's width rule (50e9 -> 6048 | 8192) used to pick
    their own width, so V jumped ~35% and the point fell outside its own interval."""
    spec = parse_spec(
        {
            "law": {"name": "sardana"},
            "budget": {"flops": 1e22},  # replaced below
            "vocabulary": {"min": 8000, "max": 512000},
        }
    )
    # the budget whose compute-optimal N is 5.1e10, just above the 50e9 width step
    lo, hi = 1e22, 1e26
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if closed_form(SARDANA, mid)[0] < 5.1e10 else (lo, mid)
    spec = replace(spec, flops=hi)
    draws = tuple(SARDANA.replace(A=SARDANA.A * f) for f in np.linspace(0.8, 1.25, 31))
    resolved = ResolvedLaw(SARDANA, "sardana with draws of A", draws)
    plan = Planner().plan(spec, resolved=resolved)
    assert plan.ok and plan.vocabulary["width"] == 8192
    assert plan.intervals["params"]["low"] < 50e9 < plan.intervals["params"]["high"]
    iv = plan.intervals["vocab_size"]
    assert iv["low"] <= plan.vocabulary["vocab_size"] <= iv["high"]


def test_learning_rate_uses_non_embedding_params(lake):
    """StepLaw's N is non-embedding: N - V d when the vocabulary is planned, N otherwise."""
    from mixplan.planning.laws import STEPLAW

    plan = make_plan(load_spec(SPECS / "bundled.toml"), lake=lake)
    hp = plan.explanation["hyperparameters"]
    non_embedding = plan.params - plan.vocabulary["vocab_params"]
    assert hp["non_embedding_params"] == pytest.approx(non_embedding, rel=1e-12)
    assert hp["learning_rate"] == pytest.approx(
        float(STEPLAW.learning_rate(non_embedding, plan.tokens)), rel=1e-12
    )
    assert "N - V d" in plan.render()
    bare = make_plan(parse_spec({"law": {"name": "sardana"}, "budget": {"flops": 1e23}}))
    assert bare.explanation["hyperparameters"]["non_embedding_params"] == bare.params
    assert "no vocabulary planned" in bare.render()


def test_whatif_defers_vocabulary_and_advice_to_the_same_numbers():
    """A what-if leaves the vocabulary split and the advice reading it to the first read; what
    it then holds (and what pickling, the JSON form and equality see) is the spec's own plan at
    the same budget: one model, the same numbers."""
    import pickle

    spec = load_spec(SPECS / "example.toml")
    spec = replace(spec, flops=3e23, dollars=None, target_loss=None, mixture=None)
    planner = Planner()
    (point,) = whatif(spec, budgets=[3e23], planner=planner)
    assert "_pending" in point.__dict__  # nothing computed yet
    full = make_plan(spec)
    assert point.params == full.params and point.tokens == full.tokens
    assert point.vocabulary == full.vocabulary and point.vocabulary["vocab_size"] > 0
    hp, full_hp = point.explanation["hyperparameters"], full.explanation["hyperparameters"]
    assert hp == full_hp and point.warnings == full.warnings
    assert "_pending" not in point.__dict__
    (again,) = whatif(spec, budgets=[3e23], planner=planner)
    restored = pickle.loads(pickle.dumps(again))
    assert restored.to_dict() == point.to_dict() == again.to_dict()


def test_deferred_plan_is_the_plan_its_constructor_builds():
    """`Plan.deferred` (the what-if's constructor, without the frozen ``__init__``) holds what
    ``Plan(**values)`` with the computed fields holds: the same defaults, fresh containers per
    plan (never one dict shared by two plans), no unknown or missing field accepted."""
    from mixplan.planning.plan_model import Plan

    spec = load_spec(SPECS / "example.toml")
    spec = replace(spec, flops=3e23, dollars=None, target_loss=None, mixture=None)
    (point,) = whatif(spec, budgets=[3e23], inference_tokens=[1e11])
    eager = {name: getattr(point, name) for name in ("vocabulary", "explanation", "warnings")}
    values = {"name": "p", "mode": "budget", "status": point.status, "params": point.params}
    first = Plan.deferred(lambda: eager, **values)
    second = Plan.deferred(lambda: eager, **values)
    assert first == Plan(**values, **eager) == second
    first.intervals["n"] = 1.0
    first.frontier.append({})
    first.law["x"] = 1
    assert second.intervals == {} and second.frontier == [] and second.law == {}
    with pytest.raises(TypeError, match="unexpected fields"):
        Plan.deferred(lambda: eager, vocabulary=None, **values)
    with pytest.raises(TypeError, match="missing fields"):
        Plan.deferred(lambda: eager, name="p", mode="budget")
    assert point == Plan(**{f: getattr(point, f) for f in point.__dataclass_fields__})
