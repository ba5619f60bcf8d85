"""CSV manifests (RFC 4180): a header row, then one secret per record, read as a stream.

Columns: ``keyName``, exactly one of ``value`` / ``fromEnv`` / ``fromFile``, and optionally
``account`` (the record targets that account) and ``id`` (overrides the derived secret id).

A first row that names no known column is data, not a header: it is not shown. Nor is a
column name that may be a value (see :meth:`Problems.unknown`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Protocol, TextIO

from ..models import SecretValue
from .document import (
    SOURCE_FIELDS,
    Document,
    FromEnv,
    FromFile,
    Header,
    Inline,
    Problems,
    RawEntry,
    redact,
)

COLUMNS = ("keyName", *SOURCE_FIELDS, "account", "id")
# Large values (certificates, JSON credentials) are longer than csv's default 128 KiB field;
# a field is read up to this many characters, or the value size limit if that is larger, so
# that a value over the limit is reported with its size.
_FIELD_LIMIT = 64 * 1024 * 1024


class _Reader(Protocol):
    line_num: int

    def __iter__(self) -> Iterator[list[str]]: ...

    def __next__(self) -> list[str]: ...


def read(stream: TextIO, out: Problems, *, max_value_bytes: int = _FIELD_LIMIT) -> Document:
    # The limit is the csv module's, for the whole process: it is only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT, max_value_bytes + 1))
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        out.error(1, _why(exc))
        return Document(Header(), iter(()))
    if header is None:
        out.error(None, "the CSV file is empty: it needs a header such as keyName,value")
        return Document(Header(), iter(()))
    names = [name.strip() for name in header]
    if not _header_ok(names, out):
        return Document(Header(), iter(()))
    return Document(Header(), _rows(reader, names, out))


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
        if name not in COLUMNS:
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


def _rows(reader: _Reader, names: list[str], out: Problems) -> Iterator[RawEntry]:
    at = {name: index for index, name in enumerate(names)}
    source = next(name for name in SOURCE_FIELDS if name in at)
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            out.error(start, _why(exc))
            return
        if row is None:
            return
        if row:
            if len(row) != len(names):
                out.error(start, f"the record has {len(row)} fields, the header has {len(names)}")
            else:
                yield _entry(start, row, at, source)
        start = reader.line_num + 1


def _entry(line: int, row: list[str], at: dict[str, int], source: str) -> RawEntry:
    text = row[at[source]]
    found = (
        Inline(SecretValue(text))
        if source == "value"
        else FromEnv(text)
        if source == "fromEnv"
        else FromFile(text)
    )
    account = row[at["account"]] if "account" in at else ""
    secret_id = row[at["id"]] if "id" in at else ""
    return RawEntry(
        line,
        row[at["keyName"]],
        found,
        secret_id=secret_id or None,
        accounts=(account,) if account else None,
        tabular=True,
    )


def _why(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if "field larger than field limit" in str(exc):
        return (
            f"a field is over {csv.field_size_limit()} characters, more than any value may "
            "be; the rest of the file is not read"
        )
    return redact(f"not valid CSV: {exc}")
