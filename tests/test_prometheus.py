"""mpush's metrics in Prometheus's terms (``mpush.runtime.prometheus``, ``mpush.status``): histogram
buckets from histoK fields, a process's own totals, the bounded search for metrics hashes, and
rcontrol's replica families — each read back with prometheus_client's own parser."""

from __future__ import annotations

import math

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from mpush.connection import connect, parse_redis_url
from mpush.keys import ServiceKeys
from mpush.runtime.metrics import Metrics
from mpush.runtime.prometheus import HashFamilies, ServiceCollector, buckets_of, expose
from mpush.status.names import MetricNames
from mpush.status.replicas import Replicas, replica_families
from tests.conftest import RedisEnv
from tests.promtools import Scrape, bucket_counts, parse

NS = "{p}:prom"


def exposed(*collectors: object) -> Scrape:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return parse(generate_latest(registry).decode())


class _Families:
    def __init__(self, families: HashFamilies) -> None:
        self._families = families

    def collect(self) -> object:
        return self._families.families()


def test_buckets_are_cumulative_fractions_of_the_scale_ending_in_inf() -> None:
    fields = {
        "count": 7.0,
        "sum": 3.0,
        "histo0": 2.0,
        "histo40": 1.0,
        "histo90": 1.0,
        "histo100": 3.0,
    }
    assert buckets_of(fields) == [
        ("0.1", 2), ("0.2", 2), ("0.3", 2), ("0.4", 2), ("0.5", 3), ("0.6", 3), ("0.7", 3),
        ("0.8", 3), ("0.9", 3), ("1.0", 4), ("+Inf", 7),
    ]  # fmt: skip
    assert buckets_of({"count": 5.0, "sum": 1.0}) == [("+Inf", 5)]  # observed without a scale
    # histo fields that add up to more than count (a hand-edited hash) still make a histogram
    assert buckets_of({"count": 1.0, "histo0": 3.0})[-1] == ("+Inf", 3)


def test_hash_families_parse_back() -> None:
    families = HashFamilies("mpush", ["namespace"])
    families.add(
        ["ns"],
        "hgateway:response",
        {"count": 4, "sum": 0.5, "max": 0.3, "histo0": 3, "histo20": 1, "status:200": 4},
    )
    families.add(["ns"], "timeout", {"count": 2, "expired": 1})  # counted events, no sum
    got = exposed(_Families(families))
    labels = {"namespace": "ns", "metric": "hgateway:response"}
    assert bucket_counts(got, "mpush_observations", **labels)[-1] == (math.inf, 4)
    assert bucket_counts(got, "mpush_observations", **labels)[2] == (0.3, 4)
    assert got.value("mpush_observations_sum", **labels) == 0.5
    assert got.value("mpush_observation_max", **labels) == 0.3
    assert got.value("mpush_events_total", **labels, event="status:200") == 4
    assert got.value("mpush_events_total", namespace="ns", metric="timeout", event="count") == 2
    assert got.value("mpush_events_total", namespace="ns", metric="timeout", event="expired") == 1
    assert not got.series("mpush_observations_count", metric="timeout")


async def test_a_process_counts_what_it_wrote_and_what_it_holds(redis_env: RedisEnv) -> None:
    client = connect(parse_redis_url(redis_env.url), socket_timeout=5)
    try:
        metrics = Metrics(client, ServiceKeys(NS))
        own = ServiceCollector(metrics, "lpush", NS)
        metrics.observe("move", 250, timeout=1000)
        metrics.observe("move", 1000, timeout=1000)
        metrics.incr("move", "trimmed", 3)
        labels = {"service": "lpush", "namespace": NS, "metric": "move"}
        held = exposed(own)
        assert held.value("mpush_service_unwritten", **labels) == 5  # 2 observations, 3 counted
        assert held.value("mpush_service_observations_sum", **labels) == 1250
        await metrics.flush()
        metrics.observe("move", 10, timeout=1000)
        after = exposed(own)
        assert after.value("mpush_service_unwritten", **labels) == 1
        assert bucket_counts(after, "mpush_service_observations", **labels) == [
            (0.1, 1), (0.2, 1), (0.3, 2), (0.4, 2), (0.5, 2), (0.6, 2), (0.7, 2), (0.8, 2),
            (0.9, 2), (1.0, 2), (math.inf, 3),
        ]  # fmt: skip
        assert after.value("mpush_service_events_total", **labels, event="trimmed") == 3
        written = redis_env.client.hgetall(f"{NS}:metrics:move")
        assert written == {
            "count": "2",
            "sum": "1250",
            "max": "1000",
            "histo20": "1",
            "histo100": "1",
            "histo_scale": "1000",  # the buckets' scale: a reader turns them to seconds
            "trimmed": "3",
        }
    finally:
        await client.aclose()


