"""Golden checks of the planner against laws.md section 4 (row named in each test).

Sardana constants (G1-G7): E 1.69, A 406.4, B 410.7, alpha .336, beta .283.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixplan.planning.laws.chinchilla import SARDANA
from mixplan.planning.laws.repetition import DATABLATIONS
from mixplan.planning.laws.vocabulary import (
    compute_optimal_flops,
    optimal_vocab_derivative,
    optimal_vocab_isoflop,
    width_for,
)
from mixplan.planning.programs.budget import BudgetProgram, closed_form
from mixplan.planning.programs.inference import (
    TargetProgram,
    dollars_per_flop,
    inference_equivalent_tokens,
)
from mixplan.planning.programs.repetition import repetition_allocation
from mixplan.planning.programs.vocabulary import VocabularyProgram

REL = 1e-3


@pytest.fixture(scope="module")
def budget() -> BudgetProgram:
    return BudgetProgram()


@pytest.fixture(scope="module")
def target() -> TargetProgram:
    return TargetProgram()


@pytest.fixture(scope="module")
def vocab() -> VocabularyProgram:
    return VocabularyProgram()


def test_g2_budget_gp_matches_closed_form(budget):
    """G2: C = 5.76e23 -> G 1.297347, N 4.1716e10, D 2.3013e12, L 1.93013 (1e-3 rel)."""
    params, tokens, g = closed_form(SARDANA, 5.76e23)
    assert g == pytest.approx(1.297347, rel=REL)
    r = budget.solve(SARDANA, flops=5.76e23)
    assert r.status == "optimal"
    assert r.params == pytest.approx(4.1716e10, rel=REL)
    assert r.tokens == pytest.approx(2.3013e12, rel=REL)
    assert r.loss == pytest.approx(1.93013, rel=REL)
    assert r.params == pytest.approx(params, rel=1e-4)
    assert r.binding == ["budget"]


def test_g3_budget_1e24(budget):
    """G3: C = 1e24 -> N 5.3682e10, D 3.1047e12, L 1.91061."""
    r = budget.solve(SARDANA, flops=1e24)
    assert r.params == pytest.approx(5.3682e10, rel=REL)
    assert r.tokens == pytest.approx(3.1047e12, rel=REL)
    assert r.loss == pytest.approx(1.91061, rel=REL)


def test_g4_loss_target_without_inference(target):
    """G4: loss 1.947, no inference -> N 3.4081e10, D 1.8103e12, C 3.7018e23."""
    r = target.solve(SARDANA, target_loss=1.947)
    assert r.params == pytest.approx(3.4081e10, rel=REL)
    assert r.tokens == pytest.approx(1.8103e12, rel=REL)
    assert r.train_flops == pytest.approx(3.7018e23, rel=REL)
    assert r.loss == pytest.approx(1.947, abs=1e-6)


def test_g5_loss_target_with_inference(target):
    """G5: loss 1.947, T_inf 2e12 -> N 2.418e10, D 2.657e12, FLOPs 95.22% of G4's model."""
    g4 = target.solve(SARDANA, target_loss=1.947)
    r = target.solve(SARDANA, target_loss=1.947, inference_tokens=2e12)
    assert r.params == pytest.approx(2.418e10, rel=REL)
    assert r.tokens == pytest.approx(2.657e12, rel=REL)
    g4_total = g4.train_flops + 2 * g4.params * 2e12
    assert r.total_flops / g4_total == pytest.approx(0.9522, rel=REL)


def test_g6_dollar_objective(target):
    """G6: 1e10 requests x (1000 in, 250 out), A100 prices -> N 2.053e10, D 3.302e12, 88.76%."""
    teff = inference_equivalent_tokens(
        tokens_in=1e13,
        tokens_out=2.5e12,
        train_dollars_per_flop=dollars_per_flop(1.40, 3.12e14),
        train_mfu=0.5,
        infer_dollars_per_flop=dollars_per_flop(0.60, 6.24e14),
        prefill_mfu=0.4,
        decode_mfu=0.2,
    )
    r = target.solve(SARDANA, target_loss=1.947, inference_tokens=teff)
    assert r.params == pytest.approx(2.053e10, rel=REL)
    assert r.tokens == pytest.approx(3.302e12, rel=REL)
    chinchilla = target.solve(SARDANA, target_loss=1.947)
    chinchilla_cost = chinchilla.train_flops + 2 * chinchilla.params * teff
    assert r.total_flops / chinchilla_cost == pytest.approx(0.8876, rel=REL)


def test_g7_inference_aware_13b(target):
    """G7: 13B Chinchilla model + 2T inference -> ~6.97e9, ~1.248e12, saves ~1.69e22 (~17%)."""
    loss = float(SARDANA.predict(13e9, 5.765e11))
    assert loss == pytest.approx(2.04528, abs=1e-4)
    r = target.solve(SARDANA, target_loss=loss, inference_tokens=2e12)
    base = 6 * 13e9 * 5.765e11 + 2 * 13e9 * 2e12
    assert r.params == pytest.approx(6.97e9, rel=0.02)
    assert r.tokens == pytest.approx(1.248e12, rel=0.02)
    assert base - r.total_flops == pytest.approx(1.69e22, rel=0.02)
    assert (base - r.total_flops) / base == pytest.approx(0.17, abs=0.01)


