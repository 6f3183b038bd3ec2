"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no input is a server error.

Schemathesis generates bodies that follow the schema (bounded numbers, fit names, grids) and
bodies that break it, sends each through the ASGI app, and fails on any 5xx. The app serves a
real lake holding no fits, so every fit name a request makes up must be refused cleanly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from mixplan.flows.api import create_app

_LAKE = Path(tempfile.mkdtemp(prefix="mixplan-fuzz-")) / "lake"
(_LAKE / "fits").mkdir(parents=True)
# a 1 s budget per request: a generated 100-point what-if grid stops early with its 422 (the
# time-budget path is fuzzed too) instead of solving for a quarter of a minute
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(lake=_LAKE, request_seconds=1.0)
)

EXAMPLES = 15
"""Examples per operation: enough to reach past validation into the planner (both valid and
invalid bodies), few enough that the three operations take well under a minute on a busy
2-core machine (~30 s with its load average at 5)."""


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_input_is_a_server_error(case):
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
