"""The supervisor behind ``mpush demo``: restarts with backoff, staged stop, named exit codes.

Children are small real Python programs; signals are real signals. No Redis is involved.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mpush.exits import Exit, describe
from mpush.orchestration.supervisor import (
    ChildSpec,
    RestartPolicy,
    Supervisor,
)
from tests.helpers import wait_until

# Appends "START <pid>" to argv[1] when it starts and "TERM <monotonic time>" on SIGTERM, then
# exits 0 (or, with a third argument "ignore", ignores SIGTERM).
WORKER = """
import os, signal, sys, time
path = sys.argv[1]
def note(text):
    with open(path, "a") as f:
        f.write(text + "\\n")
def on_term(*_):
    note(f"TERM {time.monotonic()}")
    sys.exit(0)
if sys.argv[2:] == ["ignore"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)
note(f"START {os.getpid()}")
while True:
    time.sleep(0.02)
"""
FAST = RestartPolicy(first_delay=0.1, max_delay=0.4, stable_after=2.0, give_up_after=4,
                     stop_timeout=2.0)  # fmt: skip


def worker(name: str, notes: Path, *extra: str, stage: int = 0) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", WORKER, str(notes), *extra], stage)


def lines(path: Path, word: str) -> list[str]:
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith(word)]


def alive(pid: int) -> bool:
    """Running (an exited child not yet reaped by whoever adopted it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def until(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - polls files other processes write
            await asyncio.sleep(0.02)


async def test_a_killed_child_is_restarted_and_sigterm_stops_by_stage(tmp_path: Path) -> None:
    front, back = tmp_path / "front", tmp_path / "back"
    supervisor = Supervisor(
        [worker("back", back), worker("front", front, stage=1)], tmp_path / "logs", policy=FAST
    )
    running = asyncio.create_task(supervisor.run())
    await until(lambda: lines(front, "START") and lines(back, "START"))
    first = int(lines(back, "START")[0])
    os.kill(first, signal.SIGKILL)
    await until(lambda: len(lines(back, "START")) == 2)
    second = int(lines(back, "START")[1])
    assert second != first
    assert supervisor.child("back").pid == second
    assert supervisor.child("back").restarts == 1
    assert supervisor.child("front").restarts == 0
    os.kill(os.getpid(), signal.SIGTERM)  # forwarded once, stage by stage
    assert await asyncio.wait_for(running, 15) == Exit.OK
    (front_term,), (back_term,) = lines(front, "TERM"), lines(back, "TERM")
    assert float(front_term) < float(back_term), "the higher stage stops first"
    assert not alive(second)


async def test_restart_delays_grow_then_it_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="mpush.orchestration.supervisor")
    other = tmp_path / "other"
    failing = ChildSpec("failing", [sys.executable, "-c", "raise SystemExit(1)"])
    supervisor = Supervisor([failing, worker("other", other)], tmp_path / "logs", policy=FAST)
    began = time.monotonic()
    code = await asyncio.wait_for(supervisor.run(), 20)
    assert code == Exit.FAILURE
    delays = [float(r.getMessage().rsplit(" ", 1)[1].rstrip("s")) for r in caplog.records
              if "restarting in" in r.getMessage()]  # fmt: skip
    assert len(delays) == FAST.give_up_after
    assert max(delays) <= FAST.max_delay
    assert delays[-1] > delays[0], delays  # exponential, with jitter in [delay/2, delay]
    assert any("giving up" in r.getMessage() for r in caplog.records)
    assert time.monotonic() - began >= sum(delays) - 0.05  # the delays were really waited
    assert lines(other, "TERM"), "the healthy child was stopped with SIGTERM"


async def test_a_child_may_have_a_restart_policy_of_its_own(tmp_path: Path) -> None:
    """A child with a longer first delay is restarted later than its siblings (as the demo's
    rcontrol agents are, so that the death of their host is seen)."""
    quick, slow = tmp_path / "quick", tmp_path / "slow"
    late = RestartPolicy(first_delay=1.6, max_delay=1.6, stable_after=2.0, stop_timeout=2.0)
    slow_spec = ChildSpec("slow", worker("slow", slow).argv, policy=late)
    supervisor = Supervisor([worker("quick", quick), slow_spec], tmp_path / "logs", policy=FAST)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: lines(quick, "START") and lines(slow, "START"))
    killed = time.monotonic()
    os.kill(int(lines(quick, "START")[0]), signal.SIGKILL)
    os.kill(int(lines(slow, "START")[0]), signal.SIGKILL)
    await until(lambda: len(lines(quick, "START")) == 2)
    assert time.monotonic() - killed < 0.8  # FAST: at most 0.1 s, plus a start
    assert len(lines(slow, "START")) == 1  # its own delay: 0.8 … 1.6 s
    await until(lambda: len(lines(slow, "START")) == 2)
    assert time.monotonic() - killed >= 0.8
    supervisor.stop("test over")
    assert await asyncio.wait_for(running, 15) == Exit.OK


