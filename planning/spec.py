"""Plan specs: what a team wants to plan, read from TOML and validated field by field.

A spec names the laws (a stored fit, or published constants inline), a budget (FLOPs, dollars
or a loss target), lifetime inference demand, limits, data sources, a vocabulary range, the
eval-domain weights and, optionally, a mixture law. ``load_spec`` reads a TOML file,
``parse_spec`` a dict (the Prefect flow and the HTTP API pass dicts). Every problem raises
``SpecError`` naming the file and the field. See data/specs/example.toml.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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

PUBLISHED_LAWS = {
    "sardana": SARDANA,
    "hoffmann": HOFFMANN,
    "hoffmann_rounded": HOFFMANN_ROUNDED,
    "besiroglu": BESIROGLU,
    "epoch": EPOCH,
    "datablations": DATABLATIONS,
}
"""Published constant sets a spec can name as ``law.name`` (laws.md 1.1 and 1.4)."""

_SECTIONS = {
    "name",
    "law",
    "budget",
    "training",
    "inference",
    "limits",
    "sources",
    "vocabulary",
    "eval",
    "mixture",
    "uncertainty",
    "hyperparameters",
}

MAX_MAGNITUDE = 1e40
"""Largest number a spec field may hold (FLOPs, tokens, parameters): beyond any real run, and
small enough that products such as ``6 N D`` stay finite."""

MAX_VOCABULARY = 1e8
"""Largest vocabulary a spec may ask for (Tao et al. fit 4K-500K; 1e8 leaves room)."""

HYPERPARAMETER_LAWS = ("auto", "fitted", "steplaw", "deepseek")
"""Choices of ``[hyperparameters] law`` (see `plan_laws.resolve_hyperparameter_law`)."""


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
    unknown = sorted(set(data) - _SECTIONS)
    if unknown:
        ctx.fail(unknown[0], f"unknown section; known sections are {sorted(_SECTIONS)}")
    law = _law(ctx, ctx.table(data, "law", required=True))
    training = _hardware(ctx, ctx.table(data, "training"), "training")
    budget = ctx.table(data, "budget", required=True)
    flops = ctx.number(budget, "budget.flops", positive=True)
    dollars = ctx.number(budget, "budget.dollars", positive=True)
    target = ctx.number(budget, "budget.target_loss", positive=True)
    downstream = _downstream(ctx, budget.get("target_downstream"))
    objective = budget.get("objective", "flops")
    if objective not in ("flops", "dollars"):
        ctx.fail("budget.objective", f"must be 'flops' or 'dollars', got {objective!r}")
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
    ctx.known(
        budget, "budget", {"flops", "dollars", "target_loss", "target_downstream", "objective"}
    )

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
        ctx.known(vt, "vocabulary", {"min", "max"})
        vmin = ctx.number(vt, "vocabulary.min", positive=True) or 1000.0
        vmax = ctx.number(vt, "vocabulary.max", positive=True) or 1_000_000.0
        if vmin >= vmax:
            ctx.fail("vocabulary.min", f"{vmin} must be below vocabulary.max {vmax}")
        for key, value in (("min", vmin), ("max", vmax)):
            if not 2 <= value <= MAX_VOCABULARY:
                ctx.fail(f"vocabulary.{key}", f"{value:g} tokens is not a vocabulary size "
                         f"(2 .. {MAX_VOCABULARY:g})")  # fmt: skip
        vocabulary = (vmin, vmax)
    mixture = _mixture(ctx, data.get("mixture"), sources)
    eval_weights = _eval(ctx, ctx.table(data, "eval"), mixture)
    unc = ctx.table(data, "uncertainty")
    ctx.known(unc, "uncertainty", {"draws", "robust"})
    for key in ("draws", "robust"):
        if key in unc and not isinstance(unc[key], bool):
            ctx.fail(f"uncertainty.{key}", f"must be true or false, got {unc[key]!r}")
    hyper = ctx.table(data, "hyperparameters")
    ctx.known(hyper, "hyperparameters", {"law"})
    hyper_law = hyper.get("law", "auto")
    if hyper_law not in HYPERPARAMETER_LAWS:
        ctx.fail(
            "hyperparameters.law", f"must be one of {list(HYPERPARAMETER_LAWS)}, got {hyper_law!r}"
        )
    name = data.get("name", Path(origin).stem if origin != "<dict>" else "plan")
    if not isinstance(name, str):
        ctx.fail("name", "must be a string")
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
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a table, got {type(value).__name__}")
        return value

    def number(self, table: Mapping, dotted: str, *, positive: bool = False, default=None):
        key = dotted.rsplit(".", 1)[-1]
        value = table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(dotted, f"must be a number, got {value!r}")
        try:
            value = float(value)
        except ValueError:
            self.fail(dotted, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            self.fail(dotted, f"must be finite, got {value}")
        if positive and value <= 0:
            self.fail(dotted, f"must be positive, got {value:g}")
        if abs(value) > MAX_MAGNITUDE:
            self.fail(dotted, f"{value:g} is beyond any real run (at most {MAX_MAGNITUDE:g})")
        return value

    def known(self, table: Mapping, section: str, keys: set[str]) -> None:
        unknown = sorted(set(table) - keys)
        if unknown:
            self.fail(f"{section}.{unknown[0]}", f"unknown field; known fields are {sorted(keys)}")


def _stored_name(ctx: _Ctx, table: Mapping, dotted: str, what: str) -> str:
    """A stored object's name (or path) from ``table``: a non-empty string without NUL."""
    value = table.get(dotted.rsplit(".", 1)[-1])
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        ctx.fail(dotted, f"must name {what}")
    return value


