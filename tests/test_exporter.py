"""mpush exporter as a real process against a real redis-server, with real services writing the
metrics it serves: its /metrics parses with prometheus_client's own parser and its figures match
Redis; its listener holds its limits; a Redis outage is answered, not hung."""

from __future__ import annotations

import http.client
import itertools
import math
import socket
import time
from pathlib import Path

import pytest

from mpush.orchestration.redisserver import free_port
from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, stopped, wait_until
from tests.promtools import bucket_counts, metrics_port, raw_exchange, scrape

NS = "{p}:ex"
IN, A, B, EXTRA = "{p}:in", "{p}:a", "{p}:b", "{p}:extra"
BOUNDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, math.inf]


def exporter(spawn: Spawner, env: RedisEnv, *extra: str) -> tuple[ServiceProcess, int]:
    proc = spawn(
        "exporter",
        "--redis",
        env.url,
        "--service-namespace",
        NS,
        "--port",
        "0",
        "--pop-timeout",
        "0.5",
        *extra,
    )
    return proc, metrics_port(proc)


def expected_buckets(fields: dict[str, str]) -> list[tuple[float, float]]:
    """What the histogram of a metrics hash must be, computed from the hash itself."""
    running, found = 0.0, []
    for k, bound in zip(range(0, 100, 10), BOUNDS, strict=False):
        running += float(fields.get(f"histo{k}", 0))
        found.append((bound, running))
    found.append((math.inf, float(fields["count"])))
    return found


def test_exporter_figures_match_redis(redis_env: RedisEnv, spawn: Spawner) -> None:
    client = redis_env.client
    client.lpush(IN, *[f"m{i}" for i in range(25)])  # before the mover: batches of 10, 10, 5
    client.lpush(EXTRA, "x", "y", "z")
    mover = spawn(
        "mpush",
        "--redis",
        redis_env.url,
        "--in",
        IN,
        "--out",
        A,
        "--out",
        B,
        "--batch",
        "10",
        "--service-namespace",
        NS,
        "--metrics-interval",
        "0.1",
        "--message-timeout",
        "600",  # no timeout changes the tracking figures between the scrape and the check
    )
    mover.wait_for_log("mpush started")
    wait_until(lambda: client.hget(f"{NS}:metrics:move", "sum") == "25")
    # A hash of known shape, and a key of the wrong type where a metrics hash would be.
    client.hset(
        f"{NS}:metrics:crafted",
        mapping={"count": 6, "sum": 4.5, "max": 2.5, "histo0": 1, "histo30": 2, "histo100": 3},
    )
    client.set(f"{NS}:metrics:broken", "not a hash")
    _, port = exporter(spawn, redis_env, "--cache-ttl", "0", "--queue", EXTRA)

    got = scrape(port)

    services: dict[str, float] = {}
    for raw_id in client.lrange(f"{NS}:service:ids", 0, -1):
        service = client.hget(f"{NS}:service:{raw_id}", "service")
        services[service] = services.get(service, 0) + 1
    assert services == {"mpush": 1, "exporter": 1}
    for service, count in services.items():
        assert got.value("mpush_instances", namespace=NS, service=service) == count
    for queue in (IN, A, B, EXTRA):
        assert got.value("mpush_queue_length", namespace=NS, queue=queue) == client.llen(queue)
    assert client.llen(A) == 25

    move = client.hgetall(f"{NS}:metrics:move")
    labels = {"namespace": NS, "metric": "move"}
    buckets = bucket_counts(got, "mpush_observations", **labels)
    assert buckets == expected_buckets(move)
    assert [le for le, _ in buckets] == BOUNDS  # ends in +Inf
    assert all(a <= b for (_, a), (_, b) in itertools.pairwise(buckets))  # cumulative
    assert got.value("mpush_observations_count", **labels) == float(move["count"])
    assert got.value("mpush_observations_sum", **labels) == float(move["sum"]) == 25
    assert got.value("mpush_observation_max", **labels) == float(move["max"])
    assert got.families["mpush_observations"].type == "histogram"

    crafted = {"namespace": NS, "metric": "crafted"}
    assert bucket_counts(got, "mpush_observations", **crafted) == [
        (0.1, 1), (0.2, 1), (0.3, 1), (0.4, 3), (0.5, 3), (0.6, 3), (0.7, 3), (0.8, 3),
        (0.9, 3), (1.0, 3), (math.inf, 6),
    ]  # fmt: skip
    assert got.value("mpush_observations_sum", **crafted) == 4.5
    assert not got.series("mpush_observations_count", metric="broken")

    tracked = client.hget(f"{NS}:metrics:message", "tracked")
    assert tracked == "25"
    assert got.value("mpush_events_total", namespace=NS, metric="message", event="tracked") == 25
    assert got.value("mpush_tracked_messages_total", namespace=NS) == float(
        client.get(f"{NS}:message:id")
    )
    assert got.value("mpush_messages_in_flight", namespace=NS) == client.hlen(f"{NS}:message:xids")
    assert got.value("mpush_exporter_redis_up", namespace=NS) == 1


