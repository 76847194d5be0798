"""``mpush demo``: the distributed web server, run by rcontrol from what Redis declares.

A private redis-server on a free port (unless ``--redis`` is given); then, as children of one
:class:`~mpush.orchestration.supervisor.Supervisor`, rcontrol's controller and two agents, hosts
``host-a`` and ``host-b`` (and ``mpush exporter`` with ``--metrics-port``). The web server itself
is declared in ``site/rcontrol.toml`` (``declaration.py`` fills it in) and applied: the controller
places its instances on the agents' hosts — gateway, router, the handlers with their standby
instances, a slow backend, the live ring — and keeps them there.

The demo process also serves ``/control/…`` (``console.py``: rcontrol's status for the page, the
load and scale buttons) and runs the load (``load.py``). The site is up when its pages answer and
every deployment is ready: then the URL is printed, and everything runs until Ctrl-C (or
``--for``). An agent killed with ``kill -9`` is started again only after ``AGENT_RESTART``'s delay,
so its host is seen to die and its instances are placed on the other host first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import tempfile
from collections.abc import Coroutine, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mpush.config import DemoSettings
from mpush.connection import AnyRedis, connect, describe_url, parse_redis_url, reply_text
from mpush.demo.console import Console
from mpush.demo.declaration import SHARED, SITE, TEMPLATE, Declared, declare
from mpush.demo.fanout import run_fanout
from mpush.demo.load import MAX_RATE, Load
from mpush.demo.work import DELAY
from mpush.errors import ConfigError, MpushError
from mpush.exits import Exit
from mpush.keys import DemoKeys, RcontrolKeys, ServiceKeys
from mpush.orchestration.rcontrol.store import apply_spec, check_slots, delete_deployment
from mpush.orchestration.redisserver import RedisServer, ServerError, free_port
from mpush.orchestration.supervisor import ChildSpec, RestartPolicy, Supervisor, die_with_parent
from mpush.retry import wait_until_reachable

__all__ = ["AGENT_RESTART", "HOSTS", "SITE", "DemoKeys", "child_specs", "run_demo"]

log = logging.getLogger(__name__)

HOSTS = ("host-a", "host-b")
HOST_TTL = 3.0  # seconds without a heartbeat before a host is dead
CAPACITY_PER_HOST = 40  # instances: room for everything on one host, every deployment at its max
# A killed agent comes back after 6–12 s: its host is dead by then and its instances placed on
# the other host, which is what a kill -9 is meant to show.
AGENT_RESTART = RestartPolicy(first_delay=12.0, max_delay=60.0, stable_after=10.0)
RING = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
RATE, CAPACITY = 4, 20  # the live ring: moves a second, messages kept on its archive
PRESETS = (0, 20, 50, 100)  # the page's load buttons, requests a second
READY_WITHIN = 90.0
_PROBE_TIMEOUT = 5.0


def run_demo(settings: DemoSettings) -> int:
    """Serve the demo site until stopped; the supervisor's exit code."""
    if settings.fanout:
        return run_fanout(None if settings.private_redis else settings.redis)
    port = _choose_port(settings.host, settings.port)
    layout = DemoKeys(settings.service_namespace or "demo:web")
    if settings.cluster:
        check_slots(RcontrolKeys(layout.namespace))
    declared = declare(settings, layout, port, settings.redis or "redis://127.0.0.1:6379/0")
    with (
        tempfile.TemporaryDirectory(prefix="mpush-demo-") as tmp,
        _redis(settings, Path(tmp)) as url,
    ):
        return asyncio.run(_serve(settings, layout, declared, url, port, Path(tmp)))


def _choose_port(host: str, port: int) -> int:
    if port == 0:
        return free_port()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                "port", f"cannot listen on {host}:{port} ({exc.strerror}): give --port N, or 0"
            ) from None
    return port


@contextlib.contextmanager
def _redis(settings: DemoSettings, tmp: Path) -> Iterator[str]:
    if not settings.private_redis:
        yield settings.redis
        return
    try:
        server = RedisServer(tmp / "redis", preexec=die_with_parent()).start()
    except ServerError as exc:
        raise MpushError(f"cannot start a private redis-server: {exc}") from None
    _say(f"started a private redis-server on port {server.port}")
    try:
        yield server.url
    finally:
        server.stop()
        _say("stopped the private redis-server")


async def _serve(
    settings: DemoSettings, layout: DemoKeys, declared: Declared, url: str, port: int, tmp: Path
) -> int:
    redis = connect(parse_redis_url(url, cluster=settings.cluster), socket_timeout=5.0)
    try:
        await wait_until_reachable(
            redis, what=f"redis {describe_url(url)}", within=settings.startup_timeout
        )
        await _prepare(redis, layout, declared)
        return await _run(settings, layout, declared, redis, url, port, tmp)
    finally:
        await redis.aclose()


