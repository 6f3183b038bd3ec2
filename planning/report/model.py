"""What a planning report shows, as plain frozen dataclasses (no Prefect, no I/O).

:func:`planning.report.build.build_report` translates fits, plans and drift checks into these;
the renderers (:mod:`planning.report.html`, :mod:`planning.report.markdown`) only read them.
Every number carries its unit name (``params``, ``tokens``, ``flops``, ``loss``, ``fraction``,
...) so the renderers can print it readably.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Estimate:
    """A quantity with an optional interval: ``name = value [low, high] unit``."""

    name: str
    value: float | None
    low: float | None = None
    high: float | None = None
    unit: str = ""
    level: float = 0.95
    """Coverage of the interval (0.95 for a 2.5-97.5 percentile bootstrap interval)."""


@dataclass(frozen=True)
class Table:
    """A small table already rendered to strings (header plus rows)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG image with a caption; ``png`` holds the encoded bytes."""

    title: str
    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class LawSection:
    """One fitted law: its formula, parameters and decisions with intervals, its backtest."""

    title: str
    formula: str
    parameters: tuple[Estimate, ...]
    summary: str = ""
    decisions: tuple[Estimate, ...] = ()
    backtest: tuple[Estimate, ...] = ()
    notes: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()


@dataclass(frozen=True)
class PlanSection:
    """One plan: its status, the decision with intervals, explanations, what-ifs and charts."""

    title: str
    status: str
    decisions: tuple[Estimate, ...]
    explanations: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()


@dataclass(frozen=True)
class DriftSection:
    """What changed since the previous pipeline run."""

    summary: str
    flagged_runs: Table | None = None
    moved_plans: Table | None = None
    changes: tuple[str, ...] = ()

    @property
    def has_flags(self) -> bool:
        """True when any run fell outside its prediction interval or any plan moved."""
        return bool(
            (self.flagged_runs is not None and self.flagged_runs.rows)
            or (self.moved_plans is not None and self.moved_plans.rows)
        )


@dataclass(frozen=True)
class Report:
    """A whole planning report."""

    title: str
    generated_at: str
    facts: tuple[tuple[str, str], ...] = ()
    coverage: Table | None = None
    laws: tuple[LawSection, ...] = ()
    plans: tuple[PlanSection, ...] = ()
    drift: DriftSection | None = None
    problems: tuple[str, ...] = field(default=())