def test_exporter_reads_redis_once_per_cache_ttl(standalone_env: RedisEnv, spawn: Spawner) -> None:
    _, port = exporter(spawn, standalone_env, "--cache-ttl", "60")
    reads = [scrape(port).value("mpush_exporter_reads_total", namespace=NS) for _ in range(5)]
    assert reads == [1.0] * 5


def test_exporter_bounds_its_reads(standalone_env: RedisEnv, spawn: Spawner) -> None:
    for name in ("a", "b", "c", "d"):
        standalone_env.client.hset(f"{NS}:metrics:{name}", "count", 1)
    _, port = exporter(spawn, standalone_env, "--cache-ttl", "0", "--max-metrics", "2")
    got = scrape(port)
    assert len(got.series("mpush_events_total", event="count")) == 2
    assert got.value("mpush_read_truncated", namespace=NS, what="metrics") == 1


def test_service_metrics_port(standalone_env: RedisEnv, spawn: Spawner) -> None:
    client = standalone_env.client
    proc = spawn(
        "lpush",
        "--redis",
        standalone_env.url,
        "--in",
        IN,
        "--out",
        A,
        "--service-namespace",
        NS,
        "--metrics-port",
        "0",
        "--no-message-tracking",
    )
    port = metrics_port(proc)
    client.lpush(IN, *[f"m{i}" for i in range(7)])
    wait_until(lambda: client.llen(A) == 7)

    def moved() -> bool:
        got = scrape(port)
        return got.value("mpush_service_observations_sum", **own, metric="move") == 7

    own = {"service": "lpush", "namespace": NS}
    wait_until(moved, message="7 moved messages on the service's own /metrics")
    got = scrape(port)
    [instance_id] = client.lrange(f"{NS}:service:ids", 0, -1)
    assert got.value("mpush_service_info", **own, instance_id=instance_id) == 1
    assert client.hget(f"{NS}:service:{instance_id}", "metrics") == f"127.0.0.1:{port}"
    assert got.families["process_cpu_seconds"].type == "counter"  # prometheus_client's own
    assert got.value("process_resident_memory_bytes") > 0
    buckets = bucket_counts(got, "mpush_service_observations", **own, metric="move")
    assert buckets[-1] == (
        math.inf,
        got.value("mpush_service_observations_count", **own, metric="move"),
    )
    wait_until(lambda: client.hget(f"{NS}:metrics:move", "sum") == "7")
    wait_until(lambda: scrape(port).value("mpush_service_unwritten", **own, metric="move") == 0)


def test_metrics_port_without_a_namespace(standalone_env: RedisEnv, spawn: Spawner) -> None:
    """No namespace: nothing is written to Redis, and the process's /metrics still counts."""
    client = standalone_env.client
    proc = spawn(
        "lpush", "--redis", standalone_env.url, "--in", IN, "--out", A, "--metrics-port", "0"
    )
    port = metrics_port(proc)
    client.lpush(IN, "x", "y", "z")
    own = {"service": "lpush", "namespace": "", "metric": "move"}
    wait_until(lambda: scrape(port).value("mpush_service_observations_sum", **own) == 3)
    assert sorted(client.keys("*")) == [A]


