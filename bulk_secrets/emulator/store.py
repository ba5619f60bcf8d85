"""The emulator's secrets and the API's rules, with no HTTP in sight (stdlib only).

- :data:`Store`: account -> secret id -> (keyName, value), in memory and in plain text;
- the five calls as functions on a :data:`Store`: each takes what the request carried (a parsed
  JSON object, raw query strings) and returns the JSON body to answer, or raises
  :class:`ErrorReply`;
- the checks they make: secret ids and keyNames, resource names, JSON and proto field names
  (``null`` counts as absent, unknown fields are ignored), ``pageSize`` and page tokens;
- page tokens: standard base64 (``+``, ``/`` and ``=`` padding) of a fixed prefix and the last
  id of the page, so that every token needs URL quoting, as a real opaque token may; decoding
  is strict (alphabet, padding, canonical form, prefix, id) and anything else is a 400;
- the gRPC-gateway error body, ``{"code": <google.rpc.Code>, "message": ..., "details": []}``.

Error messages may name ids and keyNames, never a secret value.
"""

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_ID_LENGTH = 63
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})  # the HTTP methods that change a Store

Store = dict[str, dict[str, tuple[str, str]]]  # account -> id -> (keyName, value)

_SECRET_ID = re.compile(r"[a-z][a-z0-9-]*")
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESOURCE_NAME = re.compile(r"accounts/([^/]+)/secrets/([^/]+)")
_PAGE_SIZE = re.compile(r"-?[0-9]+")
# HTTP status -> google.rpc.Code, as grpc-gateway maps them.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 429: 8, 500: 13}
_RPC_UNAVAILABLE = 14  # 502, 503, 504


class ErrorReply(Exception):
    """An error answer, raised anywhere below the request handler, which sends it.

    Not :class:`bulk_secrets.errors.ApiError`, the client's view of such an answer.
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON body of an error answer with this HTTP status."""
    code = _RPC_CODES.get(status, _RPC_UNAVAILABLE)
    return {"code": code, "message": message, "details": []}


# --- the five calls -----------------------------------------------------------------------


def create_secret(store: Store, account: str, body: Mapping[str, Any]) -> dict[str, str]:
    name = _string_field(body, "name")
    key_name = _string_field(body, "keyName", "key_name")
    value = _string_field(body, "value") or ""
    if name is None:
        raise ErrorReply(400, "name is required")
    if key_name is None:
        raise ErrorReply(400, "keyName is required")
    secret_id = _id_from_name(name, account)
    _check_key_name(key_name)
    secrets = store.setdefault(account, {})
    if secret_id in secrets:
        raise ErrorReply(409, f"secret {secret_id!r} already exists in account {account!r}")
    secrets[secret_id] = (key_name, value)
    return _view(account, secret_id, key_name)


def get_secret(store: Store, account: str, secret_id: str) -> dict[str, str]:
    key_name, _ = _find(store, account, secret_id)
    return _view(account, secret_id, key_name)


def list_secrets(store: Store, account: str, page_size: str, page_token: str) -> dict[str, Any]:
    """One page, sorted by id; ``page_size`` and ``page_token`` as the query gave them."""
    size = _page_size(page_size)
    after = _decode_page_token(page_token)
    secrets = store.get(account, {})
    following = sorted(secret_id for secret_id in secrets if secret_id > after)
    page = following[:size]
    more = len(following) > size
    return {
        "secrets": [_view(account, secret_id, secrets[secret_id][0]) for secret_id in page],
        "nextPageToken": _encode_page_token(page[-1]) if more else "",
        "totalSize": len(secrets),
    }


def update_secret(
    store: Store, account: str, secret_id: str, body: Mapping[str, Any]
) -> dict[str, str]:
    """Callers check the id with :func:`check_id` before reading the body."""
    key_name = _string_field(body, "keyName", "key_name")
    value = _string_field(body, "value")
    if key_name is None:
        raise ErrorReply(400, "keyName is required")
    _check_key_name(key_name)
    _, old_value = _find(store, account, secret_id)
    store[account][secret_id] = (key_name, old_value if value is None else value)
    return _view(account, secret_id, key_name)


