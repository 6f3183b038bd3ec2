"""Plan specs: what a team wants to plan, read from TOML and validated field by field.

A spec names the laws (a stored fit, or published constants inline), a budget (FLOPs, dollars
or a loss target), lifetime inference demand, limits, data sources, a vocabulary range, the
eval-domain weights and, optionally, a mixture law. ``load_spec`` reads a TOML file,
``parse_spec`` a dict (the Prefect flow and the HTTP API pass dicts). Fields, types and ranges
are declared once, in :mod:`mixplan.planning.spec_schema` (the API's request schema too); this
module checks what spans fields and builds the frozen :class:`PlanSpec`. Every problem raises
``SpecError`` naming the file and the field. See data/specs/example.toml.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from mixplan.planning.errors import SpecError
from mixplan.planning.laws import (
    BESIROGLU,
    DATABLATIONS,
    EPOCH,
    HOFFMANN,
    HOFFMANN_ROUNDED,
    SARDANA,
)
from mixplan.planning.programs.inference import PEAK_FLOPS, dollars_per_flop
from mixplan.planning.programs.limits import Limits
from mixplan.planning.programs.mixture import Source
from mixplan.planning.spec_schema import SpecModel

PUBLISHED_LAWS = {
    "sardana": SARDANA,
    "hoffmann": HOFFMANN,
    "hoffmann_rounded": HOFFMANN_ROUNDED,
    "besiroglu": BESIROGLU,
    "epoch": EPOCH,
    "datablations": DATABLATIONS,
}
"""Published constant sets a spec can name as ``law.name`` (laws.md 1.1 and 1.4)."""

MAX_EXPONENT = 200.0
"""Largest |t| of an inline exponential mixture law: exp(t . r) stays finite for any mixture."""


@dataclass(frozen=True)
class Hardware:
    """A GPU type with its price and utilisation; ``peak_flops`` from the table unless given."""

    gpu: str
    precision: str
    peak_flops: float
    mfu: float
    price_per_hour: float | None = None
    gpus: int | None = None

    @property
    def dollars_per_flop(self) -> float:
        """Dollars per peak FLOP (NaN without a price)."""
        if self.price_per_hour is None:
            return float("nan")
        return dollars_per_flop(self.price_per_hour, self.peak_flops)

    @property
    def dollars_per_useful_flop(self) -> float:
        """Dollars per FLOP actually delivered at this MFU."""
        return self.dollars_per_flop / self.mfu


@dataclass(frozen=True)
class LawSpec:
    """Where the scale law comes from: ``published`` name, ``inline`` numbers, a stored fit, or
    the winner of an experiment's law leaderboard (``leaderboard``: ``experiment`` names it)."""

    kind: Literal["published", "inline", "fit", "leaderboard"]
    name: str | None = None
    fit: str | None = None
    constants: dict[str, float] = field(default_factory=dict)
    experiment: str | None = None


@dataclass(frozen=True)
class DownstreamTarget:
    """A downstream-error target: the stored loss -> error fit and the error to reach.

    ``metric`` (optional) must match the metric the fit was made for.
    """

    fit: str
    error: float
    metric: str | None = None


@dataclass(frozen=True)
class InferenceSpec:
    """Lifetime inference demand and, for the dollar objective, its hardware."""

    tokens_in: float = 0.0
    tokens_out: float = 0.0
    hardware: Hardware | None = None
    prefill_mfu: float | None = None
    decode_mfu: float | None = None

    @property
    def tokens(self) -> float:
        """All inference tokens (prompt plus generated), ``T_inf``."""
        return self.tokens_in + self.tokens_out


@dataclass(frozen=True)
class MixtureSpec:
    """An inline exponential mixture law (c, k, t) or a stored fitted mixture law (path).

    ``trust_region`` keeps each source within the largest share seen in the stored law's
    training runs (when the fit records it); ``false`` lets the law extrapolate.
    """

    domains: tuple[str, ...] = ()
    c: tuple[float, ...] = ()
    k: tuple[float, ...] = ()
    t: tuple[tuple[float, ...], ...] = ()
    fit: str | None = None
    reference: dict[str, float] | None = None
    trust_region: bool = True


