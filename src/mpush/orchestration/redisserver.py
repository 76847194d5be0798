"""Private redis-server processes on free ports: for ``mpush demo`` and the test harness.

Never touches a Redis somebody else runs: every server here is started by us, in a directory of
ours, on a port the OS just handed out, and stopped by us.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RedisCluster", "RedisServer", "ServerError", "free_port"]

_READY_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A private redis-server could not be started or stopped."""


def free_port(*, with_bus: bool = False) -> int:
    """A TCP port free on 127.0.0.1 now (and port+10000 too, for a cluster bus)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > 55000 and with_bus:
            continue
        if not with_bus or _port_free(port + 10000):
            return port
    raise ServerError("no free port pair found")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ServerError("redis-server not found: install Debian's redis-server package")
    return found


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1:``port`` with its data in ``directory`` (AOF on)."""

    directory: Path
    port: int = 0
    extra: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    preexec: Callable[[], None] | None = field(default=None, repr=False)  # run before exec

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(with_bus=any("cluster" in arg for arg in self.extra))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        if self.running:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]
        # The preexec (supervisor.die_with_parent) calls one C function resolved before fork.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=self.preexec)  # noqa: PLW1509
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"redis-server on port {self.port} exited: {self._log_tail()}")
            if self.ping():
                return
            time.sleep(0.02)
        raise ServerError(f"redis-server on port {self.port} not ready after {timeout}s")

    def ping(self) -> bool:
        """True when the server answers PING (raw RESP, no client library): PONG, or a demand
        to authenticate first, which a server with ACLs gives only once it is up."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: the AOF is flushed, a restart finds the data again."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, losing at most the last second of AOF."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        with contextlib.suppress(OSError):
            return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        return "(no log)"


@dataclass
class RedisCluster:
    """A Redis Cluster of ``masters`` masters, no replicas, on free ports; made with redis-cli."""

    directory: Path
    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisCluster:
        cli = shutil.which("redis-cli")
        if not cli:
            raise ServerError("redis-cli not found: install Debian's redis-tools package")
        for index in range(self.masters):
            node = RedisServer(
                self.directory / f"node{index}",
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise ServerError(
                f"redis-cli --cluster create failed: {created.stdout}{created.stderr}"
            )
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        cli = shutil.which("redis-cli") or "redis-cli"
        while time.monotonic() < deadline:
            states = [
                subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                ).stdout
                for node in self.nodes
            ]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise ServerError("cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
