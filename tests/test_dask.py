"""The fit and plan fan-out on a local Dask cluster (prefect-dask) gives the default plan."""

from __future__ import annotations

import json

import pytest
from test_pipeline_support import REPO_ROOT, SMALL_BOOTSTRAP, small_inputs

from mixplan.flows.pipeline import pipeline

pytestmark = [pytest.mark.flow, pytest.mark.slow]


def _fitted_spec(tmp_path):
    """The bundled example spec, planned with the law fitted to the Epoch runs."""
    text = (REPO_ROOT / "data" / "specs" / "example.toml").read_text()
    specs = tmp_path / "specs"
    specs.mkdir()
    law = '[law]\nname = "sardana"'
    assert law in text
    (specs / "fitted.toml").write_text(text.replace(law, '[law]\nfit = "epoch-chinchilla"'))
    return specs


def _plan(lake) -> dict:
    return json.loads((lake / "pipeline" / "state.json").read_text())["plans"]["fitted"]


def test_dask_runner_gives_the_same_plan(prefect_harness, tmp_path, bundled):
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Finished(SchedulerPlugin):
        """Records the keys of the tasks the cluster computed."""

        def __init__(self) -> None:
            self.keys: list[str] = []

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            if finish == "memory":
                self.keys.append(str(key))

    logs = small_inputs(tmp_path, bundled)
    options = dict(
        inputs=[str(logs)],
        specs=str(_fitted_spec(tmp_path)),
        n_bootstrap=SMALL_BOOTSTRAP,
        mixture=False,
    )
    default = pipeline(lake=str(tmp_path / "lake-a"), reports=str(tmp_path / "rep-a"), **options)
    finished = Finished()
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        cluster.scheduler.add_plugin(finished)
        on_dask = pipeline(
            lake=str(tmp_path / "lake-b"),
            reports=str(tmp_path / "rep-b"),
            dask_address=cluster.scheduler_address,
            **options,
        )
    # the fit's bootstrap chunks and the plan's what-if points ran on the cluster
    assert any("bootstrap" in key for key in finished.keys), finished.keys
    assert any("whatif" in key for key in finished.keys), finished.keys
    assert on_dask["plans"] == default["plans"] == {"fitted": "optimal"}
    assert on_dask["problems"] == default["problems"] == []
    plan_a, plan_b = _plan(tmp_path / "lake-a"), _plan(tmp_path / "lake-b")
    assert plan_a.keys() == plan_b.keys() and "params" in plan_a
    for quantity, values in plan_a.items():
        for value, other in zip(values, plan_b[quantity], strict=True):
            assert (value is None and other is None) or other == pytest.approx(value, rel=1e-6), (
                quantity
            )
