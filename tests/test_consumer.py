"""mpush.consumer, the reliable consumer, on real Redis (standalone and Cluster): acknowledgement,
failures into the retry path, leases of dead consumers, the runnable example, Redis restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mpush.connection import connect, parse_redis_url
from mpush.consumer import consume
from mpush.keys import ConsumerKeys, MessageKeys
from mpush.runtime.tracking import message_xid
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, wait_until

IN, OUT0 = "{t}:in", "{t}:out0"
NS = "{t}:cons"
MK = MessageKeys(NS)
CK = ConsumerKeys(OUT0)
ROOT = Path(__file__).resolve().parent.parent


class ScriptProcess(ServiceProcess):
    """``python <script> <args>`` as a real child process (a consumer, not an mpush service)."""

    def __init__(self, script: Path, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def start_script(spawn: Spawner, script: Path, *args: str) -> ServiceProcess:
    proc = ScriptProcess(script, list(args), spawn.directory / f"script-{len(spawn.started)}.log")
    spawn.started.append(proc)  # killed at the test's end like the services
    return proc


def start_worker(
    spawn: Spawner,
    env: RedisEnv,
    queue: str,
    ns: str,
    record: str,
    *extra: str,
    lease: float = 2.0,
) -> ServiceProcess:
    """tests/consumer_worker.py; ``extra``: its options (``--concurrency 50``, …)."""
    worker = ROOT / "tests" / "consumer_worker.py"
    proc = start_script(spawn, worker, env.url, queue, ns, record, str(lease), *extra)
    proc.wait_for_log("consuming")
    return proc


def start_mover(spawn: Spawner, env: RedisEnv, *extra: str) -> ServiceProcess:
    proc = spawn(
        *["mpush", "--redis", env.url, "--in", IN, "--out", OUT0, "--pop-timeout", "0.3"],
        *["--service-namespace", NS, *extra],
    )
    proc.wait_for_log("mpush started")
    return proc


def metric(env: RedisEnv, name: str, field: str = "count") -> float:
    return float(env.client.hget(MK.metrics(name), field) or 0)


@pytest.fixture
async def aredis(redis_env: RedisEnv) -> AsyncIterator[Any]:
    client = connect(parse_redis_url(redis_env.url), socket_timeout=5.0)
    yield client
    await client.aclose()


async def test_each_message_acked_and_reported_done(
    redis_env: RedisEnv, spawn: Spawner, aredis: Any
) -> None:
    start_mover(spawn, redis_env)
    redis_env.client.lpush(IN, *[f"j{i}" for i in range(20)])
    seen = []
    async with consume(aredis, OUT0, namespace=NS, pop_timeout=0.2) as messages:
        async for msg in messages:
            assert msg.xid == message_xid(msg.body)[0]
            assert redis_env.client.lrange(messages.inflight, 0, -1) == [msg.text], "claimed"
            seen.append(msg.text)
            if len(seen) == 20:
                break
    assert seen == [f"j{i}" for i in range(20)], "in order"
    wait_until(lambda: metric(redis_env, "done") == 20)
    assert redis_env.client.hlen(MK.xids) == 0
    assert redis_env.client.zcard(CK.consumers) == 0, "the lease ends with the consumer"
    assert not redis_env.client.keys(CK.inflight("*"))


async def test_failure_takes_the_retry_path(
    redis_env: RedisEnv, spawn: Spawner, aredis: Any
) -> None:
    start_mover(spawn, redis_env, "--max-deliveries", "2", "--retry-backoff", "0.1")
    redis_env.client.lpush(IN, "fragile")
    with pytest.raises(ValueError, match="not today"):
        await fail_the_first(aredis)
    wait_until(lambda: metric(redis_env, "failed") == 1, message="the monitor taking the failure")
    assert redis_env.client.hget(MK.message(1), "last_error") == "failed: ValueError: not today"
    wait_until(lambda: redis_env.client.llen(OUT0) == 1, message="the redelivery")
    async for msg in consume(aredis, OUT0, namespace=NS, pop_timeout=0.2):
        async with msg:
            assert msg.text == "fragile"
        break
    wait_until(lambda: metric(redis_env, "done") == 1)
    record = redis_env.client.hgetall(MK.message(1))
    assert (record["deliveries"], record["state"]) == ("2", "done")


async def fail_the_first(redis: Any) -> None:
    async with consume(redis, OUT0, namespace=NS, pop_timeout=0.2) as messages:
        async for _ in messages:
            raise ValueError("not today")


async def test_failure_with_retry_off_is_dead_lettered_at_once(
    redis_env: RedisEnv, spawn: Spawner, aredis: Any
) -> None:
    start_mover(spawn, redis_env)
    redis_env.client.lpush(IN, "poison", "fine")
    handled = []
    async with consume(aredis, OUT0, namespace=NS, pop_timeout=0.2) as messages:
        async for msg in messages:
            async with msg:  # the failure is reported, and the loop goes on
                handled.append(msg.text)
                if msg.text == "poison":
                    raise RuntimeError("bad input")
            if len(handled) == 2:
                break
    wait_until(lambda: redis_env.client.llen(MK.dead) == 1 and metric(redis_env, "done") == 1)
    letter = json.loads(redis_env.client.lindex(MK.dead, 0))
    assert (letter["body"], letter["reason"]) == ("poison", "failed: RuntimeError: bad input")
    assert (metric(redis_env, "failed"), metric(redis_env, "dead", "failed")) == (1, 1)


async def test_untracked_queue_failure_goes_to_the_failed_list(
    redis_env: RedisEnv, aredis: Any
) -> None:
    redis_env.client.lpush(OUT0, "oops")
    async for msg in consume(aredis, OUT0, pop_timeout=0.2):
        async with msg:
            raise KeyError("missing")
        break
    assert redis_env.client.lrange(CK.failed, 0, -1) == ["oops"]


async def test_a_dead_consumers_message_is_recovered(redis_env: RedisEnv, aredis: Any) -> None:
    """Untracked: back to the queue, in order, once the lease has ended."""
    redis_env.client.lpush(OUT0, "first", "second", "third")
    crashed = consume(aredis, OUT0, lease=1.0, pop_timeout=0.2)
    held = [(await crashed.__anext__()).text, (await crashed.__anext__()).text]
    assert held == ["first", "second"]  # the first was acked when the second was asked for
    assert redis_env.client.lrange(crashed.inflight, 0, -1) == ["second"]
    # ... and the consumer is gone: no ack, no release, no more lease renewals.
    got = []
    async with consume(aredis, OUT0, lease=1.0, pop_timeout=0.2) as messages:
        async for msg in messages:
            got.append(msg.text)
            if len(got) == 2:
                break
    assert sorted(got) == ["second", "third"]
    assert not redis_env.client.exists(crashed.inflight)


async def test_a_dead_consumers_tracked_message_takes_the_retry_path(
    redis_env: RedisEnv, spawn: Spawner, aredis: Any
) -> None:
    start_mover(spawn, redis_env, "--max-deliveries", "3", "--retry-backoff", "0")
    redis_env.client.lpush(IN, "held")
    crashed = consume(aredis, OUT0, namespace=NS, lease=1.0, pop_timeout=0.2)
    assert (await crashed.__anext__()).text == "held"
    async with consume(aredis, OUT0, namespace=NS, lease=1.0, pop_timeout=0.2) as messages:
        async for msg in messages:
            assert msg.text == "held"
            break
    record = redis_env.client.hgetall(MK.message(1))
    assert record["last_error"] == f"failed: consumer {crashed.id} lost"
    wait_until(lambda: metric(redis_env, "done") == 1)
    assert redis_env.client.hget(MK.message(1), "deliveries") == "2"


def test_the_example_consumer(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(spawn, redis_env, "--max-deliveries", "2", "--retry-backoff", "0")
    example = start_script(
        spawn,
        ROOT / "examples" / "consumer.py",
        *["--redis", redis_env.url, "--queue", OUT0, "--namespace", NS, "--concurrency", "4"],
    )
    example.wait_for_log(f"consuming {OUT0}")
    redis_env.client.lpush(IN, json.dumps({"meta": {"id": "order-1"}}), "not json")
    example.wait_for_log("handled order-1")
    wait_until(lambda: metric(redis_env, "done") == 1)
    wait_until(lambda: redis_env.client.llen(MK.dead) == 1, message="not json, dead after 2")
    assert json.loads(redis_env.client.lindex(MK.dead, 0))["deliveries"] == 2
    example.signal(15)
    assert example.wait(10) == 0
    assert "stopped" in example.log()


@pytest.mark.slow
def test_consumer_rides_out_a_redis_restart(redis_env: RedisEnv, spawn: Spawner) -> None:
    record = "{t}:processed"
    worker = start_worker(spawn, redis_env, OUT0, "", record)
    redis_env.client.lpush(OUT0, "before")
    wait_until(lambda: redis_env.client.llen(record) == 1)
    server = redis_env.server_for(OUT0)
    server.stop()
    wait_until(lambda: "unavailable" in worker.log(), message="the outage noticed")
    server.start()
    redis_env.wait_healthy()
    redis_env.client.lpush(OUT0, "after")
    wait_until(lambda: redis_env.client.llen(record) == 2, timeout=30)
    assert redis_env.client.lrange(record, 0, -1) == ["after", "before"]
    assert worker.alive
    assert worker.log().count("unavailable") == 1, "the outage is logged once"
