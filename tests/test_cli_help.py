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
