"""A small rcontrol installation for tests: agents and controllers as real ``python -m mpush
rcontrol …`` processes against a real redis-server, and what a test reads back from Redis."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mpush.keys import RcontrolKeys, ServiceKeys
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until

NS = "{rc}:t"
KEYS = RcontrolKeys(NS)
REGISTRY = ServiceKeys(NS)
IN, OUT = "{rc}:in", "{rc}:out"

# Fast clocks for tests: heartbeats every 0.3 s, a host dead 1.5 s after its last one, a dead
# controller's lease gone after 1.5 s.
AGENT_FLAGS = ("--heartbeat", "0.3", "--host-ttl", "1.5", "--restart-delay", "0.2")
CONTROLLER_FLAGS = (
    "--tick", "0.5", "--lease-ttl", "1.5", "--host-grace", "1.5", "--scale-interval", "0.2",
)  # fmt: skip

PIPE = f"""
[deployments.pipe]
service = "lpush"
replicas = REPLICAS
standby = STANDBY
[deployments.pipe.settings]
in = "{IN}"
out = ["{OUT}"]
pop_timeout = 0.3
service_check = 0.2
"""


def pipe(replicas: int = 1, standby: int = 0) -> str:
    return PIPE.replace("REPLICAS", str(replicas)).replace("STANDBY", str(standby))


class Rig:
    """Agents, controllers and the commands, in one namespace of ``env``."""

    def __init__(self, env: RedisEnv, spawn: Spawner, directory: Path) -> None:
        self.env = env
        self.spawn = spawn
        self.directory = directory
        self.agents: dict[str, ServiceProcess] = {}
        self.controllers: list[ServiceProcess] = []

    @property
    def client(self) -> Any:
        return self.env.client

    def _common(self) -> list[str]:
        return ["--redis", self.env.url, "--service-namespace", NS]

    def agent(self, host: str, *extra: str) -> ServiceProcess:
        work = self.directory / f"host-{host}"
        proc = self.spawn(
            "rcontrol", "agent", "--host", host, *self._common(), *AGENT_FLAGS,
            "--work-dir", str(work), *extra,
        )  # fmt: skip
        self.agents[host] = proc
        return proc

    def controller(self, *extra: str) -> ServiceProcess:
        proc = self.spawn("rcontrol", "controller", *self._common(), *CONTROLLER_FLAGS, *extra)
        self.controllers.append(proc)
        return proc

    def wait_up(self, *hosts: str) -> None:
        wait_until(
            lambda: (
                all(self.client.exists(KEYS.host(h)) for h in hosts) and self.client.get(KEYS.lease)
            ),
            timeout=30,
            message=lambda: f"agents {hosts} and a controller up:\n{self.logs()}",
        )

    def cli(self, *args: str) -> Any:
        return run_cli("rcontrol", *args, *self._common())

    def apply(self, text: str) -> Any:
        path = self.directory / f"spec-{time.monotonic_ns()}.toml"
        path.write_text(text)
        return self.cli("apply", str(path))

    def scale(self, name: str, replicas: int) -> None:
        done = self.cli("scale", name, str(replicas))
        assert done.returncode == 0, done.stderr

    def declaration(self, name: str) -> dict[str, Any]:
        """A deployment's declaration as stored, its rollout decoded."""
        found: dict[str, Any] = self.client.hgetall(KEYS.deployment(name))
        if found.get("rollout"):
            found["rollout"] = json.loads(found["rollout"])
        return found

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--json", "--events", "--count", "200")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def registrations(self, deployment: str = "pipe") -> list[dict[str, str]]:
        """Live registrations of the deployment's instances (standby ones included)."""
        ids = self.client.lrange(REGISTRY.ids, 0, -1)
        with self.client.pipeline(transaction=False) as pipe:
            for instance_id in ids:
                pipe.hgetall(REGISTRY.instance(instance_id))
            found = pipe.execute()
        return [r for r in found if r.get("label", "").startswith(f"{deployment}-")]

    def running(self, deployment: str = "pipe") -> list[dict[str, str]]:
        """Registrations of active (not standby) instances."""
        return [r for r in self.registrations(deployment) if r.get("standby") != "1"]

    def assignments(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(KEYS.assignments)
        return {k: json.loads(v) for k, v in raw.items()}

    def reports(self) -> dict[str, dict[str, str]]:
        return {iid: self.client.hgetall(KEYS.instance(iid)) for iid in self.assignments()}

    def host_of(self, registration: dict[str, str]) -> str:
        """The agent a registered instance runs under (its parent process)."""
        ppid = parent_pid(int(registration["pid"]))
        return next((h for h, p in self.agents.items() if p.pid == ppid), f"ppid {ppid}")

    def events(self, kind: str | None = None) -> list[dict[str, str]]:
        entries = self.client.xrange(KEYS.events)
        return [fields for _, fields in entries if kind is None or fields["kind"] == kind]

    def logs(self) -> str:
        parts = [f"--- agent {h}\n{p.log()[-3000:]}" for h, p in self.agents.items()]
        parts += [f"--- controller {p.pid}\n{p.log()[-3000:]}" for p in self.controllers]
        return "\n".join(parts)

    def wait_running(self, count: int, deployment: str = "pipe", timeout: float = 30) -> None:
        wait_until(
            lambda: len(self.running(deployment)) == count,
            timeout=timeout,
            interval=0.05,
            message=lambda: (
                f"{count} running instances of {deployment} "
                f"(now {len(self.running(deployment))}):\n{self.logs()}"
            ),
        )


def parent_pid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2 :].split()[1])


class Watch:
    """Samples the running count of a deployment all along a test; records any moment it exceeds
    the desired count (the highest desired within the last ``window`` seconds, which covers a
    scale-down under way) plus the surge allowed."""

    def __init__(self, rig: Rig, desired: int, surge: int = 1, window: float = 12.0) -> None:
        self.rig = rig
        self.surge = surge
        self.window = window
        self._desired: list[tuple[float, int]] = [(time.monotonic(), desired)]
        self.worst: tuple[int, int] | None = None  # (running, allowed) at the worst moment
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def desire(self, count: int) -> None:
        self._desired.append((time.monotonic(), count))

    def _allowed(self) -> int:
        now = time.monotonic()
        latest = self._desired[-1][1]
        recent = [n for at, n in self._desired if now - at <= self.window]
        return max([latest, *recent]) + self.surge

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(Exception):  # Redis may be restarting
                running, allowed = len(self.rig.running()), self._allowed()
                self.samples += 1
                if running > allowed and (self.worst is None or running > self.worst[0]):
                    self.worst = (running, allowed)

    @contextlib.contextmanager
    def watching(self) -> Iterator[Watch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
        assert self.samples > 10, "the watch did not sample"
        assert self.worst is None, f"running {self.worst[0]} > desired + surge {self.worst[1]}"
