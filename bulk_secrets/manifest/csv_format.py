"""CSV manifests (RFC 4180): a header row, then one secret per record, read as a stream.

Columns: ``keyName``, exactly one of ``value`` / ``fromEnv`` / ``fromFile``, and optionally
``account`` (the record targets that account) and ``id`` (overrides the derived secret id).

A first row that names no known column is data, not a header: it is not shown. Nor is a
column name that may be a value (see :meth:`Problems.unknown`). When it names them once split
by another delimiter (``;`` or a tab, as spreadsheets in some languages export), the problem
names that delimiter.

What spreadsheets add is accepted: trailing header cells with no name (``keyName,value,``),
whose fields must then be empty, and rows with no field filled (``,,``), which are ignored.

The rows of the largest manifests (a keyName, an inline value, perhaps an account) are read in
blocks, split by ``str`` methods instead of the csv module where a piece of the file has no
quote; what each block holds is exactly what the csv module would have read (a property test
compares the two).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Generator, Iterator
from typing import NamedTuple, Protocol, TextIO

from .document import (
    SOURCE_FIELDS,
    Document,
    FromEnv,
    FromFile,
    Header,
    Inline,
    PlainBlock,
    PlainRow,
    Problems,
    RawEntry,
    Source,
    chars_within,
    redact,
)

COLUMNS = ("keyName", *SOURCE_FIELDS, "account", "id")
DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}
# Large values (certificates, JSON credentials) are longer than csv's default 128 KiB field;
# a field is read up to this many characters, or the value size limit if that is larger, so
# that a value over the limit is reported with its size.
_FIELD_LIMIT = 64 * 1024 * 1024
# How many characters a block of rows is read in: as many as the io module decodes at a time.
_BLOCK = 8192
# How much of the first line is read again to see whether another delimiter makes it a header.
_SAMPLE = 4096


class _Reader(Protocol):
    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def read(
    stream: TextIO, out: Problems, *, max_value_bytes: int = _FIELD_LIMIT, delimiter: str = ","
) -> Document:
    # The limit is the csv module's, for the whole process: it is only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT, max_value_bytes + 1))
    lines = iter(stream)
    first = ""
    try:
        first = next(lines, "")
        reader = csv.reader(itertools.chain([first], lines), strict=True, delimiter=delimiter)
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        if not _other_delimiter(first, delimiter, out):
            out.error(1, _why(exc))
        return Document(Header(), iter(()))
    if header is None:
        out.error(None, "the CSV file is empty: it needs a header such as keyName,value")
        return Document(Header(), iter(()))
    names = [name.strip() for name in header]
    width = len(names)  # with the trailing cells that have no name
    while names and not names[-1]:
        names.pop()
    if not any(name in COLUMNS for name in names) and _other_delimiter(first, delimiter, out):
        return Document(Header(), iter(()))
    del first
    if not _header_ok(names, out):
        return Document(Header(), iter(()))
    layout = _Layout.of(names, width, max_value_bytes)
    return Document(Header(), _rows(reader, stream, layout, delimiter, out))


def _other_delimiter(first: str, delimiter: str, out: Problems) -> bool:
    """Whether the first line is a header once split by another delimiter; if so, that is
    the problem reported. Only the delimiter is named: the line may be data."""
    for other in DELIMITERS:
        if other == delimiter or other not in first:
            continue
        try:
            names = next(csv.reader([first[:_SAMPLE]], delimiter=other), [])
        except csv.Error:
            continue
        if "keyName" in (name.strip() for name in names):
            shown = repr(other)
            out.error(
                1,
                f"the file looks separated by {shown}: use {_DELIMITER_NAMES[delimiter]}, "
                f"or pass --delimiter {shown}",
            )
            return True
    return False


def _header_ok(names: list[str], out: Problems) -> bool:
    if not any(name in COLUMNS for name in names):
        out.error(
            1,
            "the first row is not a header: it names none of the columns "
            f"{', '.join(COLUMNS)} (a header such as keyName,value must come first)",
        )
        return False
    ok = True
    for name in names:
        if name == "fromCommand":
            out.error(
                1,
                "a CSV manifest cannot run programs: fromCommand is for YAML and JSON manifests",
                column=name,
            )
            ok = False
        elif name not in COLUMNS:
            out.unknown(1, name, COLUMNS, "column", column=name)
            ok = False
    for name in COLUMNS:
        if names.count(name) > 1:
            out.error(1, f"the header names {name!r} twice", column=name)
            ok = False
    if "keyName" not in names:
        out.error(1, "the header has no keyName column")
        ok = False
    sources = [name for name in SOURCE_FIELDS if name in names]
    if len(sources) != 1:
        out.error(1, "the header needs exactly one of the columns value, fromEnv, fromFile")
        ok = False
    return ok


class _Layout(NamedTuple):
    """Where a header puts each column, worked out once for every row."""

    named: int  # columns with a name
    width: int  # with the trailing cells that have no name
    key_at: int
    value_at: int
    account_at: int | None
    id_at: int | None
    source: str
    plain_chars: int  # a value this long cannot be over the size limit

    @classmethod
    def of(cls, names: list[str], width: int, max_value_bytes: int) -> _Layout:
        at = {name: index for index, name in enumerate(names)}
        source = next(name for name in SOURCE_FIELDS if name in at)
        return cls(
            len(names),
            width,
            at["keyName"],
            at[source],
            at.get("account"),
            at.get("id"),
            source,
            chars_within(max_value_bytes),
        )

    @property
    def plain(self) -> bool:
        """Whether a row may be plain: an inline value, and no id column."""
        return self.source == "value" and self.id_at is None


Entries = Iterator[RawEntry | PlainRow | PlainBlock]


def _rows(
    reader: _Reader, stream: TextIO, layout: _Layout, delimiter: str, out: Problems
) -> Entries:
    """The records after the header: in blocks where the header allows plain rows and has no
    cell without a name, else one by one."""
    if layout.plain and layout.width == layout.named:
        yield from _blocks(stream, reader.line_num + 1, layout, delimiter, out)
    else:
        yield from _records(reader, 0, layout, out)


def _blocks(stream: TextIO, line: int, layout: _Layout, delimiter: str, out: Problems) -> Entries:
    """The records from ``line`` on, read ``_BLOCK`` characters at a time, cut after a line's
    end. A piece of plain rows (no quote, each line a record of as many fields as the header
    names: see :func:`_plain_block`) is one :class:`PlainBlock`; any other piece goes through
    the csv module, line by line, and from a piece with a quote on, the rest of the file does
    (a quoted field may hold line ends). A line longer than a block is one piece, handed to
    the csv module as it is (a value over the limit is reported, with its size, by the check).
    A piece that cannot be decoded is reported at its first line: up to a block before where
    reading failed."""
    rest = ""  # the start of a line cut at the block's end
    while True:
        try:
            data = stream.read(_BLOCK)
            text = rest + data
            cut = text.rfind("\n") + 1
            long = not cut and bool(data)
            if long:  # no line ends in the block: read to the end of the line
                text += stream.readline()
                cut = len(text)
        except UnicodeDecodeError as exc:
            out.error(line, _why(exc))
            return
        if not text:
            return
        if data:
            text, rest = text[:cut], text[cut:]
        else:  # the end of the file: the last line may have no line end
            rest = ""
        block = None if long else _plain_block(text, line, layout, delimiter)
        if block is not None:
            yield block
            line += len(block.key_names)
            continue
        if '"' in text:  # from here on, record by record
            lines = itertools.chain(io.StringIO(text, newline=""), _lines_on(rest, stream))
            reader = csv.reader(lines, strict=True, delimiter=delimiter)
            yield from _records(reader, line - 1, layout, out)
            return
        reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
        if (yield from _records(reader, line - 1, layout, out)):
            return
        line += reader.line_num


def _lines_on(start: str, stream: TextIO) -> Iterator[str]:
    """The lines of ``stream`` from a line that begins with ``start``, read already (which
    may hold lines that end in a lone CR: they are split as the file's own lines are)."""
    if start:
        yield from io.StringIO(start + stream.readline(), newline="")
    yield from stream


def _plain_block(text: str, line: int, layout: _Layout, delimiter: str) -> PlainBlock | None:
    """The lines of ``text`` as one block, if every one is a plain row; else None."""
    if '"' in text:
        return None
    if "\r" in text:  # lines that end in CR LF, as spreadsheets write them, and no other CR
        if text.count("\r") != text.count("\r\n"):
            return None
        text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    named = layout.named
    if set(map(str.count, lines, itertools.repeat(delimiter))) != {named - 1}:
        return None  # a line of more or fewer fields, or an empty one
    fields = text.replace(delimiter, "\n").split("\n")
    key_names, values = fields[layout.key_at :: named], fields[layout.value_at :: named]
    sizes = list(map(len, values))
    if not all(key_names) or min(sizes) == 0 or max(sizes) > layout.plain_chars:
        return None
    account_at = layout.account_at
    accounts = None if account_at is None else fields[account_at::named]
    return PlainBlock(line, key_names, list(map(Inline, values)), accounts)


def _records(
    reader: _Reader, offset: int, layout: _Layout, out: Problems
) -> Generator[RawEntry | PlainRow, None, bool]:
    """The records ``reader`` reads, ``offset`` lines into the file, each with as many fields
    as the header has columns: with or without the trailing ones that have no name, which must
    be empty. True when reading stopped at a problem (reported).

    A row of as many fields as the header names (the common case) is checked no further.
    Under a header of keyName, value and perhaps account, such a row with a keyName and a value
    that cannot be over the size limit is a :data:`PlainRow`."""
    named, width, key_at, value_at, account_at, id_at, source, plain_chars = layout
    inline, from_env = source == "value", source == "fromEnv"
    plain = layout.plain
    start = offset + reader.line_num + 1
    while True:
        try:
            row = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            out.error(start, _why(exc))
            return True
        if row is None:
            return False
        if plain and len(row) == named and row[key_at] and 0 < len(row[value_at]) <= plain_chars:
            account = row[account_at] if account_at is not None else ""
            yield (start, row[key_at], Inline(row[value_at]), account)  # the usual row
            start = offset + reader.line_num + 1
            continue
        if len(row) != named and any(row):  # more or fewer fields than the header names
            if not named <= len(row) <= width:
                out.error(start, f"the record has {_fields(len(row))}, the header has {width}")
                row = []
            elif any(row[named:]):
                out.error(start, "the record fills a column that has no name in the header")
                row = []
        if any(row):  # a row with no field filled (",,") is ignored
            text = row[value_at]
            found: Source = (
                Inline(text) if inline else FromEnv(text) if from_env else FromFile(text)
            )
            account = row[account_at] if account_at is not None else ""
            secret_id = row[id_at] if id_at is not None else ""
            yield RawEntry(
                start,
                row[key_at],
                found,
                secret_id or None,
                (account,) if account else None,
                True,  # tabular
            )
        start = offset + reader.line_num + 1


def _fields(count: int) -> str:
    return "1 field" if count == 1 else f"{count} fields"


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if "field larger than field limit" in str(exc):
        return (
            f"a field is over {csv.field_size_limit()} characters, more than any value may "
            "be; the rest of the file is not read"
        )
    return redact(f"not valid CSV: {exc}")
