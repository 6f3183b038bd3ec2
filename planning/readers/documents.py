"""Whole JSON documents: pretty-printed arrays of records and objects of arrays.

Exports are often one JSON document rather than one object per line:

* an array of records ``[{"run_id": ..., "step": 1, "loss": 3.2}, ...]`` (pretty-printed or
  not): each record keeps the 1-based line its ``{`` starts on, so quarantine rows point at it;
* an object of arrays ``{"step": [1, 2], "loss": [3.2, 3.1], "run_id": "r1"}``: equal-length
  arrays are columns, scalars are repeated on every row; the *line* of row ``i`` is then its
  1-based record number ``i + 1`` (a column layout has no line per record).

Both are read whole (documents are exports of one run or sweep, not streams), through
``rawfile`` (containers, BOMs, encodings, snapshot check).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from mixplan.planning.errors import RunLogError
from mixplan.planning.readers.rawfile import open_text
from mixplan.planning.validation import RECORD_CHARS, quarantine_frame

_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n"


def frame_from_objects(objects: list[dict]) -> pl.DataFrame:
    """Parsed JSON objects -> a frame (every row used for the types; nested values of mixed
    shapes are kept as JSON text)."""
    try:
        return pl.DataFrame(objects, infer_schema_length=None, strict=False)
    except Exception:  # mixed nested types: fall back to text for nested values
        flat = [
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in obj.items()}
            for obj in objects
        ]
        return pl.DataFrame(flat, infer_schema_length=None, strict=False)


class DocumentError(RunLogError):
    """The text is not one JSON document of records (the message says where and why)."""


def load_text(path: Path, warnings: list[str]) -> str:
    """The file's whole text (decoded; how, and any change while read, go to ``warnings``)."""
    text = open_text(path)
    data = text.read_all()
    warnings += [note for note in (text.note, text.check()) if note]
    return data.decode("utf-8")


def parse_document(text: str) -> Any:
    """The JSON value of ``text`` (``NaN``/``Infinity`` literals allowed)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DocumentError(
                f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _SPACE:
        index += 1
    return index


def array_items(text: str, start: int = 0) -> Iterator[tuple[int, Any, str]]:
    """``(line, value, raw text)`` of each element of the JSON array starting at ``start``.

    ``line`` is the 1-based line the element starts on. An element that does not parse is
    yielded once with ``value = None`` and the rest of the array is not read (JSON cannot be
    resynchronised).
    """
    index = _skip(text, start)
    if index >= len(text) or text[index] != "[":
        raise DocumentError("expected a JSON array")
    index += 1
    line, counted = 1, 0

    def line_of(position: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, position)
        counted = position
        return line

    while True:
        index = _skip(text, index)
        if index < len(text) and text[index] == "]":
            return
        try:
            value, end = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError:
            yield line_of(index), None, text[index : index + RECORD_CHARS]
            return
        yield line_of(index), value, text[index:end]
        index = _skip(text, end)
        if index < len(text) and text[index] == ",":
            index += 1
            continue
        if index < len(text) and text[index] == "]":
            return
        yield line_of(min(index, len(text))), None, text[index : index + RECORD_CHARS]
        return


def frame_of_records(
    items: Iterator[tuple[int, Any, str]], source_file: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Records (objects) with their lines -> a frame with ``source_line`` and ``_record``, plus
    quarantine rows (``malformed_json``) for elements that are not JSON objects."""
    objects, lines, records = [], [], []
    bad_lines, bad_records = [], []
    for line, value, raw in items:
        if isinstance(value, dict):
            objects.append(value)
            lines.append(line)
            records.append(raw)
        else:
            bad_lines.append(line)
            bad_records.append(raw)
    quarantine = quarantine_frame(
        source_file,
        lines=bad_lines,
        fields=[None] * len(bad_lines),
        reasons=["malformed_json"] * len(bad_lines),
        records=bad_records,
    )
    if not objects:
        return pl.DataFrame(), quarantine
    frame = frame_from_objects(objects).with_columns(
        pl.Series("source_line", lines, dtype=pl.Int64), pl.Series("_record", records)
    )
    return frame, quarantine


def frame_of_columns(document: dict) -> pl.DataFrame:
    """An object of equal-length arrays (scalars repeated) -> a frame; ``source_line`` is the
    1-based record number."""
    lengths = {len(v) for v in document.values() if isinstance(v, list)}
    if len(lengths) != 1:
        sizes = {k: len(v) for k, v in document.items() if isinstance(v, list)}
        raise DocumentError(
            "an object of arrays needs arrays of one length; found "
            + (", ".join(f"{k}: {n}" for k, n in sizes.items()) or "no arrays")
        )
    (height,) = lengths
    columns = {
        key: value if isinstance(value, list) else [value] * height
        for key, value in document.items()
    }
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    frame = frame_from_objects(rows) if rows else pl.DataFrame()
    return frame.with_columns(
        pl.Series("source_line", range(1, height + 1), dtype=pl.Int64),
        pl.Series("_record", [json.dumps(r, default=str)[:RECORD_CHARS] for r in rows]),
    )


def document_frames(path: Path, text: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A JSON document's records: an array of objects, or an object of arrays.

    Raises
    ------
    DocumentError
        When the text is neither (the message says what was found).
    """
    stripped = _skip(text, 0)
    if stripped < len(text) and text[stripped] == "[":
        return frame_of_records(array_items(text, stripped), str(path))
    document = parse_document(text)
    if isinstance(document, dict):
        listed = [v for v in document.values() if isinstance(v, list)]
        if len(listed) == 1 and listed[0] and all(isinstance(r, dict) for r in listed[0]):
            key = next(k for k, v in document.items() if isinstance(v, list))
            start = text.index("[", text.index(json.dumps(key)))
            return frame_of_records(array_items(text, start), str(path))
        no_rows = quarantine_frame(str(path), lines=[], fields=[], reasons=[], records=[])
        return frame_of_columns(document), no_rows
    raise DocumentError(f"the document is a JSON {type(document).__name__}, not records")
