"""Lenient readers for the stages' results: plans and mixture fits arrive as dicts (from JSON or
a flow's return value) or as dataclasses, and a field may be missing, ``None`` or non-finite.

The report sections read every number through these, so a new or absent field never breaks
the report; an unreadable number becomes ``None`` and renders as an em dash.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


def first_present(obj: Any, *names: str, default: Any = None) -> Any:
    """The first of ``names`` present on a dict or an object (``None`` values skipped)."""
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None:
            return value
    return default


def as_dict(obj: Any) -> dict[str, Any]:
    """A dict, a dataclass or an object with ``to_dict()`` as a plain dict ({} otherwise)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return {}


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing, not a number or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def value_interval(value: Any) -> tuple[float | None, float | None, float | None]:
    """``(value, low, high)`` from a number, a ``(value, low, high)`` sequence or a dict."""
    if isinstance(value, Mapping):
        return (
            finite(first_present(value, "value", "point", "estimate", "median")),
            finite(first_present(value, "low", "lo", "lower")),
            finite(first_present(value, "high", "hi", "upper")),
        )
    if isinstance(value, list | tuple) and len(value) == 3:
        return finite(value[0]), finite(value[1]), finite(value[2])
    return finite(value), None, None
