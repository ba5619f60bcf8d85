"""The Fireworks secrets API over aiohttp: the only module that knows aiohttp as a client.

Each HTTP outcome and each aiohttp error becomes the most specific error of
:mod:`bulk_secrets.errors`. What a hostile server or network can do is bounded here:

- redirects are never followed (a 3xx is :class:`~bulk_secrets.errors.Redirected`);
- TLS is always verified, against ``ca_bundle`` or ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``
  when given, and a TLS failure is not retried;
- at most ``MAX_ANSWER`` bytes of an answer are read (``MAX_ERROR_ANSWER`` of an error);
- a listing that is not the documented shape is :class:`~bulk_secrets.errors.BadAnswer`, and a
  listed name that is not a valid secret id of the account is marked, never put in a URL;
- every message from a server or from aiohttp is scrubbed of the API keys and of the value
  sent, so an echoing server cannot leak a secret through a report.

Proxies come from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (never for loopback).
"""

from __future__ import annotations

import io
import json
import os
import ssl
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlsplit

import aiohttp

from . import errors
from .models import Credentials, ExistingSecret, SecretSpec, SecretValue
from .naming import secret_id_problem
from .options import is_loopback
from .scrub import Scrubber, scrub

LIST_PAGE_SIZE = 200
MAX_ANSWER = 1 << 20  # bytes of a successful answer read at most
MAX_ERROR_ANSWER = 64 << 10  # bytes of an error answer read at most
_MESSAGE_LIMIT = 300
_RAW_LIMIT = 4096  # of a server's error body, looked at before scrubbing
_SHOWN_ID_LIMIT = 80  # characters of a listed name that is not valid, kept to report it
_VALUE_SCRUBBERS = 4  # scrubbers of values kept for the retries of the requests failing now
_JSON = {"Content-Type": "application/json"}
_LARGE_BODY = 1 << 20

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
        self._timeout = timeout
        self._ssl = _tls_context(ca_bundle) if base_url.startswith("https:") else True
        self._proxy = proxy_for(base_url)
        self._keys = Scrubber(key.reveal() for key in credentials.api_keys())
        self._values: OrderedDict[SecretValue, Scrubber] = OrderedDict()
        self._headers: dict[str, dict[str, str]] = {}
        self._urls: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create(self, spec: SecretSpec) -> int:
        """POST the secret; returns the HTTP status of a success."""
        body = {
            "name": f"accounts/{spec.account}/secrets/{spec.secret_id}",
            "keyName": spec.key_name,
            "value": spec.value.reveal(),
        }
        url = self._secrets_url(spec.account)
        status, _ = await self._send("POST", url, spec.account, body, secret=spec.value)
        return status

    async def update(self, spec: SecretSpec) -> int:
        """PATCH the secret's keyName and value; returns the HTTP status of a success."""
        body = {"keyName": spec.key_name, "value": spec.value.reveal()}
        url = self._secret_url(spec.account, spec.secret_id)
        status, _ = await self._send("PATCH", url, spec.account, body, secret=spec.value)
        return status

    async def delete(self, account: str, secret_id: str) -> int:
        status, _ = await self._send("DELETE", self._secret_url(account, secret_id), account)
        return status

    async def list_page(
        self, account: str, page_token: str = ""
    ) -> tuple[list[ExistingSecret], str]:
        """One page of the account's secrets and the token of the next page ("" at the end)."""
        url = f"{self._secrets_url(account)}?pageSize={LIST_PAGE_SIZE}"
        if page_token:
            url += f"&pageToken={quote(page_token, safe='')}"
        _, raw = await self._send("GET", url, account)
        return _listing(raw, account)

    def _secrets_url(self, account: str) -> str:
        url = self._urls.get(account)
        if url is None:
            url = f"{self._base_url}/v1/accounts/{quote(account, safe='')}/secrets"
            self._urls[account] = url
        return url

    def _secret_url(self, account: str, secret_id: str) -> str:
        return f"{self._secrets_url(account)}/{quote(secret_id, safe='')}"

    def _headers_for(self, account: str) -> dict[str, str]:
        headers = self._headers.get(account)
        if headers is None:
            key = self._credentials.for_account(account)
            if key is None:
                raise errors.Unauthenticated(f"no API key for account {account!r}")
            headers = {**_JSON, "Authorization": f"Bearer {key.reveal()}"}
            self._headers[account] = headers
        return headers

    async def _send(
        self,
        method: str,
        url: str,
        account: str,
        body: Mapping[str, Any] | None = None,
        *,
        secret: SecretValue | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return the status and body of a success, else raise."""
        if self._session is None:
            raise RuntimeError("SecretsClient is used outside its 'async with' block")
        encoded = None if body is None else json.dumps(body).encode()
        data: bytes | io.BytesIO | None = encoded
        if encoded is not None and len(encoded) > _LARGE_BODY:
            data = io.BytesIO(encoded)  # in chunks: aiohttp warns of a large body in one piece
        headers = self._headers_for(account)
        self.requests_sent += 1
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy,
            ) as resp:
                status = resp.status
                ok = 200 <= status < 300
                raw = await _read(resp, MAX_ANSWER if ok else MAX_ERROR_ANSWER)
        except TimeoutError as exc:
            raise errors.RequestTimeout(
                f"{method} got no answer within {self._timeout:g}s"
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise errors.ApiError(f"invalid URL for account {account!r}") from exc
        except aiohttp.ClientSSLError as exc:
            raise errors.TlsFailed(
                f"TLS failed, not retried: {self._scrubbed(str(exc), secret)}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise errors.ConnectionFailed(
                f"{method} failed: {type(exc).__name__}: {self._scrubbed(str(exc), secret)}"
            ) from exc
        if ok:
            if raw is None:
                raise errors.BadAnswer(f"the answer was over {MAX_ANSWER} bytes", status=status)
            return status, raw
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


async def _read(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (an error's is cut at the limit)."""
    length = resp.content_length
    if length is not None and length > limit and 200 <= resp.status < 300:
        return None
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await resp.content.read(limit + 1 - size)
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
