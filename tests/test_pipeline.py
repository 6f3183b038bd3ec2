"""The pipeline flow end to end on a small real input: report, state, fit cache, drift."""

from __future__ import annotations

import json
import shutil

import pytest
from test_pipeline_support import EPOCH, SMALL_BOOTSTRAP, small_inputs, small_specs

from mixplan.flows.pipeline import pipeline
from mixplan.tasks.lake import read_runs

pytestmark = [pytest.mark.flow, pytest.mark.slow]

SARDANA = "nikhilsardana__beyond-chinchilla"
REGMIX = "sail-sg__regmix"


def test_pipeline_reports_caches_fits_and_tracks_new_runs(prefect_harness, tmp_path, bundled):
    logs = small_inputs(tmp_path, bundled)
    specs = small_specs(tmp_path)
    lake, reports = tmp_path / "lake", tmp_path / "reports"
    options = dict(
        inputs=[str(logs)],
        lake=str(lake),
        specs=str(specs),
        reports=str(reports),
        n_bootstrap=SMALL_BOOTSTRAP,
        mixture=False,
    )
    first = pipeline(**options)
    html = (reports / "report.html").read_text(encoding="utf-8")
    assert first["report"] == str(reports / "report.html")
    assert first["cached_fit"] is False and first["fits"]
    assert first["plans"] == {"example": "optimal"}
    assert first["drift"].startswith("First pipeline run")
    assert "data:image/png;base64," in html and "plan example" in html
    assert "chinchilla" in html
    assert "57.3M – 16.2B" in html  # lake coverage: the Epoch runs' parameter range
    markdown = (reports / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("# mixplan planning report")
    state = json.loads((lake / "pipeline" / "state.json").read_text())
    assert state["fit_paths"] == first["fits"] and state["plans"]["example"]["params"][0] > 0
    first_params = state["plan_results"]["example"]["params"]

    second = pipeline(**options)  # nothing changed: the stored fits are reused
    assert second["cached_fit"] is True and second["fits"] == first["fits"]
    assert "0 new run(s)" in second["drift"]
    # the drift check and the report are published as Prefect artifacts (the README says so)
    drift, report = _latest_artifact("mixplan-drift"), _latest_artifact("mixplan-report")
    assert drift.startswith("## mixplan drift") and "0 new run(s)" in drift
    assert report.startswith("# mixplan planning report")
    # warm: plans and law charts come from the previous run, the report is the same
    state = json.loads((lake / "pipeline" / "state.json").read_text())
    assert state["plan_results"]["example"]["params"] == first_params
    assert (lake / "pipeline" / "law-sections.json").exists()
    warm_html = (reports / "report.html").read_text(encoding="utf-8")
    assert warm_html.count("data:image/png;base64,") == html.count("data:image/png;base64,")

    runs_before = read_runs(lake).height
    shutil.copytree(bundled / SARDANA, logs / SARDANA)  # new logs arrive
    third = pipeline(**options)
    new_runs = read_runs(lake).height - runs_before
    assert new_runs > 0
    assert third["cached_fit"] is False  # new data: refitted
    assert f"{new_runs} new run(s)" in third["drift"]
    assert "What changed" in (reports / "report.html").read_text(encoding="utf-8")


def _latest_artifact(key: str) -> str:
    """The data of the latest Prefect artifact with ``key`` (from the harness's API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifacts, f"no artifact {key!r} was published"
    return str(artifacts[0].data)


def test_pipeline_report_opens_in_chromium(prefect_harness, tmp_path, bundled):
    """The report the pipeline writes (not a hand-built one, mixture laws included) loads in
    Chromium with every chart and no console errors."""
    from test_browser import CHROMIUM, open_in_chromium

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    logs = small_inputs(tmp_path, bundled, (EPOCH, REGMIX))
    result = pipeline(
        inputs=[str(logs)],
        lake=str(tmp_path / "lake"),
        specs=str(small_specs(tmp_path)),
        reports=str(tmp_path / "reports"),
        n_bootstrap=SMALL_BOOTSTRAP,
        mixture=True,
    )
    facts = open_in_chromium(
        tmp_path / "reports" / "report.html", tmp_path / "shot.png", tmp_path / "profile"
    )
    assert result["problems"] == []
    assert any("regmix-1m-train-mixture-additive" in path for path in result["mixture_fits"])
    # Epoch law (loss vs compute, isoFLOPs), plan (mixture bars, frontier), RegMix mixture
    # laws (held-out error by law): 5 charts
    assert facts["images"] == 5 and facts["broken"] == 0, facts
    assert facts["errors"] == []
    assert facts["title"] == "mixplan planning report"
    html = (tmp_path / "reports" / "report.html").read_text(encoding="utf-8")
    assert "scored on regmix-1m-test" in html


def test_pipeline_on_a_url_lake(prefect_harness, tmp_path, bundled):
    """A lake given as a URL (file:// here; s3:// goes through the same fsspec/deltalake code)."""
    lake = f"file://{tmp_path / 'lake'}"
    result = pipeline(
        inputs=[str(small_inputs(tmp_path, bundled))],
        lake=lake,
        specs=str(small_specs(tmp_path)),
        reports=str(tmp_path / "reports"),
        n_bootstrap=SMALL_BOOTSTRAP,
        mixture=False,
    )
    assert result["problems"] == [] and result["plans"] == {"example": "optimal"}
    assert result["fits"] == [f"{lake}/fits/epoch-chinchilla.json"]
    assert read_runs(lake).height == 245
    state = json.loads((tmp_path / "lake" / "pipeline" / "state.json").read_text())
    assert state["fit_paths"] == result["fits"]
    assert "epoch-chinchilla" in (tmp_path / "reports" / "report.html").read_text()
