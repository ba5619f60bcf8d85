"""A local emulator of the Fireworks secrets REST API, for tests, benchmarks and ``--sandbox``.

It is NOT a secret store: values live in memory, in plain text, for as long as the process.

What it emulates (see ``shared/fireworks/secrets-openapi.yaml`` and ``API.md``):

- the five calls under ``/v1/accounts/{account_id}/secrets``: create (POST), get, list
  (``pageSize``/``pageToken``, sorted by id), update (PATCH) and delete;
- the gRPC-gateway error body ``{"code": <google.rpc.Code>, "message": ..., "details": []}``;
  error messages may name ids and keyNames, never a secret value;
- JSON and proto field names (``keyName`` or ``key_name``); unknown fields are ignored and
  ``null`` counts as absent, as protojson reads them;
- ``Authorization: Bearer <key>``: each key may touch some accounts or all (401, then 403).

Fault knobs (:class:`Faults`), decided after authentication and repeatable with ``seed``:

- ``latency`` + uniform ``jitter``: extra seconds before each API request is handled, and
  ``write_latency`` more for each POST, PATCH and DELETE;
- ``rate_limit`` (requests/s per account) and ``burst``: a token bucket; excess gets 429, with
  ``Retry-After`` when ``retry_after`` is set;
- ``error_rate``: a 500/502/503/504 with no change applied;
- ``drop_rate``: the TCP connection is closed with no answer and no change applied;
- ``write_then_fail_rate``: a successful POST/PATCH/DELETE is applied, then answered with a 503
  or a dropped connection (half each).

:attr:`Emulator.stats` counts requests by (method, status) (status 0 = dropped), TCP
connections and requests in flight. Two loopback-only debug routes need no key and see no
faults: ``GET /_emulator/stats`` and ``GET /_emulator/accounts/{a}/secrets`` (with values).
"""

import asyncio
import base64
import contextlib
import ipaddress
import json
import math
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_ID_LENGTH = 63
SHUTDOWN_TIMEOUT = 2.0  # seconds close() waits for handlers still running

_SECRET_ID = re.compile(r"[a-z][a-z0-9-]*")
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESOURCE_NAME = re.compile(r"accounts/([^/]+)/secrets/([^/]+)")
_COLLECTION_PATH = re.compile(r"/v1/accounts/([^/]+)/secrets")
_ITEM_PATH = re.compile(r"/v1/accounts/([^/]+)/secrets/([^/]+)")
_DEBUG_SECRETS_PATH = re.compile(r"/_emulator/accounts/([^/]+)/secrets")
_PAGE_SIZE = re.compile(r"-?[0-9]+")
_WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})
_SERVER_ERRORS = (500, 502, 503, 504)
# HTTP status -> google.rpc.Code, as grpc-gateway maps them.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 429: 8, 500: 13}
_RPC_UNAVAILABLE = 14  # 502, 503, 504


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Faults to inject into API requests; all random choices come from one ``Random(seed)``."""

    latency: float = 0.0
    jitter: float = 0.0
    write_latency: float = 0.0
    rate_limit: float = 0.0  # requests per second per account; 0 = no limit
    burst: int | None = None  # bucket size; None = max(1, int(rate_limit))
    retry_after: bool = True
    error_rate: float = 0.0
    drop_rate: float = 0.0
    write_then_fail_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "write_latency", "rate_limit"):
            number = getattr(self, name)
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {number!r}")
        for name in ("error_rate", "drop_rate", "write_then_fail_rate"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, got {share!r}")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"burst must be >= 1 (or None for the default), got {self.burst!r}")

    @property
    def bucket_size(self) -> int:
        return self.burst if self.burst is not None else max(1, int(self.rate_limit))


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    keys: Mapping[str, frozenset[str] | None]  # API key -> accounts it may touch, None = any
    faults: Faults = field(default_factory=Faults)


@dataclass
class Stats:
    """What the emulator saw; ``in_flight`` is a live gauge, the rest are counters."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (method, status)
    connections: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

    def count(self, method: str | None = None, status: int | None = None) -> int:
        return sum(
            number
            for (seen_method, seen_status), number in self.requests.items()
            if method in (None, seen_method) and status in (None, seen_status)
        )

    @property
    def writes(self) -> int:
        return sum(self.count(method=method) for method in _WRITE_METHODS)

    def reset(self) -> None:
        """Zero the counters; requests still in flight stay counted in ``in_flight``."""
        self.requests.clear()
        self.connections = 0
        self.peak_in_flight = self.in_flight

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": {f"{m} {s}": n for (m, s), n in sorted(self.requests.items())},
            "connections": self.connections,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "writes": self.writes,
        }


