"""Manifests in: YAML or CSV -> secret specs, with every problem found at once, at file:line.

A manifest is checked whole before anything is sent. Values are text, exactly as written: a YAML
value that YAML would not read as a string (``yes``, ``0123``, ``1e3``, ``null``) is an error
that asks for quotes, never a silent conversion.

YAML::

    account: my-account          # optional; --account overrides it
    secrets:
      - keyName: OPENAI_API_KEY
        value: "sk-..."

CSV: a ``keyName,value`` header, then one secret per row (RFC 4180; quoted values may span lines).
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ManifestError, Problem
from .models import SecretSpec, SecretValue
from .naming import account_id_problem, key_name_problem, secret_id_for, secret_id_problem

FORMATS = ("yaml", "csv")
_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".csv": "csv"}
_ENTRY_FIELDS = ("keyName", "value")
_TOP_FIELDS = ("account", "secrets")
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True, slots=True)
class Entry:
    """One secret as the manifest writes it, before it is aimed at an account."""

    key_name: str
    secret_id: str
    value: SecretValue
    location: str


@dataclass
class Manifest:
    path: str
    entries: list[Entry] = field(default_factory=list)
    accounts: tuple[str, ...] = ()
    warnings: list[Problem] = field(default_factory=list)

    def specs(self, accounts: Sequence[str]) -> Iterator[SecretSpec]:
        """Every entry for every account, account by account."""
        for account in accounts:
            for entry in self.entries:
                yield SecretSpec(
                    account=account,
                    key_name=entry.key_name,
                    secret_id=entry.secret_id,
                    value=entry.value,
                    location=entry.location,
                )


class _Collector:
    """Gathers problems and entries of one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        self.manifest = Manifest(path)
        self._ids: dict[str, str] = {}

    def error(self, line: int | None, message: str, column: str | None = None) -> None:
        self.problems.append(Problem(self.path, line, message, column))

    def warn(self, line: int | None, message: str) -> None:
        self.manifest.warnings.append(Problem(self.path, line, message, warning=True))

    def add(self, line: int, key_name: str, value: str | None) -> None:
        """Check an entry's name and id; keep it when its value (None: unusable) is fine too."""
        problem = key_name_problem(key_name)
        if problem:
            self.error(line, problem)
            return
        secret_id = secret_id_for(key_name)
        problem = secret_id_problem(secret_id)
        if problem:
            self.error(line, problem)
            return
        location = f"{self.path}:{line}"
        earlier = self._ids.get(secret_id)
        if earlier is not None:
            self.error(
                line, f"{key_name} maps to secret id {secret_id!r}, already used at {earlier}"
            )
            return
        self._ids[secret_id] = location
        if value is None:
            return
        if value == "":
            self.warn(line, f"{key_name} has an empty value")
        self.manifest.entries.append(Entry(key_name, secret_id, SecretValue(value), location))

    def unknown(self, line: int, name: str, known: Iterable[str], what: str) -> None:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.error(line, f"unknown {what} {name!r}{hint}")

    def result(self) -> Manifest:
        if not self.manifest.entries and not self.problems:
            self.error(None, "the manifest has no secrets")
        if self.problems:
            raise ManifestError(self.problems)
        return self.manifest


def load_manifest(path: str | Path, *, format: str | None = None) -> Manifest:
    """Read and check a manifest; raise :class:`ManifestError` listing every problem."""
    name = str(path)
    kind = format or _SUFFIXES.get(Path(name).suffix.lower())
    if kind not in FORMATS:
        raise ManifestError(
            [Problem(name, None, "unknown manifest format: use .yaml, .yml or .csv")]
        )
    try:
        text = Path(name).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ManifestError([Problem(name, None, f"cannot read: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(name, None, f"not UTF-8 text (byte {exc.start})")]) from exc
    collector = _Collector(name)
    if kind == "yaml":
        _parse_yaml(text, collector)
    else:
        _parse_csv(text, collector)
    return collector.result()


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _text(node: yaml.Node, what: str, out: _Collector) -> str | None:
    """A scalar's exact text, or a problem if YAML would read it as anything but a string."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _STR_TAG:
            return str(node.value)
        shown = "the value" if what == "value" else f"{what} {node.value!r}"  # never echo a value
        out.error(
            _line(node),
            f"{shown} would be read as {node.tag.rsplit(':', 1)[-1]}, not text: put it in quotes",
        )
        return None
    shape = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
    out.error(_line(node), f"{what} must be text, not a {shape}")
    return None


def _parse_yaml(text: str, out: _Collector) -> None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        out.error(None if mark is None else mark.line + 1, f"not valid YAML: {exc.problem}")
        return
    except yaml.YAMLError as exc:
        out.error(None, f"not valid YAML: {exc}")
        return
    if not isinstance(root, yaml.MappingNode):
        out.error(
            None if root is None else _line(root),
            "the manifest must be a mapping with a 'secrets:' list",
        )
        return
    secrets: yaml.Node | None = None
    for key_node, value_node in root.value:
        key = str(key_node.value)
        if key == "secrets":
            secrets = value_node
        elif key == "account":
            account = _text(value_node, "account", out)
            if account is not None:
                problem = account_id_problem(account)
                if problem:
                    out.error(_line(value_node), problem)
                else:
                    out.manifest.accounts = (account,)
        else:
            out.unknown(_line(key_node), key, _TOP_FIELDS, "field")
    if secrets is None:
        out.error(None, "the manifest has no 'secrets:' list")
        return
    if not isinstance(secrets, yaml.SequenceNode):
        out.error(_line(secrets), "'secrets:' must be a list of {keyName, value} entries")
        return
    for item in secrets.value:
        _parse_yaml_entry(item, out)


def _parse_yaml_entry(node: yaml.Node, out: _Collector) -> None:
    line = _line(node)
    if not isinstance(node, yaml.MappingNode):
        out.error(line, "each secret must be a mapping with keyName and value")
        return
    fields: dict[str, str | None] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key not in _ENTRY_FIELDS:
            out.unknown(_line(key_node), key, _ENTRY_FIELDS, "field")
            continue
        fields[key] = _text(value_node, key, out)
    for required in _ENTRY_FIELDS:
        if required not in fields:
            out.error(line, f"entry has no {required}")
    key_name = fields.get("keyName")
    if key_name is not None:
        out.add(line, key_name, fields.get("value"))


def _parse_csv(text: str, out: _Collector) -> None:
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            out.error(None, "the CSV file is empty: it needs a keyName,value header")
            return
        names = [name.strip() for name in header]
        for name in names:
            if name not in _ENTRY_FIELDS:
                out.unknown(1, name, _ENTRY_FIELDS, "column")
        missing = [name for name in _ENTRY_FIELDS if name not in names]
        if missing:
            out.error(1, f"the header has no {' or '.join(missing)} column")
            return
        key_at, value_at = names.index("keyName"), names.index("value")
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) != len(names):
                out.error(start, f"row has {len(row)} fields, the header has {len(names)}")
            elif row:
                out.add(start, row[key_at], row[value_at])
            start = reader.line_num + 1
    except csv.Error as exc:
        out.error(reader.line_num, f"not valid CSV: {exc}")
