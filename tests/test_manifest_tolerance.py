"""What spreadsheets and editors do to manifests: accepted where it is harmless, else named.

A spreadsheet's CSV export may end its header with an empty cell (``keyName,value,``) and hold
rows with no field filled (``,,``); in some languages it separates fields with ``;`` or a tab.
An editor may indent YAML with a tab. And a message about a count is grammatical.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulk_secrets.errors import ManifestError, Problem, UsageError
from bulk_secrets.manifest import load_manifest, load_manifests, yaml_format

from .helpers import CANARY


def _values(path: Path, **options: Any) -> list[tuple[str, str, str]]:
    options.setdefault("accounts", ["acct-a"])
    manifests = load_manifests([str(path)], **options)
    return [(s.location.rsplit(":", 1)[1], s.key_name, s.value.reveal()) for s in manifests.specs()]


def _problems(path: Path, **options: Any) -> list[Problem]:
    options.setdefault("accounts", ["acct-a"])
    with pytest.raises(ManifestError) as caught:
        load_manifests([str(path)], **options)
    assert CANARY not in str(caught.value)
    return list(caught.value.problems)


# --- CSV from a spreadsheet -----------------------------------------------------------------


def test_a_trailing_empty_header_cell_and_empty_rows_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"\xef\xbb\xbfkeyName,value,\r\n"
        b"A,one,\r\n"
        b",,\r\n"  # 3: an empty row, ignored
        b"B,two\r\n"  # 4: without the trailing empty field
        b",,,,,\r\n"  # 5: only commas, ignored
        b'C,"three, with a comma",\r\n'
        b'"","",""\r\n'  # 7: quoted, but empty
    )
    assert _values(path) == [
        ("2", "A", "one"),
        ("4", "B", "two"),
        ("6", "C", "three, with a comma"),
    ]


def test_a_field_under_a_header_cell_with_no_name_is_a_problem(tmp_path: Path) -> None:
    """A field there may be the rest of a value cut by an unquoted comma: it is not shown."""
    path = tmp_path / "export.csv"
    path.write_text(f"keyName,value,,\nA,one,,\nB,sk-live,{CANARY}-rest,\nC,x,y,z,w\n")
    problems = _problems(path)
    assert [(p.line, p.message) for p in problems] == [
        (3, "the record fills a column that has no name in the header"),
        (4, "the record has 5 fields, the header has 4"),
    ]


def test_an_empty_header_cell_between_names_is_still_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,,value\nA,,x\n")
    (problem,) = _problems(path)
    assert problem.line == 1
    assert "an unknown column" in problem.message


@pytest.mark.parametrize(
    ("delimiter", "shown"), [(";", "';'"), ("\t", "'\\t'")], ids=["semicolon", "tab"]
)
def test_a_file_separated_otherwise_names_its_delimiter(
    tmp_path: Path, delimiter: str, shown: str
) -> None:
    path = tmp_path / "m.csv"
    rows = [["account", "keyName", "value"], ["acct-a", "A", f"{CANARY}, with a comma"]]
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows))
    (problem,) = _problems(path)
    assert (problem.line, problem.message) == (
        1,
        f"the file looks separated by {shown}: use commas, or pass --delimiter {shown}",
    )
    assert _values(path, csv_delimiter=delimiter) == [("2", "A", f"{CANARY}, with a comma")]


def test_a_quoted_header_separated_by_semicolons_is_named_too(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('"keyName";"value"\n"A";"x;y"\n')
    (problem,) = _problems(path)
    assert problem.message.startswith("the file looks separated by ';'")
    assert _values(path, csv_delimiter=";") == [("2", "A", "x;y")]


def test_a_comma_file_read_with_another_delimiter_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\nA,x\n")
    (problem,) = _problems(path, csv_delimiter=";")
    assert problem.message == (
        "the file looks separated by ',': use semicolons, or pass --delimiter ','"
    )


def test_data_with_semicolons_is_not_taken_for_a_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(f"A_KEY;{CANARY}\nB_KEY;x\n")
    (problem,) = _problems(path)
    assert problem.message.startswith("the first row is not a header")


@pytest.mark.parametrize("delimiter", ["|", ";;", "", "\\t"])
def test_only_known_delimiters_are_accepted(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\nA,x\n")
    with pytest.raises(UsageError, match="the CSV delimiter must be one of"):
        load_manifest(path, accounts=["acct-a"], csv_delimiter=delimiter)


# --- YAML indented with a tab ---------------------------------------------------------------


@pytest.fixture(params=["default", "pure"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The YAML parser: libyaml's when PyYAML has it, and PyYAML's own."""
    chosen = yaml_format._LOADER if request.param == "default" else yaml.SafeLoader
    monkeypatch.setattr(yaml_format, "_LOADER", chosen)
    return chosen


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("secrets:\n\t- keyName: A\n    value: x\n", 2),
        ('secrets:\n  - keyName: A\n\t  value: "x"\n', 3),
        ('secrets:\n  - keyName: A\n  \tvalue: "x"\n', 3),
        ('secrets:\r\n  - keyName: A\r\n    value: "x"\r\n\tid: y\r\n', 4),
        (f'secrets:\n  - keyName: A\n    value: "x"\n  -\tkeyName: {CANARY}\n', 4),
        (f'secrets:\n  - {{keyName: A, value: "x"}}\n  - \t{CANARY}\n', 3),
        ("account: a\nsecrets:\n\tA: x\n", 3),
        ('secrets:\n  A: |\n    x\n\ty\n  B: "z"\n', 4),
    ],
)
def test_a_tab_in_the_indentation_is_named(
    tmp_path: Path, loader: Any, text: str, line: int
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, newline="")
    (problem,) = _problems(path)
    assert (problem.line, problem.message) == (
        line,
        "a tab in the indentation: YAML indents with spaces",
    )


def test_a_tab_in_the_indentation_of_stdin_is_named(loader: Any) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifests(
            ["-"], format="yaml", accounts=["acct-a"], stdin=io.StringIO("secrets:\n\tA: x\n")
        )
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (
        2,
        "a tab in the indentation: YAML indents with spaces",
    )


@pytest.mark.parametrize(
    "text",
    [
        'secrets: {A: "x\ty"}\n',  # in a value: the value's own
        'secrets:\n  A:\t"x"\n',  # after a key: separation, which YAML allows
        'secrets:\n  - {keyName:\tA, value: "x"}\n',
    ],
)
def test_a_tab_elsewhere_is_not_an_indentation_problem(
    loader: Any, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    try:
        load_manifests([str(path)], accounts=["acct-a"])
    except ManifestError as exc:
        assert all("a tab in the indentation" not in p.message for p in exc.problems)


# --- counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (1, "1 secret has no target account: name one in the manifest, or give the accounts "
         "to apply it to"),
        (2, "2 secrets have no target account: name one in the manifest, or give the accounts "
         "to apply them to"),
    ],
)  # fmt: skip
def test_counts_are_grammatical(tmp_path: Path, rows: int, message: str) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\n" + "".join(f"K_{i},v\n" for i in range(rows)))
    (problem,) = _problems(path, accounts=None)
    assert (problem.line, problem.message) == (2, message)


def test_a_record_of_one_field_says_field(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\nA\n")
    (problem,) = _problems(path)
    assert problem.message == "the record has 1 field, the header has 2"
