"""Standby mode and instance labels (every service): register, wait on Redis, serve at once when
activated; a label in the registration and in the label index. Real processes, real Redis."""

from __future__ import annotations

import signal
import time

from mpush.keys import ServiceKeys
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli

NS = "{t}:sb"
KEYS = ServiceKeys(NS)
IN, OUT = "{t}:in", "{t}:out"


def start(spawn: Spawner, env: RedisEnv, *extra: str) -> ServiceProcess:
    args = f"lpush --in {IN} --out {OUT} --service-namespace {NS} --service-check 0.2"
    proc = spawn(*args.split(), "--redis", env.url, "--pop-timeout", "0.3", *extra)
    proc.wait_for_log("registered as")
    return proc


def test_standby_does_no_work_until_activated_then_serves_at_once(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    client = redis_env.client
    proc = start(spawn, redis_env, "--standby", "--service-label", "web-1")
    proc.wait_for_log("standing by")
    assert client.hget(KEYS.instance(1), "standby") == "1"
    assert client.hget(KEYS.instance(1), "label") == "web-1"
    assert client.hget(KEYS.labels, "web-1") == "1"
    client.lpush(IN, "waiting")
    time.sleep(0.5)  # a window in which a working instance would certainly have moved it
    assert client.llen(OUT) == 0, "a standby instance moved a message"
    began = time.monotonic()
    client.lpush(KEYS.activation(1), "go")
    assert client.brpop([OUT], timeout=5) == (OUT, "waiting")
    assert time.monotonic() - began < 1.0
    assert client.hget(KEYS.instance(1), "standby") == "0"
    assert client.hget(KEYS.instance(1), "activated")
    proc.wait_for_log("activated after")
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert not client.hexists(KEYS.labels, "web-1"), "deregistering drops its label"


def test_remote_shutdown_and_sigterm_while_standing_by(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    client = standalone_env.client
    first = start(spawn, standalone_env, "--standby")
    first.wait_for_log("standing by")
    client.delete(KEYS.instance(1))
    assert first.wait(timeout=5) == 0
    assert "remote shutdown" in first.log()
    assert "activated" not in first.log()
    second = start(spawn, standalone_env, "--standby")
    second.wait_for_log("standing by")
    began = time.monotonic()
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=5) == 0
    assert time.monotonic() - began < 2.0
    assert not client.exists(KEYS.instance(2))
    client.lpush(IN, "left")
    assert client.llen(OUT) == 0


def test_startup_gc_drops_labels_of_gone_instances(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    client = standalone_env.client
    client.hset(KEYS.labels, mapping={"gone": "7", "alive": "8"})
    client.hset(KEYS.instance(8), "service", "other")
    client.set(KEYS.counter, 8)
    proc = start(spawn, standalone_env, "--service-label", "mine")
    assert client.hgetall(KEYS.labels) == {"alive": "8", "mine": "9"}
    proc.kill9()  # its label stays until the next startup gc (or an rcontrol retirement)
    assert client.hget(KEYS.labels, "mine") == "9"


def test_status_shows_standby_instances(standalone_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, standalone_env, "--standby").wait_for_log("standing by")
    shown = run_cli(
        "status", "--redis", standalone_env.url, "--service-namespace", NS, env={"COLUMNS": "200"}
    )
    assert shown.returncode == 0, shown.stderr
    assert "lpush (standby)" in shown.stdout


def test_standby_needs_a_namespace(standalone_env: RedisEnv) -> None:
    done = run_cli("lpush", "--redis", standalone_env.url, "--in", IN, "--out", OUT, "--standby")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mpush lpush: config: standby: needs a service_namespace (the registry it shows in)"
    ]
