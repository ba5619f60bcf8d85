"""YAML manifests: the only module that imports ``yaml``.

The document is composed, not constructed: each scalar keeps its exact text and its resolved
tag, so ``0123`` or ``yes`` written without quotes can be reported rather than converted.
"""

from __future__ import annotations

import re
from typing import TextIO

import yaml

from .document import Document, Header, Problems
from .tree import Node, read_tree

_STR = "tag:yaml.org,2002:str"
# Plain scalars that PyYAML (YAML 1.1) reads as text but YAML 1.2's core schema does not, such
# as 1e3: another tool reading the same file would convert them, so they must be quoted too.
_CORE_NOT_TEXT = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
    r"|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
    r"|true|True|TRUE|false|False|FALSE|null|Null|NULL|~"
)


def read(stream: TextIO, out: Problems) -> Document:
    try:
        composed = yaml.compose(stream, Loader=yaml.SafeLoader)
        root = None if composed is None else _convert(composed, out, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context = f" ({exc.context} at line {exc.context_mark.line + 1})"
        line = None if mark is None else mark.line + 1
        out.error(line, f"not valid YAML: {exc.problem}{context}")
        return Document(Header(), iter(()))
    except yaml.YAMLError as exc:
        out.error(None, f"not valid YAML: {type(exc).__name__}")
        return Document(Header(), iter(()))
    except RecursionError:
        out.error(None, "the YAML is nested too deeply")
        return Document(Header(), iter(()))
    return read_tree(root, out)


def _convert(node: yaml.Node, out: Problems, path: set[int]) -> Node:
    line = int(node.start_mark.line) + 1
    if isinstance(node, yaml.ScalarNode):
        text = str(node.value)
        if node.tag != _STR:
            return Node("other", line, text, node.tag.rsplit(":", 1)[-1])
        if node.style is None and _CORE_NOT_TEXT.fullmatch(text):
            return Node("other", line, text, "a number or boolean by YAML 1.2")
        return Node("str", line, text)
    if id(node) in path:  # an alias that contains itself
        out.error(line, "a YAML alias refers to itself")
        return Node("seq", line)
    path.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return Node("seq", line, items=tuple(_convert(n, out, path) for n in node.value))
        pairs = tuple((_convert(k, out, path), _convert(v, out, path)) for k, v in node.value)
        return Node("map", line, pairs=pairs)
    finally:
        path.discard(id(node))
