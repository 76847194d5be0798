"""Helpers for the routing-stage tests (mbalance, mdedupe, mthrottle): queues, consumers'
registrations, kill -9 churn, and counting the script calls a stage makes."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import redis

from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, stopped, wait_until

LENGTHS = "local r = {} for i, k in ipairs(KEYS) do r[i] = redis.call('LLEN', k) end return r"


def messages(n: int, offset: int = 0, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(offset, offset + n)]


def received(env: RedisEnv, key: str) -> list[str]:
    """The list's messages oldest first (producers LPUSH, so the oldest is at the tail)."""
    return list(reversed(env.client.lrange(key, 0, -1)))


def push(env: RedisEnv, key: str, msgs: Sequence[str], chunk: int = 500) -> None:
    """LPUSH ``msgs`` in order: the first is the oldest."""
    for start in range(0, len(msgs), chunk):
        env.client.lpush(key, *msgs[start : start + chunk])


def lengths(env: RedisEnv, *keys: str) -> list[int]:
    """The lengths of ``keys`` read atomically (one script: the keys share a slot)."""
    return [int(n) for n in env.client.eval(LENGTHS, len(keys), *keys)]


def register_consumer(env: RedisEnv, namespace: str, instance_id: int = 1) -> str:
    """Make ``namespace`` look like it has a live registered instance; return its key."""
    key = f"{namespace}:service:{instance_id}"
    env.client.hset(key, mapping={"service": "worker", "pid": "0"})
    env.client.expire(key, 60)
    env.client.lpush(f"{namespace}:service:ids", instance_id)
    return key


def keys_like(env: RedisEnv, pattern: str, near: str) -> set[str]:
    """KEYS ``pattern`` on the server holding ``near`` (on Cluster, KEYS is per node)."""
    client = redis.Redis(port=env.server_for(near).port, decode_responses=True)
    try:
        return set(client.keys(pattern))
    finally:
        client.close()


def script_calls(env: RedisEnv, key: str) -> int:
    """EVALSHA calls served so far by the server holding ``key``."""
    client = redis.Redis(port=env.server_for(key).port, decode_responses=True)
    try:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0
    finally:
        client.close()


def produce_in_background(
    env: RedisEnv, key: str, msgs: Sequence[str], seconds: float, chunks: int = 100
) -> threading.Thread:
    """Push ``msgs`` in ``chunks`` spread over about ``seconds``, from a thread (started)."""

    def produce() -> None:
        size = -(-len(msgs) // chunks)
        for start in range(0, len(msgs), size):
            env.client.lpush(key, *msgs[start : start + size])
            time.sleep(seconds / chunks)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return thread


def kill9_churn(
    spawn: Spawner,
    args: Sequence[str],
    *,
    started: str,
    kills: int,
    seed: int,
    replicas: int = 2,
) -> list[ServiceProcess]:
    """Run ``replicas`` copies of a service and kill -9 one of them at ``kills`` random moments,
    each time starting a fresh one. Returns the processes left running."""
    rng = random.Random(seed)
    procs = [spawn(*args) for _ in range(replicas)]
    for proc in procs:
        proc.wait_for_log(started)
    for _ in range(kills):
        time.sleep(rng.uniform(0.02, 0.2))  # the random moment of the kill -9
        victim = procs.pop(rng.randrange(len(procs)))
        victim.kill9()
        fresh = spawn(*args)
        fresh.wait_for_log(started)  # the next victim is a replica at work
        procs.append(fresh)
    return procs


def assert_each_once(got: Sequence[str], expected: Sequence[str]) -> None:
    """``got`` holds every expected message exactly once (no loss, no duplicate)."""
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} duplicates"
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected, e.g. {sorted(extra)[:3]}"


def wait_drained(env: RedisEnv, key: str, timeout: float = 30) -> None:
    wait_until(
        lambda: env.client.llen(key) == 0,
        timeout=timeout,
        message=lambda: f"{key} drained (still {env.client.llen(key)})",
    )


def restart_redis_under(env: RedisEnv, proc: ServiceProcess, key: str) -> None:
    """Stop the server holding ``key`` until ``proc`` notices, start it again, and wait until
    ``proc`` reports it is back."""
    with stopped(env.server_for(key)):
        proc.wait_for_log("unavailable", timeout=10)
    env.wait_healthy()
    proc.wait_for_log("back after", timeout=30)
    assert proc.alive
    assert proc.log().count("unavailable") == 1, "the outage is logged once"
