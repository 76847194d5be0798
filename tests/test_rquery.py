"""rquery behind hgateway → hrouter, as real processes on real Redis (standalone and Cluster)."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli
from tests.webparts import Web

QUERIES = "{w}:rquery"


def start(env: RedisEnv, spawn: Spawner, *extra: str) -> Web:
    web = Web(env, spawn)
    web.gateway()
    web.router(routes=[f"^/ {QUERIES} rquery"])
    query = ["rquery", *web.common(), "--in", QUERIES, "--allow", "{d}:", *extra]
    web.handlers.append(spawn(*query))
    web.wait_started_named("rquery started")
    web.wait_serving("/type/{d}:x")
    return web


@pytest.fixture
def data(redis_env: RedisEnv) -> RedisEnv:
    client = redis_env.client
    client.set("{d}:greeting", "hello")
    client.hset("{d}:user", mapping={"name": "ann", "role": "<admin>"})
    client.rpush("{d}:list", "a", "b", "c")
    client.sadd("{d}:set", "x", "y")
    client.zadd("{d}:zset", {"low": 1, "high": 2})
    client.expire("{d}:greeting", 100)
    client.set("{s}:secret", "do not show")
    client.set("{d}:a/b", "slash in the key")
    return redis_env


def test_reads_under_allowed_prefix(data: RedisEnv, spawn: Spawner) -> None:
    web = start(data, spawn)
    with httpx.Client(timeout=10) as client:

        def get(path: str, **headers: str) -> httpx.Response:
            return client.get(web.url(path), headers=headers)

        assert get("/get/{d}:greeting").json() == "hello"
        assert get("/get/%7Bd%7D:a%2Fb").json() == "slash in the key"
        assert get("/hgetall/{d}:user").json() == {"name": "ann", "role": "<admin>"}
        assert get("/lrange/{d}:list/0/-1").json() == ["a", "b", "c"]
        assert get("/lrange/{d}:list/1/1").json() == ["b"]
        assert get("/smembers/{d}:set").json() == ["x", "y"]
        assert get("/zrange/{d}:zset/0/-1").json() == ["low", "high"]
        assert get("/zrange/{d}:zset/0/-1?withscores").json() == [["low", 1.0], ["high", 2.0]]
        assert 90 <= get("/ttl/{d}:greeting").json() <= 100
        assert get("/type/{d}:list").json() == "list"
        assert get("/llen/{d}:list").json() == 3
        assert get("/scan/{d}:").json() == sorted(
            ["{d}:greeting", "{d}:user", "{d}:list", "{d}:set", "{d}:zset", "{d}:a/b"]
        )
        assert get("/scan/{d}:l").json() == ["{d}:list"]
        assert get("/get/{d}:missing").json() is None
        assert get("/lrange/{d}:list/0/-1?format=text").text == "a\nb\nc\n"
        table = get("/hgetall/{d}:user", accept="text/html").text
        assert "<td>&lt;admin&gt;</td>" in table
        assert "<admin>" not in table
        assert get("/hgetall/{d}:user?format=html").headers["content-type"].startswith("text/html")
        assert get("/nope/{d}:x").status_code == 404
        assert get("/lrange/{d}:list/0").status_code == 400
        assert get("/lrange/{d}:list/zero/1").status_code == 400


def raw_get(port: int, path: str, method: str = "GET") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        request = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
        sock.sendall(request.encode())
        return int(sock.recv(200).split(b" ", 2)[1])


BYPASSES = [
    "/get/{s}:secret",
    "/get/%7Bs%7D:secret",
    "/get/%7bs%7d%3asecret",
    "/get/%257Bd%257D:greeting",  # double-encoded: literally "%7Bd%7D:greeting"
    "/get/{D}:greeting",
    "/get/%20{d}:greeting",
    "/get/{d}",
    "/get/{d}x",
    "/get/..",
    "/get/../{s}:secret",
    "/get/{d}:x/../../{s}:secret",
    "/get/%2e%2e%2f{s}:secret",
    "/get/{d}:%2e%2e/{s}:secret",
    "/get/.",
    "/get/{d}:greeting%00{s}:secret",
    "/get/{d}:greeting%0d%0aGET%20{s}:secret",
    "/get/*",
    "/get/{*}:secret",
    "/scan/*",
    "/scan/",
    "/scan/{",
    "/scan/[{]d}:",
    "/scan/?d}:",
    "/scan/%2A",
    "/scan/\\{d}:",
    "/hgetall/%C0%AE%C0%AE",
    "/get/%EF%BD%84:greeting",  # a look-alike letter
    "/type/{s}:secret",
    "/ttl/{s}:secret",
]


def test_bypass_attempts_are_all_403(data: RedisEnv, spawn: Spawner) -> None:
    if data.is_cluster:
        pytest.skip("the access check does not depend on the deployment: standalone is enough")
    web = start(data, spawn)
    statuses = {path: raw_get(web.ports[0], path) for path in BYPASSES}
    assert statuses == dict.fromkeys(BYPASSES, 403)
    assert raw_get(web.ports[0], "/get/{d}:greeting") == 200


def test_writes_only_where_enabled(data: RedisEnv, spawn: Spawner) -> None:
    web = start(data, spawn, "--write", "{d}:inbox")
    with httpx.Client(timeout=10) as client:
        assert client.post(web.url("/set/{d}:greeting"), content=b"changed").status_code == 403
        assert client.post(web.url("/set/{d}:inbox:1"), content=b"new").json() == "OK"
        assert client.post(web.url("/lpush/{d}:inbox:list"), content=b"m").json() == 1
        assert client.get(web.url("/set/{d}:inbox:2")).status_code == 405
    assert data.client.get("{d}:greeting") == "hello"
    assert data.client.get("{d}:inbox:1") == "new"


def test_write_prefix_outside_allow_is_refused(redis_env: RedisEnv) -> None:
    result = run_cli(
        "rquery", "--redis", redis_env.url, "--allow", "{d}:", "--write", "{s}:"
    )  # fmt: skip
    assert result.returncode == 2
    assert "write: '{s}:' is not under an allowed prefix" in result.stderr