def delete_secret(store: Store, account: str, secret_id: str) -> dict[str, str]:
    _find(store, account, secret_id)
    del store[account][secret_id]
    return {}


# --- checks -------------------------------------------------------------------------------


def parse_object(raw: bytes) -> dict[str, Any]:
    """A request body, which must be a JSON object."""
    try:
        body = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        raise ErrorReply(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ErrorReply(400, "request body must be a JSON object")
    return body


def check_id(secret_id: str) -> str:
    if len(secret_id) > MAX_ID_LENGTH:
        raise ErrorReply(400, f"secret id {secret_id!r} is longer than {MAX_ID_LENGTH} characters")
    if not _SECRET_ID.fullmatch(secret_id):
        raise ErrorReply(
            400, f"secret id {secret_id!r} must start with a-z and contain only a-z, 0-9 and '-'"
        )
    return secret_id


def _find(store: Store, account: str, secret_id: str) -> tuple[str, str]:
    check_id(secret_id)
    try:
        return store[account][secret_id]
    except KeyError:
        raise ErrorReply(404, f"secret {secret_id!r} not found in account {account!r}") from None


def _view(account: str, secret_id: str, key_name: str) -> dict[str, str]:
    return {"name": f"accounts/{account}/secrets/{secret_id}", "keyName": key_name}


def _string_field(body: Mapping[str, Any], name: str, proto_name: str | None = None) -> str | None:
    """A string field by JSON or proto name; None if absent or null. Never echoes the content."""
    given = [n for n in (name, proto_name) if n is not None and body.get(n) is not None]
    if len(given) > 1:
        raise ErrorReply(400, f"field {name!r} is given twice (as {name!r} and {proto_name!r})")
    if not given:
        return None
    content = body[given[0]]
    if not isinstance(content, str):
        raise ErrorReply(400, f"field {given[0]!r} must be a string")
    return content


def _id_from_name(name: str, account: str) -> str:
    """The secret id from ``accounts/{a}/secrets/{id}`` or a bare id."""
    if "/" not in name:
        return check_id(name)
    match = _RESOURCE_NAME.fullmatch(name)
    if match is None:
        raise ErrorReply(400, f"name {name!r} must be 'accounts/{account}/secrets/<id>' or an id")
    if match[1] != account:
        raise ErrorReply(400, f"name {name!r} is in account {match[1]!r}, not {account!r}")
    return check_id(match[2])


def _check_key_name(key_name: str) -> None:
    if not _KEY_NAME.fullmatch(key_name):
        raise ErrorReply(
            400,
            f"keyName {key_name!r} must start with a letter or '_' and contain only "
            "letters, digits and '_'",
        )


def _page_size(raw: str) -> int:
    if raw == "":
        return DEFAULT_PAGE_SIZE
    if not _PAGE_SIZE.fullmatch(raw):
        raise ErrorReply(400, f"pageSize must be an integer, got {raw!r}")
    size = int(raw)
    if size < 0:
        raise ErrorReply(400, f"pageSize must be >= 0, got {size}")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# Standard base64 of 6 bytes is 8 characters of its own, and these 6 encode as "YWZ0ZXI+": every
# token has a '+' (and '=' padding when the id's length is not a multiple of 3).
_PAGE_TOKEN_PREFIX = b"after>"


def _encode_page_token(last_id: str) -> str:
    return base64.b64encode(_PAGE_TOKEN_PREFIX + last_id.encode()).decode()


def _decode_page_token(token: str) -> str:
    """The last id of the previous page ("" for the first page)."""
    if not token:
        return ""
    try:
        raw = base64.b64decode(token, validate=True)
        if base64.b64encode(raw).decode() != token:  # e.g. stray bits in the last character
            raise ValueError("not canonical base64")
        if not raw.startswith(_PAGE_TOKEN_PREFIX):
            raise ValueError("not a page token")
        return check_id(raw[len(_PAGE_TOKEN_PREFIX) :].decode("ascii"))
    except (ValueError, ErrorReply):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ErrorReply(400, "invalid pageToken: pass nextPageToken back unchanged") from None
