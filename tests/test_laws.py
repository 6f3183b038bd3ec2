"""Golden values of the law modules (laws.md section 4) and the law protocol."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from mixplan.planning.errors import SpecError
from mixplan.planning.laws import (
    BESIROGLU,
    DATABLATIONS,
    DEEPSEEK,
    SARDANA,
    STEPLAW,
    TAO,
    ChinchillaLaw,
    DownstreamErrorLaw,
    GadreLaw,
    KaplanLaw,
    LossCurveLaw,
    law_from_dict,
    schedule_areas,
    tokens_per_character,
    width_for,
)
from mixplan.planning.laws import vocabulary as vocab
from mixplan.planning.laws.kaplan import KAPLAN_JOINT
from mixplan.planning.laws.repetition import effective_tokens


def test_g1_sardana_loss():
    """G1: L(70e9, 1e12) with Sardana constants = 1.94727 (1e-4 abs)."""
    assert SARDANA.predict(70e9, 1e12) == pytest.approx(1.94727, abs=1e-4)


@pytest.mark.parametrize(
    ("flops", "params", "tokens", "loss"),
    [(5.76e23, 4.1716e10, 2.3013e12, 1.93013), (1e24, 5.3682e10, 3.1047e12, 1.91061)],
)
def test_g2_g3_closed_form_allocation(flops, params, tokens, loss):
    """G2/G3: closed-form compute-optimal N, D, L at C = 6ND (1e-3 rel)."""
    n, d = SARDANA.compute_optimal(flops)
    g_const = SARDANA.G
    assert g_const == pytest.approx(1.297347, rel=1e-3)
    assert n == pytest.approx(params, rel=1e-3)
    assert d == pytest.approx(tokens, rel=1e-3)
    assert 6 * n * d == pytest.approx(flops, rel=1e-12)
    assert SARDANA.predict(n, d) == pytest.approx(loss, rel=1e-3)


def test_compute_optimal_is_the_minimum_on_the_budget_line():
    flops = 1e23
    n_opt, _ = BESIROGLU.compute_optimal(flops)
    grid = n_opt * np.exp(np.linspace(-0.5, 0.5, 201))
    losses = BESIROGLU.predict(grid, flops / (6 * grid))
    assert grid[np.argmin(losses)] == pytest.approx(n_opt, rel=0.01)


def test_g9_muennighoff_exact():
    """G9: datablations README values to 1e-9."""
    assert DATABLATIONS.predict(6.34e9, 242e9, 25e9) == pytest.approx(2.2256440889984477, abs=1e-9)
    assert DATABLATIONS.predict(8.67e9, 178e9, 25e9) == pytest.approx(2.2269634075087867, abs=1e-9)


def test_effective_data_multipliers():
    """laws.md 1.4 derived multipliers D'/U after e epochs."""
    epochs = np.array([2, 4, 8, 16, 40, 100])
    expected = [1.9682, 3.7257, 6.6241, 10.5825, 15.1675, 16.3630]
    got = effective_tokens(epochs * 1e9, 1e9, DATABLATIONS.rd_star) / 1e9
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert effective_tokens(1e6 * 1e9, 1e9, DATABLATIONS.rd_star) / 1e9 == pytest.approx(
        1 + DATABLATIONS.rd_star
    )


def test_effective_tokens_within_one_epoch_are_the_tokens():
    """A source not used up is all fresh: D' = D for D <= U (datablations' U_D = min(D, U))."""
    tokens = np.array([1e6, 1e9, 24.9e9, 25e9])
    np.testing.assert_allclose(effective_tokens(tokens, 25e9, DATABLATIONS.rd_star), tokens)


def test_single_epoch_reduces_to_chinchilla():
    law = DATABLATIONS
    chin = ChinchillaLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta)
    n, d = 1e8, 5e9  # small model, one epoch: N below N_opt(U), no repetition
    assert law.predict(n, d, d) == pytest.approx(chin.predict(n, d), rel=1e-12)


def test_g14_tokens_per_character():
    """G14: f(32000), f(128000) to 1e-5."""
    np.testing.assert_allclose(
        tokens_per_character([32000, 128000]), [0.252404, 0.229350], atol=1e-5
    )