def test_g10_repetition_allocation_never_worse_than_published_grid():
    """G10: C 1e22, U 25e9 -> D 2.3734e11 (9.4935 epochs), N 7.0224e9; never worse."""
    r = repetition_allocation(DATABLATIONS, flops=1e22, unique_tokens=25e9)
    assert r.tokens == pytest.approx(2.3734e11, rel=REL)
    assert r.params == pytest.approx(7.0224e9, rel=REL)
    assert r.epochs == pytest.approx(9.4935, rel=REL)
    published_tokens = 2.3734e11
    published = DATABLATIONS.predict(1e22 / (6 * published_tokens), published_tokens, 25e9)
    assert r.loss <= float(published) + 1e-12


@pytest.mark.parametrize(
    ("non_vocab", "width", "flops", "expected"),
    [
        (7e9, 4096, 7.052e21, (62_281, 67_450, 59_548)),  # G11
        (70e9, 8192, 7.052e23, (211_860, 230_861, 217_961)),  # G12
    ],
)
def test_g11_g12_vocabulary(vocab, non_vocab, width, flops, expected):
    """G11/G12: approaches 1 and 2 (laws module), approach 3 from the vocabulary GP."""
    assert float(width_for(non_vocab)) == width
    assert float(compute_optimal_flops(non_vocab)) == pytest.approx(flops, rel=REL)
    assert float(optimal_vocab_isoflop(flops, width)) == pytest.approx(expected[0], rel=REL)
    assert float(optimal_vocab_derivative(non_vocab, width)) == pytest.approx(expected[1], rel=REL)
    r = vocab.solve(flops=flops, non_vocab_params=non_vocab)
    assert r.width == width
    assert r.vocab_size == pytest.approx(expected[2], rel=REL)


def test_g13_vocabulary_grows_with_budget(vocab):
    """G13: N_nv 302M, F = t C_opt: t 1 -> 15,759; t 6 -> 25,708; increasing in t."""
    c_opt = float(compute_optimal_flops(302e6))
    sizes = [vocab.solve(flops=t * c_opt, non_vocab_params=302e6).vocab_size for t in (1, 2, 6)]
    assert sizes[0] == pytest.approx(15_759, rel=REL)
    assert sizes[2] == pytest.approx(25_708, rel=REL)
    assert sizes[0] < sizes[1] < sizes[2]
    # stationarity of approach 3 (the paper solves dL/dV = 0)
    from mixplan.planning.laws.vocabulary import TAO

    grad = TAO.dloss_dvocab(302e6, sizes[0], float(width_for(302e6)), c_opt)
    step = TAO.dloss_dvocab(302e6, sizes[0] * 1.01, float(width_for(302e6)), c_opt)
    assert abs(float(grad)) < abs(float(step)) / 20 or math.isclose(float(grad), 0, abs_tol=1e-12)


# -- the same goldens through the allocation core every plan uses --------------------------------


def _core_budget(flops: float, inference: float = 0.0):
    from mixplan.planning.programs.allocation import LossModel, allocate_budget

    return allocate_budget(LossModel.of(SARDANA), flops=flops, inference_tokens=inference)


def _core_target(loss: float, inference: float = 0.0):
    from mixplan.planning.programs.allocation import LossModel, allocate_target

    return allocate_target(LossModel.of(SARDANA), target_loss=loss, inference_tokens=inference)


@pytest.mark.parametrize(
    ("flops", "params", "tokens", "loss"),
    [(5.76e23, 4.1716e10, 2.3013e12, 1.93013), (1e24, 5.3682e10, 3.1047e12, 1.91061)],
)
def test_g2_g3_through_the_core(flops, params, tokens, loss):
    r = _core_budget(flops)
    assert r.params == pytest.approx(params, rel=REL)
    assert r.tokens == pytest.approx(tokens, rel=REL)
    assert r.loss == pytest.approx(loss, rel=REL)
    assert r.binding == ("budget",)
    # the budget's shadow price is -dL*/dlog C: a central difference of the optimal loss
    step = 1e-4
    slope = _core_budget(flops * np.exp(-step)).loss - _core_budget(flops * np.exp(step)).loss
    assert r.duals["budget"] == pytest.approx(slope / (2 * step), rel=1e-5)


def test_g4_g5_g7_through_the_core():
    g4 = _core_target(1.947)
    assert g4.params == pytest.approx(3.4081e10, rel=REL)
    assert g4.tokens == pytest.approx(1.8103e12, rel=REL)
    assert g4.train_flops == pytest.approx(3.7018e23, rel=REL)
    g5 = _core_target(1.947, 2e12)
    assert g5.params == pytest.approx(2.418e10, rel=REL)
    assert g5.tokens == pytest.approx(2.657e12, rel=REL)
    g4_total = g4.train_flops + 2 * g4.params * 2e12
    assert (g5.train_flops + g5.inference_flops) / g4_total == pytest.approx(0.9522, rel=REL)
    loss = float(SARDANA.predict(13e9, 5.765e11))
    g7 = _core_target(loss, 2e12)
    base = 6 * 13e9 * 5.765e11 + 2 * 13e9 * 2e12
    assert g7.params == pytest.approx(6.97e9, rel=0.02)
    assert base - (g7.train_flops + g7.inference_flops) == pytest.approx(1.69e22, rel=0.02)


def test_g10_through_the_core():
    from mixplan.planning.programs.allocation import LossModel, allocate_budget

    r = allocate_budget(LossModel.of(DATABLATIONS, unique_tokens=25e9), flops=1e22)
    assert r.tokens == pytest.approx(2.3734e11, rel=REL)
    assert r.params == pytest.approx(7.0224e9, rel=REL)
    published = DATABLATIONS.predict(1e22 / (6 * 2.3734e11), 2.3734e11, 25e9)
    assert r.loss <= float(published) + 1e-12
