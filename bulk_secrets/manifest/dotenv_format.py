"""dotenv manifests (``.env``): the only module that imports ``dotenv``.

python-dotenv's parser reads the dialect that users' ``.env`` files really have: ``#``
comments, an ``export`` prefix, single quotes (literal), double quotes (with escapes such as
``\\n`` and ``\\"``, and values that span lines), and unquoted values (trimmed, with `` #``
starting a comment). Nothing is interpolated: ``$VAR`` stays as written. Line endings are
normalised first, so a CRLF file gives the same values as an LF file.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TextIO

from dotenv.parser import parse_stream

from ..models import SecretValue
from .model import Document, Header, Literal, Problems, RawEntry


def read(stream: TextIO, out: Problems) -> Document:
    text = stream.read().replace("\r\n", "\n").replace("\r", "\n")
    return Document(Header(), _entries(text, out))


def _entries(text: str, out: Problems) -> Iterator[RawEntry]:
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            out.error(line, "not a KEY=value line (is a quote left open?)")
        elif binding.key is None:
            continue  # a comment or a blank line
        elif binding.value is None:
            out.error(line, f"{binding.key} has no '=': write {binding.key}= for an empty value")
        else:
            yield RawEntry(line, binding.key, Literal(SecretValue(binding.value)))
