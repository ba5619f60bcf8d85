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

This module is the public entry and the HTTP side: :class:`Emulator` on a real socket,
:func:`running_emulator`, :func:`serve`, authentication, routes and :class:`Stats`. The
secrets and the API's rules live in :mod:`.store` (which raises :class:`~.store.ErrorReply`
for an error answer); the fault knobs (:class:`Faults`: latency, rate limit, errors, dropped
connections, decided after authentication and repeatable with ``seed``) in :mod:`.faults`.
Latency and the rate limit keep time with the :class:`~bulk_secrets.clock.Clock` given to
:class:`Emulator` (the system clock unless a test passes a virtual one).

:attr:`Emulator.stats` counts requests by (method, status) (status 0 = dropped), TCP
connections and requests in flight. Two loopback-only debug routes need no key and see no
faults: ``GET /_emulator/stats`` and ``GET /_emulator/accounts/{a}/secrets`` (with values).
"""

import asyncio  # only for the types aiohttp hands to connection_made and request_factory
import contextlib
import ipaddress
import re
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from ..clock import SYSTEM_CLOCK, Clock
from .faults import DROP, FaultInjector, Faults
from .store import (
    DEFAULT_PAGE_SIZE,
    MAX_ID_LENGTH,
    MAX_PAGE_SIZE,
    WRITE_METHODS,
    ErrorReply,
    Store,
    check_id,
    create_secret,
    delete_secret,
    error_body,
    get_secret,
    list_secrets,
    parse_object,
    update_secret,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_ID_LENGTH",
    "MAX_PAGE_SIZE",
    "SHUTDOWN_TIMEOUT",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "Stats",
    "running_emulator",
    "serve",
]

MAX_BODY = 8 << 20  # bytes of a request body: a value of 1 MiB, however it is escaped
SHUTDOWN_TIMEOUT = 0.5  # seconds close() waits for handlers still running, then cancels them
# Connections the kernel holds for the emulator to accept (Linux caps it at net.core.somaxconn,
# 4,096 by default). aiohttp's own, 128, overflows when a client opens 1,024 connections at
# once: each connection dropped waits a second or more for its SYN to be sent again, and runs
# at c=1,024 took 7 to 34 s for what took 4 s.
BACKLOG = 4096

_COLLECTION_PATH = re.compile(r"/v1/accounts/([^/]+)/secrets")
_ITEM_PATH = re.compile(r"/v1/accounts/([^/]+)/secrets/([^/]+)")
_DEBUG_SECRETS_PATH = re.compile(r"/_emulator/accounts/([^/]+)/secrets")


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
        return sum(self.count(method=method) for method in WRITE_METHODS)

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


class _CountingServer(web.Server):
    """aiohttp's low-level server, counting each accepted TCP connection once."""

    def __init__(
        self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], stats: Stats
    ) -> None:
        super().__init__(handler, access_log=None, request_factory=self._request)
        self._stats = stats

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        """A request whose body may hold the largest value a client sends, JSON-escaped."""
        return web.BaseRequest(
            message, payload, protocol, writer, task, self._loop, client_max_size=MAX_BODY
        )

    # aiohttp's signature: the transport is an asyncio one whatever runs the loop.
    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._stats.connections += 1
        super().connection_made(handler, transport)


_Operation = Callable[[web.BaseRequest, str, str], Awaitable[web.Response]]


class Emulator:
    """The emulated API on a real socket: ``start()`` then ``close()``, or ``async with``.

    ``clock`` paces latency and the rate limit; pass a virtual one to run them without waiting.
    """

    def __init__(self, config: EmulatorConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self.stats = Stats()
        self._waiters: list[tuple[Callable[[Stats], bool], anyio.Event]] = []
        self.base_url = ""
        self._faults = FaultInjector(config.faults, clock=clock)
        self._store: Store = {}  # account -> id -> (key, value)
        self._runner: web.ServerRunner | None = None

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None
    ) -> str:
        """Listen on ``host:port`` (0: a free port), over TLS when given a server context."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.ServerRunner(
            _CountingServer(self._handle, self.stats), shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=tls, backlog=BACKLOG).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host  # IPv6 in brackets
        scheme = "http" if tls is None else "https"
        self.base_url = f"{scheme}://{url_host}:{bound_port}"
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
        waiter = (ready, anyio.Event())
        self._waiters.append(waiter)
        try:
            await waiter[1].wait()
        finally:
            self._waiters.remove(waiter)

    def _wake_waiters(self) -> None:
        for ready, event in self._waiters:
            if not event.is_set() and ready(self.stats):
                event.set()

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
                raise ErrorReply(403, f"this API key may not access account {account!r}")
            self._faults.take_token(account)
            await self._faults.delay(request.method)
            fault = self._faults.before_handling()
            if fault == DROP:
                return None
            if fault is not None:
                return _error(fault, "emulated server error (no change applied)")
            response = await operation(request, account, secret_id)
        except ErrorReply as exc:
            return _error(exc.status, exc.message, exc.headers)
        fault = self._faults.after_handling(request.method)
        if fault == DROP:
            return None
        if fault is not None:
            return _error(fault, "emulated server error after the change was applied")
        return response

    def _authenticate(self, request: web.BaseRequest) -> frozenset[str] | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ErrorReply(401, "missing API key: send 'Authorization: Bearer <API_KEY>'")
        if key not in self.config.keys:
            raise ErrorReply(401, "invalid API key")
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
            raise ErrorReply(404, f"no route for {request.path!r}")
        if request.method not in operations:
            raise ErrorReply(405, f"method {request.method} not allowed on {request.path!r}")
        return operations[request.method], account, secret_id

    # --- the five calls, from HTTP to the store ----------------------------------------

    async def _create(self, request: web.BaseRequest, account: str, _: str) -> web.Response:
        body = parse_object(await request.read())
        return web.json_response(create_secret(self._store, account, body))

    async def _get(self, request: web.BaseRequest, account: str, secret_id: str) -> web.Response:
        return web.json_response(get_secret(self._store, account, secret_id))

    async def _list(self, request: web.BaseRequest, account: str, _: str) -> web.Response:
        page_size = request.query.get("pageSize", "")
        page_token = request.query.get("pageToken", "")
        return web.json_response(list_secrets(self._store, account, page_size, page_token))

    async def _update(self, request: web.BaseRequest, account: str, secret_id: str) -> web.Response:
        check_id(secret_id)  # a bad id is answered before the body is read
        body = parse_object(await request.read())
        return web.json_response(update_secret(self._store, account, secret_id, body))

    async def _delete(self, request: web.BaseRequest, account: str, secret_id: str) -> web.Response:
        return web.json_response(delete_secret(self._store, account, secret_id))

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
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = SYSTEM_CLOCK,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Emulator]:
    """A started :class:`Emulator`, closed on the way out."""
    emulator = Emulator(config, clock=clock)
    await emulator.start(host, port, tls=tls)
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
        await anyio.sleep_forever()


# --- helpers ------------------------------------------------------------------------------


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


def _is_loopback(remote: str | None) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
