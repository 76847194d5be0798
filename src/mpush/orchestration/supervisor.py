"""A supervisor for a set of child processes: keeps them running, stops them cleanly.

- Every child is a real process the supervisor holds a handle on, started in its own process group
  (so a terminal's Ctrl-C reaches the supervisor only, which forwards it once) and, on Linux, told
  to receive SIGTERM should the supervisor itself die (no orphans, even after a ``kill -9``).
- A child that exits while nothing asked it to is restarted after a capped exponential backoff
  with jitter; a child that ran ``stable_after`` seconds starts again from the first delay.
- Restarting cannot fix a bad configuration: a child exiting with code 2 stops everything, as does
  a child that failed ``give_up_after`` times in a row without ever running stable.
- SIGTERM/SIGINT stops the children stage by stage, highest stage first (a front end stops taking
  requests before the workers behind it go), each stage given ``stop_timeout`` seconds before
  SIGKILL. A second signal kills every child at once.

Exit codes of :meth:`Supervisor.run` (``mpush.exits``): ``OK`` stopped on request, every child
stopped; ``FAILURE`` a child could not be kept running; ``SECOND_SIGNAL`` a second signal: the
children were killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mpush.exits import Exit, describe, restartable
from mpush.retry import Backoff
from mpush.runtime.shutdown import Shutdown

__all__ = [
    "Child",
    "ChildSpec",
    "RestartPolicy",
    "Supervisor",
    "die_with_parent",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    """One supervised program: a name, its argv, and its stage (stopped before lower stages)."""

    name: str
    argv: Sequence[str]
    stage: int = 0


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 10.0
    give_up_after: int = 8
    stop_timeout: float = 10.0


@dataclass
class Child:
    """A supervised child as it is now."""

    spec: ChildSpec
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # in a row, without a stable run
    backoff: Backoff = field(default_factory=Backoff)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` (Linux) making a child receive SIGTERM when this process dies; else None.

    The C function is looked up here, in the parent: the child, between fork and exec, only calls
    it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Supervisor:
    """Runs ``specs`` as child processes until stopped; see the module docstring."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        log_dir: Path,
        *,
        policy: RestartPolicy | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.policy = policy = policy or RestartPolicy()
        self.children = [
            Child(
                spec,
                log_dir / f"{spec.name}.log",
                backoff=Backoff(policy.first_delay, policy.max_delay),
            )
            for spec in specs
        ]
        self._env = env
        self._log_dir = log_dir
        self.stopping = Shutdown()
        self._exit_code = Exit.OK
        self._signals = 0
        self._preexec: Callable[[], None] | None = None

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.spec.name == name)

    def stop(self, reason: str, exit_code: Exit = Exit.OK) -> None:
        """Ask every child to stop (idempotent; the first reason and exit code win)."""
        if not self.stopping.requested:
            self._exit_code = exit_code
        self.stopping.request(reason, exit_code)

    async def start(self) -> None:
        """Start every child, lowest stage first."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._preexec = die_with_parent()
        for child in sorted(self.children, key=lambda c: c.spec.stage):
            await self._spawn(child)

    async def run(self, *, stop_after: float | None = None) -> int:
        """Start the children (unless started), keep them running until stopped; the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            if not any(child.process for child in self.children):
                await self.start()
            async with asyncio.TaskGroup() as group:
                keepers = [group.create_task(self._keep(child)) for child in self.children]
                if stop_after is not None:
                    group.create_task(self._stop_after(stop_after))
                await self.stopping.wait()
                await asyncio.wait(keepers)  # no restart is under way any more
                await self._stop_all()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for child in self.children:  # only after a fault of our own: never leave one behind
                _kill(child)
        return self._exit_code

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            self.stop(f"{name} received")
            return
        log.warning("second signal (%s): killing every child at once", name)
        self._exit_code = Exit.SECOND_SIGNAL
        for child in self.children:
            _kill(child)

    async def _stop_after(self, seconds: float) -> None:
        if not await self.stopping.sleep(seconds):
            self.stop(f"ran for {seconds:g}s")

    async def _spawn(self, child: Child) -> None:
        with child.log_path.open("ab") as out:
            child.process = await asyncio.create_subprocess_exec(
                *child.spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                process_group=0,
                preexec_fn=self._preexec,
            )
        child.started = time.monotonic()

    async def _keep(self, child: Child) -> None:
        """Restart ``child`` whenever it exits, until the supervisor stops."""
        policy = self.policy
        while not self.stopping.requested:
            if child.process is None:
                await self._spawn(child)
            assert child.process is not None
            exited = asyncio.ensure_future(child.process.wait())
            stopped = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not exited.done():
                exited.cancel()
                return  # _stop_all takes it from here
            code = exited.result()
            ran = time.monotonic() - child.started
            if self.stopping.requested:
                return
            detail = f"{child.spec.name} (pid {child.pid}) ended: {describe(code)}"
            tail = _last_line(child.log_path)
            if not restartable(code):
                log.error("%s; %s", detail, tail or "see its log")
                self.stop(f"{child.spec.name} cannot run", Exit.FAILURE)
                return
            if ran >= policy.stable_after:
                child.failures = 0
                child.backoff.reset()
            child.failures += 1
            if child.failures > policy.give_up_after:
                log.error("%s; %d times in a row: giving up", detail, child.failures)
                self.stop(f"{child.spec.name} keeps failing", Exit.FAILURE)
                return
            delay = child.backoff.next_delay()
            log.warning("%s; restarting in %.2fs", detail, delay)
            if await self.stopping.sleep(delay):
                return
            await self._spawn(child)
            child.restarts += 1
            log.info(
                "%s restarted (pid %s, restart %d)", child.spec.name, child.pid, child.restarts
            )

    async def _stop_all(self) -> None:
        """SIGTERM the children stage by stage, highest first; SIGKILL what outlives the timeout."""
        for stage in sorted({child.spec.stage for child in self.children}, reverse=True):
            group = [c for c in self.children if c.spec.stage == stage and c.alive]
            for child in group:
                with contextlib.suppress(ProcessLookupError):
                    assert child.process is not None
                    child.process.send_signal(signal.SIGTERM)
            for child in group:
                await self._reap(child)

    async def _reap(self, child: Child) -> None:
        assert child.process is not None
        try:
            async with asyncio.timeout(self.policy.stop_timeout):
                code = await child.process.wait()
        except TimeoutError:
            log.warning(
                "%s (pid %s) still running %.0fs after SIGTERM: SIGKILL",
                child.spec.name,
                child.pid,
                self.policy.stop_timeout,
            )
            _kill(child)
            code = await child.process.wait()
        if code != 0 and self._exit_code == Exit.OK:
            self._exit_code = Exit.FAILURE
        log.info("%s (pid %s) stopped: %s", child.spec.name, child.pid, describe(code))


def _kill(child: Child) -> None:
    if child.alive:
        assert child.process is not None
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()


def _last_line(path: Path, tail: int = 4096) -> str:
    """The last line a child wrote to its log (where a failure usually says why)."""
    with contextlib.suppress(OSError), path.open("rb") as log_file:
        log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - tail))
        lines = log_file.read().decode(errors="replace").strip().splitlines()
        if lines:
            return lines[-1]
    return ""
