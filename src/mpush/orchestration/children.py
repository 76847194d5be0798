"""Child processes held by a parent: what every supervisor of mpush shares.

- A child is a real process the parent keeps a handle on, started in its own process group (so a
  terminal's Ctrl-C reaches the parent only, which forwards it once) and, on Linux, told to receive
  SIGTERM should the parent die (``die_with_parent``: no orphans, even after a ``kill -9``).
- ``Child.judge`` decides what an exit means: restart after a capped exponential backoff with
  jitter (a child that ran ``stable_after`` seconds starts again from the first delay); never
  restart a child whose code says a restart cannot help (``mpush.exits.restartable``: bad
  configuration, code 2); and count the failures in a row, so a parent can give up, or report the
  child as failing, after ``give_up_after`` of them.
- ``Child.stop``: SIGTERM, ``stop_timeout`` seconds, then SIGKILL.

``mpush demo``'s supervisor (``supervisor.py``) runs a fixed set of children and stops them all
when one cannot be kept running; the rcontrol agent runs children that come and go with its
assignments and reports a crash-looping one as failing while it keeps backing it off.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mpush.exits import describe, restartable
from mpush.retry import Backoff

__all__ = [
    "Child",
    "ChildSpec",
    "Outcome",
    "RestartPolicy",
    "die_with_parent",
    "last_line",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 10.0
    give_up_after: int = 8
    stop_timeout: float = 10.0


@dataclass(frozen=True)
class ChildSpec:
    """One supervised program: a name, its argv, its stage (stopped before lower stages), and
    a restart policy of its own if it needs one (else its supervisor's)."""

    name: str
    argv: Sequence[str]
    stage: int = 0
    policy: RestartPolicy | None = None


@dataclass(frozen=True)
class Outcome:
    """What an exit of a child means (``Child.judge``)."""

    code: int
    detail: str  # "<name> (pid N) ended: code 1 (failure)"
    restart: bool  # False: a restart cannot help (bad configuration)
    delay: float = 0.0  # seconds to wait before the restart
    failing: bool = False  # more than give_up_after failures in a row, none of them stable


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

    async def spawn(
        self,
        *,
        env: Mapping[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        """Start the program in a process group of its own, its output appended to its log.

        The group is made in the child before exec (``setpgid``), which every event loop
        supports (uvloop has no ``process_group``).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

        def in_own_group() -> None:
            os.setpgid(0, 0)
            if preexec is not None:
                preexec()

        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                preexec_fn=in_own_group,
            )
        self.started = time.monotonic()

    def judge(self, code: int, policy: RestartPolicy) -> Outcome:
        """Account for an exit with ``code``: whether and when to restart, and whether the child
        is failing (``policy.give_up_after`` failures in a row without a stable run)."""
        detail = f"{self.spec.name} (pid {self.pid}) ended: {describe(code)}"
        if not restartable(code):
            return Outcome(code, detail, restart=False)
        if time.monotonic() - self.started >= policy.stable_after:
            self.failures = 0
            self.backoff.reset()
        self.failures += 1
        return Outcome(
            code,
            detail,
            restart=True,
            delay=self.backoff.next_delay(),
            failing=self.failures > policy.give_up_after,
        )

    def send(self, signum: int) -> None:
        """Send ``signum`` to the child if it is still running."""
        if self.alive:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def kill(self) -> None:
        self.send(signal.SIGKILL)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code (None: never started)."""
        if self.process is None:
            return None
        self.send(signal.SIGTERM)
        return await self.reap(grace)

    async def reap(self, grace: float) -> int:
        """Wait ``grace`` seconds for the child to exit, then SIGKILL it; its exit code."""
        assert self.process is not None
        try:
            async with asyncio.timeout(grace):
                return await self.process.wait()
        except TimeoutError:
            log.warning(
                "%s (pid %s) still running %.0fs after SIGTERM: SIGKILL",
                self.spec.name,
                self.pid,
                grace,
            )
            self.kill()
            return await self.process.wait()

    def last_line(self) -> str:
        return last_line(self.log_path)


def last_line(path: Path, tail: int = 4096) -> str:
    """The last line a child wrote to its log (where a failure usually says why); lines of
    nothing but a frame's borders are skipped, and the borders around the text dropped."""
    with contextlib.suppress(OSError), path.open("rb") as log_file:
        log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - tail))
        lines = log_file.read().decode(errors="replace").strip().splitlines()
        for line in reversed(lines):
            text = line.strip(_FRAME)
            if any(char.isalnum() for char in text):
                return text
    return ""


_FRAME = " \t│║┃╭╮╰╯─━═┌┐└┘"
