"""Every row accounted for: what the accounts given to a run (``--account``,
``--accounts-file``: ``accounts=``) leave out is listed by ``excluded()``, so that the run can
report each secret and account as skipped; without them, a row's account must be one the
manifest targets."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

import bulk_secrets.manifest as manifest_module
from bulk_secrets.errors import ManifestError
from bulk_secrets.manifest import load_manifest, load_manifests
from bulk_secrets.models import Target


def _rows(targets: Iterable[Target]) -> list[tuple[str, str, str]]:
    listed = list(targets)
    assert all(type(t) is Target for t in listed)  # names only, never a value
    return [(t.account, t.key_name, t.location.rsplit(":", 1)[1]) for t in listed]


@pytest.fixture
def yaml_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: [acct-a, acct-b, acct-c]\n"
        "secrets:\n"
        '  - {keyName: EVERYWHERE, value: "x"}\n'  # 3
        '  - {keyName: ONLY_B, value: "x", accounts: [acct-b]}\n'  # 4
        '  - {keyName: A_AND_C, value: "x", accounts: [acct-c, acct-a]}\n'  # 5
        "  - {keyName: B_AND_C, fromEnv: SOME_VAR, accounts: [acct-b, acct-c]}\n"  # 6
    )
    return path


@pytest.fixture
def csv_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.csv"
    path.write_text(
        "account,keyName,value\n"
        "acct-a,WANDB_API_KEY,wa\n"  # 2
        "acct-b,WANDB_API_KEY,wb\n"  # 3
        "acct-a,OTHER,oa\n"  # 4
        "acct-c,WANDB_API_KEY,wc\n"  # 5
        ",SHARED,s\n"  # 6: no account of its own: goes to the run's accounts
    )
    return path


@pytest.mark.parametrize("keep_limit", [0, 1000], ids=["read-again", "kept"])
def test_what_the_accounts_given_leave_out_is_listed_in_file_order(
    yaml_manifest: Path, monkeypatch: pytest.MonkeyPatch, keep_limit: int
) -> None:
    monkeypatch.setattr(manifest_module, "KEEP_LIMIT", keep_limit)
    manifest = load_manifest(yaml_manifest, accounts=["acct-a"], env={"SOME_VAR": "v"})
    # The accounts given replace the manifest's own: EVERYWHERE goes to acct-a alone, and is
    # not reported for the manifest's other accounts. An entry's own accounts are.
    assert _rows(manifest.excluded()) == [
        ("acct-b", "ONLY_B", "4"),
        ("acct-c", "A_AND_C", "5"),
        ("acct-b", "B_AND_C", "6"),
        ("acct-c", "B_AND_C", "6"),
    ]
    assert manifest.excluded_count == 4
    assert [t.source for t in manifest.excluded()][-1] == "env:SOME_VAR"
    assert _rows(manifest.targets()) == [("acct-a", "EVERYWHERE", "3"), ("acct-a", "A_AND_C", "5")]
    assert manifest.count == 2
    # The warning stays, once per secret that goes nowhere.
    assert [(w.line, w.message) for w in manifest.warnings] == [
        (4, "ONLY_B is not applied: its accounts are not targeted"),
        (6, "B_AND_C is not applied: its accounts are not targeted"),
    ]


def test_csv_rows_for_other_accounts_are_listed(csv_manifest: Path) -> None:
    manifest = load_manifest(csv_manifest, accounts=["acct-a", "acct-z"])
    assert _rows(manifest.excluded()) == [
        ("acct-b", "WANDB_API_KEY", "3"),
        ("acct-c", "WANDB_API_KEY", "5"),
    ]
    assert _rows(manifest.targets()) == [
        ("acct-a", "WANDB_API_KEY", "2"),
        ("acct-a", "OTHER", "4"),
        ("acct-a", "SHARED", "6"),
        ("acct-z", "SHARED", "6"),
    ]
    assert (manifest.count, manifest.excluded_count) == (4, 2)
    assert [w.line for w in manifest.warnings] == [3, 5]


def test_a_manifest_set_lists_each_manifest_in_turn(
    yaml_manifest: Path, csv_manifest: Path
) -> None:
    manifests = load_manifests(
        [str(csv_manifest), str(yaml_manifest)], accounts=["acct-c"], env={"SOME_VAR": "v"}
    )
    assert [t.location for t in manifests.excluded()] == [
        f"{csv_manifest}:2",
        f"{csv_manifest}:3",
        f"{csv_manifest}:4",
        f"{yaml_manifest}:4",
        f"{yaml_manifest}:5",
        f"{yaml_manifest}:6",
    ]
    assert manifests.excluded_count == 6
    assert manifests.count == sum(1 for _ in manifests.targets()) == 5


def test_every_pair_is_either_targeted_or_excluded(yaml_manifest: Path, csv_manifest: Path) -> None:
    env = {"SOME_VAR": "v"}
    # The entries that name accounts of their own (the others go to the accounts given).
    own = {yaml_manifest: (":4", ":5", ":6"), csv_manifest: (":2", ":3", ":4", ":5")}
    for path in (yaml_manifest, csv_manifest):
        whole = load_manifest(path, default_accounts=["acct-d"], env=env).targets()
        named = {(t.account, t.location) for t in whole if t.location.endswith(own[path])}
        for accounts in (["acct-a"], ["acct-b", "acct-c"], ["acct-z"]):
            manifest = load_manifest(path, accounts=accounts, env=env)
            targeted = {(t.account, t.location) for t in manifest.targets()}
            excluded = {(t.account, t.location) for t in manifest.excluded()}
            assert not targeted & excluded
            # Each pair an entry names of its own is targeted or excluded; the accounts given
            # may add pairs (an entry without accounts of its own goes to them).
            assert named - targeted == excluded


def test_without_accounts_given_nothing_is_excluded(csv_manifest: Path) -> None:
    """A CSV names no accounts of its own: each row's account is its target."""
    manifest = load_manifest(csv_manifest, default_accounts=["acct-d"])
    assert list(manifest.excluded()) == []
    assert manifest.excluded_count == 0
    assert _rows(manifest.targets()) == [
        ("acct-a", "WANDB_API_KEY", "2"),
        ("acct-b", "WANDB_API_KEY", "3"),
        ("acct-a", "OTHER", "4"),
        ("acct-c", "WANDB_API_KEY", "5"),
        ("acct-d", "SHARED", "6"),
    ]


