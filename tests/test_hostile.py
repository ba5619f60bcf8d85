"""What a hostile server or network can do: never follow, never leak, always end.

Each test runs the real client against a misbehaving server on 127.0.0.1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from bulk_secrets import (
    ApplyOptions,
    Credentials,
    SecretSpec,
    SecretValue,
    Status,
    apply_secrets,
    plan_secrets,
    planner,
    verify_secrets,
)
from bulk_secrets.client import proxy_for
from bulk_secrets.emulator import EmulatorConfig, Faults, running_emulator
from bulk_secrets.options import DEFAULT_MAX_RPS
from bulk_secrets.policy import DEAD_AFTER
from bulk_secrets.scrub import Scrubber

from .helpers import ACCOUNT, API_KEY, CANARY, FAST_RETRY, credentials, options, run_main, specs
from .hostile import (
    HOST,
    Certificate,
    connect_proxy,
    hostile_server,
    json_answer,
    listing,
    make_certificate,
    raw_server,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


# 1. No redirects


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_never_followed(status: int) -> None:
    async def steal(request: web.BaseRequest) -> web.StreamResponse:
        return listing()

    async with hostile_server(steal) as thief:

        async def redirect(request: web.BaseRequest) -> web.StreamResponse:
            if request.method == "GET":
                return listing()
            return web.Response(status=status, headers={"Location": f"{thief.base_url}/steal"})

        async with hostile_server(redirect) as server:
            summary = await apply_secrets(
                specs(3), credentials=credentials(), options=options(server.base_url)
            )
    assert thief.seen == []  # neither the key nor a value went to the other host
    assert summary.count(Status.FAILED) == 3
    assert summary.requests == 1 + 3  # the listing, and one try each: never retried
    assert summary.first_failures[0].error == (
        f"HTTP {status}: redirected to {thief.base_url.removeprefix('http://')}; not followed"
    )


# 2. https only, except loopback; TLS verified, a failure not retried


@pytest.mark.parametrize(
    "url", ["http://192.0.2.2:8080", "http://api.fireworks.ai", "ftp://127.0.0.1", "https://"]
)
def test_a_base_url_that_would_send_in_clear_text_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https://"):
        ApplyOptions(base_url=url)


@pytest.mark.parametrize(
    "url", ["https://api.fireworks.ai", "http://127.0.0.1:9", "http://127.0.0.2", "http://[::1]:9"]
)
def test_https_and_loopback_http_are_allowed(url: str) -> None:
    assert ApplyOptions(base_url=url).base_url == url


async def test_clear_text_from_the_environment_is_a_usage_error_before_any_request() -> None:
    env = {**os.environ, "FIREWORKS_API_KEY": API_KEY, "FIREWORKS_BASE_URL": "http://192.0.2.2:9"}
    code, _, err = await run_main("plan", "manifests/example.yaml", "--account", ACCOUNT, env=env)
    assert code == 2
    assert "clear text" in err


async def test_an_untrusted_certificate_fails_at_once_and_is_not_retried(
    certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    config = EmulatorConfig(keys={API_KEY: None})
    async with running_emulator(config, tls=certificate.server_context()) as server:
        summary = await apply_secrets(
            specs(3), credentials=credentials(), options=options(server.base_url)
        )
        assert server.stats.count() == 0
    assert summary.requests == 1  # the listing, tried once
    assert summary.count(Status.NOT_ATTEMPTED) == 3
    assert list(summary.stopped_accounts) == [ACCOUNT]
    assert "TLS failed, not retried" in summary.stopped_accounts[ACCOUNT]
    assert "certificate" in summary.stopped_accounts[ACCOUNT].lower()


@pytest.mark.parametrize("how", ["ca_bundle", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
async def test_a_ca_bundle_makes_the_certificate_trusted(
    certificate: Certificate, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    bundle = None
    if how == "ca_bundle":
        bundle = str(certificate.cert)
    else:
        monkeypatch.setenv(how, str(certificate.cert))
    config = EmulatorConfig(keys={API_KEY: None})
    async with running_emulator(config, tls=certificate.server_context()) as server:
        summary = await apply_secrets(
            specs(3), credentials=credentials(), options=options(server.base_url, ca_bundle=bundle)
        )
        assert len(server.secrets(ACCOUNT)) == 3
    assert summary.all_succeeded


# 3. Proxies like the ecosystem


async def test_https_proxy_tunnels_to_the_api_host(
    certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EmulatorConfig(keys={API_KEY: None})
    async with running_emulator(config, tls=certificate.server_context()) as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        async with connect_proxy(port) as (proxy, asked):
            monkeypatch.setenv("HTTPS_PROXY", proxy)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            base_url = f"https://{HOST}:{port}"  # resolved by the proxy only
            summary = await apply_secrets(
                specs(2),
                credentials=credentials(),
                options=options(base_url, ca_bundle=str(certificate.cert)),
            )
        assert len(server.secrets(ACCOUNT)) == 2
    assert summary.all_succeeded
    assert asked and all(line == f"CONNECT {HOST}:{port} HTTP/1.1" for line in asked)


def test_no_proxy_and_loopback_bypass_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.delenv("no_proxy", raising=False)
    assert proxy_for("https://api.fireworks.ai") == "http://proxy.internal:3128"
    assert proxy_for("https://secrets.internal.example") is None
    assert proxy_for("http://127.0.0.1:8080") is None
    assert proxy_for("http://localhost:8080") is None


# 4. Scrub everything secret


async def test_an_echoed_api_key_is_scrubbed_from_a_401() -> None:
    async def echo(request: web.BaseRequest) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        return json_answer({"code": 16, "message": f"bad key in {header!r}"}, status=401)

    async with hostile_server(echo) as server:
        summary = await apply_secrets(
            specs(2), credentials=credentials(), options=options(server.base_url)
        )
    assert summary.aborted is not None
    assert API_KEY not in summary.aborted
    assert "***" in summary.aborted


async def test_a_status_line_that_quotes_the_key_is_scrubbed() -> None:
    def answer(head: bytes) -> bytes:
        auth = [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization")]
        return b"HTTP/1.1 2x0 " + auth[0] + b"\r\n\r\n"

    async with raw_server(answer) as base_url:
        summary = await apply_secrets(
            specs(1), credentials=credentials(), options=options(base_url, retry=FAST_RETRY)
        )
    reason = summary.stopped_accounts[ACCOUNT]
    assert "could not list" in reason
    assert API_KEY not in reason and API_KEY.upper() not in reason


async def test_a_huge_value_echoed_in_any_case_and_escaped_is_scrubbed() -> None:
    value = (CANARY + '-"quoted"\n-') * (1_000_000 // (len(CANARY) + 12))

    async def echo(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return listing()
        sent = json.loads(await request.read())["value"]
        message = f"{sent[:400].upper()} / {json.dumps(sent[1000:1400])} / {sent[-50:]}"
        return json_answer({"code": 3, "message": message}, status=400)

    spec = specs(1)[0]
    wanted = [
        SecretSpec(
            account=spec.account,
            key_name=spec.key_name,
            secret_id=spec.secret_id,
            location=spec.location,
            value=SecretValue(value),
        )
    ]
    async with hostile_server(echo) as server:
        summary = await apply_secrets(
            wanted, credentials=credentials(), options=options(server.base_url)
        )
    (failure,) = summary.first_failures
    error = failure.error or ""
    assert error.startswith("HTTP 400: ***")
    for piece in (CANARY, CANARY.upper(), "QUOTED", "quoted", "CANARY"):
        assert piece not in error


def test_a_scrubber_masks_every_window_of_six_in_any_case() -> None:
    scrub = Scrubber(["Sk-Secret-Value-1234", "tiny"])
    assert scrub("abc SK-SECRET-value xyz") == "abc *** xyz"
    assert scrub("the TINY one") == "the *** one"
    assert scrub("nothing here") == "nothing here"
    assert scrub('{"v": "sk-secr\\"') == '{"v": "***\\"'


# 5. Safe text out


async def test_control_characters_from_a_server_never_reach_the_terminal(tmp_path: Path) -> None:
    nasty = "\x1b]0;owned\x07\x1b[2J\rK\x9b31m"

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return listing((f"accounts/{ACCOUNT}/secrets/stray", f"STRAY{nasty}\n  - fake line"))
        return json_answer({"code": 3, "message": f"no{nasty}"}, status=400)

    manifest = tmp_path / "m.yaml"
    manifest.write_text('secrets: {A_KEY: "a"}\n')
    async with hostile_server(answer) as server:
        for command in (("apply",), ("verify",), ("plan", "--prune")):
            code, out, err = await run_main(
                *command, str(manifest), "--account", ACCOUNT, "--base-url", server.base_url
            )
            assert code == (0 if command[0] == "plan" else 1), err
            for text in (out, err):
                assert not any(char in text for char in "\x1b\x07\r\x9b")
            assert "\\x1b" in out + err
            assert "\n  - fake line" not in out + err


# 6. Distrust the listing


@pytest.mark.parametrize(
    "name", [f"accounts/{ACCOUNT}/secrets/..", "accounts/other/secrets/x", "x/../../y", ""]
)
async def test_a_listed_name_that_is_not_a_valid_id_is_reported_and_never_deleted(
    name: str,
) -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return listing((name, "ODD")) if request.method == "GET" else json_answer({})

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(1), credentials=credentials(), options=options(server.base_url, prune=True)
        )
        found = await verify_secrets(
            specs(1), credentials=credentials(), options=options(server.base_url)
        )
        methods = [method for method, _, _ in server.seen]
    assert "DELETE" not in methods
    assert summary.count(Status.SKIPPED) == 1  # reported, not deleted
    assert [t.secret_id for t in found.unexpected] == [name]


async def test_a_repeated_page_token_ends_the_listing() -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return listing((f"accounts/{ACCOUNT}/secrets/a", "A"), token="again")

    async with hostile_server(answer) as server:
        planned = await plan_secrets(
            specs(2), credentials=credentials(), options=options(server.base_url)
        )
    assert len(server.seen) == 2  # the first page, and the one that repeated its token
    assert {step.outcome for step in planned.steps} == {Status.NOT_ATTEMPTED}
    assert all("page token" in (step.reason or "") for step in planned.steps)


async def test_a_listing_that_never_ends_is_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner, "MAX_PAGES", 5)
    pages = iter(range(1_000_000))

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return listing((f"accounts/{ACCOUNT}/secrets/a", "A"), token=f"page-{next(pages)}")

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(2), credentials=credentials(), options=options(server.base_url)
        )
    assert len(server.seen) == 5
    assert "the listing went past" in summary.stopped_accounts[ACCOUNT]
    assert summary.count(Status.NOT_ATTEMPTED) == 2


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", '{"secrets": {}}', '{"secrets": [1]}', '{"secrets": [{"name": 1}]}',
     '{"nextPageToken": 5}'],
)  # fmt: skip
async def test_a_listing_of_the_wrong_shape_makes_the_account_unreachable(body: str) -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text=body, content_type="application/json")

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(2), credentials=credentials(), options=options(server.base_url)
        )
    assert summary.count(Status.NOT_ATTEMPTED) == 2
    assert "could not list" in summary.stopped_accounts[ACCOUNT]
    assert all(method == "GET" for method, _, _ in server.seen)


# 7. Bounded waits


@pytest.mark.parametrize(
    "retry_after",
    ["999999999", "Sat, 01 Jan 2101 00:00:00 GMT"],
)
async def test_a_retry_after_past_max_wait_fails_at_once(retry_after: str) -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return listing()
        return json_answer(
            {"code": 8, "message": "slow"}, status=429, **{"Retry-After": retry_after}
        )

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(5),
            credentials=credentials(),
            options=options(server.base_url, concurrency=1, max_wait=60),
        )
    assert len(server.seen) == 2  # the listing and one write: the account stops there
    assert summary.count(Status.FAILED) == 1
    assert summary.count(Status.NOT_ATTEMPTED) == 4
    assert "more than the 60s the run may wait" in summary.stopped_accounts[ACCOUNT]


async def test_the_deadline_cancels_what_is_in_flight_and_reports_the_rest(tmp_path: Path) -> None:
    config = EmulatorConfig(keys={API_KEY: None}, faults=Faults(write_latency=30.0))
    report = tmp_path / "r.jsonl"
    async with running_emulator(config) as server:
        summary = await apply_secrets(
            specs(20),
            credentials=credentials(),
            options=options(server.base_url, concurrency=4, deadline=0.3),
            report=report,
        )
    assert summary.stopped == "deadline reached (0.3s)"
    results = [json.loads(line) for line in report.read_text().splitlines()[:-1]]
    assert len(results) == 20
    in_flight = [r for r in results if r["status"] == "failed"]
    assert len(in_flight) == 4
    assert all(r["error"].startswith("deadline reached (0.3s) before an answer") for r in in_flight)
    rest = [r for r in results if r["status"] == "not_attempted"]
    assert len(rest) == 16 and {r["error"] for r in rest} == {"deadline reached (0.3s)"}


# 8. Stop hammering the dead


async def test_an_account_whose_writes_all_drop_stops_after_a_run_of_failures() -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return listing()
        request.protocol.force_close()
        return web.Response()

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(1000),
            credentials=credentials(),
            options=options(server.base_url, concurrency=32, retry=FAST_RETRY),
        )
    writes = len(server.seen) - 1
    assert writes <= DEAD_AFTER + 32 * (FAST_RETRY.retries + 1)  # those already in flight
    assert summary.total == 1000
    assert summary.count(Status.SUCCEEDED) == 0
    assert "connection failures in a row" in summary.stopped_accounts[ACCOUNT]


# 9. Bounded bodies


async def test_a_huge_answer_is_not_read_whole() -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"secrets": [' + b" " * (8 << 20))  # 8 MiB and no end
        return response

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(1), credentials=credentials(), options=options(server.base_url, retry=FAST_RETRY)
        )
    assert "over 1048576 bytes" in summary.stopped_accounts[ACCOUNT]


async def test_a_huge_answer_of_declared_length_is_cut_at_the_limit_too() -> None:
    # Its Content-Length is not looked at: the body is read up to the limit and refused there.
    async def answer(request: web.BaseRequest) -> web.Response:
        return web.Response(
            body=b'{"secrets": [' + b" " * (2 << 20), content_type="application/json"
        )

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(1), credentials=credentials(), options=options(server.base_url, retry=FAST_RETRY)
        )
    assert "over 1048576 bytes" in summary.stopped_accounts[ACCOUNT]


# 10. A rejected key stops only its accounts


async def test_a_rejected_key_stops_only_the_accounts_that_use_it() -> None:
    keys = Credentials(
        SecretValue(API_KEY), {"acct-b": SecretValue("revoked-key"), "acct-c": SecretValue(API_KEY)}
    )
    wanted = specs(10, "acct-a") + specs(10, "acct-b") + specs(10, "acct-c")
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        summary = await apply_secrets(wanted, credentials=keys, options=options(server.base_url))
    assert summary.aborted is None  # exit 1, not 3: other keys were fine
    assert summary.count(Status.SUCCEEDED) == 20
    assert summary.count(Status.NOT_ATTEMPTED) == 10
    assert list(summary.stopped_accounts) == ["acct-b"]
    assert "401" in summary.stopped_accounts["acct-b"]


async def test_every_key_rejected_aborts_the_run() -> None:
    keys = Credentials(SecretValue("one"), {"acct-b": SecretValue("two")})
    wanted = specs(3, "acct-a") + specs(3, "acct-b")
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        summary = await apply_secrets(wanted, credentials=keys, options=options(server.base_url))
    assert summary.aborted is not None and "401" in summary.aborted


# 11. Reasons on stderr, once per account


async def test_an_unreachable_account_is_named_once_on_stderr(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "secrets:\n" + "".join(f"  - {{keyName: K{i}, value: v}}\n" for i in range(50))
    )
    async with running_emulator(EmulatorConfig(keys={API_KEY: None})) as server:
        base_url = server.base_url  # nothing listens there once it is closed
    code, _, err = await run_main(
        "apply", str(manifest), "--account", ACCOUNT, "--base-url", base_url, "--retries", "1"
    )
    assert code == 1
    named = [
        line for line in err.splitlines() if line.startswith(f"bulk-secrets: account {ACCOUNT}:")
    ]
    assert len(named) == 1
    assert "could not list" in named[0] and "50 not attempted" in err


# 12. A good neighbour by default


def test_the_default_rate_is_half_the_documented_envelope() -> None:
    assert DEFAULT_MAX_RPS == 6000 / 60 / 2
    assert ApplyOptions().max_rps == 50


async def test_a_listing_past_the_secrets_limit_is_cut_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(planner, "MAX_LISTED", 3)
    pages = iter(range(1_000_000))

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        page = next(pages)
        names = [(f"accounts/{ACCOUNT}/secrets/s-{page}-{i}", f"S_{page}_{i}") for i in range(2)]
        return listing(*names, token=f"page-{page}")

    async with hostile_server(answer) as server:
        summary = await apply_secrets(
            specs(1), credentials=credentials(), options=options(server.base_url)
        )
    assert len(server.seen) == 2  # 4 secrets listed: past the limit of 3
    assert "the listing went past" in summary.stopped_accounts[ACCOUNT]
