"""What users of firectl and kubectl expect to find: firectl's configuration and flags, `list`,
`validate -o json`, the emulator command, and flags that mean nothing together refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bulk_secrets.emulator import EmulatorConfig, running_emulator

from .helpers import API_KEY, ROOT, cli_env, run_main, write_yaml_manifest

pytestmark = pytest.mark.anyio

FILE_KEY = "fw-file-key-0123456789"


def _home(tmp_path: Path, text: str, profile: str | None = None) -> dict[str, str]:
    """An environment whose home holds firectl's auth.ini, and no FIREWORKS_ settings."""
    folder = tmp_path / ".fireworks"
    if profile is not None:
        folder = folder / "profiles" / profile
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "auth.ini").write_text(text)
    return {**cli_env(None), "HOME": str(tmp_path)}


@pytest.mark.parametrize("header", ["", "[default]\n"])
async def test_firectl_auth_ini_gives_the_key_and_the_account(tmp_path: Path, header: str) -> None:
    env = _home(tmp_path, f"{header}api_key = {FILE_KEY}\naccount_id = from-file\n")
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 3)
    async with running_emulator(EmulatorConfig(keys={FILE_KEY: None})) as server:
        code, _, err = await run_main(
            "apply", str(manifest), "--base-url", server.base_url, env=env
        )
        assert len(server.secrets("from-file")) == 3
    assert code == 0, err
    assert FILE_KEY not in err


async def test_the_environment_comes_before_the_file_and_flags_before_both(
    tmp_path: Path,
) -> None:
    env = _home(tmp_path, f"api_key = {FILE_KEY}\naccount_id = from-file\n")
    env.update(FIREWORKS_API_KEY=API_KEY, FIREWORKS_ACCOUNT_ID="from-env")
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 2)
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        base = ("--base-url", server.base_url)
        code, _, err = await run_main("apply", str(manifest), *base, env=env)
        assert code == 0, err
        assert len(server.secrets("from-env")) == 2
        code, _, err = await run_main("apply", str(manifest), "-a", "by-flag", *base, env=env)
        assert code == 0, err
        code, _, err = await run_main(
            "apply", str(manifest), "--account-id", "by-long-flag", *base, env=env
        )
        assert code == 0, err
        assert len(server.secrets("by-flag")) == len(server.secrets("by-long-flag")) == 2
        assert server.secrets("from-file") == {}


async def test_a_profile_is_read_from_its_own_folder(tmp_path: Path) -> None:
    env = _home(tmp_path, f"api_key = {FILE_KEY}\naccount_id = staging\n", profile="staging")
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 1)
    async with running_emulator(EmulatorConfig(keys={FILE_KEY: None})) as server:
        base = ("--base-url", server.base_url)
        code, _, err = await run_main(
            "apply", str(manifest), "--profile", "staging", *base, env=env
        )
        assert code == 0, err
        code, _, err = await run_main(
            "apply", str(manifest), *base, env={**env, "FIREWORKS_PROFILE": "staging"}
        )
        assert code == 0, err
        assert len(server.secrets("staging")) == 1
        code, _, err = await run_main("apply", str(manifest), "--profile", "nope", *base, env=env)
    assert code == 2
    assert "profile nope" in err


async def test_list_shows_every_secret_of_each_account_as_a_table_or_json() -> None:
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        for i in range(250):  # two pages
            server.put("acct-a", f"s-{i:03d}", f"S_{i:03d}", "value-never-shown")
        server.put("acct-b", "only", "ONLY", "value-never-shown")
        args = ("list", "-a", "acct-a", "--account", "acct-b", "--base-url", server.base_url)
        code, out, err = await run_main(*args)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["ACCOUNT", "SECRET", "ID", "KEY", "NAME"]
        assert len(lines) == 1 + 251
        assert lines[-1].split() == ["acct-b", "only", "ONLY"]
        code, out, _ = await run_main(*args, "-o", "json")
        assert code == 0
        rows = json.loads(out)
        assert rows[0] == {"account": "acct-a", "secretId": "s-000", "keyName": "S_000"}
        assert len(rows) == 251
        assert "value-never-shown" not in out + err
        code, _, err = await run_main("list", "-a", "acct-a", "--base-url", server.base_url,
                                      env=cli_env("wrong-key"))  # fmt: skip
    assert code == 1
    assert "account acct-a: the API key was rejected (401)" in err


async def test_validate_prints_json_with_o(tmp_path: Path) -> None:
    manifest = write_yaml_manifest(tmp_path / "m.yaml", 2)
    code, out, err = await run_main("validate", str(manifest), "-a", "team-a", "-o", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["valid"] is True
    assert [(s["account"], s["keyName"]) for s in data["secrets"]] == [
        ("team-a", "SECRET_00000"),
        ("team-a", "SECRET_00001"),
    ]
    assert "value" not in {key for s in data["secrets"] for key in s}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--keep", "ci-*"), "--keep spares secrets from --prune: it needs --prune"),
        (("--yes",), "--yes confirms --prune's deletions: it needs --prune"),
        (("--sandbox", "--base-url", "https://x.example"), "--sandbox runs its own emulator"),
    ],
)
async def test_flags_that_mean_nothing_together_are_refused(
    args: tuple[str, ...], message: str
) -> None:
    code, _, err = await run_main("apply", "manifests/example.yaml", "-a", "acct", *args)
    assert code == 2
    assert message in err


async def test_version() -> None:
    code, out, _ = await run_main("--version")
    assert code == 0
    assert out.startswith("bulk-secrets ")


async def test_the_emulator_on_a_port_in_use_says_so_in_one_line() -> None:
    import anyio

    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        port = server.base_url.rsplit(":", 1)[1]
        result = await anyio.run_process(
            [sys.executable, "-m", "bulk_secrets", "emulator", "--port", port],
            check=False,
            env=cli_env(),
            cwd=ROOT,
        )
    err = result.stderr.decode()
    assert result.returncode == 2
    assert err.count("\n") == 1 and "cannot listen on 127.0.0.1:" in err


async def test_from_command_runs_only_with_allow_commands(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    program = json.dumps([sys.executable, "-c", "print('from-a-program')"])
    manifest.write_text(f"secrets:\n  - keyName: FROM_PROGRAM\n    fromCommand: {program}\n")
    code, _, err = await run_main("apply", str(manifest), "-a", "acct")
    assert code == 2
    assert f"{manifest}:3" in err and "--allow-commands" in err
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        code, out, err = await run_main(
            "apply", str(manifest), "-a", "acct", "--allow-commands", "--base-url", server.base_url
        )
        assert code == 0, err
        assert server.secrets("acct") == {"from-program": ("FROM_PROGRAM", "from-a-program")}
    assert "from-a-program" not in out + err


@pytest.mark.parametrize("command", ["apply", "plan", "verify"])
async def test_help_says_why_the_key_is_never_a_flag(command: str) -> None:
    code, out, _ = await run_main(command, "--help")
    assert code == 0
    assert "The API key is never a flag" in out
    assert "--api-key" not in out
