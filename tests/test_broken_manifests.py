"""The corpus of broken manifests in tests/broken/, each run through the real CLI in-process.

For every file the CLI must exit 2 having sent nothing, report every problem at once at exactly
the lines tests/broken/expected.json lists (``null``: a problem with no line), say what is wrong
(the expected message substrings) and never print a value (the canaries planted in the corpus,
some of them where a name should stand: a CSV with no header row, an unquoted comma, a PEM key
pasted into a .env without quotes, a mapping written backwards).

Support files the manifests read with ``fromFile`` live in tests/broken/data/; they are not
manifests themselves.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TypedDict

import anyio.to_thread
import pytest

import bulk_secrets.cli
from bulk_secrets.emulator import EmulatorConfig, running_emulator

from .helpers import CANARY as HELPERS_CANARY

pytestmark = pytest.mark.anyio

BROKEN = Path(__file__).resolve().parent / "broken"
EXPECTED_FILE = BROKEN / "expected.json"
CANARY = "CANARY-corpus-9d2f"
# Referenced by valid fromEnv entries in the corpus; its value must never be printed either.
PRESENT_VARIABLE = "BULK_SECRETS_TEST_PRESENT"
# Every variable the corpus expects to be missing starts with this.
UNSET_PREFIX = "BULK_SECRETS_TEST_SURELY_UNSET_"
SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".csv": "csv", ".env": "dotenv"}


class Expectation(TypedDict):
    lines: list[int | None]
    messages: list[str]


def _load_expected() -> dict[str, Expectation]:
    raw = json.loads(EXPECTED_FILE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return {
        str(name): Expectation(lines=e["lines"], messages=e["messages"]) for name, e in raw.items()
    }


def _corpus_files() -> list[str]:
    return sorted(p.name for p in BROKEN.iterdir() if p.is_file() and p.name != EXPECTED_FILE.name)


EXPECTED = _load_expected()
CORPUS = _corpus_files()


def _errors(stderr: str, path: str) -> list[tuple[int | None, str]]:
    """The errors reported for ``path``: (line, message); line None for an error without one.

    Matches ``  {path}:{line}: error: ...``, ``  {path}:{line} (column NAME): error: ...`` and
    ``  {path}: error: ...``; warnings (an empty value, say) are not errors and are not counted.
    """
    pattern = re.compile(
        rf"^[ \t]*{re.escape(path)}(?::(\d+))?(?: \(column [^)]*\))?: error: ?(.*)$",
        re.MULTILINE,
    )
    return [(int(m.group(1)) if m.group(1) else None, m.group(2)) for m in pattern.finditer(stderr)]


def test_every_corpus_file_has_expectations_and_vice_versa() -> None:
    assert set(CORPUS) == set(EXPECTED), (
        f"not in expected.json: {sorted(set(CORPUS) - set(EXPECTED))}; "
        f"no such file: {sorted(set(EXPECTED) - set(CORPUS))}"
    )


def test_corpus_shape() -> None:
    """At least 36 files, at least 6 per format, and well-formed expectations."""
    per_format: dict[str, int] = {}
    for name in CORPUS:
        kind = SUFFIXES.get(Path(name).suffix)
        assert kind is not None, f"{name}: not a manifest suffix"
        per_format[kind] = per_format.get(kind, 0) + 1
    assert len(CORPUS) >= 36
    assert set(per_format) == {"yaml", "json", "csv", "dotenv"}
    assert min(per_format.values()) >= 6, per_format
    for name, expectation in EXPECTED.items():
        lines = expectation["lines"]
        assert lines, name
        assert len(set(lines)) == len(lines), f"{name}: repeated line"
        assert all(line is None or (isinstance(line, int) and line >= 1) for line in lines), name
        assert 1 <= len(expectation["messages"]) <= 2, name
        assert all(isinstance(m, str) and m for m in expectation["messages"]), name
    assert sum(CANARY in (BROKEN / name).read_text("utf-8", "replace") for name in CORPUS) >= 5


@pytest.mark.parametrize("name", CORPUS, ids=CORPUS)
async def test_broken_manifest_is_rejected_with_every_problem(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expectation = EXPECTED[name]
    path = str(BROKEN / name)
    monkeypatch.setenv("FIREWORKS_API_KEY", "k")
    monkeypatch.delenv("FIREWORKS_ACCOUNT_ID", raising=False)
    monkeypatch.setenv(PRESENT_VARIABLE, f"{CANARY}-from-the-environment")
    for variable in [v for v in os.environ if v.startswith(UNSET_PREFIX)]:
        monkeypatch.delenv(variable)

    async with running_emulator(EmulatorConfig(keys={"k": None})) as server:
        argv = ["apply", path, "--account", "acct-a", "--base-url", server.base_url]
        code = await anyio.to_thread.run_sync(bulk_secrets.cli.main, argv)
        requests = server.stats.count()
    out, err = capsys.readouterr()

    assert code == 2, err
    assert requests == 0, err
    for line in expectation["lines"]:
        if line is None:
            assert path in err, err
        else:  # CSV problems may name the column: "{path}:{line} (column NAME): error: ..."
            assert f"{path}:{line}:" in err or f"{path}:{line} (column " in err, (
                f"no error at line {line}:\n{err}"
            )
    errors = _errors(err, path)
    assert {line for line, _ in errors} == set(expectation["lines"]), err
    # Only the messages of this file's errors: the path says "yaml" or "csv", the program's
    # name says "secrets".
    messages = "\n".join(message for _, message in errors).casefold()
    for message in expectation["messages"]:
        assert message.casefold() in messages, f"{message!r} not in the messages:\n{err}"
    assert CANARY not in out + err
    assert HELPERS_CANARY not in out + err
