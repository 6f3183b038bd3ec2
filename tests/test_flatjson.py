"""The flat-JSONL scanner (planning/readers/flatjson.py) against polars' own JSON reader.

Every block the scanner accepts must give exactly the frame ``pl.read_ndjson`` gives (names,
order, types, values, nulls); every block outside the flat shape must be declined (None) so
that polars reads it. Decimals are also checked against Python's correctly rounded ``float``.
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixplan.planning.readers.canonical import iter_jsonl
from mixplan.planning.readers.flatjson import FlatScanner, available, parse_flat

KEYS = ["run_id", "step", "loss", "lr", "split", "a_longer_key_name", "flag"]


def _rows(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def _equal(frame: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same columns, types and values; the order of the columns is first-seen in ``frame``
    (polars orders keys first seen after the first line by a hash)."""
    assert dict(frame.schema) == dict(expected.schema)
    assert frame.equals(expected.select(frame.columns), null_equal=True)


def _same_as_polars(block: bytes) -> pl.DataFrame:
    frame = parse_flat(block, _rows(block))
    assert frame is not None, block[:200]
    _equal(frame, pl.read_ndjson(block, infer_schema_length=None))
    return frame


texts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).filter(
    lambda t: "\\" not in t and '"' not in t
)
numbers = st.one_of(
    st.integers(min_value=-(10**17), max_value=10**17),
    st.floats(allow_nan=False, allow_infinity=False),
)
per_key = {
    "run_id": st.one_of(texts, st.none()),
    "step": st.one_of(st.integers(min_value=-(10**17), max_value=10**17), st.none()),
    "loss": st.one_of(numbers, st.none()),
    "lr": st.one_of(st.floats(min_value=1e-9, max_value=1.0), st.none()),
    "split": st.sampled_from(["train", "val", "a text longer than twelve"]),
    "a_longer_key_name": st.one_of(numbers, st.none()),
    "flag": st.one_of(st.booleans(), st.none()),
}
records = st.fixed_dictionaries({}, optional=per_key)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(records, min_size=1, max_size=40),
    st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :  ")]),
    st.booleans(),
)
def test_accepted_blocks_match_polars(objects, separators, terminated):
    lines = [json.dumps(o, separators=separators) for o in objects]
    block = ("\n".join(lines) + ("\n" if terminated else "")).encode()
    frame = parse_flat(block, _rows(block))
    assert frame is not None  # every key holds one kind of value (and nulls): flat
    _equal(frame, pl.read_ndjson(block, infer_schema_length=None))


edits = st.tuples(
    st.sampled_from(["cut", "replace", "insert"]),
    st.integers(0, 2**16),  # where (modulo the block's length)
    st.sampled_from(b'{}[]":,.-+eE0159 \tnultrf\\\n\x00\xff'),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(records, min_size=1, max_size=12), st.lists(edits, min_size=1, max_size=3))
def test_cut_or_damaged_blocks_are_declined_or_read_as_polars_reads_them(objects, damage):
    """Any bytes at all (a block cut mid-token, a byte overwritten, a stray byte inserted): the
    scanner never reads out of bounds (the C loop would crash the test process), and what it
    accepts is what polars reads."""
    block = bytearray(("\n".join(json.dumps(o) for o in objects) + "\n").encode())
    for edit, where, byte in damage:
        at = where % (len(block) + 1)
        if edit == "cut":
            del block[at:]
        elif edit == "replace" and at < len(block):
            block[at] = byte
        else:
            block.insert(at, byte)
    frame = parse_flat(bytes(block), _rows(bytes(block)))
    if frame is None:
        return
    expected = pl.read_ndjson(bytes(block), infer_schema_length=None)
    _equal(frame, expected)


@pytest.mark.parametrize(
    "text",
    [
        "0.1", "3.9100000000000001", "0.30000000000000004", "2.2250738585072014e-308",
        "5e-324", "1.7976931348623157e308", "123456789012345678.5", "9007199254740993.0",
        "1e22", "1e23", "-0.0", "0e400", "4.35", "1E-7", "6e-07", "0.000000000000000000000001234",
    ],
)  # fmt: skip
def test_decimals_are_correctly_rounded(text):
    block = f'{{"x": {text}, "n": 1}}\n{{"x": 1.5, "n": 2}}\n'.encode()
    frame = parse_flat(block, 2)
    assert frame is not None
    assert frame.schema == pl.read_ndjson(block).schema
    value = frame["x"][0]
    assert value == float(text) and math.copysign(1, value) == math.copysign(1, float(text))


