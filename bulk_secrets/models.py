"""Plain data that flows through the pipeline: a secret to write, and what became of it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

MASK = "***"


class SecretValue:
    """A secret value that masks itself everywhere it could be printed.

    ``repr``, ``str`` and ``format`` all give ``***``; only :meth:`reveal` gives the text, and only
    the HTTP client calls it, to build a request body.
    """

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"SecretValue({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)

    def __reduce__(self) -> Any:
        raise TypeError("a SecretValue is not pickled, so it cannot leak through pickle")

    def __len__(self) -> int:
        return len(self._text)


# The records of the hot path (Target, SecretSpec, Step, Result: a few for every secret) are
# plain slotted dataclasses, not frozen ones: a frozen dataclass sets each field through
# ``object.__setattr__``, which made building them about 9 us of CPU per secret. Nothing
# changes one once built: they stay hashable (``unsafe_hash``) and compare by value.
# Step, Result and SecretSpec also take their fields by position where they are made for
# every secret: a class called with keywords builds a dict of them first, and takes two to
# three times as long (a SecretSpec of six keywords 1.14 us, of five by position 0.37 us).
# ``source`` is keyword-only, so that a SecretSpec's ``value`` may follow it:
# ``SecretSpec(account, key_name, secret_id, location, value, source="env:VAR")``.


@dataclass(slots=True, unsafe_hash=True)
class Target:
    """One secret aimed at one account, without its value: what a plan, a report and
    ``validate`` name."""

    account: str
    key_name: str
    secret_id: str
    location: str  # "file:line", where the manifest asked for it
    # Where the value comes from: "value", "env:VAR", "file:PATH".
    source: str = field(default="value", kw_only=True)


@dataclass(slots=True, unsafe_hash=True)
class SecretSpec(Target):
    """A target and its value: one secret to write to one account."""

    value: SecretValue


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    SKIP = "skip"
    DELETE = "delete"


class Status(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_ATTEMPTED = "not_attempted"


# The members as plain module names, for the code that runs once per secret: in Python 3.11
# ``Action.CREATE`` looks the member up on the enum's class at every use, about 0.1 us.
CREATE, UPDATE, DELETE = Action.CREATE, Action.UPDATE, Action.DELETE
SUCCEEDED, FAILED, NOT_ATTEMPTED = Status.SUCCEEDED, Status.FAILED, Status.NOT_ATTEMPTED


@dataclass(slots=True, unsafe_hash=True)
class Step:
    """One planned action on one secret of one account.

    A write (create, update) aims at a :class:`SecretSpec`, which carries the value; a delete
    names only a :class:`Target`. A step with an ``outcome`` was settled by the plan (skipped,
    failed, not attempted) and is reported without a request, with ``reason``.
    """

    target: Target
    action: Action
    fingerprint: str | None = None  # of the value, for --state
    outcome: Status | None = None
    reason: str | None = None

    @classmethod
    def settled(cls, target: Target, action: Action, outcome: Status, reason: str | None) -> Step:
        """A step the plan settled: reported with ``outcome`` and ``reason``, never sent."""
        return cls(target, action, None, outcome, reason)

    @property
    def spec(self) -> SecretSpec | None:
        """The secret to write, with its value; None for a step that names only a target."""
        target = self.target
        return target if isinstance(target, SecretSpec) else None


@dataclass(slots=True, unsafe_hash=True)
class Result:
    """What became of one secret. Holds no value, by construction."""

    account: str
    key_name: str
    secret_id: str
    location: str
    action: Action
    status: Status
    http_status: int | None = None
    attempts: int = 0
    error: str | None = None

    @classmethod
    def of(
        cls,
        target: Target,
        *,
        action: Action,
        status: Status,
        http_status: int | None = None,
        attempts: int = 0,
        error: str | None = None,
    ) -> Result:
        """The result for ``target`` (built by position: see above)."""
        return cls(
            target.account,
            target.key_name,
            target.secret_id,
            target.location,
            action,
            status,
            http_status,
            attempts,
            error,
        )

    def to_record(self) -> dict[str, Any]:
        """The report's fields, in the report's spelling."""
        return {
            "account": self.account,
            "keyName": self.key_name,
            "secretId": self.secret_id,
            "location": self.location,
            "action": self.action.value,
            "status": self.status.value,
            "httpStatus": self.http_status,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Credentials:
    """API keys: one per account where given, else the default one."""

    default: SecretValue | None
    per_account: dict[str, SecretValue] | None = None

    def api_keys(self) -> list[SecretValue]:
        """Every API key held, each once."""
        keys = [] if self.default is None else [self.default]
        keys += (self.per_account or {}).values()
        return list(dict.fromkeys(keys))

    def for_account(self, account: str) -> SecretValue | None:
        if self.per_account and account in self.per_account:
            return self.per_account[account]
        return self.default


@dataclass(frozen=True, slots=True)
class ExistingSecret:
    """A secret as the list call shows it: never with its value. A listed name that is not
    ``accounts/{account}/secrets/{valid id}`` is kept, not ``valid``: it goes into no URL."""

    secret_id: str
    key_name: str
    valid: bool = True
