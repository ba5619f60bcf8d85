"""The Fireworks secrets API over aiohttp: the only module that knows aiohttp as a client.

Each HTTP outcome and each aiohttp error becomes the most specific error of
:mod:`bulk_secrets.errors`. What a hostile server or network can do is bounded here:

- redirects are never followed (a 3xx is :class:`~bulk_secrets.errors.Redirected`);
- TLS is always verified, against ``ca_bundle`` or ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``
  when given, and a TLS failure is not retried;
- at most ``MAX_ANSWER`` bytes of an answer are read (``MAX_ERROR_ANSWER`` of an error), and a
  request with no answer within ``timeout`` seconds fails (:mod:`bulk_secrets.watchdog`);
- a listing that is not the documented shape is :class:`~bulk_secrets.errors.BadAnswer`, and a
  listed name that is not a valid secret id of the account is marked, never put in a URL;
- every message from a server or from aiohttp is scrubbed of the API keys and of the value
  sent, so an echoing server cannot leak a secret through a report.

Proxies come from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (never for loopback).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import ssl
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from . import errors
from .models import Credentials, ExistingSecret, SecretSpec, SecretValue
from .naming import secret_id_problem
from .options import is_loopback
from .scrub import Scrubber, scrub
from .watchdog import Watchdog

LIST_PAGE_SIZE = 200
MAX_ANSWER = 1 << 20  # bytes of a successful answer read at most
MAX_ERROR_ANSWER = 64 << 10  # bytes of an error answer read at most
_MESSAGE_LIMIT = 300
_RAW_LIMIT = 4096  # of a server's error body, looked at before scrubbing
_SHOWN_ID_LIMIT = 80  # characters of a listed name that is not valid, kept to report it
_VALUE_SCRUBBERS = 4  # scrubbers of values kept for the retries of the requests failing now
_JSON = {"Content-Type": "application/json"}
_LARGE_BODY = 1 << 20
_ACCOUNTS_KEPT = 4096  # accounts whose URL, body start and headers are kept; then kept anew
# The C encoder ``json.dumps`` uses for a string (``ensure_ascii``): bodies are built from its
# pieces, byte for byte what ``json.dumps`` of the body's dict gives, for a third of the work.
_quoted = json.encoder.encode_basestring_ascii

_REJECTIONS: Mapping[int, type[errors.RequestRejected]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.AlreadyExists,
}
_RETRIED = frozenset({408, 500, 502, 503, 504})


class SecretsClient:
    """One keep-alive aiohttp session for a whole run, shared by every request.

    Use it as an async context manager. ``connections`` bounds the TCP connections it opens.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        connections: int,
        timeout: float,
        ca_bundle: str | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._connections = connections
        self._watchdog = Watchdog(timeout)
        self._ssl = _tls_context(ca_bundle) if base_url.startswith("https:") else True
        self._proxy = proxy_for(base_url)
        self._keys = Scrubber(key.reveal() for key in credentials.api_keys())
        self._values: OrderedDict[SecretValue, Scrubber] = OrderedDict()
        self._accounts: dict[str, _Account] = {}
        self._base: URL | None = None  # the base URL, parsed on first use
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0, ssl=self._ssl)
        default = self._credentials.default
        headers = dict(_JSON)
        if default is not None:  # set once, not merged into every request's headers
            headers["Authorization"] = f"Bearer {default.reveal()}"
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            # No timer per request: the watchdog keeps every request's deadline.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
            raise_for_status=False,
        )
        self._watchdog.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._watchdog.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # create, update and delete are not ``async`` themselves: each hands back the coroutine of
    # its request, to await as theirs, so that the request's every wait has one frame fewer to
    # pass through.

    def create(self, spec: SecretSpec) -> Coroutine[Any, Any, int]:
        """POST the secret; awaited, the HTTP status of a success."""
        parts = self._accounts.get(spec.account) or self._parts(spec.account)  # no call: usual
        body = create_body(parts.body_start, spec.secret_id, spec.key_name, spec.value.reveal())
        return self._send("POST", parts.parsed, parts, body, secret=spec.value)

    def update(self, spec: SecretSpec) -> Coroutine[Any, Any, int]:
        """PATCH the secret's keyName and value; awaited, the HTTP status of a success."""
        body = update_body(spec.key_name, spec.value.reveal())
        parts = self._parts(spec.account)
        return self._send("PATCH", parts.of_secret(spec.secret_id), parts, body, secret=spec.value)

    def delete(self, account: str, secret_id: str) -> Coroutine[Any, Any, int]:
        """DELETE the secret; awaited, the HTTP status of a success."""
        parts = self._parts(account)
        return self._send("DELETE", parts.of_secret(secret_id), parts)

    async def list_page(
        self, account: str, page_token: str = ""
    ) -> tuple[list[ExistingSecret], str]:
        """One page of the account's secrets and the token of the next page ("" at the end)."""
        parts = self._parts(account)
        query = {"pageSize": str(LIST_PAGE_SIZE)}
        if page_token:
            query["pageToken"] = page_token
        answer: list[bytes] = []
        await self._send("GET", parts.parsed.with_query(query), parts, answer=answer)
        return _listing(answer[0], account)

    def _parts(self, account: str) -> _Account:
        """What every request to ``account`` shares, worked out once (for the last
        ``_ACCOUNTS_KEPT`` accounts met: a run over more starts again, and memory stays flat)."""
        parts = self._accounts.get(account)
        if parts is None:
            key = self._credentials.for_account(account)
            if key is None:
                raise errors.Unauthenticated(f"no API key for account {account!r}")
            headers = None  # the default key's are the session's
            if key is not self._credentials.default:
                headers = {**_JSON, "Authorization": f"Bearer {key.reveal()}"}
            if len(self._accounts) >= _ACCOUNTS_KEPT:
                self._accounts.clear()
            try:
                if self._base is None:
                    self._base = URL(self._base_url)
                parts = _Account(self._base, account, headers)
            except ValueError as exc:
                raise errors.ApiError(f"invalid URL for account {account!r}") from exc
            self._accounts[account] = parts
        return parts

    async def _send(
        self,
        method: str,
        url: URL,
        parts: _Account,
        body: bytes | None = None,
        *,
        secret: SecretValue | None = None,
        answer: list[bytes] | None = None,
    ) -> int:
        """Send one request with its JSON ``body``; return the status of a success (and add
        its body to ``answer``, if given), else raise."""
        if self._session is None:
            raise RuntimeError("SecretsClient is used outside its 'async with' block")
        data: bytes | io.BytesIO | None = body
        if body is not None and len(body) > _LARGE_BODY:
            data = io.BytesIO(body)  # in chunks: aiohttp warns of a large body in one piece
        self.requests_sent += 1
        watchdog = self._watchdog
        task = watchdog.begin()
        try:
            # Awaited, not ``async with``: the context manager would add coroutines to every
            # request, and a frame to every wait; ``release`` is what its exit does.
            resp = await self._session.request(
                method,
                url,
                data=data,
                headers=parts.headers,
                allow_redirects=False,
                proxy=self._proxy,
            )
            try:
                status = resp.status
                ok = 200 <= status < 300
                limit = MAX_ANSWER if ok else MAX_ERROR_ANSWER
                # At most ``limit + 1`` bytes, whatever Content-Length says (aiohttp parses
                # that header again at every look). Nearly always all of it comes at once.
                content = resp.content
                body = await content.read(limit + 1)
                raw = (
                    body
                    if len(body) <= limit and content.at_eof()
                    else await _read_rest(resp, body, limit)
                )
            finally:
                resp.release()
        except asyncio.CancelledError:
            if watchdog.expired(task):
                raise errors.RequestTimeout(
                    f"{method} got no answer within {watchdog.limit:g}s"
                ) from None
            raise
        except aiohttp.InvalidURL as exc:
            raise errors.ApiError(f"invalid URL for account {parts.account!r}") from exc
        except aiohttp.ClientSSLError as exc:
            raise errors.TlsFailed(
                f"TLS failed, not retried: {self._scrubbed(str(exc), secret)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise errors.ConnectionFailed(
                f"{method} failed: {type(exc).__name__}: {self._scrubbed(str(exc), secret)}"
            ) from exc
        finally:
            watchdog.end(task)
        if ok:
            if raw is None:
                raise errors.BadAnswer(f"the answer was over {MAX_ANSWER} bytes", status=status)
            if answer is not None:
                answer.append(raw)
            return status
        if 300 <= status < 400:
            where = urlsplit(resp.headers.get("Location", "")).netloc or "elsewhere"
            where = self._scrubbed(where[:_SHOWN_ID_LIMIT], secret)
            raise errors.Redirected(f"redirected to {where}; not followed", status=status)
        message = self._scrubbed(_server_message(raw or b""), secret)
        if len(message) > _MESSAGE_LIMIT:
            message = message[:_MESSAGE_LIMIT] + "..."
        raise _error_for(status, message, resp.headers.get("Retry-After"))

    def _scrubbed(self, text: str, secret: SecretValue | None) -> str:
        """The text without the API keys, nor the value sent."""
        if secret is None:
            return scrub(text, self._keys)
        scrubber = self._values.get(secret)
        if scrubber is None:
            scrubber = self._values[secret] = Scrubber([secret.reveal()])
            while len(self._values) > _VALUE_SCRUBBERS:
                self._values.popitem(last=False)
        else:
            self._values.move_to_end(secret)
        return scrub(text, self._keys, scrubber)


