"""An independent Fireworks secrets API, written from the published contract alone.

It shares no code with ``bulk_secrets.emulator``. Every request is checked against
``secrets-openapi.yaml`` (a verbatim copy of the published document) with openapi-core before it
is served, and every response before it is sent; each outcome lands in
:attr:`ContractServer.validations`. Serving is minimal and follows API.md: one in-memory store
per account, errors as ``{"code", "message", "details"}``.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from aiohttp import web
from aiohttp.typedefs import Handler
from openapi_core import OpenAPI
from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebRequest, AIOHTTPOpenAPIWebResponse
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.validation.request.exceptions import SecurityValidationError
from openapi_core.validation.schemas import oas31_schema_validators_factory

SPEC_PATH = Path(__file__).with_name("secrets-openapi.yaml")
_DOCUMENT = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
CONTRACT = OpenAPI.from_dict(_DOCUMENT)
# The spec documents no error responses, only its error model: error bodies are checked with it.
_ERROR_SCHEMA = oas31_schema_validators_factory.create(
    CONTRACT.spec, CONTRACT.spec / "components" / "schemas" / "googlerpcStatus"
)
_RPC_CODES = {400: 3, 401: 16, 404: 5, 409: 6}
_SECRET_NAME = re.compile(r"accounts/(?P<account>[^/]+)/secrets/(?P<id>[a-z][a-z0-9-]{0,62})")
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 200


class ContractRequest(AIOHTTPOpenAPIWebRequest):
    """A request as if sent to the contract's own server URL, so that its absolute ``servers``
    entry matches; method, path, parameters, security and body are checked as sent."""

    __slots__ = ()

    @property
    def host_url(self) -> str:
        return str(_DOCUMENT["servers"][0]["url"])


@dataclass(frozen=True, slots=True)
class Validation:
    """One contract check: of a request as received, or of the response sent to it."""

    of: Literal["request", "response"]
    method: str
    path: str
    ok: bool
    error: str = ""


class ContractServer:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.validations: list[Validation] = []
        # account -> secret id -> (keyName, value)
        self.secrets: dict[str, dict[str, tuple[str, str]]] = {}

    def requests(self, method: str) -> int:
        """How many requests of this method arrived, valid or not."""
        return sum(v.of == "request" and v.method == method for v in self.validations)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._contract])
        secrets, secret = "/v1/accounts/{account}/secrets", "/v1/accounts/{account}/secrets/{id}"
        app.router.add_post(secrets, self._create)
        app.router.add_get(secrets, self._list)
        app.router.add_get(secret, self._get)
        app.router.add_patch(secret, self._update)
        app.router.add_delete(secret, self._delete)
        return app

    @web.middleware
    async def _contract(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        checked = ContractRequest(request, body=await request.read())
        problems = list(CONTRACT.iter_request_errors(checked))
        self._record("request", request, problems)
        response: web.StreamResponse
        if problems:
            first = problems[0]
            if isinstance(first, SecurityValidationError):
                response = _error(401, "missing or malformed bearer credentials")
            elif isinstance(first, PathError):
                response = _error(404, f"no such operation: {request.method} {request.path}")
            else:
                response = _error(400, "; ".join(map(_describe, problems)))
        elif request.headers["Authorization"] != f"Bearer {self.api_key}":
            response = _error(401, "invalid API key")
        else:
            response = await handler(request)
        if not isinstance(response, web.Response):
            raise TypeError(f"handlers return web.Response, got {type(response).__name__}")
        self._record("response", request, _response_problems(checked, response))
        return response

    def _record(
        self, of: Literal["request", "response"], request: web.Request, problems: list[Exception]
    ) -> None:
        error = "; ".join(map(_describe, problems))
        self.validations.append(
            Validation(of, request.method, request.path_qs, not problems, error)
        )

    def _store(self, request: web.Request) -> dict[str, tuple[str, str]]:
        return self.secrets.setdefault(request.match_info["account"], {})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        account = request.match_info["account"]
        match = _SECRET_NAME.fullmatch(body["name"])
        if match is None or match["account"] != account:
            return _error(400, f"name must be accounts/{account}/secrets/<id>")
        if not _KEY_NAME.fullmatch(body["keyName"]):
            return _error(400, "keyName must be an environment variable name")
        store = self._store(request)
        if match["id"] in store:
            return _error(409, f"secret {body['name']} already exists")
        store[match["id"]] = (body["keyName"], body.get("value", ""))
        return _secret(account, match["id"], body["keyName"])

    async def _update(self, request: web.Request) -> web.Response:
        body = await request.json()
        account, secret_id = request.match_info["account"], request.match_info["id"]
        store = self._store(request)
        if secret_id not in store:
            return _error(404, f"secret accounts/{account}/secrets/{secret_id} not found")
        if not _KEY_NAME.fullmatch(body["keyName"]):
            return _error(400, "keyName must be an environment variable name")
        store[secret_id] = (body["keyName"], body.get("value", store[secret_id][1]))
        return _secret(account, secret_id, body["keyName"])

    async def _get(self, request: web.Request) -> web.Response:
        account, secret_id = request.match_info["account"], request.match_info["id"]
        found = self._store(request).get(secret_id)
        if found is None:
            return _error(404, f"secret accounts/{account}/secrets/{secret_id} not found")
        return _secret(account, secret_id, found[0])

    async def _list(self, request: web.Request) -> web.Response:
        account, store = request.match_info["account"], self._store(request)
        size = int(request.query.get("pageSize") or DEFAULT_PAGE_SIZE)
        if size < 0:
            return _error(400, "pageSize must not be negative")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        ids = sorted(store)
        # The page token is the last id of the previous page.
        start = bisect_right(ids, request.query.get("pageToken", ""))
        page = ids[start : start + size]
        payload: dict[str, Any] = {
            "secrets": [_secret_body(account, i, store[i][0]) for i in page],
            "totalSize": len(ids),
        }
        if start + size < len(ids):
            payload["nextPageToken"] = page[-1]
        return web.json_response(payload)

    async def _delete(self, request: web.Request) -> web.Response:
        account, secret_id = request.match_info["account"], request.match_info["id"]
        if self._store(request).pop(secret_id, None) is None:
            return _error(404, f"secret accounts/{account}/secrets/{secret_id} not found")
        return web.json_response({})


@asynccontextmanager
async def contract_server(api_key: str) -> AsyncIterator[ContractServer]:
    """Serve the contract on 127.0.0.1, on a free port, for the duration of the block."""
    server = ContractServer(api_key)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        server.base_url = f"http://{host}:{port}"
        yield server
    finally:
        await runner.cleanup()


def _secret_body(account: str, secret_id: str, key_name: str) -> dict[str, str]:
    return {"name": f"accounts/{account}/secrets/{secret_id}", "keyName": key_name}


def _secret(account: str, secret_id: str, key_name: str) -> web.Response:
    return web.json_response(_secret_body(account, secret_id, key_name))


def _error(status: int, message: str) -> web.Response:
    body = {"code": _RPC_CODES[status], "message": message, "details": []}
    return web.json_response(body, status=status)


def _response_problems(request: ContractRequest, response: web.Response) -> list[Exception]:
    """The contract's verdict on a response: 200s against their operation, errors against the
    error model; and no response may carry the write-only ``value``."""
    if response.status == 200:
        problems = list(CONTRACT.iter_response_errors(request, AIOHTTPOpenAPIWebResponse(response)))
    else:
        try:
            _ERROR_SCHEMA.validate(json.loads(response.text or ""))
        except Exception as exc:  # the schema's own error, or a body that is no JSON
            problems = [exc]
        else:
            problems = []
    body = json.loads(response.text or "null")
    secrets = body.get("secrets", [body]) if isinstance(body, dict) else []
    if any("value" in secret for secret in secrets):
        problems.append(ValueError("a response carries the write-only field 'value'"))
    return problems


def _describe(exc: Exception) -> str:
    """An error's type and reasons. Schema errors are listed by their own messages rather than
    through ``str(exc)``, which would repeat the whole body, secret values included."""
    cause = exc.__cause__
    schema_errors = getattr(exc, "schema_errors", None) or getattr(cause, "schema_errors", None)
    if schema_errors:
        reasons = "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in schema_errors
        )
        return f"{type(exc).__name__}: {reasons}"
    text = str(exc) + (f" ({cause})" if cause and str(cause) not in str(exc) else "")
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"
