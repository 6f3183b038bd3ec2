"""Readable numbers for people: 7.0e9 params -> "7.0B", 5.76e23 FLOPs -> "5.8e23 FLOPs"; and
estimates with their intervals as a table of such strings."""

from __future__ import annotations

import math
from collections.abc import Sequence

from mixplan.planning.report.model import Estimate, Table

_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def format_count(value: float | None, *, digits: int = 1) -> str:
    """A count with a K/M/B/T suffix: ``7.0e9 -> "7.0B"``, ``1.4e12 -> "1.4T"``, ``512 -> "512"``.

    Three or more digits before the point drop the decimals (``1.0e8 -> "100M"``). Values of
    1e15 and above fall back to scientific notation; ``None`` and non-finite values render as
    an em dash.
    """
    if not _finite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 1e15:
        return f"{value:.{digits}e}".replace("e+", "e")
    for scale, suffix in _SUFFIXES:
        if magnitude >= scale:
            scaled = value / scale
            places = 0 if abs(round(scaled, digits)) >= 100 else digits
            return f"{scaled:.{places}f}{suffix}"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.{digits}f}"


def format_flops(value: float | None) -> str:
    """Compute in scientific notation with the unit: ``5.76e23 -> "5.8e23 FLOPs"``."""
    if not _finite(value):
        return "—"
    return f"{value:.1e}".replace("e+", "e") + " FLOPs"


def format_loss(value: float | None, *, digits: int = 3) -> str:
    """A loss in nats per token with a fixed number of decimals."""
    if not _finite(value):
        return "—"
    return f"{value:.{digits}f}"


def format_percent(value: float | None, *, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.0123 -> "1.2%"``."""
    if not _finite(value):
        return "—"
    return f"{100 * value:.{digits}f}%"


def format_number(value: float | None, *, digits: int = 3) -> str:
    """A general number: fixed for ordinary magnitudes, scientific for tiny or huge ones."""
    if not _finite(value):
        return "—"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 1e-3):
        return f"{value:.{digits - 1}e}".replace("e+", "e")
    return f"{value:.{digits}g}" if magnitude >= 1 else f"{value:.{digits}f}".rstrip("0")


def format_quantity(value: float | None, unit: str) -> str:
    """Dispatch on a unit name: ``params``/``tokens``/``count`` -> suffix, ``flops``, ``loss``,
    ``fraction``/``percent``; anything else -> a general number followed by the unit."""
    if unit in ("params", "tokens", "count"):
        text = format_count(value)
        return text if unit == "count" or text == "—" else f"{text} {unit}"
    if unit == "flops":
        return format_flops(value)
    if unit == "loss":
        return format_loss(value)
    if unit in ("fraction", "percent"):
        return format_percent(value)
    if unit == "dollars":
        return "—" if not _finite(value) else f"${format_count(value)}"
    text = format_number(value)
    return text if not unit or text == "—" else f"{text} {unit}"


def format_interval(low: float | None, high: float | None, unit: str) -> str:
    """An interval with its unit written once: ``16.9B – 22.1B params``, ``2.037 – 2.057``.

    An em dash when either end is unknown.
    """
    if not (_finite(low) and _finite(high)):
        return "—"
    bare = "count" if unit in ("params", "tokens") else unit
    text = f"{format_quantity(low, bare)} – {format_quantity(high, bare)}"
    if unit in ("params", "tokens"):
        return f"{text} {unit}"
    if unit == "flops":
        return text.replace(" FLOPs", "") + " FLOPs"
    return text


def estimate_table(estimates: Sequence[Estimate], caption: str = "") -> Table:
    """Estimates as a table; the interval column only when some estimate has an interval."""
    intervals = [format_interval(e.low, e.high, e.unit) for e in estimates]
    if all(text == "—" for text in intervals):
        rows = tuple((e.name, format_quantity(e.value, e.unit)) for e in estimates)
        return Table(("quantity", "estimate"), rows, caption)
    levels = {e.level for e in estimates}
    header = f"{levels.pop():.0%} interval" if len(levels) == 1 else "interval"
    rows = tuple(
        (e.name, format_quantity(e.value, e.unit), text)
        for e, text in zip(estimates, intervals, strict=True)
    )
    return Table(("quantity", "estimate", header), rows, caption)