async def _run(
    settings: DemoSettings,
    layout: DemoKeys,
    declared: Declared,
    redis: AnyRedis,
    url: str,
    port: int,
    tmp: Path,
) -> int:
    specs = child_specs(settings, layout, url, tmp)
    supervisor = Supervisor([spec for spec, _ in specs], tmp / "logs")
    await supervisor.start()
    running = asyncio.create_task(supervisor.run(stop_after=settings.run_for))
    address = _address(settings.host)
    load = Load(address, port, "/work")
    console = Console(
        redis, layout, declared, load, site_info(layout, declared), pop_timeout=settings.pop_timeout
    )
    helpers = [
        asyncio.create_task(_guarded(supervisor, "the control requests", console.run(
            supervisor.stopping, outage=f"redis {describe_url(url)}"))),
        asyncio.create_task(_guarded(supervisor, "the load", load.run(supervisor.stopping))),
    ]  # fmt: skip
    ready = asyncio.create_task(_come_up(settings, layout, declared, redis, port, console))
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    failure = ready.exception() if ready.done() else None
    if ready.done() and failure is None and ready.result():
        _banner(supervisor, specs, layout, declared, url, settings.host, port, tmp)
        load.set_rate(settings.load)
    elif not running.done():
        if failure is not None:
            _say(f"the web server could not be declared: {failure}")
        else:
            _say(f"the site was not up within {READY_WITHIN:g}s")
        supervisor.stop("the site did not come up", Exit.FAILURE)
    ready.cancel()
    code = await running
    await asyncio.gather(*helpers)
    if code != Exit.OK:  # the logs go with the temporary directory: show how each one ended
        for log_path in sorted((tmp / "logs").glob("*.log")):
            _say(f"--- {log_path.name}, last lines:\n{_tail(log_path)}")
    _say(f"every process stopped; exit code {code}")
    return code


