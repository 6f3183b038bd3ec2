"""Flat JSONL records read by a compiled scanner: the fast path of canonical JSONL logs.

Training jobs log one flat object per line (``{"run_id": "r1", "step": 100, "loss": 3.91}``):
plain keys, numbers, short ASCII text. polars parses such a block with a general JSON parser
(simd-json into a value tree, then into columns). ``parse_flat`` reads only the flat shape, in
one compiled pass that writes each value straight into its column (~1.5x less CPU per block).

It never changes what a log means: on every block it accepts, it gives the frame polars'
``read_ndjson`` gives (column order, types and values; tests/test_flatjson.py compares the two
on generated blocks), and it *declines* (returns None, the caller then parses the block with
polars, as before) whenever the block holds anything else:

* a line that is blank or is not one object, a nested object or array, a string with an escape
  (``\\``), a control character or a non-ASCII byte, a key twice on one line;
* a number outside JSON's grammar (``NaN``, ``01``, ``1.``) or an integer of 19 or more digits;
* a column mixing text, numbers and booleans, or more distinct keys than ``MAX_SLOTS`` allows.

Numbers are read exactly: an integer is its value; a decimal with at most 16 significant
digits and a power of ten within 10^±22 is one correctly rounded IEEE operation on exact
operands (Clinger's fast path); any other decimal is handed, as text, to polars' own string to
float conversion. Column types follow polars' inference: integers only -> Int64, integers and
decimals -> Float64, text -> String, booleans -> Boolean, nulls only -> Null.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from mixplan.planning.compiled import compiled

ABSENT, NULL, INT, FLOAT, DECIMAL_TEXT, TEXT, TRUE, FALSE = range(8)
"""Kinds of a (line, key) slot: no such key on the line, ``null``, an integer, a decimal read
exactly, a decimal left to polars (kept as its text's position), text, ``true``, ``false``."""

MAX_SLOTS = 8_000_000
"""Most (line, key) slots a block may use (9 bytes each: ~72 MB); a block of many sparse keys
past this is parsed by polars instead."""

_POW10 = np.array([10.0**i for i in range(23)])
_EXACT_MANTISSA = 1 << 53
_MAX_DIGITS = 18
_CHAR = np.zeros(256, np.uint8)  # 0: plain, 1: closing quote, 2: ends the fast path
_CHAR[ord('"')] = 1
_CHAR[ord("\\")] = 2
_CHAR[:32] = 2
_CHAR[128:] = 2


@compiled(nogil=True)
def _skip_space(buf, i, n):
    while i < n and (buf[i] == 32 or buf[i] == 9 or buf[i] == 13):
        i += 1
    return i


@compiled(nogil=True)
def _string_end(buf, i, n, char):
    """The index of the quote closing the string that starts at ``i``; -1 when the string is
    not plain (escape, control or non-ASCII byte) or is not closed."""
    while i < n:
        c = char[buf[i]]
        if c == 0:
            i += 1
        elif c == 1:
            return i
        else:
            return -1
    return -1


@compiled(nogil=True)
def _scan(buf, values, kinds, counts, pow10, char):
    """Read the lines of flat objects in ``buf`` into ``values`` and ``kinds`` (``(slots,
    rows)``, ``kinds`` all ``ABSENT``); ``counts[k, kind]`` (zeros) counts each key's kinds.

    ``values[k, row]`` receives an integer, a float's bits, or a text's ``start << 24 |
    length``; ``kinds[k, row]`` its kind. Returns ``(key_bytes, key_ends, keys, status)``: key
    ``k`` is ``key_bytes[key_ends[k]:key_ends[k + 1]]``; ``status`` is 0 when every line was
    read, else nonzero and the block is declined (1 + the byte index where the scan stopped;
    -1 when there are more keys than ``slots``; -2 when there are not ``rows`` lines).
    """
    n = buf.size
    slots, rows = values.shape
    floats = values.view(np.float64)
    key_bytes = np.zeros(slots * 64, np.uint8)
    key_ends = np.zeros(slots + 1, np.int64)  # key k ends at key_ends[k + 1]
    keys = 0
    previous = np.zeros(slots, np.int64)  # the key at each position of the previous line
    i, row = 0, 0
    while i < n:
        if row >= rows:
            return key_bytes, key_ends, keys, -2
        i = _skip_space(buf, i, n)
        if i >= n or buf[i] != 123:  # a line that is not an object (or is blank)
            return key_bytes, key_ends, keys, i + 1
        i = _skip_space(buf, i + 1, n)
        position = 0
        if i < n and buf[i] == 125:
            i += 1
        else:
            while True:
                if i >= n or buf[i] != 34:
                    return key_bytes, key_ends, keys, i + 1
                start = i + 1
                k, end = -1, -1
                if position < slots and previous[position] < keys:
                    # the usual case: the same key as at this position of the previous line
                    h = previous[position]
                    low, size = key_ends[h], key_ends[h + 1] - key_ends[h]
                    if start + size < n and buf[start + size] == 34:
                        k, end = h, start + size
                        for t in range(size):
                            if key_bytes[low + t] != buf[start + t]:
                                k, end = -1, -1
                                break
                if k < 0:
                    end = _string_end(buf, start, n, char)
                    if end < 0:
                        return key_bytes, key_ends, keys, start + 1
                    size = end - start
                    for h in range(keys):
                        if key_ends[h + 1] - key_ends[h] == size:
                            low = key_ends[h]
                            k = h
                            for t in range(size):
                                if key_bytes[low + t] != buf[start + t]:
                                    k = -1
                                    break
                            if k >= 0:
                                break
                    if k < 0:  # a new key
                        low = key_ends[keys]
                        if keys >= slots or low + size > key_bytes.size:
                            return key_bytes, key_ends, keys, -1
                        key_bytes[low : low + size] = buf[start:end]
                        key_ends[keys + 1] = low + size
                        k = keys
                        keys += 1
                if position < slots:
                    previous[position] = k
                position += 1
                if kinds[k, row] != ABSENT:  # a key twice on one line
                    return key_bytes, key_ends, keys, start + 1
                i = _skip_space(buf, end + 1, n)
                if i >= n or buf[i] != 58:  # :
                    return key_bytes, key_ends, keys, i + 1
                i = _skip_space(buf, i + 1, n)
                if i >= n:
                    return key_bytes, key_ends, keys, i + 1
                c = buf[i]
                if c == 34:
                    end = i + 1
                    while end < n and char[buf[end]] == 0:
                        end += 1
                    if end >= n or char[buf[end]] != 1 or end - i - 1 >= (1 << 24):
                        return key_bytes, key_ends, keys, i + 1
                    kinds[k, row] = TEXT
                    values[k, row] = ((i + 1) << 24) | (end - i - 1)
                    i = end + 1
                elif c == 45 or 48 <= c <= 57:
                    begin = i
                    negative = buf[i] == 45
                    if negative:
                        i += 1
                    if i >= n or buf[i] < 48 or buf[i] > 57:
                        return key_bytes, key_ends, keys, begin + 1
                    mantissa, digits, exponent, inexact = 0, 0, 0, False
                    if buf[i] == 48:
                        i += 1
                        if i < n and 48 <= buf[i] <= 57:  # a leading zero
                            return key_bytes, key_ends, keys, begin + 1
                    else:
                        while i < n and 48 <= buf[i] <= 57:
                            if digits < _MAX_DIGITS:
                                mantissa = mantissa * 10 + (buf[i] - 48)
                                digits += 1
                            else:
                                exponent += 1
                                inexact = True
                            i += 1
                    decimal = False
                    if i < n and buf[i] == 46:
                        decimal = True
                        i += 1
                        if i >= n or buf[i] < 48 or buf[i] > 57:
                            return key_bytes, key_ends, keys, begin + 1
                        while i < n and 48 <= buf[i] <= 57:
                            if digits < _MAX_DIGITS:
                                mantissa = mantissa * 10 + (buf[i] - 48)
                                exponent -= 1
                                if mantissa > 0:
                                    digits += 1
                            elif buf[i] != 48:
                                inexact = True
                            i += 1
                    if i < n and (buf[i] == 101 or buf[i] == 69):
                        decimal = True
                        i += 1
                        sign = 1
                        if i < n and (buf[i] == 43 or buf[i] == 45):
                            sign = -1 if buf[i] == 45 else 1
                            i += 1
                        if i >= n or buf[i] < 48 or buf[i] > 57:
                            return key_bytes, key_ends, keys, begin + 1
                        power = 0
                        while i < n and 48 <= buf[i] <= 57:
                            if power < 100_000:
                                power = power * 10 + (buf[i] - 48)
                            i += 1
                        exponent += sign * power
                    if not decimal:
                        if inexact:  # an integer past int64
                            return key_bytes, key_ends, keys, begin + 1
                        kinds[k, row] = INT
                        values[k, row] = -mantissa if negative else mantissa
                    elif mantissa == 0:
                        kinds[k, row] = FLOAT
                        floats[k, row] = -0.0 if negative else 0.0
                    elif inexact or mantissa > _EXACT_MANTISSA or not -22 <= exponent <= 22:
                        if i - begin >= (1 << 24):
                            return key_bytes, key_ends, keys, begin + 1
                        kinds[k, row] = DECIMAL_TEXT  # left to polars: see the docstring
                        values[k, row] = (begin << 24) | (i - begin)
                    else:  # exact operands, one correctly rounded operation
                        number = float(mantissa)
                        if exponent >= 0:
                            number = number * pow10[exponent]
                        else:
                            number = number / pow10[-exponent]
                        kinds[k, row] = FLOAT
                        floats[k, row] = -number if negative else number
                elif c == 110 and i + 3 < n and buf[i + 1] == 117 and buf[i + 2] == 108:
                    if buf[i + 3] != 108:
                        return key_bytes, key_ends, keys, i + 1
                    kinds[k, row] = NULL
                    i += 4
                elif c == 116 and i + 3 < n and buf[i + 1] == 114 and buf[i + 2] == 117:
                    if buf[i + 3] != 101:
                        return key_bytes, key_ends, keys, i + 1
                    kinds[k, row] = TRUE
                    i += 4
                elif c == 102 and i + 4 < n and buf[i + 1] == 97 and buf[i + 2] == 108:
                    if buf[i + 3] != 115 or buf[i + 4] != 101:
                        return key_bytes, key_ends, keys, i + 1
                    kinds[k, row] = FALSE
                    i += 5
                else:  # a nested value, NaN, Infinity, ...
                    return key_bytes, key_ends, keys, i + 1
                counts[k, kinds[k, row]] += 1
                i = _skip_space(buf, i, n)
                if i < n and buf[i] == 44:  # ,
                    i = _skip_space(buf, i + 1, n)
                    continue
                if i < n and buf[i] == 125:  # }
                    i += 1
                    break
                return key_bytes, key_ends, keys, i + 1
        i = _skip_space(buf, i, n)
        if i < n:
            if buf[i] != 10:
                return key_bytes, key_ends, keys, i + 1
            i += 1
        row += 1
    if row != rows:
        return key_bytes, key_ends, keys, -2
    return key_bytes, key_ends, keys, 0


@compiled(nogil=True)
def _text_views(buf, values, kinds, kind, views, texts):
    """Fill ``views`` (two 64-bit words per slot) with the Arrow string views of the slots of
    ``kind``: the length and the first 4 bytes, then the next 8 bytes inline (texts up to 12
    bytes) or buffer 0 and the offset in ``texts``, which receives the longer texts (copied:
    the frame does not hold on to the block). Returns the slots' validity."""
    rows = values.size
    valid = np.zeros(rows, np.bool_)
    offset = 0
    for row in range(rows):
        low = np.uint64(0)
        high = np.uint64(0)
        if kinds[row] == kind:
            valid[row] = True
            start, size = values[row] >> 24, values[row] & 0xFFFFFF
            low = np.uint64(size)
            for t in range(min(size, 4)):
                low |= np.uint64(buf[start + t]) << np.uint64(32 + 8 * t)
            if size <= 12:
                for t in range(4, size):
                    high |= np.uint64(buf[start + t]) << np.uint64(8 * (t - 4))
            else:
                high = np.uint64(offset) << np.uint64(32)
                for t in range(size):
                    texts[offset + t] = buf[start + t]
                offset += size
        views[2 * row] = low
        views[2 * row + 1] = high
    return valid


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
    valid = _text_views(buf, values, kinds, kind, view_words, text_bytes)
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
            floats[decimals] = texts.to_numpy()[decimals]
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
        if rows <= 0:
            return None
        buf = np.frombuffer(data, dtype=np.uint8)
        start = bytes(data[:65_536])
        slots = start[: start.find(b"\n")].count(b'":') + 4
        while True:
            if slots * rows > MAX_SLOTS:
                return None
            values, kinds = self._buffers(slots, rows)
            counts = np.zeros((slots, 8), np.int64)
            key_bytes, key_ends, keys, status = _scan(buf, values, kinds, counts, _POW10, _CHAR)
            if status != -1:
                break
            slots *= 4  # more keys than the first line suggested
        if status != 0:
            return None
        columns = []
        for k in range(keys):
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