def _law(ctx: _Ctx, table: Mapping) -> LawSpec:
    numeric = ("E", "A", "B", "alpha", "beta", "rd_star", "rn_star")
    ctx.known(table, "law", {"name", "fit", "experiment", *numeric})
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
        return LawSpec(
            "leaderboard",
            experiment=_stored_name(
                ctx, table, "law.experiment", "an experiment whose law leaderboard is in the lake"
            ),
        )
    if "name" in table:
        name = str(table["name"]).lower()
        if name not in PUBLISHED_LAWS:
            ctx.fail("law.name", f"unknown law {table['name']!r}; known: {list(PUBLISHED_LAWS)}")
        return LawSpec("published", name=name)
    if "fit" in table:
        return LawSpec(
            "fit", fit=_stored_name(ctx, table, "law.fit", "a stored fit or a path to its JSON")
        )
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
    ctx.known(table, "limits", keys)
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
    where = "budget.target_downstream"
    if not isinstance(table, Mapping):
        ctx.fail(where, 'must be a table: { fit = "<downstream fit>", error = 0.4 }')
    ctx.known(table, where, {"fit", "error", "metric"})
    fit = _stored_name(ctx, table, f"{where}.fit", "a stored downstream fit (mixplan fit --target)")
    error = ctx.number(table, f"{where}.error")
    if error is None:
        ctx.fail(f"{where}.error", "missing: the downstream error to reach (e.g. 0.4)")
    if not 0 < error < 1:
        ctx.fail(f"{where}.error", f"must lie in (0, 1) (an error rate), got {error:g}")
    metric = table.get("metric")
    if metric is not None and not isinstance(metric, str):
        ctx.fail(f"{where}.metric", f"must be the metric's name, got {metric!r}")
    return DownstreamTarget(fit, error, metric)


def _hardware(ctx: _Ctx, table: Mapping, section: str) -> Hardware | None:
    if not table:
        return None
    ctx.known(
        table,
        section,
        {
            "gpu",
            "precision",
            "peak_flops",
            "mfu",
            "price_per_hour",
            "gpus",
            "prefill_mfu",
            "decode_mfu",
        },
    )
    gpu = str(table.get("gpu", "custom")).lower()
    precision = str(table.get("precision", "bf16")).lower()
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
    if mfu > 1:
        ctx.fail(f"{section}.mfu", f"must be in (0, 1], got {mfu}")
    gpus = table.get("gpus")
    if gpus is not None and (not isinstance(gpus, int) or isinstance(gpus, bool) or gpus <= 0):
        ctx.fail(f"{section}.gpus", f"must be a positive integer, got {gpus!r}")
    price = ctx.number(table, f"{section}.price_per_hour", positive=True)
    return Hardware(gpu, precision, peak, mfu, price, gpus)


