"""Message tracking with real mpush and monitor processes (standalone and Cluster): xids,
response times, timeouts, redelivery, dead letters, capacity, several monitors, kill -9."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpush.connection import load_lua
from mpush.keys import ConsumerKeys, MessageKeys
from mpush.runtime.metrics import histo_bucket
from mpush.runtime.tracking import message_xid
from mpush.status.histogram import BUCKETS
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until

IN, OUT0, OUT1 = "{t}:in", "{t}:out0", "{t}:out1"
NS = "{t}:trk"
MK = MessageKeys(NS)


def mover_args(env: RedisEnv, *extra: str, outs: tuple[str, ...] = (OUT0,)) -> list[str]:
    args = ["mpush", "--redis", env.url, "--in", IN, "--pop-timeout", "0.3"]
    for out in outs:
        args += ["--out", out]
    return [*args, "--service-namespace", NS, "--metrics-interval", "0.2", *extra]


def start_mover(spawn: Spawner, env: RedisEnv, *extra: str) -> ServiceProcess:
    proc = spawn(*mover_args(env, *extra))
    proc.wait_for_log("mpush started")
    return proc


def metric(env: RedisEnv, name: str, field: str = "count") -> float:
    return float(env.client.hget(MK.metrics(name), field) or 0)


def redis_now(env: RedisEnv) -> float:
    seconds, micros = env.client.time()
    return int(seconds) + int(micros) / 1e6


# -- xids


def test_registration_in_the_move_with_the_xid_rules(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(spawn, redis_env, "--message-timeout", "7")
    msgs = [
        "12345",
        json.dumps({"meta": {"id": "order-7"}, "total": 3}),
        json.dumps({"meta": {"id": 42}}),
        "hello",
        json.dumps({"meta": {}}),
        "{not json",
    ]
    redis_env.client.lpush(IN, *msgs)  # LPUSH a b c: a is the oldest and gets id 1
    wait_until(lambda: redis_env.client.llen(OUT0) == len(msgs))
    expected = ["12345", "order-7", "42", *(message_xid(m)[0] for m in msgs[3:])]
    assert expected[3] == "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"  # SHA-1 of "hello"
    assert [message_xid(m)[0] for m in msgs] == expected
    xids = redis_env.client.hgetall(MK.xids)
    assert xids == {xid: str(i) for i, xid in enumerate(expected, start=1)}
    batch = redis_env.client.hgetall(MK.batch(1))
    assert json.loads(batch["xids"]) == expected
    assert batch["count"] == batch["pending"] == "6"
    assert batch["service"] == "mpush"
    assert float(batch["deadline"]) - float(batch["timestamp"]) == pytest.approx(7.0)
    assert abs(float(batch["timestamp"]) - redis_now(redis_env)) < 10
    assert redis_env.client.get(MK.counter) == "6"


def _not_json(body: str | bytes) -> bool:
    """Invalid JSON that looks like an object is read differently by cjson and Python's json
    (numbers with leading zeros, say): the two agree on valid JSON and on anything else."""
    raw = body.encode() if isinstance(body, str) else body
    return not raw.lstrip(b" \t\n\v\f\r").startswith(b"{")


@given(
    st.one_of(
        st.from_regex(r"\A[0-9]{1,30}\Z"),
        st.builds(
            lambda v: json.dumps({"meta": {"id": v}, "x": 1}),
            st.one_of(
                st.text(max_size=20),
                st.integers(-(2**60), 2**60),
                st.floats(allow_nan=False, allow_infinity=False),
                st.booleans(),
                st.none(),
            ),
        ),
        st.text(max_size=40).filter(_not_json),
        st.binary(max_size=40).filter(_not_json),
    )
)
@settings(max_examples=150, deadline=None)
def test_python_xid_matches_the_lua_xid(standalone_client: object, body: str | bytes) -> None:
    """mpush.consumer computes xids in Python: it must agree with the scripts, byte for byte."""
    script = load_lua("tracking") + "\nreturn xid_of(ARGV[1])"
    lua = standalone_client.eval(script, 0, body)  # type: ignore[attr-defined]
    assert lua.decode() == message_xid(body)[0]


@pytest.fixture(scope="module")
def standalone_client(standalone: object) -> object:
    """A bytes client on the standalone server (the xid comparison has no Cluster variant)."""
    import redis

    return redis.Redis.from_url(standalone.url)  # type: ignore[attr-defined]


# -- done → response times


def test_done_records_the_response_time_in_its_bucket(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(spawn, redis_env, "--message-timeout", "4")
    redis_env.client.lpush(IN, "job-1", "job-2")
    wait_until(lambda: redis_env.client.llen(OUT0) == 2)
    registered = float(redis_env.client.hget(MK.batch(1), "timestamp"))
    wait_until(lambda: redis_now(redis_env) >= registered + 2.1, message="2.1 s to pass")
    redis_env.client.lpush(MK.done, message_xid("job-1")[0])  # done by xid
    wait_until(lambda: metric(redis_env, "done") == 1)
    done = redis_env.client.hgetall(MK.metrics("done"))
    response = float(done["sum"])
    assert 2.1 <= response < 2.4, f"response time {response}"
    assert done == {
        "count": "1",
        "sum": done["sum"],
        "max": f"{response:.3f}",
        histo_bucket(response, 4.0): "1",
    }
    assert histo_bucket(response, 4.0) == "histo50"
    redis_env.client.lpush(MK.done, "2", "nonsense")  # done by id; and an unknown report
    wait_until(lambda: metric(redis_env, "done") == 2 and metric(redis_env, "done", "unknown") == 1)
    assert redis_env.client.hlen(MK.xids) == 0
    assert not redis_env.client.exists(MK.batch(1)), "a finished batch registration goes"


# -- timeouts, redelivery, dead letters


def test_never_acked_is_redelivered_then_dead_lettered(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(
        spawn,
        redis_env,
        *("--message-timeout", "0.4", "--max-deliveries", "3"),
        *("--retry-backoff", "0.1", "--retry-backoff-max", "0.2"),
    )
    redis_env.client.lpush(IN, "job-x")
    wait_until(lambda: redis_env.client.llen(MK.dead) == 1, timeout=15)
    assert redis_env.client.lrange(OUT0, 0, -1) == ["job-x"] * 3, "delivered 3 times"
    letter = json.loads(redis_env.client.lindex(MK.dead, 0))
    assert letter["xid"] == message_xid("job-x")[0]
    assert (letter["id"], letter["deliveries"], letter["reason"]) == ("1", 3, "timeout")
    assert (letter["body"], letter["outs"], letter["service"]) == ("job-x", [OUT0], "mpush")
    record = redis_env.client.hgetall(MK.message(1))
    assert (record["deliveries"], record["state"]) == ("3", "dead")
    assert "body" not in record
    assert 0 < redis_env.client.ttl(MK.message(1)) <= 3600
    assert metric(redis_env, "timeout") == 3
    assert metric(redis_env, "retry") == 2
    assert (metric(redis_env, "dead"), metric(redis_env, "dead", "timeout")) == (1, 1)
    assert redis_env.client.hlen(MK.xids) == 0
    assert redis_env.client.zcard(MK.due) == 0


def test_retry_off_counts_timeouts_and_delists_at_expiry(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    start_mover(spawn, redis_env, "--message-timeout", "0.3", "--message-expire", "3")
    redis_env.client.lpush(IN, "a", "b", "c")
    wait_until(lambda: metric(redis_env, "timeout") == 3)
    assert redis_env.client.llen(OUT0) == 3, "no redelivery with retry off"
    assert redis_env.client.hlen(MK.xids) == 3, "still tracked: a late done still counts"
    redis_env.client.lpush(MK.done, message_xid("a")[0])
    wait_until(lambda: metric(redis_env, "done") == 1)
    assert metric(redis_env, "done", "histo100") == 1, "a late done lands in histo100"
    wait_until(lambda: metric(redis_env, "timeout", "expired") == 2, timeout=10)
    assert redis_env.client.hlen(MK.xids) == 0
    assert redis_env.client.zcard(MK.due) == 0
    assert redis_env.client.llen(MK.dead) == 0, "retry off: no dead letters for timeouts"
    assert metric(redis_env, "timeout") == 3, "each timeout counted once"


# -- capacity


def test_capacity_bound_respected(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(spawn, redis_env, "--message-capacity", "100", "--batch", "40")
    redis_env.client.lpush(IN, *[f"m{i}" for i in range(250)])
    wait_until(lambda: redis_env.client.llen(OUT0) == 250)
    assert redis_env.client.hlen(MK.xids) == 100
    assert redis_env.client.get(MK.counter) == "100"
    over = f"{NS}:metrics:message"
    wait_until(lambda: redis_env.client.hget(over, "over_capacity") == "150")
    assert redis_env.client.hget(over, "tracked") == "100"
    redis_env.client.lpush(MK.done, *[message_xid(f"m{i}")[0] for i in range(30)])
    wait_until(lambda: metric(redis_env, "done") == 30)
    redis_env.client.lpush(IN, *[f"n{i}" for i in range(50)])
    wait_until(lambda: redis_env.client.llen(OUT0) == 300)
    assert redis_env.client.hlen(MK.xids) == 100, "room for 30 more, then full again"
    assert redis_env.client.get(MK.counter) == "130"


# -- several monitors


def test_three_monitors_count_each_message_once(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(spawn, redis_env, "--message-timeout", "3", "--batch", "100")
    for _ in range(2):
        monitor = spawn(
            "monitor", "--redis", redis_env.url, "--service-namespace", NS, "--pop-timeout", "0.3"
        )
        monitor.wait_for_log("monitor started")
    total = 3000
    msgs = [f"m{i:05d}" for i in range(total)]
    for start in range(0, total, 500):
        redis_env.client.lpush(IN, *msgs[start : start + 500])
    wait_until(lambda: redis_env.client.llen(OUT0) == total)
    done = [message_xid(m)[0] for m in msgs[::2]]
    for start in range(0, len(done), 100):  # reports arrive while all three monitors wait
        redis_env.client.lpush(MK.done, *done[start : start + 100])
    wait_until(lambda: metric(redis_env, "done") >= total // 2)
    wait_until(lambda: metric(redis_env, "timeout") >= total // 2, timeout=30)
    wait_until(lambda: all_late(redis_env), message="every deadline handled")
    assert metric(redis_env, "done") == total // 2
    assert metric(redis_env, "timeout") == total // 2
    assert metric(redis_env, "done", "unknown") == 0
    done_hash = redis_env.client.hgetall(MK.metrics("done"))
    assert sum(int(v) for k, v in done_hash.items() if k in BUCKETS) == total // 2


def all_late(env: RedisEnv) -> bool:
    """Every batch registration left is past its deadline and waiting for its expiry."""
    due = env.client.zrange(MK.due, 0, -1)
    return all(env.client.hget(MK.batch(m.split(":")[1]), "state") == "late" for m in due)


# -- Cluster slots, status


def test_cluster_needs_the_namespace_to_share_the_queues_tag(redis_env: RedisEnv) -> None:
    if not redis_env.is_cluster:
        pytest.skip("slots exist only on Cluster")
    args = ["mpush", "--redis", redis_env.url, "--in", IN, "--out", OUT0]
    result = run_cli(*args, "--service-namespace", "plain:trk", "--startup-timeout", "5")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for text in ("message tracking", "plain:trk:message:id", "hash tag", "--no-message-tracking"):
        assert text in result.stderr


def test_no_message_tracking_keeps_the_namespace_for_registry_only(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    ns = "plain:trk"  # no hash tag: fine on Cluster once tracking is off
    proc = spawn(
        *["mpush", "--redis", redis_env.url, "--in", IN, "--out", OUT0],
        *["--service-namespace", ns, "--no-message-tracking", "--pop-timeout", "0.3"],
    )
    proc.wait_for_log("mpush started")
    redis_env.client.lpush(IN, "x")
    wait_until(lambda: redis_env.client.llen(OUT0) == 1)
    assert redis_env.client.exists(f"{ns}:service:1")
    assert not redis_env.client.exists(MessageKeys(ns).counter)


def test_a_tracking_key_of_another_type_is_a_clear_config_error(redis_env: RedisEnv) -> None:
    redis_env.client.set(MK.xids, "not a hash")
    result = run_cli(*mover_args(redis_env))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{MK.xids!r} holds a Redis string, not a hash" in result.stderr


def test_status_shows_tracking_and_the_histogram(redis_env: RedisEnv, spawn: Spawner) -> None:
    start_mover(spawn, redis_env, "--message-timeout", "5")
    redis_env.client.lpush(IN, *[f"s{i}" for i in range(10)])
    wait_until(lambda: redis_env.client.llen(OUT0) == 10)
    redis_env.client.lpush(MK.done, *[message_xid(f"s{i}")[0] for i in range(4)])
    wait_until(lambda: metric(redis_env, "done") == 4)
    result = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tracking"] == {
        "messages": 10,
        "in_flight": 6,
        "reports_waiting": 0,
        "dead_letters": 0,
    }
    assert report["metrics"]["done"]["histo0"] == 4
    table = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS)
    assert table.returncode == 0, table.stderr
    for text in ("message tracking", "in flight", "response times", "0–10%", "█"):
        assert text in table.stdout
    prom = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS, "--prometheus")
    assert f'mpush_messages_in_flight{{namespace="{NS}"}} 6' in prom.stdout


@pytest.mark.slow
def test_tracking_resumes_after_a_redis_restart(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = start_mover(spawn, redis_env, "--message-timeout", "30")
    redis_env.client.lpush(IN, "before")
    wait_until(lambda: redis_env.client.llen(OUT0) == 1)
    server = redis_env.server_for(IN)
    server.stop()
    proc.wait_for_log("unavailable")
    server.start()
    redis_env.wait_healthy()
    proc.wait_for_log("back after", timeout=30)
    redis_env.client.lpush(IN, "after")
    wait_until(lambda: redis_env.client.llen(OUT0) == 2)
    redis_env.client.lpush(MK.done, message_xid("before")[0], message_xid("after")[0])
    wait_until(lambda: metric(redis_env, "done") == 2)
    assert redis_env.client.get(MK.counter) == "2"
    assert proc.alive
    if not redis_env.is_cluster:  # a rejoining Cluster node may flap: a second, real episode
        assert proc.log().count("unavailable") == 1, "mover and monitor share one outage log"


# -- kill -9: every message done or dead-lettered


@pytest.mark.slow
def test_kill9_of_mover_and_consumer_every_message_done_or_dead(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    from tests.test_consumer import start_worker

    total, record = 3000, "{t}:processed"
    retry = ("--message-timeout", "2", "--max-deliveries", "4", "--retry-backoff", "0.2")
    mover_extra = ("--batch", "50", *retry)
    mover = start_mover(spawn, redis_env, *mover_extra)
    worker = start_worker(spawn, redis_env, OUT0, NS, record, lease=1.5)
    msgs = [f"k{i:05d}" for i in range(total)]
    producer = threading.Thread(target=_produce, args=(redis_env, msgs, 3.0))
    producer.start()
    rng = random.Random(20261128)
    for victim in ("mover", "worker", "mover"):
        time.sleep(rng.uniform(0.3, 0.8))  # the random moment of the kill -9
        if victim == "mover":
            mover.kill9()
            mover = spawn(*mover_args(redis_env, *mover_extra))
        else:
            worker.kill9()
            worker = start_worker(spawn, redis_env, OUT0, NS, record, lease=1.5)
    producer.join()

    def settled() -> bool:
        return metric(redis_env, "done") + metric(redis_env, "dead") >= total

    wait_until(
        settled,
        timeout=60,
        message=lambda: (
            f"done {metric(redis_env, 'done')} + dead {metric(redis_env, 'dead')} of {total}, "
            f"in flight {redis_env.client.hlen(MK.xids)}"
        ),
    )
    inflight = ConsumerKeys(OUT0).inflight("*")
    wait_until(
        lambda: all(redis_env.client.llen(key) == 0 for key in scan(redis_env, inflight)),
        message="the killed consumer's in-flight list recovered",
    )
    assert redis_env.client.get(MK.counter) == str(total), "each message registered once"
    assert metric(redis_env, "done") + metric(redis_env, "dead") == total
    assert redis_env.client.hlen(MK.xids) == 0
    dead = {json.loads(raw)["body"] for raw in redis_env.client.lrange(MK.dead, 0, -1)}
    processed = set(redis_env.client.lrange(record, 0, -1))
    assert processed | dead == set(msgs), "none vanished"
    assert metric(redis_env, "done") >= total - len(dead)


def scan(env: RedisEnv, pattern: str) -> list[str]:
    if env.is_cluster:
        return list(env.client.scan_iter(match=pattern, target_nodes="all"))
    return list(env.client.scan_iter(match=pattern))


def _produce(env: RedisEnv, msgs: list[str], seconds: float) -> None:
    chunks = 60
    size = len(msgs) // chunks
    for index in range(chunks):
        env.client.lpush(IN, *msgs[index * size : (index + 1) * size])
        time.sleep(seconds / chunks)
