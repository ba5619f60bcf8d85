"""The HTTP client's translation of answers into errors, against real loopback servers."""

from __future__ import annotations

import email.utils
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from bulk_secrets import errors
from bulk_secrets.client import (
    SecretsClient,
    create_body,
    create_body_start,
    parse_retry_after,
    update_body,
)
from bulk_secrets.emulator import EmulatorConfig, running_emulator
from bulk_secrets.models import Credentials, SecretSpec, SecretValue

from .helpers import API_KEY, CANARY, credentials, specs
from .hostile import hostile_server

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def answering(
    status: int, body: str, headers: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """A loopback server that gives every request the same answer."""

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(status=status, text=body, headers=headers)

    async with hostile_server(handler) as server:
        yield server.base_url


async def _create(base_url: str) -> int:
    async with SecretsClient(base_url, credentials(), connections=2, timeout=5) as client:
        return await client.create(specs(1)[0])


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, errors.InvalidArgument),
        (401, errors.Unauthenticated),
        (403, errors.PermissionDenied),
        (404, errors.NotFound),
        (409, errors.AlreadyExists),
        (408, errors.ServerError),
        (429, errors.RateLimited),
        (500, errors.ServerError),
        (503, errors.ServerError),
        (418, errors.RequestRejected),
    ],
)
async def test_status_maps_to_the_specific_error(status: int, error: type[Exception]) -> None:
    async with answering(status, json.dumps({"code": 3, "message": "nope", "details": []})) as url:
        with pytest.raises(error, match="nope") as caught:
            await _create(url)
    assert type(caught.value) is error


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"code": 3, "message": f"bad value {CANARY}-0-line1\nline2"}),
        json.dumps({"error": {"message": f"bad value {json.dumps(CANARY)}"}}),
        f'<html>echo {CANARY}-0-line1\\nline2 \\"quoted\\"</html>',
    ],
)
async def test_an_echoed_value_is_scrubbed_from_the_error(body: str) -> None:
    async with answering(400, body) as url:
        with pytest.raises(errors.InvalidArgument) as caught:
            await _create(url)
    assert CANARY not in str(caught.value)
    assert "bad value" in str(caught.value) or "echo" in str(caught.value)


async def test_429_carries_retry_after() -> None:
    async with answering(429, "{}", {"Retry-After": "3"}) as url:
        with pytest.raises(errors.RateLimited) as caught:
            await _create(url)
    assert caught.value.retry_after == 3.0


def test_retry_after_parses_seconds_and_dates() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(date, now=now) == pytest.approx(10.0)
    assert parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_nothing_listening_is_a_connection_failure() -> None:
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        url = server.base_url
    with pytest.raises(errors.ConnectionFailed):
        await _create(url)


# Quotes, backslashes, every control character, DEL, Latin-1, BMP and astral characters (a
# surrogate pair in JSON), lone surrogates (which a JSON escape can bring in), and ``/``.
AWKWARD = [
    "",
    'say "hi"',
    "back\\slash \\u0041 \\n",
    "".join(map(chr, range(32))) + "\x7f",
    "caf\u00e9 \u00ff \u0100 \u2028\u2029 \ufeff \uffff",
    "\U0001f511 key \U0010ffff",
    "\ud83d alone, \udc00 alone",
    "</script> a/b",
]


def assert_bodies_are_json_dumps(account: str, secret_id: str, key_name: str, value: str) -> None:
    expected = {
        "name": f"accounts/{account}/secrets/{secret_id}",
        "keyName": key_name,
        "value": value,
    }
    body = create_body(create_body_start(account), secret_id, key_name, value)
    assert body == json.dumps(expected).encode()
    assert json.loads(body) == expected
    update = {"keyName": key_name, "value": value}
    assert update_body(key_name, value) == json.dumps(update).encode()


