"""Request deadlines by one sweep: a late request times out, any other cancellation passes on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from aiohttp import web

from bulk_secrets import errors
from bulk_secrets.client import SecretsClient
from bulk_secrets.watchdog import MAX_TICK, MIN_TICK, Watchdog

from .helpers import credentials, specs

pytestmark = pytest.mark.anyio


async def _request(watchdog: Watchdog, forever: asyncio.Event) -> str:
    """What the client does around a request: ``forever`` is the answer that never comes."""
    task = watchdog.begin()
    try:
        await forever.wait()
    except asyncio.CancelledError:
        if watchdog.expired(task):
            return "timed out"
        raise
    finally:
        watchdog.end(task)
    return "answered"


async def _started(watchdog: Watchdog) -> tuple[asyncio.Task[str], asyncio.Event]:
    forever = asyncio.Event()
    task = asyncio.create_task(_request(watchdog, forever))
    await asyncio.sleep(0)  # one turn: the task begins its request and waits
    return task, forever


async def test_a_request_past_its_limit_times_out_and_its_task_is_not_left_cancelled() -> None:
    watchdog = Watchdog(0.0)
    task, _ = await _started(watchdog)
    watchdog.sweep()
    assert await task == "timed out"
    assert task.cancelling() == 0
    watchdog.stop()


async def test_a_request_within_its_limit_is_left_alone() -> None:
    watchdog = Watchdog(3600.0)
    task, forever = await _started(watchdog)
    watchdog.sweep()
    forever.set()
    assert await task == "answered"
    watchdog.stop()


async def test_a_cancellation_from_outside_is_passed_on_even_when_the_deadline_came_too() -> None:
    watchdog = Watchdog(0.0)
    task, _ = await _started(watchdog)
    watchdog.sweep()
    task.cancel()  # the run's deadline, or a signal, in the same turn
    with pytest.raises(asyncio.CancelledError):
        await task

    alone = Watchdog(3600.0)
    task, _ = await _started(alone)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_answer_in_the_deadlines_turn_comes_too_late_and_leaves_no_stray_cancel() -> None:
    watchdog = Watchdog(0.0)
    task, forever = await _started(watchdog)
    forever.set()  # the answer is in; the task has not run since
    watchdog.sweep()
    assert await task == "timed out"  # cancelled where it waited, not at a later await
    assert task.cancelling() == 0


def test_one_watchdog_serves_run_after_run_each_on_its_own_loop() -> None:
    """It keeps the loop of its ``start`` (to find the current task without asking for the
    running loop) and forgets it at ``stop``: the next run's loop is not the last one's."""
    watchdog = Watchdog(5)

    async def one_request(start: bool) -> bool:
        if start:
            watchdog.start()
        task = watchdog.begin()
        watchdog.end(task)
        watchdog.stop()
        return task is asyncio.current_task()

    assert asyncio.run(one_request(start=True))
    assert asyncio.run(one_request(start=False))
    assert asyncio.run(one_request(start=True))


def test_the_tick_is_an_eighth_of_the_limit_within_bounds() -> None:
    assert Watchdog(0.0).tick == MIN_TICK
    assert Watchdog(0.4).tick == pytest.approx(0.05)
    assert Watchdog(300.0).tick == MAX_TICK


@asynccontextmanager
async def silent() -> AsyncIterator[str]:
    """A loopback server that reads each request and never answers it."""
    never = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        await never.wait()
        raise AssertionError("never answered")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        never.set()
        await runner.cleanup()


async def test_the_client_fails_a_request_that_gets_no_answer_and_goes_on() -> None:
    async with (
        silent() as base_url,
        SecretsClient(base_url, credentials(), connections=4, timeout=0.05) as client,
    ):
        for spec in specs(3):  # each times out; none leaves its task cancelled
            with pytest.raises(errors.RequestTimeout, match=r"POST got no answer within 0\.05s"):
                await client.create(spec)
            assert asyncio.current_task() is not None
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        with anyio.move_on_after(0.05) as scope:  # a cancel scope of the caller's own
            await client.create(specs(1)[0])
        assert scope.cancelled_caught
