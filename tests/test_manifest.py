"""Manifest parsing: exact values, and every problem reported with its file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

import bulk_secrets.manifest as manifest_module
from bulk_secrets.errors import ManifestChanged, ManifestError
from bulk_secrets.manifest import load_manifest

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


EXAMPLES = sorted(p for p in MANIFESTS.iterdir() if p.is_file())
# What the examples' fromEnv references stand for.
EXAMPLE_ENV = {"TEAM_B_API_KEY": "key-b", "ONBOARDING_OPENAI_API_KEY": "sk-onboarding"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_manifest_loads(path: Path) -> None:
    manifest = load_manifest(path, default_accounts=["acct-1"], env=EXAMPLE_ENV)
    assert manifest.count > 0
    assert all(s.location.startswith(f"{path}:") for s in manifest.specs())


def test_csv_values_are_exact_with_crlf_and_multiline(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        b'\xef\xbb\xbfkeyName,value\r\nA,"two\r\nlines"\r\nB, spaced \r\nC,"say ""hi"""\r\n'
    )
    manifest = load_manifest(path, default_accounts=["acct-1"])
    values = {s.key_name: s.value.reveal() for s in manifest.specs()}
    assert values == {"A": "two\r\nlines", "B": " spaced ", "C": 'say "hi"'}
    assert [s.location for s in manifest.specs()] == [f"{path}:2", f"{path}:4", f"{path}:5"]


def test_yaml_values_are_text_exactly(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        'account: acct-1\nsecrets:\n  - keyName: A\n    value: "0123"\n'
        "  - keyName: B\n    value: |\n      -----BEGIN KEY-----\n      abc\n"
    )
    manifest = load_manifest(path)
    assert {s.account for s in manifest.specs()} == {"acct-1"}
    values = {s.key_name: s.value.reveal() for s in manifest.specs()}
    assert values == {"A": "0123", "B": "-----BEGIN KEY-----\nabc\n"}


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "secrets:\n"
        "  - keyName: API_KEY\n    value: a\n"  # 2
        "  - keyName: api-key\n    value: b\n"  # 4: not an env var name
        "  - keyName: Api_Key\n    value: yes\n"  # 6: same id as line 2, and yes is a bool
        "  - keyName: X\n    value: x\n    extra: 1\n"  # 8, 10
    )
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, default_accounts=["acct-1"])
    lines = sorted(p.line or 0 for p in caught.value.problems)
    assert lines == [4, 6, 7, 10]
    assert "yes" not in str(caught.value)  # a value is never echoed, even a bad one


def test_empty_manifest_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\n")
    with pytest.raises(ManifestError, match="no secrets"):
        load_manifest(path, default_accounts=["acct-1"])


@pytest.mark.parametrize("limit", [0, 2, 1000])
def test_second_pass_reads_the_file_again_past_the_keep_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Few entries are kept from the first pass; many are read again as a stream."""
    monkeypatch.setattr(manifest_module, "KEEP_LIMIT", limit)
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\n" + "".join(f"K_{i},v{i}\n" for i in range(10)))
    manifest = load_manifest(path, default_accounts=["a", "b"])
    manifest.verify_unchanged()
    specs = [(s.account, s.key_name, s.value.reveal()) for s in manifest.specs()]
    assert specs == [(a, f"K_{i}", f"v{i}") for i in range(10) for a in ("a", "b")]
    path.write_text("keyName,value\n9_BAD,x\n")  # changed after the check
    if limit >= 10:  # kept: the change cannot reach the run
        manifest.verify_unchanged()
        assert len(list(manifest.specs())) == 20
    else:  # read again: the change is caught, never applied unchecked
        with pytest.raises(ManifestChanged):
            manifest.verify_unchanged()
        with pytest.raises(ManifestChanged):
            list(manifest.specs())


@pytest.mark.parametrize("limit", [0, 1000, 50_000], ids=["read-again", "part-kept", "kept"])
@pytest.mark.parametrize("gathered", [65536, 700], ids=["gathered", "spread"])
def test_every_duplicate_id_of_a_large_manifest_is_named_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, gathered: int
) -> None:
    """Ids are kept as hashes and compared once, at the end: each entry whose id an earlier
    one took in the same account is still named, with the line of the first, across files,
    whether the hashes stayed gathered in one array or were spread over buckets."""
    monkeypatch.setattr(manifest_module, "KEEP_LIMIT", limit)
    monkeypatch.setattr(manifest_module._IdRegistry, "_GATHERED", gathered)
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    rows = [f"K_{i},v{i}\n" for i in range(5000)]
    rows[3000] = "K_7,again\n"  # line 3002: K_7 is on line 9
    rows[4000] = "k_7,and again\n"  # line 4002: the same id, k-7
    first.write_text("keyName,value\n" + "".join(rows))
    second.write_text("account,keyName,value\nacct-1,K_42,x\nacct-2,K_42,y\nacct-1,ONLY,z\n")
    with pytest.raises(ManifestError) as caught:
        manifest_module.load_manifests([str(first), str(second)], default_accounts=["acct-1"])

    def clash(key_name: str, secret_id: str, where: str) -> str:
        return (
            f"{key_name} maps to secret id {secret_id!r} in account 'acct-1', which {where} "
            "already uses"
        )

    assert [(p.path, p.line, p.message) for p in caught.value.problems] == [
        (str(first), 3002, clash("K_7", "k-7", f"{first}:9")),
        (str(first), 4002, clash("k_7", "k-7", f"{first}:9")),
        (str(second), 2, clash("K_42", "k-42", f"{first}:44")),
    ]


def test_many_distinct_ids_are_no_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("keyName,value\n" + "".join(f"K_{i},v\n" for i in range(20_000)))
    manifest = load_manifest(path, default_accounts=["acct-1", "acct-2"])
    assert manifest.count == 40_000
