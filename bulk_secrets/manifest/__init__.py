"""Manifests in: YAML, JSON, CSV or dotenv -> secret specs, checked whole before anything is sent.

A manifest is read twice. The first pass checks everything (names, ids, accounts, that every
environment variable is set and every file readable, that no value is over the size limit, that
no two entries share an id in one account) and keeps only what that needs: counts and hashes,
never values. The second pass, when the run asks for specs, reads the values. So a million-row
CSV manifest is never held in memory.

The one exception is ``fromCommand``: a program run for a value (a secret manager's client) runs
in the first pass, when the run allows it (``allow_commands``), so that its failure is found
before the first request; its value is kept, in memory only, for the second pass, which never
runs it again (see :mod:`.commands`).

A problem names its file and line (and, for CSV, the column) and what is wrong; it never
quotes text of the manifest from where a value could stand. A name is quoted only when it is a
valid one: a keyName or account id that is not valid may be a value shifted into its place.
"""

from __future__ import annotations

import functools
import io
import itertools
import operator
import os
import re
import stat
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

from ..errors import ManifestChanged, ManifestError, Problem, UsageError
from ..models import SecretSpec, SecretValue, Target
from ..naming import (
    MAX_ID_LENGTH,
    account_id_problem,
    is_account_id,
    is_variable_name,
    key_name_problem,
    secret_id_for,
    secret_id_problem,
)
from ..sharding import Shard
from . import commands, csv_format, dotenv_format, json_format, yaml_format
from .document import (
    Document,
    FromCommand,
    FromEnv,
    FromFile,
    Header,
    Inline,
    PlainBlock,
    PlainRow,
    Problems,
    RawEntry,
    Source,
    as_raw_entry,
    chars_within,
)

FORMATS = ("yaml", "json", "csv", "dotenv")
STDIN = "-"
_READERS: Mapping[str, Callable[[TextIO, Problems], Document]] = {
    "yaml": yaml_format.read,
    "json": json_format.read,
    "csv": csv_format.read,
    "dotenv": dotenv_format.read,
}
# Up to this many entries, the first pass keeps what it checked and the second reads no file
# (a few hundred bytes each, values aside); past it, the file is read again as a stream.
KEEP_LIMIT = 50_000
# The largest value, in bytes of UTF-8, by default: inline, from the environment, a file or a
# command.
MAX_VALUE_BYTES = 1024 * 1024
# How long a fromCommand may run, by default, in seconds.
COMMAND_TIMEOUT = commands.DEFAULT_TIMEOUT
# What may separate the fields of a CSV manifest.
CSV_DELIMITERS = csv_format.DELIMITERS
# fromFile opens without blocking (a FIFO that slipped in between the check and the open must
# not hang the run) and never becomes a controlling terminal.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_CHUNK = 1024 * 1024
_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv", ".env": "dotenv"}


def format_of(path: str) -> str | None:
    """The format a file name implies: by suffix, and ``.env`` / ``.env.*`` for dotenv."""
    name = Path(path).name.lower()
    if name == ".env" or name.startswith(".env."):
        return "dotenv"
    return _SUFFIXES.get(Path(name).suffix)