async def _guarded(supervisor: Supervisor, what: str, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; should it fail, say so and stop the demo."""
    try:
        await work
    except Exception:
        log.exception("%s failed", what)
        supervisor.stop(f"{what} failed", Exit.FAILURE)


async def _prepare(redis: AnyRedis, layout: DemoKeys, declared: Declared) -> None:
    """Tell the page where things are; start the live ring unless it is running already."""
    await redis.hset(
        layout.site,
        mapping={
            "namespace": layout.namespace,
            "requests": layout.requests,
            "mode": "autoscale" if declared.autoscaled else "manual",
            "live": layout.live,
            "rate": RATE,
            "capacity": CAPACITY,
        },
    )
    lengths = [int(await redis.llen(layout.ring(name))) for name in ("ring", "in", "out")]
    if not any(lengths):
        await redis.rpush(layout.ring("ring"), *RING)


async def _apply(redis: AnyRedis, layout: DemoKeys, declared: Declared) -> None:
    """Declare the web server: the namespace holds exactly the deployments of the file."""
    keys = RcontrolKeys(layout.namespace)
    by = f"mpush demo on {socket.gethostname()}"
    for raw in await redis.smembers(keys.deployments):
        name = reply_text(raw)
        if name not in declared.spec.deployments:
            await delete_deployment(redis, keys, name, by=by)
    await apply_spec(redis, keys, declared.spec, by=by)


def site_info(layout: DemoKeys, declared: Declared) -> dict[str, Any]:
    """Where the page finds what it shows, and what it may change."""
    registry = ServiceKeys(layout.namespace)
    return {
        "namespace": layout.namespace,
        "hosts": list(HOSTS),
        "mode": "autoscale" if declared.autoscaled else "manual",
        "timeout": declared.gateway_timeout,
        "queues": {
            "requests": layout.requests,
            "pages": layout.pages,
            "files": layout.files,
            "query": layout.query,
            "work": layout.work,
        },
        "metrics": {
            "gateway": registry.metrics("hgateway:response"),
            "pages": registry.metrics("hrender"),
            "files": registry.metrics("hfiler"),
            "query": registry.metrics("rquery"),
            "work": registry.metrics("handler"),
        },
        "errors": registry.metrics("hgateway"),  # the gateway's answers by status
        "archive": layout.ring("archive"),
        "scalable": [asdict(scalable) for scalable in declared.scalable.values()],
        "presets": list(PRESETS),
        "max_rate": MAX_RATE,
        "work_delay": DELAY,
    }


def child_specs(
    settings: DemoSettings, layout: DemoKeys, url: str, tmp: Path
) -> list[tuple[ChildSpec, str]]:
    """The demo's own children with a line saying what each does. Stages: the controller stops
    first (2), so that nothing is rescheduled while the agents (1) stop their instances."""
    ns = layout.namespace
    common = _common_flags(settings, url, ns)
    mpush = [sys.executable, "-m", "mpush"]
    children = [
        (ChildSpec("controller", [*mpush, "rcontrol", "controller", *common, "--tick", "1"], 2),
         f"reconciles what {ns} declares with what runs"),
    ]  # fmt: skip
    for host in HOSTS:
        argv = [*mpush, "rcontrol", "agent", "--host", host, *common,
                "--heartbeat", "1", "--host-ttl", f"{HOST_TTL:g}",
                "--capacity", str(CAPACITY_PER_HOST),
                "--work-dir", str(tmp / "hosts" / host)]  # fmt: skip
        children.append(
            (ChildSpec(host, argv, 1, AGENT_RESTART), f"agent of {host}: runs what is placed there")
        )
    if settings.metrics_port is not None:
        argv = [*mpush, "exporter", *common, "--host", settings.host,
                "--port", str(settings.metrics_port)]  # fmt: skip
        where = f"http://{settings.host}:{settings.metrics_port}/metrics"
        children.append((ChildSpec("exporter", argv, 0), f"{ns} → {where}"))
    return children


def _common_flags(settings: DemoSettings, url: str, namespace: str) -> list[str]:
    """The settings every mpush process of the demo shares, passed on from the demo's own."""
    flags = ["--redis", url, "--service-namespace", namespace]
    if settings.cluster:
        flags.append("--cluster")
    for name in SHARED:
        flags += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    return flags


def _address(host: str) -> str:
    """Where this machine reaches the site."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


async def _come_up(
    settings: DemoSettings,
    layout: DemoKeys,
    declared: Declared,
    redis: AnyRedis,
    port: int,
    console: Console,
) -> bool:
    """Once every host's agent heartbeats, declare the web server (so that its instances are
    spread over the hosts); True once the pages, a static file, rquery, the slow handler and the
    console answer 200 and every deployment is ready. False after ``READY_WITHIN``."""
    keys = RcontrolKeys(layout.namespace)
    address = _address(settings.host)
    probes = ["/", "/static/site.css", "/data/llen/" + quote(layout.ring("ring"), safe=""),
              "/work", "/control/status"]  # fmt: skip
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READY_WITHIN):
            hosts = [keys.host(host) for host in HOSTS]
            while await redis.exists(*hosts) < len(hosts):  # noqa: ASYNC110 - agents write them
                await asyncio.sleep(0.2)
            await _apply(redis, layout, declared)
            while True:
                codes = [await http_status(address, port, path) for path in probes]
                if all(code == 200 for code in codes) and await _all_ready(console):
                    return True
                await asyncio.sleep(0.3)
    return False


async def _all_ready(console: Console) -> bool:
    with contextlib.suppress(Exception):  # Redis away for a moment: not ready yet
        deployments = (await console.status())["rcontrol"]["deployments"]
        return bool(deployments) and all(
            d["ready"] == d["desired"] and d["standby"] == d["standby_desired"] for d in deployments
        )
    return False


async def http_status(host: str, port: int, path: str) -> int:
    """The status code of ``GET path`` (0 when nothing answers within a few seconds)."""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                status = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0
    parts = status.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0


def _banner(
    supervisor: Supervisor,
    specs: list[tuple[ChildSpec, str]],
    layout: DemoKeys,
    declared: Declared,
    url: str,
    host: str,
    port: int,
    tmp: Path,
) -> None:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "") else host
    ns = layout.namespace
    flags = f"--redis {url} --service-namespace {ns}"
    lines = ["", "mpush demo: a web server of small processes, run by rcontrol from Redis", ""]
    lines.append(f"  {'redis':12} {describe_url(url)}")
    for spec, what in specs:
        lines.append(f"  {spec.name:12} pid {supervisor.child(spec.name).pid:<7} {what}")
    runs = ", ".join(
        f"{name}" + (f" ×{d.replicas}" if d.replicas != 1 else "")
        for name, d in declared.spec.deployments.items()
    )
    lines.append(f"  {'declared':12} {runs} ({TEMPLATE.name})")
    if declared.autoscaled:
        scaling = "rcontrol adds instances of work by itself, and retires them after the load"
    else:
        scaling = (
            f"add instances of work with the page's + (or: mpush rcontrol scale work 3 {flags})"
        )
    agent = supervisor.child(HOSTS[-1]).pid
    lines += [
        "",
        "Try:",
        f"  - a load button of the page (or start with --load 50): {layout.work} grows;",
        f"    {scaling}",
        f"  - kill -9 {agent} ({HOSTS[-1]}'s agent): the host dies, its instances go to {HOSTS[0]}",
        f"  - mpush rcontrol status --events {flags}",
        "",
        f"Logs: {tmp}/logs/<name>.log, instances' in {tmp}/hosts/<host>/<instance>.log",
        "",
        f"serving http://{shown}:{port}/ (Ctrl-C stops everything)",
    ]
    _say("\n".join(lines))


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _say(text: str) -> None:
    print(text, flush=True)
