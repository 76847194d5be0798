"""A supervisor for a fixed set of child processes: keeps them running, stops them cleanly.

- Every child is a real process the supervisor holds a handle on (``children.py``: its own process
  group, SIGTERM should the supervisor itself die, even by ``kill -9``).
- A child that exits while nothing asked it to is restarted after a capped exponential backoff
  with jitter; a child that ran ``stable_after`` seconds starts again from the first delay. A
  child may have a restart policy of its own (``ChildSpec.policy``), e.g. a longer first delay.
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
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from mpush.exits import Exit, describe
from mpush.orchestration.children import (
    Child,
    ChildSpec,
    RestartPolicy,
    die_with_parent,
)
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
        self.policy = policy or RestartPolicy()
        self.children = [
            Child(
                spec,
                log_dir / f"{spec.name}.log",
                backoff=Backoff(self._policy(spec).first_delay, self._policy(spec).max_delay),
            )
            for spec in specs
        ]
        self._env = env
        self._log_dir = log_dir
        self.stopping = Shutdown()
        self._exit_code = Exit.OK
        self._signals = 0
        self._preexec: Callable[[], None] | None = None

    def _policy(self, spec: ChildSpec) -> RestartPolicy:
        return spec.policy or self.policy

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
                child.kill()
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
            child.kill()

    async def _stop_after(self, seconds: float) -> None:
        if not await self.stopping.sleep(seconds):
            self.stop(f"ran for {seconds:g}s")

    async def _spawn(self, child: Child) -> None:
        await child.spawn(env=self._env, preexec=self._preexec)

    async def _keep(self, child: Child) -> None:
        """Restart ``child`` whenever it exits, until the supervisor stops."""
        policy = self._policy(child.spec)
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
            if self.stopping.requested:
                return
            outcome = child.judge(code, policy)
            if not outcome.restart:
                log.error("%s; %s", outcome.detail, child.last_line() or "see its log")
                self.stop(f"{child.spec.name} cannot run", Exit.FAILURE)
                return
            if outcome.failing:
                log.error("%s; %d times in a row: giving up", outcome.detail, child.failures)
                self.stop(f"{child.spec.name} keeps failing", Exit.FAILURE)
                return
            log.warning("%s; restarting in %.2fs", outcome.detail, outcome.delay)
            if await self.stopping.sleep(outcome.delay):
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
                child.send(signal.SIGTERM)
            for child in group:
                await self._reap(child)

    async def _reap(self, child: Child) -> None:
        code = await child.reap(self._policy(child.spec).stop_timeout)
        if code != 0 and self._exit_code == Exit.OK:
            self._exit_code = Exit.FAILURE
        log.info("%s (pid %s) stopped: %s", child.spec.name, child.pid, describe(code))