# An entry that passed its checks: ``(line, key_name, secret_id, source, accounts, excluded)``,
# its line, names and source, the accounts it goes to, and those of its own accounts that the
# accounts given to the run left out. A plain tuple: the first pass keeps up to ``KEEP_LIMIT``
# of them, and makes one per row.
_Checked = tuple[int, str, str, Source | None, tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class _PendingCommand:
    """A fromCommand found by the first pass, to run before the check ends: the ``index`` of
    its entry among the checked ones, and where to report its problem."""

    index: int
    line: int
    key_name: str
    command: commands.Command


class Manifest:
    """One checked manifest file. Build it with :func:`load_manifests`."""

    def __init__(
        self,
        path: str,
        format: str,
        *,
        override: Sequence[str] | None,
        default_accounts: Sequence[str],
        env: Mapping[str, str],
        text: str | None,
        max_value_bytes: int = MAX_VALUE_BYTES,
        allow_commands: bool = False,
        csv_delimiter: str = ",",
        shard: Shard | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.started = time.monotonic()  # when its reading began
        self.count = 0  # secrets, counting each account a secret goes to
        self.excluded_count = 0  # (secret, account) pairs the accounts given left out
        self.max_value_bytes = max_value_bytes
        self.allow_commands = allow_commands
        self.csv_delimiter = csv_delimiter
        self._accounts: dict[str, int] = {}  # the accounts it targets, in order: secrets each
        self.warnings: list[Problem] = []
        self.api_keys: dict[str, str] = {}
        self._override = None if override is None else tuple(override)
        self.shard = shard  # the shard of the accounts it was read for
        self._default = tuple(default_accounts)
        self._env = env
        self._text = text
        self._folder = Path.cwd() if path == STDIN else Path(path).parent
        self._kept: list[_Checked] | None = None  # the checked entries, when few enough to keep
        self._stamp: tuple[int, int] | None = None  # size and mtime of the file checked
        # fromCommand: what the first pass found to run, then the values, by entry index.
        self._pending: list[_PendingCommand] = []
        self._command_values: dict[int, SecretValue] = {}

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == STDIN else self.path

    def accounts(self) -> list[str]:
        """The accounts it targets, in order of first use."""
        return list(self._accounts)

    def per_account(self) -> dict[str, int]:
        """How many secrets :meth:`specs` gives each account, in order of first use."""
        return dict(self._accounts)

    def specs(self) -> Iterator[SecretSpec]:
        """Every secret for every account it goes to, reading values as it goes.

        The entries are taken ``_SPECS_AT_ONCE`` at a time: where each of them has its value
        inline and goes to one account (the usual case), their specs are made in C, with no
        Python line run per secret."""
        prefix = f"{self.name}:"
        entries, index = iter(self._checked()), 0
        while some := list(itertools.islice(entries, _SPECS_AT_ONCE)):
            lines, key_names, secret_ids, sources, goes, _ = zip(*some, strict=True)
            if set(map(type, sources)) == {Inline} and set(map(len, goes)) == {1}:
                yield from map(
                    SecretSpec,
                    map(_FIRST, goes),
                    key_names,
                    secret_ids,
                    map(prefix.__add__, map(str, lines)),
                    sources,
                )
            else:
                yield from self._specs_of(some, index)
            index += len(some)

    def _specs_of(self, entries: list[_Checked], index: int) -> Iterator[SecretSpec]:
        """The specs of checked entries, one at a time; ``index`` is the first one's."""
        for line, key_name, secret_id, source, accounts, _ in entries:
            index += 1
            if source is None:
                continue  # never met: a manifest with such an entry is rejected
            if not accounts:
                continue  # none of its accounts is targeted: no value is needed
            location = f"{self.name}:{line}"
            if type(source) is Inline:  # by position
                for account in accounts:
                    yield SecretSpec(account, key_name, secret_id, location, source)
                continue
            value, described = self._value(source, index - 1), _describe(source)
            for account in accounts:
                yield SecretSpec(account, key_name, secret_id, location, value, source=described)

    def targets(self) -> Iterator[Target]:
        """What :meth:`specs` would give, without reading a single value."""
        return self._targets(excluded=False)

    def excluded(self) -> Iterator[Target]:
        """Each secret and account the manifest names (its own accounts, or an entry's) that
        the accounts given to the run (``accounts=`` of :func:`load_manifests`) leave out, in
        file order, without a value: the run reports each as skipped. With :meth:`targets`,
        it accounts for every secret and account of the manifest.

        When the first pass counted none, the entries are not gone over (nor the file read
        again) to find none."""
        if not self.excluded_count:
            return iter(())
        return self._targets(excluded=True)

    def _targets(self, *, excluded: bool) -> Iterator[Target]:
        """A target for each account each entry goes to, or each one left out."""
        name = self.name
        for line, key_name, secret_id, source, accounts, left_out in self._checked():
            if excluded:
                accounts = left_out
            if not accounts:
                continue
            location, described = f"{name}:{line}", _describe(source)
            for account in accounts:
                yield Target(
                    account=account,
                    key_name=key_name,
                    secret_id=secret_id,
                    location=location,
                    source=described,
                )

    def verify_unchanged(self) -> None:
        """Raise :class:`ManifestChanged` if the file will be read again and is not the same."""
        if self._kept is None and self._stat() != self._stamp:
            raise ManifestChanged(self.name)

    def _stat(self) -> tuple[int, int] | None:
        if self._text is not None:
            return None
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def _checked(self) -> Iterable[_Checked]:
        """The checked entries: kept from the first pass when few, else read again."""
        if self._kept is not None:
            return self._kept
        return self._read_again()

    def _read_again(self) -> Iterator[_Checked]:
        """The checked entries, from the file read again: a problem now means it changed."""
        out = Problems(self.name, quiet=True)
        document = self._document(out)
        checker = _Checker(self, document.header, out)
        check, check_block = checker.check, checker.check_block
        try:
            for raw in document.entries:
                if isinstance(raw, PlainBlock):
                    yield from check_block(raw)
                    continue
                entry = check(raw)
                if entry is not None:
                    yield entry
        finally:
            document.close()
        checker.finish()

    def _document(self, out: Problems) -> Document:
        try:
            stream: TextIO = (
                io.StringIO(self._text, newline="")
                if self._text is not None
                else open(self.path, encoding="utf-8-sig", newline="")  # noqa: SIM115
            )
        except OSError as exc:
            out.error(None, f"cannot read it: {exc.strerror}")
            return Document(Header(), iter(()))
        reader = _READERS[self.format]
        if self.format == "csv":  # a field holds up to the limit, in characters
            reader = functools.partial(
                csv_format.read,
                max_value_bytes=self.max_value_bytes,
                delimiter=self.csv_delimiter,
            )
        elif self.format == "yaml":  # a scalar over the limit is not resolved
            reader = functools.partial(yaml_format.read, max_value_bytes=self.max_value_bytes)
        try:
            document = reader(stream, out)
        except UnicodeDecodeError:
            stream.close()
            out.error(None, "not UTF-8 text")
            return Document(Header(), iter(()))
        except BaseException:
            stream.close()
            raise
        document.close = stream.close  # once its entries are read, or abandoned
        return document

    def check(self, out: Problems, ids: _IdRegistry) -> None:
        """The first pass: find every problem, count the secrets, register their ids.

        This runs once per row of the largest manifests: it makes one tuple per entry and
        calls out only for what is not the common case (a problem, a value that is not
        inline, or one that may be over the size limit)."""
        self._stamp = self._stat()
        document = self._document(out)
        self._check_header(document.header, out)
        checker = _Checker(self, document.header, out)
        check, add_id, per_account = checker.check, ids.add, self._accounts
        keep = KEEP_LIMIT
        kept: list[_Checked] | None = []
        sure_chars = chars_within(self.max_value_bytes)  # a value this long needs no measure
        entries = count = excluded = 0
        try:
            for raw in document.entries:
                if isinstance(raw, PlainBlock):  # rows of the largest manifests, counted together
                    block = checker.check_block(raw)
                    if kept is not None:
                        if entries + len(block) <= keep:
                            kept += block
                        else:
                            kept = None
                    entries += len(block)
                    found, left_out = _register(block, ids, per_account)
                    count += found
                    excluded += left_out
                    continue
                entry = check(raw)
                if entry is None:
                    continue
                if kept is not None:
                    if entries < keep:
                        kept.append(entry)
                    else:
                        kept = None  # too many to keep: the second pass reads the file again
                accounts = entry[4]
                if type(raw) is RawEntry:  # a plain row's value needs no further look
                    source = raw.source
                    if type(source) is not Inline or not 0 < len(source) <= sure_chars:
                        self._check_source(raw, accounts, entries, out)
                entries += 1
                secret_id = entry[2]
                for account in accounts:
                    add_id(account, secret_id)
                    per_account[account] = per_account.get(account, 0) + 1
                count += len(accounts)
                excluded += len(entry[5])
        finally:
            document.close()
        checker.finish()
        self.count += count
        self.excluded_count += excluded
        if entries == 0 and not out.errors:
            out.error(None, "the manifest has no secrets")
        self.warnings = out.warnings
        self._kept = kept

    def _check_header(self, header: Header, out: Problems) -> None:
        for account in header.accounts:
            problem = account_id_problem(account)
            if problem:
                out.error(header.accounts_line, problem)
        for account, (var, line) in header.api_keys.items():
            problem = account_id_problem(account)
            if problem:
                out.error(line, problem)
            elif problem := _variable_problem(var, self._env):
                out.error(line, f"{problem} (the API key of {account!r})")
            else:
                self.api_keys[account] = var

    def _check_source(
        self, raw: RawEntry, accounts: tuple[str, ...], index: int, out: Problems
    ) -> None:
        """Check that the value can be had and is within the size limit, without keeping it.
        A fromCommand is only noted here, to run with all the others (see
        :func:`_run_commands`)."""
        if raw.source is None:
            return
        field = _FIELDS[type(raw.source)]
        column = field if raw.tabular else None
        line = raw.line_of(field)
        source = raw.source
        limit = self.max_value_bytes
        if isinstance(source, FromCommand):
            if not self.allow_commands:
                out.error(line, "fromCommand runs a program: pass --allow-commands to allow it")
            elif accounts:  # else no value is needed
                command = commands.Command(source, self._folder)
                self._pending.append(_PendingCommand(index, line, raw.key_name, command))
        elif isinstance(source, Inline):
            text = source.reveal()
            if not text:
                out.warn(line, f"{raw.key_name} has an empty value")
            elif len(text) > chars_within(limit) and (size := _utf8_size(text)) > limit:
                out.error(line, f"the value is {size} bytes, over the limit of {limit}", column)
        elif not (source.var if isinstance(source, FromEnv) else source.path):
            out.error(line, f"{field} is empty", column)
        elif isinstance(source, FromEnv):
            problem = _variable_problem(source.var, self._env, limit)
            if problem:
                out.error(line, problem, column)
        else:
            try:
                _read_value_file(self._folder / source.path, limit).decode("utf-8")
            except _Unreadable as exc:
                out.error(line, exc.message(source.path), column)
            except UnicodeDecodeError as exc:
                problem = f"is not UTF-8 text (byte {exc.start})"
                out.error(line, f"fromFile {source.path!r}: {problem}", column)

    def pending_commands(self) -> list[commands.Command]:
        """The fromCommands the first pass found to run, in file order."""
        return [pending.command for pending in self._pending]

    def record_commands(
        self, results: Sequence[SecretValue | commands.Failed], out: Problems
    ) -> None:
        """Keep the values of :meth:`pending_commands`, run, or report why one gave none."""
        for pending, result in zip(self._pending, results, strict=True):
            if isinstance(result, commands.Failed):
                out.error(pending.line, str(result))
                continue
            if not result.reveal():
                program = pending.command.source.program
                out.warn(
                    pending.line,
                    f"{pending.key_name} has an empty value: {program!r} printed nothing",
                )
            self._command_values[pending.index] = result
        self._pending = []

    def _value(self, source: Source, index: int) -> SecretValue:
        if isinstance(source, Inline):
            return source
        if isinstance(source, FromCommand):
            value = self._command_values.get(index)
            if value is None:  # the entries are not those checked
                raise ManifestChanged(self.name)
            return value
        if isinstance(source, FromEnv):
            if _variable_problem(source.var, self._env, self.max_value_bytes):
                raise ManifestChanged(f"{self.name}: the environment changed")
            return SecretValue(self._env[source.var])
        try:
            data = _read_value_file(self._folder / source.path, self.max_value_bytes)
            return SecretValue(data.decode("utf-8"))
        except (_Unreadable, UnicodeDecodeError) as exc:
            raise ManifestChanged(f"{self.name}: fromFile {source.path!r}") from exc


_NONE: tuple[str, ...] = ()
# A keyName that is valid and gives a valid secret id (a letter first, at most 63 characters):
# what ``key_name_problem`` and ``secret_id_problem`` of its id would find nothing wrong with,
# checked with one match instead of two functions (tests hold the two to agree).
_PLAIN = rf"[A-Za-z][A-Za-z0-9_]{{0,{MAX_ID_LENGTH - 1}}}"
_PLAIN_KEY_NAME = re.compile(_PLAIN)
_PLAIN_KEY_NAMES = re.compile(rf"(?:{_PLAIN}\n)*{_PLAIN}")  # a block's, joined by line ends
_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)
_SPECS_AT_ONCE = 256  # checked entries that ``Manifest.specs`` looks at together
# Distinct account tuples a checker remembers what it found for (a manifest names few).
_REMEMBERED = 4096


class _Checker:
    """Checks the raw entries of one reading of a manifest: each one (:meth:`check`), then
    what only the end shows (:meth:`finish`). What it works out for a tuple of accounts (an
    entry's own, those of a shard) it works out once."""

    __slots__ = (
        "_base",
        "_header",
        "_of_shard",
        "_out",
        "_override",
        "_own",
        "_plain",
        "_shard",
        "_untargeted",
        "_untargeted_line",
    )

    def __init__(self, manifest: Manifest, header: Header, out: Problems) -> None:
        self._header = header
        self._out = out
        self._override = manifest._override
        # Where an entry without accounts of its own goes. The accounts given replace the
        # manifest's own: those are not reported as left out; an entry's or a row's own
        # account that they leave out is (see ``Manifest.excluded``).
        self._base = tuple(
            dict.fromkeys(manifest._override or header.accounts or manifest._default)
        )
        self._shard = manifest.shard
        self._own: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._of_shard: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._untargeted = 0  # entries with no account to go to, and the first one's line
        self._untargeted_line: int | None = None
        # Where a plain CSV row goes in this run, and what it leaves out, by its account cell
        # ("": none, so the accounts given, its shard's share of them): what the full check
        # works out for a row of that account with nothing to report (no problem, no warning).
        self._plain: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        if self._base:
            everywhere = self._base if self._shard is None else self._in_shard(self._base)
            self._plain[""] = (everywhere, _NONE)

    def check(self, raw: RawEntry | PlainRow) -> _Checked | None:
        """The entry checked, or None when it has a problem (reported)."""
        if isinstance(raw, tuple):  # a CSV row of a keyName, a value, an account: the usual case
            line, key_name, value, account = raw
            goes = self._plain.get(account)
            if goes is not None and _PLAIN_KEY_NAME.fullmatch(key_name):
                return (line, key_name, secret_id_for(key_name), value, goes[0], goes[1])
            raw = as_raw_entry(raw)  # its account's first row, or one with a problem
        key_name, secret_id = raw.key_name, raw.secret_id
        if not secret_id and _PLAIN_KEY_NAME.fullmatch(key_name):  # the usual case: one match
            secret_id = secret_id_for(key_name)
        else:
            problem = key_name_problem(key_name)
            if problem:
                self._error(raw, "keyName", problem)
                return None
            if secret_id:
                problem = secret_id_problem(secret_id)
            else:
                secret_id = secret_id_for(key_name)
                problem = secret_id_problem(secret_id, key_name=key_name)
            if problem:
                self._error(raw, "id" if raw.secret_id else "keyName", problem)
                return None
        warned = False
        if raw.accounts is None:
            accounts, excluded = self._base, _NONE
            if not accounts:
                self._untargeted += 1
                self._untargeted_line = self._untargeted_line or raw.line
                return None
        else:
            own = self._own.get(raw.accounts) or self._own_accounts(raw)
            if own is None:
                return None
            accounts, excluded = own
            warned = self._override is not None and not accounts
            if warned:
                self._out.warn(
                    raw.line, f"{key_name} is not applied: its accounts are not targeted"
                )
        if self._shard is not None:  # the accounts of another shard are not this run's
            accounts, excluded = self._in_shard(accounts), self._in_shard(excluded)
        if raw.tabular and raw.accounts is not None and not warned:
            self._remember_plain(raw.accounts, accounts, excluded)
        return (raw.line, key_name, secret_id, raw.source, accounts, excluded)

    def check_block(self, block: PlainBlock) -> list[_Checked]:
        """The block's rows checked, as :meth:`check` checks each one: those of an account
        whose plain rows are known to go somewhere (see ``_plain``) at once, a few calls for
        the lot; each other row (its account's first, or one with a problem) alone."""
        key_names, values, line = block.key_names, block.values, block.line
        joined = "\n".join(key_names)
        if not _PLAIN_KEY_NAMES.fullmatch(joined):  # some keyName has a problem, or is unusual
            return self._one_by_one(block)
        secret_ids = secret_id_for(joined).split("\n")
        count, plain = len(key_names), self._plain
        if block.accounts is None:
            goes = plain.get("")
            if goes is None:  # no accounts to go to: each row is reported
                return self._one_by_one(block)
            return list(
                zip(
                    range(line, line + count),
                    key_names,
                    secret_ids,
                    values,
                    itertools.repeat(goes[0], count),
                    itertools.repeat(goes[1], count),
                    strict=True,
                )
            )
        accounts = block.accounts
        where = list(map(plain.get, accounts))  # None: an account met for the first time
        checked: list[_Checked] = []
        start = 0
        while start < count:
            try:
                end = where.index(None, start)
            except ValueError:
                end = count
            if end > start:
                known = cast(list[tuple[tuple[str, ...], tuple[str, ...]]], where[start:end])
                checked += zip(
                    range(line + start, line + end),
                    key_names[start:end],
                    secret_ids[start:end],
                    values[start:end],
                    map(_FIRST, known),
                    map(_SECOND, known),
                    strict=True,
                )
            if end < count:
                entry = self.check((line + end, key_names[end], values[end], accounts[end]))
                if entry is not None:
                    checked.append(entry)
                if accounts[end] in plain:  # remembered: its other rows are known now
                    where[end + 1 :] = map(plain.get, accounts[end + 1 :])
            start = end + 1
        return checked

    def _one_by_one(self, block: PlainBlock) -> list[_Checked]:
        return [entry for entry in map(self.check, block.rows()) if entry is not None]

    def _remember_plain(
        self, own: tuple[str, ...], accounts: tuple[str, ...], excluded: tuple[str, ...]
    ) -> None:
        """Where the next plain rows of a CSV row's one account go: where this row, which had
        nothing to report, goes."""
        if len(own) == 1 and len(self._plain) < _REMEMBERED:
            self._plain[own[0]] = (accounts, excluded)

    def finish(self) -> None:
        """Report the entries that had no account to go to, at the first one's line."""
        count = self._untargeted
        if count:
            secrets, them = (
                ("1 secret has", "it") if count == 1 else (f"{count} secrets have", "them")
            )
            self._out.error(
                self._untargeted_line,
                f"{secrets} no target account: name one in the manifest, "
                f"or give the accounts to apply {them} to",
            )

    def _error(self, raw: RawEntry, field: str, problem: str) -> None:
        self._out.error(raw.line_of(field), problem, field if raw.tabular else None)

    def _own_accounts(self, raw: RawEntry) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The accounts an entry of its own accounts goes to and those the accounts given to
        the run leave out, or None when one of its accounts is not valid (reported)."""
        assert raw.accounts is not None
        header, out = self._header, self._out
        line = raw.line_of("accounts")
        column = "account" if raw.tabular else None
        own = tuple(dict.fromkeys(raw.accounts))
        bad = [p for p in map(account_id_problem, own) if p]
        for problem in bad:
            out.error(line, problem, column)
        # A manifest without accounts of its own (a CSV one) targets each account named here.
        strangers = [a for a in own if header.accounts and is_account_id(a)]
        strangers = [a for a in strangers if a not in header.accounts]
        for account in strangers:
            out.error(
                line,
                f"account {account!r} is not among the manifest's accounts "
                f"({', '.join(header.accounts)})",
                column,
            )
        if bad or strangers:
            return None
        override = self._override
        if override is None:
            found: tuple[tuple[str, ...], tuple[str, ...]] = (own, ())
        else:
            found = (
                tuple(a for a in own if a in override),
                tuple(a for a in own if a not in override),
            )
        if len(self._own) < _REMEMBERED:
            self._own[raw.accounts] = found
        return found

    def _in_shard(self, accounts: tuple[str, ...]) -> tuple[str, ...]:
        if not accounts:
            return accounts
        found = self._of_shard.get(accounts)
        if found is None:
            assert self._shard is not None
            found = tuple(a for a in accounts if self._shard.holds(a))
            if len(self._of_shard) < _REMEMBERED:
                self._of_shard[accounts] = found
        return found


_FIELDS: Mapping[type, str] = {
    Inline: "value",
    FromEnv: "fromEnv",
    FromFile: "fromFile",
    FromCommand: "fromCommand",
}


def _describe(source: Source | None) -> str:
    return "(unusable)" if source is None else source.describe()


def _utf8_size(text: str) -> int:
    """The size of ``text`` in UTF-8; a lone surrogate (from a JSON escape) counts 3 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _variable_problem(var: str, env: Mapping[str, str], limit: int | None = None) -> str | None:
    """What keeps an environment variable from giving a value: unset, not UTF-8 (``os.environ``
    decodes such bytes to lone surrogates), or over ``limit`` bytes. The variable is named
    only when it is a variable name: a ``fromEnv`` may hold a value written in the wrong
    place."""
    name = f"environment variable {var}" if is_variable_name(var) else None
    value = env.get(var)
    if value is None:
        if name is None:
            return (
                "fromEnv does not name an environment variable that is set "
                "(not shown: it is not a variable name, and may be a value)"
            )
        return f"{name} is not set"
    name = name or "the environment variable fromEnv names"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{name} is not UTF-8 text"
    if limit is not None and size > limit:
        return f"{name} holds {size} bytes, over the limit of {limit}"
    return None


class _Unreadable(Exception):
    """Why a ``fromFile`` gives no value; ``found``: the path names something that exists,
    so it is a path, and may be quoted."""

    def __init__(self, reason: str, *, found: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.found = found

    def message(self, path: str) -> str:
        if self.found:
            return f"fromFile {path!r}: {self.reason}"
        return f"fromFile: {self.reason} (the path is not shown: it may be a value)"


def _read_value_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Folders, devices, FIFOs and sockets are refused from their ``stat``, before an open that
    could block or act; the open does not block, and ``fstat`` checks what was opened. At most
    ``limit + 1`` bytes are read, however large the file is or grows.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise _Unreadable("there is no such file", found=False) from exc
    except OSError as exc:
        raise _Unreadable(f"cannot read it: {exc.strerror}", found=False) from exc
    if not stat.S_ISREG(info.st_mode):
        raise _Unreadable(_kind_problem(info.st_mode), found=True)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _Unreadable(f"cannot read it: {exc.strerror}", found=True) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable(_kind_problem(info.st_mode), found=True)
        if info.st_size > limit:
            problem = f"the file is {info.st_size} bytes, over the limit of {limit}"
            raise _Unreadable(problem, found=True)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            unit = "byte" if limit == 1 else "bytes"
            raise _Unreadable(f"the file is over the limit of {limit} {unit}", found=True)
        return b"".join(chunks)
    except OSError as exc:
        raise _Unreadable(f"cannot read it: {exc.strerror}", found=True) from exc
    finally:
        os.close(fd)


def _kind_problem(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return "is not a regular file (a device, a FIFO or a socket): only files are read"


class _IdRegistry:
    """Which (account, secret id) pairs are taken, kept as 64-bit hashes: 8 bytes each.

    The hashes gather in one ``array('q')``; past ``_GATHERED`` of them, they go into 256
    arrays by their low bits, and the duplicates are looked for once, at the end
    (:meth:`clashes`), one of those at a time: a set of every hash would cost ten times the
    memory. Until then a manifest's hashes are never gone over in Python: the set of them all
    is small. A hash met twice may be two different pairs that hash alike:
    :func:`_clash_problems` compares the pairs themselves."""

    _BUCKETS = 256  # a power of two: a hash's bucket is its low bits
    _GATHERED = 65536  # at most 4 MiB or so for the set of them at the end

    def __init__(self) -> None:
        self._gathered = array("q")
        self._buckets: list[array[int]] = []  # made when first needed

    def add(self, account: str, secret_id: str) -> None:
        gathered = self._gathered
        gathered.append(hash((account, secret_id)))
        if len(gathered) >= self._GATHERED:
            self._spread()

    def add_many(self, accounts: Iterable[str], secret_ids: Iterable[str]) -> None:
        """:meth:`add` each pair of the two, in C."""
        self._gathered.extend(map(hash, zip(accounts, secret_ids, strict=True)))
        if len(self._gathered) >= self._GATHERED:
            self._spread()

    def _spread(self) -> None:
        """Move the hashes gathered into the buckets."""
        if not self._buckets:
            self._buckets = [array("q") for _ in range(self._BUCKETS)]
        buckets, mask = self._buckets, self._BUCKETS - 1
        for key in self._gathered:
            buckets[key & mask].append(key)
        self._gathered = array("q")

    def clashes(self) -> set[int]:
        """The hashes added more than once."""
        if self._buckets:
            self._spread()
        found: set[int] = set()
        for keys in self._buckets or [self._gathered]:
            if len(set(keys)) == len(keys):
                continue
            seen: set[int] = set()
            for key in keys:
                if key in seen:
                    found.add(key)
                seen.add(key)
        return found


def _register(
    block: list[_Checked], ids: _IdRegistry, per_account: dict[str, int]
) -> tuple[int, int]:
    """Register the ids of a block's entries and count them by account, as the first pass does
    entry by entry, in C: how many (secret, account) pairs they go to, and how many are left
    out."""
    if not block:
        return 0, 0
    _, _, secret_ids, _, goes, left_out = zip(*block, strict=True)
    # Each to one account, the usual case, is counted 1,300 instructions a row cheaper.
    if set(map(len, goes)) == {1}:
        accounts = list(map(_FIRST, goes))
        ids.add_many(accounts, secret_ids)
    else:  # each entry's accounts in turn, and its id once for each of them
        accounts = list(itertools.chain.from_iterable(goes))
        ids.add_many(
            accounts,
            itertools.chain.from_iterable(map(itertools.repeat, secret_ids, map(len, goes))),
        )
    for account, count in Counter(accounts).items():
        per_account[account] = per_account.get(account, 0) + count
    return len(accounts), sum(map(len, left_out))


def _clash_problems(manifests: Iterable[Manifest], clashes: set[int]) -> list[Problem]:
    """Name each entry whose id an earlier entry took in the same account.

    Only hashes were kept, so the entries behind the clashing hashes are found again here.
    """
    first: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for manifest in manifests:
        for target in manifest.targets():
            key = (target.account, target.secret_id)
            if hash(key) not in clashes:
                continue
            earlier = first.setdefault(key, target.location)
            if earlier != target.location:
                line = int(target.location.rsplit(":", 1)[1])
                problems.append(
                    Problem(
                        manifest.name,
                        line,
                        f"{target.key_name} maps to secret id {target.secret_id!r} in account "
                        f"{target.account!r}, which {earlier} already uses",
                    )
                )
    return problems


def load_manifests(
    paths: Sequence[str],
    *,
    format: str | None = None,
    accounts: Sequence[str] | None = None,
    default_accounts: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    max_value_bytes: int = MAX_VALUE_BYTES,
    allow_commands: bool = False,
    command_timeout: float = COMMAND_TIMEOUT,
    csv_delimiter: str = ",",
    shard: Shard | None = None,
) -> ManifestSet:
    """Read and check manifests; raise :class:`ManifestError` listing every problem in them.

    ``accounts`` (from ``--account``) replaces the manifests' own accounts: a secret whose own
    accounts it leaves out is not applied there, and is listed by ``excluded()``;
    ``default_accounts`` serve where a manifest names none. No value may be over
    ``max_value_bytes`` bytes of UTF-8 (1 MiB by default).

    ``fromCommand`` entries run their program only with ``allow_commands`` (else each is a
    problem: a manifest from an untrusted pull request must not run programs), once each, here,
    at most 8 at a time, each within ``command_timeout`` seconds. CSV fields are separated by
    ``csv_delimiter``: ``,`` (the default), ``;`` or a tab. With ``shard``, only the accounts
    of that shard are targeted; the others' secrets are another shard's, not this run's.
    """
    if max_value_bytes < 1:
        raise UsageError(f"the value size limit must be at least 1 byte, not {max_value_bytes}")
    if not 0 < command_timeout < float("inf"):
        raise UsageError(
            f"the command timeout must be a number of seconds over 0, not {command_timeout}"
        )
    if csv_delimiter not in CSV_DELIMITERS:
        shown = ", ".join(repr(d) for d in CSV_DELIMITERS)
        raise UsageError(f"the CSV delimiter must be one of {shown}, not {csv_delimiter!r}")
    env = os.environ if env is None else env
    if accounts is not None:
        accounts = list(dict.fromkeys(accounts))
    manifests = ManifestSet()
    manifests.shard = shard
    outs: list[Problems] = []  # the problems of each path, in order
    checked: list[tuple[Manifest, Problems]] = []
    ids = _IdRegistry()
    for path in paths:
        name = "<stdin>" if path == STDIN else path
        kind = format or (None if path == STDIN else format_of(path))
        if kind not in FORMATS:
            hint = "name its format" if path == STDIN else "use .yaml, .yml, .json, .csv or .env"
            outs.append(Problems(name))
            outs[-1].error(None, f"unknown manifest format: {hint}")
            continue
        text = None
        if path == STDIN:
            text = (stdin or sys.stdin).read()
        manifest = Manifest(
            path,
            kind,
            override=accounts,
            default_accounts=default_accounts,
            env=env,
            text=text,
            max_value_bytes=max_value_bytes,
            allow_commands=allow_commands,
            csv_delimiter=csv_delimiter,
            shard=shard,
        )
        out = Problems(manifest.name)
        manifest.check(out, ids)
        outs.append(out)
        checked.append((manifest, out))
        manifests.manifests.append(manifest)
    _run_commands(checked, limit=max_value_bytes, timeout=command_timeout)
    problems = [problem for out in outs for problem in out.errors]
    clashes = ids.clashes()
    if clashes:
        problems.extend(_clash_problems(manifests, clashes))
    if problems:
        raise ManifestError(problems)
    return manifests


def _run_commands(
    checked: Sequence[tuple[Manifest, Problems]], *, limit: int, timeout: float
) -> None:
    """Run the fromCommands of every manifest, 8 at a time across them all."""
    pending = [(manifest, out, manifest.pending_commands()) for manifest, out in checked]
    results = commands.run_all(
        [command for _, _, found in pending for command in found], limit=limit, timeout=timeout
    )
    start = 0
    for manifest, out, found in pending:
        manifest.record_commands(results[start : start + len(found)], out)
        start += len(found)


class ManifestSet:
    """Checked manifests, read as one source of secrets. ``started`` (a ``time.monotonic()``)
    is when their reading began."""

    def __init__(self) -> None:
        self.manifests: list[Manifest] = []
        self.started = time.monotonic()
        self.shard: Shard | None = None  # the shard of the accounts it was read for

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.manifests)

    def __len__(self) -> int:
        return len(self.manifests)

    def accounts(self) -> list[str]:
        return list(dict.fromkeys(a for manifest in self for a in manifest.accounts()))

    def per_account(self) -> dict[str, int]:
        """How many secrets :meth:`specs` gives each account, in order of first use."""
        counts: dict[str, int] = {}
        for manifest in self:
            for account, count in manifest.per_account().items():
                counts[account] = counts.get(account, 0) + count
        return counts

    def targets(self) -> Iterator[Target]:
        for manifest in self:
            yield from manifest.targets()

    def specs(self) -> Iterator[SecretSpec]:
        for manifest in self:
            yield from manifest.specs()

    def excluded(self) -> Iterator[Target]:
        """What the accounts given to the run left out, manifest by manifest: see
        :meth:`Manifest.excluded`."""
        for manifest in self:
            yield from manifest.excluded()

    def verify_unchanged(self) -> None:
        for manifest in self:
            manifest.verify_unchanged()

    @property
    def count(self) -> int:
        """How many secrets, counting each account a secret goes to."""
        return sum(manifest.count for manifest in self)

    @property
    def excluded_count(self) -> int:
        """How many (secret, account) pairs the accounts given to the run left out."""
        return sum(manifest.excluded_count for manifest in self)


def load_manifest(path: str | Path, **options: object) -> Manifest:
    """One manifest: see :func:`load_manifests`."""
    (manifest,) = load_manifests([str(path)], **options)  # type: ignore[arg-type]
    return manifest


def read_accounts_file(path: str) -> list[str]:
    """Account ids, one per line; ``#`` starts a comment. Raises :class:`ManifestError`."""
    accounts: list[str] = []
    problems: list[Problem] = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem(path, None, f"cannot read it: {exc}")]) from exc
    for number, line in enumerate(lines, start=1):
        account = line.split("#", 1)[0].strip()
        if not account:
            continue
        problem = account_id_problem(account)
        if problem:
            problems.append(Problem(path, number, problem))
        elif account not in accounts:
            accounts.append(account)
    if problems:
        raise ManifestError(problems)
    if not accounts:
        raise ManifestError([Problem(path, None, "names no account")])
    return accounts