async def test_bad_configuration_is_not_restarted(tmp_path: Path) -> None:
    other = tmp_path / "other"
    bad = ChildSpec("bad", [sys.executable, "-c", "print('config: port: no'); raise SystemExit(2)"])
    supervisor = Supervisor([worker("other", other), bad], tmp_path / "logs", policy=FAST)
    assert await asyncio.wait_for(supervisor.run(), 20) == Exit.FAILURE
    assert supervisor.child("bad").restarts == 0
    assert not supervisor.child("other").alive  # stopped (maybe before it even started up)
    assert "config: port: no" in (tmp_path / "logs" / "bad.log").read_text()


async def test_a_child_ignoring_sigterm_is_killed_and_reported(tmp_path: Path) -> None:
    stubborn = tmp_path / "stubborn"
    policy = RestartPolicy(stop_timeout=0.5)
    supervisor = Supervisor([worker("stubborn", stubborn, "ignore")], tmp_path, policy=policy)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: lines(stubborn, "START"))
    supervisor.stop("test over")
    code = await asyncio.wait_for(running, 15)
    assert code == Exit.FAILURE  # it did not stop cleanly
    pid = int(lines(stubborn, "START")[0])
    assert not alive(pid)


async def test_a_second_signal_kills_at_once(tmp_path: Path) -> None:
    stubborn = tmp_path / "stubborn"
    policy = RestartPolicy(stop_timeout=30)
    supervisor = Supervisor([worker("stubborn", stubborn, "ignore")], tmp_path, policy=policy)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: lines(stubborn, "START"))
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(0.2)
    assert not running.done()  # waiting for the stubborn child
    began = time.monotonic()
    os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(running, 10) == Exit.SECOND_SIGNAL
    assert time.monotonic() - began < 5
    assert not alive(int(lines(stubborn, "START")[0]))


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """kill -9 of the supervisor itself: its children get SIGTERM (Linux parent-death signal)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux only")
    notes = tmp_path / "notes"
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from mpush.orchestration.supervisor import ChildSpec, Supervisor\n"
        f"spec = ChildSpec('w', [sys.executable, '-c', {WORKER!r}, {str(notes)!r}])\n"
        f"asyncio.run(Supervisor([spec], Path({str(tmp_path)!r})).run())\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: lines(notes, "START"), message="the child to start")
        child = int(lines(notes, "START")[0])
        supervisor.kill()
        supervisor.wait(10)
        wait_until(lambda: lines(notes, "TERM"), message="the child to get SIGTERM")
        wait_until(lambda: not alive(child), message="the child to exit")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def test_exit_descriptions() -> None:
    assert describe(0) == "code 0"
    assert describe(2) == "code 2 (bad configuration)"
    assert describe(69) == "code 69 (Redis unreachable)"
    assert describe(-9) == "killed by SIGKILL"
