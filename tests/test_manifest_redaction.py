"""A manifest problem never echoes what may be a value.

A problem names file:line (and the CSV column) and what is wrong. Text of the manifest is quoted
only when it is a valid name (a keyName, an account id, a variable that is set, a path that
exists) or looks like a misspelt field name; anything else may be a value shifted into the place
of a name, and is not shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_secrets.errors import ManifestError, Problem
from bulk_secrets.manifest import load_manifests, yaml_format
from bulk_secrets.manifest.document import Problems, redact
from bulk_secrets.naming import account_id_problem, key_name_problem, secret_id_problem

from .helpers import CANARY, csv_text


def _problems(path: Path, text: str, **options: object) -> list[Problem]:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)], **options)  # type: ignore[arg-type]
    problems = list(caught.value.problems)
    assert CANARY not in str(caught.value)
    return problems


def _lines(problems: list[Problem]) -> list[int | None]:
    return [p.line for p in problems]


CASES: list[tuple[str, str, list[int | None], str]] = [
    # (file name, text, problem lines, a message substring)
    (
        "backwards.yaml",
        f'secrets:\n  "{CANARY}": DB_PASSWORD\n',
        [2],
        "other way round",
    ),
    (
        "bad-key.yaml",
        f'secrets:\n  - keyName: "{CANARY}"\n    value: "x"\n',
        [2],
        "keyName is not an environment variable name",
    ),
    (
        "bad-id.yaml",
        f'secrets:\n  - keyName: A\n    value: "x"\n    id: "{CANARY}"\n',
        [4],
        "the id is not a valid secret id",
    ),
    (
        "long-id.yaml",
        f'secrets:\n  - keyName: A\n    value: "x"\n    id: "{CANARY * 3}"\n',
        [4],
        "characters, over 63",
    ),
    (
        "accounts.yaml",
        f'accounts: [ok, "{CANARY}"]\nsecrets:\n  - {{keyName: A, value: "x"}}\n',
        [1],
        "an account id is not valid",
    ),
    (
        "entry-accounts.yaml",
        f'accounts: [ok]\nsecrets:\n  - {{keyName: A, value: "x", accounts: ["{CANARY}"]}}\n',
        [3],
        "an account id is not valid",
    ),
    (
        "api-key-account.yaml",
        f'account: ok\napiKeys:\n  "{CANARY}": {{fromEnv: HOME}}\n  "{CANARY}x": "y"\n'
        'secrets: {A: "x"}\n',
        [3, 4],
        "the API key of an account must be",
    ),
    (
        "from-env.yaml",
        f'secrets:\n  - {{keyName: A, fromEnv: "{CANARY}"}}\n',
        [2],
        "not shown",
    ),
    (
        "from-env-tag.yaml",
        f"secrets:\n  - {{keyName: A, fromEnv: !{CANARY} x}}\n",
        [2],
        "fromEnv would be read as tagged data",
    ),
    (
        "from-file.yaml",
        f'secrets:\n  - {{keyName: A, fromFile: "{CANARY}"}}\n',
        [2],
        "there is no such file (the path is not shown",
    ),
    (
        "unknown-field.yaml",
        f'{CANARY}: 1\nsecrets:\n  - {{keyName: A, value: "x", {CANARY}: 2}}\n',
        [1, 3],
        "an unknown field (not shown: it may be a value)",
    ),
    (
        "duplicate-key.yaml",
        f'secrets:\n  "{CANARY}": A\n  "{CANARY}": B\n',
        [2, 3],
        "a key (not shown) appears twice",
    ),
    (
        "undefined-alias.yaml",
        f"secrets:\n  - {{keyName: A, value: *{CANARY}}}\n",
        [2],
        "alias",
    ),
    (
        "backwards.json",
        f'{{"secrets": {{\n"{CANARY}": "DB_PASSWORD"}}}}\n',
        [2],
        "other way round",
    ),
    (
        "no-header.csv",
        f"A_KEY,{CANARY}\nB_KEY,other\n",
        [1],
        "the first row is not a header",
    ),
    (
        "value-as-column.csv",
        f"keyName,{CANARY}\nA,x\n",
        [1, 1],
        "an unknown column (not shown: it may be a value)",
    ),
    (
        "shifted.csv",
        f"keyName,value,account\nA,{CANARY}-head,{CANARY}-tail\n{CANARY},x,acct\n",
        [2, 3],
        "an account id is not valid",
    ),
    (
        "pem.env",
        f"A=ok\nKEY=-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN+/{CANARY}=x\n"
        "MzEfYyjiWA4R4M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu==\n"
        f"-----END PRIVATE KEY-----\nB=ok\n{CANARY}=x\n",
        [2, 7],
        "a multi-line value (a PEM block) without quotes",
    ),
    (
        "pem-never-ends.env",
        f"A=ok\nexport KEY=-----BEGIN CERTIFICATE-----\nMIIEvQIB+{CANARY}=x\nB=ok\n",
        [2],
        "a multi-line value (a PEM block) without quotes",
    ),
]


@pytest.mark.parametrize(("name", "text", "lines", "message"), CASES, ids=[c[0] for c in CASES])
def test_no_problem_quotes_what_may_be_a_value(
    tmp_path: Path, name: str, text: str, lines: list[int | None], message: str
) -> None:
    problems = _problems(tmp_path / name, text, accounts=["acct"], env={"HOME": "/"})
    assert sorted(_lines(problems), key=str) == sorted(lines, key=str), problems
    assert any(message in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("name", "text"),
    [(c[0], c[1]) for c in CASES if c[0].endswith(".yaml")],
    ids=[c[0] for c in CASES if c[0].endswith(".yaml")],
)
def test_pyyaml_without_libyaml_gives_the_same_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    """PyYAML's own parser (used without libyaml) quotes what it found in its messages: they
    are redacted, and the problems are those libyaml gives."""
    with_libyaml = _problems(tmp_path / name, text, accounts=["acct"], env={"HOME": "/"})
    monkeypatch.setattr(yaml_format, "_LOADER", yaml.SafeLoader)
    pure = _problems(tmp_path / name, text, accounts=["acct"], env={"HOME": "/"})
    assert _lines(pure) == _lines(with_libyaml)


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml_format._LOADER], ids=["pure", "default"])
@pytest.mark.parametrize(
    "text",
    [
        f"secrets: !{CANARY}!x [a]\n",  # an undefined tag handle
        f"secrets:\n  - {{keyName: A, value: x}}\n  - \t{CANARY}\n",  # a tab
        f'secrets:\n  - {{keyName: A, value: "\\{CANARY}"}}\n',  # an unknown escape
        f"secrets:\n  - {{keyName: A, value: &{CANARY} x, id: &{CANARY} y}}\n  - *{CANARY}x\n",
    ],
)
def test_yaml_syntax_errors_never_quote_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: object, text: str
) -> None:
    monkeypatch.setattr(yaml_format, "_LOADER", loader)
    problems = _problems(tmp_path / "m.yaml", text, accounts=["acct"])
    assert all(p.line is not None for p in problems), problems
    assert all(redact(p.message) == p.message for p in problems), problems


def test_json_syntax_errors_never_quote_the_file(tmp_path: Path) -> None:
    problems = _problems(tmp_path / "m.json", '{"secrets": {"A": "x\\q"}}', accounts=["acct"])
    assert _lines(problems) == [1]
    assert "'q'" not in problems[0].message
    assert "not valid JSON" in problems[0].message


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("found character '\\t' that cannot start any token", "found character (not shown) th"),
        ("found undefined alias 'sk-live-1'", "found undefined alias (not shown)"),
        ("expected ',' or ']', but got '<scalar>'", "expected ',' or ']', but got '<scalar>'"),
        ("'\"' expected after ','", "'\"' expected after ','"),
        ("Invalid \\escape: 'q'", "Invalid \\escape: (not shown)"),
        ('x "it\\"s" y', "x (not shown) y"),
    ],
)
def test_redact_keeps_syntax_and_hides_text(message: str, shown: str) -> None:
    assert redact(message).startswith(shown)


def test_invalid_names_are_never_quoted_and_valid_ones_are() -> None:
    for text in (CANARY, f"a {CANARY}", "", "9" * 70):
        for problem in (key_name_problem(text), account_id_problem(text), secret_id_problem(text)):
            assert problem is not None
            assert text not in problem or not text
    # Derived from a valid keyName, an invalid id quotes both: they are names.
    assert secret_id_problem("-lead", key_name="_LEAD") == (
        "keyName '_LEAD' gives the secret id '-lead', which is not valid (a-z, 0-9 and -, "
        "starting with a letter, at most 63 characters): give an id"
    )
    assert secret_id_problem("x" * 64, key_name="X" * 64) == (
        "the secret id derived from keyName is 64 characters, over 63"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("valeu", "unknown field 'valeu'; did you mean 'value'?"),
        ("KEYNAME", "unknown field 'KEYNAME'; did you mean 'keyName'?"),
        ("from_env", "unknown field 'from_env'; did you mean 'fromEnv'?"),
        ("description", "an unknown field (not shown: it may be a value)"),
        (CANARY, "an unknown field (not shown: it may be a value)"),
        ("value" + "x" * 40, "an unknown field (not shown: it may be a value)"),
        ("val ue", "an unknown field (not shown: it may be a value)"),
    ],
)
def test_unknown_names_are_named_only_when_misspelt_names(name: str, message: str) -> None:
    out = Problems("m.yaml")
    out.unknown(3, name, ("keyName", "value", "fromEnv"), "field")
    (problem,) = out.errors
    assert problem.message.startswith(message)
    if "not shown" in message:
        assert name not in problem.message
        assert problem.column is None


def test_a_valid_name_in_place_of_a_value_is_still_named(tmp_path: Path) -> None:
    """What is valid is quoted: a variable that is not set, a path that exists, an account."""
    (tmp_path / "folder").mkdir()
    problems = _problems(
        tmp_path / "m.yaml",
        "accounts: [acct-a]\nsecrets:\n"
        "  - {keyName: A, fromEnv: BULK_SECRETS_TEST_SURELY_UNSET_9}\n"
        "  - {keyName: B, fromFile: folder}\n"
        '  - {keyName: C, value: "x", accounts: [acct-z]}\n',
        env={},
    )
    messages = [p.message for p in problems]
    assert messages == [
        "environment variable BULK_SECRETS_TEST_SURELY_UNSET_9 is not set",
        "fromFile 'folder': is a folder, not a file",
        "account 'acct-z' is not among the manifest's accounts (acct-a)",
    ]


# Any text with the canary in it is not a valid name of any kind: wherever it stands in a
# manifest, it must not be printed.
TAINTED = st.sampled_from(
    [CANARY, f"{CANARY} b", f"a/{CANARY}", f"{CANARY}==", f"{CANARY},x", f'"{CANARY}', CANARY * 3]
)
NAMES = st.sampled_from(["A_KEY", "B_KEY", "acct-a", "value", "keyName", "id", "x"])
SLOTS = ("keyName", "value", "fromEnv", "fromFile", "id", "account", "field")


@st.composite
def _entries(draw: st.DrawFn) -> list[dict[str, str]]:
    entries = []
    for index in range(draw(st.integers(1, 4))):
        entry = {"keyName": f"K_{index}", "value": "v", "account": "acct-a"}
        tainted = draw(st.sets(st.sampled_from(SLOTS), max_size=2))
        for slot in tainted:
            text = draw(TAINTED)
            if slot in ("fromEnv", "fromFile"):
                entry.pop("value", None)
            entry[text if slot == "field" else slot] = text
            if slot == "field" and draw(st.booleans()):
                entry[draw(NAMES)] = text
        entries.append(entry)
    return entries


def _items(entries: list[dict[str, str]]) -> list[dict[str, object]]:
    """The entries as YAML and JSON write them: ``account`` is a list, ``accounts``."""
    return [
        {
            ("accounts" if k == "account" else k): ([v] if k == "account" else v)
            for k, v in e.items()
        }
        for e in entries
    ]


def _yaml(entries: list[dict[str, str]]) -> str:
    return yaml.safe_dump({"secrets": _items(entries)}, allow_unicode=True)


def _json(entries: list[dict[str, str]]) -> str:
    return json.dumps({"secrets": _items(entries)}, indent=1)


def _csv(entries: list[dict[str, str]]) -> str:
    columns = list(dict.fromkeys(k for e in entries for k in e))
    rows = [[entry.get(c, "") for c in columns] for entry in entries]
    return csv_text(columns, rows, lineterminator="\r\n")


def _dotenv(entries: list[dict[str, str]]) -> str:
    lines = []
    for entry in entries:
        value = entry.get("value", entry.get("fromEnv", ""))
        lines.append(f"{entry['keyName']}={value}")
    return "\n".join(lines) + "\n"


WRITERS: dict[str, Callable[[list[dict[str, str]]], str]] = {
    ".yaml": _yaml,
    ".json": _json,
    ".csv": _csv,
    ".env": _dotenv,
}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=_entries(), override=st.booleans())
def test_a_value_wherever_it_stands_is_never_printed(
    tmp_path: Path, suffix: str, entries: list[dict[str, str]], override: bool
) -> None:
    path = tmp_path / f"m{suffix}"
    path.write_text(WRITERS[suffix](entries), encoding="utf-8")
    accounts = ["acct-a"] if override else None
    try:
        manifests = load_manifests(
            [str(path)], accounts=accounts, default_accounts=["acct-a"], env={"HOME": "/"}
        )
    except ManifestError as exc:
        assert CANARY not in str(exc)
        return
    printed = [str(w) for m in manifests for w in m.warnings]
    printed += [repr(t) for t in manifests.targets()]
    printed += [repr(t) for t in manifests.excluded()]
    printed += [repr(s) for s in manifests.specs()]
    assert CANARY not in "\n".join(printed)
