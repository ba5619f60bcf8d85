"""What decides, in one place: which requests an API error stops, and what becomes of a secret
that exists already.

Listing and writing both hand their API errors to :class:`Stops`: a rejected API key (401) stops
the run, a refused account (403) stops that account, and a failure of the run itself (a manifest
that changed, a bug) stops every request not yet sent. :class:`Policy` words the reasons the
library gives without a server's answer, and applies ``on_existing`` at planning (a secret
listed) and at writing (a create that meets 409) alike.

Reasons say what happened. A caller may add its own words to them with ``hints``: the CLI adds
the flag that brought each one about (``already exists (--on-existing skip)``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from .errors import ApiError, PermissionDenied, RetryAbandoned, Unauthenticated
from .models import Action, Status
from .options import OnExisting


class Why(enum.StrEnum):
    """Reasons for a result that no answer from the server explains."""

    EXISTS = "already exists"
    DONE_EARLIER = "done in the earlier run"
    UNCHANGED = "unchanged since the last run"


Hints = Mapping[Why, str]


class Policy:
    """The reasons, worded once, and the ``on_existing`` rule."""

    def __init__(self, on_existing: OnExisting, hints: Hints | None = None) -> None:
        self._reasons = {why: _worded(why, (hints or {}).get(why)) for why in Why}
        self._when_exists: tuple[Action, Status, str] | None = None
        if on_existing is OnExisting.SKIP:
            self._when_exists = (Action.SKIP, Status.SKIPPED, self._reasons[Why.EXISTS])
        elif on_existing is OnExisting.FAIL:
            self._when_exists = (Action.UPDATE, Status.FAILED, self._reasons[Why.EXISTS])

    def reason(self, why: Why) -> str:
        return self._reasons[why]

    def when_exists(self) -> tuple[Action, Status, str] | None:
        """What a secret that exists already becomes without a write (its action, status and
        reason); None: update it."""
        return self._when_exists


def _worded(why: Why, hint: str | None) -> str:
    return f"{why} ({hint})" if hint else str(why)


class Stops:
    """Which requests may still go, learnt from the API errors of every request."""

    def __init__(self) -> None:
        self.aborted: str | None = None  # a global fault: the API key was rejected
        self.stopped: str | None = None  # the run itself failed: nothing more is sent
        self._refused: dict[str, str] = {}  # account -> why it refused

    def blocked(self, account: str) -> str | None:
        """Why no request to ``account`` may go now, or None."""
        return self.aborted or self.stopped or self._refused.get(account)

    def learn(self, account: str, exc: ApiError) -> str:
        """Take in the error of a request to ``account``; return the reason for its secret."""
        if isinstance(exc, Unauthenticated):
            self.aborted = self.aborted or f"the API key was rejected (401): {exc.message}"
            return self.aborted
        if isinstance(exc, PermissionDenied):
            why = f"account {account!r} refused the API key (403): {exc.message}"
            return self._refused.setdefault(account, why)
        if isinstance(exc, RetryAbandoned):  # a retry was due when the account was stopped
            return self.blocked(account) or str(exc)
        return str(exc)

    def stop(self, reason: str) -> None:
        """Stop every request not yet sent: the run cannot go on."""
        self.stopped = self.stopped or reason


def internal_error(exc: Exception) -> str:
    """The reason a bug gives: its type only, since its message could quote anything."""
    return f"internal error ({type(exc).__name__}): the run was stopped"