def _inference(ctx: _Ctx, table: Mapping) -> InferenceSpec:
    if not table:
        return InferenceSpec()
    demand = {"tokens", "tokens_in", "tokens_out", "requests", "tokens_in_per_request",
              "tokens_out_per_request"}  # fmt: skip
    hw_keys = {"gpu", "precision", "peak_flops", "price_per_hour", "prefill_mfu", "decode_mfu"}
    ctx.known(table, "inference", demand | hw_keys | {"mfu"})

    def get(key: str) -> float:
        return ctx.number(table, f"inference.{key}") or 0.0

    for key in demand & set(table):
        if get(key) < 0:
            ctx.fail(f"inference.{key}", "must be non-negative")
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
    if not isinstance(rows, list):
        ctx.fail("sources", "must be an array of tables ([[sources]])")
    out, seen = [], set()
    for i, row in enumerate(rows):
        where = f"sources[{i}]"
        if not isinstance(row, Mapping):
            ctx.fail(where, "must be a table with name, unique_tokens, max_epochs")
        ctx.known(row, where, {"name", "unique_tokens", "max_epochs"})
        name = row.get("name")
        if not isinstance(name, str) or not name:
            ctx.fail(f"{where}.name", "missing or not a string")
        if name in seen:
            ctx.fail(f"{where}.name", f"duplicate source {name!r}")
        seen.add(name)
        unique = ctx.number(row, f"{where}.unique_tokens", positive=True)
        if unique is None:
            ctx.fail(f"{where}.unique_tokens", "missing: the source's unique tokens")
        if unique < 1:
            ctx.fail(
                f"{where}.unique_tokens",
                f"{unique:g} is less than one token; give the "
                "source's size in tokens (e.g. 2.5e10)",
            )
        epochs = ctx.number(row, f"{where}.max_epochs", positive=True) or 1.0
        out.append(Source(name, unique, epochs))
    return tuple(out)


def _mixture(ctx: _Ctx, table: Any, sources: tuple[Source, ...]) -> MixtureSpec | None:
    if table is None:
        return None
    if not isinstance(table, Mapping):
        ctx.fail("mixture", "must be a table")
    ctx.known(
        table,
        "mixture",
        {"domains", "sources", "c", "k", "t", "fit", "reference", "trust_region"},
    )
    trust_region = table.get("trust_region", True)
    if not isinstance(trust_region, bool):
        ctx.fail("mixture.trust_region", f"must be true or false, got {trust_region!r}")
    if not sources:
        ctx.fail("sources", "a [mixture] needs the [[sources]] it mixes")
    names = [s.name for s in sources]
    reference = None
    if "reference" in table:
        ref = ctx.table(table, "reference")
        unknown = sorted(set(ref) - set(names))
        if unknown:
            ctx.fail(f"mixture.reference.{unknown[0]}", f"unknown source; sources are {names}")
        reference = {k: ctx.number(ref, f"mixture.reference.{k}") for k in ref}
        if abs(sum(reference.values()) - 1) > 1e-6 or min(reference.values()) < 0:
            ctx.fail("mixture.reference", "must be non-negative and sum to 1")
    if "fit" in table:
        return MixtureSpec(fit=str(table["fit"]), reference=reference, trust_region=trust_region)
    law_sources = table.get("sources", names)
    unknown = [s for s in law_sources if s not in names]
    if unknown:
        ctx.fail("mixture.sources", f"unknown source {unknown[0]!r}; [[sources]] lists {names}")
    if list(law_sources) != names:
        ctx.fail("mixture.sources", f"must list the [[sources]] in order: {names}")
    domains = table.get("domains")
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) for d in domains):
        ctx.fail("mixture.domains", "must be a non-empty list of eval-domain names")
    try:
        c = tuple(float(v) for v in table["c"])
        k = tuple(float(v) for v in table["k"])
        t = tuple(tuple(float(v) for v in row) for row in table["t"])
    except (KeyError, TypeError, ValueError) as exc:
        ctx.fail("mixture", f"c, k (one number per domain) and t (domains x sources) needed: {exc}")
    for key, values, bound in (("c", c, MAX_MAGNITUDE), ("k", k, 1e30), ("t", sum(t, ()), 200.0)):
        bad = [v for v in values if not (math.isfinite(v) and abs(v) <= bound)]
        if bad:
            ctx.fail(f"mixture.{key}", f"{bad[0]!r} is not a finite number within +-{bound:g}")
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
    ctx.known(table, "eval", {"weights"})
    weights = ctx.table(table, "weights")
    if not weights:
        return None
    values = {k: ctx.number(weights, f"eval.weights.{k}") for k in weights}
    if any(v < 0 for v in values.values()):
        ctx.fail("eval.weights", "weights must be non-negative")
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
