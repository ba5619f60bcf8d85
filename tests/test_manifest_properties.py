"""Property tests: whatever text or bytes a parser is fed, only ManifestError escapes."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulk_secrets.errors import ManifestError, Problem
from bulk_secrets.manifest import _PLAIN_KEY_NAME, FORMATS, csv_format, load_manifests
from bulk_secrets.naming import key_name_problem, secret_id_for, secret_id_problem
from bulk_secrets.sharding import Shard

from .helpers import csv_text

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Fragments that reach past the syntax check into the structure each format has.
FRAGMENTS = [
    "secrets:", "  - keyName: A_B", "    value: x", "    value: 0123", "    fromEnv: HOME",
    "    fromFile: .", "    id: Bad_Id", "    accounts: [a]", "account: a", "accounts: [a, b]",
    "apiKeys: {a: {fromEnv: X}}", "version: 2", "  K: v", "- ", "{", "}", "[", "]", ",", ":",
    "&x", "*x", '"', "'", "#", "\\", "\r", "\t", "keyName,value", "A,b", "account,keyName,value",
    'A="multi', 'line"', "export A=1", "=", '{"secrets": [{"keyName": "A", "value": 1}]}', "é",
    "\x00", "\ufeff", "    fromCommand: [op, read]", "    fromCommand: op", "keyName,value,", ",,",
    "keyName;value", "A;b", "keyName\tvalue", "\t- keyName: A",
]  # fmt: skip


def _check(path: str, fmt: str, text: str | None = None) -> None:
    stdin = None if text is None else io.StringIO(text)
    try:
        manifests = load_manifests([path], format=fmt, default_accounts=["a"], stdin=stdin)
    except ManifestError:
        return
    for manifest in manifests:
        for spec in manifest.specs():
            assert spec.key_name
            assert spec.secret_id


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(text=st.text())
def test_any_text(fmt: str, text: str) -> None:
    _check("-", fmt, text)


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(lines=st.lists(st.sampled_from(FRAGMENTS), max_size=12))
def test_structured_fragments(fmt: str, lines: list[str]) -> None:
    _check("-", fmt, "\n".join(lines))


@pytest.mark.parametrize("fmt", FORMATS)
@SETTINGS
@given(data=st.binary())
def test_any_bytes(fmt: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "manifest"
        path.write_bytes(data)
        _check(os.fspath(path), fmt)


KEY_CHARACTERS = st.characters(codec="utf-8") | st.sampled_from("AZaz09_-é\n")


@SETTINGS
@given(key_name=st.text(KEY_CHARACTERS, max_size=70) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]*"))
def test_the_checks_shortcut_for_a_plain_key_name_agrees_with_naming(key_name: str) -> None:
    """The check takes a keyName that its one pattern matches as valid, with a valid derived
    id, without asking ``naming``: it must be exactly those ``naming`` finds nothing wrong
    with."""
    fine = key_name_problem(key_name) is None and (
        secret_id_problem(secret_id_for(key_name), key_name=key_name) is None
    )
    assert (_PLAIN_KEY_NAME.fullmatch(key_name) is not None) == fine


def _loaded(
    text: str, defaults: list[str], override: list[str] | None, shard: Shard | None
) -> tuple[list[tuple[str, ...]], list[Problem]]:
    """The specs (the value revealed) and the warnings of a CSV manifest, or its problems."""
    try:
        manifests = load_manifests(
            ["-"],
            format="csv",
            accounts=override,
            default_accounts=defaults,
            stdin=io.StringIO(text),
            max_value_bytes=8,
            shard=shard,
        )
    except ManifestError as exc:
        return [], list(exc.problems)
    specs: list[tuple[str, ...]] = [
        (spec.account, spec.key_name, spec.secret_id, spec.location, spec.value.reveal())
        for spec in manifests.specs()
    ]
    skipped = [(t.account, t.key_name, t.location) for t in manifests.excluded()]
    specs += [("excluded", *target) for target in skipped]
    return specs, [warning for manifest in manifests for warning in manifest.warnings]


# Rows of a manifest with no problem (distinct valid keyNames, valid accounts), so that its
# specs and warnings are compared, or rows of any of the cells, so that its problems are. A
# value of at most 2 characters, all that cannot be over 8 bytes, takes the shortcut.
VALUE_CELLS = st.sampled_from(["x", "yz", "v", "", "12345678", "a\nb", 'q"', "a,b", "é"])
KEY_NAMES = ["A", "B_1", "C", "D_2", "E", "F"]
SOUND_ROWS = st.lists(
    st.tuples(st.sampled_from(KEY_NAMES), VALUE_CELLS, st.sampled_from(["", "a", "d", "d"])),
    max_size=6,
    unique_by=lambda row: row[0],
)
ANY_ROWS = st.lists(
    st.tuples(
        st.sampled_from([*KEY_NAMES, "1A", "", "A" * 64, "b,c", "é"]),
        VALUE_CELLS,
        st.sampled_from(["", "a", "b", "Bad!", "a,b"]),
    ),
    max_size=8,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=SOUND_ROWS | ANY_ROWS,
    column=st.booleans(),
    defaults=st.sampled_from([[], ["a"], ["a", "b", "c"]]),
    override=st.sampled_from([None, ["a"], ["z"]]),
    shard=st.sampled_from([None, Shard(1, 2), Shard(2, 2)]),
    block=st.sampled_from([1, 6, 16, 40, 8192]),
    line_end=st.sampled_from(["\n", "\r\n"]),
    blank=st.none() | st.integers(0, 8),
    last_line_end=st.booleans(),
)
def test_a_plain_csv_row_is_checked_as_any_other(
    rows: list[tuple[str, str, str]],
    column: bool,
    defaults: list[str],
    override: list[str] | None,
    shard: Shard | None,
    block: int,
    line_end: str,
    blank: int | None,
    last_line_end: bool,
) -> None:
    """Rows under a header of keyName, value and perhaps account take shortcuts through the
    reader and the check: read ``block`` characters at a time, lines of plain rows become a
    ``PlainBlock`` checked at once, and others a ``PlainRow`` each. Under a header with an
    ``id`` column left empty, the same rows take neither. What the two give (specs, what the
    accounts given leave out, warnings, problems with their lines and columns) must be the
    same, whatever the line ends, a blank line among the rows, or none after the last."""
    header = ["account", "keyName", "value"] if column else ["keyName", "value"]
    cells = [[account, key, value] if column else [key, value] for key, value, account in rows]
    general_cells = [[*row, ""] for row in cells]
    if blank is not None:  # a blank line: a record of no field, which is ignored
        cells.insert(min(blank, len(cells)), [])
        general_cells.insert(min(blank, len(general_cells)), [])
    plain = csv_text(header, cells, lineterminator=line_end)
    general = csv_text([*header, "id"], general_cells, lineterminator=line_end)
    if not last_line_end:
        plain, general = plain.removesuffix(line_end), general.removesuffix(line_end)
    with mock.patch.object(csv_format, "_BLOCK", block):
        shortcut = _loaded(plain, defaults, override, shard)
    assert shortcut == _loaded(general, defaults, override, shard)
