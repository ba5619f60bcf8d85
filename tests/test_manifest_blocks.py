"""CSV rows read in blocks: what the reader hands over, and what a block costs in problems.

That a block is checked as the same rows one by one is the property test's in
``test_manifest_properties.py``; here, that the blocks are there to be checked at all, and what
happens at their edges: a quote, a line that is not UTF-8, a duplicate across two blocks.
"""

from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

import pytest

from bulk_secrets.errors import ManifestError
from bulk_secrets.manifest import csv_format, load_manifests
from bulk_secrets.manifest.document import PlainBlock, PlainRow, Problems, RawEntry

from .helpers import CANARY


def _entries(text: str, block: int = 8192) -> list[RawEntry | PlainRow | PlainBlock]:
    out = Problems("m.csv")
    with mock.patch.object(csv_format, "_BLOCK", block):
        document = csv_format.read(io.StringIO(text, newline=""), out)
        entries = list(document.entries)
    assert not out.errors
    return entries


def _rows(count: int, start: int = 0) -> str:
    return "".join(f"K_{i},value-{i}\n" for i in range(start, start + count))


def test_plain_rows_come_in_blocks_cut_at_line_ends() -> None:
    entries = _entries("keyName,value\n" + _rows(100), block=64)
    assert all(type(entry) is PlainBlock for entry in entries)
    assert len(entries) > 10  # 64 characters: a few rows each
    lines = [line for entry in entries for line, *_ in entry.rows()]  # type: ignore[union-attr]
    assert lines == list(range(2, 102))
    values = [value.reveal() for entry in entries for _, _, value, _ in entry.rows()]  # type: ignore[union-attr]
    assert values == [f"value-{i}" for i in range(100)]


def test_spreadsheet_line_ends_and_an_account_column_still_make_blocks() -> None:
    text = "account,keyName,value\r\n" + "".join(f"a-{i % 3},K_{i},v\r\n" for i in range(9))
    (block,) = _entries(text)
    assert type(block) is PlainBlock
    assert block.accounts == [f"a-{i % 3}" for i in range(9)]
    assert [value.reveal() for value in block.values] == ["v"] * 9


def test_from_a_quote_on_the_rest_is_read_record_by_record() -> None:
    text = "keyName,value\n" + _rows(50) + 'Q,"a\nb"\n' + _rows(50, start=50)
    entries = _entries(text, block=128)
    kinds = [type(entry).__name__ for entry in entries]
    assert kinds[0] == "PlainBlock"
    assert "PlainBlock" not in kinds[kinds.index("tuple") :]
    assert len([entry for entry in entries if type(entry) is tuple]) == 101 - sum(
        len(entry.key_names) for entry in entries if type(entry) is PlainBlock
    )


def test_a_block_shows_no_value() -> None:
    (block,) = _entries(f"keyName,value\nA,{CANARY}\nB,x\n")
    assert type(block) is PlainBlock
    assert CANARY not in repr(block)
    assert CANARY not in str(block)
    assert repr(block) == "PlainBlock(line=2, rows=2)"


def test_a_duplicate_in_another_block_is_found_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\n" + _rows(300) + "K_7,again\n", encoding="utf-8")
    with mock.patch.object(csv_format, "_BLOCK", 256), pytest.raises(ManifestError) as caught:
        load_manifests([str(path)], accounts=["acct"])
    (problem,) = caught.value.problems
    assert problem.line == 302
    assert problem.message.endswith(f"{path}:9 already uses")


def test_bytes_that_are_not_utf8_are_reported_near_their_line(tmp_path: Path) -> None:
    """The file is decoded a block at a time: the problem is at the first line of the block
    that could not be read, not past the line of the bytes, and the rows before it are read."""
    path = tmp_path / "m.csv"
    rows = [f"K_{i},value-{i}\n".encode() for i in range(2000)]
    rows[1500] = b"K_1500,caf\xe9\n"
    path.write_bytes(b"keyName,value\n" + b"".join(rows))
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)], accounts=["acct"])
    (problem,) = caught.value.problems
    assert problem.message == "not UTF-8 text"
    assert problem.line is not None
    # A block is 8,192 characters, some 560 of these rows; the one before it may go unread.
    assert 1502 - 2 * 560 <= problem.line <= 1502


@pytest.mark.parametrize("block", [5, 9, 11, 13, 30, 8192])
def test_lines_that_end_in_a_lone_cr_are_read_as_the_csv_module_reads_them(block: int) -> None:
    """Old Mac line ends among Unix ones, and a quote: whatever the block holds past its last
    line end when the quote turns reading over to the csv module, each line is a record."""
    text = 'keyName,value\nA,"1"\nB,2\rC,3\rD,4\nE,5\rF,6\n'
    specs = []
    for size in (block, 8192):
        with mock.patch.object(csv_format, "_BLOCK", size):
            loaded = load_manifests(["-"], format="csv", accounts=["acct"], stdin=io.StringIO(text))
            specs.append([(s.key_name, s.location, s.value.reveal()) for s in loaded.specs()])
    assert (
        specs[0]
        == specs[1]
        == [
            (key, f"<stdin>:{line}", value)
            for line, (key, value) in enumerate(zip("ABCDEF", "123456", strict=True), start=2)
        ]
    )
