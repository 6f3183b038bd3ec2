"""Raw log files as bytes: containers, byte-order marks, encodings and snapshots.

Every text reader gets its bytes from here, so each one handles the same ways people save logs:

* **Containers.** ``.gz``, ``.zst`` and ``.bz2`` are decompressed on the fly (also when only
  the magic bytes say so); the format is detected from the inner name (``x.jsonl.gz`` is
  JSONL, see ``inner_path``).
* **Byte-order marks.** A UTF-8, UTF-16 or UTF-32 BOM is detected and stripped.
* **Encodings.** UTF-16/32 (with a BOM, or UTF-16 recognised by its zero bytes) is decoded;
  text that is not valid UTF-8 falls back to Windows-1252 (or latin-1 when a byte is not
  defined there). Readers always receive UTF-8; any decoding other than plain UTF-8 is stated
  in ``TextSource.note`` and the reader records it in the file's ``sources.warnings``.
* **Snapshots, never memory maps.** A log may shrink while it is read (logrotate's
  ``copytruncate``); touching a memory map past the new end kills the process (SIGBUS). Files
  are therefore read with plain ``read`` calls up to the size they had when opened, and
  ``TextSource.check`` compares size and modification time before and after: a change is
  reported as a warning starting with ``CHANGED`` (the ingest then does not record the file's
  hash, so the next ingest reads it again).
* **Content hash from the same reads.** Every raw byte read is also fed to a ``ContentDigest``
  (``TextSource.content_hash``), so a file read whole needs no second read to be hashed; the
  hash is of exactly the bytes the rows came from.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
"""Container suffix -> compression read transparently."""

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bz2"))

_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

SNIFF_BYTES = 1024 * 1024
"""Bytes at the start checked for UTF-8 (a later non-UTF-8 line is decoded, and stated, by the
line-level parser: ``canonical._parse_block``)."""

LEGACY_ENCODINGS = ("cp1252", "latin-1")
"""Code pages tried, in order, for text that is not valid UTF-8."""

CHANGED = "changed while read"
"""Start of the warning of a file that changed (grew, shrank, was rewritten) while read."""

BLOCK_BYTES = 8 * 1024 * 1024
"""Bytes read (or decoded) per call when streaming."""
_PIECE = 64 * 1024
"""Bytes read per call from a decompressor (a read that hits a cut container loses its data)."""


HASH_ALGORITHM = "xxh3_128"
"""The content hash recorded for new files (``sources.sha256`` holds ``<algorithm>:<hex>``).

xxh3_128 is not cryptographic, and need not be: it tells an unchanged log from a changed
one, which a 128-bit hash of the bytes and their length does with a collision chance of
~2^-128 per pair, at ~1/5 of sha256's CPU (~0.02 CPU-s per 125 MB instead of 0.09).
"""


class ContentDigest:
    """The ``HASH_ALGORITHM`` content hash of files read in order: each file's bytes followed
    by its length (8 bytes, little-endian); ``hexdigest`` gives ``"xxh3_128:<hex>"``."""

    def __init__(self) -> None:
        import xxhash  # lazy: only readers that hash need it

        self._digest = xxhash.xxh3_128()
        self.length = 0
        """Bytes of the current file fed so far."""

    def update(self, data) -> None:
        """Feed the next bytes of the current file (any bytes-like object; releases the GIL)."""
        self._digest.update(data)
        self.length += len(data)

    def end_file(self) -> None:
        """Close the current file (its length goes into the hash); the next bytes start another."""
        self._digest.update(self.length.to_bytes(8, "little"))
        self.length = 0

    def hexdigest(self) -> str:
        """``"<algorithm>:<hex>"`` over the files closed so far."""
        return f"{HASH_ALGORITHM}:{self._digest.hexdigest()}"


def inner_path(path: Path) -> Path:
    """``path`` without its container suffix (``run.jsonl.gz`` -> ``run.jsonl``)."""
    if path.suffix.lower() in COMPRESSIONS:
        return path.with_suffix("")
    return path


def compression_of(path: Path, head: bytes | None = None) -> str | None:
    """The compression of ``path`` from its suffix, else from its first bytes; None if plain."""
    by_suffix = COMPRESSIONS.get(path.suffix.lower())
    if by_suffix:
        return by_suffix
    if head is None:
        with open(path, "rb") as handle:
            head = handle.read(4)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


class _Limited(io.RawIOBase):
    """A read-only view of a file up to ``limit`` bytes (its size when opened)."""

    def __init__(self, handle: BinaryIO, limit: int, digest: ContentDigest) -> None:
        self._handle = handle
        self._left = limit
        self._digest = digest
        self.short = False  # the file ended before ``limit``: it shrank while being read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        got = self._handle.readinto(view)
        if not got:
            self.short = True
            self._left = 0
            return 0
        self._left -= got
        self._digest.update(view[:got])
        return got


def _decompressor(raw: BinaryIO, compression: str | None) -> BinaryIO:
    if compression is None:
        return raw
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]


def _sniff_encoding(head: bytes) -> tuple[str, int]:
    """``(encoding, BOM length)`` from the first bytes of the (decompressed) text."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    sample = head[:4096]
    if len(sample) >= 4:  # UTF-16 without a BOM: ASCII text has a zero byte in every pair
        even = sample[0::2].count(0) / (len(sample) / 2)
        odd = sample[1::2].count(0) / (len(sample) / 2)
        if odd > 0.4 and even < 0.05:
            return "utf-16-le", 0
        if even > 0.4 and odd < 0.05:
            return "utf-16-be", 0
    return "utf-8", 0


