"""Malformed input: each case lands in quarantine with its reason, and the good rows still land.

Every test ingests a small hand-made file into a real Delta lake in tmp_path through the same
function the CLI uses (``mixplan.tasks.ingest.ingest_paths``), then reads the lake back.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from mixplan.planning.validation import REASONS, duplicate_split, split_by_checks
from mixplan.tasks.ingest import ingest_paths
from mixplan.tasks.lake import read_metrics, read_quarantine, read_runs, read_sources


def _line(run: str = "r1", step: int = 1, loss: float | str | None = 3.0, **extra) -> str:
    record = {"run_id": run, "experiment": "t", "params": 1e8, "step": step, "loss": loss}
    record.update(extra)
    return json.dumps({k: v for k, v in record.items() if v is not None or k == "loss"})


def _ingest(tmp_path: Path, name: str, text: str | bytes):
    path = tmp_path / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    lake = tmp_path / "lake"
    report = ingest_paths([path], lake)
    return report, lake, path


def _reasons(lake: Path) -> list[tuple[int | None, str | None, str]]:
    q = read_quarantine(lake)
    return list(zip(q["source_line"], q["field"], q["reason"], strict=True))


def test_malformed_json_line_is_quarantined_and_the_rest_lands(tmp_path):
    text = "\n".join([_line(step=1), "{not json", _line(step=3), "[1, 2]", _line(step=5)]) + "\n"
    report, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    assert _reasons(lake) == [(2, None, "malformed_json"), (4, None, "malformed_json")]
    metrics = read_metrics(lake)
    assert metrics["step"].to_list() == [1, 3, 5]
    assert metrics["source_line"].to_list() == [1, 3, 5]
    assert report.usable


def test_truncated_last_line(tmp_path):
    text = _line(step=1) + "\n" + _line(step=2) + "\n" + _line(step=3)[:25]
    _, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    assert _reasons(lake) == [(3, None, "truncated_line")]
    assert read_metrics(lake)["step"].to_list() == [1, 2]


def test_complete_last_line_without_newline_is_fine(tmp_path):
    _, lake, _ = _ingest(tmp_path, "a.jsonl", _line(step=1) + "\n" + _line(step=2))
    assert read_quarantine(lake).height == 0
    assert read_metrics(lake).height == 2


def test_missing_required_fields(tmp_path):
    no_loss = json.dumps({"run_id": "r1", "experiment": "t", "step": 2})
    no_run = json.dumps({"experiment": "t", "step": 3, "loss": 2.0})
    text = "\n".join([_line(step=1), no_loss, no_run, _line(step=4)]) + "\n"
    _, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    assert _reasons(lake) == [(2, "loss", "missing_field"), (3, "run_id", "missing_field")]
    assert read_metrics(lake)["step"].to_list() == [1, 4]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('"abc"', "non_numeric"),
        ("NaN", "non_finite"),
        ('"nan"', "non_finite"),
        ("Infinity", "non_finite"),
        ("-1.5", "negative_loss"),
    ],
)
def test_bad_loss_values(tmp_path, bad, reason):
    bad_line = f'{{"run_id": "r1", "experiment": "t", "step": 2, "loss": {bad}}}'
    text = "\n".join([_line(step=1), bad_line, _line(step=3)]) + "\n"
    _, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    assert _reasons(lake) == [(2, "loss", reason)]
    assert read_metrics(lake)["step"].to_list() == [1, 3]


def test_negative_unigram_normalised_loss_is_accepted(tmp_path):
    text = _line(step=1, loss=-2.5, loss_kind="unigram_normalized") + "\n"
    _, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    assert read_quarantine(lake).height == 0
    assert read_metrics(lake)["loss"].to_list() == [-2.5]


def test_non_positive_size_rejects_the_run_and_its_rows(tmp_path):
    bad_run = [_line(run="bad", step=s, params=0) for s in (1, 2)]
    text = "\n".join([_line(run="good", step=1), *bad_run, _line(run="good", step=2)]) + "\n"
    _, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    reasons = _reasons(lake)
    assert (2, "params", "non_positive_size") in reasons
    assert sorted(r for r in reasons if r[2] == "run_rejected") == [
        (2, "run_id", "run_rejected"),
        (3, "run_id", "run_rejected"),
    ]
    assert read_runs(lake)["run_id"].to_list() == ["t/good"]
    assert read_metrics(lake)["step"].to_list() == [1, 2]


def test_negative_size_in_a_table(tmp_path):
    text = (
        "name,params_N,tokens_D,unique_tokens_U,val_loss\na,1e9,2e10,1e10,2.5\nb,-5,2e10,1e10,2.6\n"
    )
    _, lake, _ = _ingest(tmp_path, "db.csv", text)
    assert (3, "params", "non_positive_size") in _reasons(lake)
    assert read_runs(lake)["run_id"].to_list() == ["datablations/a-r1"]
    assert read_metrics(lake)["loss"].to_list() == [2.5]


def test_mixture_not_summing_to_one(tmp_path):
    good = _line(run="ok", step=1, mixture={"web": 0.7, "code": 0.3})
    bad = _line(run="off", step=1, mixture={"web": 0.7, "code": 0.2})
    _, lake, _ = _ingest(tmp_path, "a.jsonl", good + "\n" + bad + "\n")
    assert _reasons(lake) == [(2, "mixture", "mixture_sum"), (2, "run_id", "run_rejected")]
    assert read_metrics(lake)["run_id"].to_list() == ["t/ok"]
    runs = read_runs(lake)
    assert runs["run_id"].to_list() == ["t/ok"]
    assert runs["mixture"][0].to_list() == [
        {"source": "web", "weight": 0.7, "unique_tokens": None},
        {"source": "code", "weight": 0.3, "unique_tokens": None},
    ]


def test_negative_mixture_weight(tmp_path):
    bad = _line(run="neg", step=1, mixture={"web": 1.2, "code": -0.2})
    _, lake, _ = _ingest(tmp_path, "a.jsonl", _line(run="ok") + "\n" + bad + "\n")
    assert _reasons(lake) == [(2, "mixture", "mixture_negative"), (2, "run_id", "run_rejected")]
    assert read_runs(lake)["run_id"].to_list() == ["t/ok"]
    assert read_metrics(lake)["run_id"].to_list() == ["t/ok"]


def test_duplicates_identical_collapse_conflicting_quarantined(tmp_path):
    lines = [
        _line(step=1, loss=3.0),
        _line(step=1, loss=3.0),  # identical duplicate: kept once
        _line(step=2, loss=2.5),
        _line(step=2, loss=2.7),  # conflicting: both quarantined
        _line(step=3, loss=2.4),
    ]
    _, lake, _ = _ingest(tmp_path, "a.jsonl", "\n".join(lines) + "\n")
    assert _reasons(lake) == [(3, "loss", "duplicate_conflict"), (4, "loss", "duplicate_conflict")]
    metrics = read_metrics(lake)
    assert metrics["step"].to_list() == [1, 3]
    assert metrics["source_line"].to_list() == [1, 5]


def test_duplicates_across_chunks_go_through_staging(tmp_path, monkeypatch):
    import mixplan.planning.readers.canonical as canonical

    monkeypatch.setattr(canonical, "CHUNK_BYTES", 200)  # several chunks for a small file
    lines = [_line(step=s, loss=4.0 - s / 10) for s in range(1, 9)]
    lines.append(_line(step=2, loss=9.9))  # conflicts with line 2, in a later chunk
    _, lake, path = _ingest(tmp_path, "a.jsonl", "\n".join(lines) + "\n")
    assert len(list(canonical.iter_jsonl(path))) > 2  # the conflict really spans chunks
    assert _reasons(lake) == [(2, "loss", "duplicate_conflict"), (9, "loss", "duplicate_conflict")]
    assert read_metrics(lake)["step"].to_list() == [1, 3, 4, 5, 6, 7, 8]


def test_unknown_columns_are_kept_in_tags_and_warned(tmp_path):
    text = _line(step=1, grad_norm=0.5, host="node7") + "\n" + _line(step=2, grad_norm=0.4) + "\n"
    report, lake, _ = _ingest(tmp_path, "a.jsonl", text)
    tags = json.loads(read_runs(lake)["tags"][0])
    assert tags["extra"] == {"grad_norm": 0.5, "host": "node7"}
    assert report.files[0].warnings == ["unknown columns kept in tags.extra: grad_norm, host"]
    assert json.loads(read_sources(lake)["warnings"][0]) == report.files[0].warnings
    assert read_quarantine(lake).height == 0
    assert read_metrics(lake).height == 2


@pytest.mark.parametrize(("name", "content"), [("empty.jsonl", ""), ("empty.csv", "")])
def test_empty_file(tmp_path, name, content):
    report, lake, _ = _ingest(tmp_path, name, content)
    assert _reasons(lake) == [(None, None, "empty_file")]
    assert not report.usable
    assert report.files[0].status == "rejected"


def test_header_only_csv_is_empty(tmp_path):
    report, lake, _ = _ingest(tmp_path, "e.csv", "run_id,loss\n")
    assert [r[2] for r in _reasons(lake)] == ["empty_file"]
    assert not report.usable


def test_unreadable_file(tmp_path):
    report, lake, _ = _ingest(tmp_path, "broken.parquet", b"PAR1 this is not parquet")
    assert [r[2] for r in _reasons(lake)] == ["unreadable_file"]
    assert not report.usable


def test_unknown_format(tmp_path):
    report, lake, _ = _ingest(tmp_path, "odd.csv", "a,b\n1,2\n")
    assert [r[2] for r in _reasons(lake)] == ["unknown_format"]
    assert not report.usable
    # the message names what was seen and the ways forward
    note = report.files[0].note
    assert "odd.csv" in note and "'a,b'" in note
    assert "--format" in note and "data/mappings" in note and "run_id" in note


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jsonl", b"", "empty_file"),
        ("broken.parquet", b"PAR1 this is not parquet", "unreadable_file"),
        ("odd.csv", b"a,b\n1,2\n", "unknown_format"),
    ],
)
def test_a_bad_file_does_not_stop_the_good_file_next_to_it(tmp_path, name, content, reason):
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / name).write_bytes(content)
    good = [_line(step=s) for s in (1, 2, 3)]
    (folder / "good.jsonl").write_text("\n".join(good) + "\n")
    lake = tmp_path / "lake"
    report = ingest_paths([folder], lake)
    quarantine = read_quarantine(lake)
    assert quarantine["reason"].to_list() == [reason]
    assert quarantine["source_file"].to_list() == [str(folder / name)]
    assert read_metrics(lake)["step"].to_list() == [1, 2, 3]  # the three lines written above
    assert report.usable
    assert {f.status for f in report.files} == {"rejected", "ingested"}


def test_bad_rows_of_a_mapped_dump(tmp_path, bundled):
    real = (bundled / "yegcjs__mixinglaws/5Mix/70M.txt").read_text().splitlines()[:3]
    lines = [real[0], "garbage without tabs\tx\t1.0", real[1].rsplit("\t", 1)[0] + "\tnope"]
    folder = tmp_path / "logs" / "5Mix"
    folder.mkdir(parents=True)
    (folder / "70M.txt").write_text("\n".join([*lines, real[2]]) + "\n")
    lake = tmp_path / "lake"
    ingest_paths([folder], lake)
    assert _reasons(lake) == [(2, "checkpoint", "unmatched_path"), (3, "loss", "non_numeric")]
    assert sorted(read_metrics(lake)["source_line"].to_list()) == [1, 4]


def test_canonical_csv_non_numeric(tmp_path):
    text = "run_id,experiment,step,loss\nr1,t,1,3.0\nr1,t,2,oops\nr1,t,3,2.5\n"
    _, lake, _ = _ingest(tmp_path, "c.csv", text)
    assert _reasons(lake) == [(3, "loss", "non_numeric")]
    assert read_metrics(lake)["step"].to_list() == [1, 3]


def test_every_reason_is_documented():
    used = {
        "malformed_json",
        "truncated_line",
        "missing_field",
        "non_numeric",
        "non_finite",
        "negative_loss",
        "non_positive_size",
        "mixture_sum",
        "mixture_negative",
        "duplicate_conflict",
        "run_rejected",
        "unmatched_path",
        "empty_file",
        "unreadable_file",
        "unknown_format",
    }
    assert used <= set(REASONS)


def test_split_by_checks_reports_the_first_failing_check():
    frame = pl.DataFrame({"x": [1, -1, None], "source_line": [1, 2, 3]})
    good, bad = split_by_checks(
        frame,
        [(pl.col("x").is_null(), "x", "missing_field"), (pl.col("x") < 0, "x", "negative_value")],
        source_file="f",
    )
    assert good["source_line"].to_list() == [1]
    assert list(zip(bad["source_line"], bad["reason"], strict=True)) == [
        (2, "negative_value"),
        (3, "missing_field"),
    ]


def test_duplicate_split_keeps_first_identical():
    frame = pl.DataFrame(
        {
            "run_id": ["a", "a", "a"],
            "step": [1, 1, 2],
            "split": "train",
            "domain": "all",
            "loss": [1.0, 1.0, 2.0],
            "source_line": [5, 6, 7],
        }
    )
    good, bad = duplicate_split(frame, source_file="f")
    assert good["source_line"].to_list() == [5, 7]
    assert bad.height == 0


def test_the_bundled_malformed_sample_matches_its_readme(tmp_path):
    # data/samples/README.md documents line by line what this file should produce
    sample = Path(__file__).resolve().parents[1] / "data" / "samples" / "malformed"
    before = (sample / "training_log.jsonl").read_bytes()
    lake = tmp_path / "lake"
    report = ingest_paths([sample], lake)
    assert _reasons(lake) == [
        (3, "loss", "non_finite"),
        (4, None, "malformed_json"),
        (5, "loss", "duplicate_conflict"),
        (6, "loss", "duplicate_conflict"),
        (7, "loss", "negative_loss"),
        (8, "loss", "missing_field"),
        (9, "mixture", "mixture_sum"),
        (9, "run_id", "run_rejected"),
        (11, None, "truncated_line"),
    ]
    metrics = read_metrics(lake)
    assert metrics["step"].to_list() == [100, 200, 800]
    assert json.loads(read_runs(lake)["tags"][0])["extra"] == {"grad_norm": 1.2}
    assert report.files[0].warnings == ["unknown columns kept in tags.extra: grad_norm"]
    assert (sample / "training_log.jsonl").read_bytes() == before
