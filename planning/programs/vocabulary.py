"""Vocabulary size jointly with N and D (Tao et al. 2024, laws.md 1.5 and 3).

With the model width ``d`` fixed, ``min A1 N_nv^-a1 + A2 (V d)^-a2 + B D^-b  s.t.
6 (N_nv + V d) D <= F`` is a geometric program, written here in logs with parameters (DPP).
Approach 3 of the paper (``dL_u/dV = 0`` with ``D = F / (6 (N_nv + V d))`` at fixed N_nv) is
this program with ``N_nv`` pinned; the joint program frees N_nv too and iterates the width
rule (``d`` depends on N_nv) to a fixed point. Units as in the paper: N_nv and V d in
millions, D in billions of tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cvxpy as cp
import numpy as np

from mixplan.planning.laws.vocabulary import (
    ISOFLOP_NONVOCAB_EXP,
    ISOFLOP_NONVOCAB_LOG_COEF,
    TAO,
    TaoLaw,
    tokens_per_character,
    width_for,
)
from mixplan.planning.programs.common import BuiltOnce, PlanStatus, log_or_off, require_dpp, solve

LOG_MILLION = math.log(1e6)
LOG_BILLION = math.log(1e9)


@dataclass(frozen=True)
class VocabularyResult:
    """The vocabulary plan: V with the non-vocabulary parameters, width and tokens."""

    status: PlanStatus
    vocab_size: float
    non_vocab_params: float
    width: float
    tokens: float
    loss_unigram: float
    flops: float
    reason: str = ""

    @property
    def vocab_params(self) -> float:
        """Embedding parameters ``V d``."""
        return self.vocab_size * self.width

    @property
    def characters(self) -> float:
        """Training characters ``D / f(V)`` (tokens per character from G14's formula)."""
        return self.tokens / float(tokens_per_character(self.vocab_size))


class VocabularyProgram(BuiltOnce):
    """Tao approach 3 / joint (N_nv, V, D) GP for one law; built once, re-solved with parameters."""

    def __init__(self, law: TaoLaw = TAO) -> None:
        super().__init__()
        self.law = law

    def _build(self, joint: bool):
        law = self.law
        n, v, t = cp.Variable(name="log_nv_millions"), cp.Variable(name="log_vocab"), cp.Variable()
        p = {
            name: cp.Parameter(name=name)
            for name in ("log_width", "log_flops", "log_nv", "log_vmin", "log_vmax")
        }
        objective = (
            law.A1 * cp.exp(-law.alpha1 * n)
            + law.A2 * cp.exp(-law.alpha2 * (v + p["log_width"] - LOG_MILLION))
            + law.B * cp.exp(-law.beta * t)
        )
        flops = cp.log_sum_exp(
            cp.hstack(
                [
                    math.log(6) + LOG_MILLION + LOG_BILLION + n + t,
                    math.log(6) + LOG_BILLION + p["log_width"] + v + t,
                ]
            )
        )
        cons = [flops <= p["log_flops"], v >= p["log_vmin"], v <= p["log_vmax"]]
        if not joint:
            cons.append(n == p["log_nv"] - LOG_MILLION)
        problem = cp.Problem(cp.Minimize(objective), cons)
        require_dpp(problem, "vocabulary program")
        return problem, p, (n, v, t)

    def solve(
        self,
        *,
        flops: float,
        non_vocab_params: float | None = None,
        width: float | None = None,
        min_vocab: float | None = None,
        max_vocab: float | None = None,
        max_width_iterations: int = 8,
    ) -> VocabularyResult:
        """Optimal vocabulary at budget ``flops``.

        Parameters
        ----------
        flops
            Training FLOPs ``F = 6 (N_nv + V d) D``.
        non_vocab_params
            Pin N_nv (approach 3); ``None`` optimises N_nv jointly with V and D.
        width
            Model width d; default from Tao's width rule for N_nv (iterated when joint).
        min_vocab, max_vocab
            Vocabulary range (optional).
        """
        joint = non_vocab_params is None
        problem, p, (n, v, t) = self.problem(joint)
        p["log_flops"].value = math.log(flops)
        p["log_vmin"].value = log_or_off(min_vocab, upper=False)
        p["log_vmax"].value = log_or_off(max_vocab)
        p["log_nv"].value = math.log(non_vocab_params) if not joint else 0.0
        if joint:  # start the width iteration from approach 1's compute-optimal N_nv
            guess = math.exp(ISOFLOP_NONVOCAB_LOG_COEF) * flops**ISOFLOP_NONVOCAB_EXP
        else:
            guess = non_vocab_params
        d = float(width if width is not None else width_for(guess))
        for _ in range(max_width_iterations):
            p["log_width"].value = math.log(d)
            status = solve(problem)
            if not status.solved:
                nan = float("nan")
                return VocabularyResult(status, nan, nan, d, nan, nan, flops, problem.status)
            if width is not None or not joint:
                break
            new_d = float(width_for(float(np.exp(n.value)) * 1e6))
            if new_d == d:
                break
            d = new_d
        nv = non_vocab_params if not joint else float(np.exp(n.value)) * 1e6
        vocab = float(np.exp(v.value))
        tokens = float(np.exp(t.value)) * 1e9
        return VocabularyResult(
            status=PlanStatus.OPTIMAL,
            vocab_size=vocab,
            non_vocab_params=nv,
            width=d,
            tokens=tokens,
            loss_unigram=float(self.law.predict(nv, vocab * d, tokens)),
            flops=flops,
        )
