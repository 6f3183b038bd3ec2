"""Data shipped with mixplan (package data of the wheel, the ``data/`` folder of a checkout).

``public/`` holds real public run logs (provenance in ``public/PROVENANCE.md``), ``specs/``
example plan specs, ``mappings/`` declared mappings for raw eval dumps and ``samples/`` a
hand-made malformed log. Code finds them through the paths below, never relative to the
working directory.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
BUNDLED_DATA = DATA_DIR / "public"
"""Real public run logs (see public/PROVENANCE.md)."""
EXAMPLE_SPECS = DATA_DIR / "specs"
"""Example plan specs (TOML)."""
MAPPINGS_DIR = DATA_DIR / "mappings"
"""Declared mappings for raw eval dumps (TOML)."""
SAMPLES = DATA_DIR / "samples"
"""Hand-made malformed logs."""
