"""lpush: the same atomic engine, one output, optional capacity trim and expiry."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until

IN, OUT = "{t}:in", "{t}:out"
NS = "{t}:lpush"


def args(env: RedisEnv, *extra: str) -> list[str]:
    return [
        "lpush",
        "--redis",
        env.url,
        "--in",
        IN,
        "--out",
        OUT,
        "--pop-timeout",
        "0.5",
        "--service-namespace",
        NS,
        *extra,
    ]


def start(spawn: Spawner, env: RedisEnv, *extra: str) -> ServiceProcess:
    proc = spawn(*args(env, *extra))
    proc.wait_for_log("lpush started")
    return proc


def test_moves_in_order(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env)
    msgs = [f"m{i}" for i in range(3000)]
    redis_env.client.lpush(IN, *msgs)
    wait_until(lambda: redis_env.client.llen(OUT) == 3000)
    assert list(reversed(redis_env.client.lrange(OUT, 0, -1))) == msgs
    assert redis_env.client.llen(IN) == 0


def test_capacity_keeps_the_newest(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env, "--capacity", "100", "--metrics-interval", "0.1")
    msgs = [f"m{i}" for i in range(250)]
    redis_env.client.lpush(IN, *msgs)
    wait_until(lambda: redis_env.client.llen(IN) == 0)
    assert list(reversed(redis_env.client.lrange(OUT, 0, -1))) == msgs[-100:]
    wait_until(lambda: redis_env.client.hget(f"{NS}:metrics:move", "trimmed") == "150")


def test_expire_sets_ttl_on_the_output(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env, "--expire", "50")
    redis_env.client.lpush(IN, "hello")
    wait_until(lambda: redis_env.client.llen(OUT) == 1)
    assert 40 <= redis_env.client.ttl(OUT) <= 50


def test_two_outs_refused() -> None:
    result = run_cli("lpush", "--in", "a", "--out", "b", "--out", "c")
    assert result.returncode == 2
    assert "exactly one" in result.stderr


@pytest.mark.slow
def test_kill9_mid_run_loses_and_duplicates_nothing(redis_env: RedisEnv, spawn: Spawner) -> None:
    total = 20_000
    msgs = [f"m{i:05d}" for i in range(total)]
    proc = start(spawn, redis_env, "--batch", "100")

    def produce() -> None:
        for index in range(0, total, 200):
            redis_env.client.lpush(IN, *msgs[index : index + 200])
            time.sleep(0.015)

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(7)
    for _ in range(3):
        time.sleep(rng.uniform(0.05, 0.3))  # the random moment of the kill -9
        proc.kill9()
        proc = spawn(*args(redis_env, "--batch", "100"))
    producer.join()
    wait_until(
        lambda: redis_env.client.llen(OUT) >= total and redis_env.client.llen(IN) == 0, timeout=30
    )
    assert list(reversed(redis_env.client.lrange(OUT, 0, -1))) == msgs