class _Account:
    """What the requests to one account share: its secrets URL, parsed (aiohttp takes a
    parsed URL without parsing it again), the start of a create's body, and its own headers
    (None: the default key's, which the session sends).

    The URLs are made from the parsed base URL, never parsed from text: a path put in place
    already encoded costs a seventh of a parse (a listing's query, a third)."""

    __slots__ = ("account", "body_start", "headers", "parsed")

    def __init__(self, base: URL, account: str, headers: dict[str, str] | None) -> None:
        self.account = account
        path = f"{base.raw_path.rstrip('/')}/v1/accounts/{quote(account, safe='')}/secrets"
        self.parsed = base.with_path(path, encoded=True)
        self.body_start = create_body_start(account)
        self.headers = headers

    def of_secret(self, secret_id: str) -> URL:
        """The URL of one of the account's secrets."""
        path = f"{self.parsed.raw_path}/{quote(secret_id, safe='')}"
        return self.parsed.with_path(path, encoded=True)


def create_body_start(account: str) -> str:
    """What every create's body for ``account`` starts with: see :func:`create_body`."""
    return '{"name": ' + _quoted(f"accounts/{account}/secrets/")[:-1]


def create_body(start: str, secret_id: str, key_name: str, value: str) -> bytes:
    """``json.dumps({"name": f"accounts/{account}/secrets/{secret_id}", "keyName": key_name,
    "value": value}).encode()``, byte for byte, from ``start = create_body_start(account)``.
    (A string's encoding is that of its characters one by one, so the name's can be split.)"""
    return (
        f'{start}{_quoted(secret_id)[1:]}, "keyName": {_quoted(key_name)}, '
        f'"value": {_quoted(value)}}}'
    ).encode()


