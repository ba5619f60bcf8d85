"""JSON manifests: the same structure as YAML, with each node's line kept.

``json`` checks the syntax (and names the line of a mistake); a small scanner then walks the
same text to build positioned nodes, decoding strings with ``json``'s own ``scanstring``.
"""

from __future__ import annotations

import bisect
import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]  # untyped, but public
from typing import TextIO

from .document import Document, Header, Problems, redact
from .tree import Node, read_tree

_SPACE = re.compile(r"[ \t\n\r]*")
_ATOM = re.compile(r"[^\s,\]\}:]+")
_ATOM_TYPES = {"true": "a boolean", "false": "a boolean", "null": "null"}


def read(stream: TextIO, out: Problems) -> Document:
    text = stream.read()
    try:
        json.loads(text)
        root = _Scanner(text).document()
    except json.JSONDecodeError as exc:
        out.error(exc.lineno, redact(f"not valid JSON: {exc.msg}"))
        return Document(Header(), iter(()))
    except RecursionError:
        out.error(None, "the JSON is nested too deeply")
        return Document(Header(), iter(()))
    return read_tree(root, out)


class _Scanner:
    """Builds nodes from text that ``json`` has already accepted."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._newlines = [match.start() for match in re.finditer("\n", text)]

    def document(self) -> Node:
        node, _ = self._value(0)
        return node

    def _line(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _skip(self, pos: int) -> int:
        match = _SPACE.match(self._text, pos)
        return pos if match is None else match.end()

    def _value(self, pos: int) -> tuple[Node, int]:
        pos = self._skip(pos)
        char, line = self._text[pos], self._line(pos)
        if char == '"':
            text, end = scanstring(self._text, pos + 1)
            return Node("str", line, text), end
        if char == "[":
            return self._array(pos + 1, line)
        if char == "{":
            return self._object(pos + 1, line)
        match = _ATOM.match(self._text, pos)
        assert match is not None  # json.loads accepted the text
        atom = match.group()
        return Node("other", line, atom, _ATOM_TYPES.get(atom, "a number")), match.end()

    def _array(self, pos: int, line: int) -> tuple[Node, int]:
        items: list[Node] = []
        pos = self._skip(pos)
        while self._text[pos] != "]":
            item, pos = self._value(pos)
            items.append(item)
            pos = self._skip(pos)
            if self._text[pos] == ",":
                pos += 1
        return Node("seq", line, items=tuple(items)), pos + 1

    def _object(self, pos: int, line: int) -> tuple[Node, int]:
        pairs: list[tuple[Node, Node]] = []
        pos = self._skip(pos)
        while self._text[pos] != "}":
            key, pos = self._value(pos)
            pos = self._skip(pos) + 1  # the colon
            value, pos = self._value(pos)
            pairs.append((key, value))
            pos = self._skip(pos)
            if self._text[pos] == ",":
                pos = self._skip(pos + 1)
        return Node("map", line, pairs=tuple(pairs)), pos + 1
