"""``--state``: remember a keyed fingerprint of each value last written, never the value.

A re-run whose values have not changed then sends no writes. The fingerprint is an HMAC-SHA256
of (account, secret id, keyName, value) keyed by a hash of the account's API key, so the state
file alone does not let anyone test guesses of a value. The trade-off: a change made outside
bulk-secrets (someone edits the secret in the console) is not seen, because values cannot be read
back; only a deleted secret or a changed keyName is, as the plan lists the account. Rotating the
API key makes every fingerprint miss once, so everything is written again.

Runs may share one state file. Each saves only what it changed (the fingerprints it set and the
ones it dropped), merged into the file as it is then, under an exclusive lock on ``FILE.lock``
beside it: no run loses another's fingerprints. The file is written to a new ``FILE.tmp``
(mode 0600, whatever a stale one had) and renamed into place; a save that fails leaves the file
as it was.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
from contextlib import suppress
from pathlib import Path

from .errors import StateSaveFailed, UsageError
from .files import check_writable, create_new
from .models import DELETE, FAILED, SUCCEEDED, Credentials, SecretSpec, Status, Step

_VERSION = 1
_LABEL = b"bulk-secrets state v1\0"
STATE_MODE = 0o600  # fingerprints are not values, yet they are no one else's business


def check_state_path(path: Path) -> None:
    """Refuse, before anything is sent, a state file that could not be saved."""
    check_writable(path, "state file")


class State:
    """Fingerprints by ``account/secret-id``, loaded from and saved to one JSON file."""

    def __init__(self, path: Path, credentials: Credentials) -> None:
        self.path = path
        self._credentials = credentials
        self._keys: dict[str, bytes] = {}
        self._entries: dict[str, str] = {}
        self._set: dict[str, str] = {}  # what this run wrote, since it last saved
        self._dropped: set[str] = set()  # what this run forgot, since it last saved
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
        if status is SUCCEEDED and step.action is not DELETE and step.fingerprint:
            self._entries[name] = self._set[name] = step.fingerprint
            self._dropped.discard(name)
        elif status is SUCCEEDED or status is FAILED:
            self._entries.pop(name, None)  # deleted, or written with unknown outcome
            self._set.pop(name, None)
            self._dropped.add(name)

    def save(self) -> None:
        """Merge this run's changes into the file, under its lock: the file is read again,
        what this run set and dropped is applied, and the result renamed into place.

        Raises :class:`StateSaveFailed` when it cannot; the file is then as it was, and no
        temporary is left.
        """
        if not self._set and not self._dropped:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, STATE_MODE)
        except OSError as exc:
            reason = (
                f"its lock file {lock_path} is a symbolic link: remove it"
                if exc.errno == errno.ELOOP
                else f"{exc.strerror} (its lock file {lock_path})"
            )
            raise StateSaveFailed(self.path, reason) from exc
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # held until the lock file is closed
            except OSError as exc:
                raise StateSaveFailed(self.path, f"cannot lock it: {exc.strerror}") from exc
            entries = self._merged()
            self._write(entries)
        finally:
            os.close(lock)
        self._entries = entries
        self._set.clear()
        self._dropped.clear()

    def _merged(self) -> dict[str, str]:
        """The file as it is now (other runs may have saved since this one read it), with
        this run's changes applied."""
        entries: dict[str, str] = {}
        if self.path.exists():
            try:
                entries = _read(self.path)
            except UsageError as exc:
                raise StateSaveFailed(self.path, f"it no longer reads as one: {exc}") from exc
        entries.update(self._set)
        for name in self._dropped:
            entries.pop(name, None)
        return entries

    def _write(self, entries: dict[str, str]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with os.fdopen(create_new(temporary, STATE_MODE), "w", encoding="utf-8") as out:
                json.dump({"version": _VERSION, "fingerprints": entries}, out, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)  # replaces a symlink there, never writes through
        except OSError as exc:
            with suppress(OSError):
                temporary.unlink(missing_ok=True)
            reason = exc.strerror or type(exc).__name__
            raise StateSaveFailed(self.path, reason) from exc


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
