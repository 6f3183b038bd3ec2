"""The fields of a plan spec, declared once.

Every section of a spec (data/specs/example.toml) is a pydantic model here: its fields, their
types, and for every number a closed range far beyond any real training run (:data:`LIMITS`).
Two readers share these models, so a field exists, and is bounded, in exactly one place:

* :func:`mixplan.planning.spec.parse_spec` (TOML files, the Prefect flows) validates a spec
  against :class:`SpecModel` first (types, ranges, unknown fields; each failure a ``SpecError``
  naming the field), then checks what spans fields (exactly one budget, prices for a dollar
  budget, the mixture's shape) and builds the frozen :class:`~mixplan.planning.spec.PlanSpec`;
* the HTTP API (:mod:`mixplan.flows.api`) takes :class:`SpecModel` as its request schema, so its
  OpenAPI document and its 422s come from the same declarations.

Stored objects (``law.fit``, ``law.experiment``, ``mixture.fit``, ``budget.target_downstream.
fit``) are strings here; a spec file may give a path, the API accepts names only.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

LIMITS: dict[str, tuple[float, float]] = {
    "flops": (1e6, 1e32),
    "dollars": (1e-2, 1e13),
    "loss": (1e-3, 100.0),
    "tokens": (0.0, 1e24),
    "unique_tokens": (1e3, 1e18),
    "params": (1e3, 1e15),
    "tokens_per_param": (1e-3, 1e6),
    "days": (1e-3, 3650.0),
    "price_per_hour": (1e-6, 1e5),
    "peak_flops": (1e9, 1e18),
    "mfu": (1e-4, 1.0),
    "share": (0.0, 1.0),
    "gpus": (1, 10_000_000),
    "epochs": (1e-2, 1e4),
    "requests": (0.0, 1e15),
    "vocabulary": (2.0, 1e8),
    "constant": (1e-12, 1e12),
    "exponent": (1e-3, 10.0),
    "floor": (0.0, 100.0),
    "mixture": (-1e3, 1e3),
}
"""The closed range ``(low, high)`` of each kind of number in a spec. Far wider than any real
run, narrow enough that the solvers' arithmetic stays finite (a 5e-324 epoch cap or a 1e400
budget would underflow or overflow it)."""

MAX_LIST = 64
"""Most entries of any list in a spec (sources, domains, mixture coefficients)."""


def _not_a_bool(value: Any) -> Any:
    """``true`` is not a number (pydantic would read it as 1.0)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    return value


def _bounded(kind: str, doc: str = "") -> Any:
    """A finite float within ``LIMITS[kind]``."""
    low, high = LIMITS[kind]
    return Annotated[
        float,
        BeforeValidator(_not_a_bool),
        Field(ge=low, le=high, allow_inf_nan=False, description=doc or None),
    ]


Flops = _bounded("flops", "FLOPs")
Dollars = _bounded("dollars", "US dollars")
Loss = _bounded("loss", "loss in nats per token")
Tokens = _bounded("tokens", "tokens")
UniqueTokens = _bounded("unique_tokens", "tokens")
Params = _bounded("params", "parameters")
TokensPerParam = _bounded("tokens_per_param")
Days = _bounded("days", "days of wall clock")
Price = _bounded("price_per_hour", "US dollars per GPU-hour")
PeakFlops = _bounded("peak_flops", "FLOP/s per GPU")
Fraction = _bounded("mfu", "model FLOP utilisation")
Share = _bounded("share")
Epochs = _bounded("epochs", "passes over the source")
Count = _bounded("requests")
Vocabulary = _bounded("vocabulary", "vocabulary size")
Constant = _bounded("constant")
Exponent = _bounded("exponent")
Floor = _bounded("floor", "irreducible loss")
MixtureNumber = _bounded("mixture")
GPUs = Annotated[
    int, BeforeValidator(_not_a_bool), Field(ge=LIMITS["gpus"][0], le=LIMITS["gpus"][1])
]
Name = Annotated[str, Field(min_length=1, max_length=128)]
StoredName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00]*\S[^\x00]*$",
        description="a stored object's name in the lake (in a spec file, also a path)",
    ),
]
Names = Annotated[list[Name], Field(max_length=MAX_LIST)]
Numbers = Annotated[list[MixtureNumber], Field(max_length=MAX_LIST)]


