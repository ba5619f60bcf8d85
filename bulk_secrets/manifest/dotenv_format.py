"""dotenv manifests (``.env``): the only module that imports ``dotenv``.

python-dotenv's parser reads the dialect that users' ``.env`` files really have: ``#``
comments, an ``export`` prefix, single quotes (literal), double quotes (with escapes such as
``\\n`` and ``\\"``, and values that span lines), and unquoted values (trimmed, with `` #``
starting a comment). Nothing is interpolated: ``$VAR`` stays as written. Line endings are
normalised first, so a CRLF file gives the same values as an LF file.

A multi-line value without quotes (a PEM key pasted as is) would be read as lines of its own,
some of them ``NAME=value`` by chance (base64 ends in ``=``): from an unquoted
``-----BEGIN ...`` to its ``-----END ...`` line, the lines are the rest of a value, reported
once at the line that opens it and never read as entries.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import TextIO

from dotenv.parser import parse_stream

from .document import Document, Header, Inline, Problems, RawEntry

_PEM_BEGIN = "-----BEGIN "
_PEM_END = "-----END "
_OPEN_QUOTE = re.compile(r"\s*(export\s+)?[^=\s]+\s*=\s*[\"']")


def read(stream: TextIO, out: Problems) -> Document:
    text = stream.read().replace("\r\n", "\n").replace("\r", "\n")
    return Document(Header(), _entries(text, out))


def _entries(text: str, out: Problems) -> Iterator[RawEntry]:
    in_block = False  # inside an unquoted PEM block: lines that are the rest of a value
    for binding in parse_stream(io.StringIO(text)):
        chunk = binding.original.string
        if in_block:
            in_block = _PEM_END not in chunk
            continue
        # A chunk starts with the blank lines before it: its own line comes after them.
        line = binding.original.line + chunk[: len(chunk) - len(chunk.lstrip())].count("\n")
        if (
            binding.value is not None
            and binding.value.lstrip().startswith(_PEM_BEGIN)
            and _PEM_END not in binding.value
            and _OPEN_QUOTE.match(chunk) is None
        ):
            out.error(
                line,
                "a multi-line value (a PEM block) without quotes: put the whole value in "
                'double quotes, NAME="-----BEGIN ...-----END ..."',
            )
            in_block = True
        elif binding.error:
            if _never_closed(chunk):
                # What follows is the rest of the value: parsed as lines it would be echoed.
                out.error(line, "the quote opened here is never closed")
                return
            out.error(line, "not a KEY=value line (text after a closing quote?)")
        elif binding.key is None:
            continue  # a comment or a blank line
        elif binding.value is None:
            out.error(line, "the line has no '=' (write NAME= for an empty value)")
        else:
            yield RawEntry(line, binding.key, Inline(binding.value))


def _never_closed(chunk: str) -> bool:
    """Whether the line opens a quoted value that python-dotenv found no end for."""
    opened = _OPEN_QUOTE.match(chunk)
    if opened is None:
        return False
    quote = re.escape(chunk[opened.end() - 1])
    closed = re.compile(rf"{quote}(?:\\{quote}|[^{quote}])*{quote}")
    return closed.match(chunk, opened.end() - 1) is None
