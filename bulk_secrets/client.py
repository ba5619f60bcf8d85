"""The Fireworks secrets API over aiohttp: the only module that knows aiohttp as a client.

Each HTTP outcome and each aiohttp error becomes the most specific error of
:mod:`bulk_secrets.errors`. Server messages are scrubbed of the value that was sent before they
reach an error, so an echoing server cannot leak a secret through a report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from . import errors
from .models import MASK, Credentials, ExistingSecret, SecretSpec

LIST_PAGE_SIZE = 200
_MESSAGE_LIMIT = 300
_RAW_LIMIT = 4096  # of a server's error body, read before scrubbing
_QUOTE_WINDOW = 6
_JSON = {"Content-Type": "application/json"}

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
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._connections = connections
        self._timeout = timeout
        self._headers: dict[str, dict[str, str]] = {}
        self._urls: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0)
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
        status, _ = await self._send("POST", url, spec.account, body, secret=spec.value.reveal())
        return status

    async def update(self, spec: SecretSpec) -> int:
        """PATCH the secret's keyName and value; returns the HTTP status of a success."""
        body = {"keyName": spec.key_name, "value": spec.value.reveal()}
        url = self._secret_url(spec.account, spec.secret_id)
        status, _ = await self._send("PATCH", url, spec.account, body, secret=spec.value.reveal())
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
        payload = _json_object(raw)
        page = [
            ExistingSecret(_id_of(item.get("name", "")), str(item.get("keyName", "")))
            for item in payload.get("secrets") or []
            if isinstance(item, dict)
        ]
        return page, str(payload.get("nextPageToken") or "")

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
        secret: str | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return the status and body of a success, else raise."""
        if self._session is None:
            raise RuntimeError("SecretsClient is used outside its 'async with' block")
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers_for(account)
        self.requests_sent += 1
        try:
            async with self._session.request(method, url, data=data, headers=headers) as resp:
                raw = await resp.read()
        except TimeoutError as exc:
            raise errors.RequestTimeout(
                f"{method} got no answer within {self._timeout:g}s"
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise errors.ApiError(f"invalid URL {url!r}") from exc
        except aiohttp.ClientError as exc:
            raise errors.ConnectionFailed(
                f"{method} failed: {type(exc).__name__}: {_scrub(str(exc), secret)}"
            ) from exc
        status = resp.status
        if 200 <= status < 300:
            return status, raw
        retry_after = resp.headers.get("Retry-After")
        raise _error_for(status, _server_message(raw, secret), retry_after)


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


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _server_message(raw: bytes, secret: str | None) -> str:
    """The server's words from either error shape, else its raw text, scrubbed and cut short."""
    payload = _json_object(raw)
    message: object = payload.get("message")
    nested = payload.get("error")
    if not message and isinstance(nested, dict):
        message = nested.get("message")
    if not isinstance(message, str) or not message:
        message = raw.decode("utf-8", "replace").strip() or "(empty body)"
    message = _scrub(message[:_RAW_LIMIT], secret)
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "..."
    return message


def _scrub(text: str, secret: str | None) -> str:
    """Mask every run of the text that quotes the value, raw or JSON-escaped, even in part.

    A run counts when it shares ``_QUOTE_WINDOW`` characters in a row with the value (or all of
    a shorter value). This masks too much rather than too little.
    """
    if not secret:
        return text
    covered = bytearray(len(text))
    for form in {secret, json.dumps(secret)[1:-1]}:
        if len(form) < _QUOTE_WINDOW:
            start = text.find(form)
            while start != -1:
                covered[start : start + len(form)] = b"\x01" * len(form)
                start = text.find(form, start + 1)
            continue
        for i in range(len(text) - _QUOTE_WINDOW + 1):
            if text[i : i + _QUOTE_WINDOW] in form:
                covered[i : i + _QUOTE_WINDOW] = b"\x01" * _QUOTE_WINDOW
    if not any(covered):
        return text
    pieces: list[str] = []
    for i, char in enumerate(text):
        if not covered[i]:
            pieces.append(char)
        elif i == 0 or not covered[i - 1]:
            pieces.append(MASK)
    return "".join(pieces)


def _id_of(name: object) -> str:
    return str(name).rsplit("/", 1)[-1]
