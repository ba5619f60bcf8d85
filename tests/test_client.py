"""The HTTP client's translation of answers into errors, against real loopback servers."""

from __future__ import annotations

import email.utils
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from bulk_secrets import errors
from bulk_secrets.client import SecretsClient, parse_retry_after
from bulk_secrets.emulator import EmulatorConfig, running_emulator

from .helpers import API_KEY, CANARY, credentials, specs

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def answering(
    status: int, body: str, headers: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """A loopback server that gives every request the same answer."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, text=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


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