def test_columns_keep_polars_types_and_nulls():
    block = (
        b'{"a": 1, "b": "x", "c": 1.5, "d": null}\n'
        b'{"c": 2, "e": true, "a": null}\n'
        b'{"b": "a text longer than twelve bytes", "e": false}\n'
        b"{}\n"
    )
    frame = _same_as_polars(block)
    assert frame.schema == pl.Schema(
        {"a": pl.Int64, "b": pl.String, "c": pl.Float64, "d": pl.Null, "e": pl.Boolean}
    )


@pytest.mark.parametrize(
    "line",
    [
        '{"a": "esc\\"aped"}',  # an escape
        '{"a": "caf\u00e9"}',  # non-ASCII text
        '{"a": {"b": 1}}',  # nested object
        '{"a": [1, 2]}',  # array
        '{"a": NaN}',  # not JSON
        '{"a": 01}',  # leading zero
        '{"a": 1.}',  # no digits after the point
        '{"a": 12345678901234567890}',  # past int64
        '{"a": 1, "a": 2}',  # a key twice
        '{"a": 1',  # unclosed
        '{"a": tru}',  # bad literal
        '{"a": nulx}',  # bad literal, full length
        '{"a": falsy}',
        "[1, 2]",  # not an object
        "",  # a blank line
        '{"": 1, "column_0": 2}',  # the key "" (polars' frames would rename it)
        '{"a": 1e400}',  # past the largest double: polars' reader rejects it
        "{" + ", ".join(f'"k{i}": {i}' for i in range(5000)) + "}",  # past MAX_KEYS
    ],
    ids=lambda line: line[:40],
)
def test_other_shapes_are_declined(line):
    block = f'{{"a": 1}}\n{line}\n{{"a": 2}}\n'.encode()
    assert parse_flat(block, _rows(block)) is None


def test_mixed_kinds_in_a_column_are_declined():
    for second in ('"text"', "true"):
        block = f'{{"a": 1}}\n{{"a": {second}}}\n'.encode()
        assert parse_flat(block, 2) is None


def test_more_keys_than_the_first_line_and_buffer_reuse():
    scanner = FlatScanner()
    wide = "\n".join(
        json.dumps({"k0": 1} if i == 0 else {f"k{j}": i * j for j in range(40)}) for i in range(50)
    )
    narrow = "\n".join(json.dumps({"x": i, "y": "t"}) for i in range(5))
    for text in (wide, narrow, wide):
        block = (text + "\n").encode()
        frame = scanner.parse(block, _rows(block))
        assert frame is not None
        _equal(frame, pl.read_ndjson(block, infer_schema_length=None))


def test_a_jsonl_file_reads_the_same_through_either_parser(tmp_path, monkeypatch):
    """The canonical reader gives the same frames when every block goes to polars."""
    log = tmp_path / "log.jsonl"
    rows = [
        {"run_id": "r1", "step": s, "loss": 3.0 + 1 / s, "split": "train", "params": 1.2e8}
        for s in range(1, 2001)
    ]
    rows += [{"run_id": "r1", "step": 9, "loss": 2.5, "split": "val", "seed": 7}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    fast = pl.concat([frame for frame, _ in iter_jsonl(log, chunk_bytes=16_384)], how="diagonal")
    monkeypatch.setattr(FlatScanner, "parse", lambda self, data, rows: None)
    slow = pl.concat([frame for frame, _ in iter_jsonl(log, chunk_bytes=16_384)], how="diagonal")
    assert fast.height == slow.height == len(rows)
    for name in slow.columns:
        assert fast[name].cast(pl.String).equals(slow[name].cast(pl.String), null_equal=True)


def test_the_compiled_scanner_is_built_with_the_package():
    """The C loops are an optional extension: an install that lost them still reads every log
    (through polars), so only this test notices that the fast path is gone."""
    assert available()
    assert parse_flat(b'{"a": 1}\n', 1) is not None


def test_the_ingest_path_does_not_start_numba():
    """numba's start-up (~0.5 s of CPU holding the GIL) is paid only by the planner."""
    import subprocess
    import sys

    probe = (
        "import sys; from mixplan.planning.readers.flatjson import parse_flat; "
        "import mixplan.tasks.ingest; parse_flat(b'{\"a\": 1.5}\\n', 1); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numba'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
