"""Servers that misbehave, on 127.0.0.1 only, for the tests of what a hostile server can do."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass
class Hostile:
    base_url: str
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, body


@asynccontextmanager
async def hostile_server(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Hostile]:
    """An HTTP server on 127.0.0.1 that answers every request with ``handler``, and records
    what it was sent."""
    record = Hostile("")

    async def recording(request: web.BaseRequest) -> web.StreamResponse:
        body = (await request.read()).decode("utf-8", "replace")
        record.seen.append((request.method, request.path_qs, body))
        return await handler(request)

    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", recording)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    record.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield record
    finally:
        await runner.cleanup()


def json_answer(payload: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(payload), content_type="application/json", headers=headers
    )


def listing(*names: tuple[str, str], token: str = "") -> web.Response:
    """A list call's answer: (name, keyName) pairs and the next page's token."""
    secrets = [{"name": name, "keyName": key_name} for name, key_name in names]
    return json_answer({"secrets": secrets, "nextPageToken": token})


@asynccontextmanager
async def raw_server(answer: Callable[[bytes], bytes]) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that reads one request head and writes ``answer(head)`` as
    it is, however malformed; yields its base URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(answer(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for ``HOST`` and 127.0.0.1, and its key."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


HOST = "secrets.example.test"


def make_certificate(folder: Path) -> Certificate:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={HOST}",
         "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


@asynccontextmanager
async def connect_proxy(target_port: int) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP CONNECT proxy on 127.0.0.1 that tunnels every CONNECT to ``target_port`` on
    127.0.0.1, whatever host was asked for; yields its URL and the CONNECT lines it saw."""
    asked: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode()
        asked.append(line)
        if not line.startswith("CONNECT "):
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        server.close()
        await server.wait_closed()
