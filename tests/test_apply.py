"""The real runner and client against the emulator over loopback sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator
from bulk_secrets.events import Observer, Request
from bulk_secrets.models import Result, Status
from bulk_secrets.options import OnExisting, RetryOptions
from bulk_secrets.provision import apply_secrets

from .helpers import ACCOUNT, API_KEY, CANARY, credentials, options, specs, value_for
from .virtual_clock import VirtualClock

pytestmark = pytest.mark.anyio

KEYS = EmulatorConfig(keys={API_KEY: None})
# Rate limits without Retry-After need waits long enough for the bucket to refill.
# With 45% of requests failing, 10 retries leave a secret failed once in ~20 runs of 300; 24 leave
# it once in ~10^5 runs. Backoff stays short.
PATIENT = RetryOptions(retries=24, backoff_initial=0.01, backoff_max=0.2)


def _config(**faults: object) -> EmulatorConfig:
    return EmulatorConfig(keys={API_KEY: None}, faults=Faults(seed=7, **faults))  # type: ignore[arg-type]


def _load(report: Path) -> dict[str, object]:
    text = report.read_text(encoding="utf-8")
    assert CANARY not in text
    data: dict[str, object] = json.loads(text)
    return data


async def test_thousand_secrets_each_written_once_over_few_connections(tmp_path: Path) -> None:
    wanted = specs(1000)
    async with running_emulator(KEYS) as server:
        report = tmp_path / "report.json"
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, concurrency=32),
            report=report,
        )
        stored = server.secrets(ACCOUNT)
        assert summary.count(Status.SUCCEEDED) == 1000
        assert summary.all_succeeded
        assert {sid: v for sid, (_, v) in stored.items()} == {
            s.secret_id: s.value.reveal() for s in wanted
        }
        assert server.stats.count(method="POST") == 1000
        assert server.stats.writes == 1000
        assert server.stats.connections <= 32 + 4
        assert server.stats.peak_in_flight <= 32
    data = _load(report)
    results = data["results"]
    assert isinstance(results, list)
    assert len(results) == 1000
    assert {r["secretId"] for r in results} == {s.secret_id for s in wanted}
    assert all(r["status"] == "succeeded" and r["action"] == "create" for r in results)
    assert data["summary"] == {**data["summary"], "total": 1000, "succeeded": 1000}  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"error_rate": 0.2}, id="5xx"),
        pytest.param({"drop_rate": 0.2}, id="dropped-connections"),
        pytest.param({"write_then_fail_rate": 0.2}, id="write-then-fail"),
        pytest.param({"rate_limit": 400.0, "burst": 20, "retry_after": False}, id="429"),
        pytest.param(
            {"error_rate": 0.15, "drop_rate": 0.15, "write_then_fail_rate": 0.15}, id="all"
        ),
    ],
)
async def test_converges_under_faults(tmp_path: Path, faults: dict[str, object]) -> None:
    """On one virtual clock for the client and the emulator: the backoff takes no time, and
    the 400/s bucket refills only as the client waits, so its 429s come however fast or slow
    the machine is."""
    clock = VirtualClock()
    wanted = specs(300)
    async with running_emulator(_config(**faults), clock=clock) as server:
        report = tmp_path / "report.json"
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, retry=PATIENT),
            report=report,
            clock=clock,
        )
        stored = server.secrets(ACCOUNT)
    assert summary.all_succeeded, summary.line()
    assert {sid: v for sid, (_, v) in stored.items()} == {
        s.secret_id: s.value.reveal() for s in wanted
    }
    results = _load(report)["results"]
    assert isinstance(results, list)
    assert sorted(r["secretId"] for r in results) == sorted(stored)
    assert summary.retries > 0  # the faults were really met


async def test_every_fault_at_once_with_whole_seconds_of_retry_after(tmp_path: Path) -> None:
    """5xx, dropped connections and write-then-fail at 15% each, and a 200/s limit whose 429s
    say Retry-After in whole seconds: on one virtual clock for the client and the emulator, so
    minutes of waiting take none."""
    clock = VirtualClock()
    faults = Faults(
        seed=11,
        error_rate=0.15,
        drop_rate=0.15,
        write_then_fail_rate=0.15,
        rate_limit=200.0,
        burst=5,
    )
    config = EmulatorConfig(keys={API_KEY: None}, faults=faults)
    wanted = specs(300)
    report = tmp_path / "r.json"
    async with running_emulator(config, clock=clock) as server:
        started = clock.now()
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, max_rps=0, retry=RetryOptions(retries=24)),
            report=report,
            clock=clock,
        )
        stored = server.secrets(ACCOUNT)
        seen = server.stats.requests
    assert summary.all_succeeded, summary.line()
    assert {status for (_, status) in seen} >= {0, 200, 409, 429, 500, 502, 503, 504}
    assert clock.now() - started >= 1.0  # at least one Retry-After was waited, virtually
    assert {sid: v for sid, (_, v) in stored.items()} == {
        s.secret_id: s.value.reveal() for s in wanted
    }
    results = _load(report)["results"]
    assert isinstance(results, list)
    assert {r["secretId"] for r in results} == set(stored)


async def test_429_with_retry_after_is_honoured(tmp_path: Path) -> None:
    wanted = specs(12)
    clock = VirtualClock()
    async with running_emulator(_config(rate_limit=10.0, burst=10), clock=clock) as server:
        started = clock.now()
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, concurrency=12),
            clock=clock,
        )
        assert server.stats.count(status=429) >= 1
        assert summary.all_succeeded
        assert len(server.secrets(ACCOUNT)) == 12
    assert clock.now() - started >= 1.0  # the Retry-After (1 s at the least) was waited


async def test_existing_secret_is_updated(tmp_path: Path) -> None:
    wanted = specs(10)
    async with running_emulator(KEYS) as server:
        server.put(ACCOUNT, wanted[3].secret_id, wanted[3].key_name, "old")
        report = tmp_path / "report.jsonl"
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url),
            report=report,
        )
        assert server.secrets(ACCOUNT)[wanted[3].secret_id][1] == value_for(3)
        assert server.stats.count(method="PATCH") == 1
    assert summary.by_action == {"create": 9, "update": 1}
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert lines[-1]["summary"]["succeeded"] == 10
    updated = [r for r in lines[:-1] if r["action"] == "update"]
    # The plan listed the account first, so the update went straight to PATCH.
    assert [(r["secretId"], r["attempts"]) for r in updated] == [(wanted[3].secret_id, 1)]
    assert lines[-1]["summary"]["requests"] == 1 + 10


@pytest.mark.parametrize(
    ("policy", "status", "writes"),
    [(OnExisting.SKIP, Status.SKIPPED, 10), (OnExisting.FAIL, Status.FAILED, 10)],
)
async def test_existing_secret_is_skipped_or_failed_on_request(
    policy: OnExisting, status: Status, writes: int
) -> None:
    wanted = specs(10)
    async with running_emulator(KEYS) as server:
        server.put(ACCOUNT, wanted[0].secret_id, wanted[0].key_name, "old")
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, on_existing=policy),
        )
        assert server.secrets(ACCOUNT)[wanted[0].secret_id][1] == "old"
        assert server.stats.count(method="PATCH") == 0
    assert summary.count(status) == 1
    assert summary.count(Status.SUCCEEDED) == 9


async def test_bad_key_aborts_and_leaves_the_rest_not_attempted(tmp_path: Path) -> None:
    wanted = specs(200)
    async with running_emulator(KEYS) as server:
        report = tmp_path / "report.json"
        summary = await apply_secrets(
            wanted,
            credentials=credentials("wrong-key"),
            options=options(server.base_url, concurrency=4),
            report=report,
        )
        assert server.stats.count() == server.stats.count(status=401) == 1  # the listing
        assert server.secrets(ACCOUNT) == {}
    assert summary.aborted is not None and "401" in summary.aborted
    assert summary.count(Status.NOT_ATTEMPTED) == 200
    results = _load(report)["results"]
    assert isinstance(results, list)
    assert len(results) == 200
    assert all("401" in r["error"] for r in results)


async def test_key_revoked_while_writing_stops_the_rest() -> None:
    """The 401 comes mid-run: requests in flight finish, the rest are not attempted."""
    wanted = specs(200)
    keys: dict[str, frozenset[str] | None] = {API_KEY: None}

    class Revoke(Observer):
        def result(self, result: Result) -> None:
            keys.pop(API_KEY, None)  # revoked once the first secret is written

    async with running_emulator(EmulatorConfig(keys=keys)) as server:
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, concurrency=4),
            observer=Revoke(),
        )
        assert 1 <= server.stats.count(status=401) <= 4
        written = server.stats.count(method="POST", status=200)
    assert summary.aborted is not None and "401" in summary.aborted
    failed, skipped = summary.count(Status.FAILED), summary.count(Status.NOT_ATTEMPTED)
    assert 1 <= written <= 4  # the first, and any other in flight with it
    assert 1 <= failed <= 4
    assert summary.count(Status.SUCCEEDED) == written
    assert failed + skipped + written == 200


async def test_refused_account_stops_only_that_account() -> None:
    wanted = specs(30, "acct-ok") + specs(30, "acct-no")
    config = EmulatorConfig(keys={API_KEY: frozenset({"acct-ok"})})
    async with running_emulator(config) as server:
        summary = await apply_secrets(
            wanted, credentials=credentials(), options=options(server.base_url, concurrency=4)
        )
        assert len(server.secrets("acct-ok")) == 30
        assert server.stats.count(status=403) <= 4
    assert summary.aborted is None
    assert summary.count(Status.SUCCEEDED) == 30
    assert summary.count(Status.FAILED) + summary.count(Status.NOT_ATTEMPTED) == 30


async def test_unreachable_server_leaves_each_secret_with_a_reason() -> None:
    async with running_emulator(KEYS) as server:
        base_url = server.base_url  # closed on exit: nothing listens there any more
    summary = await apply_secrets(
        specs(5), credentials=credentials(), options=options(base_url, concurrency=2)
    )
    assert summary.count(Status.NOT_ATTEMPTED) == 5
    assert summary.requests == 9  # the listing, tried 1 + 8 times


async def test_many_accounts_each_listed_once_and_written_after_its_own_listing_only() -> None:
    """Writes start before every account is listed: an account waits for its own listing."""
    accounts = [f"acct-{i:02d}" for i in range(40)]
    wanted = [s for account in accounts for s in specs(3, account)]

    class Requests(Observer):
        requests = True

        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []

        def request(self, request: Request) -> None:
            self.seen.append((request.method, request.account))

    observed = Requests()
    config = EmulatorConfig(keys={API_KEY: None})
    async with running_emulator(config) as server:
        summary = await apply_secrets(
            wanted,
            credentials=credentials(),
            options=options(server.base_url, concurrency=4),
            observer=observed,
        )
        assert server.stats.count(method="GET") == 40
    assert summary.count(Status.SUCCEEDED) == 120
    seen = observed.seen
    listed_at = {account: seen.index(("GET", account)) for account in accounts}
    assert seen.index(("POST", accounts[0])) < max(listed_at.values())
    for position, (method, account) in enumerate(seen):
        assert method == "GET" or position > listed_at[account]