@dataclass(frozen=True)
class PlanSpec:
    """A validated plan spec (see the module docstring and data/specs/example.toml)."""

    name: str
    law: LawSpec
    flops: float | None = None
    dollars: float | None = None
    target_loss: float | None = None
    downstream: DownstreamTarget | None = None
    objective: Literal["flops", "dollars"] = "flops"
    training: Hardware | None = None
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    limits: Limits = field(default_factory=Limits)
    sources: tuple[Source, ...] = ()
    vocabulary: tuple[float, float] | None = None
    eval_weights: dict[str, float] | None = None
    mixture: MixtureSpec | None = None
    draws: bool = True
    robust: bool = False
    hyperparameters: str = "auto"
    origin: str = "<dict>"

    @property
    def mode(self) -> Literal["budget", "target"]:
        """``target`` when a loss (or downstream-error) target is given, else ``budget``."""
        return "target" if self.target_loss is not None or self.downstream else "budget"

    @property
    def budget_flops(self) -> float | None:
        """The budget in FLOPs (dollars converted at the training hardware's price and MFU)."""
        if self.flops is not None:
            return self.flops
        if self.dollars is not None and self.training is not None:
            return self.dollars / self.training.dollars_per_useful_flop
        return None

    @property
    def max_train_flops(self) -> float | None:
        """The cap on training FLOPs: ``limits.max_train_flops`` or the wall clock, if smaller."""
        return self.limits.train_flops_cap

    @property
    def unique_tokens(self) -> float | None:
        """All unique tokens across sources (None without sources)."""
        return sum(s.unique_tokens for s in self.sources) if self.sources else None

    @property
    def max_tokens(self) -> float | None:
        """The data cap: ``sum_j U_j * max_epochs_j`` or ``limits.max_tokens``, if smaller."""
        return self.limits.max_tokens


# -- parsing ---------------------------------------------------------------------------------


def load_spec(path: str | Path) -> PlanSpec:
    """Read and validate a TOML plan spec; ``SpecError`` names the file and field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such spec file; see data/specs/example.toml") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from exc
    return parse_spec(data, origin=str(path))


def parse_spec(data: Mapping[str, Any], *, origin: str = "<dict>") -> PlanSpec:
    """Validate a spec given as a dict (the TOML structure); ``SpecError`` names the field."""
    ctx = _Ctx(origin)
    if not isinstance(data, Mapping):
        ctx.fail("spec", "must be a table (mapping)")
    try:
        data = SpecModel.model_validate(dict(data)).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise SpecError(f"{origin}: " + "; ".join(map(_schema_error, exc.errors()))) from None
    law = _law(ctx, ctx.table(data, "law", required=True))
    training = _hardware(ctx, ctx.table(data, "training"), "training")
    budget = ctx.table(data, "budget", required=True)
    flops = ctx.number(budget, "budget.flops", positive=True)
    dollars = ctx.number(budget, "budget.dollars", positive=True)
    target = ctx.number(budget, "budget.target_loss", positive=True)
    downstream = _downstream(ctx, budget.get("target_downstream"))
    objective = budget.get("objective", "flops")
    goals = (("flops", flops), ("dollars", dollars), ("target_loss", target),
             ("target_downstream", downstream))  # fmt: skip
    given = [k for k, v in goals if v]
    if len(given) != 1:
        ctx.fail(
            "budget",
            "give exactly one of flops, dollars, target_loss or target_downstream "
            f"(got {given or 'none'})",
        )
    if dollars is not None and (training is None or training.price_per_hour is None):
        ctx.fail("training.price_per_hour", "a dollar budget needs the training GPU's price")

    inference = _inference(ctx, ctx.table(data, "inference"))
    if objective == "dollars":
        if training is None or training.price_per_hour is None:
            ctx.fail("training.price_per_hour", "objective = 'dollars' needs training prices")
        if inference.tokens > 0 and (
            inference.hardware is None or inference.hardware.price_per_hour is None
        ):
            ctx.fail("inference.price_per_hour", "objective = 'dollars' needs inference prices")

    sources = _sources(ctx, data.get("sources", []))
    limits = _limits(ctx, ctx.table(data, "limits"), training, sources)
    vocabulary = None
    if "vocabulary" in data:
        vt = ctx.table(data, "vocabulary")
        vmin = vt.get("min", 1000.0)
        vmax = vt.get("max", 1_000_000.0)
        if vmin >= vmax:
            ctx.fail("vocabulary.min", f"{vmin:g} must be below vocabulary.max {vmax:g}")
        vocabulary = (vmin, vmax)
    mixture = _mixture(ctx, data.get("mixture"), sources)
    eval_weights = _eval(ctx, ctx.table(data, "eval"), mixture)
    unc = ctx.table(data, "uncertainty")
    hyper_law = ctx.table(data, "hyperparameters").get("law", "auto")
    name = data.get("name", Path(origin).stem if origin != "<dict>" else "plan")
    return PlanSpec(
        name=name,
        law=law,
        flops=flops,
        dollars=dollars,
        target_loss=target,
        downstream=downstream,
        objective=objective,
        training=training,
        inference=inference,
        limits=limits,
        sources=sources,
        vocabulary=vocabulary,
        eval_weights=eval_weights,
        mixture=mixture,
        draws=bool(unc.get("draws", True)),
        robust=bool(unc.get("robust", False)),
        hyperparameters=hyper_law,
        origin=origin,
    )


def _schema_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``field 'sources[0].unique_tokens': <what is wrong>``."""
    loc = error.get("loc", ())
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    where = where.lstrip(".") or "spec"
    kind, value = error.get("type", ""), error.get("input")
    if kind == "extra_forbidden":
        known = sorted(_model_at(loc[:-1]).model_fields)
        what = "section; known sections are" if len(loc) == 1 else "field; known fields are"
        return f"field '{where}': unknown {what} {known}"
    if kind == "missing":
        hint = "; see data/specs/example.toml" if len(loc) == 1 else ""
        return f"field '{where}': missing{hint}"
    return f"field '{where}': {_schema_problem(kind, value, error)}"


