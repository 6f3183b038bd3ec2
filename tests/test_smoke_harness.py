"""The Prefect test harness starts and runs a real flow (guards the test set-up itself)."""

from prefect import flow, task


@task
def _double(x: int) -> int:
    return 2 * x


@flow
def _tiny(x: int) -> int:
    return _double(x)


def test_a_real_flow_runs_under_the_harness(prefect_harness):
    assert _tiny(21) == 42
