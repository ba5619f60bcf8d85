"""The emulator over real sockets: the five calls, their errors, counters and injected faults."""

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bulk_secrets.emulator import (
    Emulator,
    EmulatorConfig,
    Faults,
    running_emulator,
    serve,
)
from bulk_secrets.emulator.server import _is_loopback

ACCOUNT = "acme"
OTHER = "other"
KEY = "key-any"
KEY_ACME = "key-acme-only"
KEYS: dict[str, frozenset[str] | None] = {KEY: None, KEY_ACME: frozenset({ACCOUNT})}
SECRETS = f"/v1/accounts/{ACCOUNT}/secrets"
VALUE = "sk-VALUE-must-never-be-echoed"
DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config(**faults: Any) -> EmulatorConfig:
    return EmulatorConfig(keys=KEYS, faults=Faults(**faults))


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with running_emulator(config()) as emu:
        yield emu


def client(emu: Emulator, key: str | None = KEY, *, fresh: bool = False) -> aiohttp.ClientSession:
    """A session on the emulator; ``fresh`` opens a new TCP connection per request."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    connector = aiohttp.TCPConnector(force_close=fresh)
    return aiohttp.ClientSession(emu.base_url, headers=headers, connector=connector)


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """One request; checks that the answer never carries a secret value."""
    async with session.request(method, path, **kwargs) as response:
        text = await response.text()
        assert "sk-" not in text
        assert '"value"' not in text
        return response.status, await response.json(content_type=None)


def assert_error(status: int, body: Any, expected_status: int, rpc_code: int) -> None:
    assert status == expected_status, body
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == rpc_code
    assert body["details"] == []
    assert isinstance(body["message"], str) and body["message"]


def create_body(id_: str = "api-key", key_name: str = "API_KEY") -> dict[str, str]:
    return {"name": f"accounts/{ACCOUNT}/secrets/{id_}", "keyName": key_name, "value": VALUE}


# --- the five calls ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_get_list_update_delete(emulator: Emulator) -> None:
    async with client(emulator) as session:
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


@pytest.mark.anyio
async def test_create_takes_proto_names_ignores_unknown_fields_and_defaults_value(
    emulator: Emulator,
) -> None:
    body = {"name": "from-proto", "key_name": "FROM_PROTO", "createTime": "x", "extra": {"a": 1}}
    async with client(emulator) as session:
        status, answer = await call(session, "POST", SECRETS, json=body)
    assert (status, answer["keyName"]) == (200, "FROM_PROTO")
    assert emulator.secrets(ACCOUNT) == {"from-proto": ("FROM_PROTO", "")}


@pytest.mark.anyio
async def test_ids_up_to_63_characters_are_accepted(emulator: Emulator) -> None:
    async with client(emulator) as session:
        status, _ = await call(session, "POST", SECRETS, json=create_body("a" * 63))
    assert status == 200
    assert list(emulator.secrets(ACCOUNT)) == ["a" * 63]


# --- errors -----------------------------------------------------------------------------


@pytest.mark.anyio
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
async def test_create_rejects_bad_bodies_with_400(emulator: Emulator, body: Any) -> None:
    async with client(emulator) as session:
        status, answer = await call(session, "POST", SECRETS, json=body)
    assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {}


@pytest.mark.anyio
@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe{"], ids=["broken", "empty", "bytes"])
async def test_bodies_that_are_not_json_are_400(emulator: Emulator, raw: bytes) -> None:
    emulator.put(ACCOUNT, "present", "PRESENT", VALUE)
    async with client(emulator) as session:
        for method, path in [("POST", SECRETS), ("PATCH", f"{SECRETS}/present")]:
            status, answer = await call(session, method, path, data=raw)
            assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {"present": ("PRESENT", VALUE)}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("secret_id", ["Bad", "has_underscore", "9lives", "a" * 64])
async def test_malformed_id_in_path_is_400(emulator: Emulator, method: str, secret_id: str) -> None:
    emulator.put(ACCOUNT, secret_id, "KEY", VALUE)  # stored anyway: the id check must come first
    async with client(emulator) as session:
        path = f"{SECRETS}/{secret_id}"
        status, answer = await call(session, method, path, json={"keyName": "K"})
    assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {secret_id: ("KEY", VALUE)}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body", [{"value": VALUE}, {"keyName": "bad-key"}, {"keyName": 7}, [1]], ids=str
)
async def test_update_rejects_bad_bodies_with_400(emulator: Emulator, body: Any) -> None:
    emulator.put(ACCOUNT, "present", "PRESENT", "old")
    async with client(emulator) as session:
        status, answer = await call(session, "PATCH", f"{SECRETS}/present", json=body)
    assert_error(status, answer, 400, 3)
    assert emulator.secrets(ACCOUNT) == {"present": ("PRESENT", "old")}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_missing_secret_is_404(emulator: Emulator, method: str) -> None:
    emulator.put(OTHER, "missing", "IN_OTHER_ACCOUNT", VALUE)
    async with client(emulator) as session:
        status, answer = await call(session, method, f"{SECRETS}/missing", json={"keyName": "K"})
    assert_error(status, answer, 404, 5)
    assert emulator.secrets(ACCOUNT) == {}


@pytest.mark.anyio
async def test_create_of_existing_id_is_409_and_keeps_the_old_secret(emulator: Emulator) -> None:
    emulator.put(ACCOUNT, "api-key", "API_KEY", "old")
    async with client(emulator) as session:
        status, answer = await call(session, "POST", SECRETS, json=create_body())
    assert_error(status, answer, 409, 6)
    assert emulator.secrets(ACCOUNT) == {"api-key": ("API_KEY", "old")}


@pytest.mark.anyio
async def test_unknown_route_is_404_and_wrong_method_is_405(emulator: Emulator) -> None:
    async with client(emulator) as session:
        assert_error(*await call(session, "GET", "/v1/accounts/acme/models"), 404, 5)
        assert_error(*await call(session, "PUT", f"{SECRETS}/x"), 405, 12)
        assert_error(*await call(session, "DELETE", SECRETS), 405, 12)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "scheme"), [(None, "Bearer"), ("nope", "Bearer"), (KEY, "Basic"), ("", "Bearer")]
)
async def test_missing_or_unknown_key_is_401(
    emulator: Emulator, key: str | None, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} {key}"} if key is not None else {}
    async with client(emulator, key=None) as session:
        status, answer = await call(session, "POST", SECRETS, json=create_body(), headers=headers)
        assert_error(status, answer, 401, 16)
        assert "nope" not in answer["message"]
    assert emulator.secrets(ACCOUNT) == {}


@pytest.mark.anyio
async def test_key_limited_to_an_account_gets_403_elsewhere(emulator: Emulator) -> None:
    async with client(emulator, KEY_ACME) as session:
        assert (await call(session, "POST", SECRETS, json=create_body()))[0] == 200
        path = f"/v1/accounts/{OTHER}/secrets"
        assert_error(*await call(session, "GET", path), 403, 7)
        status, answer = await call(session, "POST", path, json=create_body())
        assert_error(status, answer, 403, 7)  # before any check of the body
    assert emulator.secrets(OTHER) == {}


@pytest.mark.anyio
async def test_no_response_carries_a_value(emulator: Emulator) -> None:
    for n in range(3):
        emulator.put(ACCOUNT, f"s{n}", f"KEY_{n}", f"{VALUE}-{n}")
    async with client(emulator) as session:
        _, listed = await call(session, "GET", SECRETS)
        _, got = await call(session, "GET", f"{SECRETS}/s1")
        patch = {"keyName": "K", "value": VALUE}
        _, updated = await call(session, "PATCH", f"{SECRETS}/s2", json=patch)
        _, created = await call(session, "POST", SECRETS, json=create_body("new"))
    for secret in [*listed["secrets"], got, updated, created]:
        assert set(secret) == {"name", "keyName"}


# --- pagination -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_pages_through_120_secrets_in_three_pages(emulator: Emulator) -> None:
    ids = [f"secret-{n:03d}" for n in range(120)]
    for secret_id in reversed(ids):
        emulator.put(ACCOUNT, secret_id, "KEY", VALUE)
    emulator.put(OTHER, "not-mine", "KEY", VALUE)
    seen: list[str] = []
    sizes: list[int] = []
    token = ""
    async with client(emulator) as session:
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


@pytest.mark.anyio
@pytest.mark.parametrize(("page_size", "expected"), [("500", 200), ("", 50), ("0", 50), ("7", 7)])
async def test_page_size_defaults_to_50_and_is_clamped_to_200(
    emulator: Emulator, page_size: str, expected: int
) -> None:
    for n in range(250):
        emulator.put(ACCOUNT, f"s{n:03d}", "KEY", VALUE)
    async with client(emulator) as session:
        status, body = await call(session, "GET", SECRETS, params={"pageSize": page_size})
    assert (status, len(body["secrets"]), body["totalSize"]) == (200, expected, 250)
    assert body["nextPageToken"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "query",
    [
        {"pageSize": "-1"},
        {"pageSize": "ten"},
        {"pageSize": "1.5"},
        {"pageToken": "!!not-a-token!!"},
        {"pageToken": base64.urlsafe_b64encode(b"Not An Id").decode()},
    ],
    ids=str,
)
async def test_bad_page_size_or_token_is_400(emulator: Emulator, query: dict[str, str]) -> None:
    emulator.put(ACCOUNT, "present", "KEY", VALUE)
    async with client(emulator) as session:
        assert_error(*await call(session, "GET", SECRETS, params=query), 400, 3)


# --- counters ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("fresh", "connections"), [(False, 1), (True, 4)])
async def test_connections_are_counted_exactly(
    emulator: Emulator, fresh: bool, connections: int
) -> None:
    async with client(emulator, fresh=fresh) as session:
        for _ in range(4):
            assert (await call(session, "GET", SECRETS))[0] == 200
    assert emulator.stats.connections == connections
    assert emulator.stats.requests == {("GET", 200): 4}


@pytest.mark.anyio
async def test_requests_are_counted_by_method_and_status_and_reset(emulator: Emulator) -> None:
    async with client(emulator) as session:
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


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("faults", "peak"),
    [({}, 1), ({"latency": 0.05}, 5), ({"jitter": 0.05, "seed": 3}, 5)],
    ids=["no-latency", "latency", "jitter"],
)
async def test_latency_holds_requests_in_flight(faults: dict[str, Any], peak: int) -> None:
    async with running_emulator(config(**faults)) as emu, client(emu, fresh=True) as session:
        results = await asyncio.gather(*(call(session, "GET", SECRETS) for _ in range(5)))
        assert [status for status, _ in results] == [200] * 5
        assert (emu.stats.peak_in_flight, emu.stats.in_flight) == (peak, 0)


# --- faults -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_error_rate_answers_5xx_and_applies_nothing() -> None:
    async with running_emulator(config(error_rate=1.0, seed=1)) as emu, client(emu) as session:
        emu.put(ACCOUNT, "present", "KEY", "old")
        requests = [
            ("POST", SECRETS, create_body()),
            ("PATCH", f"{SECRETS}/present", {"keyName": "NEW", "value": VALUE}),
            ("DELETE", f"{SECRETS}/present", None),
            ("GET", SECRETS, None),
        ]
        for method, path, body in requests * 3:
            status, answer = await call(session, method, path, json=body)
            assert status in (500, 502, 503, 504)
            assert_error(status, answer, status, 13 if status == 500 else 14)
        assert emu.secrets(ACCOUNT) == {"present": ("KEY", "old")}
        assert emu.stats.count(status=200) == 0
        assert len({status for (_, status) in emu.stats.requests}) > 1  # a random mix


@pytest.mark.anyio
async def test_drop_rate_disconnects_and_applies_nothing() -> None:
    async with (
        running_emulator(config(drop_rate=1.0, seed=1)) as emu,
        client(emu, fresh=True) as session,
    ):
        emu.put(ACCOUNT, "present", "KEY", "old")
        with pytest.raises(DISCONNECTED):
            await call(session, "POST", SECRETS, json=create_body())
        with pytest.raises(DISCONNECTED):
            await call(session, "PATCH", f"{SECRETS}/present", json={"keyName": "NEW"})
        assert emu.secrets(ACCOUNT) == {"present": ("KEY", "old")}
        assert emu.stats.requests == {("POST", 0): 1, ("PATCH", 0): 1}
        assert emu.stats.connections == 2


@pytest.mark.anyio
async def test_write_then_fail_applies_the_change_then_fails() -> None:
    outcomes: list[int] = []
    async with (
        running_emulator(config(write_then_fail_rate=1.0, seed=7)) as emu,
        client(emu, fresh=True) as session,
    ):
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


@pytest.mark.anyio
async def test_faults_repeat_with_the_same_seed() -> None:
    runs: list[list[int]] = []
    for _ in range(2):
        async with running_emulator(config(error_rate=0.5, seed=42)) as emu, client(emu) as s:
            runs.append([(await call(s, "GET", SECRETS))[0] for _ in range(20)])
    assert runs[0] == runs[1]
    assert 200 in runs[0] and len(set(runs[0])) > 1


@pytest.mark.anyio
@pytest.mark.parametrize("retry_after", [True, False])
async def test_rate_limit_answers_429_past_the_burst(retry_after: bool) -> None:
    faults = config(rate_limit=0.001, burst=2, retry_after=retry_after)
    async with running_emulator(faults) as emu, client(emu) as session:
        async with client(emu, key="wrong") as unauthenticated:
            assert (await call(unauthenticated, "GET", SECRETS))[0] == 401  # takes no token
        for _ in range(2):
            assert (await call(session, "GET", SECRETS))[0] == 200
        for _ in range(2):  # a rejected request takes no token either: still 429
            async with session.get(SECRETS) as response:
                assert_error(response.status, await response.json(), 429, 8)
                retry = response.headers.get("Retry-After")
            if retry_after:
                assert retry is not None and int(retry) >= 1
            else:
                assert retry is None
        assert (await call(session, "GET", f"/v1/accounts/{OTHER}/secrets"))[0] == 200


@pytest.mark.anyio
async def test_a_bad_key_is_401_whatever_the_faults() -> None:
    faults = config(error_rate=1.0, drop_rate=1.0, latency=10.0)
    async with running_emulator(faults) as emu, client(emu, key="wrong") as session:
        assert_error(*await call(session, "GET", SECRETS), 401, 16)


# --- debug routes, settings, serve() ----------------------------------------------------


@pytest.mark.anyio
async def test_debug_routes_show_stats_and_values_without_key_or_faults() -> None:
    async with running_emulator(config(error_rate=1.0, seed=1)) as emu, client(emu, None) as s:
        emu.put(ACCOUNT, "api-key", "API_KEY", VALUE)
        await call(s, "GET", SECRETS)
        async with s.get(f"/_emulator/accounts/{ACCOUNT}/secrets") as response:
            assert response.status == 200
            assert await response.json() == {"api-key": {"keyName": "API_KEY", "value": VALUE}}
        async with s.get("/_emulator/stats") as response:
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
     {"latency": -1.0}, {"jitter": float("inf")}, {"rate_limit": -5.0}, {"burst": 0}],
    ids=str,
)  # fmt: skip
def test_faults_are_checked_when_built(faults: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(faults))):
        Faults(**faults)


def test_default_burst_follows_the_rate() -> None:
    assert Faults(rate_limit=0.5).bucket_size == 1
    assert Faults(rate_limit=100).bucket_size == 100
    assert Faults(rate_limit=100, burst=3).bucket_size == 3


@pytest.mark.anyio
async def test_serve_runs_until_cancelled() -> None:
    urls: list[str] = []
    ready = asyncio.Event()

    def on_ready(base_url: str) -> None:
        urls.append(base_url)
        ready.set()

    task = asyncio.create_task(serve(config(), host="127.0.0.1", port=0, ready=on_ready))
    await ready.wait()
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(urls[0] + SECRETS) as response,
    ):
        assert response.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(urls[0] + SECRETS)


@pytest.mark.anyio
async def test_emulator_as_context_manager_binds_a_free_port() -> None:
    emu = Emulator(config())
    async with emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert not emu.base_url.endswith(":0")
        async with client(emu) as session:
            assert (await call(session, "GET", SECRETS))[0] == 200
