"""mixplan: from small training runs to the big-run decision.

The installed package maps the project's top-level folders into one namespace (see
``[tool.setuptools.package-dir]`` in pyproject.toml):

- :mod:`mixplan.planning` (``planning/``): the library, pure computation;
- :mod:`mixplan.tasks` (``tasks/``): Prefect tasks that read and write the lake;
- :mod:`mixplan.flows` (``flows/``): Prefect flows, the CLI and the HTTP API;
- :mod:`mixplan.data` (``data/``): the bundled real run logs, example specs and mappings.
"""

from importlib import metadata

try:
    __version__ = metadata.version("mixplan")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
