"""EleutherAI lm-evaluation-harness results (``results_<date>.json``) as downstream metrics.

A results file scores one model on tasks: ``results -> <task> -> {"<metric>,<filter>": value,
"<metric>_stderr,<filter>": stderr, "alias": ...}``; ``config.model_args`` names the model
(``pretrained=EleutherAI/pythia-160m,revision=step100000``), newer versions also give
``model_name`` and ``model_num_parameters``.

How they land in the canonical schema (see ``mixplan.planning.schema``): one metrics row per
task and metric with ``split = "downstream"``, ``domain = <task>``, ``loss = <value>`` and
``loss_kind = <metric key>`` (e.g. ``"acc,none"``: the harness's metric and filter names, so
accuracy is never mistaken for a loss in nats). ``step`` is the checkpoint step when the
revision is ``step<N>`` (Pythia), else ``FINAL_STEP``. The standard errors go into the run's
``tags`` (``stderr``: ``{"<task>/<metric>": value}``). The run is ``lm-eval/<model>[@<revision>]``
with ``params = model_num_parameters`` when given.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import polars as pl

from mixplan.planning.readers.base import ReaderOutput, failed, merge_tags, single
from mixplan.planning.readers.documents import DocumentError, load_text, parse_document
from mixplan.planning.schema import FINAL_STEP
from mixplan.planning.validation import quarantine_frame

EXPERIMENT = "lm-eval"
NOT_METRICS = {"alias", "name", "sample_len", "sample_count", "num_samples"}
"""Numeric keys of a task's results that are not scores (bare-named versions)."""
DOWNSTREAM = "downstream"


def looks_like(document: dict) -> bool:
    """Whether a parsed JSON object is an lm-eval results file."""
    results = document.get("results")
    return isinstance(results, dict) and any(isinstance(v, dict) for v in results.values())


def _model_args(config: dict) -> dict[str, str]:
    args = config.get("model_args") or ""
    if isinstance(args, dict):
        return {str(k): str(v) for k, v in args.items()}
    pairs = (item.split("=", 1) for item in str(args).split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def _line_of(text: str, task: str) -> int:
    """The line of ``"<task>": {`` inside ``results`` (1 when not found)."""
    start = text.find('"results"')
    found = re.compile(rf'"{re.escape(task)}"\s*:\s*\{{').search(text, max(start, 0))
    return text.count("\n", 0, found.start()) + 1 if found else 1


def read_lm_eval(path: Path) -> ReaderOutput:
    """Read an lm-eval-harness results file: one run, one downstream row per task metric."""
    warnings: list[str] = []
    try:
        text = load_text(path, warnings)
        document = parse_document(text)
    except (OSError, EOFError, UnicodeDecodeError, DocumentError) as error:
        return failed(path, "unreadable_file", f"not an lm-eval results file: {error}")
    if not isinstance(document, dict) or not looks_like(document):
        return failed(path, "unreadable_file", "no results -> task -> metric object found")
    config = document.get("config") or {}
    args = _model_args(config)
    model = document.get("model_name") or args.get("pretrained") or config.get("model") or "model"
    revision = args.get("revision")
    name = f"{model}@{revision}" if revision and revision != "main" else str(model)
    step_match = re.fullmatch(r"step(\d+)", revision or "")
    step = int(step_match[1]) if step_match else FINAL_STEP
    run_id = f"{EXPERIMENT}/{name}"
    rows, stderr = [], {}
    for task, scores in document["results"].items():
        if not isinstance(scores, dict):
            continue
        line = _line_of(text, task)
        # lm-eval >= 0.4 names metrics "<metric>,<filter>"; other numbers ("sample_len") are
        # counts. Older versions have bare metric names.
        filtered = any("," in key for key in scores)
        for key, value in scores.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if (filtered and "," not in key) or key in NOT_METRICS:
                continue
            metric = key.split(",", 1)[0]
            if metric.endswith("_stderr"):
                if math.isfinite(value):
                    stderr[f"{task}/{key.replace('_stderr', '')}"] = value
                continue
            rows.append(
                {
                    "run_id": run_id,
                    "step": step,
                    "split": DOWNSTREAM,
                    "domain": task,
                    "loss": float(value),
                    "loss_kind": key,
                    "source_file": str(path),
                    "source_line": line,
                    "_record": f'"{task}": {{"{key}": {value}}}',
                }
            )
    if not rows:
        return failed(path, "empty_file", "the results have no numeric task metrics")
    params = document.get("model_num_parameters")
    tags = {"model": str(model), "revision": revision, "stderr": stderr}
    tags["assumptions"] = "downstream metrics: split=downstream, domain=task, loss_kind=metric"
    runs = pl.DataFrame(
        {
            "run_id": [run_id],
            "experiment": [EXPERIMENT],
            "params": [float(params) if isinstance(params, int | float) and params else None],
            "tags": [merge_tags(None, {k: v for k, v in tags.items() if v is not None})],
            "source_file": [str(path)],
            "source_line": [1],
        },
        schema_overrides={"params": pl.Float64},
    )
    nothing = quarantine_frame(str(path), lines=[], fields=[], reasons=[], records=[])
    return ReaderOutput(chunks=single(runs, pl.DataFrame(rows), nothing), warnings=warnings)
