"""One assigned instance on an agent's host: its process, its restarts, the state it reports.

An mpush service runs as ``python -m mpush <service> --config <iid>.json --service-namespace NS
--service-label <iid> --service-release <release> --redis URL [--standby]`` (the settings table
is the config file; the label lets the agent, and the controller, find its registration; the
release tags its registration and metrics); a command runs as given, with ``RCONTROL_INSTANCE``,
``RCONTROL_DEPLOYMENT``, ``RCONTROL_HOST`` and ``RCONTROL_RELEASE`` in its environment. A run
with a git source runs from the deploy dir ndeploy built for it (``builds.py``). Both get
the agent's environment without its ``MPUSH_*`` variables, so an instance is configured by its
declaration only, and its output goes to ``<work dir>/<iid>.log``.

The process machinery is ``orchestration.children``'s: its own process group, SIGTERM when the
agent dies (even by ``kill -9``), restarts after a capped exponential backoff. A crash loop is
backed off (up to ``restart_max_delay``) and reported ``failing`` after ``failing_after`` crashes
in a row; an exit with code 2 (bad configuration) is reported ``exited`` and never restarted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mpush.config import SERVICES
from mpush.orchestration.children import Child, ChildSpec, RestartPolicy
from mpush.orchestration.rcontrol.builds import build_env, build_python
from mpush.orchestration.rcontrol.hostinfo import CpuMeter
from mpush.orchestration.rcontrol.state import STANDBY, Assignment, Report, State
from mpush.retry import Backoff

__all__ = ["Instance", "Launch"]

log = logging.getLogger(__name__)

COMMAND_READY_AFTER = 1.0  # seconds a command must run to count as ready (it cannot register)


@dataclass(frozen=True)
class Launch:
    """How this agent starts instances."""

    host: str
    namespace: str
    redis: str
    cluster: bool
    python: str
    work_dir: Path
    env: Mapping[str, str]  # the agent's environment without MPUSH_* variables
    policy: RestartPolicy
    preexec: Callable[[], None] | None


class Instance:
    """One assigned instance, started, watched and restarted by the agent's tick."""

    def __init__(self, instance_id: str, assignment: Assignment, launch: Launch) -> None:
        self.id = instance_id
        self.assignment = assignment
        self._launch = launch
        policy = launch.policy
        self.child = Child(
            ChildSpec(instance_id, ()),
            launch.work_dir / f"{instance_id}.log",
            backoff=Backoff(policy.first_delay, policy.max_delay),
        )
        self.state = State.PENDING
        self.starts = 0  # processes started (or tried) for this placement
        self.since = time.time()
        self.code: int | None = None
        self.reason = ""
        self.restart_at: float | None = None  # monotonic time of the next start
        self.service_id = ""  # its registration, once registered
        self.cpu = CpuMeter()
        self.cpu_share = 0.0
        self.unassigned_at: float | None = None  # monotonic: when its assignment went away
        self.signalled_at: float | None = None  # monotonic: when it was sent SIGTERM
        self._waiter: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.child.alive

    @property
    def stopping(self) -> bool:
        return self.unassigned_at is not None

    def argv(self, python: str | None = None) -> list[str]:
        run = self.assignment.run
        if run.command is not None:
            return list(run.command)
        assert run.service is not None
        launch = self._launch
        config = launch.work_dir / f"{self.id}.json"
        config.write_text(json.dumps(run.settings), encoding="utf-8")
        argv = [python or launch.python, "-m", "mpush", *SERVICES[run.service].command]
        argv += ["--config", str(config), "--service-namespace", launch.namespace]
        argv += ["--service-label", self.id, "--service-release", self.assignment.release]
        if "redis" in run.settings:  # its queues elsewhere: the registry stays with rcontrol
            argv += ["--service-redis", launch.redis]
        else:
            argv += ["--redis", launch.redis] + (["--cluster"] if launch.cluster else [])
        if self.assignment.role == STANDBY:
            argv.append("--standby")
        return argv

    def building(self, detail: str, now: float) -> None:
        """Its release is being built: it starts once the build is ready (looked at again at
        the agent's next turn)."""
        self.reason = detail
        self.restart_at = now
        self._set(State.BUILDING)

    def unbuildable(self, detail: str) -> None:
        """Its release cannot be built on this host: reported exited, never started."""
        if self.state != State.EXITED:
            log.error("%s cannot run: %s", self.id, detail)
        self.reason = detail
        self.restart_at = None
        self._set(State.EXITED)

    async def start(self, changed: asyncio.Event, build: Path | None = None) -> None:
        """Start (or restart) the process (from the deploy dir ``build`` when its run has a
        source); ``changed`` is set when it exits. A program that cannot be started (not found,
        not executable) is backed off and retried like a crash."""
        launch = self._launch
        env = {
            **launch.env,
            "RCONTROL_INSTANCE": self.id,
            "RCONTROL_DEPLOYMENT": self.assignment.deployment,
            "RCONTROL_HOST": launch.host,
            "RCONTROL_RELEASE": self.assignment.release,
        }
        python = launch.python
        if build is not None:
            python, own = build_python(build, launch.python)
            command = self.assignment.run.command is not None
            build_env(build, env, own_python=own, command=command)
        self.starts += 1
        try:
            launch.work_dir.mkdir(parents=True, exist_ok=True)
            child = Child(
                ChildSpec(self.id, self.argv(python)),
                self.child.log_path,
                failures=self.child.failures,
                backoff=self.child.backoff,
            )
            await child.spawn(env=env, preexec=launch.preexec)
        except OSError as exc:
            self._cannot_start(exc)
            return
        self.child = child
        self.restart_at = None
        self.service_id = ""
        self._set(State.STARTING)
        log.info("%s started (pid %s): %s", self.id, self.child.pid, self.assignment.run.describe())
        self._waiter = asyncio.create_task(self._wait(changed))

    def _cannot_start(self, exc: OSError) -> None:
        child = self.child
        child.failures += 1
        delay = child.backoff.next_delay()
        self.restart_at = time.monotonic() + delay
        self.code = None
        self.reason = f"cannot start: {exc}"
        failing = child.failures > self._launch.policy.give_up_after
        self._set(State.FAILING if failing else State.BACKOFF)
        log.error("%s %s; trying again in %.2fs", self.id, self.reason, delay)

    async def _wait(self, changed: asyncio.Event) -> None:
        process = self.child.process
        assert process is not None
        code = await process.wait()
        self._exited(code)
        changed.set()

    def _exited(self, code: int) -> None:
        self.code = code
        self.service_id = ""
        if self.stopping:
            log.info("%s (pid %s) stopped: exit code %s", self.id, self.child.pid, code)
            return
        outcome = self.child.judge(code, self._launch.policy)
        self.reason = self.child.last_line()
        if not outcome.restart:
            log.error("%s; not restarted (last line: %s)", outcome.detail, self.reason or "-")
            self._set(State.EXITED)
            return
        self.restart_at = time.monotonic() + outcome.delay
        self._set(State.FAILING if outcome.failing else State.BACKOFF)
        log.warning("%s; restarting in %.2fs", outcome.detail, outcome.delay)

    def observe(self, registered: tuple[str, str] | None, now: float) -> None:
        """Update the state of a running process from its registration (service id and the
        ``standby`` field of a registration whose pid is the process's own), or its age."""
        if not self.alive:
            return
        self.cpu_share = self.cpu.sample(self.child.pid, now)
        failing = self.child.failures > self._launch.policy.give_up_after
        if self.assignment.run.command is not None:
            up = now - self.child.started >= COMMAND_READY_AFTER
            state = State.READY if up else State.STARTING
        elif registered is None:
            state = State.STARTING
        else:
            self.service_id, standby = registered
            state = State.STANDBY if standby == "1" else State.READY
        if state == State.STARTING and failing:
            state = State.FAILING
        if self.stopping:
            state = State.STOPPING
        self._set(state)

    def unassign(self, now: float) -> None:
        """Its assignment is gone: a registered service stops by itself (the controller deleted
        its registration); anything else is sent SIGTERM now."""
        if self.unassigned_at is not None:
            return
        self.unassigned_at = now
        self.restart_at = None
        if self.alive:
            self._set(State.STOPPING)
            if not self.service_id:
                self.terminate(now)

    def terminate(self, now: float) -> None:
        self.signalled_at = now
        self.child.send(signal.SIGTERM)

    def nudge(self, now: float, timeout: float) -> None:
        """While stopping: SIGTERM after ``timeout`` s, SIGKILL ``timeout`` s after that."""
        if not self.alive or self.unassigned_at is None:
            return
        if self.signalled_at is None and now - self.unassigned_at >= timeout:
            log.warning("%s did not stop within %.0fs of its retirement: SIGTERM", self.id, timeout)
            self.terminate(now)
        elif self.signalled_at is not None and now - self.signalled_at >= timeout:
            log.warning("%s still running %.0fs after SIGTERM: SIGKILL", self.id, timeout)
            self.child.kill()

    def report(self, host: str) -> Report:
        return Report(
            self.id,
            host=host,
            state=self.state,
            pid=self.child.pid if self.alive else None,
            service_id=self.service_id,
            role=self.assignment.role,
            release=self.assignment.release,
            deployment=self.assignment.deployment,
            restarts=max(0, self.starts - 1),
            cpu=self.cpu_share,
            code=self.code,
            reason=self.reason,
            since=self.since,
            placed=self.assignment.placed,
        )

    def _set(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.since = time.time()

    async def close(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            await asyncio.gather(self._waiter, return_exceptions=True)
