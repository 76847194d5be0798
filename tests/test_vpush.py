"""vpush as real processes between two real Redis servers: exactly once in effect, in order.

The source is ``redis_env`` (standalone and Cluster); the destination is the ``second`` server
(standalone: the destination's script is the same whatever the source is). Faults are injected at
the real seams: kill -9 of the active mover, a stopped destination, a restarted source, a TCP
proxy that stalls, and SIGSTOP of the active mover past its lease.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from mpush.config import VpushSettings, load_settings
from mpush.connection import load_lua
from mpush.errors import ConfigError
from mpush.orchestration.redisserver import RedisServer
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until
from tests.proxy import StallingProxy

IN, OUT = "{t}:in", "{t}:out"
NS = "{t}:vpush"
LEASE, INFLIGHT, STATE = f"{IN}:vpush:lease", f"{IN}:vpush:inflight", f"{IN}:vpush:state"


@dataclass
class Dest:
    server: RedisServer
    client: Any  # sync, decode_responses=True

    @property
    def url(self) -> str:
        return self.server.url

    def state_key(self) -> str:
        keys = [k for k in self.client.keys(f"{OUT}:vpush:*")]
        assert len(keys) == 1, keys
        return str(keys[0])


@pytest.fixture
def dest(second: RedisServer) -> Iterator[Dest]:
    second.start()  # a test may have stopped it
    client = redis.Redis.from_url(second.url, decode_responses=True)
    client.flushall()
    yield Dest(second, client)
    client.close()


def vpush_args(src: RedisEnv, out_url: str, *extra: str) -> list[str]:
    return [
        "vpush",
        "--redis",
        src.url,
        "--in",
        IN,
        "--out-redis",
        out_url,
        "--out",
        OUT,
        "--pop-timeout",
        "0.5",
        "--lease-ttl",
        "1",
        "--out-timeout",
        "1",
        "--service-namespace",
        NS,
        "--metrics-interval",
        "0.2",
        *extra,
    ]


def start(spawn: Spawner, src: RedisEnv, out_url: str, *extra: str) -> ServiceProcess:
    proc = spawn(*vpush_args(src, out_url, *extra))
    proc.wait_for_log("vpush started")
    return proc


def messages(n: int, offset: int = 0) -> list[str]:
    return [f"m{i:06d}" for i in range(offset, offset + n)]


def push(src: RedisEnv, msgs: list[str], chunk: int = 500) -> None:
    for at in range(0, len(msgs), chunk):
        src.client.lpush(IN, *msgs[at : at + chunk])


def produce(src: RedisEnv, msgs: list[str], seconds: float) -> threading.Thread:
    """Push ``msgs`` in 100 chunks spread over about ``seconds``, in a thread."""

    def run() -> None:
        size = max(1, len(msgs) // 100)
        for at in range(0, len(msgs), size):
            src.client.lpush(IN, *msgs[at : at + size])
            time.sleep(seconds / 100)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def received(dest: Dest) -> list[str]:
    """The destination list oldest first (the oldest is at the tail, where consumers pop)."""
    return list(reversed(dest.client.lrange(OUT, 0, -1)))


def assert_exact(src: RedisEnv, dest: Dest, expected: list[str], timeout: float = 60) -> None:
    wait_until(
        lambda: (
            dest.client.llen(OUT) >= len(expected)
            and src.client.llen(IN) == 0
            and src.client.llen(INFLIGHT) == 0
        ),
        timeout=timeout,
        message=lambda: (
            f"all moved: in={src.client.llen(IN)} inflight={src.client.llen(INFLIGHT)} "
            f"out={dest.client.llen(OUT)} of {len(expected)}"
        ),
    )
    got = received(dest)
    assert len(got) == len(expected), f"{len(got)} messages at the destination, not {len(expected)}"
    assert len(set(got)) == len(got), "a message arrived twice"
    assert got == expected, "order or content differs"


def active_pid(src: RedisEnv) -> int | None:
    """The pid in the lease ("<token> <host>:<pid>[:<id>]"), or None when nobody holds it."""
    holder = src.client.get(LEASE)
    return int(holder.split(" ", 1)[1].split(":")[1]) if holder else None


# --- the happy path ------------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["1", "100"])
def test_moves_in_order_exactly_once(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner, batch: str
) -> None:
    start(spawn, redis_env, dest.url, "--batch", batch)
    msgs = messages(1500)
    push(redis_env, msgs)
    assert_exact(redis_env, dest, msgs)
    state = dest.client.hgetall(dest.state_key())
    assert state["seq"] == "1500"
    assert 0 < dest.client.ttl(dest.state_key()) <= 604800, "the dedupe state expires"


def test_lone_messages_and_binary_payloads(redis_env: RedisEnv, dest: Dest, spawn: Spawner) -> None:
    start(spawn, redis_env, dest.url)
    for msg in ("one", "two"):
        redis_env.client.lpush(IN, msg)
        wait_until(lambda m=msg: dest.client.lindex(OUT, 0) == m, timeout=5)
    payloads = [bytes([i, 255 - i, 0, 10, 13]) * 3 for i in range(256)]
    binary_src = raw_client(redis_env)
    binary_src.lpush(IN, *payloads)
    binary_dest = redis.Redis.from_url(dest.url)
    wait_until(lambda: binary_dest.llen(OUT) == 258)
    assert list(reversed(binary_dest.lrange(OUT, 0, -1))) == [b"one", b"two", *payloads]
    binary_dest.close()
    binary_src.close()


def raw_client(env: RedisEnv) -> Any:
    if env.is_cluster:
        return redis.RedisCluster(host="127.0.0.1", port=env.servers[0].port)
    return redis.Redis.from_url(env.url)


def test_provenance_marks_json_objects_only(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    start(spawn, redis_env, dest.url, "--batch", "10", "--provenance")
    sent = [
        json.dumps({"id": 1, "meta": {"id": "a"}}),
        json.dumps({"id": 2}),
        "plain text",
        json.dumps([1, 2]),
        json.dumps({"id": 3, "meta": "not an object"}),
        "{broken json",
    ]
    began = time.time() * 1000
    push(redis_env, sent)
    wait_until(lambda: dest.client.llen(OUT) == len(sent))
    got = received(dest)
    first, second = json.loads(got[0]), json.loads(got[1])
    assert first["meta"]["id"] == "a"
    for doc in (first, second):
        assert doc["meta"]["vpush"]["source"].endswith(f"#{IN}")
        assert began - 1000 <= doc["meta"]["vpush"]["moved_at"] <= time.time() * 1000
    assert got[2:] == sent[2:], "non-objects and a non-object meta pass unchanged"


# --- crash points, replicas and fencing ----------------------------------------------------


def test_batch_delivered_but_not_acknowledged_is_not_duplicated(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    """A mover that died between the destination's confirmation and the source's ack."""
    msgs = messages(30)
    push(redis_env, msgs)
    lease_acquire = redis_env.client.register_script(load_lua("lease_acquire"))
    claim = redis_env.client.register_script(load_lua("vpush_claim"))
    deliver = dest.client.register_script(load_lua("vpush_deliver"))
    _, token = lease_acquire(keys=[LEASE, STATE], args=["dead:1", 60000, "token", 0])
    reply = claim(keys=[LEASE, IN, INFLIGHT, STATE], args=[token, "", 10, "e0"])
    epoch, base, batch = reply[1], reply[2], reply[6:]
    assert batch == msgs[:10]
    assert deliver(keys=[OUT, f"{OUT}:vpush:{epoch}"], args=[token, base, 0, *batch]) == [1, 10, 0]
    redis_env.client.delete(LEASE)  # the dead mover's lease expires
    proc = start(spawn, redis_env, dest.url, "--batch", "7")
    assert_exact(redis_env, dest, msgs)
    wait_until(lambda: redis_env.client.hget(f"{NS}:metrics:vpush_moved", "duplicates") == "10")
    assert proc.alive


def test_clean_stop_hands_over_at_once(redis_env: RedisEnv, dest: Dest, spawn: Spawner) -> None:
    first = start(spawn, redis_env, dest.url, "--lease-ttl", "30")
    first.wait_for_log("active mover")
    second = start(spawn, redis_env, dest.url, "--lease-ttl", "30")
    second.wait_for_log("standing by")
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    second.wait_for_log("active mover", timeout=5)  # far sooner than the 30 s lease
    msgs = messages(100)
    push(redis_env, msgs)
    assert_exact(redis_env, dest, msgs)


@pytest.mark.slow
def test_kill9_active_mover_five_times_with_two_replicas(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    procs = {p.pid: p for p in (start(spawn, redis_env, dest.url) for _ in range(2))}
    msgs = messages(20_000)
    producer = produce(redis_env, msgs, seconds=3.0)
    kills = 0
    while kills < 5:
        mark = dest.client.llen(OUT)
        wait_until(
            lambda m=mark: dest.client.llen(OUT) >= m + 600,
            timeout=30,
            message="the active mover makes progress",
        )
        pid = active_pid(redis_env)
        assert pid in procs, f"the lease names {pid}, not one of ours"
        procs.pop(pid).kill9()
        kills += 1
        replacement = spawn(*vpush_args(redis_env, dest.url))
        procs[replacement.pid] = replacement
    producer.join()
    assert_exact(redis_env, dest, msgs)
    assert kills == 5


def test_paused_mover_late_write_is_fenced(redis_env: RedisEnv, dest: Dest, spawn: Spawner) -> None:
    """SIGSTOP the active mover with a write in flight, past its lease; a standby takes over;
    the late write then reaches the destination and is refused there."""
    proxy = StallingProxy(dest.server.port).start()
    try:
        paused = start(spawn, redis_env, proxy.url, "--out-timeout", "10")
        paused.wait_for_log("active mover")
        standby = start(spawn, redis_env, dest.url)
        standby.wait_for_log("standing by")
        msgs = messages(4000)
        producer = produce(redis_env, msgs, seconds=4.0)  # keeps the active mover mid-write
        wait_until(lambda: dest.client.llen(OUT) >= 100, message="the first mover delivers")
        proxy.stall()
        wait_until(lambda: proxy.held_bytes() > 0, message="a write held by the proxy")
        paused.signal(signal.SIGSTOP)
        token, holder = redis_env.client.get(LEASE).split(" ", 1)
        assert f":{paused.pid}" in holder
        standby.wait_for_log("active mover", timeout=10)
        state = dest.state_key()
        wait_until(
            lambda: int(dest.client.hget(state, "token")) > int(token),
            message="the new mover writes with a newer token",
        )
        proxy.resume()  # the paused mover's write arrives now, late
        wait_until(
            lambda: int(dest.client.hget(state, "fenced") or 0) >= 1,
            message="the late write refused",
        )
        paused.signal(signal.SIGCONT)
        producer.join()
        assert_exact(redis_env, dest, msgs)
        paused.wait_for_log("standing down")
        assert paused.alive
        assert standby.alive
        assert active_pid(redis_env) == standby.pid
    finally:
        proxy.close()


# --- outages ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_destination_down_ten_seconds_then_resumes(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    proc = start(spawn, redis_env, dest.url, "--batch", "20")
    msgs = messages(10_000)
    producer = produce(redis_env, msgs, seconds=2.0)
    wait_until(lambda: dest.client.llen(OUT) >= 1000, message="some delivered")
    dest.server.stop()
    down_until = time.monotonic() + 10.0
    wait_until(lambda: time.monotonic() >= down_until, timeout=15, interval=0.2, message="10 s")
    dest.server.start()
    producer.join()
    assert_exact(redis_env, dest, msgs)
    proc.wait_for_log("back after")
    log = proc.log()
    assert log.count("destination redis") == 2, "the outage is logged once, and its end once"
    metric = f"{NS}:metrics:vpush_outage_destination"
    wait_until(lambda: redis_env.client.hget(metric, "count") == "1")
    assert float(redis_env.client.hget(metric, "sum")) >= 9.0


@pytest.mark.slow
def test_source_restart_mid_run_resumes(redis_env: RedisEnv, dest: Dest, spawn: Spawner) -> None:
    proc = start(spawn, redis_env, dest.url)  # one at a time: still busy when the source stops
    first, second = messages(5000), messages(5000, offset=5000)
    push(redis_env, first)
    wait_until(lambda: dest.client.llen(OUT) >= 500, message="some delivered")
    server = redis_env.server_for(IN)
    server.stop()
    assert dest.client.llen(OUT) < len(first), "stopped mid-run"
    down_until = time.monotonic() + 3.0
    wait_until(lambda: time.monotonic() >= down_until, timeout=10, interval=0.2, message="3 s")
    server.start()
    redis_env.wait_healthy()
    proc.wait_for_log("back after", timeout=30)
    push(redis_env, second)
    assert_exact(redis_env, dest, first + second)
    assert proc.alive


def test_stalled_destination_detected_by_timeout_and_recovered(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    proxy = StallingProxy(dest.server.port).start()
    try:
        proc = start(spawn, redis_env, proxy.url, "--batch", "5")
        msgs = messages(2000)
        push(redis_env, msgs[:100])
        wait_until(lambda: dest.client.llen(OUT) == 100, message="the first 100 delivered")
        proxy.stall()
        push(redis_env, msgs[100:])
        proc.wait_for_log("unavailable (TimeoutError", timeout=10)
        assert dest.client.llen(OUT) == 100, "nothing gets through a stalled proxy"
        proxy.resume()  # held writes arrive late; the retries after them are deduplicated
        proc.wait_for_log("back after", timeout=10)
        assert_exact(redis_env, dest, msgs)
        assert proc.log().count("destination redis") == 2, "one outage: its start and its end"
    finally:
        proxy.close()


# --- bad input -------------------------------------------------------------------------------


def test_cross_slot_keys_refused_on_cluster(redis_env: RedisEnv, dest: Dest) -> None:
    if not redis_env.is_cluster:
        pytest.skip("slots exist only on Cluster")
    result = run_cli(
        "vpush", "--redis", redis_env.url, "--in", "plain", "--out-redis", dest.url, "--out", "o"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "plain:vpush:lease" in result.stderr
    assert "hash tag" in result.stderr


def test_cross_slot_destination_refused(redis_env: RedisEnv, dest: Dest) -> None:
    if not redis_env.is_cluster:
        pytest.skip("uses the Cluster as a destination")
    cluster_url = redis_env.url
    result = run_cli(
        "vpush", "--redis", dest.url, "--in", "in", "--out-redis", cluster_url, "--out", "plain"
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "destination side" in result.stderr
    assert "plain:vpush:<epoch>" in result.stderr


def test_destination_list_of_wrong_type_is_a_config_error(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    dest.client.set(OUT, "not a list")
    proc = start(spawn, redis_env, dest.url)
    redis_env.client.lpush(IN, "m")
    assert proc.wait(10) == 2
    assert f"{OUT!r} on the destination is not a list" in proc.log()
    assert redis_env.client.lrange(INFLIGHT, 0, -1) == ["m"], "the message is kept in flight"


def test_status_shows_the_route_and_metrics(
    redis_env: RedisEnv, dest: Dest, spawn: Spawner
) -> None:
    start(spawn, redis_env, dest.url, "--batch", "50")
    push(redis_env, messages(500))
    metric = f"{NS}:metrics:vpush_moved"
    wait_until(lambda: redis_env.client.hget(metric, "sum") == "500")
    result = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS, "--json")
    report = json.loads(result.stdout)
    (instance,) = report["instances"]
    assert instance["fields"]["out_redis"] == dest.url
    assert report["queues"] == {IN: 0}, "the remote out list is not measured on the source"
    assert {"vpush_moved", "vpush_lag", "vpush_inflight_age"} <= set(report["metrics"])
    assert report["metrics"]["vpush_moved"]["takeovers"] >= 1


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, "out_redis: required, set --out-redis"),
        ({"out_redis": "redis://h:1", "out": ["a", "b"]}, "out: vpush moves to exactly one list"),
        ({"out_redis": "redis://h:1", "lease_ttl": "0.5"}, "lease_ttl: 0.5s must be longer"),
        ({"out_redis": "redis://h:1", "batch": "0"}, "batch: Input should be greater"),
        ({"redis": "redis://h:1", "out_redis": "redis://h:1", "out": ["q"]}, "is the input list"),
    ],
)
def test_bad_settings_are_one_clear_line(flags: dict[str, Any], expected: str) -> None:
    given = {"input": "q", "out": ["r"], **flags}
    with pytest.raises(ConfigError) as caught:
        load_settings(VpushSettings, given, env={})
    assert expected in str(caught.value)


def test_bad_settings_exit_2_from_the_command_line() -> None:
    result = run_cli("vpush", "--in", IN, "--out", OUT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mpush vpush: config: out_redis: required, set --out-redis, MPUSH_OUT_REDIS or "
        "'out_redis' in the config file"
    ]
