"""`mpush status`: registry, queues and metrics as a table, JSON and the Prometheus text format."""

from __future__ import annotations

import json

from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli, wait_until
from tests.promtools import parse

NS = "{t}:st"


def test_status_json_and_table(redis_env: RedisEnv, spawn: Spawner) -> None:
    proc = spawn(
        "mpush",
        "--redis",
        redis_env.url,
        "--in",
        "{t}:in",
        "--out",
        "{t}:a",
        "--out",
        "{t}:b",
        "--service-namespace",
        NS,
        "--metrics-interval",
        "0.1",
    )
    proc.wait_for_log("mpush started")
    redis_env.client.lpush("{t}:in", *[f"m{i}" for i in range(10)])
    wait_until(lambda: redis_env.client.hget(f"{NS}:metrics:move", "sum") == "10")
    redis_env.client.lpush(f"{NS}:service:ids", "99")  # a stale id

    result = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    [instance] = report["instances"]
    assert instance["pid"] == str(proc.pid)
    assert instance["service"] == "mpush"
    assert 0 < instance["ttl"] <= 60
    assert report["stale_ids"] == ["99"]
    assert report["queues"] == {"{t}:in": 0, "{t}:a": 10, "{t}:b": 10}
    assert report["metrics"]["move"]["sum"] == 10

    table = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS)
    assert table.returncode == 0, table.stderr
    for text in ("mpush", str(proc.pid), "{t}:a", "move"):
        assert text in table.stdout

    prom = run_cli("status", "--redis", redis_env.url, "--service-namespace", NS, "--prometheus")
    assert prom.returncode == 0, prom.stderr
    got = parse(prom.stdout)  # prometheus_client's own parser: the exporter's format
    assert got.value("mpush_instances", namespace=NS, service="mpush") == 1
    assert got.value("mpush_queue_length", namespace=NS, queue="{t}:a") == 10
    assert got.value("mpush_observations_sum", namespace=NS, metric="move") == 10
    assert got.value("mpush_registry_stale_ids", namespace=NS) == 1
    buckets = got.series("mpush_observations_bucket", namespace=NS, metric="move")
    assert max(buckets, key=lambda b: float(b[0]["le"]))[0]["le"] == "+Inf"


def test_status_needs_a_namespace() -> None:
    result = run_cli("status", "--redis", "redis://127.0.0.1:1")
    assert result.returncode == 2
    assert "service_namespace" in result.stderr


def test_status_unreachable_redis() -> None:
    from mpush.orchestration.redisserver import free_port

    result = run_cli(
        "status", "--redis", f"redis://127.0.0.1:{free_port()}", "--service-namespace", "x"
    )
    assert result.returncode == 69
    assert "Traceback" not in result.stderr
