"""The package's one compiled part; everything else is configured in pyproject.toml.

``mixplan.planning.readers._flatscan`` holds the flat-JSONL scanner's loops (see
``planning/readers/flatjson.py``). It is optional: where it cannot be built (no C compiler),
the install goes on and every JSONL block is parsed by polars instead, a little slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mixplan.planning.readers._flatscan",
            sources=["planning/readers/_flatscan.c"],
            extra_compile_args=["-O2"],  # and never -ffast-math: the decimals need strict IEEE
            optional=True,
        )
    ]
)
