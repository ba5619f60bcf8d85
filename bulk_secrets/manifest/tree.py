"""The structure that YAML and JSON manifests share, read from a tree of positioned nodes.

::

    version: 1                      # optional, must be 1
    account: a  |  accounts: [a, b] # optional target accounts
    apiKeys: {b: {fromEnv: VAR}}    # optional per-account API keys
    secrets:                        # a list of entries, or a {KEY: value} mapping
      - {keyName: K, value: "v"}    # exactly one of value / fromEnv / fromFile /
                                    # fromCommand ([program, arg, ...]); optional id, and
                                    # accounts (a subset of the above)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..naming import is_account_id, is_variable_name, key_name_problem
from .document import (
    SOURCE_FIELDS,
    Document,
    FromCommand,
    FromEnv,
    FromFile,
    Header,
    Inline,
    Problems,
    RawEntry,
    Source,
)

TOP_FIELDS = ("version", "account", "accounts", "apiKeys", "secrets")
VALUE_FIELDS = (*SOURCE_FIELDS, "fromCommand")
ENTRY_FIELDS = ("keyName", *VALUE_FIELDS, "id", "accounts")


@dataclass(frozen=True, slots=True)
class Node:
    """A parsed node with its line. ``kind`` is map, seq, str (text) or other (any scalar that
    is not text, ``type`` saying what it would be read as); ``text`` is a scalar's raw text."""

    kind: str
    line: int
    text: str = ""
    type: str = ""
    items: tuple[Node, ...] = ()
    pairs: tuple[tuple[Node, Node], ...] = ()


def read_tree(root: Node | None, out: Problems) -> Document:
    header = Header()
    if root is None:
        out.error(None, "the manifest is empty")
        return Document(header, iter(()))
    if root.kind != "map":
        out.error(root.line, "the manifest must be a mapping with a 'secrets:' field")
        return Document(header, iter(()))
    fields = _fields(root, TOP_FIELDS, out)
    if "version" in fields and fields["version"].text != "1":
        out.error(fields["version"].line, "version must be 1")
    if "account" in fields and "accounts" in fields:
        out.error(fields["accounts"].line, "give either account or accounts, not both")
    elif "account" in fields:
        account = _text(fields["account"], "account", out)
        if account is not None:
            header.accounts, header.accounts_line = (account,), fields["account"].line
    elif "accounts" in fields:
        accounts = _text_list(fields["accounts"], "accounts", out)
        if accounts == ():
            out.error(fields["accounts"].line, "accounts is empty")
        elif accounts is not None:
            header.accounts, header.accounts_line = accounts, fields["accounts"].line
    if "apiKeys" in fields:
        _api_keys(fields["apiKeys"], header, out)
    secrets = fields.get("secrets")
    if secrets is None:
        out.error(None, "the manifest has no 'secrets:' field")
        return Document(header, iter(()))
    return Document(header, _entries(secrets, out))


def _entries(secrets: Node, out: Problems) -> Iterator[RawEntry]:
    if secrets.kind == "seq":
        for item in secrets.items:
            entry = _entry(item, None, out)
            if entry is not None:
                yield entry
    elif secrets.kind == "map":
        for key, value in _unique_pairs(secrets, out):
            if value.kind == "map":
                entry = _entry(value, key, out)
            elif _backwards(key, value):
                out.error(
                    key.line,
                    f"{key_name_problem(key.text)}, but its value is one: the shorthand is "
                    "KEY_NAME: value (is it written the other way round?)",
                )
                entry = None
            else:
                text = _text(value, "value", out)
                entry = None if text is None else RawEntry(key.line, key.text, Inline(text))
            if entry is not None:
                yield entry
    else:
        out.error(secrets.line, "'secrets:' must be a list of entries or a KEY: value mapping")


def _entry(node: Node, key: Node | None, out: Problems) -> RawEntry | None:
    if node.kind != "map":
        out.error(node.line, "each secret must be a mapping with keyName and value")
        return None
    known = ENTRY_FIELDS if key is None else tuple(f for f in ENTRY_FIELDS if f != "keyName")
    fields = _fields(node, known, out)
    key_name = key.text if key is not None else None
    if "keyName" in fields:
        key_name = _text(fields["keyName"], "keyName", out)
    elif key is None:
        out.error(node.line, "the entry has no keyName")
    given = [name for name in VALUE_FIELDS if name in fields]
    if not given:
        out.error(
            node.line, "the entry has no value: give one of value, fromEnv, fromFile or fromCommand"
        )
    elif len(given) > 1:
        out.error(fields[given[1]].line, f"give one of {' or '.join(given)}, not both")
    source = _source(given[0], fields[given[0]], out) if len(given) == 1 else None
    secret_id = _text(fields["id"], "id", out) if "id" in fields else None
    accounts = _text_list(fields["accounts"], "accounts", out) if "accounts" in fields else None
    if key_name is None:
        return None
    line = node.line if key is None else key.line
    field_lines = {name: value.line for name, value in fields.items()}
    return RawEntry(line, key_name, source, secret_id, accounts, field_lines=field_lines)


