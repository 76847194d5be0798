"""mpush.consumer with handlers side by side (run, concurrency) and claims in batches, on real Redis
(standalone and Cluster): batches and their round trips, prefetch, stop, claims whose replies were
lost, and kill -9 of workers holding fifty messages each."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from mpush.connection import connect, describe_client, parse_redis_url
from mpush.consumer import Message, consume
from mpush.errors import ConfigError
from mpush.keys import ConsumerKeys, MessageKeys
from mpush.retry import outage_of
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, wait_until
from tests.proxy import StallingProxy
from tests.test_consumer import start_mover, start_worker

IN, OUT0 = "{t}:in", "{t}:out0"
NS = "{t}:cons"
MK = MessageKeys(NS)
CK = ConsumerKeys(OUT0)


@pytest.fixture
async def aredis(redis_env: RedisEnv) -> AsyncIterator[Any]:
    client = connect(parse_redis_url(redis_env.url), socket_timeout=5.0)
    yield client
    await client.aclose()


def node_of(env: RedisEnv, key: str) -> Any:
    """A plain client of the server that holds ``key`` (its command statistics are the key's)."""
    return redis.Redis(port=env.server_for(key).port, decode_responses=True)


def calls(node: Any, command: str) -> int:
    return int(node.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def inflight_lists(env: RedisEnv) -> dict[str, int]:
    pattern = CK.inflight("*")
    if env.is_cluster:
        keys = env.client.scan_iter(match=pattern, target_nodes="all")
    else:
        keys = env.client.scan_iter(match=pattern)
    return {key: env.client.llen(key) for key in keys}


async def test_handlers_run_side_by_side_and_claims_come_in_batches(
    redis_env: RedisEnv, aredis: Any
) -> None:
    total = 1000
    redis_env.client.lpush(OUT0, *[f"m{i:04d}" for i in range(total)])
    node = node_of(redis_env, OUT0)
    node.config_resetstat()
    consumer = consume(aredis, OUT0, concurrency=50, pop_timeout=0.2)
    first_fifty = asyncio.Event()
    running, most, handled = 0, 0, []

    async def handle(msg: Message) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if len(handled) + running == 50:
            first_fifty.set()
        await first_fifty.wait()  # the first fifty wait for each other: all at once, or never
        await asyncio.sleep(0.001)
        running -= 1
        handled.append(msg.text)
        if len(handled) == total:
            consumer.stop()

    await asyncio.wait_for(consumer.run(handle), 30)
    assert most == 50, "fifty handlers side by side"
    assert sorted(handled) == [f"m{i:04d}" for i in range(total)]
    steps = calls(node, "evalsha")
    assert steps < total / 5, f"{steps} steps (claims and acknowledgements) for {total} messages"
    assert redis_env.client.llen(OUT0) == 0
    assert not inflight_lists(redis_env), "all acknowledged; the in-flight list gone"
    assert redis_env.client.zcard(CK.consumers) == 0
    node.close()


async def test_tracked_messages_handled_side_by_side_are_reported_done(
    redis_env: RedisEnv, spawn: Spawner, aredis: Any
) -> None:
    start_mover(spawn, redis_env)
    total = 300
    redis_env.client.lpush(IN, *[f"t{i}" for i in range(total)])
    handled: list[str] = []
    consumer = consume(aredis, OUT0, namespace=NS, concurrency=20, pop_timeout=0.2)

    async def handle(msg: Message) -> None:
        await asyncio.sleep(random.uniform(0, 0.005))
        handled.append(msg.text)
        if msg.text == "t7":
            raise ValueError("seven")
        if len(handled) == total:
            consumer.stop()

    await asyncio.wait_for(consumer.run(handle), 30)
    assert len(handled) == total
    wait_until(lambda: redis_env.client.hget(MK.metrics("done"), "count") == str(total - 1))
    wait_until(lambda: redis_env.client.llen(MK.dead) == 1)
    letter = json.loads(redis_env.client.lindex(MK.dead, 0))
    assert (letter["body"], letter["reason"]) == ("t7", "failed: ValueError: seven")
    assert redis_env.client.hlen(MK.xids) == 0


async def test_prefetch_claims_ahead_and_stop_gives_back_in_order(
    redis_env: RedisEnv, aredis: Any
) -> None:
    redis_env.client.lpush(OUT0, *[f"p{i}" for i in range(30)])
    release = asyncio.Event()
    seen: list[str] = []
    consumer = consume(aredis, OUT0, concurrency=2, prefetch=8, pop_timeout=0.2)

    async def handle(msg: Message) -> None:
        seen.append(msg.text)
        await release.wait()

    running = asyncio.create_task(consumer.run(handle))
    await asyncio.to_thread(wait_until, lambda: len(seen) == 2)
    assert seen == ["p0", "p1"], "started oldest first"
    held = redis_env.client.lrange(consumer.inflight, 0, -1)
    assert held == [f"p{i}" for i in range(9, -1, -1)], "two in hand, eight claimed ahead"
    consumer.stop()
    release.set()
    await asyncio.wait_for(running, 10)
    assert seen == ["p0", "p1"]
    assert redis_env.client.lrange(OUT0, -28, -1) == [f"p{i}" for i in range(29, 1, -1)], (
        "the eight claimed ahead went back to the consuming end, oldest first"
    )
    assert not redis_env.client.exists(consumer.inflight)


async def test_async_for_with_concurrency_says_to_use_run(aredis: Any) -> None:
    with pytest.raises(ConfigError, match="run"):
        async for _ in consume(aredis, OUT0, concurrency=5):
            pass
    with pytest.raises(ConfigError, match="concurrency"):
        consume(aredis, OUT0, concurrency=0)


async def test_a_claim_whose_reply_was_lost_is_adopted(standalone_env: RedisEnv) -> None:
    """The proxy holds Redis's reply to a claim until the client gave up: the message is on the
    in-flight list and the consumer never heard of it. Its next claim adopts it."""
    env = standalone_env
    proxy = StallingProxy(env.servers[0].port).start()
    client = connect(parse_redis_url(proxy.url), socket_timeout=3.0)
    consumer = consume(client, OUT0, concurrency=4, pop_timeout=2.0, lease=7.0)
    handled: list[str] = []

    async def handle(msg: Message) -> None:
        handled.append(msg.text)

    try:
        running = asyncio.create_task(consumer.run(handle))
        env.client.lpush(OUT0, "warm-up")
        await asyncio.to_thread(wait_until, lambda: handled == ["warm-up"])
        await asyncio.to_thread(wait_until, lambda: blocked_in_blmove(env))
        proxy.stall()
        env.client.lpush(OUT0, "lost-reply")  # claimed by the blocked BLMOVE; the reply held
        await asyncio.to_thread(
            wait_until,
            lambda: env.client.llen(consumer.inflight) == 1 and proxy.held_bytes() > 0,
            message="a claim made, its reply held",
        )
        outage = outage_of(describe_client(client))
        await asyncio.to_thread(
            wait_until, lambda: outage.active, message="the client giving the reply up"
        )
        proxy.resume()
        env.client.lpush(OUT0, "after")
        await asyncio.to_thread(
            wait_until, lambda: sorted(handled) == ["after", "lost-reply", "warm-up"]
        )
        await asyncio.to_thread(wait_until, lambda: env.client.llen(consumer.inflight) == 0)
        consumer.stop()
        await asyncio.wait_for(running, 10)
    finally:
        await client.aclose()
        proxy.close()
    assert sorted(handled) == ["after", "lost-reply", "warm-up"], "each handled once"
    assert env.client.llen(OUT0) == 0


def blocked_in_blmove(env: RedisEnv) -> bool:
    return any(c["cmd"] == "blmove" and "b" in c["flags"] for c in env.client.client_list())


async def test_an_idle_loop_without_async_with_keeps_its_lease(
    redis_env: RedisEnv, aredis: Any
) -> None:
    """No background renewal: the lease is renewed while the loop waits for a message."""
    consumer = consume(aredis, OUT0, lease=1.0, pop_timeout=0.2)
    waiting = asyncio.create_task(consumer.__anext__())
    ends: set[float] = set()

    def renewed_three_times_never_lapsed() -> bool:
        end = redis_env.client.zscore(CK.consumers, consumer.id)
        seconds, micros = redis_env.client.time()
        if end is not None:
            assert end > int(seconds) * 1000 + int(micros) / 1000, "the lease lapsed"
            ends.add(end)
        return len(ends) >= 4

    await asyncio.to_thread(wait_until, renewed_three_times_never_lapsed, interval=0.05)
    redis_env.client.lpush(OUT0, "at last")
    assert (await asyncio.wait_for(waiting, 5)).text == "at last"
    await consumer.release()
    assert redis_env.client.lrange(OUT0, 0, -1) == ["at last"], "given back"


# -- kill -9 at concurrency 50, batches in flight


def _produce(env: RedisEnv, key: str, msgs: list[str], seconds: float) -> None:
    chunks = 40
    size = len(msgs) // chunks
    for index in range(chunks):
        env.client.lpush(key, *msgs[index * size : (index + 1) * size])
        time.sleep(seconds / chunks)


def _kill_busy_workers(
    env: RedisEnv, workers: list[ServiceProcess], restart: Any, rounds: int, seed: int
) -> list[int]:
    """Kill -9 a worker ``rounds`` times, each time once one holds 40 messages or more; the
    number each held at its death."""
    rng = random.Random(seed)
    held_at_death = []
    for index in range(rounds):
        time.sleep(rng.uniform(0.1, 0.4))
        busy = wait_until(
            lambda: max(inflight_lists(env).values(), default=0) >= 40,
            message="a worker holding a batch",
        )
        assert busy
        victim = index % len(workers)
        workers[victim].kill9()
        held_at_death.append(max(inflight_lists(env).values()))
        workers[victim] = restart()
    return held_at_death


@pytest.mark.slow
def test_kill9_at_concurrency_50_loses_nothing(redis_env: RedisEnv, spawn: Spawner) -> None:
    """Untracked: what a killed worker held goes back to the queue once its lease has ended."""
    total, record = 6000, "{t}:processed"
    msgs = [f"k{i:05d}" for i in range(total)]
    options = ("--concurrency", "50", "--delay", "0.1")

    def restart() -> ServiceProcess:
        return start_worker(spawn, redis_env, OUT0, "", record, *options, lease=1.5)

    workers = [restart(), restart()]
    producer = threading.Thread(target=_produce, args=(redis_env, OUT0, msgs, 2.0))
    producer.start()
    held = _kill_busy_workers(redis_env, workers, restart, rounds=3, seed=20261129)
    producer.join()
    wait_until(
        lambda: set(redis_env.client.lrange(record, 0, -1)) >= set(msgs),
        timeout=60,
        message=lambda: f"{len(set(redis_env.client.lrange(record, 0, -1)))} of {total} handled",
    )
    wait_until(
        lambda: redis_env.client.llen(OUT0) == 0 and not any(inflight_lists(redis_env).values()),
        message="the queue drained and the killed workers' claims recovered",
    )
    processed = redis_env.client.lrange(record, 0, -1)
    assert set(processed) == set(msgs), "every message handled, none vanished"
    assert min(held) >= 40, f"each kill hit a worker holding a batch: {held}"
    assert len(processed) - total <= sum(held) + 3 * 50, "redelivered: only what the dead held"


@pytest.mark.slow
def test_kill9_at_concurrency_50_tracked_every_message_done_or_dead(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    """Tracked, retry on: what a killed worker held takes the retry path; the done and dead
    figures count every message once."""
    total, record = 4000, "{t}:processed"
    msgs = [f"r{i:05d}" for i in range(total)]
    retry = ("--message-timeout", "10", "--max-deliveries", "4", "--retry-backoff", "0.2")
    start_mover(spawn, redis_env, "--batch", "100", *retry)
    options = ("--concurrency", "50", "--delay", "0.1")

    def restart() -> ServiceProcess:
        return start_worker(spawn, redis_env, OUT0, NS, record, *options, lease=1.5)

    workers = [restart(), restart()]
    producer = threading.Thread(target=_produce, args=(redis_env, IN, msgs, 2.0))
    producer.start()
    _kill_busy_workers(redis_env, workers, restart, rounds=3, seed=20261130)
    producer.join()

    def count(name: str) -> int:
        return int(redis_env.client.hget(MK.metrics(name), "count") or 0)

    wait_until(
        lambda: count("done") + count("dead") >= total,
        timeout=60,
        message=lambda: f"done {count('done')} + dead {count('dead')} of {total}",
    )
    assert redis_env.client.get(MK.counter) == str(total), "each message registered once"
    assert count("done") + count("dead") == total
    wait_until(lambda: redis_env.client.hlen(MK.xids) == 0)
    dead = {json.loads(raw)["body"] for raw in redis_env.client.lrange(MK.dead, 0, -1)}
    assert set(redis_env.client.lrange(record, 0, -1)) | dead == set(msgs), "none vanished"
