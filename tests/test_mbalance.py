"""mbalance as a real process on real Redis (standalone and Cluster): lowest length wins, ties
rotate across replicas, weights, caps hold messages back, dead consumers' queues are skipped, and
kill -9 loses and duplicates nothing."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, wait_until
from tests.stagetools import (
    assert_each_once,
    kill9_churn,
    lengths,
    messages,
    produce_in_background,
    push,
    received,
    register_consumer,
    restart_redis_under,
    script_calls,
    wait_drained,
)

IN = "{b}:in"
Q0, Q1, Q2 = "{b}:q0", "{b}:q1", "{b}:q2"
NS = "{b}:mbalance"


def balance_args(env: RedisEnv, *outs: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["mbalance", "--redis", env.url, "--in", IN, "--pop-timeout", "0.5"]
    args += ["--service-namespace", NS, "--metrics-interval", "0.1"]
    for out in outs:
        args += ["--out", out]
    return [*args, *extra]


def start(spawn: Spawner, env: RedisEnv, *outs: str, extra: tuple[str, ...] = ()) -> ServiceProcess:
    proc = spawn(*balance_args(env, *outs, extra=extra))
    proc.wait_for_log("mbalance started")
    return proc


def held_episodes(env: RedisEnv) -> int:
    return int(env.client.hget(f"{NS}:metrics:balance", "held") or 0)


def test_fills_the_shortest_and_rotates_ties_across_replicas(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    push(env, Q0, messages(5, prefix="old"))
    push(env, Q2, messages(2, prefix="old"))
    for _ in range(2):
        start(spawn, env, Q0, Q1, Q2, extra=("--batch", "3"))
    push(env, IN, messages(10))
    wait_drained(env, IN)
    assert sorted(lengths(env, Q0, Q1, Q2)) == [5, 6, 6], "10 messages level 5, 0, 2 to 6, 6, 5"

    env.client.delete(Q0, Q1, Q2)
    chosen = []
    for msg in messages(7, offset=100):  # all empty each time: a tie, broken round-robin
        env.client.lpush(IN, msg)
        holder = wait_until(
            lambda: next((q for q in (Q0, Q1, Q2) if env.client.llen(q)), None),
            timeout=5,
            message=f"{msg} moved",
        )
        assert env.client.rpop(holder) == msg
        chosen.append((Q0, Q1, Q2).index(holder))
    steps = [(b - a) % 3 for a, b in itertools.pairwise(chosen)]
    assert steps == [1] * 6, f"ties rotate through every output: {chosen}"
    assert env.client.exists(f"{IN}:mbalance:cursor"), "the cursor replicas share is in Redis"


def test_weights_share_in_proportion(redis_env: RedisEnv, spawn: Spawner) -> None:
    start(spawn, redis_env, Q0, Q1, extra=("--weight", f"{Q0}=3"))
    push(redis_env, IN, messages(40))
    wait_drained(redis_env, IN)
    assert lengths(redis_env, Q0, Q1) == [30, 10]


def test_steady_producer_and_consumers_of_different_speeds_stay_within_one(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    """The producer pushes one message a tick; the fast consumer takes one every 2nd tick, the
    slow one every 7th (never both in one tick). After every move the lengths are within 1."""
    env = redis_env
    start(spawn, env, Q0, Q1)
    taken = {Q0: [], Q1: []}
    for tick, msg in enumerate(messages(240)):
        env.client.lpush(IN, msg)
        wait_until(lambda: env.client.llen(IN) == 0, timeout=5, interval=0.001)
        slow, fast = lengths(env, Q0, Q1)
        assert abs(slow - fast) <= 1, f"tick {tick}: lengths {slow} and {fast}"
        consumer = Q1 if tick % 2 == 0 else Q0 if tick % 7 == 3 else None
        if consumer is not None and env.client.llen(consumer):
            taken[consumer].append(env.client.rpop(consumer))
    assert len(taken[Q1]) > 2 * len(taken[Q0]), "the consumers really ran at different speeds"
    everything = taken[Q0] + taken[Q1] + received(env, Q0) + received(env, Q1)
    assert_each_once(everything, messages(240))


def test_caps_hold_messages_back_without_loss_or_spinning(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    start(spawn, env, Q0, Q1, extra=("--cap", "5", "--cap", f"{Q1}=3"))
    push(env, IN, messages(50))
    wait_until(lambda: lengths(env, IN, Q0, Q1) == [42, 5, 3], message="outputs at their caps")
    wait_until(lambda: held_episodes(env) >= 1)

    calls, began = script_calls(env, IN), time.monotonic()
    wait_until(lambda: time.monotonic() - began >= 1.0, interval=0.05, message="a second")
    assert lengths(env, IN, Q0, Q1) == [42, 5, 3], "nothing moves past the caps"
    assert script_calls(env, IN) - calls < 40, "held back, the stage sleeps instead of spinning"

    status = run_cli("status", "--redis", env.url, "--service-namespace", NS, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queues"] == {IN: 42, Q0: 5, Q1: 3}

    got: dict[str, list[str]] = {Q0: [], Q1: []}

    def consume() -> bool:
        for queue in (Q0, Q1):
            msg = env.client.rpop(queue)
            if msg is not None:
                got[queue].append(msg)
        return len(got[Q0]) + len(got[Q1]) == 50

    wait_until(consume, message="every message consumed")
    assert_each_once(got[Q0] + got[Q1], messages(50))
    for queue in (Q0, Q1):
        assert got[queue] == sorted(got[queue]), f"{queue} keeps the input's order"


def test_outputs_without_live_consumers_are_skipped(redis_env: RedisEnv, spawn: Spawner) -> None:
    env = redis_env
    # Namespaces without the queues' hash tag: on Cluster they live in other slots, other nodes.
    w0, w1 = "workers0", "workers1"
    w0_key = register_consumer(env, w0)
    proc = start(spawn, env, f"{Q0}={w0}", f"{Q1}={w1}", extra=("--live-check", "0.1"))
    push(env, IN, messages(10))
    wait_drained(env, IN)
    assert lengths(env, Q0, Q1) == [10, 0], "workers1 has no registration: its queue is skipped"

    register_consumer(env, w1)
    env.client.delete(w0_key)
    proc.wait_for_log(f"out {Q0} ({w0}): no live consumer")
    proc.wait_for_log(f"out {Q1} ({w1}): a consumer is live: using it")
    push(env, IN, messages(10, offset=10))
    wait_drained(env, IN)
    assert lengths(env, Q0, Q1) == [10, 10]

    env.client.delete(f"{w1}:service:1")
    wait_until(lambda: proc.log().count(f"out {Q1} ({w1}): no live consumer") == 2)
    push(env, IN, messages(5, offset=20))
    wait_until(lambda: held_episodes(env) >= 1)
    assert lengths(env, IN, Q0, Q1) == [5, 10, 10], "no live consumer at all: messages wait"
    register_consumer(env, w0, instance_id=2)
    wait_drained(env, IN)
    assert lengths(env, Q0, Q1) == [15, 10]
    assert_each_once(received(env, Q0) + received(env, Q1), messages(25))


@pytest.mark.slow
def test_kill9_of_replicas_mid_run_loses_and_duplicates_nothing(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    msgs = messages(20_000)
    producer = produce_in_background(env, IN, msgs, seconds=2.0)
    args = balance_args(env, Q0, Q1, Q2, extra=("--batch", "100"))
    kill9_churn(spawn, args, started="mbalance started", kills=4, seed=5, replicas=2)
    producer.join()
    wait_until(
        lambda: env.client.llen(IN) == 0 and sum(lengths(env, Q0, Q1, Q2)) >= len(msgs),
        timeout=30,
        message=lambda: f"all moved: {lengths(env, IN, Q0, Q1, Q2)}",
    )
    outs = [received(env, q) for q in (Q0, Q1, Q2)]
    assert_each_once(outs[0] + outs[1] + outs[2], msgs)
    for out in outs:
        assert out == sorted(out), "each output keeps the input's order"
    assert max(map(len, outs)) - min(map(len, outs)) <= 1


@pytest.mark.slow
def test_redis_restart_mid_run_resumes_by_itself(redis_env: RedisEnv, spawn: Spawner) -> None:
    env = redis_env
    register_consumer(env, "{b}:workers0")
    proc = start(spawn, env, f"{Q0}={{b}}:workers0", Q1, extra=("--live-check", "0.1"))
    push(env, IN, messages(10))
    wait_drained(env, IN)
    restart_redis_under(env, proc, IN)
    push(env, IN, messages(10, offset=10))
    wait_drained(env, IN)
    assert_each_once(received(env, Q0) + received(env, Q1), messages(20))


def test_cursor_in_another_slot_is_refused_on_cluster(redis_env: RedisEnv) -> None:
    if not redis_env.is_cluster:
        pytest.skip("slots exist only on Cluster")
    result = run_cli(*balance_args(redis_env, Q0, extra=("--cursor", "plain:cursor")))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "plain:cursor" in result.stderr
    assert "hash tag" in result.stderr
