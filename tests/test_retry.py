"""mpush.retry: the one retry loop and the process-wide outage record.

These drive the loops with calls that fail the way redis-py fails (its own exception types); the
outage tests with real redis-server processes (test_mpush, test_vpush, test_http, …) show the same
loops riding out real outages.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.exceptions as rex

from mpush.errors import TransientError
from mpush.retry import Backoff, Step, Stopped, keep_trying, outage_of, retrying
from mpush.runtime.shutdown import Shutdown

FAST = Backoff(base=0.001, cap=0.002)


class _Failing:
    """A call that fails ``times`` times as redis-py does, then answers ``"ok"``."""

    def __init__(self, times: int, error: Exception | None = None) -> None:
        self.times = times
        self.error = error or rex.ConnectionError("connection refused")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "ok"


async def test_retrying_waits_out_transient_errors_and_logs_the_outage_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = _Failing(3)
    outage = outage_of("redis test-retrying:1/0")
    held: list[Exception] = []
    with caplog.at_level(logging.WARNING, logger="mpush.outage"):
        result = await retrying(call, outage=outage, backoff=FAST, on_transient=held.append)
    assert result == "ok"
    assert len(held) == 3
    assert all(isinstance(e, TransientError) for e in held)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unavailable (ConnectionError" in line for line in lines) == 1
    assert sum("back after" in line for line in lines) == 1


async def test_retrying_raises_what_is_not_transient_at_once() -> None:
    call = _Failing(5, error=rex.ResponseError("WRONGTYPE Operation against a key"))
    with pytest.raises(rex.ResponseError):
        await retrying(call, outage=outage_of("redis test-permanent:1/0"), backoff=FAST)
    assert call.calls == 1


async def test_retrying_gives_up_at_its_deadline() -> None:
    call = _Failing(10_000)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TransientError):
        await retrying(
            call,
            outage=outage_of("redis test-deadline:1/0"),
            deadline=began + 0.1,
            backoff=FAST,
        )
    assert loop.time() - began < 1.0


async def test_retrying_stops_when_shutdown_is_requested() -> None:
    shutdown = Shutdown()
    shutdown.request("test")
    with pytest.raises(Stopped):
        await retrying(
            _Failing(10),
            outage=outage_of("redis test-stop:1/0"),
            shutdown=shutdown,
        )


async def test_keep_trying_runs_until_done_and_ignores_untouched_steps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = outage_of("redis test-keep:1/0")
    turns: list[str] = []

    async def step() -> object:
        turns.append("step")
        if len(turns) == 1:
            raise rex.TimeoutError("timed out")
        if len(turns) == 2:
            return Step.UNTOUCHED  # no news of Redis: the outage is not over
        return Step.DONE

    with caplog.at_level(logging.WARNING, logger="mpush.outage"):
        await asyncio.wait_for(keep_trying(step, outage=outage, backoff=FAST), 5)
    assert len(turns) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "back after" in line] == [lines[-1]]
    assert not outage.active


async def test_keep_trying_returns_on_shutdown() -> None:
    shutdown = Shutdown()

    async def step() -> None:
        shutdown.request("done")

    await asyncio.wait_for(
        keep_trying(step, outage=outage_of("redis test-shutdown:1/0"), shutdown=shutdown), 5
    )


def test_outage_records_are_process_wide() -> None:
    assert outage_of("redis 10.0.0.5:6379/0") is outage_of("redis 10.0.0.5:6379/0")
    assert outage_of("redis 10.0.0.5:6379/0") is not outage_of("redis 10.0.0.6:6379/0")
