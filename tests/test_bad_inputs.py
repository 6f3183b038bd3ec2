"""Logs as real jobs and tools write them (issue 12's cases), through the real ingest.

Each test writes the raw file with the standard library, ingests it into a real Delta lake with
``ingest_paths`` (what ``mixplan ingest`` runs) and asserts that every good row landed and every
bad one is in the quarantine with its file, line, field and reason.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
import zstandard

from mixplan.planning.readers import canonical
from mixplan.tasks.ingest import ingest_paths
from mixplan.tasks.lake import read_metrics, read_quarantine, read_runs, read_sources


def _lines(n: int, *, run: str = "r1", start: int = 1, **extra) -> list[str]:
    return [
        json.dumps({"run_id": run, "step": s, "loss": 4.0 - s * 1e-4, **extra})
        for s in range(start, start + n)
    ]


def _ingest(tmp_path: Path, *paths: Path):
    lake = tmp_path / "lake"
    report = ingest_paths(list(paths), lake)
    return lake, report


def _quarantine(lake: Path) -> set[tuple]:
    frame = read_quarantine(lake)
    return set(frame.select("source_file", "source_line", "field", "reason").rows())


def _warnings(lake: Path, path: Path) -> list[str]:
    sources = read_sources(lake).filter(pl.col("source_file") == str(path))
    return json.loads(sources["warnings"][0])


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-32-be", codecs.BOM_UTF32_BE),
    ],
)
def test_a_byte_order_mark_is_stripped_in_every_text_format(tmp_path, bundled, encoding, bom):
    logs = tmp_path / "logs"
    (logs / "5Mix").mkdir(parents=True)
    jsonl = logs / "bom.jsonl"
    jsonl.write_bytes(bom + ("\n".join(_lines(220)) + "\n").encode(encoding))
    table = logs / "bom.csv"
    rows = "run_id,step,loss\n" + "".join(f"élan,{s},{3 - s / 100}\n" for s in range(1, 20))
    table.write_bytes(bom + rows.encode(encoding))
    tsv = logs / "bom.tsv"
    tsv.write_bytes(bom + "run_id\tstep\tloss\nt\t1\t3.0\nt\t2\t2.9\n".encode(encoding))
    dump = logs / "5Mix" / "70M.txt"  # a tab-separated dump read through a declared mapping
    original = (bundled / "yegcjs__mixinglaws/5Mix/70M.txt").read_text()
    dump.write_bytes(bom + original.encode(encoding))
    lake, _ = _ingest(tmp_path, logs)
    metrics = read_metrics(lake)
    assert metrics.filter(pl.col("run_id") == "bom/r1").height == 220
    assert metrics.filter(pl.col("run_id") == "bom/élan").height == 19
    assert metrics.filter(pl.col("run_id") == "bom/t")["loss"].to_list() == [3.0, 2.9]
    assert metrics.filter(pl.col("run_id").str.starts_with("mixinglaws")).height == sum(
        1 for line in original.splitlines() if line.strip()
    )
    assert _quarantine(lake) == set()
    assert any("byte-order mark" in w for w in _warnings(lake, jsonl))


def test_utf16_without_a_bom_is_recognised(tmp_path):
    log = tmp_path / "plain16.jsonl"
    log.write_bytes(("\n".join(_lines(30)) + "\n").encode("utf-16-le"))
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake).height == 30
    assert "decoded as utf-16-le" in " ".join(_warnings(lake, log))


def test_a_windows_1252_csv_lands_whole_with_the_encoding_recorded(tmp_path):
    log = tmp_path / "sweep.csv"
    names = ["modèle-125m" if i == 7 else f"run-{i}" for i in range(19)]
    text = "run_id,params,loss\n" + "".join(
        f"{n},1.25e8,{3 + i / 10}\n" for i, n in enumerate(names)
    )
    log.write_bytes(text.encode("cp1252"))
    lake, report = _ingest(tmp_path, log)
    runs = read_runs(lake)
    assert runs.height == 19 and read_metrics(lake).height == 19
    assert "sweep/modèle-125m" in runs["run_id"].to_list()  # decoded, not mangled
    assert _quarantine(lake) == set()
    warning = " ".join(_warnings(lake, log))
    assert "decoded as cp1252 (not valid UTF-8)" in warning
    assert report.files[0].warnings == _warnings(lake, log)


def test_bytes_undefined_in_windows_1252_fall_back_to_latin_1(tmp_path):
    log = tmp_path / "legacy.jsonl"
    log.write_bytes(b'{"run_id": "caf\xe9\x81", "step": 1, "loss": 3.0}\n')
    lake, _ = _ingest(tmp_path, log)
    assert read_runs(lake)["run_id"].to_list() == ["legacy/caf\xe9\x81"]
    assert "decoded as latin-1" in " ".join(_warnings(lake, log))


def test_a_legacy_line_in_the_middle_of_a_utf8_file_is_decoded_and_stated(tmp_path, monkeypatch):
    monkeypatch.setattr(canonical, "CHUNK_BYTES", 4096)
    log = tmp_path / "mixed.jsonl"
    lines = [line.encode() for line in _lines(400)]
    lines[300] = b'{"run_id": "r1", "step": 301, "loss": 3.9, "note": "d\xe9j\xe0 vu"}'
    log.write_bytes(b"\n".join(lines) + b"\n")
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake).height == 400
    assert "1 line(s) not valid UTF-8, decoded as cp1252 (lines 301)" in " ".join(
        _warnings(lake, log)
    )


# --------------------------------------------------------------------------- containers


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", gzip.compress),
        (".zst", zstandard.ZstdCompressor().compress),
        (".bz2", bz2.compress),
    ],
)
def test_compressed_logs_are_read_through(tmp_path, suffix, compress):
    jsonl = tmp_path / f"train.jsonl{suffix}"
    jsonl.write_bytes(compress(("\n".join(_lines(500)) + "\n{oops\n").encode()))
    table = tmp_path / f"table.csv{suffix}"
    table.write_bytes(compress(b"run_id,step,loss\na,1,3.0\na,2,nope\n"))
    lake, _ = _ingest(tmp_path, tmp_path)
    metrics = read_metrics(lake)
    assert metrics.filter(pl.col("run_id") == "train/r1").height == 500  # inner name: train
    assert metrics.filter(pl.col("run_id") == "table/a").height == 1
    assert _quarantine(lake) == {
        (str(jsonl), 501, None, "malformed_json"),
        (str(table), 3, "loss", "non_numeric"),
    }


def test_a_compressed_parquet_log(tmp_path):
    raw = tmp_path / "raw.parquet"
    pl.DataFrame({"run_id": ["a", "a"], "step": [1, 2], "loss": ["3.0", "x"]}).write_parquet(raw)
    log = tmp_path / "typed.parquet.gz"
    log.write_bytes(gzip.compress(raw.read_bytes()))
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake).select("run_id", "step").rows() == [("typed/a", 1)]
    assert _quarantine(lake) == {(str(log), 2, "loss", "non_numeric")}


def test_a_cut_container_keeps_what_was_read_and_says_so(tmp_path):
    log = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(("\n".join(_lines(5000)) + "\n").encode())
    log.write_bytes(whole[: len(whole) // 2])
    lake, _ = _ingest(tmp_path, log)
    assert 0 < read_metrics(lake).height < 5000
    assert "container ended early" in " ".join(_warnings(lake, log))


# --------------------------------------------------------------------------- documents


def test_a_pretty_printed_json_array_export(tmp_path):
    log = tmp_path / "export.json"
    records = [{"run_id": "a", "step": s, "loss": 3.0 - s / 10} for s in range(1, 6)]
    records[2]["loss"] = "n/a"
    text = json.dumps([*records, 42], indent=2)
    log.write_text(text)
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake)["step"].to_list() == [1, 2, 4, 5]
    lines = text.splitlines()
    third = [i for i, line in enumerate(lines, 1) if line.strip() == "{"][2]
    last = next(i for i, line in enumerate(lines, 1) if line.strip() == "42")
    assert _quarantine(lake) == {
        (str(log), third, "loss", "non_numeric"),
        (str(log), last, None, "malformed_json"),
    }


def test_a_json_object_of_arrays(tmp_path):
    log = tmp_path / "columns.json"
    log.write_text(json.dumps({"run_id": "r", "step": [1, 2, 3], "loss": [3.1, 2.9, -1]}))
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake)["loss"].to_list() == [3.1, 2.9]
    assert _quarantine(lake) == {(str(log), 3, "loss", "negative_loss")}


def test_a_json_document_that_is_neither_is_explained(tmp_path):
    log = tmp_path / "weird.json"
    log.write_text(json.dumps({"step": [1, 2], "loss": [3.0]}))
    lake, report = _ingest(tmp_path, log)
    assert _quarantine(lake) == {(str(log), None, None, "unreadable_file")}
    assert "arrays of one length" in report.files[0].note


def test_mixture_weights_given_as_json_strings(tmp_path):
    log = tmp_path / "mix.jsonl"
    rows = [
        {"run_id": "a", "step": 1, "loss": 3.0, "mixture": json.dumps({"web": 0.7, "code": 0.3})},
        {"run_id": "b", "step": 1, "loss": 3.0, "mixture": {"web": 0.5, "code": 0.5}},
        {"run_id": "c", "step": 1, "loss": 3.0, "mixture": "{web: 0.7"},
        {"run_id": "d", "step": 1, "loss": 3.0, "mixture": json.dumps({"web": "most"})},
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    lake, _ = _ingest(tmp_path, log)
    runs = read_runs(lake)
    assert runs["run_id"].to_list() == ["mix/a", "mix/b"]
    assert runs["mixture"].to_list()[0] == [
        {"source": "web", "weight": 0.7, "unique_tokens": None},
        {"source": "code", "weight": 0.3, "unique_tokens": None},
    ]
    assert _quarantine(lake) == {
        (str(log), 3, "mixture", "bad_value"),
        (str(log), 4, "mixture", "bad_value"),
    }


# --------------------------------------------------------------------------- types and ranges


def test_parquet_with_wrongly_typed_columns_quarantines_per_row(tmp_path):
    log = tmp_path / "typed.parquet"
    pl.DataFrame(
        {
            "run_id": ["a", "a", "b", "c", "c"],
            "step": ["1", "2", "1", "one", "2"],
            "loss": [3.0, 2.9, 3.1, 3.2, 3.3],
            "params": ["1.2e8", "1.2e8", "lots", "3e8", "3e8"],
        }
    ).write_parquet(log)
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake).select("run_id", "step").rows() == [
        ("typed/a", 1),
        ("typed/a", 2),
        ("typed/c", 2),
    ]
    assert read_runs(lake).select("run_id", "params").rows() == [
        ("typed/a", 1.2e8),
        ("typed/c", 3e8),
    ]
    assert _quarantine(lake) == {
        (str(log), 3, "params", "non_numeric"),
        (str(log), 4, "step", "non_numeric"),
    }


def test_out_of_range_numbers_are_quarantined_not_nulled(tmp_path):
    log = tmp_path / "ranges.jsonl"
    rows = [
        '{"run_id": "ok", "step": 1, "loss": 3.0, "params": 1.2e8}',
        '{"run_id": "ok", "step": 18446744073709551616, "loss": 2.9}',  # 2^64
        '{"run_id": "huge", "step": 1, "loss": 3.0, "params": 1e30}',
        '{"run_id": "ok", "step": 3, "loss": 2.8, "tokens_seen": 1e40}',
        '{"run_id": "wide", "step": 1, "loss": 3.0, "width": 1180591620717411303424}',
        '{"run_id": "ok", "step": "99999999999999999999999", "loss": 2.7}',
    ]
    log.write_text("\n".join(rows) + "\n")
    lake, _ = _ingest(tmp_path, log)
    assert read_metrics(lake).select("run_id", "step").rows() == [("ranges/ok", 1)]
    assert _quarantine(lake) == {
        (str(log), 2, "step", "out_of_range"),
        (str(log), 3, "params", "out_of_range"),
        (str(log), 3, "run_id", "run_rejected"),
        (str(log), 4, "tokens_seen", "out_of_range"),
        (str(log), 5, "width", "out_of_range"),
        (str(log), 6, "step", "out_of_range"),
    }


def test_a_run_in_two_files_with_different_facts_is_a_conflict(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(_lines(3, run="sweep/r1", experiment="sweep", params=1.2e8)) + "\n")
    second.write_text(
        "\n".join(
            json.dumps(
                {"run_id": "r1", "experiment": "sweep", "step": s, "loss": 9.0, "params": 3.5e8}
            )
            for s in (1, 2)
        )
        + "\n"
    )
    lake, _ = _ingest(tmp_path, first, second)
    runs = read_runs(lake)
    assert runs.select("run_id", "params", "source_file").rows() == [
        ("sweep/r1", 1.2e8, str(first))
    ]
    assert read_metrics(lake)["loss"].to_list() == pytest.approx(
        [4.0 - s * 1e-4 for s in (1, 2, 3)]
    )
    quarantine = read_quarantine(lake)
    assert _quarantine(lake) == {
        (str(second), 1, "params", "conflict"),
        (str(second), 1, "run_id", "run_rejected"),
        (str(second), 2, "run_id", "run_rejected"),
    }
    message = quarantine.filter(pl.col("reason") == "conflict")["record"][0]
    assert str(first) in message and "350000000" in message and "120000000" in message


def test_the_same_run_with_the_same_facts_in_two_files_is_merged(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(_lines(3, run="sweep/r1", experiment="sweep", params=1.2e8)) + "\n")
    second.write_text(
        "\n".join(_lines(3, run="sweep/r1", start=4, experiment="sweep", params=1.2e8)) + "\n"
    )
    lake, _ = _ingest(tmp_path, first, second)
    assert read_runs(lake).height == 1
    assert read_metrics(lake)["step"].to_list() == [1, 2, 3, 4, 5, 6]
    assert _quarantine(lake) == set()


# --------------------------------------------------------------------------- schema drift


def test_keys_first_seen_after_line_10000_are_kept(tmp_path):
    log = tmp_path / "late.jsonl"
    lines = _lines(12_000)
    lines += [
        json.dumps({"run_id": "r1", "step": s, "loss": 3.5, "split": "val", "domain": "web"})
        for s in range(12_001, 12_011)
    ]
    lines.append(json.dumps({"run_id": "r1", "step": 1, "loss": 3.4, "split": "held-out"}))
    log.write_text("\n".join(lines) + "\n")
    lake, _ = _ingest(tmp_path, log)
    metrics = read_metrics(lake)
    counts = dict(
        metrics.group_by("split", "domain")
        .len()
        .select(pl.concat_str("split", "domain", separator="/"), "len")
        .rows()
    )
    assert counts == {"train/all": 12_000, "val/web": 10}
    assert _quarantine(lake) == {(str(log), 12_011, "split", "bad_value")}


def test_keys_first_seen_after_a_chunk_boundary_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(canonical, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(canonical, "INFER_BYTES", 16 * 1024)
    log = tmp_path / "drift.jsonl"
    lines = _lines(3000)
    lines += [
        json.dumps({"run_id": "r1", "step": s, "loss": 3.5, "split": "val", "seed": 7})
        for s in range(3001, 3004)
    ]
    log.write_text("\n".join(lines) + "\n")
    assert log.stat().st_size > 2 * canonical.CHUNK_BYTES
    lake, _ = _ingest(tmp_path, log)
    metrics = read_metrics(lake)
    assert metrics.filter(pl.col("split") == "val").height == 3
    assert metrics.height == 3003
    assert json.loads(read_runs(lake)["tags"][0])["extra"] == {"seed": 7}  # kept, as logged


# --------------------------------------------------------------------------- snapshots

_TRUNCATING_READER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from mixplan.planning.readers import canonical
    from mixplan.tasks.ingest import ingest_paths

    log, lake, ready, go = map(Path, sys.argv[1:5])
    canonical.CHUNK_BYTES = 256 * 1024
    parse_block = canonical._parse_block

    def first_block_then_wait(*args, **kwargs):
        result = parse_block(*args, **kwargs)
        if not ready.exists():
            ready.with_suffix(".tmp").write_text("read one chunk")
            os.replace(ready.with_suffix(".tmp"), ready)  # the test truncates the log now
            while not go.exists():
                time.sleep(0.01)
        return result

    canonical._parse_block = first_block_then_wait
    report = ingest_paths([log], lake)
    print(report.files[0].metric_rows)
    """
)


