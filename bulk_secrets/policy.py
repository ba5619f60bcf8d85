"""What decides, in one place: which requests an API error stops, and what becomes of a secret
that exists already.

Listing and writing both send through one :class:`Gate` and hand their API errors to
:class:`Stops`: a rejected API key (401) stops the accounts that use it, a refused account (403),
a dead one or one that asks for too long a wait stops that account, and a failure of the run
itself (a manifest that changed, a bug, the deadline) stops every request not yet sent.
:class:`Policy` words the reasons the library gives without a server's answer, and applies
``on_existing`` at planning (a secret listed) and at writing (a create that meets 409) alike.

Reasons say what happened. A caller may add its own words to them with ``hints``: the CLI adds
the flag that brought each one about (``already exists (--on-existing skip)``).
"""

from __future__ import annotations

import enum
import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from .errors import (
    ApiError,
    ConnectionFailed,
    PermissionDenied,
    RateLimited,
    RetryAbandoned,
    TlsFailed,
    Unauthenticated,
    WaitTooLong,
)
from .events import QUIET, Observer, Request
from .models import Action, Status
from .options import OnExisting
from .ratelimit import AccountRate, Rates

T = TypeVar("T")
DEAD_AFTER = 10  # connection failures in a row to one account that stop it


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
    """Which requests may still go, learnt from the outcome of every request.

    - A rejected API key (401) stops the accounts that use that key; the run is ``aborted``
      (a global fault) only when every target account's key was rejected.
    - A refused account (403), a Retry-After longer than the run may wait, an account that
      could not be listed, and ``DEAD_AFTER`` connection failures in a row (refused, reset, DNS,
      TLS) each stop that account.
    - :meth:`stop` stops everything: the run itself cannot go on (a manifest that changed, a
      bug, the deadline).
    """

    def __init__(
        self,
        accounts: Iterable[str] = (),
        key_of: Callable[[str], object] = lambda account: None,
    ) -> None:
        self.stopped: str | None = None
        # Nothing stopped yet, no key rejected: :meth:`blocked` is None for every account.
        # The runner looks here before it asks, once for every secret.
        self.clear = True
        self._key_of = key_of
        self._accounts_of_key = Counter(key_of(account) for account in accounts)
        self._targets = sum(self._accounts_of_key.values())
        self._rejected: dict[object, str] = {}  # API key -> why (401)
        self._rejected_accounts = 0
        self._stopped_accounts: dict[str, str] = {}  # account -> why it stopped
        # account -> connection failures in a row (read it; change it through the methods)
        self.failing: dict[str, int] = {}

    @property
    def aborted(self) -> str | None:
        """Why the run as a whole failed, when every target account's API key was rejected."""
        if self._rejected and self._rejected_accounts >= self._targets:
            return next(iter(self._rejected.values()))
        return None

    def blocked(self, account: str) -> str | None:
        """Why no request to ``account`` may go now, or None."""
        if self.stopped:
            return self.stopped
        if self._rejected:
            rejected = self._rejected.get(self._key_of(account))
            if rejected:
                return rejected
        return self._stopped_accounts.get(account)

    def stopped_accounts(self) -> dict[str, str]:
        """Every account that stopped, with why, in the order they stopped (a rejected key's
        accounts under their key's reason)."""
        return dict(self._stopped_accounts)

    def learn(self, account: str, exc: ApiError) -> str:
        """Take in the error of a request to ``account``; return the reason for its secret."""
        if isinstance(exc, Unauthenticated):
            return self._reject(account, exc)
        if isinstance(exc, PermissionDenied):
            return self.stop_account(
                account, f"account {account!r} refused the API key (403): {exc.message}"
            )
        if isinstance(exc, WaitTooLong):
            return self.stop_account(account, f"account {account!r}: {exc.message}")
        if isinstance(exc, RetryAbandoned):  # a retry was due when the account was stopped
            return self.blocked(account) or str(exc)
        return str(exc)

    def answered(self, account: str) -> None:
        """A request to ``account`` got an answer: the server is there."""
        if self.failing:
            self.failing.pop(account, None)

    def unanswered(self, account: str, exc: ApiError) -> None:
        """A request to ``account`` could not connect; enough in a row stop the account."""
        failures = self.failing[account] = self.failing.get(account, 0) + 1
        if failures >= DEAD_AFTER:
            self.stop_account(
                account,
                f"account {account!r} stopped after {failures} connection failures in a row: {exc}",
            )

    def stop_account(self, account: str, reason: str) -> str:
        """Stop every request to ``account`` not yet sent; return the reason it stopped for."""
        self.clear = False
        return self._stopped_accounts.setdefault(account, reason)

    def stop(self, reason: str) -> None:
        """Stop every request not yet sent: the run cannot go on."""
        self.clear = False
        self.stopped = self.stopped or reason

    def _reject(self, account: str, exc: ApiError) -> str:
        key = self._key_of(account)
        reason = self._rejected.get(key)
        if reason is None:
            self.clear = False
            whose = "" if len(self._accounts_of_key) <= 1 else f" of account {account!r}"
            reason = self._rejected[key] = f"the API key{whose} was rejected (401): {exc.message}"
            self._rejected_accounts += self._accounts_of_key.get(key, 0) or 1
        return reason