def test_a_port_in_use_is_a_config_error(standalone_env: RedisEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        lpush = run_cli(
            "lpush", "--redis", standalone_env.url, "--in", IN, "--out", A, "--metrics-port", port
        )
        assert lpush.returncode == 2, lpush.stderr
        assert "metrics_port" in lpush.stderr
        assert "Traceback" not in lpush.stderr
        exp = run_cli(
            "exporter", "--redis", standalone_env.url, "--service-namespace", NS, "--port", port
        )
        assert exp.returncode == 2, exp.stderr
        assert "config: port: cannot listen" in exp.stderr
    assert not standalone_env.client.exists(f"{NS}:service:ids")  # refused before registering


def test_exporter_needs_a_namespace() -> None:
    result = run_cli("exporter", "--redis", f"redis://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "service_namespace" in result.stderr


def test_exporter_listener_limits(standalone_env: RedisEnv, spawn: Spawner) -> None:
    """A slow client is dropped, a huge request refused, connections capped; valid scrapes go on."""
    _, port = exporter(spawn, standalone_env, "--request-timeout", "0.5", "--max-connections", "2")
    began = time.monotonic()
    assert raw_exchange(port, b"GET /metr") == b""  # half a request line, then nothing
    assert time.monotonic() - began < 4

    huge = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert raw_exchange(port, huge).startswith(b"HTTP/1.1 431 ")
    body = b"POST /metrics HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\n"
    assert raw_exchange(port, body).startswith(b"HTTP/1.1 413 ")
    assert raw_exchange(port, b"BLAH\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    many = b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n"
    assert raw_exchange(port, many).startswith(b"HTTP/1.1 431 ")

    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        refused = raw_exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503 ")
        for sock in idle:  # dropped at the receive deadline
            sock.settimeout(5)
            assert sock.recv(100) == b""
    finally:
        for sock in idle:
            sock.close()
    got = scrape(port)
    for reason in ("connections", "receive_timeout", "head_size"):
        assert got.value("mpush_exporter_refused_total", namespace=NS, reason=reason) >= 1

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for method, path, status in (
            ("GET", "/metrics", 200),
            ("HEAD", "/metrics", 200),  # kept alive: the same connection
            ("DELETE", "/metrics", 405),
            ("GET", "/elsewhere", 404),
        ):
            connection.request(method, path)
            answer = connection.getresponse()
            text = answer.read()
            assert answer.status == status, (method, path)
            if method == "HEAD":
                assert text == b""
    finally:
        connection.close()
    odd = scrape(port, {"Accept": "text/plain; version=x.y", "Accept-Encoding": "gzip"})
    assert odd.value("mpush_exporter_redis_up", namespace=NS) == 1
    open_metrics = scrape(port, {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.value("mpush_exporter_redis_up", namespace=NS) == 1


@pytest.mark.slow
def test_exporter_rides_out_a_redis_restart(standalone_env: RedisEnv, spawn: Spawner) -> None:
    proc, port = exporter(spawn, standalone_env, "--cache-ttl", "0", "--scrape-timeout", "2")
    assert scrape(port).value("mpush_instances", namespace=NS, service="exporter") == 1
    with stopped(standalone_env.server_for(NS)):
        began = time.monotonic()
        down = scrape(port)
        assert time.monotonic() - began < 3  # answered within the scrape timeout, not hung
        assert down.value("mpush_exporter_redis_up", namespace=NS) == 0
        assert not down.series("mpush_instances")  # no stale figures
        scrape(port)
    wait_until(lambda: scrape(port).value("mpush_exporter_redis_up", namespace=NS) == 1)
    assert scrape(port).value("mpush_instances", namespace=NS, service="exporter") == 1
    assert proc.alive
    log = proc.log()
    assert log.count("unavailable") == 1, log
    assert "back after" in log
    assert "Traceback" not in log


def test_the_demo_runs_an_exporter_when_given_a_metrics_port() -> None:
    from mpush.config import DemoSettings, load_settings
    from mpush.demo.web import child_specs
    from mpush.keys import DemoKeys

    layout = DemoKeys("demo:web")
    for port, expected in ((None, False), (9121, True)):
        settings = load_settings(DemoSettings, {"metrics_port": port}, env={})
        specs = {spec.name: spec for spec, _ in child_specs(settings, layout, "redis://x", Path())}
        assert ("exporter" in specs) is expected
        if expected:
            argv = specs["exporter"].argv
            assert argv[argv.index("--port") + 1] == "9121"
            assert argv[argv.index("--service-namespace") + 1] == "demo:web"
        assert all("--metrics-port" not in spec.argv for spec in specs.values())
