"""``python -m mixplan``: the same command line as the ``mixplan`` console script."""

from mixplan.flows.cli import app

if __name__ == "__main__":
    app(prog_name="mixplan")