async def test_a_release_keeps_its_own_copy_of_its_metrics(
    redis_env: RedisEnv,
) -> None:
    client = connect(parse_redis_url(redis_env.url), socket_timeout=5)
    try:
        metrics = Metrics(client, ServiceKeys(NS), release="r1")
        metrics.observe("move", 250, timeout=1000)
        metrics.incr("move", "trimmed", 2)
        await metrics.flush()
        both = [f"{NS}:metrics:move", f"{NS}:release:r1:metrics:move"]
        main, copy = (redis_env.client.hgetall(key) for key in both)
        assert main == copy == {
            "count": "1", "sum": "250", "max": "250", "histo20": "1", "histo_scale": "1000",
            "trimmed": "2",
        }  # fmt: skip
        assert redis_env.client.ttl(both[0]) == -1, "the namespace's hash never expires"
        assert 0 < redis_env.client.ttl(both[1]) <= 7 * 24 * 3600
    finally:
        await client.aclose()


async def test_local_metrics_are_kept_and_never_written() -> None:
    metrics = Metrics.local()
    metrics.observe("move", 3)
    await metrics.flush()
    fields, unwritten = metrics.snapshot()["move"]
    assert fields == {"count": 1.0, "sum": 3, "max": 3}
    assert unwritten == 0
    assert Metrics.disabled().snapshot() == {}


async def test_metric_names_are_found_in_bounded_steps(redis_env: RedisEnv) -> None:
    sync = redis_env.client
    with sync.pipeline(transaction=False) as pipe:
        for i in range(3000):  # keys a SCAN walks past
            pipe.set(f"{{p}}:filler:{i}", 1)
        for name in ("a", "b", "c"):
            pipe.hset(f"{NS}:metrics:{name}", "count", 1)
        pipe.execute()
    client = connect(parse_redis_url(redis_env.url), socket_timeout=5)
    try:
        names = MetricNames(NS, limit=100, budget=1)
        steps = 0
        while True:
            await names.advance(client)
            steps += 1
            if not names.walking:
                break
        assert steps >= 3  # 3000 keys at 1000 a call, one call per step
        assert sorted(names.names) == ["a", "b", "c"]
        sync.delete(f"{NS}:metrics:b")
        for _ in range(steps + 3):  # the next complete walk forgets it
            await names.advance(client)
        assert sorted(names.names) == ["a", "c"]

        capped = MetricNames(NS, limit=1)
        await capped.advance(client)
        assert len(capped.names) == 1
        assert capped.overflow
    finally:
        await client.aclose()


def test_replica_families() -> None:
    got = exposed(_Replicas([Replicas("web", desired=4, ready=3, standby=1)]))
    labels = {"namespace": "ns", "deployment": "web"}
    assert got.value("mpush_deployment_replicas_desired", **labels) == 4
    assert got.value("mpush_deployment_replicas_ready", **labels) == 3
    assert got.value("mpush_deployment_replicas_standby", **labels) == 1


class _Replicas:
    def __init__(self, replicas: list[Replicas]) -> None:
        self._replicas = replicas

    def collect(self) -> object:
        return replica_families("ns", self._replicas)


def test_an_accept_header_prometheus_client_cannot_read_gets_the_text_format() -> None:
    registry = CollectorRegistry(auto_describe=False)
    for accept in ("text/plain; version=x.y", "application/openmetrics-text; version=a.b", "\x00"):
        exposition = expose(registry, accept)
        assert exposition.content_type.startswith(("text/plain", "application/openmetrics-text"))