class Section(BaseModel):
    """A spec section: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class LawModel(Section):
    """``[law]``: a published constant set (``name``), a stored fit (``fit``), the winner of an
    experiment's law leaderboard (``experiment``), or inline constants (``E``, ``A``, ``B``,
    ``alpha``, ``beta``; ``rd_star``, ``rn_star`` for the repetition-aware law)."""

    name: Name | None = None
    fit: StoredName | None = None
    experiment: StoredName | None = None
    E: Floor | None = None
    A: Constant | None = None
    B: Constant | None = None
    alpha: Exponent | None = None
    beta: Exponent | None = None
    rd_star: Constant | None = None
    rn_star: Constant | None = None


class DownstreamModel(Section):
    """``budget.target_downstream``: a stored loss -> downstream-error fit, the error to reach."""

    fit: StoredName
    error: Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0, lt=1)]
    metric: Name | None = None


class BudgetModel(Section):
    """``[budget]``: exactly one of ``flops``, ``dollars``, ``target_loss`` or
    ``target_downstream``."""

    flops: Flops | None = None
    dollars: Dollars | None = None
    target_loss: Loss | None = None
    target_downstream: DownstreamModel | None = None
    objective: Literal["flops", "dollars"] | None = None


class HardwareModel(Section):
    """``[training]``: the training GPUs."""

    gpu: Name | None = None
    precision: Name | None = None
    peak_flops: PeakFlops | None = None
    mfu: Fraction | None = None
    price_per_hour: Price | None = None
    gpus: GPUs | None = None


class InferenceModel(Section):
    """``[inference]``: lifetime demand (totals, or requests x per-request tokens) and the
    serving hardware."""

    tokens: Tokens | None = None
    tokens_in: Tokens | None = None
    tokens_out: Tokens | None = None
    requests: Count | None = None
    tokens_in_per_request: Tokens | None = None
    tokens_out_per_request: Tokens | None = None
    gpu: Name | None = None
    precision: Name | None = None
    peak_flops: PeakFlops | None = None
    price_per_hour: Price | None = None
    mfu: Fraction | None = None
    prefill_mfu: Fraction | None = None
    decode_mfu: Fraction | None = None


class LimitsModel(Section):
    """``[limits]``: caps on the model and the run."""

    max_params: Params | None = None
    max_tokens: Tokens | None = None
    max_train_flops: Flops | None = None
    min_tokens_per_param: TokensPerParam | None = None
    max_tokens_per_param: TokensPerParam | None = None
    max_days: Days | None = None


class SourceModel(Section):
    """One ``[[sources]]`` entry: a data source's unique tokens and allowed passes."""

    name: Name
    unique_tokens: UniqueTokens
    max_epochs: Epochs | None = None


class VocabularyModel(Section):
    """``[vocabulary]``: the vocabulary sizes to choose from."""

    min: Vocabulary | None = None
    max: Vocabulary | None = None


class MixtureModel(Section):
    """``[mixture]``: an inline exponential mixture law (``c``, ``k`` per domain, ``t`` domains
    x sources) or a stored fitted one (``fit``)."""

    domains: Names | None = None
    sources: Names | None = None
    c: Numbers | None = None
    k: Numbers | None = None
    t: Annotated[list[Numbers], Field(max_length=MAX_LIST)] | None = None
    fit: StoredName | None = None
    reference: Annotated[dict[Name, Share], Field(max_length=MAX_LIST)] | None = None
    trust_region: StrictBool | None = None


class EvalModel(Section):
    """``[eval]``: the eval-domain weights of the mixture objective (summing to 1)."""

    weights: Annotated[dict[Name, Share], Field(max_length=MAX_LIST)] | None = None


class UncertaintyModel(Section):
    """``[uncertainty]``: bootstrap intervals and the robust plan."""

    draws: StrictBool | None = None
    robust: StrictBool | None = None


class HyperparametersModel(Section):
    """``[hyperparameters]``: the learning-rate / batch-size law (``fitted`` reads the lake's
    StepLaw fit)."""

    law: Literal["auto", "fitted", "steplaw", "deepseek"] | None = None


class SpecModel(Section):
    """A plan spec: the TOML structure of data/specs/example.toml."""

    name: Name | None = None
    law: LawModel
    budget: BudgetModel
    training: HardwareModel | None = None
    inference: InferenceModel | None = None
    limits: LimitsModel | None = None
    sources: Annotated[list[SourceModel], Field(max_length=MAX_LIST)] | None = None
    vocabulary: VocabularyModel | None = None
    eval: EvalModel | None = None
    mixture: MixtureModel | None = None
    uncertainty: UncertaintyModel | None = None
    hyperparameters: HyperparametersModel | None = None
