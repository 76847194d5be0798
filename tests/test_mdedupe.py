"""mdedupe as a real process on real Redis (standalone and Cluster): the xid rules, exactly the
repeats inside the window dropped, passed again after it, and kill -9 lets nothing through twice."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until
from tests.stagetools import (
    assert_each_once,
    keys_like,
    kill9_churn,
    messages,
    produce_in_background,
    push,
    received,
    restart_redis_under,
    wait_drained,
)

IN, OUT, DUPS = "{d}:in", "{d}:out", "{d}:dups"
NS = "{d}:mdedupe"
SEEN = f"{IN}:mdedupe:seen:"


def dedupe_args(env: RedisEnv, *extra: str, window: float = 2.0) -> list[str]:
    args = ["mdedupe", "--redis", env.url, "--in", IN, "--out", OUT, "--window", str(window)]
    args += ["--pop-timeout", "0.5", "--service-namespace", NS, "--metrics-interval", "0.1"]
    return [*args, *extra]


def start(spawn: Spawner, env: RedisEnv, *extra: str, window: float = 2.0) -> ServiceProcess:
    proc = spawn(*dedupe_args(env, *extra, window=window))
    proc.wait_for_log("mdedupe started")
    return proc


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def doc(xid: object, body: int) -> str:
    return json.dumps({"meta": {"id": xid}, "body": body})


def test_drops_exactly_the_repeats_inside_the_window_and_passes_them_after(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    start(spawn, env, "--duplicates", DUPS)
    first = ["12", doc("abc", 1), "hello", "12", doc("abc", 2), "hello", doc(7, 3), "7", "{bad"]
    push(env, IN, first)
    wait_until(lambda: env.client.llen(OUT) + env.client.llen(DUPS) == len(first))
    assert received(env, OUT) == ["12", doc("abc", 1), "hello", doc(7, 3), "{bad"]
    assert received(env, DUPS) == ["12", doc("abc", 2), "hello", "7"]
    markers = {"12", "abc", sha1("hello"), "7", sha1("{bad")}
    assert keys_like(env, f"{SEEN}*", near=IN) == {SEEN + xid for xid in markers}, "SPEC xid rules"

    push(env, IN, ["hello", "13"])  # inside the window: hello is a repeat, 13 is new
    wait_until(lambda: env.client.llen(OUT) + env.client.llen(DUPS) == len(first) + 2)
    assert received(env, OUT)[-1] == "13"
    assert received(env, DUPS)[-1] == "hello"

    wait_until(lambda: not env.client.exists(SEEN + "12"), timeout=5, message="the window ends")
    push(env, IN, ["12", "hello"])  # after the window: both pass again
    wait_until(lambda: env.client.llen(OUT) == 8, message="12 and hello passed again")
    assert received(env, OUT)[-2:] == ["12", "hello"]
    assert env.client.llen(DUPS) == 5
    metric = f"{NS}:metrics:dedupe"
    wait_until(lambda: env.client.hmget(metric, "passed", "duplicates") == ["8", "5"])


def test_duplicates_are_dropped_without_a_side_list(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env)
    push(redis_env, IN, ["a", "b", "a", "c", "b"])
    wait_drained(redis_env, IN)
    wait_until(lambda: redis_env.client.llen(OUT) == 3)
    assert received(redis_env, OUT) == ["a", "b", "c"]
    assert not redis_env.client.exists(DUPS)


@pytest.mark.slow
def test_kill9_of_replicas_mid_run_passes_each_message_exactly_once(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    """Every message is sent twice (the copy 500 messages later): whatever the kills, each one
    reaches the output exactly once and its copy the duplicates list exactly once."""
    env = redis_env
    unique = messages(10_000)
    sent = [msg for i in range(0, len(unique), 500) for msg in unique[i : i + 500] * 2]
    producer = produce_in_background(env, IN, sent, seconds=2.0)
    args = dedupe_args(env, "--duplicates", DUPS, "--batch", "100", window=60)
    kill9_churn(spawn, args, started="mdedupe started", kills=4, seed=7, replicas=2)
    producer.join()
    wait_until(
        lambda: env.client.llen(OUT) + env.client.llen(DUPS) >= len(sent),
        timeout=30,
        message=lambda: f"all taken: out {env.client.llen(OUT)} dups {env.client.llen(DUPS)}",
    )
    out, dups = received(env, OUT), received(env, DUPS)
    assert_each_once(out, unique)
    assert_each_once(dups, unique)
    assert out == unique, "order kept"


@pytest.mark.slow
def test_redis_restart_mid_run_resumes_by_itself(redis_env: RedisEnv, spawn: Spawner) -> None:
    env = redis_env
    proc = start(spawn, env, window=60)
    push(env, IN, ["a", "b", "a"])
    wait_until(lambda: env.client.llen(OUT) == 2)
    restart_redis_under(env, proc, IN)
    push(env, IN, ["b", "c"])  # the markers survived the restart (AOF): b is still a repeat
    wait_until(lambda: env.client.llen(OUT) == 3)
    assert received(env, OUT) == ["a", "b", "c"]


def test_seen_prefix_without_hash_tag_is_refused_on_cluster(redis_env: RedisEnv) -> None:
    if not redis_env.is_cluster:
        pytest.skip("slots exist only on Cluster")
    result = run_cli(*dedupe_args(redis_env, "--seen", "seen:"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'seen:' has no hash tag" in result.stderr
    assert "{d}" in result.stderr
