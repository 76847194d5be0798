"""``mpush demo``: the distributed web server, every part its own supervised process.

A private redis-server on a free port (unless ``--redis`` is given), then, as children of one
:class:`~mpush.orchestration.supervisor.Supervisor`:

    hgateway   HTTP on http://localhost:8080 → <ns>:req
    hrouter    <ns>:req → <ns>:pages (/), <ns>:files (/static/), <ns>:query (/data/)
    hrender    the home page, a Jinja2 template of ``site/templates``, with data from Redis
    hfiler     the stylesheet, script and logo of ``site/static``, kept in Redis
    rquery     read-only JSON of the registry, the metrics and the live data, for the page's script
    mthrottle, mpush, lpush
               live data: a ring of messages moving a few times a second, so the metrics move

The namespace (``demo:web`` by default) holds the registry and metrics of all of them; the hash
``<ns>:site`` tells the page where things are. The site is up when ``/``, a static file and an
rquery answer 200: then the URL is printed, and everything runs until Ctrl-C (or ``--for``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from mpush.config import DemoSettings
from mpush.connection import AnyRedis, connect, describe_url, parse_redis_url
from mpush.demo.fanout import run_fanout
from mpush.errors import ConfigError, MpushError
from mpush.exits import Exit
from mpush.keys import DemoKeys, ServiceKeys
from mpush.orchestration.redisserver import RedisServer, ServerError, free_port
from mpush.orchestration.supervisor import ChildSpec, Supervisor, die_with_parent
from mpush.retry import wait_until_reachable

__all__ = ["SITE", "DemoKeys", "child_specs", "run_demo"]

log = logging.getLogger(__name__)

SITE = Path(__file__).resolve().parent / "site"
RATE = 4  # messages a second round the live ring
CAPACITY = 20  # messages kept on the archive list
RING = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
READY_WITHIN = 60.0
_PROBE_TIMEOUT = 5.0


def run_demo(settings: DemoSettings) -> int:
    """Serve the demo site until stopped; the supervisor's exit code."""
    if settings.fanout:
        return run_fanout(None if settings.private_redis else settings.redis)
    port = _choose_port(settings.host, settings.port)
    layout = DemoKeys(settings.service_namespace or "demo:web")
    with (
        tempfile.TemporaryDirectory(prefix="mpush-demo-") as tmp,
        _redis(settings, Path(tmp)) as url,
    ):
        return asyncio.run(_serve(settings, layout, url, port, Path(tmp)))


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