def test_width_rule_bounds_are_inclusive():
    np.testing.assert_array_equal(
        width_for([50e6, 50e6 + 1, 7e9, 70e9, 2e12]), [512, 768, 4096, 8192, 24576]
    )


@pytest.mark.parametrize(
    ("non_vocab", "flops", "expected"),
    [(7e9, 7.052e21, (62_281, 67_450, 59_548)), (70e9, 7.052e23, (211_860, 230_861, 217_961))],
)
def test_g11_g12_tao_predictors(non_vocab, flops, expected):
    """G11/G12: Tao approaches 1/2 and 3 (dL/dV = 0 of the TAO law), 1e-3 rel."""
    d = width_for(non_vocab)
    f = vocab.compute_optimal_flops(non_vocab)
    assert f == pytest.approx(flops, rel=1e-3)
    assert vocab.optimal_vocab_isoflop(f, d) == pytest.approx(expected[0], rel=1e-3)
    assert vocab.optimal_vocab_derivative(non_vocab, d) == pytest.approx(expected[1], rel=1e-3)
    v3 = brentq(lambda v: TAO.dloss_dvocab(non_vocab, v, d, f), 1e3, 1e7)
    assert v3 == pytest.approx(expected[2], rel=1e-3)


def test_g13_tao_parametric_grows_with_budget():
    """G13: approach 3 at N_nv = 302M, F = t C_opt."""
    n = 302e6
    d = width_for(n)
    base = vocab.compute_optimal_flops(n)
    sols = [brentq(lambda v, t=t: TAO.dloss_dvocab(n, v, d, t * base), 1e2, 1e7) for t in (1, 6)]
    assert sols[0] == pytest.approx(15_759, rel=1e-3)
    assert sols[1] == pytest.approx(25_708, rel=1e-3)


def test_tao_derivative_matches_finite_difference():
    n, d, f, v = 1e9, 2048.0, 1e21, 50_000.0
    h = 1.0
    fd = (TAO.loss_at_budget(n, v + h, d, f) - TAO.loss_at_budget(n, v - h, d, f)) / (2 * h)
    assert TAO.dloss_dvocab(n, v, d, f) == pytest.approx(fd, rel=1e-5)


def test_g15_steplaw_constants():
    """G15: StepLaw at N = 7e9, D = 1.4e12 (1e-3 rel)."""
    assert STEPLAW.learning_rate(7e9, 1.4e12) == pytest.approx(9.347e-4, rel=1e-3)
    assert STEPLAW.batch_size(1.4e12) == pytest.approx(4.997e6, rel=1e-3)


def test_g17_deepseek():
    """G17: DeepSeek learning rate and batch size at three budgets (1e-3 rel)."""
    flops = np.array([1e20, 1e23, 1e24])
    np.testing.assert_allclose(
        DEEPSEEK.learning_rate(flops), [9.860e-4, 4.158e-4, 3.118e-4], rtol=1e-3
    )
    np.testing.assert_allclose(DEEPSEEK.batch_size(flops), [1.017e6, 9.743e6, 2.069e7], rtol=1e-3)


def _schedules() -> dict[str, np.ndarray]:
    t = np.arange(10_000)
    return {
        "constant": np.ones(10_000),
        "wsd": np.where(t < 8000, 1.0, 1 - (t - 7999) / 2000),
        "step": np.where(t < 8000, 1.0, 0.1),
        "cosine": (1 + np.cos(np.pi * np.arange(1, 10_001) / 10_000)) / 2,
    }


@pytest.mark.parametrize(
    ("name", "s1", "s2"),
    [
        ("constant", 10_000, 0.0),
        ("wsd", 8999.5, 568.03),
        ("step", 8200, 778.32),
        ("cosine", 4999.5, 955.15),
    ],
)
def test_g16_schedule_areas(name, s1, s2):
    """G16: Tissue S1, S2 over 10,000 steps (1e-4 rel)."""
    got1, got2 = schedule_areas(_schedules()[name], decay=0.999)
    assert got1[-1] == pytest.approx(s1, rel=1e-4)
    assert got2[-1] == pytest.approx(s2, rel=1e-4, abs=1e-9)


