"""The tool-written formats: HF Trainer state, TensorBoard events, W&B chart CSV, lm-eval results.

The samples in data/samples/ were written by the tools themselves (see its README); expected
values are computed here from the raw files with the standard library (json, csv) or, for
TensorBoard, with TensorBoard's own EventAccumulator (a different API from the reader's).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

from mixplan.planning.readers import detect_format, parse_source, validate_source
from mixplan.planning.readers.tensorboard import classify
from mixplan.tasks.ingest import ingest_paths
from mixplan.tasks.lake import read_metrics, read_quarantine, read_runs

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
TRAINER_STATE = SAMPLES / "hf_trainer" / "bigram-zen" / "trainer_state.json"
EVENTS = next((SAMPLES / "tensorboard" / "bigram-zen").glob("events.out.tfevents.*"))
WANDB_CSV = SAMPLES / "wandb" / "wandb_export.csv"
LM_EVAL = SAMPLES / "lm_eval" / "results.json"


def _read(path: Path, tmp_path: Path):
    parsed = parse_source(path, staging_dir=tmp_path)
    validated = validate_source(parsed, staging_dir=tmp_path)
    return validated, pl.from_arrow(validated.metrics().read_all())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (TRAINER_STATE, "hf-trainer"),
        (EVENTS, "tensorboard"),
        (WANDB_CSV, "wandb-csv"),
        (LM_EVAL, "lm-eval"),
    ],
)
def test_tool_written_samples_are_detected(path, expected):
    assert detect_format(path) == expected


def test_hf_trainer_state(tmp_path):
    state = json.loads(TRAINER_STATE.read_text())
    history = state["log_history"]
    validated, metrics = _read(TRAINER_STATE, tmp_path)
    assert validated.quarantine.height == 0
    train = metrics.filter(pl.col("split") == "train").sort("step")
    assert train.select("step", "loss", "learning_rate").rows() == [
        (e["step"], e["loss"], e["learning_rate"]) for e in history if "loss" in e
    ]
    val = metrics.filter(pl.col("split") == "val").sort("step")
    assert val.select("step", "loss").rows() == [
        (e["step"], e["eval_loss"]) for e in history if "eval_loss" in e
    ]
    run = validated.runs.row(0, named=True)
    assert run["run_id"] == "hf-trainer/bigram-zen"  # the output folder
    closing = next(e for e in history if "train_runtime" in e)
    assert run["flops"] == closing["total_flos"]
    assert run["flop_convention"] == "6N_nonemb_D"
    # each row points at the line its log_history entry starts on
    lines = TRAINER_STATE.read_text().splitlines()
    first = train.row(0, named=True)
    assert '"loss"' in "".join(lines[first["source_line"] - 1 : first["source_line"] + 6])


def test_hf_trainer_checkpoint_copy_and_step_less_entries(tmp_path):
    checkpoint = tmp_path / "my-run" / "checkpoint-500"
    checkpoint.mkdir(parents=True)
    state = {
        "global_step": 500,
        "log_history": [
            {"epoch": 0.5, "loss": 2.5, "learning_rate": 1e-4, "step": 500},
            {"epoch": 0.5, "eval_loss": 2.7, "eval_wiki_loss": 2.9, "step": 500},
            {"epoch": 0.5, "predict_loss": 2.6, "predict_runtime": 3.0},  # no step
        ],
    }
    path = checkpoint / "trainer_state.json"
    path.write_text(json.dumps(state, indent=2))
    validated, metrics = _read(path, tmp_path / "stage")
    assert validated.runs["run_id"].to_list() == ["hf-trainer/my-run"]
    assert sorted(metrics.select("split", "domain", "step", "loss").rows()) == [
        ("train", "all", 500, 2.5),
        ("val", "all", 500, 2.7),
        ("val", "predict", 500, 2.6),
        ("val", "wiki", 500, 2.9),
    ]


def test_tensorboard_events_written_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(EVENTS), size_guidance={"scalars": 0})
    accumulator.Reload()
    validated, metrics = _read(EVENTS, tmp_path)
    assert validated.quarantine.height == 0
    for tag, split in (("train/loss", "train"), ("eval/loss", "val")):
        expected = [(e.step, pytest.approx(e.value)) for e in accumulator.Scalars(tag)]
        got = metrics.filter(pl.col("split") == split).sort("step").select("step", "loss")
        assert got.rows() == expected
    learning_rates = [e.value for e in accumulator.Scalars("train/learning_rate")]
    assert validated.runs["learning_rate"][0] == pytest.approx(max(learning_rates))
    assert validated.runs["run_id"].to_list() == ["tensorboard/bigram-zen"]


def test_tensorboard_tensor_scalars_and_tag_layouts(tmp_path):
    """TF2-style scalar tensors and the tag layouts people use, written by TensorBoard's writer."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    folder = tmp_path / "run-a"
    writer = EventFileWriter(str(folder))
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
    )
    for step in (10, 20):
        values = [
            summary_pb2.Summary.Value(
                tag="Loss/train",
                tensor=tensor_util.make_tensor_proto(3.0 - step / 100),
                metadata=metadata,
            ),
            summary_pb2.Summary.Value(tag="eval/wikitext/loss", simple_value=3.5 - step / 100),
            summary_pb2.Summary.Value(tag="accuracy", simple_value=0.5),
        ]
        writer.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values)))
    writer.close()
    path = next(folder.glob("events.out.tfevents.*"))
    lake = tmp_path / "lake"
    report = ingest_paths([tmp_path], lake)  # found by name while discovering the folder
    assert report.files[0].format == "tensorboard"
    assert read_metrics(lake).select("split", "domain", "step", "loss").rows() == [
        ("train", "all", 10, pytest.approx(2.9)),
        ("train", "all", 20, pytest.approx(2.8)),
        ("val", "wikitext", 10, pytest.approx(3.4)),
        ("val", "wikitext", 20, pytest.approx(3.3)),
    ]
    assert "accuracy" in report.files[0].warnings[0]
    assert read_runs(lake)["run_id"].to_list() == ["tensorboard/run-a"]
    assert path.exists()


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("loss", ("train", "all")),
        ("train/loss", ("train", "all")),
        ("Loss/test", ("val", "all")),
        ("eval/wikitext/loss", ("val", "wikitext")),
        ("val_loss", ("val", "all")),
        ("learning_rate", None),
    ],
)
def test_tensorboard_tag_classification(tag, expected):
    assert classify(tag) == expected