def _backwards(key: Node, value: Node) -> bool:
    """Whether a shorthand pair looks written the other way round: ``"<value>": KEY_NAME``."""
    return (
        key_name_problem(key.text) is not None
        and value.kind == "str"
        and is_variable_name(value.text)
    )


def _source(name: str, node: Node, out: Problems) -> Source | None:
    if name == "fromCommand":
        return _command(node, out)
    text = _text(node, name, out)
    if text is None:
        return None
    if name == "value":
        return Inline(text)
    if not text:
        out.error(node.line, f"{name} is empty")
        return None
    return FromEnv(text) if name == "fromEnv" else FromFile(text)


def _command(node: Node, out: Problems) -> FromCommand | None:
    """``fromCommand: [program, arg, ...]``: a list, as the program is run without a shell."""
    if node.kind != "seq":
        out.error(
            node.line,
            "fromCommand must be a list, [program, arg, ...]: it runs without a shell, so "
            "write each argument as an item of its own",
        )
        return None
    argv = _text_list(node, "fromCommand", out)
    if argv is None:
        return None
    if not argv:
        out.error(node.line, "fromCommand is empty: give at least the program, [program, ...]")
        return None
    if not argv[0]:
        out.error(node.line, "the program of fromCommand is empty")
        return None
    if any("\x00" in arg for arg in argv):
        out.error(node.line, "an item of fromCommand holds a NUL character")
        return None
    return FromCommand(argv)


def _api_keys(node: Node, header: Header, out: Problems) -> None:
    if node.kind != "map":
        out.error(node.line, "apiKeys must map each account to {fromEnv: VARIABLE}")
        return
    for account, spec in _unique_pairs(node, out):
        fields = _fields(spec, ("fromEnv",), out) if spec.kind == "map" else {}
        var = _text(fields["fromEnv"], "fromEnv", out) if "fromEnv" in fields else None
        if spec.kind != "map" or "fromEnv" not in fields:
            whose = repr(account.text) if is_account_id(account.text) else "an account"
            out.error(spec.line, f"the API key of {whose} must be {{fromEnv: VARIABLE}}")
        elif var:
            header.api_keys[account.text] = (var, fields["fromEnv"].line)


def _fields(node: Node, known: tuple[str, ...], out: Problems) -> dict[str, Node]:
    fields: dict[str, Node] = {}
    for key, value in _unique_pairs(node, out):
        if key.text in known:
            fields[key.text] = value
        else:
            out.unknown(key.line, key.text, known, "field")
    return fields


def _unique_pairs(node: Node, out: Problems) -> Iterator[tuple[Node, Node]]:
    seen: set[str] = set()
    for key, value in node.pairs:
        if key.kind in ("map", "seq"):
            out.error(key.line, "a key must be a plain name")
        elif key.text in seen:
            # Quoted only when it is a name: the key of a mapping written backwards is a value.
            named = is_variable_name(key.text) or is_account_id(key.text)
            shown = repr(key.text) if named else "a key (not shown)"
            out.error(key.line, f"{shown} appears twice in the same mapping")
        else:
            seen.add(key.text)
            yield key, value


def _text(node: Node, what: str, out: Problems) -> str | None:
    """A node's exact text; anything that is not text is a problem, never a conversion."""
    if node.kind == "str":
        return node.text
    if node.kind == "other":
        shown = "the value" if what == "value" else what  # never echo what may be a value
        out.error(node.line, f"{shown} would be read as {node.type}, not text: put it in quotes")
    else:
        shape = "a list" if node.kind == "seq" else "a mapping"
        out.error(node.line, f"{what} must be text, not {shape}")
    return None


def _text_list(node: Node, what: str, out: Problems) -> tuple[str, ...] | None:
    if node.kind != "seq":
        out.error(node.line, f"{what} must be a list")
        return None
    texts = [_text(item, f"an item of {what}", out) for item in node.items]
    if any(text is None for text in texts):
        return None
    return tuple(text for text in texts if text is not None)