_TYPE_PROBLEMS = {
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be an array",
    "model_type": "must be a table",
    "dict_type": "must be a table",
}


def _schema_problem(kind: str, value: Any, error: Mapping[str, Any]) -> str:
    """What is wrong with ``value``, in the words of a spec's author."""
    bound = error.get("ctx") or {}
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if kind in ("greater_than_equal", "greater_than"):
        low = bound.get("ge", bound.get("gt"))
        if low > 0 and value <= 0:
            return f"must be positive (at least {low:g}), got {value:g}"
        return f"must be at least {low:g}, got {value:g}"
    if kind in ("less_than_equal", "less_than"):
        high = bound.get("le", bound.get("lt"))
        return f"must be at most {high:g}, got {value:g}"
    if kind in _TYPE_PROBLEMS:
        return f"{_TYPE_PROBLEMS[kind]}, got {value!r}"
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    message = message.replace("Input should", "must").replace("String should", "must")
    return message if kind == "value_error" else f"{message}, got {value!r}"


def _model_at(loc: tuple) -> type[BaseModel]:
    """The section model a location inside a spec points into (list indices skipped)."""
    model: type[BaseModel] = SpecModel
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = next(m for m in _models_in(annotation))
    return model


def _models_in(annotation: Any):
    """The pydantic models inside a type annotation (``X | None``, ``list[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _models_in(arg)


class _Ctx:
    """Carries the spec's origin so every error names file and field."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, field_name: str, what: str):
        raise SpecError(f"{self.origin}: field '{field_name}': {what}")

    def table(self, data: Mapping, key: str, *, required: bool = False) -> Mapping:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(key, "missing section; see data/specs/example.toml")
            return {}
        return value

    def number(self, table: Mapping, dotted: str, *, positive: bool = False) -> float | None:
        """A number the schema has bounded already; ``positive`` refuses zero too."""
        value = table.get(dotted.rsplit(".", 1)[-1])
        if value is not None and positive and value <= 0:
            self.fail(dotted, f"must be positive, got {value:g}")
        return value