def test_wandb_chart_csv_export(tmp_path):
    with open(WANDB_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    validated, metrics = _read(WANDB_CSV, tmp_path)
    assert validated.quarantine.height == 0
    for run in ("bigram-zen-lr0.5", "bigram-zen-lr2"):
        got = metrics.filter(pl.col("run_id") == f"wandb/{run}")
        train = got.filter(pl.col("split") == "train").sort("step").select("step", "loss")
        assert train.rows() == [(int(r["Step"]), float(r[f"{run} - train/loss"])) for r in rows]
        val = got.filter(pl.col("split") == "val").sort("step").select("step", "loss")
        assert val.rows() == [
            (int(r["Step"]), float(r[f"{run} - eval/loss"]))
            for r in rows
            if r[f"{run} - eval/loss"]
        ]
    assert metrics.height == len(rows) * 2 + sum(
        1 for r in rows for k, v in r.items() if k.endswith("eval/loss") and v
    )
    assert any("train/learning_rate" in w for w in validated.warnings)


def test_wandb_csv_bad_cells_are_quarantined_with_their_column(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        '"Step","a - loss","a - loss__MIN","a - loss__MAX","b - val_loss"\n'
        '"1","3.0","2.9","3.1",""\n'
        '"2","NaN?","2.8","3.0","3.3"\n'
        '"x","2.5","","","3.2"\n'
    )
    validated, metrics = _read(path, tmp_path / "stage")
    assert metrics.select("run_id", "step", "split", "loss").rows() == [
        ("wandb/a", 1, "train", 3.0),
        ("wandb/b", 2, "val", 3.3),
    ]
    assert set(validated.quarantine.select("source_line", "field", "reason").rows()) == {
        (3, "a - loss", "non_numeric"),
        (4, "Step", "non_numeric"),
    }


def test_lm_eval_results_land_as_downstream_metrics(tmp_path):
    document = json.loads(LM_EVAL.read_text())
    lake = tmp_path / "lake"
    ingest_paths([LM_EVAL], lake)
    metrics = read_metrics(lake)
    expected = {
        (task, key, value)
        for task, scores in document["results"].items()
        for key, value in scores.items()
        if "," in key and "_stderr" not in key
    }
    assert set(metrics.select("domain", "loss_kind", "loss").rows()) == expected
    assert set(metrics["split"]) == {"downstream"}
    run = read_runs(lake).row(0, named=True)
    assert run["run_id"] == f"lm-eval/{document['model_name']}"
    stderr = json.loads(run["tags"])["stderr"]
    assert stderr == {
        "zen_cloze/acc,none": document["results"]["zen_cloze"]["acc_stderr,none"],
        "zen_cloze/acc_norm,none": 0.0,
    }
    assert read_quarantine(lake).height == 0


def test_lm_eval_pythia_revision_gives_the_step(tmp_path):
    path = tmp_path / "results_2024-01-01.json"
    path.write_text(
        json.dumps(
            {
                "results": {
                    "lambada_openai": {
                        "perplexity,none": 29.4,
                        "acc,none": 0.43,
                        "acc_stderr,none": 0.006,
                        "alias": "lambada_openai",
                    },
                    "gsm8k": {
                        "exact_match,strict-match": 0.0,
                        "exact_match_stderr,strict-match": "N/A",
                    },
                },
                "config": {
                    "model": "hf",
                    "model_args": "pretrained=EleutherAI/pythia-160m,revision=step100000",
                },
                "model_num_parameters": 162322944,
            },
            indent=2,
        )
    )
    validated, metrics = _read(path, tmp_path / "stage")
    assert validated.runs.select("run_id", "params").rows() == [
        ("lm-eval/EleutherAI/pythia-160m@step100000", 162322944.0)
    ]
    assert sorted(metrics.select("domain", "loss_kind", "step", "loss").rows()) == [
        ("gsm8k", "exact_match,strict-match", 100000, 0.0),
        ("lambada_openai", "acc,none", 100000, 0.43),
        ("lambada_openai", "perplexity,none", 100000, 29.4),
    ]
