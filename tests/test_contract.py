"""The real CLI against an independent server that checks every call against the published
OpenAPI contract (tests/contract): the client speaks the contract, not just our emulator's dialect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread
import pytest

from bulk_secrets import cli

from .contract.server import ContractServer, Validation, contract_server

API_KEY = "contract-key-5e1d"
ACCOUNT = "acct-1"
COUNT = 300
CANARY = "contract-canary"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def key_name(i: int) -> str:
    return f"CONTRACT_KEY_{i:03d}"


def secret_id(i: int) -> str:
    # API.md: Fireworks derives the id from the key name: lower case, "_" -> "-".
    return key_name(i).lower().replace("_", "-")


def value(i: int) -> str:
    return f'{CANARY}-{i:03d}: "quoted" #not-a-comment\nsecond line é'


def bad_calls(server: ContractServer) -> list[Validation]:
    return [v for v in server.validations if not v.ok]


@pytest.mark.anyio
async def test_cli_apply_speaks_the_published_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "secrets.yaml"
    entries = (
        f"  - keyName: {key_name(i)}\n    value: {json.dumps(value(i))}\n" for i in range(COUNT)
    )
    manifest.write_text("secrets:\n" + "".join(entries), encoding="utf-8")
    report = tmp_path / "report.json"
    existing = set(range(0, COUNT, 10))  # already there, with stale values: PATCH
    monkeypatch.setenv("FIREWORKS_API_KEY", API_KEY)

    async with contract_server(API_KEY) as server:
        server.secrets[ACCOUNT] = {secret_id(i): (key_name(i), "stale") for i in existing}
        argv = ["apply", str(manifest), "--account", ACCOUNT, "--base-url", server.base_url]
        argv += ["--max-rps", "0"]  # the contract, not the pace, is under test
        code = await anyio.to_thread.run_sync(cli.main, [*argv, "--report", str(report)])

    bad = bad_calls(server)
    assert not bad, f"{len(bad)} calls broke the contract, e.g.:\n" + "\n".join(map(str, bad[:10]))
    assert code == 0
    assert server.secrets == {
        ACCOUNT: {secret_id(i): (key_name(i), value(i)) for i in range(COUNT)}
    }
    # The plan lists the account (one page), then creates what is missing, updates the rest.
    assert server.requests("GET") == 1
    assert (server.requests("POST"), server.requests("PATCH")) == (
        COUNT - len(existing),
        len(existing),
    )
    assert server.requests("DELETE") == 0

    text = report.read_text(encoding="utf-8")
    assert CANARY not in text  # every value starts with it
    results: list[dict[str, Any]] = json.loads(text)["results"]
    assert sorted(r["keyName"] for r in results) == [key_name(i) for i in range(COUNT)]
    for result in results:
        i = int(result["keyName"].rsplit("_", 1)[1])
        assert result["account"] == ACCOUNT
        assert result["secretId"] == secret_id(i)
        assert result["action"] == ("update" if i in existing else "create")
        assert (result["status"], result["httpStatus"], result["error"]) == ("succeeded", 200, None)
        assert result["attempts"] >= 1


GOOD_BODY = {"name": f"accounts/{ACCOUNT}/secrets/a-key", "keyName": "A_KEY", "value": "v"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECRETS = f"/v1/accounts/{ACCOUNT}/secrets"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "reason"),
    [
        ("POST", SECRETS, AUTH, {"name": GOOD_BODY["name"]}, 400, "'keyName' is a required"),
        ("POST", SECRETS, AUTH, {"keyName": "A_KEY"}, 400, "'name' is a required"),
        ("POST", SECRETS, {}, GOOD_BODY, 401, "SecurityValidationError"),
        ("POST", SECRETS, {"Authorization": "Basic eDp5"}, GOOD_BODY, 401, "Security"),
        ("PATCH", f"{SECRETS}/a-key", AUTH, {"value": "v"}, 400, "'keyName' is a required"),
        ("PATCH", f"{SECRETS}/a-key", AUTH, {"keyName": 7}, 400, "is not of type 'string'"),
        ("GET", f"{SECRETS}?pageSize=many", AUTH, None, 400, "pageSize"),
        ("PUT", f"{SECRETS}/a-key", AUTH, GOOD_BODY, 404, "OperationNotFound"),
        ("POST", f"/v1/accounts/{ACCOUNT}/keys", AUTH, GOOD_BODY, 404, "PathNotFound"),
    ],
)
async def test_validator_rejects_calls_that_break_the_contract(
    method: str, path: str, headers: dict[str, str], body: object, status: int, reason: str
) -> None:
    async with (
        contract_server(API_KEY) as server,
        aiohttp.ClientSession() as http,
        http.request(method, server.base_url + path, headers=headers, json=body) as got,
    ):
        assert got.status == status
        assert (await got.json())["code"] == {400: 3, 401: 16, 404: 5}[status]
    (request, response) = server.validations
    assert (request.of, request.method, request.ok) == ("request", method, False)
    assert reason in request.error
    assert response.ok, response.error  # the server's error answer itself keeps to the contract
    assert server.secrets == {}


@pytest.mark.anyio
async def test_server_serves_every_operation_within_the_contract() -> None:
    async with contract_server(API_KEY) as server, aiohttp.ClientSession(headers=AUTH) as http:
        base = server.base_url + SECRETS

        async def call(method: str, url: str, body: object = None) -> tuple[int, Any]:
            async with http.request(method, url, json=body) as got:
                return got.status, await got.json()

        for i in range(3):
            name = f"accounts/{ACCOUNT}/secrets/k-{i}"
            assert await call("POST", base, {"name": name, "keyName": f"K_{i}", "value": "v"}) == (
                200,
                {"name": name, "keyName": f"K_{i}"},
            )
        assert (await call("POST", base, {"name": name, "keyName": "K_2"}))[0] == 409
        assert (await call("PATCH", f"{base}/k-2", {"keyName": "K_2", "value": "w"}))[0] == 200
        assert (await call("PATCH", f"{base}/nope", {"keyName": "NOPE"}))[0] == 404
        assert (await call("GET", f"{base}/k-1"))[1]["keyName"] == "K_1"
        status, first = await call("GET", f"{base}?pageSize=2")
        assert (status, len(first["secrets"]), first["totalSize"]) == (200, 2, 3)
        status, last = await call("GET", f"{base}?pageSize=2&pageToken={first['nextPageToken']}")
        assert (status, [s["keyName"] for s in last["secrets"]]) == (200, ["K_2"])
        assert "nextPageToken" not in last
        assert await call("DELETE", f"{base}/k-0") == (200, {})
        assert (await call("GET", f"{base}/k-0"))[0] == 404

    assert not bad_calls(server), bad_calls(server)
    assert len(server.validations) == 2 * 11
    assert server.secrets == {ACCOUNT: {"k-1": ("K_1", "v"), "k-2": ("K_2", "w")}}