def test_a_log_truncated_while_it_is_read_does_not_kill_the_ingest(tmp_path):
    """logrotate's copytruncate cuts the file to 0 bytes while mixplan reads it: a memory map
    would SIGBUS (exit -7); the snapshot reader stops at the new end and says so."""
    log, lake = tmp_path / "live.jsonl", tmp_path / "lake"
    ready, go = tmp_path / "ready", tmp_path / "go"
    log.write_text("\n".join(_lines(40_000)) + "\n")
    size = log.stat().st_size
    process = subprocess.Popen(
        [sys.executable, "-c", _TRUNCATING_READER, str(log), str(lake), str(ready), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not ready.exists() and process.poll() is None:
        time.sleep(0.01)
    os.truncate(log, 0)  # another process (this one) truncates the open file
    go.touch()
    out, err = process.communicate()
    assert process.returncode == 0, err
    kept = int(out.strip().splitlines()[-1])
    assert 0 < kept < 40_000  # the rows of the bytes read before the cut
    assert read_metrics(lake).height == kept
    sources = read_sources(lake)
    assert sources["sha256"][0] == ""  # not recorded: the next ingest reads it again
    warning = " ".join(json.loads(sources["warnings"][0]))
    assert f"its size went from {size:,} to 0 bytes" in warning
    assert log.stat().st_size == 0  # the raw file is only ever read


def test_raw_files_are_never_modified_and_reingest_is_idempotent(tmp_path):
    for name, data in {
        "a.jsonl.gz": gzip.compress(("\n".join(_lines(50)) + "\n").encode()),
        "b.csv": "run_id,step,loss\nmodèle,1,3.0\n".encode("cp1252"),
        "c.json": json.dumps([{"run_id": "c", "step": 1, "loss": 3.0}], indent=1).encode(),
    }.items():
        (tmp_path / name).write_bytes(data)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    lake, _ = _ingest(tmp_path, *sorted(tmp_path.iterdir()))
    first = (read_runs(lake), read_metrics(lake), read_quarantine(lake).height)
    _, again = _ingest(tmp_path, *sorted(p for p in tmp_path.iterdir() if p.is_file()))
    assert {f.status for f in again.files} == {"unchanged"}
    assert read_runs(lake).equals(first[0]) and read_metrics(lake).equals(first[1])
    after = {
        p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.is_file()
    }
    assert after == before
