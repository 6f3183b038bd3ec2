"""The named exceptions of mixplan.

Expected outcomes (an infeasible plan) are statuses, not errors.
"""

from __future__ import annotations


class MixplanError(Exception):
    """Base class of every error mixplan raises on purpose."""


class RunLogError(MixplanError):
    """A run log cannot be read at all (unreadable, empty, or no recognised format)."""


class SchemaError(MixplanError):
    """A table does not have the columns or types the canonical schema requires."""


class FitError(MixplanError):
    """A law cannot be fitted to the data given (too few runs, no finite objective, ...)."""


class NotFittedError(MixplanError):
    """A fitted quantity was asked for before `fit` was called."""


class SpecError(MixplanError):
    """A plan spec is invalid; the message names the field."""


class ExtrapolationError(MixplanError):
    """A prediction was asked for too far beyond the data a law was fitted on."""


class PlanningError(MixplanError):
    """A planning request cannot be built or solved as given (a law without the constants a
    program needs, numbers a solver cannot represent, ...); the message says what to change."""
