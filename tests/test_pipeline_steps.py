"""The pipeline's steps without the flow: which experiments it fits, when it reuses stored
fits, and what a failing spec's problem line tells the user to do."""

from __future__ import annotations

import tomllib

import pytest

from mixplan.planning.errors import SpecError
from mixplan.planning.experiments import held_out_pairs
from mixplan.planning.report.plans import missing_fit_hint
from mixplan.tasks.discover import discover_specs
from mixplan.tasks.drift import reusable_fits


def test_a_test_experiment_scores_its_train_partner_instead_of_being_fitted():
    names = ["regmix-1m-test", "regmix-1m-train", "solo-test", "x-train"]
    assert held_out_pairs(names) == [
        ("regmix-1m-train", "regmix-1m-test"),
        ("solo-test", None),
        ("x-train", None),
    ]


def test_stored_fits_are_reused_only_when_the_key_matches_and_every_file_exists(tmp_path):
    fit = tmp_path / "fits" / "a.json"
    fit.parent.mkdir()
    fit.write_text("{}")
    state = {"fit_key": "k1", "fit_paths": [str(fit)], "mixture_paths": []}
    assert reusable_fits(state, "k1")
    assert not reusable_fits(state, "k2")
    assert not reusable_fits({**state, "mixture_paths": [str(tmp_path / "gone.json")]}, "k1")
    assert not reusable_fits({**state, "fit_paths": []}, "k1")
    assert not reusable_fits({}, "k1")


def test_a_spec_naming_a_fit_this_run_did_not_write_says_which_fits_exist(bundled):
    spec = tomllib.loads((bundled.parent / "specs" / "bundled.toml").read_text())
    spec["law"]["fit"] = "epoch-chinchilla-typo"
    hint = missing_fit_hint(spec, ["epoch-chinchilla", "sardana-kaplan"])
    assert "fit = 'epoch-chinchilla-typo' names a fit this run did not write" in hint
    assert "fits written: epoch-chinchilla, sardana-kaplan" in hint
    assert missing_fit_hint(spec, ["epoch-chinchilla-typo"]) is None
    assert missing_fit_hint({"law": {"name": "chinchilla"}}, []) is None


def test_a_spec_that_is_not_toml_is_named(tmp_path):
    (tmp_path / "good.toml").write_text('name = "x"\n')
    (tmp_path / "bad.toml").write_text("name = \n")
    with pytest.raises(SpecError, match=r"bad\.toml: not valid TOML"):
        discover_specs.fn(str(tmp_path))
    assert discover_specs.fn(str(tmp_path / "good.toml")) == {"good": {"name": "x"}}


def test_the_fit_cache_key_changes_with_sources_options_and_code(monkeypatch):
    import mixplan.tasks.drift as drift

    sources, options = {"a.csv": "h1", "b.csv": "h2"}, {"n_bootstrap": 40, "mixture": True}
    key = drift.cache_key(sources, options)
    assert drift.cache_key(dict(reversed(sources.items())), options) == key  # order-free
    assert drift.cache_key({**sources, "b.csv": "h3"}, options) != key
    assert drift.cache_key(sources, {**options, "n_bootstrap": 41}) != key
    monkeypatch.setattr(drift, "code_version", lambda: "0.1.0+gdifferent")
    assert drift.cache_key(sources, options) != key  # new code: the stored fits are stale


def test_the_plan_key_changes_with_the_fits_and_every_spec():
    from mixplan.tasks.drift import plan_key

    specs = {"a": {"budget": {"flops": 1e23}}, "b": {"budget": {"flops": 1e22}}}
    key = plan_key("fits-1", specs)
    assert plan_key("fits-2", specs) != key
    assert plan_key("fits-1", {**specs, "b": {"budget": {"flops": 2e22}}}) != key
    assert plan_key("fits-1", {"a": specs["a"]}) != key


def test_law_sections_are_reused_only_under_their_fit_key(tmp_path):
    from mixplan.planning.report import Estimate, Figure, LawSection, Table
    from mixplan.tasks.report import cached_law_sections, store_law_sections

    section = LawSection(
        title="chinchilla law (epoch-chinchilla)",
        formula="L = E + A/N^a + B/D^b",
        parameters=(Estimate("E", 1.8, 1.7, 1.9),),
        decisions=(Estimate("optimal N", 7e10, None, None, "params"),),
        notes=("a note",),
        figures=(Figure("loss vs compute", b"\x89PNG\r\n\x1a\n...", "caption"),),
        tables=(Table(("a", "b"), (("1", "2"),), "t"),),
    )
    lake = str(tmp_path / "lake")
    assert cached_law_sections(lake, "k1") is None  # nothing stored yet
    store_law_sections(lake, "k1", [section])
    assert cached_law_sections(lake, "k1") == [section]
    assert cached_law_sections(lake, "k2") is None
