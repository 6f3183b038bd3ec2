"""Assemble the whole :class:`~mixplan.planning.report.model.Report` from the pipeline's results.

Pure: the caller reads the lake (coverage, the runs behind each fit) and passes the results in;
a section that cannot be built becomes a line under "problems" instead of sinking the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from mixplan.planning.drift import DriftResult
from mixplan.planning.fitting.result import FitResult
from mixplan.planning.report.drift import drift_section
from mixplan.planning.report.laws import law_section, mixture_section
from mixplan.planning.report.model import LawSection, Report, Table
from mixplan.planning.report.plans import plan_section

TITLE = "mixplan planning report"


def build_report(
    *,
    lake: str,
    code: str,
    generated_at: str,
    coverage: Table | None,
    fits: Sequence[tuple[FitResult, pl.DataFrame]],
    mixture_fits: Sequence[Mapping[str, Any]] = (),
    plans: Mapping[str, Any],
    drift: DriftResult | None,
    whatifs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    problems: Sequence[str] = (),
    run_facts: Mapping[str, str] | None = None,
    law_sections: Sequence[LawSection] | None = None,
) -> Report:
    """The report model of one pipeline run.

    Parameters
    ----------
    lake, code, generated_at
        Shown in the header: the lake's path or URL, the code version, the time of writing.
    coverage
        The lake coverage table (:func:`mixplan.planning.report.coverage.coverage_table`), or None.
    fits
        Each scale-law fit with the runs it was fitted on (one final loss per run), for charts.
    mixture_fits
        ``fit_mixture`` results (:func:`mixplan.planning.report.laws.mixture_section`).
    plans, whatifs
        Plan results and their what-if rows by spec name.
    drift
        The comparison with the previous run, None to leave the section out.
    problems
        What went wrong earlier in the run, each a sentence that says what to do.
    run_facts
        Further header facts (``name -> value``).
    law_sections
        The sections of ``fits`` and ``mixture_fits`` when already built (a pipeline run whose
        fits are unchanged reuses the previous run's charts); None builds them here.
    """
    problems = list(problems)
    laws = list(law_sections or ())
    for fit, runs in fits if law_sections is None else ():
        try:
            laws.append(law_section(fit, runs))
        except Exception as error:  # noqa: BLE001 - one broken section must not sink all
            problems.append(f"fit {fit.name}: could not be shown ({error})")
    for result in mixture_fits if law_sections is None else ():
        try:
            laws.append(mixture_section(result))
        except Exception as error:  # noqa: BLE001
            problems.append(f"mixture fit of {result.get('experiment')}: not shown ({error})")
    plan_sections = []
    for name, result in plans.items():
        try:
            plan_sections.append(plan_section(name, result, (whatifs or {}).get(name, ())))
        except Exception as error:  # noqa: BLE001
            problems.append(f"plan {name}: could not be shown ({error})")
    facts = [
        ("lake", lake),
        ("laws fitted", str(len(fits) + len(mixture_fits))),
        ("plans", str(len(plans))),
        ("code", code),
        *(run_facts or {}).items(),
    ]
    return Report(
        title=TITLE,
        generated_at=generated_at,
        facts=tuple(facts),
        coverage=coverage,
        laws=tuple(laws),
        plans=tuple(plan_sections),
        drift=drift_section(drift) if drift is not None else None,
        problems=tuple(problems),
    )
