"""The drift check (:class:`mixplan.planning.drift.DriftResult`) as a report section."""

from __future__ import annotations

from mixplan.planning.drift import DriftResult, PlanMove
from mixplan.planning.report.format import format_loss, format_quantity
from mixplan.planning.report.model import DriftSection, Table


def drift_section(drift: DriftResult) -> DriftSection:
    """The drift check as a report section."""
    flagged = drift.flagged
    flagged_table = None
    if flagged.height:
        flagged_table = Table(
            ("run", "observed", "predicted", "interval", "error"),
            tuple(
                (
                    row["run_id"],
                    format_loss(row["observed"]),
                    format_loss(row["predicted"]),
                    f"[{format_loss(row['low'])}, {format_loss(row['high'])}]",
                    f"{100 * row['rel_error']:+.1f}%",
                )
                for row in flagged.iter_rows(named=True)
            ),
            "new runs outside the previous fit's prediction interval",
        )
    moves_table = None
    if drift.moves:
        moves_table = Table(
            ("plan", "quantity", "before", "now", "change", "previous interval"),
            tuple(_move_row(move) for move in drift.moves),
            "plan quantities that moved beyond their intervals",
        )
    return DriftSection(
        summary=drift.summary(),
        flagged_runs=flagged_table,
        moved_plans=moves_table,
        changes=tuple(drift.notes),
    )


def _move_row(move: PlanMove) -> tuple[str, ...]:
    """One moved plan quantity as table cells, each number in the quantity's unit."""
    unit = {
        "params": "params",
        "tokens": "tokens",
        "loss": "loss",
        "flops": "flops",
        "vocab_size": "count",
    }.get(move.quantity, "fraction" if move.quantity.startswith("mixture:") else "")
    interval = (
        f"[{format_quantity(move.low, unit)}, {format_quantity(move.high, unit)}]"
        if move.low is not None and move.high is not None
        else "—"
    )
    return (
        move.plan,
        move.quantity,
        format_quantity(move.previous, unit),
        format_quantity(move.current, unit),
        f"{move.relative_change:+.1%}",
        interval,
    )