def _law(ctx: _Ctx, table: Mapping) -> LawSpec:
    numeric = ("E", "A", "B", "alpha", "beta", "rd_star", "rn_star")
    numbers = {k: table[k] for k in numeric if k in table}
    ways = [k for k in ("name", "fit", "experiment") if k in table] + (
        ["numbers"] if numbers else []
    )
    if len(ways) != 1:
        ctx.fail(
            "law",
            f"give exactly one of name, fit, experiment, or E/A/B/alpha/beta (got {ways})",
        )
    if "experiment" in table:
        return LawSpec("leaderboard", experiment=table["experiment"])
    if "name" in table:
        name = str(table["name"]).lower()
        if name not in PUBLISHED_LAWS:
            ctx.fail("law.name", f"unknown law {table['name']!r}; known: {list(PUBLISHED_LAWS)}")
        return LawSpec("published", name=name)
    if "fit" in table:
        return LawSpec("fit", fit=table["fit"])
    missing = [k for k in ("E", "A", "B", "alpha", "beta") if k not in numbers]
    if missing:
        ctx.fail(f"law.{missing[0]}", "missing; inline laws need E, A, B, alpha and beta")
    constants = {k: ctx.number(table, f"law.{k}", positive=k != "E") for k in numbers}
    return LawSpec("inline", constants=constants)


def _limits(
    ctx: _Ctx, table: Mapping, training: Hardware | None, sources: tuple[Source, ...]
) -> Limits:
    """The one `Limits` of the spec: its [limits], the sources' data cap, the wall clock."""
    keys = {"max_params", "max_tokens", "min_tokens_per_param", "max_tokens_per_param",
            "max_train_flops", "max_days"}  # fmt: skip
    values = {k: ctx.number(table, f"limits.{k}", positive=True) for k in sorted(keys)}
    lo, hi = values["min_tokens_per_param"], values["max_tokens_per_param"]
    if lo is not None and hi is not None and lo > hi:
        ctx.fail("limits.min_tokens_per_param", f"{lo} exceeds max_tokens_per_param {hi}")
    if values["max_days"] is not None and (training is None or not training.gpus):
        ctx.fail("training.gpus", "limits.max_days needs the number of training GPUs")
    if sources:
        cap = sum(s.cap for s in sources)
        values["max_tokens"] = min(cap, values["max_tokens"] or cap)
    per_day = None
    if training is not None and training.gpus:
        per_day = 86400.0 * training.gpus * training.peak_flops * training.mfu
    try:
        return Limits(**values, train_flops_per_day=per_day)
    except SpecError as exc:
        ctx.fail("limits", str(exc))


def _downstream(ctx: _Ctx, table: Any) -> DownstreamTarget | None:
    """``budget.target_downstream = {fit = "...", error = 0.4, metric = "..."}``."""
    if table is None:
        return None
    return DownstreamTarget(table["fit"], table["error"], table.get("metric"))


def _hardware(ctx: _Ctx, table: Mapping, section: str) -> Hardware | None:
    if not table:
        return None
    gpu = table.get("gpu", "custom").lower()
    precision = table.get("precision", "bf16").lower()
    peak = ctx.number(table, f"{section}.peak_flops", positive=True)
    if peak is None:
        if (gpu, precision) not in PEAK_FLOPS:
            ctx.fail(
                f"{section}.gpu",
                f"no peak FLOP/s known for {gpu} {precision}; known {sorted(PEAK_FLOPS)} "
                "(or give peak_flops)",
            )
        peak = PEAK_FLOPS[(gpu, precision)]
    mfu = ctx.number(table, f"{section}.mfu", positive=True)
    if mfu is None:
        ctx.fail(f"{section}.mfu", "missing: the model FLOP utilisation (0 < mfu <= 1)")
    gpus = table.get("gpus")
    price = ctx.number(table, f"{section}.price_per_hour", positive=True)
    return Hardware(gpu, precision, peak, mfu, price, gpus)


def _inference(ctx: _Ctx, table: Mapping) -> InferenceSpec:
    if not table:
        return InferenceSpec()

    def get(key: str) -> float:
        return table.get(key, 0.0)

    if "requests" in table:
        if "tokens" in table or "tokens_in" in table or "tokens_out" in table:
            ctx.fail(
                "inference.requests", "give requests x per-request tokens, or totals, not both"
            )
        tokens_in = get("requests") * get("tokens_in_per_request")
        tokens_out = get("requests") * get("tokens_out_per_request")
    elif "tokens" in table:
        if "tokens_in" in table or "tokens_out" in table:
            ctx.fail("inference.tokens", "give tokens, or tokens_in and tokens_out, not both")
        tokens_in, tokens_out = get("tokens"), 0.0
    else:
        tokens_in, tokens_out = get("tokens_in"), get("tokens_out")
    hardware = None
    if set(table) & {"gpu", "peak_flops", "price_per_hour"}:
        sub = {
            k: table[k] for k in ("gpu", "precision", "peak_flops", "price_per_hour") if k in table
        }
        sub["mfu"] = table.get("mfu", table.get("prefill_mfu", 0.4))
        hardware = _hardware(ctx, sub, "inference")
    prefill = ctx.number(table, "inference.prefill_mfu", positive=True)
    decode = ctx.number(table, "inference.decode_mfu", positive=True)
    mfu = ctx.number(table, "inference.mfu", positive=True)
    return InferenceSpec(tokens_in, tokens_out, hardware, prefill or mfu, decode or mfu)