def update_body(key_name: str, value: str) -> bytes:
    """``json.dumps({"keyName": key_name, "value": value}).encode()``, byte for byte."""
    return f'{{"keyName": {_quoted(key_name)}, "value": {_quoted(value)}}}'.encode()


async def _read_rest(resp: aiohttp.ClientResponse, chunk: bytes, limit: int) -> bytes | None:
    """The body that began with ``chunk``, or None when it is longer than ``limit`` (an
    error's is cut at the limit); no more than ``limit + 1`` bytes are read."""
    content = resp.content
    chunks = [chunk]
    size = len(chunk)
    while size <= limit:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    if 200 <= resp.status < 300:
        return None
    return b"".join(chunks)[:limit]


def _error_for(status: int, message: str, retry_after: str | None) -> errors.ApiError:
    if status == 429:
        return errors.RateLimited(message, retry_after=parse_retry_after(retry_after))
    if status in _RETRIED:
        return errors.ServerError(message, status=status)
    rejection = _REJECTIONS.get(status)
    if rejection is not None:
        return rejection(message, status=status)
    if status >= 500:
        return errors.ServerError(message, status=status)
    return errors.RequestRejected(message, status=status)


def parse_retry_after(header: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date."""
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _server_message(raw: bytes) -> str:
    """The server's words from either error shape, else its raw text, cut short."""
    payload = _json_object(raw) or {}
    message: object = payload.get("message")
    nested = payload.get("error")
    if not message and isinstance(nested, dict):
        message = nested.get("message")
    if not isinstance(message, str) or not message:
        message = raw[:_RAW_LIMIT].decode("utf-8", "replace").strip() or "(empty body)"
    return message[:_RAW_LIMIT]


def _listing(raw: bytes, account: str) -> tuple[list[ExistingSecret], str]:
    """A page of the list call, checked against the documented shape."""
    payload = _json_object(raw)
    if payload is None:
        raise errors.BadAnswer("the listing is not a JSON object")
    items = payload.get("secrets")
    token = payload.get("nextPageToken")
    if items is None:
        items = []
    if not isinstance(items, list) or not (token is None or isinstance(token, str)):
        raise errors.BadAnswer("the listing is not of the documented shape")
    page: list[ExistingSecret] = []
    prefix = f"accounts/{account}/secrets/"
    for item in items:
        if not isinstance(item, dict):
            raise errors.BadAnswer("the listing holds an entry that is not an object")
        name, key_name = item.get("name"), item.get("keyName", item.get("key_name", ""))
        if not isinstance(name, str) or not isinstance(key_name, str):
            raise errors.BadAnswer("the listing holds an entry without a name or keyName")
        secret_id = name.removeprefix(prefix)
        valid = name.startswith(prefix) and secret_id_problem(secret_id) is None
        shown = secret_id if valid else name[:_SHOWN_ID_LIMIT]
        page.append(ExistingSecret(shown, key_name[: _SHOWN_ID_LIMIT * 4], valid))
    return page, token or ""


def proxy_for(base_url: str) -> str | None:
    """The proxy ``HTTPS_PROXY`` / ``HTTP_PROXY`` name for the base URL, unless ``NO_PROXY``
    spares its host; never one for loopback, which a proxy cannot reach."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if not host or is_loopback(host):
        return None
    proxies = urllib.request.getproxies_environment()
    if urllib.request.proxy_bypass(host):
        return None
    return proxies.get(parts.scheme)


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification always on: against ``ca_bundle``, else ``SSL_CERT_FILE`` or
    ``REQUESTS_CA_BUNDLE``, else the system's certificates."""
    bundle = ca_bundle or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise errors.UsageError(f"CA bundle {bundle}: cannot use it: {exc}") from exc
