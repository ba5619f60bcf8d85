"""``--state``: remember a keyed fingerprint of each value last written, never the value.

A re-run whose values have not changed then sends no writes. The fingerprint is an HMAC-SHA256
of (account, secret id, keyName, value) keyed by a hash of the account's API key, so the state
file alone does not let anyone test guesses of a value. The trade-off: a change made outside
bulk-secrets (someone edits the secret in the console) is not seen, because values cannot be read
back; only a deleted secret or a changed keyName is, as the plan lists the account. Rotating the
API key makes every fingerprint miss once, so everything is written again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from .errors import UsageError
from .models import Action, Credentials, SecretSpec, Status, Step

_VERSION = 1
_LABEL = b"bulk-secrets state v1\0"


class State:
    """Fingerprints by ``account/secret-id``, loaded from and saved to one JSON file."""

    def __init__(self, path: Path, credentials: Credentials) -> None:
        self.path = path
        self._credentials = credentials
        self._keys: dict[str, bytes] = {}
        self._entries: dict[str, str] = {}
        self._changed = False
        if path.exists():
            self._entries = _read(path)

    def fingerprint(self, spec: SecretSpec) -> str:
        key = self._keys.get(spec.account)
        if key is None:
            api_key = self._credentials.for_account(spec.account)
            secret = b"" if api_key is None else api_key.reveal().encode()
            key = self._keys[spec.account] = hashlib.sha256(_LABEL + secret).digest()
        message = f"{spec.account}\0{spec.secret_id}\0{spec.key_name}\0".encode()
        return hmac.new(key, message + spec.value.reveal().encode(), hashlib.sha256).hexdigest()

    def unchanged(self, spec: SecretSpec, fingerprint: str) -> bool:
        return self._entries.get(f"{spec.account}/{spec.secret_id}") == fingerprint

    def settle(self, step: Step, status: Status) -> None:
        """Remember what a step left behind: a written value, a deletion, or doubt."""
        name = f"{step.target.account}/{step.target.secret_id}"
        if status is Status.SUCCEEDED and step.action is not Action.DELETE and step.fingerprint:
            self._entries[name] = step.fingerprint
        elif status is Status.SUCCEEDED or status is Status.FAILED:
            self._entries.pop(name, None)  # deleted, or written with unknown outcome
        else:
            return
        self._changed = True

    def save(self) -> None:
        if not self._changed:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump({"version": _VERSION, "fingerprints": self._entries}, out, sort_keys=True)
        os.replace(temporary, self.path)


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"state file {path}: cannot read it ({exc}); delete it to start over"
        ) from exc
    entries = data.get("fingerprints") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or data.get("version") != _VERSION:
        raise UsageError(f"state file {path}: not a bulk-secrets state file of version 1")
    return {str(k): str(v) for k, v in entries.items()}
