"""mixplan: from small training runs to the big-run decision.

The installed package maps the project's top-level folders into one namespace (see
``[tool.setuptools.package-dir]`` in pyproject.toml):

- :mod:`mixplan.planning` (``planning/``): the library, pure computation;
- :mod:`mixplan.tasks` (``tasks/``): Prefect tasks that read and write the lake;
- :mod:`mixplan.flows` (``flows/``): Prefect flows, the CLI and the HTTP API;
- :mod:`mixplan.data` (``data/``): the bundled real run logs, example specs and mappings.
"""


def __getattr__(name: str):
    """``mixplan.__version__``, looked up in the installed metadata on first read (the
    lookup scans the environment's distributions: ~20 ms that the CLI's start need not pay)."""
    if name != "__version__":
        raise AttributeError(f"module 'mixplan' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("mixplan")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        version = "0+unknown"
    globals()["__version__"] = version
    return version
