"""The stored outcome of a fit: law, objective, options, provenance, bootstrap draws, backtest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixplan.planning.errors import FitError
from mixplan.planning.laws.base import Law, law_from_dict

FORMAT_VERSION = 1


def fit_path(lake: str | Path, name: str) -> str:
    """Where the stored fit ``name`` lives in ``lake``: ``<lake>/fits/<name>.json`` (a path or a
    URL; joined as a string so ``file://`` and object-store URLs stay intact)."""
    return f"{str(lake).rstrip('/')}/fits/{name}.json"


@dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted law with everything needed to reproduce, trust and use it.

    Attributes
    ----------
    name : the fit's name (file stem under ``<lake>/fits/``).
    law : the point estimate (full-data fit).
    objective : summed Huber objective at the point estimate.
    options : objective, delta, residual scale, FLOP convention, outlier rule, start grid,
        selection (experiment / split / domain), bootstrap settings.
    data_hash, code_version : provenance (``mixplan.planning.provenance``).
    n_runs, n_points : runs (resampling units) and rows (checkpoints) fitted.
    warnings : reasons to distrust the fit (few runs, bounds, flat directions, extrapolation).
    bootstrap_ : parameter name -> ``(B,)`` draws (bootstrap by run), plus ``"objective"``.
    decisions : point estimates of the derived decisions at ``decisions["flops"]`` budgets
        (compute-optimal ``params``, ``tokens``, ``tokens_per_param``, ``loss``) when the law has
        a compute-optimal allocation.
    decision_draws_ : decision name -> ``(B, n_budgets)`` draws.
    backtest : the held-out extrapolation check (see ``mixplan.planning.fitting.backtest``).
    data_range : largest ``flops``, ``params``, ``tokens`` among the fitted runs, and the
        smallest as ``params_min``, ``tokens_min`` (and ``flops_min`` for StepLaw).
    calibration : the calibrated prediction intervals' record and measured coverage
        (:func:`mixplan.planning.fitting.calibration.calibration_record`); empty if not run.
    leaderboard : the rolling-origin leaderboard of the experiment this fit belongs to
        (:func:`mixplan.planning.fitting.leaderboard.leaderboard`), when one was made.
    isoflop : Chinchilla approaches 1 and 2 on the same runs
        (:func:`mixplan.planning.fitting.isoflop.isoflop_fits`), when the runs form budgets.
    """

    name: str
    law: Law
    objective: float
    options: dict[str, Any]
    data_hash: str
    code_version: str
    n_runs: int
    n_points: int
    warnings: tuple[str, ...] = ()
    bootstrap_: dict[str, np.ndarray] = field(default_factory=dict)
    decisions: dict[str, list[float]] = field(default_factory=dict)
    decision_draws_: dict[str, np.ndarray] = field(default_factory=dict)
    backtest: dict[str, Any] = field(default_factory=dict)
    data_range: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    leaderboard: dict[str, Any] = field(default_factory=dict)
    isoflop: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ draws and intervals
    @property
    def n_bootstrap(self) -> int:
        """Number of bootstrap draws stored."""
        draws = [v for k, v in self.bootstrap_.items() if k != "objective"]
        return int(draws[0].size) if draws else 0

    def law_draws(self) -> list[Law]:
        """One law per bootstrap draw (re-plan under each to get intervals on decisions)."""
        cls = type(self.law)
        names = cls.param_names()
        if self.n_bootstrap == 0:
            raise FitError(f"fit {self.name!r} has no bootstrap draws; refit with n_bootstrap > 0")
        return [
            cls(**{k: float(self.bootstrap_[k][i]) for k in names})  # type: ignore[call-arg]
            for i in range(self.n_bootstrap)
        ]

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
        """``name -> (point, low, high)`` percentile intervals for parameters and decisions.

        Decision entries are named ``<decision>@<budget>`` (e.g. ``params@5.9e+23``).
        """
        lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
        out: dict[str, tuple[float, float, float]] = {}
        for k in type(self.law).param_names():
            point = float(getattr(self.law, k))
            if k in self.bootstrap_:
                lo, hi = np.nanpercentile(self.bootstrap_[k], [lo_q, hi_q])
                out[k] = (point, float(lo), float(hi))
            else:
                out[k] = (point, float("nan"), float("nan"))
        for key, draws in self.decision_draws_.items():
            for j, budget in enumerate(self.decisions.get("flops", [])):
                point = self.decisions[key][j]
                lo, hi = np.nanpercentile(draws[:, j], [lo_q, hi_q])
                out[f"{key}@{budget:.3g}"] = (float(point), float(lo), float(hi))
        return out

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays become lists)."""
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "law": self.law.to_dict(),
            "objective": self.objective,
            "options": self.options,
            "data_hash": self.data_hash,
            "code_version": self.code_version,
            "n_runs": self.n_runs,
            "n_points": self.n_points,
            "warnings": list(self.warnings),
            "bootstrap": {k: np.asarray(v).tolist() for k, v in self.bootstrap_.items()},
            "decisions": self.decisions,
            "decision_draws": {k: np.asarray(v).tolist() for k, v in self.decision_draws_.items()},
            "backtest": self.backtest,
            "data_range": self.data_range,
            "created_at": self.created_at,
            "calibration": self.calibration,
            "leaderboard": self.leaderboard,
            "isoflop": self.isoflop,
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; also write it to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=True, default=_json_default)
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitResult:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            name=data["name"],
            law=law_from_dict(data["law"]),
            objective=float(data["objective"]),
            options=data.get("options", {}),
            data_hash=data.get("data_hash", ""),
            code_version=data.get("code_version", ""),
            n_runs=int(data.get("n_runs", 0)),
            n_points=int(data.get("n_points", 0)),
            warnings=tuple(data.get("warnings", ())),
            bootstrap_={k: np.asarray(v, float) for k, v in data.get("bootstrap", {}).items()},
            decisions=data.get("decisions", {}),
            decision_draws_={
                k: np.asarray(v, float).reshape(len(v), -1)
                for k, v in data.get("decision_draws", {}).items()
            },
            backtest=data.get("backtest", {}),
            data_range=data.get("data_range", {}),
            created_at=data.get("created_at", ""),
            calibration=data.get("calibration", {}),
            leaderboard=data.get("leaderboard", {}),
            isoflop=data.get("isoflop", {}),
        )

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> FitResult:
        """Load from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise FitError(f"no fit file at {path}; run `mixplan fit` to create fits")
            text = path.read_text()
        return cls.from_dict(json.loads(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
