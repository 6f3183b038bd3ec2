"""The lake: every bundled file lands with the right counts, re-ingest is a no-op, changed files
replace their rows, raw files are never touched, and the read helpers answer as documented.

Expected counts come from the raw files (csv / json / line counts), not from mixplan.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import threading
from pathlib import Path

import polars as pl
import pytest
import xxhash

from mixplan.tasks.ingest import ingest_paths
from mixplan.tasks.lake import (
    final_losses,
    lake_summary,
    lake_version,
    read_metrics,
    read_quarantine,
    read_runs,
    read_sources,
)


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _expected_counts(root: Path) -> dict[str, tuple[int, int]]:
    """experiment -> (runs, metric rows), counted from the raw files."""
    counts: dict[str, tuple[int, int]] = {}
    epoch = _csv_rows(root / "epoch-research__analyzing-chinchilla/svg_extracted_data.csv")
    counts["epoch-chinchilla"] = (len(epoch), len(epoch))
    blations = _csv_rows(root / "huggingface__datablations/parametric_fit_runs.csv")
    counts["datablations"] = (len(blations), len(blations))
    sardana = _csv_rows(root / "nikhilsardana__beyond-chinchilla/trainingresults.csv")
    counts["sardana"] = (len(sardana), len(sardana))
    steplaw = _csv_rows(root / "step-law__steplaw/dense_lr_bs_loss.csv")
    counts["steplaw"] = (len(steplaw), len(steplaw))
    tao = _csv_rows(root / "sail-sg__scaling-with-vocab/exp_data.csv")
    tao_runs = {(r["Non_vocab_parameters"], r["vocab_size"]) for r in tao}
    counts["tao-vocab"] = (len(tao_runs), len(tao))
    for prefix in ("train", "test"):
        mixtures = _csv_rows(root / f"sail-sg__regmix/{prefix}_mixture_1m.csv")
        losses = _csv_rows(root / f"sail-sg__regmix/{prefix}_pile_loss_1m.csv")
        domains = len(losses[0]) - 1
        counts[f"regmix-1m-{prefix}"] = (len(mixtures), len(losses) * domains)
    gem = root / "mcleish7__gemstone-scaling-laws"
    hot = [
        json.loads(x) for x in (gem / "wandb_df_for_fitting_hot.jsonl").read_text().split("\n") if x
    ]
    cool = [
        json.loads(x)
        for x in (gem / "wandb_df_for_fitting_cool_end.jsonl").read_text().split("\n")
        if x
    ]
    counts["gemstones-hot"] = (len({r["run_name"] for r in hot}), len(hot))
    counts["gemstones-cooldown"] = (len(cool), len(cool))
    lines, checkpoints = 0, set()
    for size in ("70M", "160M", "305M", "410M"):
        for line in (root / f"yegcjs__mixinglaws/5Mix/{size}.txt").read_text().splitlines():
            if line.strip():
                lines += 1
                checkpoints.add(line.split("\t")[0].rstrip("/").rsplit("/", 1)[0])
    counts["mixinglaws-5mix"] = (len(checkpoints), lines)
    return counts


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def public_lake(bundled, tmp_path_factory):
    """The bundled real data ingested once into a fresh lake (raw hashes taken around it)."""
    lake = tmp_path_factory.mktemp("lake") / "lake"
    before = _tree_hashes(bundled)
    report = ingest_paths([bundled], lake)
    after = _tree_hashes(bundled)
    return lake, report, before, after


def test_every_bundled_file_ingests_with_the_raw_counts(public_lake, bundled):
    lake, report, _, _ = public_lake
    expected = _expected_counts(bundled)
    summary = lake_summary(lake)
    got = {name: (v["runs"], v["metric_rows"]) for name, v in summary["experiments"].items()}
    assert got == expected
    assert summary["quarantined_rows"] == 0
    assert report.usable
    statuses = {Path(f.path).name: f.status for f in report.files}
    assert statuses["proportions.txt"] == "ignored"
    assert sum(s == "ingested" for s in statuses.values()) == 13
    assert read_sources(lake).height == 13


def test_raw_files_are_never_modified(public_lake):
    _, _, before, after = public_lake
    assert before == after
    assert len(before) >= 15


def test_ingesting_twice_changes_nothing(public_lake, bundled):
    lake, _, _, _ = public_lake
    versions, summary = lake_version(lake), lake_summary(lake)
    again = ingest_paths([bundled], lake)
    assert {f.status for f in again.files} == {"unchanged", "ignored"}
    assert lake_version(lake) == versions
    assert lake_summary(lake) == summary


def test_final_losses_take_the_last_step(public_lake, bundled):
    lake, _, _, _ = public_lake
    path = bundled / "mcleish7__gemstone-scaling-laws/wandb_df_for_fitting_hot.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines() if x]
    last = max(
        (r for r in records if r["run_name"] == "PyGemma-1024x28_pretrain"), key=lambda r: r["step"]
    )
    final = final_losses(lake, experiment="gemstones-hot")
    assert final.height == len({r["run_name"] for r in records})
    row = final.filter(pl.col("run_id") == "gemstones-hot/PyGemma-1024x28_pretrain").row(
        0, named=True
    )
    assert row["loss"] == last["final_loss"]
    assert row["step"] == last["step"]
    assert row["params"] == last["params_active_precise"]


def test_final_losses_per_domain_and_filters(public_lake):
    lake, _, _, _ = public_lake
    final = final_losses(lake, experiment="regmix-1m-test")
    assert final.height == 256 * 13
    one = final_losses(lake, experiment="regmix-1m-test", domain="arxiv", split="val")
    assert one.height == 256
    assert one["run_id"].n_unique() == 256
    assert {"mixture", "params", "tokens", "loss", "domain"} <= set(one.columns)
    epoch = final_losses(lake, experiment="epoch-chinchilla")
    assert epoch.height == 245 and (epoch["step"] == -1).all()


def test_read_helpers_filter(public_lake):
    lake, _, _, _ = public_lake
    runs = read_runs(lake, experiment="steplaw")
    assert runs.height == 1911 and set(runs["experiment"]) == {"steplaw"}
    metrics = read_metrics(lake, experiment="mixinglaws-5mix", domain="Github")
    assert metrics.height > 0 and set(metrics["domain"]) == {"Github"}
    assert read_metrics(lake, split="nothing").height == 0


def test_missing_lake_raises_a_clear_error(tmp_path):
    from mixplan.planning.errors import RunLogError

    with pytest.raises(RunLogError, match="mixplan ingest"):
        read_runs(tmp_path / "nowhere")


def _small_log(path: Path, losses: list[float], run: str = "r1") -> None:
    lines = [
        json.dumps({"run_id": run, "experiment": "t", "params": 1e8, "step": i + 1, "loss": x})
        for i, x in enumerate(losses)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_changed_file_replaces_its_rows_and_versions_allow_time_travel(tmp_path):
    log = tmp_path / "logs" / "a.jsonl"
    log.parent.mkdir()
    other = tmp_path / "logs" / "b.jsonl"
    _small_log(log, [3.0, 2.5, 2.2])
    _small_log(other, [4.0], run="r2")
    lake = tmp_path / "lake"
    ingest_paths([log.parent], lake)
    first = lake_version(lake)
    _small_log(log, [3.1, 2.4])  # the run was re-logged: fewer steps, new values
    report = ingest_paths([log.parent], lake)
    assert {Path(f.path).name: f.status for f in report.files} == {
        "a.jsonl": "ingested",
        "b.jsonl": "unchanged",
    }
    metrics = read_metrics(lake)
    assert metrics.filter(pl.col("run_id") == "t/r1")["loss"].to_list() == [3.1, 2.4]
    assert metrics.filter(pl.col("run_id") == "t/r2")["loss"].to_list() == [4.0]
    old = read_metrics(lake, version=first["metrics"])
    assert old.filter(pl.col("run_id") == "t/r1")["loss"].to_list() == [3.0, 2.5, 2.2]
    content = log.read_bytes()
    digest = xxhash.xxh3_128(content + len(content).to_bytes(8, "little")).hexdigest()
    sources = read_sources(lake)
    recorded = sources.filter(pl.col("source_file") == str(log.resolve()))["sha256"].item()
    assert recorded == f"xxh3_128:{digest}"


def test_a_lake_that_recorded_sha256_hashes_is_still_idempotent(tmp_path):
    """Lakes written before recorded bare sha256 digests: unchanged files stay unchanged."""
    from deltalake import write_deltalake

    folder = tmp_path / "logs"
    folder.mkdir()
    a, b = folder / "a.jsonl", folder / "b.jsonl"
    _small_log(a, [3.0, 2.5])
    _small_log(b, [4.0], run="r2")
    lake = tmp_path / "lake"
    ingest_paths([folder], lake)
    old = read_sources(lake).with_columns(  # as an older mixplan recorded them
        pl.col("source_file")
        .map_elements(lambda f: hashlib.sha256(Path(f).read_bytes()).hexdigest(), pl.String)
        .alias("sha256")
    )
    write_deltalake(str(lake / "sources"), old.to_arrow(), mode="overwrite")
    _small_log(b, [4.0, 3.5], run="r2")
    report = ingest_paths([folder], lake)
    assert {Path(f.path).name: f.status for f in report.files} == {
        "a.jsonl": "unchanged",
        "b.jsonl": "ingested",
    }
    assert read_metrics(lake).height == 4
    again = ingest_paths([folder], lake)
    assert {f.status for f in again.files} == {"unchanged"}


def _data_files(table: Path) -> set[str]:
    return {p.name for p in table.glob("*.parquet")}


def test_a_streamed_file_replaces_its_data_files_in_one_commit(tmp_path, monkeypatch):
    """The metrics of a re-ingested file are new data files committed together with the
    removal of its old ones; nothing else is touched, and a stream that fails leaves no file."""
    from deltalake import DeltaTable

    from mixplan.tasks import lake as lake_module
    from mixplan.tasks.lake import write_streamed

    folder = tmp_path / "logs"
    folder.mkdir()
    a, b = folder / "a.jsonl", folder / "b.jsonl"
    _small_log(a, [3.0, 2.5, 2.2])
    _small_log(b, [4.0], run="r2")
    lake = tmp_path / "lake"
    ingest_paths([folder], lake)
    table = DeltaTable(str(lake / "metrics"))
    before = table.version()
    files_before = set(table.file_uris())
    _small_log(a, [3.1, 2.4])
    ingest_paths([a], lake)
    table = DeltaTable(str(lake / "metrics"))
    assert table.version() == before + 1  # one commit: old data files out, new ones in
    kept = files_before & set(table.file_uris())
    assert len(kept) == 1 and len(table.file_uris()) == 2  # b's data file is untouched
    assert read_metrics(lake)["loss"].to_list() == [3.1, 2.4, 4.0]
    on_disk = _data_files(lake / "metrics")

    def failing():
        yield read_metrics(lake).head(1)  # written as a data file (one row per file here)
        raise RuntimeError("the stream failed")

    monkeypatch.setattr(lake_module, "DATA_FILE_ROWS", 1)
    with pytest.raises(RuntimeError, match="the stream failed"):
        write_streamed(lake, metrics=failing(), finish=lambda: None, source_file=str(a.resolve()))
    assert _data_files(lake / "metrics") == on_disk
    assert DeltaTable(str(lake / "metrics")).version() == before + 1


def test_a_changed_file_whose_rows_were_merged_is_rewritten_row_by_row(tmp_path):
    """After a MERGE, a data file may mix two files' rows: replacing one file's rows then
    needs the row-level rewrite, and the other file's rows stay."""
    folder = tmp_path / "logs"
    folder.mkdir()
    part1, part2 = folder / "part1.jsonl", folder / "part2.jsonl"
    _small_log(part1, [3.0, 2.5, 2.2])
    lake = tmp_path / "lake"
    ingest_paths([part1], lake)
    part2.write_text(  # re-logs step 3: the MERGE rewrites part1's data file with it
        json.dumps({"run_id": "r1", "experiment": "t", "step": 3, "loss": 2.21})
        + "\n"
        + json.dumps({"run_id": "r1", "experiment": "t", "step": 4, "loss": 2.0})
        + "\n"
    )
    ingest_paths([part2], lake)
    _small_log(part1, [3.1, 2.6], run="r9")  # now another run: streamed, no MERGE
    ingest_paths([part1], lake)
    metrics = read_metrics(lake)
    assert metrics.select("run_id", "step", "loss").rows() == [
        ("t/r1", 3, 2.21),
        ("t/r1", 4, 2.0),
        ("t/r9", 1, 3.1),
        ("t/r9", 2, 2.6),
    ]


