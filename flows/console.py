"""The one way the CLI makes a rich console.

Messages (errors, problems, paths) are never wrapped at the terminal's width (``soft_wrap``):
a long file name stays on one line, so what a user copies, or a test reads, does not depend on
how wide the terminal is. Tables still fit the width they are given.
"""

from __future__ import annotations

from rich.console import Console


def cli_console(*, stderr: bool = False, width: int | None = None) -> Console:
    """A console for CLI output (``stderr`` when stdout carries JSON)."""
    return Console(stderr=stderr, soft_wrap=True, width=width)
