"""Hostile manifests end fast, with a problem at their line: YAML aliases that would expand
without bound, ``fromFile`` pointing at what is not a file, values over the size limit, and
environment variables that are not UTF-8.

Each bound is shown by construction: the work is capped (an alias of a list is refused where it
stands, a file is read up to the limit and one byte), and a test shows the cap is hit.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import bulk_secrets.manifest as manifest_module
from bulk_secrets.errors import ManifestChanged, ManifestError, Problem, UsageError
from bulk_secrets.manifest import MAX_VALUE_BYTES, load_manifest, load_manifests, yaml_format

from .helpers import CANARY


def _problems(path: Path, **options: Any) -> list[Problem]:
    options.setdefault("accounts", ["acct-a"])
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)], **options)
    assert CANARY not in str(caught.value)
    return list(caught.value.problems)


def _laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": ``width ** levels`` scalars from ``levels + 1`` short lines."""
    lines = ["secrets:", f"  - &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"  - &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    lines.append(f'  - {{keyName: A, value: "{CANARY}"}}')
    return "\n".join(lines) + "\n"


# --- YAML aliases ---------------------------------------------------------------------------


@pytest.fixture(params=["default", "pure"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The YAML parser: libyaml's when PyYAML has it, and PyYAML's own."""
    chosen = yaml_format._LOADER if request.param == "default" else yaml.SafeLoader
    monkeypatch.setattr(yaml_format, "_LOADER", chosen)
    yield chosen


def test_a_billion_laughs_is_refused_at_the_first_alias_of_a_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Any
) -> None:
    events = 0

    class Counting(loader):  # type: ignore[misc]
        def get_event(self) -> Any:
            nonlocal events
            events += 1
            return super().get_event()

    monkeypatch.setattr(yaml_format, "_LOADER", Counting)
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs())
    (problem,) = _problems(path)
    assert problem.line == 3  # the first alias, *l0
    assert "an alias (*name) of a list or a mapping is not allowed" in problem.message
    # The cap: the parse stopped there, after a few events, not 9 ** 9 nodes.
    assert events < 30


def test_an_alias_of_a_list_is_refused_where_it_stands(tmp_path: Path, loader: Any) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: &all [acct-a, acct-b]\nsecrets:\n"
        '  - {keyName: A, value: "x"}\n'
        '  - {keyName: B, value: "x", accounts: *all}\n'
    )
    (problem,) = _problems(path, accounts=None)
    assert problem.line == 4


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("secrets: &s [*s]\n", 1),
        ("secrets:\n  - &e {keyName: A, value: x, id: *e}\n", 2),
        ("secrets: " + "[" * 100 + "]" * 100 + "\n", 1),
    ],
    ids=["list-in-itself", "mapping-in-itself", "nested-100-deep"],
)
def test_recursive_and_deep_documents_are_refused(
    tmp_path: Path, loader: Any, text: str, line: int
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    (problem,) = _problems(path)
    assert problem.line == line
    assert "alias" in problem.message or "nested more than 64 levels" in problem.message


def test_an_alias_of_a_scalar_is_one_value(tmp_path: Path, loader: Any) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "secrets:\n  - {keyName: A, value: &v 'shared'}\n  - keyName: B\n    value: *v\n"
    )
    manifest = load_manifest(path, accounts=["acct-a"])
    assert [(s.key_name, s.value.reveal(), s.location) for s in manifest.specs()] == [
        ("A", "shared", f"{path}:2"),
        ("B", "shared", f"{path}:3"),
    ]


def test_a_scalar_over_the_limit_is_not_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: Any
) -> None:
    """PyYAML's resolvers are slow on megabytes of digits: a plain scalar longer than the limit
    is refused for its size without them; a short one is still resolved."""
    resolved: list[int] = []

    class Counting(loader):  # type: ignore[misc]
        def resolve(self, kind: Any, value: str, implicit: Any) -> Any:
            resolved.append(len(value))
            return super().resolve(kind, value, implicit)

    monkeypatch.setattr(yaml_format, "_LOADER", Counting)
    path = tmp_path / "m.yaml"
    path.write_text(
        f"secrets:\n  - keyName: A\n    value: {'1' * 101}\n  - {{keyName: B, value: 7}}\n"
    )
    problems = _problems(path, max_value_bytes=100)
    assert [(p.line, p.message) for p in problems] == [
        (3, "the value is 101 bytes, over the limit of 100"),
        (4, "the value would be read as int, not text: put it in quotes"),
    ]
    assert max(resolved) < 101


def test_pyyaml_own_parser_is_handed_the_whole_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a stream, PyYAML's reader copies its buffer at each 4 KiB read while a token
    lasts: quadratic in a value's length. Handed the text, it reads nothing more."""
    reads = 0
    real = yaml.reader.Reader.update_raw

    def counting(self: yaml.reader.Reader, size: int = 4096) -> None:
        nonlocal reads
        reads += 1
        real(self, size)

    monkeypatch.setattr(yaml_format, "_LOADER", yaml.SafeLoader)
    monkeypatch.setattr(yaml.reader.Reader, "update_raw", counting)
    path, _ = _manifest(tmp_path, ".yaml", "x" * 100_000)
    (problem,) = _problems(path, max_value_bytes=1000)
    assert problem.message == "the value is 100000 bytes, over the limit of 1000"
    assert reads == 0


# --- fromFile: regular files only, read up to the limit --------------------------------------


def _from_file_problem(folder: Path, target: str, **options: Any) -> Problem:
    manifest = folder / "m.yaml"
    manifest.write_text(f"secrets:\n  - keyName: A\n    fromFile: {target}\n")
    (problem,) = _problems(manifest, **options)
    assert problem.line == 3
    return problem


def test_from_file_refuses_a_folder(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    problem = _from_file_problem(tmp_path, "folder")
    assert problem.message == "fromFile 'folder': is a folder, not a file"


def test_from_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """Opened for reading, a FIFO with no writer blocks: it is refused from its stat."""
    os.mkfifo(tmp_path / "pipe")
    problem = _from_file_problem(tmp_path, "pipe")
    assert "is not a regular file (a device, a FIFO or a socket)" in problem.message


def test_from_file_refuses_a_fifo_swapped_in_after_the_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO put where a file was, between the stat and the open: the open does not block
    (O_NONBLOCK), and fstat refuses what was opened."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("x")
    real_stat = os.stat

    def stat_as_a_file(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path) == str(tmp_path / "pipe"):
            return real_stat(tmp_path / "file")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_as_a_file)
    problem = _from_file_problem(tmp_path, "pipe")
    assert "is not a regular file" in problem.message


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_from_file_refuses_devices_even_through_a_link(tmp_path: Path, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    (tmp_path / "link").symlink_to(device)
    for target in (device, "link"):
        assert "is not a regular file" in _from_file_problem(tmp_path, target).message


def test_from_file_refuses_a_socket() -> None:
    # A short folder: a socket's path has a length limit (about 100 bytes).
    with tempfile.TemporaryDirectory(dir="/tmp") as folder, socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.path.join(folder, "s"))
        assert stat.S_ISSOCK(os.stat(os.path.join(folder, "s")).st_mode)
        problem = _from_file_problem(Path(folder), "s")
    assert "is not a regular file" in problem.message


def test_from_file_follows_a_link_to_a_file(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("linked")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    (tmp_path / "m.yaml").write_text("secrets:\n  - {keyName: A, fromFile: link.txt}\n")
    manifest = load_manifest(tmp_path / "m.yaml", accounts=["acct-a"])
    assert [s.value.reveal() for s in manifest.specs()] == ["linked"]


def test_from_file_reads_no_more_than_the_limit_and_one_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the size fstat gives is wrong (a file that grows), the read stops at the
    limit and one byte."""
    (tmp_path / "big.txt").write_bytes(b"x" * 100_000)
    real_fstat, real_read = os.fstat, os.read
    read = 0

    def fstat_says_empty(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, *info[1:6], 0, *info[7:10]))

    def counting_read(fd: int, size: int) -> bytes:
        nonlocal read
        data = real_read(fd, size)
        read += len(data)
        return data

    monkeypatch.setattr(os, "fstat", fstat_says_empty)
    monkeypatch.setattr(os, "read", counting_read)
    problem = _from_file_problem(tmp_path, "big.txt", max_value_bytes=10)
    assert problem.message == "fromFile 'big.txt': the file is over the limit of 10 bytes"
    assert read == 11


# --- the value size limit -------------------------------------------------------------------


def _manifest(folder: Path, suffix: str, value: str) -> tuple[Path, int]:
    """A manifest of one value in the given format, and the line of that value."""
    path = folder / f"m{suffix}"
    if suffix == ".yaml":
        path.write_text(f'secrets:\n  - keyName: A\n    value: "{value}"\n', encoding="utf-8")
        return path, 3
    if suffix == ".json":
        path.write_text(f'{{"secrets": [\n{{"keyName": "A",\n"value": "{value}"}}]}}')
        return path, 3
    if suffix == ".csv":
        path.write_text(f"keyName,value\nB,small\nA,{value}\n", encoding="utf-8")
        return path, 3
    path.write_text(f"B=small\n\nA='{value}'\n", encoding="utf-8")
    return path, 3


SUFFIXES = [".yaml", ".json", ".csv", ".env"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_value_over_the_limit_is_refused_with_its_size(tmp_path: Path, suffix: str) -> None:
    path, line = _manifest(tmp_path, suffix, CANARY + "é" * 10)  # 28 + 20 bytes
    (problem,) = _problems(path, max_value_bytes=47)
    assert problem.line == line
    assert problem.message == "the value is 48 bytes, over the limit of 47"
    assert problem.column == ("value" if suffix == ".csv" else None)
    manifest = load_manifest(path, accounts=["acct-a"], max_value_bytes=48)
    assert CANARY + "é" * 10 in {s.value.reveal() for s in manifest.specs()}


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_large_value_is_refused_by_default(tmp_path: Path, suffix: str) -> None:
    """Four MiB: read in linear time, refused at the default limit of 1 MiB."""
    assert MAX_VALUE_BYTES == 1024 * 1024
    path, line = _manifest(tmp_path, suffix, "x" * (4 * MAX_VALUE_BYTES))
    (problem,) = _problems(path)
    assert (problem.line, problem.message) == (
        line,
        f"the value is {4 * MAX_VALUE_BYTES} bytes, over the limit of {MAX_VALUE_BYTES}",
    )
    at_the_limit, _ = _manifest(tmp_path, suffix, "x" * MAX_VALUE_BYTES)
    assert load_manifest(at_the_limit, accounts=["acct-a"]).count >= 1


def test_values_from_the_environment_and_files_have_the_same_limit(tmp_path: Path) -> None:
    (tmp_path / "eleven.txt").write_text("x" * 11)
    (tmp_path / "ten.txt").write_text("x" * 10)
    path = tmp_path / "m.yaml"
    path.write_text(
        "secrets:\n"
        "  - {keyName: A, fromEnv: ELEVEN}\n"
        "  - {keyName: B, fromEnv: TEN}\n"
        "  - {keyName: C, fromFile: eleven.txt}\n"
        "  - {keyName: D, fromFile: ten.txt}\n"
    )
    env = {"ELEVEN": "é" * 5 + "x", "TEN": "x" * 10}
    problems = _problems(path, env=env, max_value_bytes=10)
    assert [(p.line, p.message) for p in problems] == [
        (2, "environment variable ELEVEN holds 11 bytes, over the limit of 10"),
        (4, "fromFile 'eleven.txt': the file is 11 bytes, over the limit of 10"),
    ]


def test_a_file_grown_past_the_limit_after_the_check_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "v.txt").write_text("x" * 10)
    path = tmp_path / "m.yaml"
    path.write_text("secrets:\n  - {keyName: A, fromFile: v.txt}\n")
    manifest = load_manifest(path, accounts=["acct-a"], max_value_bytes=10)
    (tmp_path / "v.txt").write_text("x" * 11)
    with pytest.raises(ManifestChanged):
        list(manifest.specs())


@pytest.mark.parametrize("limit", [0, -1])
def test_the_limit_is_at_least_one_byte(tmp_path: Path, limit: int) -> None:
    path, _ = _manifest(tmp_path, ".yaml", "x")
    with pytest.raises(UsageError, match="at least 1 byte"):
        load_manifests([str(path)], max_value_bytes=limit)


# --- environment variables that are not UTF-8 ------------------------------------------------


def test_an_environment_variable_that_is_not_utf8_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.environ decodes bytes that are not UTF-8 to lone surrogates; such a value could not
    be sent as it is, and is refused in the first pass."""
    monkeypatch.setenv("BULK_SECRETS_TEST_NOT_UTF8", "caf\udce9")  # b"caf\xe9": Latin-1
    monkeypatch.setenv("BULK_SECRETS_TEST_KEY_NOT_UTF8", "k\udcff")
    path = tmp_path / "m.yaml"
    path.write_text(
        "account: acct-a\n"
        "apiKeys: {acct-a: {fromEnv: BULK_SECRETS_TEST_KEY_NOT_UTF8}}\n"
        "secrets:\n  - {keyName: A, fromEnv: BULK_SECRETS_TEST_NOT_UTF8}\n"
    )
    problems = _problems(path, accounts=None)
    assert [(p.line, p.message) for p in problems] == [
        (
            2,
            "environment variable BULK_SECRETS_TEST_KEY_NOT_UTF8 is not UTF-8 text "
            "(the API key of 'acct-a')",
        ),
        (4, "environment variable BULK_SECRETS_TEST_NOT_UTF8 is not UTF-8 text"),
    ]


def test_a_csv_of_more_accounts_than_the_check_remembers_is_read_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check remembers where the plain rows of so many accounts go, no more: past that, a
    row of another account is checked in full, and goes where it should all the same."""
    monkeypatch.setattr(manifest_module, "_REMEMBERED", 3)
    checkers: list[Any] = []

    class Watched(manifest_module._Checker):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            checkers.append(self)

    monkeypatch.setattr(manifest_module, "_Checker", Watched)
    path = tmp_path / "m.csv"
    rows = [f"acct-{n % 10},KEY_{n},v{n}\n" for n in range(40)]
    path.write_text("account,keyName,value\n" + "".join(rows))
    manifest = load_manifest(path)
    found = [(spec.account, spec.key_name, spec.location) for spec in manifest.specs()]
    assert found == [(f"acct-{n % 10}", f"KEY_{n}", f"{path}:{n + 2}") for n in range(40)]
    assert checkers and all(len(checker._plain) <= 3 for checker in checkers)
