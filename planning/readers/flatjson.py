"""Flat JSONL records read by a compiled scanner: the fast path of canonical JSONL logs.

Training jobs log one flat object per line (``{"run_id": "r1", "step": 100, "loss": 3.91}``):
plain keys, numbers, short ASCII text. polars parses such a block with a general JSON parser
(simd-json into a value tree, then into columns). ``parse_flat`` reads only the flat shape, in
one pass of C (``_flatscan.c``, built with the package) that writes each value straight into
its column (~1.5x less CPU per block). It was numba-compiled first: numba's start-up (its
import, typing registries, scipy.linalg) cost every ingest process ~0.5 s of CPU that held the
GIL, a third of a 1 GB ingest's fixed cost; loaded in a background thread it still slowed the
first files as much.

It never changes what a log means: on every block it accepts, it gives the frame polars'
``read_ndjson`` gives (column order, types and values; tests/test_flatjson.py compares the two
on generated blocks), and it *declines* (returns None, the caller then parses the block with
polars, as before) whenever the block holds anything else:

* a line that is blank or is not one object, a nested object or array, a string with an escape
  (``\\``), a control character or a non-ASCII byte, a key twice on one line, the key ``""``;
* a number outside JSON's grammar (``NaN``, ``01``, ``1.``), an integer of 19 or more digits, a
  decimal past the largest double (``1e400``);
* a column mixing text, numbers and booleans, more than ``MAX_KEYS`` distinct keys, or more
  (line, key) slots than ``MAX_SLOTS``.

Numbers are read exactly: an integer is its value; a decimal with at most 16 significant
digits and a power of ten within 10^±22 is one correctly rounded IEEE operation on exact
operands (Clinger's fast path); any other decimal is handed, as text, to polars' own string to
float conversion. Column types follow polars' inference: integers only -> Int64, integers and
decimals -> Float64, text -> String, booleans -> Boolean, nulls only -> Null. Where the C part
was not built (an install without a compiler), every block is declined (see ``available``).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util

import numpy as np
import polars as pl
import pyarrow as pa

ABSENT, NULL, INT, FLOAT, DECIMAL_TEXT, TEXT, TRUE, FALSE = range(8)
"""Kinds of a (line, key) slot: no such key on the line, ``null``, an integer, a decimal read
exactly, a decimal left to polars (kept as its text's position), text, ``true``, ``false``."""

MAX_SLOTS = 8_000_000
"""Most (line, key) slots a block may use (9 bytes each: ~72 MB); a block of many sparse keys
past this is parsed by polars instead."""

MAX_KEYS = 4096
"""Most distinct keys a block may have: a new key is looked up among the known ones one by one
(a line of 160,000 distinct keys took 29 s), so a wider block is parsed by polars."""

_SCANNER = "mixplan.planning.readers._flatscan"
"""The compiled loops (``planning/readers/_flatscan.c``, built with the package)."""


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The scanner's C functions, or None where the extension was not built (no compiler at
    install: it is optional) - every block then goes to polars, as before."""
    spec = importlib.util.find_spec(_SCANNER)
    if spec is None or not spec.origin:
        return None
    library = ctypes.CDLL(spec.origin)  # ctypes releases the GIL while a function runs
    word, pointer = ctypes.c_int64, ctypes.c_void_p
    library.flat_scan.restype = word
    library.flat_scan.argtypes = [pointer, word, pointer, pointer, word, word, *[pointer] * 5]
    library.flat_text_views.restype = None
    library.flat_text_views.argtypes = [pointer, pointer, pointer, word, word, *[pointer] * 3]
    return library


def available() -> bool:
    """Whether the compiled scanner is installed (else ``parse_flat`` always declines)."""
    return _library() is not None


def _address(array: np.ndarray) -> int:
    return array.ctypes.data


def _arrow_buffer(size: int, dtype: type) -> tuple[pa.Buffer, np.ndarray]:
    """A buffer from Arrow's memory pool and a numpy view to fill it. (numpy's own arrays, from
    glibc's heap, freed out of order by the ingest's threads, fragmented it: on the 4 GB bench
    the peak RSS went from 0.87 to 1.07 GB and the system time from 3.3 to 8.8 s.)"""
    buffer = pa.allocate_buffer(max(size, 1) * np.dtype(dtype).itemsize)
    return buffer, np.frombuffer(buffer, dtype=dtype)[:size]


def _bitmap(valid: np.ndarray) -> pa.Buffer | None:
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _texts(buf: np.ndarray, values: np.ndarray, kinds: np.ndarray, kind: int) -> pl.Series:
    sizes = values & 0xFFFFFF
    long = int(sizes[(kinds == kind) & (sizes > 12)].sum())
    views, view_words = _arrow_buffer(values.size * 2, np.uint64)
    texts, text_bytes = _arrow_buffer(long, np.uint8)
    valid = np.empty(values.size, np.bool_)
    _library().flat_text_views(
        *map(_address, (buf, values, kinds)),
        values.size,
        kind,
        *map(_address, (view_words, text_bytes, valid)),
    )
    array = pa.Array.from_buffers(pa.string_view(), values.size, [_bitmap(valid), views, texts])
    return pl.Series(pl.from_arrow(array))


def _numbers(numbers: np.ndarray, valid: np.ndarray) -> pl.Series:
    """A numeric column (int64 or float64) copied into Arrow memory, nulls where not valid."""
    buffer, copy = _arrow_buffer(numbers.size, numbers.dtype.type)
    copy[:] = numbers
    dtype = pa.int64() if numbers.dtype == np.int64 else pa.float64()
    array = pa.Array.from_buffers(dtype, numbers.size, [_bitmap(valid), buffer])
    return pl.Series(pl.from_arrow(array))


def _column(
    name: str, buf: np.ndarray, values: np.ndarray, kinds: np.ndarray, counts: np.ndarray
) -> pl.Series | None:
    """One key's column (polars' inferred type, ``counts`` of its kinds from the scan), or
    None when its values mix kinds polars would not read into one type."""
    present = {kind for kind in (INT, FLOAT, DECIMAL_TEXT, TEXT, TRUE, FALSE) if counts[kind]}
    valid = kinds > NULL
    if not present:
        return pl.select(pl.repeat(None, values.size, dtype=pl.Null).alias(name)).to_series()
    if present == {TEXT}:
        return _texts(buf, values, kinds, TEXT)
    if present == {INT}:
        return _numbers(values, valid)
    if present <= {INT, FLOAT, DECIMAL_TEXT}:
        floats = values.view(np.float64)  # in place: the scan's slots are scratch
        if counts[INT]:
            integers = kinds == INT
            floats[integers] = values[integers]
        if counts[DECIMAL_TEXT]:  # polars' own conversion of the decimals it would round
            texts = _texts(buf, values, kinds, DECIMAL_TEXT).cast(pl.Float64)
            decimals = kinds == DECIMAL_TEXT
            converted = texts.to_numpy()[decimals]
            if np.isinf(converted).any():  # 1e400: polars' JSON reader rejects it
                return None
            floats[decimals] = converted
        return _numbers(floats, valid)
    if present <= {TRUE, FALSE}:
        return pl.Series(name, kinds == TRUE).scatter(np.flatnonzero(~valid), None)
    return None


class FlatScanner:
    """``parse_flat`` for the blocks of one file: the scan's buffers (~10 MB for a 16 MB
    block) are kept from one block to the next. The frames returned never refer to them.

    (Scanning a block as two halves in two threads was tried: on the 2-core bench machine the
    ingest's other threads already use the second core, and it was no faster.)"""

    def __init__(self) -> None:
        self._values = np.empty(0, np.int64)
        self._kinds = np.empty(0, np.uint8)

    def _buffers(self, slots: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        size = slots * rows
        if self._values.size < size:
            self._values, self._kinds = np.empty(size, np.int64), np.empty(size, np.uint8)
        kinds = self._kinds[:size].reshape(slots, rows)
        kinds.fill(ABSENT)
        return self._values[:size].reshape(slots, rows), kinds

    def parse(self, data: bytes | memoryview, rows: int) -> pl.DataFrame | None:
        """As ``parse_flat``."""
        library = _library()
        if rows <= 0 or library is None:
            return None
        buf = np.frombuffer(data, dtype=np.uint8)
        start = bytes(data[:65_536])
        slots = start[: start.find(b"\n")].count(b'":') + 4
        keys = np.zeros(1, np.int64)  # the scan's count of distinct keys
        while True:
            if slots * rows > MAX_SLOTS or slots > MAX_KEYS:
                return None
            values, kinds = self._buffers(slots, rows)
            counts = np.zeros((slots, 8), np.int64)
            key_bytes = np.empty(slots * 64, np.uint8)
            key_ends = np.zeros(slots + 1, np.int64)  # key k ends at key_ends[k + 1]
            previous = np.empty(slots, np.int64)  # the scan's scratch
            # (every array passed by address is held by a name here until the call returns)
            status = library.flat_scan(
                _address(buf),
                buf.size,
                _address(values),
                _address(kinds),
                slots,
                rows,
                *map(_address, (counts, key_bytes, key_ends, previous)),
                _address(keys),
            )
            if status != -1:
                break
            if slots >= MAX_KEYS:
                return None
            slots = min(slots * 4, MAX_KEYS)  # more keys than the first line suggested
        if status != 0:
            return None
        columns = []
        for k in range(int(keys[0])):
            name = key_bytes[key_ends[k] : key_ends[k + 1]].tobytes().decode("ascii")
            column = _column(name, buf, values[k], kinds[k], counts[k])
            if column is None:
                return None
            columns.append(column.alias(name))
        return pl.DataFrame(columns)


def parse_flat(data: bytes | memoryview, rows: int) -> pl.DataFrame | None:
    """The ``rows`` lines of flat JSON objects in ``data`` as polars' ``read_ndjson`` would
    give them, or None when the block is not only flat objects (see the module docstring)."""
    return FlatScanner().parse(data, rows)
