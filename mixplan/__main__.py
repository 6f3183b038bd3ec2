"""``python -m mixplan``: the same command line as the ``mixplan`` console script."""

from mixplan.flows.cli import run

if __name__ == "__main__":
    run()
