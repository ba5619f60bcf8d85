"""The emulator over real sockets: the five calls, their errors, counters and injected faults.

Latency and the rate limit run on a :class:`VirtualClock`: no test here waits for time to pass.
"""

import argparse
import base64
import contextlib
import os
import random
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import anyio
import pytest

from bulk_secrets.cli import emulator_command
from bulk_secrets.clock import Clock
from bulk_secrets.emulator import (
    Emulator,
    EmulatorConfig,
    Faults,
    running_emulator,
    serve,
)
from bulk_secrets.emulator.server import BACKLOG, _is_loopback

from .virtual_clock import VirtualClock

pytestmark = pytest.mark.anyio

ACCOUNT = "acme"
OTHER = "other"
KEY = "key-any"
KEY_ACME = "key-acme-only"
KEYS: dict[str, frozenset[str] | None] = {KEY: None, KEY_ACME: frozenset({ACCOUNT})}
SECRETS = f"/v1/accounts/{ACCOUNT}/secrets"
VALUE = "sk-VALUE-must-never-be-echoed"
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
START = 1000.0  # where a VirtualClock starts
GUARD = 10.0  # real seconds a test may take before it is deemed stuck (it never waits on time)


def config(**faults: Any) -> EmulatorConfig:
    return EmulatorConfig(keys=KEYS, faults=Faults(**faults))


# --- fixtures ---------------------------------------------------------------------------


class Start(Protocol):
    async def __call__(self, *, clock: Clock | None = None, **faults: Any) -> Emulator: ...


class Connect(Protocol):
    async def __call__(
        self, emu: Emulator, key: str | None = KEY, *, fresh: bool = False
    ) -> aiohttp.ClientSession: ...


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Everything a test opens, closed after it, last opened first."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack


@pytest.fixture
def start(stack: contextlib.AsyncExitStack, clock: VirtualClock) -> Start:
    """Start an emulator with these faults, on the test's virtual clock unless told another."""
    test_clock = clock

    async def start(*, clock: Clock | None = None, **faults: Any) -> Emulator:
        on = clock if clock is not None else test_clock
        return await stack.enter_async_context(running_emulator(config(**faults), clock=on))

    return start


@pytest.fixture
def connect(stack: contextlib.AsyncExitStack) -> Connect:
    """A session on an emulator; ``fresh`` opens a new TCP connection per request."""

    async def connect(
        emu: Emulator, key: str | None = KEY, *, fresh: bool = False
    ) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        connector = aiohttp.TCPConnector(force_close=fresh)
        session = aiohttp.ClientSession(emu.base_url, headers=headers, connector=connector)
        return await stack.enter_async_context(session)

    return connect


@pytest.fixture
async def emulator(start: Start) -> Emulator:
    return await start()


@pytest.fixture
async def session(emulator: Emulator, connect: Connect) -> aiohttp.ClientSession:
    return await connect(emulator)


# --- helpers ----------------------------------------------------------------------------


async def call_with_headers(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, Mapping[str, str]]:
    """One request; checks that the answer never carries a secret value."""
    async with session.request(method, path, **kwargs) as response:
        text = await response.text()
        assert "sk-" not in text
        assert '"value"' not in text
        return response.status, await response.json(content_type=None), response.headers


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    status, body, _ = await call_with_headers(session, method, path, **kwargs)
    return status, body


async def concurrently(count: int, request: Callable[[], Awaitable[tuple[int, Any]]]) -> list[int]:
    """Send ``count`` requests at once; their statuses."""
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await request())[0])

    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(one)
    return statuses


def assert_error(status: int, body: Any, expected_status: int, rpc_code: int) -> None:
    assert status == expected_status, body
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == rpc_code
    assert body["details"] == []
    assert isinstance(body["message"], str) and body["message"]


def create_body(id_: str = "api-key", key_name: str = "API_KEY") -> dict[str, str]:
    return {"name": f"accounts/{ACCOUNT}/secrets/{id_}", "keyName": key_name, "value": VALUE}


# --- the five calls ---------------------------------------------------------------------