class _ApiError(Exception):
    """An error answer, raised anywhere below the request handler."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class _TokenBucket:
    rate: float
    size: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token; return 0.0 on success, else the seconds until one is free."""
        self.tokens = min(float(self.size), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class _CountingServer(web.Server):
    """aiohttp's low-level server, counting each accepted TCP connection once."""

    def __init__(
        self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], stats: Stats
    ) -> None:
        super().__init__(handler, access_log=None)
        self._stats = stats

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._stats.connections += 1
        super().connection_made(handler, transport)


_Operation = Callable[[web.BaseRequest, str, str], Awaitable[web.Response]]


class Emulator:
    """The emulated API on a real socket: ``start()`` then ``close()``, or ``async with``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self._waiters: list[tuple[Callable[[Stats], bool], asyncio.Future[None]]] = []
        self.base_url = ""
        self._faults = config.faults
        self._rng = random.Random(config.faults.seed)
        self._store: dict[str, dict[str, tuple[str, str]]] = {}  # account -> id -> (key, value)
        self._buckets: dict[str, _TokenBucket] = {}
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.ServerRunner(
            _CountingServer(self._handle, self.stats), shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 in brackets
        self.base_url = f"http://{url_host}:{bound_port}"
        return self.base_url

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "Emulator":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def secrets(self, account: str) -> dict[str, tuple[str, str]]:
        """Test-only view of stored secrets: id -> (keyName, value)."""
        return dict(self._store.get(account, {}))

    def put(self, account: str, secret_id: str, key_name: str, value: str) -> None:
        """Store a secret directly (no checks, no stats), to set up a test."""
        self._store.setdefault(account, {})[secret_id] = (key_name, value)

    def remove(self, account: str, secret_id: str) -> None:
        """Delete a secret directly (no checks, no stats), as another tool would."""
        self._store.get(account, {}).pop(secret_id, None)

    async def wait_until(self, ready: Callable[[Stats], bool]) -> None:
        """Wait until ``ready(stats)`` holds; it is asked as each request starts and ends,
        never polled."""
        if ready(self.stats):
            return
        waiter = (ready, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        finally:
            self._waiters.remove(waiter)

    def _wake_waiters(self) -> None:
        for ready, future in self._waiters:
            if not future.done() and ready(self.stats):
                future.set_result(None)

    # --- request handling -------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/_emulator/"):
            return self._debug(request)
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
        self._wake_waiters()
        status = 500  # what aiohttp answers if a bug raises below
        try:
            response = await self._api(request)
            if response is None:  # drop the connection: close it, answer nothing
                status = 0
                request.protocol.force_close()
                return web.Response()  # never written: the transport is closed
            status = response.status
            return response
        finally:
            self.stats.in_flight -= 1
            self.stats.requests[(request.method, status)] += 1
            self._wake_waiters()

    async def _api(self, request: web.BaseRequest) -> web.Response | None:
        """Answer one API request; None means drop the connection."""
        try:
            allowed = self._authenticate(request)
            operation, account, secret_id = self._route(request)
            if allowed is not None and account not in allowed:
                raise _ApiError(403, f"this API key may not access account {account!r}")
            self._take_token(account)
            await self._delay(request.method)
            if self._chance(self._faults.drop_rate):
                return None
            if self._chance(self._faults.error_rate):
                status = self._rng.choice(_SERVER_ERRORS)
                return _error(status, "emulated server error (no change applied)")
            response = await operation(request, account, secret_id)
        except _ApiError as exc:
            return _error(exc.status, exc.message, exc.headers)
        if request.method in _WRITE_METHODS and self._chance(self._faults.write_then_fail_rate):
            if self._rng.random() < 0.5:
                return None
            return _error(503, "emulated server error after the change was applied")
        return response

    def _authenticate(self, request: web.BaseRequest) -> frozenset[str] | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise _ApiError(401, "missing API key: send 'Authorization: Bearer <API_KEY>'")
        if key not in self.config.keys:
            raise _ApiError(401, "invalid API key")
        return self.config.keys[key]

    def _route(self, request: web.BaseRequest) -> tuple[_Operation, str, str]:
        operations: dict[str, _Operation]
        if match := _COLLECTION_PATH.fullmatch(request.path):
            account, secret_id = match[1], ""
            operations = {"GET": self._list, "POST": self._create}
        elif match := _ITEM_PATH.fullmatch(request.path):
            account, secret_id = match[1], match[2]
            operations = {"GET": self._get, "PATCH": self._update, "DELETE": self._delete}
        else:
            raise _ApiError(404, f"no route for {request.path!r}")
        if request.method not in operations:
            raise _ApiError(405, f"method {request.method} not allowed on {request.path!r}")
        return operations[request.method], account, secret_id

    def _take_token(self, account: str) -> None:
        faults = self._faults
        if faults.rate_limit <= 0:
            return
        now = asyncio.get_running_loop().time()
        if account not in self._buckets:  # a new account starts with a full bucket
            size = faults.bucket_size
            self._buckets[account] = _TokenBucket(faults.rate_limit, size, size, now)
        wait = self._buckets[account].take(now)
        if wait > 0:
            headers = {"Retry-After": str(max(1, math.ceil(wait)))} if faults.retry_after else {}
            raise _ApiError(429, f"rate limit exceeded for account {account!r}", headers)

    async def _delay(self, method: str) -> None:
        delay = self._faults.latency
        if method in _WRITE_METHODS:
            delay += self._faults.write_latency
        if self._faults.jitter > 0:
            delay += self._rng.random() * self._faults.jitter
        if delay > 0:
            await asyncio.sleep(delay)

    def _chance(self, share: float) -> bool:
        return share > 0 and self._rng.random() < share

    # --- the five calls ---------------------------------------------------------------

    async def _create(self, request: web.BaseRequest, account: str, _: str) -> web.Response:
        body = await _read_object(request)
        name = _string_field(body, "name")
        key_name = _string_field(body, "keyName", "key_name")
        value = _string_field(body, "value") or ""
        if name is None:
            raise _ApiError(400, "name is required")
        if key_name is None:
            raise _ApiError(400, "keyName is required")
        secret_id = _id_from_name(name, account)
        _check_key_name(key_name)
        secrets = self._store.setdefault(account, {})
        if secret_id in secrets:
            raise _ApiError(409, f"secret {secret_id!r} already exists in account {account!r}")
        secrets[secret_id] = (key_name, value)
        return web.json_response(_view(account, secret_id, key_name))

    async def _get(self, request: web.BaseRequest, account: str, secret_id: str) -> web.Response:
        key_name, _ = self._find(account, secret_id)
        return web.json_response(_view(account, secret_id, key_name))

    async def _list(self, request: web.BaseRequest, account: str, _: str) -> web.Response:
        page_size = _page_size(request.query.get("pageSize", ""))
        after = _decode_page_token(request.query.get("pageToken", ""))
        secrets = self._store.get(account, {})
        following = sorted(secret_id for secret_id in secrets if secret_id > after)
        page = following[:page_size]
        more = len(following) > page_size
        return web.json_response(
            {
                "secrets": [_view(account, secret_id, secrets[secret_id][0]) for secret_id in page],
                "nextPageToken": _encode_page_token(page[-1]) if more else "",
                "totalSize": len(secrets),
            }
        )

    async def _update(self, request: web.BaseRequest, account: str, secret_id: str) -> web.Response:
        _check_id(secret_id)
        body = await _read_object(request)
        key_name = _string_field(body, "keyName", "key_name")
        value = _string_field(body, "value")
        if key_name is None:
            raise _ApiError(400, "keyName is required")
        _check_key_name(key_name)
        _, old_value = self._find(account, secret_id)
        self._store[account][secret_id] = (key_name, old_value if value is None else value)
        return web.json_response(_view(account, secret_id, key_name))

    async def _delete(self, request: web.BaseRequest, account: str, secret_id: str) -> web.Response:
        self._find(account, secret_id)
        del self._store[account][secret_id]
        return web.json_response({})

    def _find(self, account: str, secret_id: str) -> tuple[str, str]:
        _check_id(secret_id)
        try:
            return self._store[account][secret_id]
        except KeyError:
            raise _ApiError(404, f"secret {secret_id!r} not found in account {account!r}") from None

    # --- debug routes -----------------------------------------------------------------

    def _debug(self, request: web.BaseRequest) -> web.Response:
        if not _is_loopback(request.remote):
            return _error(403, "emulator debug routes answer loopback clients only")
        if request.method != "GET":
            return _error(405, f"method {request.method} not allowed on {request.path!r}")
        if request.path == "/_emulator/stats":
            return web.json_response(self.stats.as_dict())
        if match := _DEBUG_SECRETS_PATH.fullmatch(request.path):
            secrets = sorted(self.secrets(match[1]).items())
            return web.json_response(
                {secret_id: {"keyName": key, "value": value} for secret_id, (key, value) in secrets}
            )
        return _error(404, f"no route for {request.path!r}")


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Emulator]:
    emulator = Emulator(config)
    await emulator.start(host, port)
    try:
        yield emulator
    finally:
        await emulator.close()


async def serve(
    config: EmulatorConfig, *, host: str, port: int, ready: Callable[[str], None] | None = None
) -> None:
    """Run the emulator until cancelled; call ``ready(base_url)`` once it listens."""
    async with running_emulator(config, host=host, port=port) as emulator:
        if ready is not None:
            ready(emulator.base_url)
        await asyncio.Event().wait()


# --- helpers ------------------------------------------------------------------------------


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    code = _RPC_CODES.get(status, _RPC_UNAVAILABLE)
    body = {"code": code, "message": message, "details": []}
    return web.json_response(body, status=status, headers=headers)


def _view(account: str, secret_id: str, key_name: str) -> dict[str, str]:
    return {"name": f"accounts/{account}/secrets/{secret_id}", "keyName": key_name}


async def _read_object(request: web.BaseRequest) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError:  # also UnicodeDecodeError
        raise _ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "request body must be a JSON object")
    return body


def _string_field(body: Mapping[str, Any], name: str, proto_name: str | None = None) -> str | None:
    """A string field by JSON or proto name; None if absent or null. Never echoes the content."""
    given = [n for n in (name, proto_name) if n is not None and body.get(n) is not None]
    if len(given) > 1:
        raise _ApiError(400, f"field {name!r} is given twice (as {name!r} and {proto_name!r})")
    if not given:
        return None
    content = body[given[0]]
    if not isinstance(content, str):
        raise _ApiError(400, f"field {given[0]!r} must be a string")
    return content


def _id_from_name(name: str, account: str) -> str:
    """The secret id from ``accounts/{a}/secrets/{id}`` or a bare id."""
    if "/" not in name:
        return _check_id(name)
    match = _RESOURCE_NAME.fullmatch(name)
    if match is None:
        raise _ApiError(400, f"name {name!r} must be 'accounts/{account}/secrets/<id>' or an id")
    if match[1] != account:
        raise _ApiError(400, f"name {name!r} is in account {match[1]!r}, not {account!r}")
    return _check_id(match[2])


def _check_id(secret_id: str) -> str:
    if len(secret_id) > MAX_ID_LENGTH:
        raise _ApiError(400, f"secret id {secret_id!r} is longer than {MAX_ID_LENGTH} characters")
    if not _SECRET_ID.fullmatch(secret_id):
        raise _ApiError(
            400, f"secret id {secret_id!r} must start with a-z and contain only a-z, 0-9 and '-'"
        )
    return secret_id


def _check_key_name(key_name: str) -> None:
    if not _KEY_NAME.fullmatch(key_name):
        raise _ApiError(
            400,
            f"keyName {key_name!r} must start with a letter or '_' and contain only "
            "letters, digits and '_'",
        )


def _page_size(raw: str) -> int:
    if raw == "":
        return DEFAULT_PAGE_SIZE
    if not _PAGE_SIZE.fullmatch(raw):
        raise _ApiError(400, f"pageSize must be an integer, got {raw!r}")
    size = int(raw)
    if size < 0:
        raise _ApiError(400, f"pageSize must be >= 0, got {size}")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_page_token(token: str) -> str:
    """The last id of the previous page ("" for the first page)."""
    if not token:
        return ""
    try:
        last_id = base64.b64decode(token, altchars=b"-_", validate=True).decode()
        return _check_id(last_id)
    except (ValueError, _ApiError):
        raise _ApiError(400, "invalid pageToken: pass nextPageToken back unchanged") from None


def _is_loopback(remote: str | None) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
