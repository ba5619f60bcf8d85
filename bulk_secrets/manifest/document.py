"""What the format readers hand to the loader: raw entries, a header, and the problems found."""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import ManifestChanged, Problem
from ..models import SecretValue

# What a reader makes for each entry (a source and a raw entry) is a plain slotted class: a
# frozen dataclass costs several times as much to build, once per row of a million-row
# manifest.


class Inline(SecretValue):
    """A value written in the manifest itself. The source is the value, masked as every
    :class:`SecretValue` is: one object per row of the largest manifests, not two."""

    __slots__ = ()

    def describe(self) -> str:
        return "value"


@dataclass(slots=True)
class FromEnv:
    """A value taken from an environment variable when the manifest is applied."""

    var: str

    def describe(self) -> str:
        return f"env:{self.var}"


@dataclass(slots=True)
class FromFile:
    """A value read from a file (relative to the manifest's folder), as UTF-8, unchanged."""

    path: str

    def describe(self) -> str:
        return f"file:{self.path}"


@dataclass(frozen=True, slots=True)
class FromCommand:
    """A value printed by a program (a secret manager's client), run once, without a shell,
    while the manifest is checked. ``argv``: the program and its arguments.

    Only the program's name is ever shown: its arguments are references to secrets
    (``op://vault/item``), but may hold more than that."""

    argv: tuple[str, ...]

    @property
    def program(self) -> str:
        """The program's name, without its folder."""
        return os.path.basename(self.argv[0]) or self.argv[0]

    def describe(self) -> str:
        return f"command:{self.program}"


Source = Inline | FromEnv | FromFile | FromCommand
# The value columns of every format; YAML and JSON entries may also give ``fromCommand``.
SOURCE_FIELDS = ("value", "fromEnv", "fromFile")


@dataclass(slots=True)
class RawEntry:
    """One secret as a manifest writes it, before its names, value and accounts are checked.

    ``tabular`` entries come from CSV rows: their problems name a column.
    """

    line: int
    key_name: str
    source: Source | None  # None: the value was unusable, and that problem is reported
    secret_id: str | None = None
    accounts: tuple[str, ...] | None = None
    tabular: bool = False
    field_lines: dict[str, int] | None = None  # where each field stands, when not on ``line``

    def line_of(self, field: str) -> int:
        """The line of one field, for a problem with that field."""
        return self.field_lines.get(field, self.line) if self.field_lines else self.line


def chars_within(max_bytes: int) -> int:
    """The most characters a text may have and be sure to be within ``max_bytes`` in UTF-8,
    whatever they are (a character takes at most 4 bytes): a longer one must be measured."""
    return max_bytes // 4


# The entry of a CSV row of a keyName, a value and perhaps an account (no id), the usual row of
# the largest manifests: ``(line, key_name, value, account)``, the value not empty and too short
# to be over the size limit, the account "" when the row names none. A plain tuple costs a fifth
# of a :class:`RawEntry`; the loader checks it without making one (see :func:`as_raw_entry` for
# when it must).
PlainRow = tuple[int, str, Inline, str]


class PlainBlock:
    """Consecutive CSV rows of a keyName, a value and perhaps an account, read at once from a
    file whose lines hold no quotes: each row one line from ``line`` on, with a keyName and a
    value that is not empty and too short to be over the size limit. The loader checks them
    together, in a few calls for the whole block (see :func:`rows` for the rows one by one).
    Its repr counts the rows and shows none of them."""

    __slots__ = ("accounts", "key_names", "line", "values")

    def __init__(
        self, line: int, key_names: list[str], values: list[Inline], accounts: list[str] | None
    ) -> None:
        self.line = line
        self.key_names = key_names
        self.values = values
        self.accounts = accounts  # None: the header has no account column

    def rows(self) -> Iterator[PlainRow]:
        count = len(self.key_names)
        accounts = self.accounts or itertools.repeat("", count)
        lines = range(self.line, self.line + count)
        return zip(lines, self.key_names, self.values, accounts, strict=True)

    def __repr__(self) -> str:
        return f"PlainBlock(line={self.line}, rows={len(self.key_names)})"


def as_raw_entry(entry: RawEntry | PlainRow) -> RawEntry:
    """The entry as a :class:`RawEntry`: a :data:`PlainRow` is a CSV row (``tabular``)."""
    if isinstance(entry, RawEntry):
        return entry
    line, key_name, value, account = entry
    accounts = (account,) if account else None
    return RawEntry(line, key_name, value, accounts=accounts, tabular=True)


@dataclass
class Header:
    """The manifest-wide settings: its accounts and per-account API keys."""

    accounts: tuple[str, ...] = ()
    accounts_line: int | None = None
    api_keys: dict[str, tuple[str, int]] = field(default_factory=dict)  # account -> (var, line)


def _nothing() -> None:
    pass


@dataclass
class Document:
    """What a reader found: the header, and the entries as they are read. ``close`` is called
    once the entries are read or abandoned (the loader closes the file there)."""

    header: Header
    entries: Iterator[RawEntry | PlainRow | PlainBlock]
    close: Callable[[], None] = _nothing


class Problems:
    """Collects the problems of one file. A quiet collector serves the second pass over a file
    already checked: a problem there means the file changed, and stops the run."""

    def __init__(self, path: str, *, quiet: bool = False) -> None:
        self.path = path
        self.quiet = quiet
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, line: int | None, message: str, column: str | None = None) -> None:
        if self.quiet:
            raise ManifestChanged(self.path)
        self.errors.append(Problem(self.path, line, message, column))

    def warn(self, line: int | None, message: str) -> None:
        if not self.quiet:
            self.warnings.append(Problem(self.path, line, message, warning=True))

    def unknown(
        self,
        line: int | None,
        name: str,
        known: Sequence[str],
        what: str,
        column: str | None = None,
    ) -> None:
        """An unknown field or column. It is named, with the known name it is close to, only
        when it looks like that name misspelt (a short identifier, close to a known name
        whatever its case); anything else may be a value, and is not shown."""
        close = _close_match(name, known) if _NAME.fullmatch(name) else None
        if close is None:
            self.error(
                line,
                f"an unknown {what} (not shown: it may be a value); "
                f"the known {what}s are {', '.join(known)}",
            )
        else:
            self.error(line, f"unknown {what} {name!r}; did you mean {close!r}?", column)


# What a misspelt field or column name may look like: short, and no other characters.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")
# A quoted part of a parser's message: kept when it is a token's name or one punctuation mark
# (``expected ',' or ']'``), else it is text of the file (a character of a value, an alias).
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')
_KEPT = re.compile(r"""(['"])(<[a-z ]+>|[-,:\[\]{}<>!.|?#&*%@`"']| )\1""")


def _close_match(name: str, known: Sequence[str]) -> str | None:
    folded = {option.casefold(): option for option in known}
    close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None


def redact(message: str) -> str:
    """A parser's message without the text of the file it may quote (``found character 'x'``,
    ``found undefined alias 'name'``): whatever it quotes may be part of a value."""
    return _QUOTED.sub(_shown, message)


def _shown(match: re.Match[str]) -> str:
    return match.group() if _KEPT.fullmatch(match.group()) else "(not shown)"
