"""vpush's building blocks on real Redis: the claim and deliver scripts, the lease, PinnedScript.

Each case here is one of the states a crash, a lost reply or a paused mover leaves behind; the
process-level tests in test_vpush.py reach them at random, these reach them on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mpush.connection import connect, load_lua, parse_redis_url
from mpush.orchestration.redisserver import RedisServer
from mpush.runtime.lease import Lease
from mpush.runtime.pinned import PinnedScript
from tests.conftest import RedisEnv
from tests.helpers import wait_until
from tests.proxy import StallingProxy

IN, INFLIGHT, STATE, LEASE = "{t}:in", "{t}:in:vpush:inflight", "{t}:in:vpush:state", "{t}:lease"
OUT, DEDUPE = "{t}:out", "{t}:out:vpush:e1"
SOURCE = [LEASE, IN, INFLIGHT, STATE]


@pytest.fixture
def dest(second: RedisServer) -> Iterator[Any]:
    second.start()
    client = redis.Redis.from_url(second.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def deliver(client: Any, token: int, base: int, msgs: list[str], window: int = 60) -> Any:
    script = client.register_script(load_lua("vpush_deliver"))
    return script(keys=[OUT, DEDUPE], args=[token, base, window, *msgs])


def oldest_first(client: Any, key: str) -> list[str]:
    return list(reversed(client.lrange(key, 0, -1)))


# --- deliver: the destination's fencing and dedupe ---------------------------------------------


def test_deliver_applies_each_id_once_in_order(dest: Any) -> None:
    assert deliver(dest, 1, 1, ["a", "b", "c"]) == [1, 3, 0]
    assert deliver(dest, 1, 1, ["a", "b", "c"]) == [1, 0, 3], "a redelivery is skipped"
    assert deliver(dest, 1, 3, ["c", "d", "e"]) == [1, 2, 1], "an overlap applies only the rest"
    assert oldest_first(dest, OUT) == ["a", "b", "c", "d", "e"]
    assert dest.hgetall(DEDUPE) == {"token": "1", "seq": "5"}
    assert 0 < dest.ttl(DEDUPE) <= 60


def test_deliver_refuses_an_older_token_and_counts_it(dest: Any) -> None:
    deliver(dest, 5, 1, ["a"])
    assert deliver(dest, 4, 2, ["late"]) == [0, 5]
    assert deliver(dest, 5, 2, ["b"]) == [1, 1, 0], "the current token still writes"
    assert deliver(dest, 6, 2, ["b"]) == [1, 0, 1], "a newer token takes over (and dedupes)"
    assert deliver(dest, 5, 3, ["stale"]) == [0, 6]
    assert oldest_first(dest, OUT) == ["a", "b"]
    assert dest.hget(DEDUPE, "fenced") == "2"


def test_deliver_window_zero_keeps_the_state(dest: Any) -> None:
    deliver(dest, 1, 1, ["a"], window=0)
    assert dest.ttl(DEDUPE) == -1


# --- claim: the source's in-flight batch -------------------------------------------------------


def claim(env: RedisEnv, token: int, ack: str, batch: int) -> Any:
    script = env.client.register_script(load_lua("vpush_claim"))
    return script(keys=SOURCE, args=[token, ack, batch, "e1"])


@pytest.fixture
def leased(redis_env: RedisEnv) -> RedisEnv:
    redis_env.client.set(LEASE, "7 host:1")
    redis_env.client.lpush(IN, *[f"m{i}" for i in range(10)])
    return redis_env


def test_claim_without_the_lease_changes_nothing(leased: RedisEnv) -> None:
    assert claim(leased, 6, "", 3) == [0]
    leased.client.delete(LEASE)
    assert claim(leased, 7, "", 3) == [0]
    assert leased.client.llen(IN) == 10
    assert not leased.client.exists(INFLIGHT, STATE)


def test_claim_numbers_batches_and_hands_back_what_is_in_flight(leased: RedisEnv) -> None:
    first = claim(leased, 7, "", 3)
    assert first[:3] == [1, "e1", 1]
    assert first[6:] == ["m0", "m1", "m2"]
    assert first[5] == 7, "the input's length after the claim"
    assert claim(leased, 7, "", 3) == first, "a retry after a lost reply gets the same batch"
    second = claim(leased, 7, "1", 4)
    assert second[2:4] == [4, 3], "ids follow on; the first batch's 3 messages acknowledged"
    assert second[6:] == ["m3", "m4", "m5", "m6"]
    assert leased.client.lrange(INFLIGHT, 0, -1) == ["m3", "m4", "m5", "m6"]


def test_acknowledge_only_with_a_stale_id_keeps_the_batch(leased: RedisEnv) -> None:
    claim(leased, 7, "", 2)
    assert claim(leased, 7, "99", 0)[3] == 0, "a stale ack acknowledges nothing"
    again = claim(leased, 7, "", 2)
    assert again[2] == 1, "the in-flight batch keeps its ids"
    assert again[6:] == ["m0", "m1"]
    assert claim(leased, 7, "1", 0)[3] == 2
    assert leased.client.llen(INFLIGHT) == 0
    assert leased.client.hget(STATE, "base") is None


def test_claim_when_drained_returns_no_messages(redis_env: RedisEnv) -> None:
    redis_env.client.set(LEASE, "1 host:1")
    assert claim(redis_env, 1, "", 5) == [1, "e1", 0, 0, 0, 0]
    redis_env.client.lpush(IN, "x")
    assert claim(redis_env, 1, "", 5)[6:] == ["x"]
    acked = claim(redis_env, 1, "1", 5)
    assert acked[2:4] == [0, 1], "nothing new; the one message acknowledged"
    assert 0 <= acked[4] < 5000, "ms it was in flight"


# --- lease -------------------------------------------------------------------------------------


async def test_lease_tokens_grow_and_only_the_holder_renews_or_releases(
    redis_env: RedisEnv,
) -> None:
    client = connect(parse_redis_url(redis_env.url), socket_timeout=5)
    try:
        first = Lease(client, LEASE, STATE, owner="a:1", ttl=5)
        second = Lease(client, LEASE, STATE, owner="b:2", ttl=5)
        assert (await first.acquire()).token == 1
        held = await second.acquire()
        assert not held.acquired
        assert held.holder == "1 a:1"
        assert 0 < held.wait <= 5
        assert await first.renew()
        redis_env.client.delete(LEASE)  # expired
        assert (await second.acquire(floor=10)).token == 10, "the floor lifts the counter"
        assert not await first.renew()
        assert not await first.release()
        assert await second.release()
        assert (await first.acquire()).token == 11
    finally:
        await client.aclose()


# --- PinnedScript ------------------------------------------------------------------------------


async def test_pinned_script_reloads_after_the_script_cache_is_lost(redis_env: RedisEnv) -> None:
    client = connect(parse_redis_url(redis_env.url))
    script = PinnedScript(client, "vpush_deliver")
    try:
        assert await script([OUT, DEDUPE], [1, 1, 0, "a"]) == [1, 1, 0]
        redis_env.client.script_flush()  # as after a restart
        assert await script([OUT, DEDUPE], [1, 2, 0, "b"]) == [1, 1, 0]
        assert oldest_first(redis_env.client, OUT) == ["a", "b"]
    finally:
        await script.close()
        await client.aclose()


async def test_pinned_script_after_a_timeout_never_reads_the_late_reply(
    second: RedisServer, dest: Any
) -> None:
    """The connection is dropped on timeout: the next call cannot take the late reply as its own."""
    proxy = StallingProxy(second.port).start()
    client = connect(parse_redis_url(proxy.url), socket_timeout=None)
    script = PinnedScript(client, "vpush_deliver")
    try:
        assert await script([OUT, DEDUPE], [1, 1, 0, "a"]) == [1, 1, 0]
        proxy.stall()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await script([OUT, DEDUPE], [1, 2, 0, "b"])
        proxy.resume()
        wait_until(lambda: dest.llen(OUT) == 2, message="the late write to land")
        # The retry is deduplicated, and the reply it reads is its own.
        assert await script([OUT, DEDUPE], [1, 2, 0, "b"]) == [1, 0, 1]
        assert await script([OUT, DEDUPE], [1, 3, 0, "c"]) == [1, 1, 0]
        assert oldest_first(dest, OUT) == ["a", "b", "c"]
    finally:
        await script.close()
        await client.aclose()
        proxy.close()
