"""TensorBoard event files (``events.out.tfevents.*``): the scalar losses a run logged.

Read with TensorBoard's own event reader (``tensorboard`` package, the ``tensorboard`` extra:
``pip install 'mixplan[tensorboard]'``); both scalar encodings are understood, ``simple_value``
(PyTorch's and tensorboardX's ``SummaryWriter``) and scalar tensors (TF2 summaries).

Mapping to the schema: the run is the folder holding the event file (TensorBoard's own notion
of a run), experiment ``tensorboard``. A scalar tag is a loss when one of its ``/``-separated
parts contains ``loss`` (``train/loss``, ``Loss/train``, ``eval/wikitext/loss``); its split is
``val`` when a part names evaluation (``eval``, ``val``, ``valid``, ``validation``, ``test``),
else ``train``; the remaining parts, if any, are the domain (else ``all``). A learning-rate tag
(``lr``, ``learning_rate``) gives the run's peak learning rate; other tags are listed in the
warnings. ``source_line`` is the event's 1-based record number in the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from mixplan.planning.readers.base import ReaderOutput, failed, merge_tags, single
from mixplan.planning.validation import quarantine_frame

EXPERIMENT = "tensorboard"
EVAL_PARTS = {"eval", "val", "valid", "validation", "test", "dev"}
LR_PARTS = {"lr", "learning_rate", "learning-rate"}
_EVENT_NAME = re.compile(r"events\.out\.tfevents\.")


def is_event_file(path: Path) -> bool:
    """Whether ``path`` is named like a TensorBoard event file."""
    return bool(_EVENT_NAME.match(path.name))


def classify(tag: str) -> tuple[str, str] | None:
    """``(split, domain)`` of a loss tag, or None for a tag that is not a loss."""
    parts = [p for p in tag.split("/") if p]
    lowered = [p.lower() for p in parts]
    loss = [i for i, p in enumerate(lowered) if "loss" in p]
    if not loss:
        return None
    split, rest = "train", []
    for i, part in enumerate(lowered):
        words = set(re.split(r"[_\-.]", part))
        if words & EVAL_PARTS:
            split = "val"
        elif i not in loss and part != "train":
            rest.append(parts[i])
    return split, "/".join(rest) or "all"


def _scalar(value) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
        from tensorboard.util import tensor_util

        array = tensor_util.make_ndarray(value.tensor)
        return float(array.reshape(-1)[0]) if array.size == 1 else None
    return None


def read_tensorboard(path: Path) -> ReaderOutput:
    """Read a TensorBoard event file: one run, one metrics row per logged loss."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    except ImportError:
        return failed(
            path,
            "unreadable_file",
            "reading TensorBoard event files needs the tensorboard package: "
            "pip install 'mixplan[tensorboard]'",
        )
    run_id = f"{EXPERIMENT}/{path.resolve().parent.name or 'run'}"
    rows, learning_rates, other = [], [], set()
    try:
        for number, event in enumerate(EventFileLoader(str(path)).Load(), start=1):
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                scalar = _scalar(value)
                if scalar is None:
                    continue
                kind = classify(value.tag)
                if kind is None:
                    if {p.lower() for p in value.tag.split("/")} & LR_PARTS:
                        learning_rates.append(scalar)
                    else:
                        other.add(value.tag)
                    continue
                rows.append(
                    {
                        "run_id": run_id,
                        "step": event.step,
                        "split": kind[0],
                        "domain": kind[1],
                        "loss": scalar,
                        "loss_kind": "nats",
                        "source_file": str(path),
                        "source_line": number,
                        "_record": f"step {event.step} {value.tag} = {scalar!r}",
                    }
                )
    except Exception as error:  # the reader raises its own types for a corrupt record
        if not rows:
            return failed(path, "unreadable_file", f"{type(error).__name__}: {error}")
        other.add(f"(stopped at a corrupt record: {error})")
    warnings = [f"{path.name}: scalar tags not read as losses: {', '.join(sorted(other))}"] * bool(
        other
    )
    if not rows:
        return failed(path, "empty_file", "the event file has no scalar loss tags")
    runs = pl.DataFrame(
        {
            "run_id": [run_id],
            "experiment": [EXPERIMENT],
            "learning_rate": [max(learning_rates) if learning_rates else None],
            "tags": [merge_tags(None, {"assumptions": "run = the event file's folder"})],
            "source_file": [str(path)],
            "source_line": [rows[0]["source_line"]],
        },
        schema_overrides={"learning_rate": pl.Float64},
    )
    nothing = quarantine_frame(str(path), lines=[], fields=[], reasons=[], records=[])
    return ReaderOutput(chunks=single(runs, pl.DataFrame(rows), nothing), warnings=warnings)
