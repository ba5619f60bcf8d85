"""Manifests in: YAML, JSON, CSV or dotenv -> secret specs, checked whole before anything is sent.

A manifest is read twice. The first pass checks everything (names, ids, accounts, that every
environment variable is set and every file readable, that no two entries share an id in one
account) and keeps only what that needs: counts and hashes, never values. The second pass,
when the run asks for specs, reads the values. So a million-row CSV manifest is never held in
memory.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import ManifestChanged, ManifestError, Problem
from ..models import SecretSpec, SecretValue, Target
from ..naming import account_id_problem, key_name_problem, secret_id_for, secret_id_problem
from . import csv_format, dotenv_format, json_format, yaml_format
from .document import Document, FromEnv, FromFile, Header, Inline, Problems, RawEntry, Source

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
_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv", ".env": "dotenv"}


def format_of(path: str) -> str | None:
    """The format a file name implies: by suffix, and ``.env`` / ``.env.*`` for dotenv."""
    name = Path(path).name.lower()
    if name == ".env" or name.startswith(".env."):
        return "dotenv"
    return _SUFFIXES.get(Path(name).suffix)


@dataclass(frozen=True, slots=True)
class _CheckedEntry:
    """An entry that passed its checks: its secret id and the accounts it goes to."""

    raw: RawEntry
    secret_id: str
    accounts: tuple[str, ...]


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
    ) -> None:
        self.path = path
        self.format = format
        self.started = time.monotonic()  # when its reading began
        self.count = 0
        self._accounts: dict[str, None] = {}  # the accounts it targets, in order
        self.warnings: list[Problem] = []
        self.api_keys: dict[str, str] = {}
        self._override = None if override is None else tuple(override)
        self._default = tuple(default_accounts)
        self._env = env
        self._text = text
        self._folder = Path.cwd() if path == STDIN else Path(path).parent
        self._kept: list[_CheckedEntry] | None = (
            None  # the checked entries, when few enough to keep
        )
        self._stamp: tuple[int, int] | None = None  # size and mtime of the file checked

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == STDIN else self.path

    def accounts(self) -> list[str]:
        """The accounts it targets, in order of first use."""
        return list(self._accounts)

    def specs(self) -> Iterator[SecretSpec]:
        """Every secret for every account it goes to, reading values as it goes."""
        for entry in self._checked():
            if entry.raw.source is None:
                continue  # never met: a manifest with such an entry is rejected
            value = self._value(entry.raw.source)
            for account in entry.accounts:
                yield SecretSpec(
                    account=account,
                    key_name=entry.raw.key_name,
                    secret_id=entry.secret_id,
                    value=value,
                    location=f"{self.name}:{entry.raw.line}",
                    source=_describe(entry.raw.source),
                )

    def targets(self) -> Iterator[Target]:
        """What :meth:`specs` would give, without reading a single value."""
        for entry in self._checked():
            for account in entry.accounts:
                yield Target(
                    account=account,
                    key_name=entry.raw.key_name,
                    secret_id=entry.secret_id,
                    location=f"{self.name}:{entry.raw.line}",
                    source=_describe(entry.raw.source),
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

    def _checked(self) -> Iterable[_CheckedEntry]:
        """The checked entries: kept from the first pass when few, else read again."""
        if self._kept is not None:
            return self._kept
        return self._entries(Problems(self.name, quiet=True))

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
        try:
            document = _READERS[self.format](stream, out)
        except UnicodeDecodeError:
            stream.close()
            out.error(None, "not UTF-8 text")
            return Document(Header(), iter(()))
        except BaseException:
            stream.close()
            raise
        return Document(document.header, _closing(document.entries, stream))

    def _entries(self, out: Problems, document: Document | None = None) -> Iterator[_CheckedEntry]:
        document = document or self._document(out)
        header = document.header
        base = self._override or header.accounts or self._default
        untargeted: list[int] = []
        for raw in document.entries:
            entry = self._check_entry(raw, header, base, out, untargeted)
            if entry is not None:
                yield entry
        if untargeted:
            out.error(
                untargeted[0],
                f"{len(untargeted)} secret(s) have no target account: name one in the manifest, "
                "or give the accounts to apply it to",
            )

    def _check_entry(
        self,
        raw: RawEntry,
        header: Header,
        base: tuple[str, ...],
        out: Problems,
        untargeted: list[int],
    ) -> _CheckedEntry | None:
        def column(name: str) -> str | None:
            return name if raw.tabular else None

        problem = key_name_problem(raw.key_name)
        if problem:
            out.error(raw.line_of("keyName"), problem, column("keyName"))
            return None
        secret_id = raw.secret_id or secret_id_for(raw.key_name)
        problem = secret_id_problem(secret_id)
        if problem:
            field = "id" if raw.secret_id else "keyName"
            out.error(raw.line_of(field), problem, column(field))
            return None
        if raw.accounts is None:
            if not base:
                untargeted.append(raw.line)
                return None
            return _CheckedEntry(raw, secret_id, base)
        bad = [p for p in map(account_id_problem, raw.accounts) if p]
        strangers = [a for a in raw.accounts if header.accounts and a not in header.accounts]
        if bad or strangers:
            line = raw.line_of("accounts")
            for problem in bad:
                out.error(line, problem, column("account"))
            for account in strangers:
                out.error(line, f"account {account!r} is not among the manifest's accounts")
            return None
        accounts = tuple(a for a in raw.accounts if self._override is None or a in self._override)
        if not accounts:
            out.warn(raw.line, f"{raw.key_name} is not applied: its accounts are not targeted")
        return _CheckedEntry(raw, secret_id, accounts)

    def check(self, out: Problems, ids: _IdRegistry) -> None:
        """The first pass: find every problem, count the secrets, register their ids."""
        self._stamp = self._stat()
        document = self._document(out)
        self._check_header(document.header, out)
        entries = 0
        kept: list[_CheckedEntry] | None = []
        for entry in self._entries(out, document):
            entries += 1
            if kept is not None and len(kept) < KEEP_LIMIT:
                kept.append(entry)
            else:
                kept = None  # too many to keep: the second pass reads the file again
            self._check_source(entry.raw, out)
            for account in entry.accounts:
                ids.add(account, entry.secret_id)
                self._accounts.setdefault(account)
            self.count += len(entry.accounts)
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
            elif var not in self._env:
                out.error(line, f"environment variable {var} (API key of {account}) is not set")
            else:
                self.api_keys[account] = var

    def _check_source(self, raw: RawEntry, out: Problems) -> None:
        if raw.source is None:
            return
        field = {Inline: "value", FromEnv: "fromEnv", FromFile: "fromFile"}[type(raw.source)]
        column = field if raw.tabular else None
        line = raw.line_of(field)
        source = raw.source
        if isinstance(source, Inline):
            if not len(source.value):
                out.warn(line, f"{raw.key_name} has an empty value")
        elif not (source.var if isinstance(source, FromEnv) else source.path):
            out.error(line, f"{field} is empty", column)
        elif isinstance(source, FromEnv):
            if source.var not in self._env:
                out.error(line, f"environment variable {source.var} is not set", column)
        else:
            problem = _file_problem(self._folder / source.path)
            if problem:
                out.error(line, f"fromFile {source.path!r}: {problem}", column)

    def _value(self, source: Source) -> SecretValue:
        if isinstance(source, Inline):
            return source.value
        if isinstance(source, FromEnv):
            return SecretValue(self._env[source.var])
        try:
            return SecretValue((self._folder / source.path).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestChanged(f"{self.name}: fromFile {source.path!r}") from exc


def _describe(source: Source | None) -> str:
    return "(unusable)" if source is None else source.describe()


def _closing(entries: Iterator[RawEntry], stream: TextIO) -> Iterator[RawEntry]:
    """The entries, closing their file once they are read (or abandoned)."""
    try:
        yield from entries
    finally:
        stream.close()


def _file_problem(path: Path) -> str | None:
    try:
        path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        return "is a folder, not a file"
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (byte {exc.start})"
    return None


class _IdRegistry:
    """Which (account, secret id) pairs are taken, kept as hashes: a few dozen bytes each."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.clashes: set[int] = set()

    def add(self, account: str, secret_id: str) -> None:
        key = hash((account, secret_id))
        if key in self._seen:
            self.clashes.add(key)
        else:
            self._seen.add(key)


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
) -> ManifestSet:
    """Read and check manifests; raise :class:`ManifestError` listing every problem in them.

    ``accounts`` (from ``--account``) replaces the manifests' own accounts;
    ``default_accounts`` serve where a manifest names none.
    """
    env = os.environ if env is None else env
    problems: list[Problem] = []
    manifests = ManifestSet()
    ids = _IdRegistry()
    for path in paths:
        name = "<stdin>" if path == STDIN else path
        kind = format or (None if path == STDIN else format_of(path))
        if kind not in FORMATS:
            hint = "name its format" if path == STDIN else "use .yaml, .yml, .json, .csv or .env"
            problems.append(Problem(name, None, f"unknown manifest format: {hint}"))
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
        )
        out = Problems(manifest.name)
        manifest.check(out, ids)
        problems.extend(out.errors)
        manifests.manifests.append(manifest)
    if ids.clashes:
        problems.extend(_clash_problems(manifests, ids.clashes))
    if problems:
        raise ManifestError(problems)
    return manifests


class ManifestSet:
    """Checked manifests, read as one source of secrets. ``started`` (a ``time.monotonic()``)
    is when their reading began."""

    def __init__(self) -> None:
        self.manifests: list[Manifest] = []
        self.started = time.monotonic()

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.manifests)

    def __len__(self) -> int:
        return len(self.manifests)

    def accounts(self) -> list[str]:
        return list(dict.fromkeys(a for manifest in self for a in manifest.accounts()))

    def targets(self) -> Iterator[Target]:
        for manifest in self:
            yield from manifest.targets()

    def specs(self) -> Iterator[SecretSpec]:
        for manifest in self:
            yield from manifest.specs()

    def verify_unchanged(self) -> None:
        for manifest in self:
            manifest.verify_unchanged()

    @property
    def count(self) -> int:
        """How many secrets, counting each account a secret goes to."""
        return sum(manifest.count for manifest in self)


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
