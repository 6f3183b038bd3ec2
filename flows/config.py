"""Configuration at the edge: where the bundled data, the lake and the reports live by default."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DATA = REPO_ROOT / "data" / "public"
"""Real public run logs shipped with mixplan (see data/public/PROVENANCE.md)."""
EXAMPLE_SPECS = REPO_ROOT / "data" / "specs"
"""Example plan specs (TOML)."""

OUT_DIR = Path(os.environ.get("MIXPLAN_OUT", "out"))
DEFAULT_LAKE = OUT_DIR / "lake"
DEFAULT_REPORTS = OUT_DIR / "reports"
