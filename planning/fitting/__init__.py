"""One fitting engine for every law: vectorised multi-start Huber fits, bootstrap, backtests."""

from mixplan.planning.fitting.downstream import downstream_law
from mixplan.planning.fitting.fit import (
    LawFitter,
    assemble,
    decision_values,
    fit_frame,
    get_spec,
    point_fit,
    predict_with_interval,
    prepare,
)
from mixplan.planning.fitting.leaderboard import leaderboard_path, winner
from mixplan.planning.fitting.result import FitResult
from mixplan.planning.fitting.specs import SPECS, FitSpec

__all__ = [
    "SPECS",
    "FitResult",
    "FitSpec",
    "LawFitter",
    "assemble",
    "decision_values",
    "downstream_law",
    "fit_frame",
    "get_spec",
    "leaderboard_path",
    "point_fit",
    "predict_with_interval",
    "prepare",
    "winner",
]
