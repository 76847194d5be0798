"""The parts of `mpush demo` on their own: the declaration it fills in from its TOML file, its
control requests (on a real Redis), and its load (against a small real HTTP server)."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mpush.config import DemoSettings, load_settings
from mpush.connection import AnyRedis, connect, parse_redis_url
from mpush.demo.console import CONTROL_HEADER, Console
from mpush.demo.declaration import AUTOSCALE_KNOWN, SHARED, TEMPLATE, declare, fill, placeholders
from mpush.demo.load import MAX_RATE, Load
from mpush.demo.web import site_info
from mpush.errors import ConfigError
from mpush.http.messages import Request
from mpush.keys import DemoKeys, RcontrolKeys
from mpush.orchestration.rcontrol.spec import Deployment, parse_spec
from mpush.orchestration.rcontrol.store import apply_spec
from mpush.orchestration.redisserver import free_port
from mpush.runtime.shutdown import Shutdown
from tests.conftest import RedisEnv

NS = "demo:web"
LAYOUT = DemoKeys(NS)


PLACEHOLDERS = placeholders(LAYOUT, "127.0.0.1", 1)


def settings(**flags: Any) -> DemoSettings:
    return load_settings(DemoSettings, flags, env={})


# ---- the declaration ---------------------------------------------------------------------------


def test_the_shipped_file_declares_the_web_server_filled_in() -> None:
    declared = declare(settings(log_level="DEBUG"), LAYOUT, 8123, "redis://127.0.0.1:1/0")
    spec = declared.spec.deployments
    assert set(spec) == {
        "gateway", "router", "pages", "files", "query", "work", "throttle", "fanout", "archive"
    }  # fmt: skip
    gateway = spec["gateway"]
    assert gateway.service == "hgateway"
    assert gateway.replicas == 2
    assert gateway.settings["port"] == 8123  # a placeholder alone keeps the value's type
    assert gateway.settings["reuse_port"] is True
    assert gateway.settings["queue"] == LAYOUT.requests
    routes = spec["router"].settings["route"]
    assert f"GET,HEAD ^/$ {LAYOUT.pages} home" in routes  # a regex's lone $ is no placeholder
    assert f"GET,HEAD,POST ^/control/ {LAYOUT.control} control" in routes
    assert spec["work"].settings["in"] == LAYOUT.work
    assert spec["throttle"].settings["in"] == LAYOUT.ring("ring")
    for name, deployment in spec.items():  # the demo's shared settings, in every table
        assert deployment.settings["log_level"] == "DEBUG", name
        assert set(SHARED) <= set(deployment.settings), name
    for name in ("pages", "files", "query", "work"):
        assert spec[name].standby == 1
    assert set(declared.scalable) == {"pages", "files", "query", "work"}
    work = declared.scalable["work"]
    assert (work.min, work.max, work.queue, work.target) == (1, 6, LAYOUT.work, 10)
    assert declared.autoscaled is AUTOSCALE_KNOWN
    assert declared.gateway_timeout == 2.0


def test_the_autoscale_tables_follow_the_schema_rcontrol_implements() -> None:
    raw = tomllib.loads(TEMPLATE.read_text())
    files = raw["deployments"]["files"]["autoscale"]
    assert set(files) == {
        "min", "max", "queue", "target", "activation", "response_time", "response_metric",
        "scale_up_window", "scale_down_window",
    }  # fmt: skip
    assert files["response_metric"] == "hfiler"
    for table in (d["autoscale"] for d in raw["deployments"].values() if "autoscale" in d):
        assert table["min"] <= table["max"]
        assert table["scale_up_window"] < table["scale_down_window"]


def test_autoscale_tables_reach_rcontrol_only_once_it_knows_them() -> None:
    """Until rcontrol's spec knows ``autoscale`` the tables are taken out before it parses the
    file (it refuses unknown keys), and the page scales by hand within their bounds."""
    declared = declare(settings(), LAYOUT, 8123, "redis://127.0.0.1:1/0")
    assert AUTOSCALE_KNOWN is ("autoscale" in Deployment.model_fields)
    assert declared.autoscaled is AUTOSCALE_KNOWN
    assert declared.scalable["files"].max == 6  # the page's bounds, either way
    if not AUTOSCALE_KNOWN:
        raw = tomllib.loads(TEMPLATE.read_text())
        with pytest.raises(ConfigError, match=r"deployments\.\w+\.autoscale: unknown key"):
            parse_spec(fill(raw, {name: "x" for name in PLACEHOLDERS} | {"port": 1}))


def test_a_placeholder_the_demo_does_not_know_names_its_key() -> None:
    assert fill({"a": ["x ${port}$ y"]}, {"port": 1}) == {"a": ["x 1$ y"]}
    with pytest.raises(ConfigError, match=r"file\.a\[0\]: 'x \$\{nope\}': no placeholder"):
        fill({"a": ["x ${nope}"]}, {"port": 1})


# ---- the control requests ----------------------------------------------------------------------


@pytest.fixture
async def redis(standalone_env: RedisEnv) -> AsyncIterator[AnyRedis]:
    client = connect(parse_redis_url(standalone_env.url))
    yield client
    await client.aclose()


def request(method: str, path: str, **headers: str) -> Request:
    return Request("r1", method, path, "reply", time.time() + 5, time.time(), headers=headers)


async def test_the_controls_change_a_rate_and_replicas_in_bounds_only(redis: AnyRedis) -> None:
    declared = declare(settings(), LAYOUT, 8123, "redis://127.0.0.1:1/0")
    keys = RcontrolKeys(NS)
    await apply_spec(redis, keys, declared.spec, by="test")
    load = Load("127.0.0.1", free_port(), "/work")
    console = Console(redis, LAYOUT, declared, load, site_info(LAYOUT, declared))
    allowed = dict([CONTROL_HEADER])

    async def answer(method: str, path: str, **headers: str) -> tuple[int, str]:
        response = await console.handle(request(method, path, **headers))
        return response.status, response.body.decode()

    assert (await answer("POST", "/control/load/10"))[0] == 403  # no control header
    assert (await answer("GET", "/control/load/10", **allowed))[0] == 405
    for bad in ("-1", "abc", "nan", "inf", str(MAX_RATE + 1), "1e9"):
        assert (await answer("POST", f"/control/load/{bad}", **allowed))[0] == 400, bad
    assert (await answer("POST", "/control/elsewhere/1", **allowed))[0] == 404
    assert (await answer("POST", "/control/load/1/2", **allowed))[0] == 404
    assert load.rate == 0
    status, body = await answer("POST", "/control/load/25", **allowed)
    assert (status, load.rate) == (200, 25)
    assert '"rate":25.0' in body

    assert (await answer("POST", "/control/scale/gateway/3", **allowed))[0] == 403
    replicas = await redis.hget(keys.deployment("work"), "replicas")
    if declared.autoscaled:
        assert (await answer("POST", "/control/scale/work/3", **allowed))[0] == 409
    else:
        for bad in ("0", "7", "-1", "x"):  # work: 1 … 6
            assert (await answer("POST", f"/control/scale/work/{bad}", **allowed))[0] == 400
        assert await redis.hget(keys.deployment("work"), "replicas") == replicas
        status, _ = await answer("POST", "/control/scale/work/3", **allowed)
        assert status == 200
        assert await redis.hget(keys.deployment("work"), "replicas") == b"3"
        events = await redis.xrevrange(keys.events, count=1)
        assert events[0][1][b"kind"] == b"scale"
        assert events[0][1][b"by"] == b"mpush demo's page"

    status, body = await answer("GET", "/control/status")
    assert status == 200
    assert '"work"' in body
    assert f'"namespace":"{NS}"' in body
    assert (await answer("POST", "/control/status", **allowed))[0] == 405


# ---- the load ----------------------------------------------------------------------------------

Answer = Callable[[bytes], Awaitable[bytes | None]]


async def serve(answer: Answer, connections: list[int] | None = None) -> tuple[asyncio.Server, int]:
    """A keep-alive HTTP/1.1 server on a free port answering each request with ``answer``'s
    bytes (None: never); ``connections`` gets a 1 for each connection accepted."""

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connections is not None:
            connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                reply = await answer(head)
                if reply is None:
                    await asyncio.sleep(3600)
                writer.write(reply or b"")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def ok(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def running(load: Load, seconds: float) -> None:
    shutdown = Shutdown()
    task = asyncio.create_task(load.run(shutdown))
    await asyncio.sleep(seconds)
    shutdown.request("test over")
    await asyncio.wait_for(task, 5)


async def test_the_load_sends_its_rate_over_kept_alive_connections() -> None:
    accepted: list[int] = []
    server, port = await serve(ok, accepted)
    async with server:
        load = Load("127.0.0.1", port, "/work", rate=100)
        await running(load, 1.5)
    figures = load.figures()
    assert 110 <= figures["sent"] <= 170, figures  # 100 a second for 1.5 s, on a busy machine
    assert figures["sent"] - 5 <= figures["answers"]["2xx"] <= figures["sent"]  # some cut short
    assert figures["in_flight"] == 0
    assert figures["failed"] == figures["skipped"] == 0
    assert figures["p95"] is not None
    assert figures["p95"] < 1.0
    assert len(accepted) <= 10  # connections are kept alive and reused


async def test_the_load_skips_when_every_connection_waits_and_counts_what_fails() -> None:
    async def never(head: bytes) -> None:
        return None

    server, port = await serve(never)
    async with server:
        load = Load("127.0.0.1", port, "/work", rate=50, connections=4, timeout=0.5)
        await running(load, 1.2)
    figures = load.figures()
    assert figures["answers"] == {}
    assert figures["failed"] >= 4  # timed out after 0.5 s
    assert figures["skipped"] >= 20  # only 4 requests at a time

    nobody = Load("127.0.0.1", free_port(), "/work", rate=50)
    await running(nobody, 0.5)
    assert nobody.figures()["failed"] >= 10  # refused
    assert nobody.figures()["answers"] == {}


async def test_the_load_reads_chunked_answers_and_counts_them_by_class() -> None:
    replies = iter([b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                    b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n"] * 1000)  # fmt: skip

    async def alternate(head: bytes) -> bytes:
        return next(replies)

    server, port = await serve(alternate)
    async with server:
        load = Load("127.0.0.1", port, "/work", rate=40, connections=1)
        await running(load, 1.0)
    answers = load.figures()["answers"]
    assert answers.get("2xx", 0) >= 10
    assert answers.get("5xx", 0) >= 10
    assert load.figures()["failed"] == 0


def test_a_rate_is_bounded() -> None:
    load = Load("127.0.0.1", 1, "/")
    for bad in (-1.0, MAX_RATE + 1):
        with pytest.raises(ValueError, match="a rate is 0"):
            load.set_rate(bad)
    load.set_rate(MAX_RATE)
    assert load.rate == MAX_RATE
