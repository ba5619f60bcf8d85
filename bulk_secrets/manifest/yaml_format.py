"""YAML manifests: the only module that imports ``yaml``.

The document is built from the parser's events, never constructed: each scalar keeps its exact
text and its resolved tag, so ``0123`` or ``yes`` written without quotes can be reported rather
than converted. Building from events also bounds the work by the size of the file:

- an alias (``*name``) of a list or a mapping is refused where it stands, so that a few lines
  of nested aliases (a "billion laughs") cannot expand into billions of nodes; an alias of a
  scalar is one node, and is allowed;
- nesting deeper than :data:`MAX_DEPTH` is refused (a manifest needs five levels);
- a scalar longer than the value size limit is not resolved (PyYAML's resolvers try a dozen
  patterns, slow on megabytes of digits): wherever it stands it is refused, as a value for its
  size and as anything else for its length.

libyaml's parser is used when PyYAML has it (about fifty times faster: a 100 MB value is parsed
in about a second), else PyYAML's own. That one is handed the whole text, never a stream: from a
stream it copies its buffer at each 4 KiB read while a token lasts, which is quadratic in the
length of a value.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import re
from typing import Any, TextIO

import yaml
from yaml.composer import ComposerError

from .document import Document, Header, Problems, redact
from .tree import Node, read_tree

MAX_DEPTH = 64
_TAB_INDENT = re.compile(r"(?:[ \t]|[-?:](?=[ \t]))*\t")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STANDARD_TAG = "tag:yaml.org,2002:"
_STR = _STANDARD_TAG + "str"
# Plain scalars that PyYAML (YAML 1.1) reads as text but YAML 1.2's core schema does not, such
# as 1e3: another tool reading the same file would convert them, so they must be quoted too.
_CORE_NOT_TEXT = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
    r"|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
    r"|true|True|TRUE|false|False|FALSE|null|Null|NULL|~"
)


def read(stream: TextIO, out: Problems, *, max_value_bytes: int | None = None) -> Document:
    pure = issubclass(_LOADER, yaml.reader.Reader)  # PyYAML's own parser, not libyaml's
    text = stream.read() if pure else None
    loader = _LOADER(stream if text is None else text)
    try:
        root = _Builder(loader, max_value_bytes).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        if mark is not None and _tab_in_indentation(_line_of(stream, text, mark.line), mark.column):
            out.error(line, "a tab in the indentation: YAML indents with spaces")
            return Document(Header(), iter(()))
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        out.error(line, redact(f"not valid YAML: {exc.problem}{context}"))
        return Document(Header(), iter(()))
    except yaml.YAMLError as exc:
        out.error(None, f"not valid YAML: {type(exc).__name__}")
        return Document(Header(), iter(()))
    except UnicodeEncodeError:  # text handed in with lone surrogates: not from a UTF-8 file
        out.error(None, "not UTF-8 text")
        return Document(Header(), iter(()))
    finally:
        loader.dispose()
    return read_tree(root, out)


def _line_of(stream: TextIO, text: str | None, index: int) -> str | None:
    """Line ``index`` (from 0) of the manifest, read again; None if it cannot be."""
    try:
        if text is None:
            stream.seek(0)
        lines = stream if text is None else io.StringIO(text, newline="")
        return next(itertools.islice(lines, index, None), None)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _tab_in_indentation(line: str | None, column: int) -> bool:
    """Whether the parser stopped at a tab that stands in the indentation of its line, among
    the spaces and the indicators of a list item (``-``) or a key (``?``, ``:``)."""
    return line is not None and _TAB_INDENT.fullmatch(line[: column + 1]) is not None


class _Builder:
    """Positioned nodes from the parser's events, as PyYAML's composer would build them, with
    the aliases of lists and mappings refused."""

    def __init__(self, loader: Any, max_value_bytes: int | None) -> None:
        self._loader = loader
        self._anchors: dict[str, Node | None] = {}  # None: a list or a mapping
        self._resolved = max_value_bytes  # the longest scalar whose tag is resolved

    def document(self) -> Node | None:
        loader = self._loader
        loader.get_event()  # the stream starts
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # the document starts
        root = self._node(0)
        loader.get_event()  # the document ends
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise ComposerError(
                None, None, "expected one document, but found another", event.start_mark
            )
        return root

    def _node(self, depth: int) -> Node:
        loader = self._loader
        event = loader.get_event()
        line = int(event.start_mark.line) + 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self._anchors:
                raise _refused("an alias (*name) refers to no anchor (&name) before it", event)
            target = self._anchors[event.anchor]
            if target is None:
                raise _refused(
                    "an alias (*name) of a list or a mapping is not allowed, as it could "
                    "expand without bound: write the list or mapping out",
                    event,
                )
            return dataclasses.replace(target, line=line)
        if depth >= MAX_DEPTH:
            raise _refused(f"nested more than {MAX_DEPTH} levels deep", event)
        anchor = event.anchor
        if isinstance(event, yaml.ScalarEvent):
            node = _scalar(loader, event, line, self._resolved)
            if anchor is not None:
                self._anchors[anchor] = node
            return node
        if anchor is not None:
            self._anchors[anchor] = None
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Node] = []
            while not loader.check_event(yaml.SequenceEndEvent):
                items.append(self._node(depth + 1))
            loader.get_event()
            return Node("seq", line, items=tuple(items))
        pairs: list[tuple[Node, Node]] = []
        while not loader.check_event(yaml.MappingEndEvent):
            key = self._node(depth + 1)
            pairs.append((key, self._node(depth + 1)))
        loader.get_event()
        return Node("map", line, pairs=tuple(pairs))


def _refused(problem: str, event: Any) -> ComposerError:
    return ComposerError(None, None, problem, event.start_mark)


def _scalar(loader: Any, event: Any, line: int, resolved: int | None) -> Node:
    text = str(event.value)
    tag = event.tag
    if tag is None and resolved is not None and len(text) > resolved:
        return Node("str", line, text)  # over the size limit: refused as it is
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, text, event.implicit)
    if tag != _STR:
        # A tag of the file's own (``!name``) is text of the file: it is not shown.
        kind = tag[len(_STANDARD_TAG) :] if tag.startswith(_STANDARD_TAG) else "tagged data (!tag)"
        return Node("other", line, text, kind)
    if not event.style and _CORE_NOT_TEXT.fullmatch(text):  # plain: None, or "" from libyaml
        return Node("other", line, text, "a number or boolean by YAML 1.2")
    return Node("str", line, text)