async def _serve(settings: DemoSettings, layout: DemoKeys, url: str, port: int, tmp: Path) -> int:
    redis = connect(parse_redis_url(url, cluster=settings.cluster), socket_timeout=5.0)
    try:
        await wait_until_reachable(
            redis, what=f"redis {describe_url(url)}", within=settings.startup_timeout
        )
        await _prepare(redis, layout)
    finally:
        await redis.aclose()
    specs = child_specs(settings, layout, url, port)
    supervisor = Supervisor([spec for spec, _ in specs], tmp / "logs")
    await supervisor.start()
    running = asyncio.create_task(supervisor.run(stop_after=settings.run_for))
    ready = asyncio.create_task(_wait_ready(settings.host, port, layout))
    await asyncio.wait({running, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done() and ready.result():
        _banner(supervisor, specs, layout, url, settings.host, port, tmp / "logs")
    elif not running.done():
        _say(f"the site did not answer within {READY_WITHIN:g}s")
        supervisor.stop("the site did not come up", Exit.FAILURE)
    ready.cancel()
    code = await running
    if code != Exit.OK:  # the logs go with the temporary directory: show how each one ended
        for child in supervisor.children:
            _say(f"--- {child.log_path.name}, last lines:\n{_tail(child.log_path)}")
    _say(f"every process stopped; exit code {code}")
    return code


async def _prepare(redis: AnyRedis, layout: DemoKeys) -> None:
    """Tell the page where things are; start the live ring unless it is running already."""
    await redis.hset(
        layout.site,
        mapping={
            "namespace": layout.namespace,
            "queue": layout.requests,
            "pages": layout.pages,
            "live": layout.live,
            "rate": RATE,
            "capacity": CAPACITY,
        },
    )
    lengths = [int(await redis.llen(layout.ring(name))) for name in ("ring", "in", "out")]
    if not any(lengths):
        await redis.rpush(layout.ring("ring"), *RING)


def child_specs(
    settings: DemoSettings, layout: DemoKeys, url: str, port: int
) -> list[tuple[ChildSpec, str]]:
    """Every child of the demo with a line saying what it does. Stages: workers 0, router 1,
    gateway 2 — the gateway stops first, the workers behind it last."""
    ns, live = layout.namespace, layout.ring
    common = _common_flags(settings, url, ns)
    statics, templates = SITE / "static", SITE / "templates"
    registry = ServiceKeys(ns)
    allowed = (registry.instance_prefix, registry.metrics_prefix, layout.live)
    page = f"home home.html site={layout.site} ids={registry.ids}"
    page += f" gateway={registry.metrics('hgateway')} archive={live('archive')}"
    table = [
        ("hgateway", 2, f"http://{settings.host}:{port} → {layout.requests}",
         ["--host", settings.host, "--port", str(port), "--queue", layout.requests,
          "--timeout", "5"]),
        ("hrouter", 1, f"{layout.requests} → {layout.pages} | {layout.files} | {layout.query}",
         ["--in", layout.requests,
          "--route", f"GET,HEAD ^/$ {layout.pages} home",
          "--route", f"GET,HEAD ^/static/ {layout.files} static",
          "--route", f"GET,HEAD ^/data/ {layout.query} data"]),
        ("hrender", 0, f"{layout.pages} → {templates}/home.html",
         ["--in", layout.pages, "--templates", str(templates), "--page", page]),
        ("hfiler", 0, f"{layout.files} → {statics}/",
         ["--in", layout.files, "--root", str(statics), "--prefix", "/static", "--gzip",
          "--ttl", "60"]),
        ("rquery", 0, f"{layout.query} → reads {', '.join(allowed)}*",
         ["--in", layout.query, "--prefix", "/data",
          *[arg for prefix in allowed for arg in ("--allow", prefix)]]),
        ("mthrottle", 0, f"{live('ring')} → {live('in')}, {RATE} a second",
         ["--in", live("ring"), "--out", live("in"), "--rate", str(RATE)]),
        ("mpush", 0, f"{live('in')} → {live('ring')}, {live('out')}",
         ["--in", live("in"), "--out", live("ring"), "--out", live("out"),
          "--no-message-tracking"]),
        ("lpush", 0, f"{live('out')} → {live('archive')}, newest {CAPACITY}",
         ["--in", live("out"), "--out", live("archive"), "--capacity", str(CAPACITY),
          "--no-message-tracking"]),
    ]  # fmt: skip
    if settings.metrics_port is not None:
        table.append(
            ("exporter", 0, f"{ns} → http://{settings.host}:{settings.metrics_port}/metrics",
             ["--host", settings.host, "--port", str(settings.metrics_port)])
        )  # fmt: skip
    return [
        (ChildSpec(name, [sys.executable, "-m", "mpush", name, *common, *args], stage), what)
        for name, stage, what, args in table
    ]


def _common_flags(settings: DemoSettings, url: str, namespace: str) -> list[str]:
    """The settings every service shares, passed on from the demo's own."""
    flags = ["--redis", url, "--service-namespace", namespace]
    if settings.cluster:
        flags.append("--cluster")
    if settings.service_redis:
        flags += ["--service-redis", settings.service_redis]
    for name in (
        "service_expire", "service_renew", "service_check", "service_capacity", "pop_timeout",
        "startup_timeout", "metrics_interval", "log_format", "log_level",
    ):  # fmt: skip
        flags += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    return flags


async def _wait_ready(host: str, port: int, layout: DemoKeys) -> bool:
    """True once the home page, a static file and rquery answer 200; False after a while."""
    address = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    probes = ["/", "/static/site.css", "/data/llen/" + quote(layout.ring("ring"), safe="")]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(READY_WITHIN):
            while True:
                codes = [await http_status(address, port, path) for path in probes]
                if all(code == 200 for code in codes):
                    return True
                await asyncio.sleep(0.2)
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
    url: str,
    host: str,
    port: int,
    logs: Path,
) -> None:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "") else host
    lines = ["", "mpush demo: the distributed web server, each part its own process", ""]
    lines.append(f"  {'redis':10} {describe_url(url)}")
    for spec, what in specs:
        lines.append(f"  {spec.name:10} pid {supervisor.child(spec.name).pid:<7} {what}")
    lines += [
        "",
        f"Logs: {logs}/<name>.log. Kill any pid above (kill -9): the supervisor restarts it.",
        f"Registry: mpush status --redis {url} --service-namespace {layout.namespace}",
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