class Gate:
    """Every request passes here: it waits for its account's turn (``rates``), what comes of
    it teaches ``stops`` whether the server is there, and ``observer`` is told of it.

    :meth:`send` is the whole passage around one request. Its steps are also methods of their
    own, none a coroutine: :meth:`turn` takes the account's next slot, :meth:`passed` and
    :meth:`refused` learn from the answer. The runner makes a step's first attempt with them
    inline, since a coroutine around a request is one more frame for its every wait.
    """

    def __init__(self, rates: Rates, stops: Stops, observer: Observer = QUIET) -> None:
        self.rates = rates
        self.stops = stops
        self._observer = observer if observer.requests else None
        self.observed = self._observer is not None  # requests are timed: send them all here

    async def send(
        self,
        sent: Sent,
        request: Callable[..., Awaitable[T]],
        *args: Any,
    ) -> T:
        """Send ``request(*args)``, the ``sent`` request, in its account's turn."""
        account = sent.account
        if self._observer is not None:
            request = functools.partial(self._timed, sent, request)
        rate, sent_at, now = self.turn(account)
        if sent_at > now:
            sent_at = await self.rates.wait_turn(rate, sent_at)
        try:
            answer = await request(*args)
        except ApiError as exc:
            self.refused(account, rate, sent_at, exc)
            raise
        self.passed(account, rate)
        return answer

    def turn(self, account: str) -> tuple[AccountRate, float, float]:
        """``account``'s rate, the time of the slot taken for its next request, and the time
        now: a slot later than now is waited for with ``rates.wait_turn``."""
        rates = self.rates
        rate = rates.known(account) or rates.of(account)  # no call of ours: the usual
        now = rates.now()
        return rate, rate.reserve(now), now

    def passed(self, account: str, rate: AccountRate) -> None:
        """The request to ``account`` succeeded."""
        rate.succeeded(self.rates.now())
        stops = self.stops
        if stops.failing:  # stops.answered(account), without its call when none is failing
            stops.answered(account)

    def refused(self, account: str, rate: AccountRate, sent_at: float, exc: ApiError) -> None:
        """The request to ``account`` sent at ``sent_at`` failed with ``exc``. Raises
        :class:`~bulk_secrets.errors.WaitTooLong` for a Retry-After past the run's limit."""
        if isinstance(exc, (ConnectionFailed, TlsFailed)):
            self.stops.unanswered(account, exc)
            return
        self.stops.answered(account)
        if isinstance(exc, RateLimited):
            self.rates.limited(rate, sent_at, exc)

    async def _timed(self, sent: Sent, request: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self._observer is not None
        started = time.monotonic()
        status: int | None = None
        try:
            answer = await request(*args)
            status = answer if isinstance(answer, int) else 200
            return answer
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            seconds = time.monotonic() - started
            self._observer.request(
                Request(sent.method, sent.account, sent.secret_id, status, sent.attempt, seconds)
            )


class Sent(NamedTuple):
    """What a request is, for the observer: its method, account, secret id and attempt. (A
    tuple: one is made for every request; a frozen dataclass takes twice as long to make.)"""

    method: str
    account: str
    secret_id: str = ""
    attempt: int = 1


def internal_error(exc: Exception) -> str:
    """The reason a bug gives: its type only, since its message could quote anything."""
    return f"internal error ({type(exc).__name__}): the run was stopped"