async def test_create_get_list_update_delete(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    status, body = await call(session, "POST", SECRETS, json=create_body())
    assert (status, body) == (200, {"name": f"{SECRETS[4:]}/api-key", "keyName": "API_KEY"})
    bare = {"name": "bare-id", "keyName": "BARE", "value": VALUE + "2"}
    assert (await call(session, "POST", SECRETS, json=bare))[0] == 200

    status, body = await call(session, "GET", f"{SECRETS}/api-key")
    assert (status, body) == (200, {"name": f"{SECRETS[4:]}/api-key", "keyName": "API_KEY"})
    status, body = await call(session, "GET", SECRETS)
    assert status == 200
    assert [s["name"].rsplit("/", 1)[1] for s in body["secrets"]] == ["api-key", "bare-id"]
    assert (body["nextPageToken"], body["totalSize"]) == ("", 2)

    patch = {"keyName": "NEW_NAME", "value": VALUE + "3"}
    status, body = await call(session, "PATCH", f"{SECRETS}/api-key", json=patch)
    assert (status, body) == (200, {"name": f"{SECRETS[4:]}/api-key", "keyName": "NEW_NAME"})
    assert emulator.secrets(ACCOUNT)["api-key"] == ("NEW_NAME", VALUE + "3")
    await call(session, "PATCH", f"{SECRETS}/api-key", json={"keyName": "KEPT"})
    assert emulator.secrets(ACCOUNT)["api-key"] == ("KEPT", VALUE + "3")

    assert await call(session, "DELETE", f"{SECRETS}/api-key") == (200, {})
    assert emulator.secrets(ACCOUNT) == {"bare-id": ("BARE", VALUE + "2")}
    assert (await call(session, "GET", f"{SECRETS}/api-key"))[0] == 404


async def test_create_takes_proto_names_ignores_unknown_fields_and_defaults_value(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    body = {"name": "from-proto", "key_name": "FROM_PROTO", "createTime": "x", "extra": {"a": 1}}
    status, answer = await call(session, "POST", SECRETS, json=body)
    assert (status, answer["keyName"]) == (200, "FROM_PROTO")
    assert emulator.secrets(ACCOUNT) == {"from-proto": ("FROM_PROTO", "")}


async def test_ids_up_to_63_characters_are_accepted(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    status, _ = await call(session, "POST", SECRETS, json=create_body("a" * 63))
    assert status == 200
    assert list(emulator.secrets(ACCOUNT)) == ["a" * 63]


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({**create_body(), "name": "accounts/other/secrets/x"}, id="name-account"),
        pytest.param({**create_body(), "name": "accounts/acme/x"}, id="name-shape"),
        pytest.param(create_body("Upper"), id="id-upper"),
        pytest.param(create_body("1digit"), id="id-digit-first"),
        pytest.param(create_body("under_score"), id="id-underscore"),
        pytest.param({**create_body(), "name": ""}, id="id-empty"),
        pytest.param(create_body("a" * 64), id="id-64-chars"),
        pytest.param(create_body(key_name="1KEY"), id="keyname-digit-first"),
        pytest.param(create_body(key_name="KEY-NAME"), id="keyname-dash"),
        pytest.param(create_body(key_name=""), id="keyname-empty"),
        pytest.param({"keyName": "K", "value": VALUE}, id="no-name"),
        pytest.param({"name": "x", "value": VALUE}, id="no-keyname"),
        pytest.param({**create_body(), "keyName": None}, id="null-keyname"),
        pytest.param({**create_body(), "name": 5}, id="name-not-string"),
        pytest.param({**create_body(), "keyName": ["K"]}, id="keyname-not-string"),
        pytest.param({**create_body(), "value": 12345}, id="value-not-string"),
        pytest.param({**create_body(), "key_name": "OTHER"}, id="keyname-twice"),
        pytest.param([create_body()], id="json-array"),
        pytest.param("a string", id="json-string"),
    ],
)
async def test_create_rejects_bad_bodies_with_400(
    emulator: Emulator, session: aiohttp.ClientSession, body: Any
) -> None:
    status, answer = await call(session, "POST", SECRETS, json=body)
    assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {}


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe{"], ids=["broken", "empty", "bytes"])
async def test_bodies_that_are_not_json_are_400(
    emulator: Emulator, session: aiohttp.ClientSession, raw: bytes
) -> None:
    emulator.put(ACCOUNT, "present", "PRESENT", VALUE)
    for method, path in [("POST", SECRETS), ("PATCH", f"{SECRETS}/present")]:
        status, answer = await call(session, method, path, data=raw)
        assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {"present": ("PRESENT", VALUE)}


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("secret_id", ["Bad", "has_underscore", "9lives", "a" * 64])
async def test_malformed_id_in_path_is_400(
    emulator: Emulator, session: aiohttp.ClientSession, method: str, secret_id: str
) -> None:
    emulator.put(ACCOUNT, secret_id, "KEY", VALUE)  # stored anyway: the id check must come first
    path = f"{SECRETS}/{secret_id}"
    status, answer = await call(session, method, path, json={"keyName": "K"})
    assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {secret_id: ("KEY", VALUE)}


@pytest.mark.parametrize(
    "body", [{"value": VALUE}, {"keyName": "bad-key"}, {"keyName": 7}, [1]], ids=str
)
async def test_update_rejects_bad_bodies_with_400(
    emulator: Emulator, session: aiohttp.ClientSession, body: Any
) -> None:
    emulator.put(ACCOUNT, "present", "PRESENT", "old")
    status, answer = await call(session, "PATCH", f"{SECRETS}/present", json=body)
    assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {"present": ("PRESENT", "old")}


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_missing_secret_is_404(
    emulator: Emulator, session: aiohttp.ClientSession, method: str
) -> None:
    emulator.put(OTHER, "missing", "IN_OTHER_ACCOUNT", VALUE)
    status, answer = await call(session, method, f"{SECRETS}/missing", json={"keyName": "K"})
    assert_error(status, answer, 404, 5)
    assert emulator.secrets(ACCOUNT) == {}


async def test_create_of_existing_id_is_409_and_keeps_the_old_secret(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    emulator.put(ACCOUNT, "api-key", "API_KEY", "old")
    status, answer = await call(session, "POST", SECRETS, json=create_body())
    assert_error(status, answer, 409, 6)
    assert emulator.secrets(ACCOUNT) == {"api-key": ("API_KEY", "old")}


async def test_unknown_route_is_404_and_wrong_method_is_405(session: aiohttp.ClientSession) -> None:
    assert_error(*await call(session, "GET", "/v1/accounts/acme/models"), 404, 5)
    assert_error(*await call(session, "PUT", f"{SECRETS}/x"), 405, 12)
    assert_error(*await call(session, "DELETE", SECRETS), 405, 12)


@pytest.mark.parametrize(
    ("key", "scheme"), [(None, "Bearer"), ("nope", "Bearer"), (KEY, "Basic"), ("", "Bearer")]
)
async def test_missing_or_unknown_key_is_401(
    emulator: Emulator, connect: Connect, key: str | None, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} {key}"} if key is not None else {}
    session = await connect(emulator, key=None)
    status, answer = await call(session, "POST", SECRETS, json=create_body(), headers=headers)
    assert_error(status, answer, 401, 16)
    assert "nope" not in answer["message"]
    assert emulator.secrets(ACCOUNT) == {}


async def test_key_limited_to_an_account_gets_403_elsewhere(
    emulator: Emulator, connect: Connect
) -> None:
    session = await connect(emulator, KEY_ACME)
    assert (await call(session, "POST", SECRETS, json=create_body()))[0] == 200
    path = f"/v1/accounts/{OTHER}/secrets"
    assert_error(*await call(session, "GET", path), 403, 7)
    status, answer = await call(session, "POST", path, json=create_body())
    assert_error(status, answer, 403, 7)  # before any check of the body
    assert emulator.secrets(OTHER) == {}


async def test_no_response_carries_a_value(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    for n in range(3):
        emulator.put(ACCOUNT, f"s{n}", f"KEY_{n}", f"{VALUE}-{n}")
    _, listed = await call(session, "GET", SECRETS)
    _, got = await call(session, "GET", f"{SECRETS}/s1")
    patch = {"keyName": "K", "value": VALUE}
    _, updated = await call(session, "PATCH", f"{SECRETS}/s2", json=patch)
    _, created = await call(session, "POST", SECRETS, json=create_body("new"))
    for secret in [*listed["secrets"], got, updated, created]:
        assert set(secret) == {"name", "keyName"}


# --- pagination -------------------------------------------------------------------------


async def test_list_pages_through_120_secrets_in_three_pages(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    ids = [f"secret-{n:03d}" for n in range(120)]
    for secret_id in reversed(ids):
        emulator.put(ACCOUNT, secret_id, "KEY", VALUE)
    emulator.put(OTHER, "not-mine", "KEY", VALUE)
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        query = {"pageSize": "50", "pageToken": token, "filter": "x", "orderBy": "y"}
        status, body = await call(session, "GET", SECRETS, params=query)
        assert (status, body["totalSize"]) == (200, 120)
        sizes.append(len(body["secrets"]))
        seen += [secret["name"].rsplit("/", 1)[1] for secret in body["secrets"]]
        token = body["nextPageToken"]
        if not token:
            break
    assert sizes == [50, 50, 20]
    assert seen == ids


async def test_page_tokens_need_url_quoting_and_page_when_quoted(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    ids = [f"secret-{n:05d}" for n in range(7)]
    for secret_id in ids:
        emulator.put(ACCOUNT, secret_id, "KEY", VALUE)
    seen: list[str] = []
    tokens: list[str] = []
    token = ""
    while True:
        status, body = await call(
            session, "GET", f"{SECRETS}?pageSize=3&pageToken={quote(token, safe='')}"
        )
        assert status == 200
        seen += [secret["name"].rsplit("/", 1)[1] for secret in body["secrets"]]
        token = body["nextPageToken"]
        if not token:
            break
        tokens.append(token)
        assert "+" in token  # a raw '+' in a query string reads as a space
        assert quote(token, safe="") != token
        unquoted = await call(session, "GET", f"{SECRETS}?pageSize=3&pageToken={token}")
        assert_error(*unquoted, 400, 3)
    assert seen == ids
    assert len(tokens) == 2  # three pages
    assert tokens[0] != tokens[1]


@pytest.mark.parametrize(("page_size", "expected"), [("500", 200), ("", 50), ("0", 50), ("7", 7)])
async def test_page_size_defaults_to_50_and_is_clamped_to_200(
    emulator: Emulator, session: aiohttp.ClientSession, page_size: str, expected: int
) -> None:
    for n in range(250):
        emulator.put(ACCOUNT, f"s{n:03d}", "KEY", VALUE)
    status, body = await call(session, "GET", SECRETS, params={"pageSize": page_size})
    assert (status, len(body["secrets"]), body["totalSize"]) == (200, expected, 250)
    assert body["nextPageToken"]


def _token(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_GOOD_TOKEN = _token(b"after>secret-1")  # 14 bytes: one '=' of padding, 2 spare bits before it
# The same bytes with a spare bit set: decodes alike, but is not the token the emulator gave.
_STRAY_BITS = _GOOD_TOKEN[:-2] + _B64[_B64.index(_GOOD_TOKEN[-2]) ^ 1] + "="


@pytest.mark.parametrize(
    "query",
    [
        {"pageSize": "-1"},
        {"pageSize": "ten"},
        {"pageSize": "1.5"},
        {"pageToken": "!!not-a-token!!"},
        {"pageToken": base64.urlsafe_b64encode(b"Not An Id").decode()},
        {"pageToken": _token(b"secret-1")},  # no prefix
        {"pageToken": _token(b"after>Not An Id")},
        {"pageToken": _token(b"after>")},
        {"pageToken": _token(b"after>\xff\xfe")},
        {"pageToken": base64.urlsafe_b64encode(b"after>secret-1").decode()},  # '-' for '+'
        {"pageToken": _GOOD_TOKEN.replace("+", " ")},  # as an unquoted '+' arrives
        {"pageToken": _GOOD_TOKEN.rstrip("=")},
        {"pageToken": _STRAY_BITS},
    ],
    ids=str,
)
async def test_bad_page_size_or_token_is_400(
    emulator: Emulator, session: aiohttp.ClientSession, query: dict[str, str]
) -> None:
    emulator.put(ACCOUNT, "present", "KEY", VALUE)
    assert_error(*await call(session, "GET", SECRETS, params=query), 400, 3)


async def test_the_token_the_bad_ones_are_made_from_is_good(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    assert base64.b64decode(_STRAY_BITS) == base64.b64decode(_GOOD_TOKEN)
    for secret_id in ["secret-0", "secret-1", "secret-2"]:
        emulator.put(ACCOUNT, secret_id, "KEY", VALUE)
    status, body = await call(session, "GET", SECRETS, params={"pageToken": _GOOD_TOKEN})
    assert status == 200
    assert [s["name"].rsplit("/", 1)[1] for s in body["secrets"]] == ["secret-2"]


# --- counters ---------------------------------------------------------------------------


@pytest.mark.parametrize(("fresh", "connections"), [(False, 1), (True, 4)])
async def test_connections_are_counted_exactly(
    emulator: Emulator, connect: Connect, fresh: bool, connections: int
) -> None:
    session = await connect(emulator, fresh=fresh)
    for _ in range(4):
        assert (await call(session, "GET", SECRETS))[0] == 200
    await session.close()
    assert emulator.stats.connections == connections
    assert emulator.stats.requests == {("GET", 200): 4}


async def test_requests_are_counted_by_method_and_status_and_reset(
    emulator: Emulator, session: aiohttp.ClientSession
) -> None:
    await call(session, "POST", SECRETS, json=create_body())
    await call(session, "POST", SECRETS, json=create_body())
    await call(session, "PATCH", f"{SECRETS}/api-key", json={"keyName": "K"})
    await call(session, "DELETE", f"{SECRETS}/nothing")
    await call(session, "GET", SECRETS)
    stats = emulator.stats
    assert stats.requests == {("POST", 200): 1, ("POST", 409): 1, ("PATCH", 200): 1,
                              ("DELETE", 404): 1, ("GET", 200): 1}  # fmt: skip
    assert (stats.count(), stats.count(method="POST"), stats.count(status=200)) == (5, 2, 3)
    assert stats.count(method="DELETE", status=404) == 1
    assert stats.writes == 4
    assert (stats.connections, stats.in_flight, stats.peak_in_flight) == (1, 0, 1)
    stats.reset()
    assert (stats.count(), stats.writes, stats.connections, stats.peak_in_flight) == (0, 0, 0, 0)


# --- latency, on the virtual clock ------------------------------------------------------


class GatedClock(VirtualClock):
    """A virtual clock whose sleepers wait for ``opened`` first, so a test can see them all
    in flight before any of them wakes."""

    def __init__(self) -> None:
        super().__init__(START)
        self.opened = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        deadline = self.now() + seconds
        await self.opened.wait()
        await super().sleep(deadline - self.now())


async def test_without_latency_requests_do_not_overlap(
    emulator: Emulator, connect: Connect, clock: VirtualClock
) -> None:
    session = await connect(emulator, fresh=True)
    assert await concurrently(5, lambda: call(session, "GET", SECRETS)) == [200] * 5
    assert (emulator.stats.peak_in_flight, emulator.stats.in_flight) == (1, 0)
    assert clock.now() == START


_SEED_3 = random.Random(3)
_JITTERS = [_SEED_3.random() * 0.05 for _ in range(5)]  # what Faults(seed=3) draws


@pytest.mark.parametrize(
    ("faults", "elapsed"),
    [({"latency": 0.05}, 0.05), ({"jitter": 0.05, "seed": 3}, max(_JITTERS))],
    ids=["latency", "jitter"],
)
async def test_latency_holds_requests_in_flight(
    start: Start, connect: Connect, faults: dict[str, Any], elapsed: float
) -> None:
    gated = GatedClock()
    emu = await start(clock=gated, **faults)
    session = await connect(emu, fresh=True)
    statuses: list[int] = []

    async def send() -> None:
        statuses.extend(await concurrently(5, lambda: call(session, "GET", SECRETS)))

    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send)
            await emu.wait_until(lambda stats: stats.in_flight == 5)
            gated.opened.set()
    assert statuses == [200] * 5
    assert (emu.stats.peak_in_flight, emu.stats.in_flight) == (5, 0)
    assert gated.now() - START == pytest.approx(elapsed)  # parallel latencies do not add up


async def test_write_latency_is_added_to_writes_only(
    start: Start, connect: Connect, clock: VirtualClock
) -> None:
    session = await connect(await start(latency=0.5, write_latency=2.0))
    assert (await call(session, "GET", SECRETS))[0] == 200
    assert clock.now() == START + 0.5
    assert (await call(session, "POST", SECRETS, json=create_body()))[0] == 200
    assert clock.now() == START + 0.5 + 2.5


# --- faults -----------------------------------------------------------------------------


def every_kind_of_request() -> list[tuple[str, str, dict[str, str] | None]]:
    """A request of each kind the API takes (method, path, JSON body), on the secret "present"."""
    return [
        ("POST", SECRETS, create_body()),
        ("PATCH", f"{SECRETS}/present", {"keyName": "NEW", "value": VALUE}),
        ("DELETE", f"{SECRETS}/present", None),
        ("GET", SECRETS, None),
        ("GET", f"{SECRETS}/present", None),
    ]


async def test_error_rate_answers_5xx_and_applies_nothing(start: Start, connect: Connect) -> None:
    emu = await start(error_rate=1.0, seed=1)
    session = await connect(emu)
    emu.put(ACCOUNT, "present", "KEY", "old")
    for method, path, body in every_kind_of_request() * 3:
        status, answer = await call(session, method, path, json=body)
        assert status in (500, 502, 503, 504)
        assert_error(status, answer, status, 13 if status == 500 else 14)
    assert emu.secrets(ACCOUNT) == {"present": ("KEY", "old")}
    assert emu.stats.count(status=200) == 0
    assert len({status for (_, status) in emu.stats.requests}) > 1  # a random mix


async def test_drop_rate_disconnects_and_applies_nothing(start: Start, connect: Connect) -> None:
    emu = await start(drop_rate=1.0, seed=1)
    session = await connect(emu, fresh=True)
    emu.put(ACCOUNT, "present", "KEY", "old")
    with pytest.raises(DISCONNECTED):
        await call(session, "POST", SECRETS, json=create_body())
    with pytest.raises(DISCONNECTED):
        await call(session, "PATCH", f"{SECRETS}/present", json={"keyName": "NEW"})
    assert emu.secrets(ACCOUNT) == {"present": ("KEY", "old")}
    assert emu.stats.requests == {("POST", 0): 1, ("PATCH", 0): 1}
    assert emu.stats.connections == 2


async def test_write_then_fail_applies_the_change_then_fails(
    start: Start, connect: Connect
) -> None:
    emu = await start(write_then_fail_rate=1.0, seed=7)
    session = await connect(emu, fresh=True)
    outcomes: list[int] = []
    for n in range(8):
        try:
            status, answer = await call(session, "POST", SECRETS, json=create_body(f"s{n}"))
        except DISCONNECTED:
            outcomes.append(0)
        else:
            assert_error(status, answer, 503, 14)
            outcomes.append(status)
    assert set(emu.secrets(ACCOUNT)) == {f"s{n}" for n in range(8)}
    assert set(outcomes) == {0, 503}  # both ways of failing, from the seeded coin
    assert emu.stats.requests == {("POST", s): outcomes.count(s) for s in (0, 503)}
    assert (await call(session, "GET", f"{SECRETS}/s0"))[0] == 200  # reads are untouched


async def test_faults_repeat_with_the_same_seed(start: Start, connect: Connect) -> None:
    runs: list[list[int]] = []
    for _ in range(2):
        session = await connect(await start(error_rate=0.5, seed=42))
        runs.append([(await call(session, "GET", SECRETS))[0] for _ in range(20)])
    assert runs[0] == runs[1]
    assert 200 in runs[0] and len(set(runs[0])) > 1


async def assert_429(session: aiohttp.ClientSession, retry_after: str | None) -> None:
    status, body, headers = await call_with_headers(session, "GET", SECRETS)
    assert_error(status, body, 429, 8)
    assert headers.get("Retry-After") == retry_after


@pytest.mark.parametrize("retry_after", [True, False])
async def test_rate_limit_answers_429_past_the_burst_and_refills_with_time(
    start: Start, connect: Connect, clock: VirtualClock, retry_after: bool
) -> None:
    emu = await start(rate_limit=0.25, burst=2, retry_after=retry_after)
    session = await connect(emu)
    unauthenticated = await connect(emu, key="wrong")
    assert (await call(unauthenticated, "GET", SECRETS))[0] == 401  # takes no token
    for _ in range(2):
        assert (await call(session, "GET", SECRETS))[0] == 200
    for _ in range(2):  # a rejected request takes no token either: still 429
        await assert_429(session, "4" if retry_after else None)  # 1 token at 0.25/s
    clock.advance(3.0)  # 3/4 of a token back
    await assert_429(session, "1" if retry_after else None)
    clock.advance(1.0)  # a whole token back, one only
    assert (await call(session, "GET", SECRETS))[0] == 200
    await assert_429(session, "4" if retry_after else None)
    assert (await call(session, "GET", f"/v1/accounts/{OTHER}/secrets"))[0] == 200


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "0"), (2.0, "2"), (2.5, "3")])
async def test_retry_after_seconds_fixes_the_header_and_the_bucket_still_decides(
    start: Start, connect: Connect, clock: VirtualClock, seconds: float, header: str
) -> None:
    session = await connect(await start(rate_limit=0.25, burst=1, retry_after_seconds=seconds))
    assert (await call(session, "GET", SECRETS))[0] == 200
    for _ in range(2):  # told to come back at once (for 0), and still refused
        await assert_429(session, header)
    clock.advance(4.0)
    assert (await call(session, "GET", SECRETS))[0] == 200
    await assert_429(session, header)


async def test_rate_limit_share_0_refuses_nothing_and_draws_nothing(
    start: Start, connect: Connect
) -> None:
    """At 0 the knob draws no random number: the other faults fall as they did without it."""
    runs: list[list[int]] = []
    knobs: list[dict[str, Any]] = [{}, {"rate_limit_share": 0.0}]
    for knob in knobs:
        session = await connect(await start(error_rate=0.5, seed=42, **knob))
        runs.append([(await call(session, "GET", SECRETS))[0] for _ in range(40)])
    assert runs[0] == runs[1]
    assert 200 in runs[0] and 429 not in runs[0]


@pytest.mark.parametrize(
    ("faults", "header"),
    [({}, "1"), ({"retry_after_seconds": 2.5}, "3"), ({"retry_after_seconds": 0.0}, "0"),
     ({"retry_after": False}, None)],
    ids=["default", "fixed", "at-once", "no-header"],
)  # fmt: skip
async def test_rate_limit_share_1_refuses_every_request_at_once_and_applies_nothing(
    start: Start,
    connect: Connect,
    clock: VirtualClock,
    faults: dict[str, Any],
    header: str | None,
) -> None:
    emu = await start(rate_limit_share=1.0, latency=5.0, seed=1, **faults)
    session = await connect(emu)
    emu.put(ACCOUNT, "present", "KEY", "old")
    requests = every_kind_of_request()
    for method, path, body in requests:
        status, answer, headers = await call_with_headers(session, method, path, json=body)
        assert_error(status, answer, 429, 8)
        assert headers.get("Retry-After") == header
    assert emu.secrets(ACCOUNT) == {"present": ("KEY", "old")}
    assert emu.stats.count(status=429) == emu.stats.count() == len(requests)
    assert clock.now() == START  # refused before the latency, as a rate limiter does
    unauthenticated = await connect(emu, key="wrong")
    assert (await call(unauthenticated, "GET", SECRETS))[0] == 401  # decided after the key


async def test_rate_limit_share_refuses_a_seeded_random_share(
    start: Start, connect: Connect
) -> None:
    runs: list[list[int]] = []
    for _ in range(2):
        session = await connect(await start(rate_limit_share=0.3, seed=5))
        runs.append([(await call(session, "GET", SECRETS))[0] for _ in range(200)])
    assert runs[0] == runs[1]  # the same seed, the same requests refused
    assert set(runs[0]) == {200, 429}
    assert 30 <= runs[0].count(429) <= 90  # 60 expected; a wide band


async def test_rate_limit_share_comes_on_top_of_the_bucket(
    start: Start, connect: Connect, clock: VirtualClock
) -> None:
    """A request the bucket refuses says the bucket's wait; one it lets through may still be
    refused at random, and has taken its token."""
    emu = await start(rate_limit=0.25, burst=2, rate_limit_share=1.0, seed=1)
    session = await connect(emu)
    for _ in range(2):
        await assert_429(session, "1")  # a token taken, then refused at random
    await assert_429(session, "4")  # the bucket is empty: 1 token at 0.25/s


async def test_a_bad_key_is_401_whatever_the_faults(
    start: Start, connect: Connect, clock: VirtualClock
) -> None:
    emu = await start(error_rate=1.0, drop_rate=1.0, latency=10.0, rate_limit=0.001, burst=1)
    session = await connect(emu, key="wrong")
    for _ in range(2):
        assert_error(*await call(session, "GET", SECRETS), 401, 16)
    assert clock.now() == START  # no latency either


# --- debug routes, settings, serve() ----------------------------------------------------


async def test_debug_routes_show_stats_and_values_without_key_or_faults(
    start: Start, connect: Connect
) -> None:
    emu = await start(error_rate=1.0, seed=1)
    session = await connect(emu, None)
    emu.put(ACCOUNT, "api-key", "API_KEY", VALUE)
    await call(session, "GET", SECRETS)
    async with session.get(f"/_emulator/accounts/{ACCOUNT}/secrets") as response:
        assert response.status == 200
        assert await response.json() == {"api-key": {"keyName": "API_KEY", "value": VALUE}}
    async with session.get("/_emulator/stats") as response:
        assert response.status == 200
        stats = await response.json()
    assert stats["requests"] == {"GET 401": 1}
    assert (stats["connections"], stats["writes"], stats["in_flight"]) == (1, 0, 0)


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("10.1.2.3", False),
     ("192.168.0.1", False), ("::ffff:10.0.0.1", False), (None, False), ("", False)],
)  # fmt: skip
def test_debug_routes_recognise_loopback_peers(remote: str | None, loopback: bool) -> None:
    assert _is_loopback(remote) is loopback


@pytest.mark.parametrize(
    "faults",
    [{"error_rate": 1.5}, {"drop_rate": -0.1}, {"write_then_fail_rate": float("nan")},
     {"rate_limit_share": 1.01}, {"rate_limit_share": -0.5},
     {"latency": -1.0}, {"jitter": float("inf")}, {"rate_limit": -5.0}, {"burst": 0},
     {"retry_after_seconds": -1.0}, {"retry_after_seconds": float("nan")},
     {"retry_after_seconds": float("inf")}, {"retry_after": False, "retry_after_seconds": 0.0}],
    ids=str,
)  # fmt: skip
def test_faults_are_checked_when_built(faults: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(faults))):
        Faults(**faults)


def test_default_burst_follows_the_rate() -> None:
    assert Faults(rate_limit=0.5).bucket_size == 1
    assert Faults(rate_limit=100).bucket_size == 100
    assert Faults(rate_limit=100, burst=3).bucket_size == 3


def test_the_emulator_command_turns_its_flags_into_faults() -> None:
    parser = argparse.ArgumentParser()
    emulator_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["emulator", "--latency", "0.02", "--rate-limit-share", "0.03"])
    assert emulator_command.config_from(args).faults == Faults(latency=0.02, rate_limit_share=0.03)
    args = parser.parse_args(["emulator", "--rate-limit-share", "2"])
    with pytest.raises(ValueError, match="rate_limit_share"):
        emulator_command.config_from(args)


