"""The service registry (SPEC §2) with real processes: register, renew, fence, DEL, GC, signals."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from redis.exceptions import RedisError

from mpush.connection import connect, parse_redis_url
from mpush.errors import FencedError
from mpush.keys import ServiceKeys
from mpush.runtime.lifecycle import Lifecycle, LifecyclePolicy
from mpush.runtime.shutdown import Shutdown
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, wait_until

NS = "{t}:life"
KEYS = ServiceKeys(NS)


def start(spawn: Spawner, env: RedisEnv, *extra: str, pop_timeout: str = "0.3") -> ServiceProcess:
    args = f"lpush --in {{t}}:in --out {{t}}:out --service-namespace {NS} --service-check 0.2"
    proc = spawn(*args.split(), "--redis", env.url, "--pop-timeout", pop_timeout, *extra)
    proc.wait_for_log("lpush started")
    return proc


def ids(env: RedisEnv) -> list[str]:
    return list(env.client.lrange(KEYS.ids, 0, -1))


def test_registration_hash_and_list(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start(spawn, redis_env, "--service-expire", "30")
    assert ids(redis_env) == ["1"]
    data = redis_env.client.hgetall(KEYS.instance(1))
    assert data["service"] == "lpush"
    assert data["pid"] == str(proc.pid)
    assert data["in"] == "{t}:in"
    assert data["out"] == "{t}:out"
    assert data["started"] == data["renewed"]
    assert 25 <= redis_env.client.ttl(KEYS.instance(1)) <= 30


def test_renews_before_expiry(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env, "--service-expire", "2", "--service-renew", "0.3")
    first = redis_env.client.hget(KEYS.instance(1), "renewed")
    wait_until(lambda: redis_env.client.hget(KEYS.instance(1), "renewed") != first, timeout=5)
    # Alive well past the expiry: only renewals keep it.
    alive_until = time.monotonic() + 3
    wait_until(
        lambda: time.monotonic() > alive_until or not redis_env.client.exists(KEYS.instance(1)),
        timeout=5,
        interval=0.1,
    )
    assert redis_env.client.exists(KEYS.instance(1))


def test_del_of_registration_stops_the_instance(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start(spawn, redis_env)
    redis_env.client.delete(KEYS.instance(1))
    assert proc.wait(timeout=5) == 0
    assert "remote shutdown" in proc.log()
    assert ids(redis_env) == []


def test_renew_conflict_fences_the_instance(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start(spawn, redis_env, "--service-renew", "0.3", "--service-expire", "5")
    redis_env.client.hset(KEYS.instance(1), "renewed", "someone-else")
    assert proc.wait(timeout=5) == 75
    assert "renewed by someone else" in proc.log()
    # A fenced instance must not delete a registration that is no longer its own.
    assert redis_env.client.hget(KEYS.instance(1), "renewed") == "someone-else"


def test_startup_gc_drops_stale_ids(redis_env: RedisEnv, spawn: Spawner) -> None:
    redis_env.client.set(KEYS.counter, 10)
    redis_env.client.lpush(KEYS.ids, "7", "8", "9")  # their hashes are long gone
    redis_env.client.hset(KEYS.instance(9), "service", "other")  # 9 is alive
    start(spawn, redis_env)
    assert ids(redis_env) == ["11", "9"]


def test_id_list_trimmed_to_exactly_capacity(redis_env: RedisEnv, spawn: Spawner) -> None:
    for _ in range(3):
        start(spawn, redis_env, "--service-capacity", "2")
    assert len(ids(redis_env)) == 2
    assert ids(redis_env) == ["3", "2"]


def test_sigterm_stops_cleanly_and_second_signal_at_once(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    proc = start(spawn, redis_env, pop_timeout="20")
    proc.signal(signal.SIGTERM)
    proc.wait_for_log("stopping: SIGTERM")
    began = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 130
    assert time.monotonic() - began < 3, "the second signal does not wait for the 20 s pop"


def test_sigint_exits_zero_within_pop_timeout(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start(spawn, redis_env)
    began = time.monotonic()
    proc.signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - began < 0.3 + 2.0
    assert ids(redis_env) == []
    assert not redis_env.client.exists(KEYS.instance(1))


async def test_register_skips_an_id_whose_key_exists(redis_env: RedisEnv) -> None:
    """A reset counter under a live registry: the existing registration is never overwritten."""
    redis_env.client.hset(KEYS.instance(1), "service", "survivor")
    client = connect(parse_redis_url(redis_env.url))
    try:
        lifecycle = Lifecycle(client, KEYS, service="test", info={}, policy=LifecyclePolicy())
        assert await lifecycle.register() == 2
        assert redis_env.client.hget(KEYS.instance(1), "service") == "survivor"
        assert await lifecycle.renew()
        await lifecycle.deregister()
        await lifecycle.deregister()  # idempotent
        assert not redis_env.client.exists(KEYS.instance(2))
    finally:
        await client.aclose()


async def test_a_renewal_whose_reply_was_lost_is_still_ours(redis_env: RedisEnv) -> None:
    """Redis stalls past the socket timeout, then applies the renewal: its reply is lost. The next
    renewal must recognise the value as ours instead of fencing."""
    client = connect(parse_redis_url(redis_env.url), socket_timeout=0.5)
    server = redis_env.server_for(KEYS.instance(1))
    try:
        lifecycle = Lifecycle(client, KEYS, service="test", info={}, policy=LifecyclePolicy())
        await lifecycle.register()
        before = redis_env.client.hget(lifecycle.key, "renewed")
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(RedisError):  # the reply does not come in time
                await lifecycle.renew()
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_until(lambda: redis_env.client.hget(lifecycle.key, "renewed") != before)
        assert await lifecycle.renew()  # applied but unconfirmed: still ours
        redis_env.client.hset(lifecycle.key, "renewed", "someone-else")
        with pytest.raises(FencedError):
            await lifecycle.renew()
    finally:
        await client.aclose()


@pytest.mark.parametrize("outlive", [True, False], ids=["outlives", "obeys"])
async def test_a_registry_lost_with_redis_data(standalone_env: RedisEnv, outlive: bool) -> None:
    """With outlive_data_loss (rcontrol's agents and controllers), a registration that vanished
    with the whole registry is made again; a DEL of it still stops the instance. Without it
    (every other service), both stop the instance."""
    client = connect(parse_redis_url(standalone_env.url))
    policy = LifecyclePolicy(check=0.05, outlive_data_loss=outlive)
    lifecycle = Lifecycle(client, KEYS, service="agent", info={}, policy=policy)
    shutdown = Shutdown()
    try:
        await lifecycle.register()
        standalone_env.client.set(KEYS.counter, 5)  # other instances came and went
        watching = asyncio.create_task(lifecycle.watch(shutdown))
        standalone_env.client.flushall()
        if not outlive:
            await asyncio.wait_for(shutdown.wait(), 5)
            assert "remote shutdown" in (shutdown.reason or "")
            return
        async with asyncio.timeout(5):
            while not standalone_env.client.exists(KEYS.instance(1)):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert not shutdown.requested
        assert lifecycle.instance_id == 1
        standalone_env.client.delete(KEYS.instance(1))  # the counter says 1: a real DEL
        await asyncio.wait_for(shutdown.wait(), 5)
        assert "remote shutdown" in (shutdown.reason or "")
        await watching
    finally:
        await client.aclose()
