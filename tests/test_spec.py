"""Plan specs: the example parses; every invalid spec raises SpecError naming the field."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from mixplan.planning.errors import SpecError
from mixplan.planning.spec import load_spec, parse_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "specs" / "example.toml"


@pytest.fixture(scope="module")
def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_spec_parses_with_every_section(example):
    spec = load_spec(EXAMPLE)
    assert spec.name == "example-7-sources"
    assert spec.mode == "budget" and spec.budget_flops == 1e23
    assert len(spec.sources) == 7 and spec.max_tokens == pytest.approx(
        sum(s.unique_tokens * s.max_epochs for s in spec.sources)
    )
    assert spec.training.peak_flops == 9.89e14
    assert spec.inference.hardware.peak_flops == 6.24e14
    assert spec.inference.tokens == pytest.approx(5e11)
    assert spec.max_train_flops == pytest.approx(60 * 86400 * 1024 * 9.89e14 * 0.4)
    assert spec.eval_weights == {"web": 0.5, "code": 0.25, "reasoning": 0.25}
    assert spec.vocabulary == (8000, 512000)


def test_dollar_budget_converts_at_delivered_flops(example):
    data = copy.deepcopy(example)
    data["budget"] = {"dollars": 1e6}
    spec = parse_spec(data)
    assert spec.budget_flops == pytest.approx(1e6 / (2.5 / 3600 / 9.89e14 / 0.4))


def test_requests_times_tokens(example):
    data = copy.deepcopy(example)
    data["inference"] = {
        "requests": 1e10,
        "tokens_in_per_request": 1000,
        "tokens_out_per_request": 250,
    }
    spec = parse_spec(data)
    assert spec.inference.tokens_in == 1e13 and spec.inference.tokens_out == 2.5e12


def _mutate(example, path: str, value):
    data = copy.deepcopy(example)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("budget.flops", -1e22, "budget.flops", "positive"),
        ("budget.flops", "lots", "budget.flops", "number"),
        ("eval.weights", {"web": 0.5, "code": 0.25, "reasoning": 0.3}, "eval.weights", "sum to 1"),
        ("eval.weights", {"web": 0.5, "poetry": 0.5}, "eval.weights.poetry", "unknown"),
        ("mixture.sources", ["web", "code", "bogus"], "mixture.sources", "unknown source"),
        ("law.name", "kaplan2030", "law.name", "unknown law"),
        ("training.mfu", 1.5, "training.mfu", "at most 1"),
        ("training.gpu", "tpu", "training.gpu", "peak"),
        ("limits.min_tokens_per_param", 5000, "limits.min_tokens_per_param", "exceeds"),
        ("sources.1.name", "web", "sources[1].name", "duplicate"),
        ("sources.0.unique_tokens", _DELETE, "sources[0].unique_tokens", "missing"),
        ("mixture.k", [0.6, -0.9, 0.7], "mixture.k", "positive"),
        ("mixture.t", [[1.0]], "mixture.t", "rows"),
        ("budget.objective", "karma", "budget.objective", "flops"),
        ("limits.max_memory", 3, "limits.max_memory", "unknown field"),
        ("mixture.trust_region", "yes", "mixture.trust_region", "true or false"),
    ],
)
def test_invalid_specs_name_the_field(example, path, value, field, words):
    data = _mutate(example, path, value)
    with pytest.raises(SpecError) as info:
        parse_spec(data, origin="specs/bad.toml")
    message = str(info.value)
    assert f"field '{field}'" in message and "specs/bad.toml" in message
    assert words in message


def test_budget_needs_exactly_one_kind(example):
    data = copy.deepcopy(example)
    data["budget"] = {"flops": 1e22, "target_loss": 2.0}
    with pytest.raises(SpecError, match="field 'budget'.*exactly one"):
        parse_spec(data)
    data["budget"] = {"dollars": 1e6}
    del data["training"]
    del data["limits"]["max_days"]
    with pytest.raises(SpecError, match="training.price_per_hour"):
        parse_spec(data)


def test_unknown_section_and_law_forms(example):
    with pytest.raises(SpecError, match="field 'mixtures'"):
        parse_spec({**example, "mixtures": {}})
    with pytest.raises(SpecError, match="field 'law'"):
        parse_spec({**example, "law": {"name": "sardana", "E": 1.7}})
    with pytest.raises(SpecError, match="law.beta"):
        parse_spec({**example, "law": {"E": 1.7, "A": 400, "B": 400, "alpha": 0.3}})
    spec = parse_spec({**example, "law": {"E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3}})
    assert spec.law.kind == "inline"


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[budget\nflops = 1")
    with pytest.raises(SpecError, match="broken.toml.*not valid TOML"):
        load_spec(path)
    with pytest.raises(SpecError, match="no such spec"):
        load_spec(tmp_path / "missing.toml")