async def test_serve_runs_until_cancelled() -> None:
    urls: list[str] = []
    ready = anyio.Event()
    returned = False

    def on_ready(base_url: str) -> None:
        urls.append(base_url)
        ready.set()

    async def run_serve() -> None:
        nonlocal returned
        await serve(config(), host="127.0.0.1", port=0, ready=on_ready)
        returned = True

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run_serve)
        await ready.wait()
        headers = {"Authorization": f"Bearer {KEY}"}
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.get(urls[0] + SECRETS) as response,
        ):
            assert response.status == 200
        tasks.cancel_scope.cancel()
    assert not returned  # cancelled, and the cancellation went through
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(urls[0] + SECRETS)


async def test_emulator_as_context_manager_binds_a_free_port(
    connect: Connect, clock: VirtualClock
) -> None:
    emu = Emulator(config(), clock=clock)
    assert emu.clock is clock
    async with emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert not emu.base_url.endswith(":0")
        session = await connect(emu)
        assert (await call(session, "GET", SECRETS))[0] == 200
        await session.close()


# --- the virtual clock ------------------------------------------------------------------


async def test_virtual_clock_jumps_to_the_furthest_deadline_of_parallel_sleepers(
    clock: VirtualClock,
) -> None:
    with anyio.fail_after(GUARD):
        async with anyio.create_task_group() as tasks:
            for seconds in (60.0, 3600.0, 5.0):
                tasks.start_soon(clock.sleep, seconds)
        assert clock.now() == START + 3600.0  # not their sum
        await clock.sleep(10.0)
        await clock.sleep(20.0)  # one after another, they add up
        assert clock.now() == START + 3630.0
        await clock.sleep(-5.0)  # time never goes back
        assert clock.now() == START + 3630.0


