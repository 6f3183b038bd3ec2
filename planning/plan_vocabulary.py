"""Step 3 of a plan: the vocabulary of the planned model (Tao et al. 2024, laws.md 1.5).

One definition of N everywhere: the plan's N is the TOTAL parameter count, the sum of the
non-vocabulary parameters and the embeddings, ``N = N_nv + V d``. With N and D decided, the
vocabulary splits N: the best V minimises Tao's unigram-normalised loss
``L_u(N - V d, V d, D)`` over V (convex in V: both terms are convex decreasing powers of affine
functions of V), with the width ``d`` from Tao's rule at ``N_nv`` iterated to a fixed point.
The plan, this section, the learning-rate advice (at ``N_nv``) and the report then all describe
the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from mixplan.planning.laws.vocabulary import TAO, TaoLaw, tokens_per_character, width_for

MAX_WIDTH_ITERATIONS = 8


@dataclass(frozen=True)
class VocabularySplit:
    """How the plan's total N splits into non-vocabulary parameters and embeddings."""

    vocab_size: float
    width: float
    params: float
    tokens: float
    loss_unigram: float

    @property
    def vocab_params(self) -> float:
        """Embedding parameters ``V d``."""
        return self.vocab_size * self.width

    @property
    def non_vocab_params(self) -> float:
        """``N_nv = N - V d``."""
        return self.params - self.vocab_params

    def to_dict(self) -> dict[str, float]:
        """The plan's vocabulary section."""
        return {
            "vocab_size": self.vocab_size,
            "width": self.width,
            "params": self.params,
            "non_vocab_params": self.non_vocab_params,
            "vocab_params": self.vocab_params,
            "tokens": self.tokens,
            "characters": self.tokens / float(tokens_per_character(self.vocab_size)),
            "loss_unigram": self.loss_unigram,
            "params_definition": "N = N_nv + V d (total parameters)",
        }


def split_vocabulary(
    params: float,
    tokens: float,
    *,
    min_vocab: float,
    max_vocab: float,
    width: float | None = None,
    law: TaoLaw = TAO,
) -> VocabularySplit | None:
    """The loss-optimal vocabulary for a model of ``params`` total parameters on ``tokens``.

    Parameters
    ----------
    params, tokens
        The plan's total N and D.
    min_vocab, max_vocab
        The vocabulary range (``[vocabulary] min / max``).
    width
        Pin the width d (bootstrap intervals re-plan at the point plan's width: Tao's rule is a
        step function of N_nv, and letting each draw choose makes V jump across a step).
    law
        The vocabulary law (Tao et al.'s published fit by default).

    Returns
    -------
    VocabularySplit or None
        ``None`` when not even the smallest vocabulary fits inside N.
    """
    d = float(width if width is not None else width_for(params))
    best: VocabularySplit | None = None
    for _ in range(MAX_WIDTH_ITERATIONS):
        split = _at_width(params, tokens, d, min_vocab, max_vocab, law)
        if split is None:
            return best
        if best is None or split.loss_unigram < best.loss_unigram:
            best = split
        if width is not None:
            break
        new_d = float(width_for(split.non_vocab_params))
        if new_d == d:
            break
        d = new_d
    return best


def _at_width(params, tokens, width, vmin, vmax, law) -> VocabularySplit | None:
    """Best V at width d: the root of the (increasing) derivative in V, bracketed."""
    top = min(vmax, params * (1 - 1e-3) / width)  # keep N_nv > 0
    if top < vmin:
        return None
    n_unit, v_unit = law.NON_VOCAB_UNIT, law.VOCAB_UNIT

    def slope(vocab: float) -> float:  # dL_u/dV at fixed total N and D; overflow -> +-1e300
        vd = vocab * width
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            nv_term = (
                law.A1
                * law.alpha1
                * (width / n_unit)
                * np.float64((params - vd) / n_unit) ** (-law.alpha1 - 1)
            )
            v_term = (
                law.A2
                * law.alpha2
                * (width / v_unit)
                * np.float64(vd / v_unit) ** (-law.alpha2 - 1)
            )
            value = nv_term - v_term
        if np.isfinite(value):
            return float(value)
        return 1e300 if nv_term > v_term else -1e300

    if slope(vmin) >= 0:
        vocab = vmin
    elif slope(top) <= 0:
        vocab = top
    else:
        vocab = brentq(slope, vmin, top, xtol=1e-9, rtol=1e-14)
    vd = vocab * width
    return VocabularySplit(
        vocab, width, params, tokens, float(law.predict(params - vd, vd, tokens))
    )
