"""The probes every service serves on its --metrics-port: /healthz (live) and /readyz (ready), with
real processes against real redis-server processes — stopped, restarted, and started late."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mpush.connection import connect, parse_redis_url
from mpush.keys import ServiceKeys
from mpush.orchestration.redisserver import RedisServer, free_port
from mpush.runtime.health import Health, HealthPolicy
from mpush.runtime.lifecycle import Lifecycle, LifecyclePolicy
from mpush.runtime.shutdown import Shutdown
from tests.conftest import RedisEnv
from tests.helpers import Spawner, stopped, wait_until
from tests.promtools import metrics_port, raw_exchange

NS = "{hz}:t"
IN, OUT = "{hz}:in", "{hz}:out"
KEYS = ServiceKeys(NS)


def probe(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, refused.read().decode()


def lpush_args(url: str, *extra: str) -> list[str]:
    return [
        "lpush", "--redis", url, "--in", IN, "--out", OUT, "--service-namespace", NS,
        "--metrics-port", "0", "--pop-timeout", "0.3", "--service-check", "0.2",
        "--no-message-tracking", *extra,
    ]  # fmt: skip


def test_a_working_service_is_live_and_ready(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = spawn(*lpush_args(redis_env.url))
    port = metrics_port(proc)
    wait_until(lambda: probe(port, "/readyz") == (200, "ready\n"), message="ready")
    assert probe(port, "/healthz") == (200, "alive\n")
    head = raw_exchange(port, b"HEAD /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n"), "HEAD: no body"
    assert probe(port, "/readyz", method="POST")[0] == 405
    redis_env.client.lpush(IN, "a", "b")
    wait_until(lambda: redis_env.client.llen(OUT) == 2)  # it works while probed


def test_not_ready_while_redis_is_down_yet_live_and_ready_again_after(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    proc = spawn(*lpush_args(standalone_env.url))
    port = metrics_port(proc)
    wait_until(lambda: probe(port, "/readyz")[0] == 200, message="ready")
    with stopped(standalone_env.servers[0]):
        _, why = wait_until(
            lambda: (answer := probe(port, "/readyz"))[0] == 503 and answer,
            timeout=10,
            message="not ready with Redis down",
        )
        assert "did not answer" in why, why
        for _ in range(5):  # an outage is no reason to restart the process
            assert probe(port, "/healthz") == (200, "alive\n")
        assert proc.alive
    wait_until(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=30, message="ready")
    assert probe(port, "/healthz")[0] == 200


def test_a_standby_instance_is_live_and_ready_only_once_activated(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    client = standalone_env.client
    proc = spawn(*lpush_args(standalone_env.url, "--standby"))
    port = metrics_port(proc)
    proc.wait_for_log("standing by for activation")
    assert probe(port, "/readyz") == (503, "standing by for activation\n")
    assert probe(port, "/healthz") == (200, "alive\n")
    [instance_id] = client.lrange(KEYS.ids, 0, -1)
    client.lpush(KEYS.activation(instance_id), "go")
    wait_until(lambda: probe(port, "/readyz") == (200, "ready\n"), message="ready once activated")


def test_probes_answer_while_the_process_waits_for_redis(tmp_path: Path, spawn: Spawner) -> None:
    """Started before its Redis: live (the start is bounded by startup_timeout), not ready; ready
    once Redis is up and the instance registered."""
    redis_port = free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    proc = spawn(*lpush_args(url, "--startup-timeout", "60"))
    port = metrics_port(proc)
    assert probe(port, "/healthz") == (200, "starting\n")
    assert probe(port, "/readyz") == (503, "starting: not registered yet\n")
    server = RedisServer(tmp_path / "late", port=redis_port).start()
    try:
        wait_until(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=30)
        assert probe(port, "/healthz") == (200, "alive\n")
    finally:
        proc.close()
        server.stop()


def test_a_stopping_process_is_not_ready(standalone_env: RedisEnv, spawn: Spawner) -> None:
    """A remote shutdown (DEL of the registration) ends readiness, and then the process."""
    client = standalone_env.client
    proc = spawn(*lpush_args(standalone_env.url))
    port = metrics_port(proc)
    wait_until(lambda: probe(port, "/readyz")[0] == 200)
    [instance_id] = client.lrange(KEYS.ids, 0, -1)
    client.delete(KEYS.instance(instance_id))
    assert proc.wait(timeout=20) == 0

    def refused() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return False
        except OSError:
            return True

    assert refused(), "the listener is closed with the process"


@pytest.mark.asyncio
async def test_a_watcher_that_stopped_trying_is_not_live(standalone_env: RedisEnv) -> None:
    """Liveness fails once the registry watcher has made no attempt for stale_after seconds (the
    clock is moved, the registration is real)."""
    redis = connect(parse_redis_url(standalone_env.url))
    try:
        lifecycle = Lifecycle(
            redis, KEYS, service="lpush", info={}, policy=LifecyclePolicy(expire=10, renew=3)
        )
        await lifecycle.register()
        now = [lifecycle.last_check]
        health = Health(Shutdown(), HealthPolicy(stale_after=30), clock=lambda: now[0])
        health.started([redis], lifecycle)
        assert await health.live() == (True, "alive")
        assert await health.ready() == (True, "ready")
        now[0] += 31
        live, why = await health.live()
        assert not live
        assert "no attempt for 31s" in why
        await lifecycle.deregister()
        assert await health.ready() == (False, "not registered")
    finally:
        await redis.aclose()