async def test_virtual_clock_sleep_yields_once_and_advance_moves_time(clock: VirtualClock) -> None:
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(other)
        await clock.sleep(0.0)
        order.append("sleeper")
    assert order == ["other", "sleeper"]
    clock.advance(2.5)
    assert clock.now() == START + 2.5
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds"):
            clock.advance(bad)
    assert VirtualClock().now() == START


def _listening_socket(port: int) -> socket.socket | None:
    """A duplicate of this process's listening TCP socket on ``port`` (Linux: from
    ``/proc/self/fd``), or None."""
    for name in os.listdir("/proc/self/fd"):
        try:
            found = socket.fromfd(int(name), socket.AF_INET, socket.SOCK_STREAM)
        except OSError:  # not a socket, or closed since the listing
            continue
        try:
            if (
                found.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and found.getsockname()[1] == port
            ):
                return found
        except OSError:
            pass
        found.close()
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's TCP_INFO")
async def test_the_emulator_holds_a_thousand_connections_waiting_to_be_accepted(
    start: Start,
) -> None:
    # A client at c=1,024 opens as many connections at once: past the listen backlog the
    # kernel drops them, and each waits a second or more to try again.
    emu = await start()
    listening = _listening_socket(int(emu.base_url.rpartition(":")[2]))
    assert listening is not None
    with listening:
        info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # For a listening socket, tcpi_sacked is its backlog (after the 8 one-byte fields and
    # four 32-bit ones: rto, ato, snd_mss, rcv_mss, unacked).
    backlog = struct.unpack_from("I", info, 28)[0]
    most = int(Path("/proc/sys/net/core/somaxconn").read_text())  # noqa: ASYNC240
    assert backlog == min(BACKLOG, most)
    assert backlog >= 1024 or most < 1024
