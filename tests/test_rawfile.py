"""Blocks of whole lines read from a snapshot (planning/readers/rawfile.py), with the read
buffer reused from one block to the next (``reuse=True``, what the JSONL reader asks for)."""

from __future__ import annotations

import os

import pytest

from mixplan.planning.readers.rawfile import CHANGED, line_blocks, open_text


def _log(path, lines: int) -> bytes:
    text = b"".join(
        b'{"step": %d, "loss": %d.5, "pad": "%s"}\n' % (i, i, b"x" * (i % 97)) for i in range(lines)
    )
    path.write_bytes(text)
    return text


@pytest.mark.parametrize("block_bytes", [1_000, 4_096, 65_536, 10**7])
def test_reused_blocks_are_the_same_whole_lines(tmp_path, block_bytes):
    path = tmp_path / "log.jsonl"
    text = _log(path, 3_000)
    fresh = list(line_blocks(open_text(path), block_bytes))
    reused = [bytes(block) for block in line_blocks(open_text(path), block_bytes, reuse=True)]
    assert reused == fresh
    assert b"".join(reused) == text
    assert all(block.endswith(b"\n") for block in reused)


def test_a_file_cut_while_read_ends_the_blocks_and_is_reported(tmp_path):
    path = tmp_path / "log.jsonl"
    text = _log(path, 3_000)
    source = open_text(path)
    blocks = line_blocks(source, 4_096, reuse=True)
    first = bytes(next(blocks))
    os.truncate(path, len(text) // 2)  # logrotate's copytruncate
    rest = b"".join(bytes(block) for block in blocks)
    assert first + rest == text[: len(text) // 2]
    assert source.check().startswith(CHANGED)
