"""Configuration at the edge: where the bundled data, the lake and the reports live by default."""

from __future__ import annotations

import os
from pathlib import Path

from mixplan.data import BUNDLED_DATA, EXAMPLE_SPECS

__all__ = ["BUNDLED_DATA", "DEFAULT_LAKE", "DEFAULT_REPORTS", "EXAMPLE_SPECS", "OUT_DIR"]

OUT_DIR = Path(os.environ.get("MIXPLAN_OUT", "out"))
DEFAULT_LAKE = OUT_DIR / "lake"
DEFAULT_REPORTS = OUT_DIR / "reports"