def _sources(ctx: _Ctx, rows: Any) -> tuple[Source, ...]:
    out, seen = [], set()
    for i, row in enumerate(rows):
        name = row["name"]
        if name in seen:
            ctx.fail(f"sources[{i}].name", f"duplicate source {name!r}")
        seen.add(name)
        out.append(Source(name, row["unique_tokens"], row.get("max_epochs", 1.0)))
    return tuple(out)


def _mixture(ctx: _Ctx, table: Any, sources: tuple[Source, ...]) -> MixtureSpec | None:
    if table is None:
        return None
    trust_region = table.get("trust_region", True)
    if not sources:
        ctx.fail("sources", "a [mixture] needs the [[sources]] it mixes")
    names = [s.name for s in sources]
    reference = None
    if "reference" in table:
        ref = ctx.table(table, "reference")
        unknown = sorted(set(ref) - set(names))
        if unknown:
            ctx.fail(f"mixture.reference.{unknown[0]}", f"unknown source; sources are {names}")
        reference = dict(ref)
        if abs(sum(reference.values()) - 1) > 1e-6:
            ctx.fail("mixture.reference", "must sum to 1")
    if "fit" in table:
        return MixtureSpec(fit=table["fit"], reference=reference, trust_region=trust_region)
    law_sources = table.get("sources", names)
    unknown = [s for s in law_sources if s not in names]
    if unknown:
        ctx.fail("mixture.sources", f"unknown source {unknown[0]!r}; [[sources]] lists {names}")
    if list(law_sources) != names:
        ctx.fail("mixture.sources", f"must list the [[sources]] in order: {names}")
    domains = table.get("domains")
    if not domains:
        ctx.fail("mixture.domains", "must be a non-empty list of eval-domain names")
    missing = [key for key in ("c", "k", "t") if key not in table]
    if missing:
        ctx.fail(f"mixture.{missing[0]}", "missing: an inline mixture law needs c and k (one "
                 "number per domain) and t (domains x sources), or give mixture.fit")  # fmt: skip
    c, k = tuple(table["c"]), tuple(table["k"])
    t = tuple(tuple(row) for row in table["t"])
    if any(abs(v) > MAX_EXPONENT for v in sum(t, ())):
        ctx.fail("mixture.t", f"exponents must lie within +-{MAX_EXPONENT:g}")
    if len(c) != len(domains) or len(k) != len(domains):
        ctx.fail("mixture.c", f"need one value per domain ({len(domains)})")
    if len(t) != len(domains) or any(len(row) != len(names) for row in t):
        ctx.fail("mixture.t", f"must be {len(domains)} rows of {len(names)} numbers")
    if any(v <= 0 for v in k):
        ctx.fail("mixture.k", "must be positive (the law is convex only for k > 0)")
    return MixtureSpec(tuple(domains), c, k, t, None, reference, trust_region)


def _eval(ctx: _Ctx, table: Mapping, mixture: MixtureSpec | None) -> dict[str, float] | None:
    if not table:
        return None
    weights = ctx.table(table, "weights")
    if not weights:
        return None
    values = dict(weights)
    total = sum(values.values())
    if abs(total - 1.0) > 1e-6:
        ctx.fail("eval.weights", f"must sum to 1, they sum to {total:.6g}")
    if mixture is not None and mixture.domains:
        unknown = sorted(set(values) - set(mixture.domains))
        if unknown:
            ctx.fail(
                f"eval.weights.{unknown[0]}",
                f"unknown eval domain; the mixture law has {list(mixture.domains)}",
            )
    return values
