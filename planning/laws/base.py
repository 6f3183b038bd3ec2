"""The common protocol of every scaling law: named parameters and a JSON round-trip.

Every law is a frozen dataclass whose fields are its parameters (floats). ``to_dict`` gives
``{"law": "<registered name>", "params": {...}}`` and :func:`law_from_dict` rebuilds the law, so
fits and plans can store any law and reload it without knowing its class in advance.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

import numpy as np

from mixplan.planning.errors import SpecError

LAW_REGISTRY: dict[str, type[Law]] = {}
"""Law name -> law class, filled by :func:`register_law`."""

T = TypeVar("T", bound="Law")


class Law:
    """Mixin for frozen-dataclass laws: parameter names, ``to_dict`` / ``from_dict``."""

    name: ClassVar[str] = "law"

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The law's parameter names, in field order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready ``{"law": name, "params": {name: value}}``."""
        return {
            "law": self.name,
            "params": {k: float(getattr(self, k)) for k in self.param_names()},
        }

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Rebuild a law from :meth:`to_dict` output (or a bare ``{name: value}`` mapping)."""
        params = data.get("params", data)
        missing = [k for k in cls.param_names() if k not in params]
        if missing:
            raise SpecError(
                f"law {cls.name!r}: parameters {missing} missing from {sorted(params)}; "
                "pass every parameter named by param_names()"
            )
        return cls(**{k: float(params[k]) for k in cls.param_names()})

    def as_array(self) -> np.ndarray:
        """The parameters as a float array in :meth:`param_names` order."""
        return np.array([getattr(self, k) for k in self.param_names()], dtype=float)

    def replace(self: T, **changes: float) -> T:
        """A copy with some parameters changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def register_law(cls: type[T]) -> type[T]:
    """Class decorator: make a law reloadable by name via :func:`law_from_dict`."""
    LAW_REGISTRY[cls.name] = cls
    return cls


def law_from_dict(data: dict[str, Any]) -> Law:
    """Rebuild any registered law from its ``to_dict`` output."""
    # Import the law modules so that their classes are registered.
    from mixplan.planning.laws import (  # noqa: F401
        chinchilla,
        hyperparams,
        kaplan,
        loss_curve,
        overtraining,
        repetition,
        vocabulary,
    )

    name = data.get("law")
    if name not in LAW_REGISTRY:
        raise SpecError(f"unknown law {name!r}; known laws: {sorted(LAW_REGISTRY)}")
    return LAW_REGISTRY[name].from_dict(data)


def as_float_array(value: Any) -> np.ndarray:
    """``value`` as a float64 numpy array (scalars become 0-d arrays)."""
    return np.asarray(value, dtype=float)
