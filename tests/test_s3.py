"""Lakes on S3: ingest, fit, plan, the pipeline and the lake lock against a real S3 server.

The server is moto's standalone server, started by the suite on 127.0.0.1 (conftest's
``s3_endpoint``); every byte goes over HTTP through deltalake and s3fs, as against AWS.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
import uuid

import pytest
from test_pipeline_support import EPOCH, SMALL_BOOTSTRAP, small_inputs, small_specs

from mixplan.planning.plan import make_plan
from mixplan.planning.spec import parse_spec
from mixplan.tasks.locking import LakeBusyError, lake_lock
from mixplan.tasks.storage import OPTIONS_VARIABLE, filesystem, read_text, write_text_atomic

AWS_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


def _bucket(endpoint: str) -> str:
    """A fresh bucket on the server (created with s3fs, as a user would with the AWS CLI)."""
    import s3fs

    name = f"lake-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(key="test", secret="test", endpoint_url=endpoint).mkdir(name)
    return name


@pytest.fixture
def s3_lake(s3_endpoint, monkeypatch) -> str:
    """An empty lake URL in a fresh bucket, credentials and endpoint in the AWS environment
    (what deltalake and s3fs both read)."""
    monkeypatch.delenv(OPTIONS_VARIABLE, raising=False)
    for key, value in zip(AWS_KEYS, (s3_endpoint, "test", "test", "us-east-1"), strict=True):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    return f"s3://{_bucket(s3_endpoint)}/lake"


def _exists(url: str) -> bool:
    fs, path = filesystem(url)
    fs.invalidate_cache()
    return fs.exists(path)


def test_ingest_fit_and_plan_on_s3(s3_lake, bundled):
    from mixplan.tasks.fit import fit_lake
    from mixplan.tasks.ingest import ingest_paths
    from mixplan.tasks.lake import read_runs

    report = ingest_paths([bundled / EPOCH], s3_lake)
    assert report.totals()["runs"] == 245 and read_runs(s3_lake).height == 245
    (result, path), *_ = fit_lake(s3_lake, n_bootstrap=SMALL_BOOTSTRAP)
    assert path == f"{s3_lake}/fits/epoch-chinchilla.json" and _exists(path)
    spec = tomllib.loads((bundled.parent / "specs" / "example.toml").read_text())
    spec["law"] = {"fit": "epoch-chinchilla"}
    plan = make_plan(parse_spec(spec), lake=s3_lake)
    assert plan.status.value == "optimal"
    assert f"({path}, {result.n_runs} runs" in plan.law["description"]


@pytest.mark.flow
@pytest.mark.slow
def test_pipeline_on_s3_keeps_state_fits_and_lock_in_the_bucket(
    prefect_harness, s3_lake, tmp_path, bundled
):
    from mixplan.flows.pipeline import pipeline

    options = dict(
        inputs=[str(small_inputs(tmp_path, bundled))],
        lake=s3_lake,
        specs=str(small_specs(tmp_path)),
        reports=str(tmp_path / "reports"),
        n_bootstrap=SMALL_BOOTSTRAP,
        mixture=False,
    )
    first = pipeline(**options)
    assert first["problems"] == [] and first["plans"] == {"example": "optimal"}
    assert first["fits"] == [f"{s3_lake}/fits/epoch-chinchilla.json"]
    state = json.loads(read_text(f"{s3_lake}/pipeline/state.json"))
    assert state["fit_paths"] == first["fits"]
    assert not _exists(f"{s3_lake}/_mixplan.lock")  # released
    second = pipeline(**options)
    assert second["cached_fit"] is True and "0 new run(s)" in second["drift"]


def test_storage_options_alone_reach_tables_and_files(s3_endpoint, monkeypatch, bundled):
    """With MIXPLAN_STORAGE_OPTIONS and no AWS environment, the Delta tables (deltalake) and
    the small files (s3fs) both reach the server: one set of options for the whole lake."""
    import fsspec.config

    from mixplan.tasks.ingest import ingest_paths
    from mixplan.tasks.lake import read_runs

    # the options become fsspec's s3 defaults in this process: restore them afterwards
    monkeypatch.setitem(fsspec.config.conf, "s3", {})
    for key in (*AWS_KEYS, "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    lake = f"s3://{_bucket(s3_endpoint)}/lake"
    options = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    monkeypatch.setenv(OPTIONS_VARIABLE, json.dumps(options))
    ingest_paths([bundled / EPOCH], lake)
    assert read_runs(lake).height == 245
    write_text_atomic(f"{lake}/pipeline/state.json", '{"ok": true}')
    assert read_text(f"{lake}/pipeline/state.json") == '{"ok": true}'
    assert read_text(f"{lake}/pipeline/missing.json") is None


def test_s3_lock_excludes_a_second_run_until_released(s3_lake):
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lake_lock(s3_lake):
            held.set()
            release.wait(timeout=600)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(timeout=600)
        started = time.monotonic()
        with (
            pytest.raises(LakeBusyError, match="locked by another pipeline run"),
            lake_lock(s3_lake, timeout=0.5, poll=0.05),
        ):
            pass
        assert time.monotonic() - started >= 0.5
    finally:
        release.set()
        thread.join()
    with lake_lock(s3_lake, timeout=5) as url:
        assert url == f"{s3_lake}/_mixplan.lock" and _exists(url)
    assert not _exists(url)


def test_s3_lock_of_a_dead_holder_is_taken_over_once_its_lease_expired(s3_lake):
    url = f"{s3_lake}/_mixplan.lock"
    fs, path = filesystem(url)
    alive = {"owner": "crashed-host:1", "expires_at": time.time() + 3600}
    fs.pipe_file(path, json.dumps(alive).encode())
    with pytest.raises(LakeBusyError, match="crashed-host:1"), lake_lock(s3_lake, timeout=0.3):
        pass
    expired = {"owner": "crashed-host:1", "expires_at": time.time() - 1}
    fs.pipe_file(path, json.dumps(expired).encode())
    with lake_lock(s3_lake, timeout=5):
        fs.invalidate_cache()
        assert "crashed-host" not in fs.cat_file(path).decode()


def test_s3_lock_is_renewed_while_held(s3_lake):
    """A holder renews its lease, so a waiter never takes over a live run's lock."""
    lease = 0.6
    with lake_lock(s3_lake, lease=lease):
        time.sleep(3 * lease)  # several leases: without renewal it would have expired
        with pytest.raises(LakeBusyError), lake_lock(s3_lake, timeout=2 * lease, lease=lease):
            pass