@pytest.mark.parametrize("text", AWKWARD)
def test_bodies_are_byte_for_byte_json_dumps(text: str) -> None:
    for account, secret_id, key_name, value in [
        ("acme", "k-1", "K_1", text),
        (text, text, text, text),
        ("a" + text, "s" + text, "K" + text, text + "v"),
    ]:
        assert_bodies_are_json_dumps(account, secret_id, key_name, value)


@given(account=st.text(), secret_id=st.text(), key_name=st.text(), value=st.text())
def test_bodies_are_json_dumps_for_any_text(
    account: str, secret_id: str, key_name: str, value: str
) -> None:
    assert_bodies_are_json_dumps(account, secret_id, key_name, value)


async def test_requests_carry_the_key_of_their_account_and_the_body_sent() -> None:
    """The default key is the session's; an account with a key of its own sends that one."""
    seen: list[tuple[str, str | None, str | None, bytes]] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        auth = request.headers.get("Authorization")
        seen.append((request.path, auth, request.headers.get("Content-Type"), await request.read()))
        return web.json_response({})

    keys = Credentials(SecretValue("default-key"), {"own": SecretValue("own-key")})
    value = 'v "quoted" \U0001f511'
    async with (
        hostile_server(handler) as server,
        SecretsClient(server.base_url, keys, connections=2, timeout=5) as client,
    ):
        for account in ("plain", "own", "plain"):
            spec = SecretSpec(
                account=account,
                key_name="K",
                secret_id="k",
                location="m:1",
                value=SecretValue(value),
            )
            await client.create(spec)
            await client.update(spec)
        await client.delete("own", "k")
    created = json.dumps({"name": "accounts/plain/secrets/k", "keyName": "K", "value": value})
    updated = json.dumps({"keyName": "K", "value": value}).encode()
    json_type = "application/json"
    assert seen[0] == (
        "/v1/accounts/plain/secrets",
        "Bearer default-key",
        json_type,
        created.encode(),
    )
    assert seen[1] == ("/v1/accounts/plain/secrets/k", "Bearer default-key", json_type, updated)
    assert [auth for _, auth, _, _ in seen] == [
        *["Bearer default-key"] * 2,
        *["Bearer own-key"] * 2,
        *["Bearer default-key"] * 2,
        "Bearer own-key",
    ]
    assert seen[2][3] == created.replace("plain", "own").encode()
    assert all(content_type == json_type for _, _, content_type, _ in seen)


async def test_a_base_url_with_a_path_prefixes_every_request_and_a_page_token_goes_whole() -> None:
    # The URLs are made from the parsed base URL: its path stays in front, and a page token
    # of any characters reaches the server as it was given.
    token = "a/b+c=d&e f?%"

    async def empty(request: web.BaseRequest) -> web.Response:
        return web.json_response({})

    async with hostile_server(empty) as server:
        base = f"{server.base_url}/pre/fix/"
        async with SecretsClient(base, credentials(), connections=2, timeout=5) as client:
            spec = specs(1, "acct-1")[0]
            await client.create(spec)
            await client.update(spec)
            await client.delete("acct-1", spec.secret_id)
            await client.list_page("acct-1")
            await client.list_page("acct-1", token)
    secrets = "/pre/fix/v1/accounts/acct-1/secrets"
    one = f"{secrets}/{spec.secret_id}"
    assert [(method, path) for method, path, _ in server.seen[:3]] == [
        ("POST", secrets),
        ("PATCH", one),
        ("DELETE", one),
    ]
    first, second = (URL(path) for _, path, _ in server.seen[3:])
    assert (first.path, dict(first.query)) == (secrets, {"pageSize": "200"})
    assert (second.path, dict(second.query)) == (secrets, {"pageSize": "200", "pageToken": token})


async def test_an_account_without_a_key_is_unauthenticated_before_sending() -> None:
    keys = Credentials(None, {"own": SecretValue("own-key")})
    async with SecretsClient("http://127.0.0.1:9", keys, connections=2, timeout=5) as client:
        with pytest.raises(errors.Unauthenticated, match="no API key for account 'other'"):
            await client.create(specs(1, account="other")[0])