def _valid_utf8_prefix(data: bytes) -> bool:
    """Whether ``data`` is UTF-8, allowing a multi-byte character cut at its end."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _latin1_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    return error.object[error.start : error.end].decode("latin-1"), error.end


_LATIN1_FALLBACK = "mixplan-latin-1-fallback"
codecs.register_error(_LATIN1_FALLBACK, _latin1_fallback)


def legacy_encoding(data: bytes) -> str:
    """The first of ``LEGACY_ENCODINGS`` that decodes ``data`` (latin-1 decodes anything)."""
    for name in LEGACY_ENCODINGS:
        try:
            data.decode(name)
        except UnicodeDecodeError:
            continue
        return name
    return "latin-1"


@dataclass
class TextSource:
    """One raw file opened for reading as UTF-8 text blocks (see the module docstring).

    Attributes
    ----------
    path
        The raw file (opened read-only, never memory-mapped).
    compression
        ``"gzip"``, ``"zstd"``, ``"bz2"`` or None.
    encoding
        The text's encoding as found (``"utf-8"``, ``"utf-16-le"``, ``"cp1252"``, ...).
    bom
        Whether a byte-order mark was stripped.
    """

    path: Path
    compression: str | None = None
    encoding: str = "utf-8"
    bom: bool = False
    _size: int = 0
    _mtime: int = 0
    _limited: _Limited | None = field(default=None, repr=False)
    _stream_error: str = ""
    _shrank: bool = False
    _digest: ContentDigest | None = field(default=None, repr=False)
    _hash: str = ""

    @property
    def note(self) -> str:
        """How the file was decoded, when that was not plain UTF-8 ("" otherwise)."""
        parts = []
        if self.compression:
            parts.append(f"{self.compression}-compressed")
        if self.bom:
            parts.append(f"{self.encoding} byte-order mark stripped")
        elif self.encoding != "utf-8":
            reason = "" if self.encoding.startswith("utf-") else " (not valid UTF-8)"
            parts.append(f"decoded as {self.encoding}{reason}")
        if not parts:
            return ""
        hint = ""
        if self.encoding in LEGACY_ENCODINGS:
            hint = "; check accented names, or save the file as UTF-8"
        return f"{self.path.name}: {', '.join(parts)}{hint}"

    def blocks(self, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
        """The file's text as UTF-8 bytes, in blocks of about ``block_bytes`` (cut anywhere).

        Reads at most the size the file had when opened (a snapshot); see ``check``.
        """
        stat = os.stat(self.path)
        self._size, self._mtime = stat.st_size, stat.st_mtime_ns
        self._digest, self._hash = ContentDigest(), ""
        with open(self.path, "rb") as handle:
            self._limited = _Limited(handle, self._size, self._digest)
            raw = io.BufferedReader(self._limited, buffer_size=1024 * 1024)
            stream = _decompressor(raw, self.compression)
            try:
                yield from self._decoded(stream, block_bytes)
            except (EOFError, OSError, ValueError) as error:  # a cut or corrupt container
                if isinstance(error, UnicodeDecodeError):
                    raise
                self._stream_error = f"{type(error).__name__}: {error}"

    def is_plain_utf8(self) -> bool:
        """Whether the file is uncompressed UTF-8 without a BOM (its first ``SNIFF_BYTES``)."""
        if self.compression is not None:
            return False
        with open(self.path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
        encoding, skip = _sniff_encoding(head)
        return encoding == "utf-8" and not skip and _valid_utf8_prefix(head)

    def plain_lines(self, block_bytes: int, *, reuse: bool = False) -> Iterator[bytes | memoryview]:
        """Whole lines of an uncompressed UTF-8 file in blocks of about ``block_bytes``, each
        read with one call straight into its buffer (no joining or slicing copies).

        With ``reuse`` every block is a ``memoryview`` of one buffer, refilled for the next
        block (valid until the next block is asked for): fresh 16 MB buffers cost a page fault
        and a page clearing per 4 KB, ~4% of an ingest's CPU. Else each block is new ``bytes``.

        Like ``blocks``, reads at most the size the file had when opened; a file that shrinks
        meanwhile ends the blocks early (``check`` reports it).
        """
        stat = os.stat(self.path)
        self._size, self._mtime = stat.st_size, stat.st_mtime_ns
        self._limited = None
        self._digest = digest = ContentDigest()
        self._hash = ""
        buffer = bytearray()
        with open(self.path, "rb", buffering=0) as handle:
            start = 0
            while start < self._size:
                end = min(start + block_bytes, self._size)
                while end < self._size:  # extend to the end of the line the cut falls in
                    handle.seek(end)
                    window = handle.read(min(65_536, self._size - end))
                    found = window.find(b"\n")
                    if found != -1 or not window:
                        end = end + found + 1 if found != -1 else end
                        break
                    end += len(window)
                handle.seek(start)
                if reuse:
                    if len(buffer) < end - start:  # with room: blocks end at line ends
                        buffer = bytearray(end - start + max(65_536, (end - start) // 16))
                    data = memoryview(buffer)[: _read_into(handle, buffer, end - start)]
                else:
                    data = handle.read(end - start)
                digest.update(data)
                if len(data) < end - start:  # the file shrank while being read
                    self._shrank = True
                    if len(data):
                        yield data
                    return
                yield data
                start = end

    def _decoded(self, stream: BinaryIO, block_bytes: int) -> Iterator[bytes]:
        head = stream.read(block_bytes if self.compression is None else _PIECE)
        if not head:
            return
        encoding, skip = _sniff_encoding(head)
        self.bom = skip > 0
        sample = head[skip : skip + SNIFF_BYTES]
        if encoding == "utf-8" and not _valid_utf8_prefix(sample):
            encoding = legacy_encoding(sample)
        self.encoding = encoding
        # a decompressor loses the data of a read that hits a cut container: read small pieces
        piece = block_bytes if self.compression is None else min(block_bytes, _PIECE)
        if encoding == "utf-8":
            if skip:
                head = head[skip:]
            if head:
                yield head
            while block := stream.read(piece):
                yield block
            return
        # a byte a code page leaves undefined (cp1252's 0x81, ...) reads as latin-1
        errors = _LATIN1_FALLBACK if encoding in LEGACY_ENCODINGS else "strict"
        decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
        block = head[skip:]
        while True:
            text = decoder.decode(block, final=not block)
            if text:
                yield text.encode("utf-8")
            if not block:
                return
            block = stream.read(piece)

    def read_all(self) -> bytes:
        """The whole file's text as UTF-8 bytes (for small documents and tables)."""
        return b"".join(self.blocks())

    def content_hash(self) -> str:
        """After reading the whole file: its content hash (``ContentDigest``) from the bytes
        read, "" when the file was not read to its end or changed meanwhile (see ``check``)."""
        digest = self._digest
        if digest is not None and digest.length == self._size and not self.check():
            digest.end_file()
            self._hash = digest.hexdigest()
        self._digest = None  # closed: the value stays until the file is read again
        return self._hash

    def check(self) -> str:
        """After reading: a ``CHANGED`` warning when the file changed meanwhile, else ""."""
        problems = []
        if self._stream_error:
            problems.append(f"its container ended early ({self._stream_error})")
        try:
            stat = os.stat(self.path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError as error:
            size, mtime = -1, 0
            problems.append(f"it disappeared ({error})")
        shrank = self._shrank or (self._limited is not None and self._limited.short)
        if shrank or size != self._size or mtime != self._mtime:
            problems.append(f"its size went from {self._size:,} to {max(size, 0):,} bytes")
        if not problems:
            return ""
        return (
            f"{CHANGED}: {self.path.name} {'; '.join(problems)} (rotated with copytruncate, "
            "still being written or replaced?); the rows read come from the bytes read before "
            "the change. Ingest again once the file is complete."
        )


def open_text(path: Path) -> TextSource:
    """A ``TextSource`` for ``path`` (compression found from its name or magic bytes)."""
    return TextSource(path=Path(path), compression=compression_of(Path(path)))


def read_decompressed(path: Path) -> bytes:
    """The bytes inside a compressed container (binary files such as ``x.parquet.gz``)."""
    with open(path, "rb") as handle:
        return _decompressor(handle, compression_of(path)).read()  # type: ignore[arg-type]


def changed_while_read(warnings: list[str]) -> bool:
    """Whether a reader's warnings say the file changed while it was read."""
    return any(w.startswith(CHANGED) for w in warnings)


NEWLINE = ord("\n")


def count_lines(buffer) -> int:
    """Number of ``\\n`` in a bytes-like object (numpy, 256 KB at a time: ~3x faster than
    ``bytes.count``, and temporaries small enough for glibc to reuse from its heap)."""
    array = np.frombuffer(buffer, dtype=np.uint8)
    step = 1 << 18
    return sum(
        int(np.count_nonzero(array[i : i + step] == NEWLINE)) for i in range(0, array.size, step)
    )


def _read_into(handle: BinaryIO, buffer: bytearray, size: int) -> int:
    """Read up to ``size`` bytes into the start of ``buffer`` (short only at the file's end)."""
    view, got = memoryview(buffer), 0
    while got < size:
        count = handle.readinto(view[got:size])
        if not count:
            break
        got += count
    return got


def line_blocks(
    source: TextSource, block_bytes: int, *, quote: bytes | None = None, reuse: bool = False
) -> Iterator[bytes | memoryview]:
    """UTF-8 text in blocks of whole lines, each about ``block_bytes`` (a longer line is kept
    whole). The last block may lack its final newline (an unterminated last line).

    With ``quote`` (CSV's ``"``) a block is never cut inside a quoted field: a cut is taken
    only where the number of quote characters before it is even. With ``reuse`` the blocks of a
    plain UTF-8 file are views of one buffer, each valid until the next is asked for (see
    ``TextSource.plain_lines``).
    """
    if quote is None and source.is_plain_utf8():
        yield from source.plain_lines(block_bytes, reuse=reuse)
        return
    carry = b""
    for block in source.blocks(min(block_bytes, BLOCK_BYTES) if quote else block_bytes):
        data = carry + block if carry else block
        if len(data) < block_bytes:
            carry = data
            continue
        cut = data.rfind(b"\n")
        if quote is not None:
            while cut != -1 and data.count(quote, 0, cut) % 2:
                cut = data.rfind(b"\n", 0, cut)
        if cut == -1:
            carry = data
            continue
        yield data[: cut + 1]
        carry = data[cut + 1 :]
    if carry:
        yield carry
