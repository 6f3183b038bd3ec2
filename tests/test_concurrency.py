"""The lake lock: exclusive across processes, released when its holder is killed; atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mixplan.tasks.locking import LakeBusyError, lake_lock, read_text, write_text_atomic

HOLDER = textwrap.dedent(
    """
    import sys, time
    from mixplan.tasks.locking import lake_lock
    with lake_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _start_holder(lake) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lake)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def test_lock_excludes_another_process_and_is_freed_by_sigkill(tmp_path):
    lake = tmp_path / "lake"
    holder = _start_holder(lake)
    try:
        started = time.monotonic()
        with (
            pytest.raises(LakeBusyError, match="locked by another pipeline run"),
            lake_lock(lake, timeout=0.5, poll=0.05),
        ):
            pass
        assert time.monotonic() - started >= 0.5
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with lake_lock(lake, timeout=5, poll=0.05) as path:  # no stale lock after a kill
            assert path.exists()
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "state.json"
    assert read_text(target) is None
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert read_text(target) == "second"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temp files left


def test_atomic_write_leaves_a_file_others_can_read(tmp_path):
    """Reports are written atomically; the temporary file's owner-only mode must not stick:
    the file gets what an ordinary open() gives (0666 less the process's umask)."""
    from mixplan.tasks import storage

    write_text_atomic(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~storage._UMASK
    assert storage._UMASK & 0o044 or (tmp_path / "report.html").stat().st_mode & 0o044


# ---------------------------------------------------------------------------- whole pipelines


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _run_pipelines(tmp_path, bundled, names):
    from test_pipeline_support import (
        mixplan_command,
        pipeline_args,
        small_inputs,
        small_specs,
        subprocess_env,
    )

    logs = small_inputs(tmp_path, bundled)
    specs = small_specs(tmp_path)
    env = subprocess_env(PREFECT_API_URL=_api_url())  # share the session's test API server
    return [
        subprocess.Popen(
            mixplan_command("pipeline", *pipeline_args(tmp_path, logs, specs, name=name)),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for name in names
    ]


@pytest.mark.flow
@pytest.mark.slow
def test_two_pipelines_at_once_serialise_on_the_lake(prefect_harness, tmp_path, bundled):
    from test_pipeline_support import stop

    from mixplan.tasks.lake import final_losses, read_runs

    processes = _run_pipelines(tmp_path, bundled, ["-a", "-b"])
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=300)
            outputs.append(out)
            assert process.returncode == 0, out[-3000:]
    finally:
        for process in processes:
            stop(process)
    lake = tmp_path / "lake"
    runs = read_runs(lake)
    assert runs.height == runs["run_id"].n_unique() == 245  # each Epoch run once
    assert final_losses(lake).height == 245
    # the lock serialised them: whichever ran second found the first one's fits and reused them
    reused = ["fits reused" in out for out in outputs]
    assert sorted(reused) == [False, True], outputs
    for name in ("-a", "-b"):
        assert (tmp_path / f"reports{name}" / "report.html").exists()


@pytest.mark.flow
@pytest.mark.slow
def test_killed_run_leaves_a_readable_lake_and_the_next_run_completes(
    prefect_harness, tmp_path, bundled
):
    from test_pipeline_support import SMALL_BOOTSTRAP, small_specs, stop

    from mixplan.flows.pipeline import pipeline
    from mixplan.tasks.lake import read_runs

    (process,) = _run_pipelines(tmp_path, bundled, ["-killed"])
    lake = tmp_path / "lake"
    try:
        deadline = time.monotonic() + 600  # a ceiling for a loaded machine
        # wait for the first Delta commit of the runs table, then kill mid-run
        while not list((lake / "runs" / "_delta_log").glob("*.json")):
            assert process.poll() is None, process.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the pipeline never wrote the lake"
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop(process)
    assert process.returncode == -signal.SIGKILL
    read_runs(lake)  # readable after the kill (whatever had been committed)
    result = pipeline(
        inputs=[str(tmp_path / "logs")],
        lake=str(lake),
        specs=str(small_specs(tmp_path)),
        reports=str(tmp_path / "reports"),
        n_bootstrap=SMALL_BOOTSTRAP,
        mixture=False,
    )
    assert read_runs(lake).height == 245
    assert result["plans"] == {"example": "optimal"}
    assert (tmp_path / "reports" / "report.html").exists()


def test_state_and_lock_work_for_object_store_urls():
    """fsspec URLs without conditional writes (memory://): atomic state writes and a lock kept
    on this machine (s3:// lakes have their own lock object: test_s3.py)."""
    url = "memory://mixplan-test-lake"
    with lake_lock(url, timeout=5) as path:
        assert path.parent.name == "mixplan-locks"  # lock kept locally, keyed by the URL
        write_text_atomic(f"{url}/pipeline/state.json", '{"ok": true}')
    assert read_text(f"{url}/pipeline/state.json") == '{"ok": true}'
    assert read_text(f"{url}/pipeline/missing.json") is None