@pytest.mark.parametrize("given", [None, ["acct-a"]], ids=["alone", "with-accounts-given"])
def test_an_entry_for_an_account_the_manifest_does_not_target_is_an_error(
    tmp_path: Path, given: list[str] | None
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: [acct-a, acct-b]\nsecrets:\n"
        '  - {keyName: A, value: "x", accounts: [acct-a, acct-z]}\n'
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, accounts=given)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (3, "account 'acct-z' is not among the manifest's accounts (acct-a, acct-b)")
    ]


def test_an_account_named_twice_is_one_target(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: [acct-a, acct-a]\nsecrets:\n"
        '  - {keyName: A, value: "x"}\n'
        '  - {keyName: B, value: "x", accounts: [acct-a, acct-a]}\n'
    )
    assert _rows(load_manifest(path).targets()) == [("acct-a", "A", "3"), ("acct-a", "B", "4")]
    manifest = load_manifest(path, accounts=["acct-b", "acct-b"])
    assert _rows(manifest.targets()) == [("acct-b", "A", "3")]
    assert _rows(manifest.excluded()) == [("acct-a", "B", "4")]


def test_each_spec_is_its_target_with_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The specs (built by position, the inline ones without ``source``) name what the
    targets name, field for field, inline values and the others alike."""
    monkeypatch.setenv("SOME_VAR", "from the environment")
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: [a, b]\nsecrets:\n"
        "  - {keyName: INLINE, value: written}\n"
        "  - {keyName: FROM_ENV, fromEnv: SOME_VAR}\n"
    )
    manifest = load_manifest(path)
    specs = list(manifest.specs())
    assert [
        Target(s.account, s.key_name, s.secret_id, s.location, source=s.source) for s in specs
    ] == list(manifest.targets())
    assert [(s.source, s.value.reveal()) for s in specs] == [
        ("value", "written"),
        ("value", "written"),
        ("env:SOME_VAR", "from the environment"),
        ("env:SOME_VAR", "from the environment"),
    ]


def test_nothing_left_out_is_found_without_reading_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest too large to keep is read again for each pass over it; when the first pass
    counted nothing left out, ``excluded()`` does not read it again to find nothing."""
    monkeypatch.setattr(manifest_module, "KEEP_LIMIT", 0)
    path = tmp_path / "m.csv"
    path.write_text("account,keyName,value\nacct-a,A,x\nacct-a,B,y\n")
    manifest = load_manifest(path, accounts=["acct-a"])
    path.unlink()  # a second reading would fail: the file has gone
    assert manifest.excluded_count == 0
    assert list(manifest.excluded()) == []
