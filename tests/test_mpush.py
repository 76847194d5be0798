"""mpush as a real process on real Redis (standalone and Cluster): nothing lost or doubled."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
import redis

from mpush.orchestration.redisserver import RedisCluster
from mpush.status.histogram import BUCKETS
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until

IN, OUT0, OUT1 = "{t}:in", "{t}:out0", "{t}:out1"
NS = "{t}:mpush"


def mpush_args(env: RedisEnv, *extra: str, outs: tuple[str, ...] = (OUT0, OUT1)) -> list[str]:
    args = [
        "mpush",
        "--redis",
        env.url,
        "--in",
        IN,
        "--pop-timeout",
        "0.5",
        "--service-namespace",
        NS,
    ]
    for out in outs:
        args += ["--out", out]
    return [*args, *extra]


def start(spawn: Spawner, env: RedisEnv, *extra: str) -> ServiceProcess:
    proc = spawn(*mpush_args(env, *extra))
    proc.wait_for_log("mpush started")
    return proc


def messages(n: int, offset: int = 0) -> list[str]:
    return [f"m{i:06d}" for i in range(offset, offset + n)]


def received(env: RedisEnv, key: str) -> list[str]:
    """The list's messages oldest first (producers LPUSH, so the oldest is at the tail)."""
    return list(reversed(env.client.lrange(key, 0, -1)))


def push(env: RedisEnv, msgs: list[str], chunk: int = 500) -> None:
    for start_at in range(0, len(msgs), chunk):
        env.client.lpush(IN, *msgs[start_at : start_at + chunk])


def assert_exact(env: RedisEnv, expected: list[str], outs: tuple[str, ...] = (OUT0, OUT1)) -> None:
    wait_until(
        lambda: (
            env.client.llen(IN) == 0 and all(env.client.llen(out) >= len(expected) for out in outs)
        ),
        timeout=60,
        message=lambda: (
            f"all moved: in={env.client.llen(IN)} outs={[env.client.llen(o) for o in outs]}"
        ),
    )
    for out in outs:
        got = received(env, out)
        assert len(got) == len(expected), f"{out}: {len(got)} messages, expected {len(expected)}"
        assert got == expected, f"{out}: order or content differs"


def test_fans_out_in_order(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env)
    msgs = messages(2500)
    push(redis_env, msgs)
    assert_exact(redis_env, msgs)


def test_lone_message_goes_through_promptly(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env)
    for msg in ("one", "two", "three"):
        redis_env.client.lpush(IN, msg)
        wait_until(lambda m=msg: redis_env.client.lindex(OUT1, 0) == m, timeout=5)
    assert received(redis_env, OUT0) == ["one", "two", "three"]


def test_binary_messages_survive_unchanged(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env)
    payloads = [bytes([i, 255 - i, 0, 10, 13]) * 3 for i in range(256)]
    binary = raw_client(redis_env)
    binary.lpush(IN, *payloads)  # LPUSH a b c: a is the oldest, consumed first
    wait_until(lambda: binary.llen(OUT0) == 256 and binary.llen(OUT1) == 256)
    for out in (OUT0, OUT1):
        assert list(reversed(binary.lrange(out, 0, -1))) == payloads


def raw_client(env: RedisEnv) -> Any:
    """A client that returns bytes, for binary payloads."""
    if env.is_cluster:
        return redis.RedisCluster(host="127.0.0.1", port=env.servers[0].port)
    return redis.Redis.from_url(env.url)


@pytest.mark.slow
def test_kill9_at_random_moments_loses_and_duplicates_nothing(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    total = 50_000
    msgs = messages(total)
    rng = random.Random(20261128)
    proc = start(spawn, redis_env, "--batch", "200")
    producer = threading.Thread(target=_produce_slowly, args=(redis_env, msgs, 2.5))
    producer.start()
    kills = 0
    while kills < 5:
        time.sleep(rng.uniform(0.05, 0.35))  # the random moment of the kill -9
        proc.kill9()
        kills += 1
        proc = spawn(*mpush_args(redis_env, "--batch", "200"))
    producer.join()
    proc.wait_for_log("mpush started")
    assert_exact(redis_env, msgs)
    assert kills == 5


def _produce_slowly(env: RedisEnv, msgs: list[str], seconds: float) -> None:
    """Push ``msgs`` in small chunks spread over about ``seconds``."""
    chunks = 100
    size = len(msgs) // chunks
    for index in range(chunks):
        env.client.lpush(IN, *msgs[index * size : (index + 1) * size])
        time.sleep(seconds / chunks)


@pytest.mark.slow
def test_two_replicas_side_by_side(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env, "--batch", "50")
    start(spawn, redis_env, "--batch", "50")
    msgs = messages(20_000)
    producer = threading.Thread(target=_produce_slowly, args=(redis_env, msgs, 1.5))
    producer.start()
    producer.join()
    assert_exact(redis_env, msgs)
    ids = redis_env.client.lrange(f"{NS}:service:ids", 0, -1)
    assert len(ids) == 2


@pytest.mark.slow
def test_redis_restart_mid_run_resumes_by_itself(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start(spawn, redis_env, "--batch", "100")
    first, second = messages(5000), messages(5000, offset=5000)
    push(redis_env, first)
    server = redis_env.server_for(IN)
    server.stop()  # mid-run: the mover is busy with the first half
    outage_end = time.monotonic() + 5.0
    wait_until(
        lambda: time.monotonic() >= outage_end, timeout=10, interval=0.2, message="the 5 s outage"
    )
    server.start()
    redis_env.wait_healthy()
    proc.wait_for_log("back after", timeout=30)
    push(redis_env, second)
    assert_exact(redis_env, first + second)
    assert proc.alive
    assert proc.log().count("unavailable") == 1, "the outage is logged once"


def test_sigterm_exits_zero_and_deregisters(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start(spawn, redis_env)
    key = f"{NS}:service:1"
    assert redis_env.client.exists(key)
    began = time.monotonic()
    proc.signal(15)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - began < 0.5 + 2.0, "stops within the pop timeout (+ margin)"
    assert not redis_env.client.exists(key)
    assert redis_env.client.lrange(f"{NS}:service:ids", 0, -1) == []


def test_cross_slot_keys_refused_on_cluster(cluster: RedisCluster) -> None:
    """Slots exist only on Cluster; on standalone the same keys just work (other tests)."""
    result = run_cli(
        "mpush",
        "--redis",
        cluster.url,
        "--in",
        "plain:in",
        "--out",
        "plain:out0",
        "--startup-timeout",
        "5",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "plain:in" in result.stderr
    assert "plain:out0" in result.stderr
    assert "hash tag" in result.stderr


def test_wrong_key_type_is_a_clear_config_error(redis_env: RedisEnv) -> None:
    redis_env.client.set(OUT1, "not a list")
    result = run_cli(*mpush_args(redis_env))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{OUT1!r} holds a Redis string, not a list" in result.stderr


def test_metrics_count_moved_messages(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env, "--metrics-interval", "0.1")
    push(redis_env, messages(1234))
    wait_until(lambda: redis_env.client.hget(f"{NS}:metrics:move", "sum") == "1234")
    metric = redis_env.client.hgetall(f"{NS}:metrics:move")
    assert int(metric["count"]) >= 2  # at least two batches of ≤ 1000
    assert int(float(metric["max"])) <= 1000
    assert sum(int(v) for k, v in metric.items() if k in BUCKETS) == int(metric["count"])
