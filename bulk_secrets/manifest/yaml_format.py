"""YAML manifests: the only module that imports ``yaml``.

The document is composed, not constructed: each scalar keeps its exact text and its resolved
tag, so ``0123`` or ``yes`` written without quotes can be reported rather than converted.
"""

from __future__ import annotations

from typing import TextIO

import yaml

from .model import Document, Problems
from .tree import Node, read_tree

_STR = "tag:yaml.org,2002:str"


def read(stream: TextIO, out: Problems) -> Document:
    try:
        composed = yaml.compose(stream, Loader=yaml.SafeLoader)
        root = None if composed is None else _convert(composed, out, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        out.error(None if mark is None else mark.line + 1, f"not valid YAML: {exc.problem}")
        return read_tree(Node("map", 1), Problems(out.path, quiet=True))
    except yaml.YAMLError as exc:
        out.error(None, f"not valid YAML: {type(exc).__name__}")
        return read_tree(Node("map", 1), Problems(out.path, quiet=True))
    except RecursionError:
        out.error(None, "the YAML is nested too deeply")
        return read_tree(Node("map", 1), Problems(out.path, quiet=True))
    return read_tree(root, out)


def _convert(node: yaml.Node, out: Problems, path: set[int]) -> Node:
    line = int(node.start_mark.line) + 1
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR:
            return Node("str", line, str(node.value))
        return Node("other", line, str(node.value), node.tag.rsplit(":", 1)[-1])
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
