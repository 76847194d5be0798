"""The distributed web server as real processes, for the HTTP tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from mpush.orchestration.redisserver import free_port
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, wait_until

NS = "{w}:web"
QUEUE = "{w}:req"
ECHO = "{w}:echo"
SLOW = "{w}:slow"
RAW = "{w}:raw"
ROUTES = (
    f"GET,POST ^/echo/(?P<who>[a-z]+)$ {ECHO} echo",
    f"^/slow {SLOW} slow",
    "^/fails {w}:fails fails",
    f"^/raw {RAW} raw",
)


@dataclass
class Web:
    env: RedisEnv
    spawn: Spawner
    gateways: list[ServiceProcess] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    routers: list[ServiceProcess] = field(default_factory=list)
    handlers: list[ServiceProcess] = field(default_factory=list)

    def url(self, path: str, gateway: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[gateway]}{path}"

    def common(self) -> list[str]:
        return ["--redis", self.env.url, "--service-namespace", NS, "--pop-timeout", "0.5"]

    def gateway(self, *extra: str, port: int | None = None) -> ServiceProcess:
        port = port or free_port()
        proc = self.spawn(
            "hgateway", *self.common(), "--port", str(port), "--queue", QUEUE, "--timeout", "5",
            "--metrics-interval", "0.2", *extra,
        )  # fmt: skip
        self.gateways.append(proc)
        self.ports.append(port)
        return proc

    def router(self, *extra: str, routes: Sequence[str] = ROUTES) -> ServiceProcess:
        args = ["hrouter", *self.common(), "--in", QUEUE, "--metrics-interval", "0.2"]
        for route in routes:
            args += ["--route", route]
        proc = self.spawn(*args, *extra)
        self.routers.append(proc)
        return proc

    def handler(self, name: str, queue: str, *extra: str) -> ServiceProcess:
        proc = self.spawn(
            "handler", *self.common(), "--handler", f"tests.http_handlers:{name}", "--in", queue,
            *extra,
        )  # fmt: skip
        self.handlers.append(proc)
        return proc

    def wait_started(self) -> None:
        for proc in self.gateways:
            proc.wait_for_log("listening on")
        for proc in self.routers:
            proc.wait_for_log("hrouter started")
        for proc in self.handlers:
            proc.wait_for_log("handler started")

    def wait_started_named(self, handler_log: str) -> None:
        """Like wait_started, for handlers that log ``handler_log`` when ready."""
        for proc in self.gateways:
            proc.wait_for_log("listening on")
        for proc in self.routers:
            proc.wait_for_log("hrouter started")
        for proc in self.handlers:
            proc.wait_for_log(handler_log)

    def wait_serving(self, path: str = "/echo/probe") -> None:
        """Until every gateway answers ``path`` with 200 (registrations seen, routes loaded)."""
        for index in range(len(self.ports)):
            wait_until(
                lambda i=index: _status(self.url(path, i)) == 200,
                interval=0.1,
                message=lambda: f"a 200 from {path}; logs:\n" + self.logs(),
            )

    def logs(self) -> str:
        parts = []
        for proc in [*self.gateways, *self.routers, *self.handlers]:
            parts.append(f"--- {' '.join(proc.args[:1])} ---\n{proc.log()[-3000:]}")
        return "\n".join(parts)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def start_web(env: RedisEnv, spawn: Spawner, *gateway_extra: str) -> Web:
    """One gateway, one router and an echo handler, serving."""
    web = Web(env, spawn)
    web.gateway(*gateway_extra)
    web.router()
    web.handler("echo", ECHO)
    web.wait_started()
    web.wait_serving()
    return web
