"""The wheel is the product: it must carry every module and every bundled data file.

Builds mixplan's wheel with pip (no network: ``--no-deps``, the build backend is installed) and
compares its contents with the checkout, so a new data folder or subpackage that
pyproject.toml does not map is caught here, not by a user whose install has no data.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"planning": "mixplan/planning", "tasks": "mixplan/tasks", "flows": "mixplan/flows"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    # build from a copy of the tracked files: a stale build/ folder in the checkout would
    # otherwise put files in the wheel that pyproject.toml no longer maps
    source = tmp_path_factory.mktemp("source")
    for name in _tracked():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("mixplan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _tracked(*pathspecs: str) -> list[str]:
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", *pathspecs],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def test_every_module_is_in_the_wheel_under_mixplan(wheel_names):
    modules = _tracked("planning/*.py", "tasks/*.py", "flows/*.py", "mixplan/*.py")
    assert len(modules) > 80
    for module in modules:
        top, rest = module.split("/", 1)
        installed = f"{FOLDERS[top]}/{rest}" if top in FOLDERS else module
        assert installed in wheel_names, f"{module} is not in the wheel (as {installed})"
    # the generic top-level names are not installed on their own
    assert not any(name.split("/")[0] in FOLDERS for name in wheel_names)


def test_the_wheel_carries_the_compiled_scanner(wheel_names):
    """setup.py's optional extension (the flat-JSONL scanner) is built into the wheel."""
    built = [n for n in wheel_names if n.startswith("mixplan/planning/readers/_flatscan.")]
    assert any(n.endswith(".so") or n.endswith(".pyd") for n in built), built


def test_every_bundled_data_file_is_package_data(wheel_names):
    data_files = _tracked("data")
    assert any(name.startswith("data/public/") for name in data_files)
    assert any(name.startswith("data/mappings/") for name in data_files)
    for name in data_files:
        assert f"mixplan/{name}" in wheel_names, f"{name} is not shipped in the wheel"
