"""The lake lock: exclusive across processes, released when its holder is killed; atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tasks.locking import LakeBusyError, lake_lock, read_text, write_text_atomic

HOLDER = textwrap.dedent(
    """
    import sys, time
    from tasks.locking import lake_lock
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
