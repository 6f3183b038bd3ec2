"""Every ``mixplan`` command's ``--help`` shows examples of itself (the README promises it)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from mixplan.flows.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def test_the_command_list_is_the_whole_cli():
    assert {"ingest", "fit", "plan", "whatif", "api", "pipeline", "serve"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_help_has_examples_of_that_command(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`mixplan {name} --help` shows no examples"
    examples = result.output.split("Example", 1)[1]
    assert f"mixplan {name}" in examples, f"`mixplan {name} --help`: no example runs it"


def test_the_top_level_help_shows_a_typical_session():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("ingest", "fit", "plan", "pipeline"):
        assert f"mixplan {name}" in result.output


def test_version_prints_the_installed_version():
    import mixplan

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"mixplan {mixplan.__version__}")


EXIT_PROBE = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
from mixplan.flows.cli import run
sys.argv = ["mixplan", *sys.argv[1:]]
run()
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--version"], 0), (["ingest", "no-such-file.jsonl", "--lake", "{lake}"], 1)],
)
def test_the_console_script_keeps_exit_codes_and_skips_the_shutdown_collections(
    tmp_path, args, code
):
    """``run`` (the console script) returns the command's exit code and leaves the objects
    frozen, so the interpreter's shutdown does not walk them (0.3-0.4 s a command)."""
    import subprocess
    import sys

    args = [a.format(lake=tmp_path / "lake") for a in args]
    done = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == code, done.stderr
    assert "frozen at exit: True" in done.stdout
