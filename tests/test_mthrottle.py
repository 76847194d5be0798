"""mthrottle as a real process on real Redis (standalone and Cluster): replicas together pass at
most rate×time + burst and at least 90% of rate×time, the rest waits in the input, the stage sleeps
rather than spins, and kill -9 loses and duplicates nothing."""

from __future__ import annotations

import time

import pytest

from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, wait_until
from tests.stagetools import (
    assert_each_once,
    kill9_churn,
    messages,
    produce_in_background,
    push,
    received,
    restart_redis_under,
    script_calls,
    wait_drained,
)

IN, OUT = "{h}:in", "{h}:out"
NS = "{h}:mthrottle"
BUCKET = f"{IN}:mthrottle:bucket"


def throttle_args(env: RedisEnv, rate: int, *extra: str) -> list[str]:
    args = ["mthrottle", "--redis", env.url, "--in", IN, "--out", OUT, "--rate", str(rate)]
    args += ["--pop-timeout", "0.5", "--service-namespace", NS]
    return [*args, *extra]


def start(spawn: Spawner, env: RedisEnv, rate: int, *extra: str) -> ServiceProcess:
    proc = spawn(*throttle_args(env, rate, *extra))
    proc.wait_for_log("mthrottle started")
    return proc


def test_messages_wait_in_the_input_and_the_stage_sleeps_between_tokens(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    start(spawn, env, 10, "--burst", "3")
    began = time.monotonic()
    push(env, IN, messages(40))
    wait_until(lambda: env.client.llen(OUT) >= 3, timeout=5, message="the burst")
    calls = script_calls(env, IN)
    wait_until(lambda: env.client.llen(OUT) >= 13, timeout=5, message="ten more tokens")
    passed, elapsed = env.client.llen(OUT), time.monotonic() - began
    assert passed <= 3 + 10 * elapsed, f"{passed} passed in {elapsed:.2f}s at 10/s, burst 3"
    assert elapsed >= 0.9, "ten tokens take a second"
    assert script_calls(env, IN) - calls < 30, "one step per token or so, not a busy loop"
    assert env.client.llen(IN) == 40 - passed, "the rest waits in the input"
    assert 0 < env.client.pttl(BUCKET) <= 1000 + 300, "the bucket expires once it would be full"
    assert received(env, OUT) == messages(passed), "order kept"


@pytest.mark.slow
def test_three_replicas_pass_at_most_rate_times_time_plus_burst(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    rate, burst, run = 50, 10, 10.0
    for _ in range(3):
        start(spawn, env, rate, "--burst", str(burst))
    backlog = messages(2 * int(rate * run))
    began = time.monotonic()  # before the push: no token can be spent before it
    push(env, IN, backlog)
    wait_until(lambda: time.monotonic() - began >= run, timeout=run + 5, interval=0.1)
    passed = env.client.llen(OUT)
    elapsed = time.monotonic() - began
    assert passed <= rate * elapsed + burst, f"{passed} passed in {elapsed:.2f}s"
    assert passed >= 0.9 * rate * run, f"only {passed} passed in {elapsed:.2f}s"
    wait_until(lambda: env.client.llen(IN) + env.client.llen(OUT) == len(backlog))
    out = received(env, OUT)
    assert_each_once(out, backlog[: len(out)])


@pytest.mark.slow
def test_kill9_of_replicas_mid_run_loses_and_duplicates_nothing(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    env = redis_env
    msgs = messages(20_000)
    producer = produce_in_background(env, IN, msgs, seconds=2.0)
    args = throttle_args(env, 20_000, "--burst", "200", "--batch", "100")
    kill9_churn(spawn, args, started="mthrottle started", kills=4, seed=9, replicas=2)
    producer.join()
    wait_drained(env, IN)
    wait_until(lambda: env.client.llen(OUT) >= len(msgs), timeout=10)
    out = received(env, OUT)
    assert_each_once(out, msgs)
    assert out == msgs, "order kept"


@pytest.mark.slow
def test_redis_restart_mid_run_resumes_by_itself(redis_env: RedisEnv, spawn: Spawner) -> None:
    env = redis_env
    proc = start(spawn, env, 1000, "--burst", "100")
    push(env, IN, messages(50))
    wait_drained(env, IN)
    restart_redis_under(env, proc, IN)
    push(env, IN, messages(50, offset=50))
    wait_drained(env, IN)
    wait_until(lambda: env.client.llen(OUT) == 100)
    assert received(env, OUT) == messages(100)