def test_a_run_logged_across_two_files_is_merged_on_keys(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    part1 = folder / "part1.jsonl"
    _small_log(part1, [3.0, 2.5, 2.2])
    lake = tmp_path / "lake"
    ingest_paths([part1], lake)
    part2 = folder / "part2.jsonl"  # resumed run: re-logs step 3, continues to step 4
    part2.write_text(
        json.dumps({"run_id": "r1", "experiment": "t", "step": 3, "loss": 2.21})
        + "\n"
        + json.dumps({"run_id": "r1", "experiment": "t", "step": 4, "loss": 2.0})
        + "\n"
    )
    ingest_paths([part2], lake)
    metrics = read_metrics(lake)
    assert metrics["step"].to_list() == [1, 2, 3, 4]
    assert metrics["loss"].to_list() == [3.0, 2.5, 2.21, 2.0]
    assert read_runs(lake).height == 1
    assert final_losses(lake)["loss"].to_list() == [2.0]


def test_two_concurrent_writers_on_different_files(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    for i in range(4):
        _small_log(folder / f"w{i}.jsonl", [3.0, 2.0], run=f"r{i}")
    lake = tmp_path / "lake"
    ingest_paths([folder / "w0.jsonl"], lake)  # create the tables first
    errors: list[BaseException] = []

    def writer(names: list[str]) -> None:
        try:
            ingest_paths([folder / n for n in names], lake)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=writer, args=(["w1.jsonl", "w2.jsonl"],)),
        threading.Thread(target=writer, args=(["w3.jsonl"],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert read_runs(lake)["run_id"].to_list() == [f"t/r{i}" for i in range(4)]
    assert read_metrics(lake).height == 8
    assert read_sources(lake).height == 4


def test_quarantine_survives_reingest_of_a_fixed_file(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "a.jsonl"
    log.write_text('{"run_id": "r1", "step": 1, "loss": 3.0}\n{broken\n')
    lake = tmp_path / "lake"
    ingest_paths([folder], lake)
    assert read_quarantine(lake)["reason"].to_list() == ["malformed_json"]
    log.write_text(
        '{"run_id": "r1", "step": 1, "loss": 3.0}\n{"run_id": "r1", "step": 2, "loss": 2.9}\n'
    )
    ingest_paths([folder], lake)
    assert read_quarantine(lake).height == 0
    assert read_metrics(lake).height == 2


def test_lake_on_a_copy_without_the_shared_folder(tmp_path, bundled):
    # a user's fresh clone has only data/public: ingesting a copy works the same
    copy = tmp_path / "public"
    shutil.copytree(bundled / "sail-sg__regmix", copy / "sail-sg__regmix")
    ingest_paths([copy], tmp_path / "lake")
    assert lake_summary(tmp_path / "lake")["experiments"]["regmix-1m-train"]["runs"] == 512


def test_data_file_statistics_bound_every_column_and_name_the_source_exactly(tmp_path):
    """Footer statistics are bounds (a long string's are a truncated prefix and a raised
    prefix); ``source_file`` is exact, so a file's own data files are recognised."""
    from mixplan.planning.schema import METRICS_SCHEMA, conform
    from mixplan.tasks.lake import file_statistics

    source = "/" + "very-long-folder-name/" * 6 + "run.jsonl"  # > 64 bytes
    frame = conform(
        pl.DataFrame(
            {
                "run_id": ["x/" + "é" * 70, "x/a", "x/" + "z" * 90],
                "step": [3, -1, 7],
                "loss": [2.5, 1.5, 9.0],
                "split": ["train", "val", "train"],
                "source_file": [source] * 3,
                "source_line": [1, 2, 3],
            }
        ),
        METRICS_SCHEMA,
    )
    path = tmp_path / "part.parquet"
    frame.write_parquet(path, row_group_size=1)  # bounds combine over row groups
    stats = json.loads(file_statistics(frame, path))
    assert stats["numRecords"] == 3
    assert stats["nullCount"]["tokens_seen"] == 3 and stats["nullCount"]["loss"] == 0
    assert stats["minValues"]["source_file"] == stats["maxValues"]["source_file"] == source
    for name in ("run_id", "step", "loss", "split", "source_line"):
        assert stats["minValues"][name] <= frame[name].min(), name
        assert stats["maxValues"][name] >= frame[name].max(), name
    assert stats["minValues"]["step"] == -1 and stats["maxValues"]["loss"] == 9.0
    assert "tokens_seen" not in stats["minValues"]  # no values: no bounds


def _xxh3(path: Path) -> str:
    content = path.read_bytes()
    return "xxh3_128:" + xxhash.xxh3_128(content + len(content).to_bytes(8, "little")).hexdigest()


def test_a_new_log_is_hashed_from_the_reads_that_parse_it(tmp_path, monkeypatch):
    """No second read for a new JSONL file: settle leaves its hash to the reader, whose hash of
    the bytes it parsed (plain, and through a container) is what a separate read gives."""
    import gzip

    from mixplan.planning.readers import canonical
    from mixplan.tasks.ingest import discover, settle

    monkeypatch.setattr(canonical, "CHUNK_BYTES", 4096)  # many blocks per file
    folder = tmp_path / "logs"
    folder.mkdir()
    plain, packed = folder / "a.jsonl", folder / "b.jsonl.gz"
    _small_log(plain, [3.0 - i / 1000 for i in range(400)])
    _small_log(folder / "c.jsonl", [4.0 - i / 1000 for i in range(300)], run="r3")
    packed.write_bytes(gzip.compress((folder / "c.jsonl").read_bytes()))
    (folder / "c.jsonl").unlink()
    lake = tmp_path / "lake"
    plans = [settle(p, {}, hash_from_read=True) for p in discover([folder], lake, hash_now=False)]
    assert [(p.action, p.hash_from_read, p.content_hash) for p in plans] == [
        ("ingest", True, ""),
        ("ingest", True, ""),
    ]
    ingest_paths([folder], lake)
    recorded = dict(read_sources(lake).select("source_file", "sha256").iter_rows())
    assert recorded == {str(plain.resolve()): _xxh3(plain), str(packed.resolve()): _xxh3(packed)}
    again = ingest_paths([folder], lake)
    assert {f.status for f in again.files} == {"unchanged"}


def test_a_log_the_reader_could_not_hash_is_hashed_only_if_unchanged_since_planned(tmp_path):
    """An empty log is never parsed, so its hash is taken after the ingest: only while the file
    is still what settle saw (a log written meanwhile is read again next time)."""
    import os

    from mixplan.planning.readers import StreamedSource
    from mixplan.tasks.ingest import discover, recorded_hash, settle

    log = tmp_path / "a.jsonl"
    log.write_bytes(b"")
    (plan,) = discover([log], tmp_path / "lake", hash_now=False)
    plan = settle(plan, {}, hash_from_read=True)
    assert (plan.action, plan.hash_from_read, plan.content_hash) == ("ingest", True, "")
    result = StreamedSource(source_file=str(log), format="jsonl", metrics=iter(()))
    assert recorded_hash(plan, result) == _xxh3(log)
    _small_log(log, [3.0])
    os.utime(log, ns=(plan.mtime_ns + 10**9, plan.mtime_ns + 10**9))
    assert recorded_hash(plan, result) == ""
