"""Values arrive on the server byte for byte, from every format, from CRLF and LF files."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from bulk_secrets.cli import main
from bulk_secrets.emulator import EmulatorConfig, running_emulator
from bulk_secrets.manifest import load_manifest, load_manifests
from bulk_secrets.provision import apply_secrets

from .helpers import API_KEY, credentials, csv_text, options

pytestmark = pytest.mark.anyio

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "-----END PRIVATE KEY-----\n"
)
VALUES = {
    "NEWLINES": "line one\nline two\n\nline four",
    "QUOTES": "it's \"quoted\" and 'single'",
    "HASH": "before # after",
    "EQUALS": "a=b==c",
    "DOLLAR": "$HOME and ${PATH} and $1",
    "AT": "@leading at",
    "TRAILING": "trailing spaces   ",
    "LEADING": "   leading spaces",
    "UNICODE": "héllo wörld ✓ 日本語 🔑",
    "BACKSLASH": "back\\slash \\n not a newline",
    "TAB": "a\tb",
    "PEM": PEM,
    "EMPTYISH": " ",
}


def _yaml(values: dict[str, str]) -> str:
    lines = ["secrets:"]
    for key, value in values.items():
        lines.append(f"  - keyName: {key}")
        if key == "PEM":  # a literal block: line breaks are the value's own
            lines.append("    value: |")
            lines.extend(f"      {line}" for line in value.splitlines())
        else:
            lines.append(f"    value: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def _json(values: dict[str, str]) -> str:
    entries = [{"keyName": k, "value": v} for k, v in values.items()]
    return json.dumps({"secrets": entries}, indent=2, ensure_ascii=False) + "\n"


def _csv(values: dict[str, str]) -> str:
    return csv_text(["keyName", "value"], values.items())


def _dotenv(values: dict[str, str]) -> str:
    lines = ["# written as users write them"]
    for key, value in values.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
        lines.append(f'export {key}="{escaped}"' if key == "AT" else f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


WRITERS: dict[str, tuple[str, Callable[[dict[str, str]], str]]] = {
    "yaml": (".yaml", _yaml),
    "json": (".json", _json),
    "csv": (".csv", _csv),
    "dotenv": (".env", _dotenv),
}


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("fmt", sorted(WRITERS))
async def test_values_arrive_byte_for_byte(tmp_path: Path, fmt: str, newline: str) -> None:
    suffix, write = WRITERS[fmt]
    path = tmp_path / f"manifest{suffix}"
    text = write(VALUES)
    if newline == "\r\n":
        if fmt == "csv":  # CSV keeps line breaks inside quotes: only the record ends change
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(["keyName", "value"])
            writer.writerows(VALUES.items())
            text = out.getvalue()
        else:
            text = text.replace("\n", "\r\n")
    path.write_bytes(text.encode("utf-8"))
    manifest = load_manifest(path, accounts=["acct-1"])
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        summary = await apply_secrets(
            manifest, credentials=credentials(), options=options(server.base_url)
        )
        stored = server.secrets("acct-1")
    assert summary.all_succeeded
    assert {key_name: value for key_name, value in stored.values()} == VALUES


async def test_from_file_and_from_env_arrive_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").mkdir()
    pem_crlf = PEM.replace("\n", "\r\n")
    (tmp_path / "keys" / "service.pem").write_bytes(pem_crlf.encode())
    (tmp_path / "keys" / "bom.txt").write_bytes(b"\xef\xbb\xbfwith bom\n")
    monkeypatch.setenv("BULK_SECRETS_TEST_VALUE", "from env \n with newline ")
    path = tmp_path / "m.yaml"
    path.write_text(
        "secrets:\n"
        "  - {keyName: PEM, fromFile: keys/service.pem}\n"
        "  - {keyName: BOM, fromFile: keys/bom.txt}\n"
        "  - {keyName: ENV, fromEnv: BULK_SECRETS_TEST_VALUE}\n"
    )
    manifest = load_manifest(path, accounts=["acct-1"])
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        await apply_secrets(manifest, credentials=credentials(), options=options(server.base_url))
        stored = dict(server.secrets("acct-1").values())
    assert stored == {
        "PEM": pem_crlf,
        "BOM": "\ufeffwith bom\n",
        "ENV": "from env \n with newline ",
    }


ACCOUNTS = [f"team-{i:02d}" for i in range(20)]


async def test_one_manifest_onboards_twenty_accounts(tmp_path: Path) -> None:
    shared = tmp_path / "shared.yaml"
    shared.write_text(
        f"accounts: [{', '.join(ACCOUNTS)}]\n"
        'secrets:\n  EVAL_BUCKET: "gs://evals"\n  REGION: "us-east-1"\n'
    )
    per_account = tmp_path / "per-account.csv"
    per_account.write_text(
        "account,keyName,value\n" + "".join(f"{a},WANDB_API_KEY,wandb-{a}\n" for a in ACCOUNTS)
    )
    manifests = load_manifests([str(shared), str(per_account)])
    assert sum(m.count for m in manifests) == 60
    specs = [spec for manifest in manifests for spec in manifest.specs()]
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        summary = await apply_secrets(
            specs, credentials=credentials(), options=options(server.base_url)
        )
        for account in ACCOUNTS:
            assert dict(server.secrets(account).values()) == {
                "EVAL_BUCKET": "gs://evals",
                "REGION": "us-east-1",
                "WANDB_API_KEY": f"wandb-{account}",
            }
    assert summary.total == 60
    assert summary.all_succeeded
    per_secret: dict[str, set[str]] = {}
    for spec in specs:
        per_secret.setdefault(spec.key_name, set()).add(spec.account)
    assert all(len(accounts) == 20 for accounts in per_secret.values())


async def test_per_account_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREWORKS_API_KEY", API_KEY)
    monkeypatch.setenv("TEAM_B_KEY", "key-b")
    path = tmp_path / "m.yaml"
    path.write_text(
        "accounts: [team-a, team-b]\n"
        "apiKeys: {team-b: {fromEnv: TEAM_B_KEY}}\n"
        'secrets: {TOKEN: "t"}\n'
    )
    config = EmulatorConfig(keys={API_KEY: frozenset({"team-a"}), "key-b": frozenset({"team-b"})})
    async with running_emulator(config) as server:
        argv = ["apply", str(path), "--base-url", server.base_url]
        code = await anyio.to_thread.run_sync(main, argv)
        assert server.stats.count(status=403) == 0
        assert server.secrets("team-a") == {"token": ("TOKEN", "t")}
        assert server.secrets("team-b") == {"token": ("TOKEN", "t")}
    assert code == 0