def test_g16_discretisation_of_cosine_matters():
    t = np.arange(10_000)
    s1, s2 = schedule_areas((1 + np.cos(np.pi * t / 10_000)) / 2)
    assert s1[-1] == pytest.approx(5000.5, rel=1e-4)
    assert s2[-1] == pytest.approx(955.10, rel=1e-4)


def test_loss_curve_annealing_lowers_loss():
    law = LossCurveLaw(L0=2.0, A=1.0, alpha=0.5, C=1e-4)
    sched = _schedules()
    const, wsd = law.predict(sched["constant"]), law.predict(sched["wsd"])
    assert const.shape == (10_000,)
    assert np.all(np.diff(const) < 0)
    assert wsd[-1] < const[-1]


def test_other_laws_shapes_and_monotonicity():
    n = np.array([1e8, 1e9, 1e10])
    k = KAPLAN_JOINT.predict(n, 1e11)
    assert np.all(np.diff(k) < 0)
    assert KaplanLaw(N_c=1e13, D_c=1e13, alpha_N=0.1, alpha_D=0.1).predict(1e13, 1e13) == (
        pytest.approx(2**0.1)
    )
    g = GadreLaw(E=1.5, a=50.0, b=100.0, eta=-0.3)
    assert g.predict(1e9, 20.0) == pytest.approx(g.predict_tokens(1e9, 2e10))
    err = DownstreamErrorLaw(eps=0.8, k=2.0, gamma=1.0)
    assert err.predict(3.0) > err.predict(2.0)


@pytest.mark.parametrize(
    "law",
    [SARDANA, DATABLATIONS, TAO, STEPLAW, DEEPSEEK, KAPLAN_JOINT, GadreLaw(1.0, 2.0, 3.0, -0.2)],
)
def test_json_round_trip(law):
    import json

    again = law_from_dict(json.loads(json.dumps(law.to_dict())))
    assert again == law
    assert type(again).param_names() == type(law).param_names()


def test_from_dict_names_missing_parameters():
    with pytest.raises(SpecError, match="alpha"):
        ChinchillaLaw.from_dict({"E": 1, "A": 1, "B": 1, "beta": 1})
    with pytest.raises(SpecError, match="unknown law"):
        law_from_dict({"law": "nope", "params": {}})


def test_epoch_tokens_per_parameter_closed_form():
    """laws.md 1.1: 18.33 tokens per parameter at C = 5.88e23 from the Epoch point estimate."""
    from mixplan.planning.laws import EPOCH

    assert float(EPOCH.tokens_per_param(5.88e23)) == pytest.approx(18.33, rel=1e-3)


def test_published_hoffmann_and_kaplan_constants():
    """laws.md 1.1 and 1.2, digit for digit: a changed constant must fail here."""
    from mixplan.planning.laws import HOFFMANN, HOFFMANN_ROUNDED
    from mixplan.planning.laws.kaplan import KAPLAN_SINGLE

    assert HOFFMANN.to_dict()["params"] == {
        "E": 1.6933737,
        "A": 406.4010175,
        "B": 410.7228269,
        "alpha": 0.33917084,
        "beta": 0.2849083,
    }
    assert HOFFMANN_ROUNDED.to_dict()["params"] == {
        "E": 1.69,
        "A": 406.4,
        "B": 410.7,
        "alpha": 0.34,
        "beta": 0.28,
    }
    assert KAPLAN_JOINT.to_dict()["params"] == {
        "N_c": 6.4e13,
        "D_c": 1.8e13,
        "alpha_N": 0.076,
        "alpha_D": 0.103,
    }
    assert KAPLAN_SINGLE.to_dict()["params"] == {
        "N_c": 8.8e13,
        "D_c": 5.4e13,
        "alpha_N": 0.076,
        "alpha_D": 0.095,
    }
    # derived from the formulas: Chinchilla-70B's loss, and Kaplan's L(N) limit at D -> inf
    assert HOFFMANN.predict(70e9, 1.4e12) == pytest.approx(
        1.6933737 + 406.4010175 / 70e9**0.33917084 + 410.7228269 / 1.4e12**0.2849083, rel=1e-12
    )
    assert KAPLAN_SINGLE.predict(1e9, 1e300) == pytest.approx((8.8e13 / 1e9) ** 0.076, rel=1e-9)
