"""rcontrol's Redis side on a real Redis: the fenced steps refuse a stale controller, the steps
do exactly what they say (and log it), the declaring commands are atomic and idempotent, and the
snapshot survives any bytes."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator

import pytest

from mpush.connection import AnyRedis, connect, parse_redis_url
from mpush.errors import ConfigError, FencedError
from mpush.keys import RcontrolKeys, ServiceKeys
from mpush.orchestration.rcontrol.fence import Fence
from mpush.orchestration.rcontrol.spec import Spec, parse_spec
from mpush.orchestration.rcontrol.state import Assignment
from mpush.orchestration.rcontrol.store import (
    apply_spec,
    check_slots,
    delete_deployment,
    drain_host,
    read_declaration,
    read_snapshot,
    rollback_deployment,
    scale_deployment,
)
from mpush.runtime.lease import Lease
from tests.conftest import RedisEnv

NS = "{rc}:s"
KEYS = RcontrolKeys(NS)
REGISTRY = ServiceKeys(NS)
SPEC = parse_spec(
    tomllib.loads(
        '[deployments.web]\nservice = "lpush"\nreplicas = 2\n'
        '[deployments.web.settings]\nin = "{rc}:in"\nout = ["{rc}:out"]\n'
    )
)


@pytest.fixture
async def redis(standalone_env: RedisEnv) -> AsyncIterator[AnyRedis]:
    client = connect(parse_redis_url(standalone_env.url))
    yield client
    await client.aclose()


@pytest.fixture
async def either(redis_env: RedisEnv) -> AsyncIterator[tuple[AnyRedis, RedisEnv]]:
    """A client of standalone Redis, then of a Redis Cluster (the namespace is hash-tagged)."""
    client = connect(parse_redis_url(redis_env.url, cluster=redis_env.is_cluster))
    yield client, redis_env
    await client.aclose()


def test_on_a_cluster_the_namespace_needs_a_hash_tag() -> None:
    check_slots(KEYS)  # {rc}:s: one slot
    with pytest.raises(ConfigError, match="one Redis Cluster hash slot"):
        check_slots(RcontrolKeys("web"))


async def lead(redis: AnyRedis, owner: str) -> Fence:
    """Take the lease as ``owner`` (expiring any holder first) and return its fence."""
    await redis.delete(KEYS.lease)
    lease = Lease(redis, KEYS.lease, KEYS.state, owner=owner, ttl=30)
    state = await lease.acquire()
    assert state.acquired
    await redis.hsetnx(KEYS.state, "epoch", "e1")
    epoch = (await redis.hget(KEYS.state, "epoch")).decode()
    return Fence(redis, KEYS, epoch=epoch, token=state.token, by=owner, capacity=100)


def assignment(host: str = "a", role: str = "active", token: int = 1) -> Assignment:
    deployment = SPEC.deployments["web"]
    return Assignment(
        deployment="web", host=host, role=role, release=deployment.release,  # type: ignore[arg-type]
        run=deployment.run, token=token, placed=1.0,
    )  # fmt: skip


async def test_a_stale_controller_can_never_assign(
    either: tuple[AnyRedis, RedisEnv],
) -> None:
    redis, standalone_env = either
    old = await lead(redis, "old")
    first = await old.place(assignment(), why="first")
    assert first == "web-1"
    new = await lead(redis, "new")  # the old one was paused past its lease
    before = standalone_env.client.hgetall(KEYS.assignments)
    snapshot = await read_snapshot(redis, KEYS)
    with pytest.raises(FencedError):
        await old.place(assignment("b"), why="stale")
    with pytest.raises(FencedError):
        await old.retire(snapshot.assignments["web-1"], kind="retire", why="stale")
    assert standalone_env.client.hgetall(KEYS.assignments) == before
    assert await new.place(assignment("b", token=new.token), why="fresh") == "web-2"
    # a Redis that lost its data has a new epoch: a controller of the old one is refused too
    standalone_env.client.hset(KEYS.state, "epoch", "e2")
    with pytest.raises(FencedError):
        await new.place(assignment(), why="old epoch")
    events = [fields["why"] for _, fields in standalone_env.client.xrange(KEYS.events)]
    assert events == ["first", "fresh"], "refused steps log nothing"


async def test_activate_and_retire_do_what_they_say(
    either: tuple[AnyRedis, RedisEnv],
) -> None:
    redis, env = either
    sync = env.client
    fence = await lead(redis, "c")
    spare = await fence.place(assignment(role="standby"), why="pool")
    assert sync.lrange(KEYS.host_wake("a"), 0, -1) == ["1"], "the agent is woken"
    snapshot = await read_snapshot(redis, KEYS)
    # not registered yet: nothing to activate, nothing changed
    assert not await fence.activate(snapshot.assignments[spare], why="up")
    sync.hset(REGISTRY.labels, spare, "7")
    sync.hset(REGISTRY.instance(7), mapping={"service": "lpush", "standby": "1"})
    assert await fence.activate(snapshot.assignments[spare], why="up")
    assert sync.lrange(REGISTRY.activation(7), 0, -1) == [str(fence.token)]
    assert 0 < sync.ttl(REGISTRY.activation(7)) <= 60
    snapshot = await read_snapshot(redis, KEYS)
    placed = snapshot.assignments[spare]
    assert placed.assignment is not None
    assert placed.assignment.role == "active"
    # compare-and-set: a step on an assignment that changed since it was read does nothing
    stale = (await read_snapshot(redis, KEYS)).assignments[spare]
    sync.hset(KEYS.assignments, spare, placed.raw.replace('"placed":1.0', '"placed":2.0'))
    assert not await fence.retire(stale, kind="retire", why="stale read")
    assert sync.exists(REGISTRY.instance(7))
    current = (await read_snapshot(redis, KEYS)).assignments[spare]
    assert await fence.retire(current, kind="retire", why="down")
    assert not sync.hexists(KEYS.assignments, spare)
    assert not sync.exists(REGISTRY.instance(7)), "its registration deleted: remote shutdown"
    assert not sync.hexists(REGISTRY.labels, spare)
    kinds = [(f["kind"], f["why"]) for _, f in sync.xrange(KEYS.events)]
    assert kinds == [("place", "pool"), ("activate", "up"), ("retire", "down")]


async def test_apply_scale_delete(either: tuple[AnyRedis, RedisEnv]) -> None:
    redis, env = either
    sync = env.client
    changes = await apply_spec(redis, KEYS, SPEC, by="test")
    assert [c.line() for c in changes] == ["deployment web: created (2 × mpush lpush)"]
    assert sync.lrange(KEYS.wake, 0, -1) == ["1"]
    assert [c.kind for c in await apply_spec(redis, KEYS, SPEC, by="test")] == ["unchanged"]
    assert await scale_deployment(redis, KEYS, "web", 5, by="test") == (True, 2)
    assert await scale_deployment(redis, KEYS, "web", 5, by="test") == (False, 5)
    with pytest.raises(ConfigError, match="no deployment 'nope'"):
        await scale_deployment(redis, KEYS, "nope", 1, by="test")
    snapshot = await read_snapshot(redis, KEYS)
    assert snapshot.declarations["web"].replicas == 5
    assert snapshot.declarations["web"].generation == 2
    assert await delete_deployment(redis, KEYS, "web", by="test")
    assert not await delete_deployment(redis, KEYS, "web", by="test")
    assert (await read_snapshot(redis, KEYS)).declarations == {}
    kinds = [f["kind"] for _, f in sync.xrange(KEYS.events)]
    assert kinds == ["apply", "scale", "delete"]


async def test_the_snapshot_survives_any_bytes(redis: AnyRedis, standalone_env: RedisEnv) -> None:
    sync = standalone_env.client
    await apply_spec(redis, KEYS, SPEC, by="test")
    sync.sadd(KEYS.deployments, "junk")
    sync.hset(KEYS.deployment("junk"), "spec", "\xff{not json")
    sync.hset(KEYS.assignments, mapping={"web-1": "[1, 2", "web-2": assignment().encode()})
    sync.hset(KEYS.instance("web-2"), mapping={"state": "dancing", "pid": "x"})
    sync.hset(KEYS.host("a"), mapping={"capacity": "lots", "load1": "nan", "labels": "=,a"})
    sync.zadd(KEYS.hosts, {"a": 1})
    snapshot = await read_snapshot(redis, KEYS)
    assert set(snapshot.declarations) == {"web"}
    assert snapshot.assignments["web-1"].assignment is None
    assert snapshot.assignments["web-2"].assignment is not None
    assert "web-2" not in snapshot.reports
    host = snapshot.hosts["a"]
    assert (host.alive, host.capacity, host.load1) == (True, 0, None)


def spec_of(text: str) -> Spec:
    return parse_spec(tomllib.loads(text))


async def test_a_release_change_starts_a_rollout_and_rollback_swaps_back(
    either: tuple[AnyRedis, RedisEnv],
) -> None:
    redis, env = either
    sync = env.client
    await apply_spec(redis, KEYS, SPEC, by="test")
    first = (await read_declaration(redis, KEYS, "web")).release
    newer = SPEC.deployments["web"].model_copy(
        update={"settings": {"in": "{rc}:in", "out": ["{rc}:out"], "batch": 10}}
    )
    stale = REGISTRY.release_metrics(newer.release, "move")
    sync.hset(stale, "count", 99)  # left from an earlier rollout to the same release
    await apply_spec(redis, KEYS, Spec(deployments={"web": newer}), by="test")
    declaration = await read_declaration(redis, KEYS, "web")
    assert declaration.rollout is not None
    assert (declaration.rollout.state, declaration.rollout.old) == ("progressing", first)
    assert declaration.previous_release == first
    assert not sync.exists(stale), "the new release's figures start afresh"
    # a third release while the second is under judgement: the settled one stays the previous
    third = newer.model_copy(update={"settings": {**newer.settings, "batch": 20}})
    await apply_spec(redis, KEYS, Spec(deployments={"web": third}), by="test")
    assert (await read_declaration(redis, KEYS, "web")).previous_release == first
    back = await rollback_deployment(redis, KEYS, "web", by="test")
    assert back.release == third.release
    declaration = await read_declaration(redis, KEYS, "web")
    assert declaration.release == first
    assert declaration.previous_release == third.release
    assert declaration.rollout is not None
    assert declaration.rollout.state == "rolling-back"
    await rollback_deployment(redis, KEYS, "web", by="test")  # a second one undoes the first
    assert (await read_declaration(redis, KEYS, "web")).release == third.release
    kinds = [f["kind"] for _, f in sync.xrange(KEYS.events)]
    assert kinds == ["apply", "apply", "apply", "rollback", "rollback"]


async def test_an_autoscaled_deployment_owns_its_replicas(
    either: tuple[AnyRedis, RedisEnv],
) -> None:
    redis, _ = either
    scaled = spec_of(
        '[deployments.web]\nservice = "lpush"\nreplicas = 2\n'
        '[deployments.web.settings]\nin = "{rc}:in"\nout = ["{rc}:out"]\n'
        '[deployments.web.autoscale]\nmin = 1\nmax = 4\nqueue = "{rc}:in"\n'
    )
    await apply_spec(redis, KEYS, scaled, by="test")
    with pytest.raises(ConfigError, match="autoscaled between 1 and 4 replicas"):
        await scale_deployment(redis, KEYS, "web", 9, by="test")
    await redis.hset(KEYS.deployment("web"), "replicas", "4")  # as the autoscaler set it
    assert [c.kind for c in await apply_spec(redis, KEYS, scaled, by="test")] == ["unchanged"]
    narrower = scaled.deployments["web"].model_copy(
        update={"autoscale": scaled.deployments["web"].autoscale.model_copy(update={"max": 3})}  # type: ignore[union-attr]
    )
    (change,) = await apply_spec(redis, KEYS, Spec(deployments={"web": narrower}), by="test")
    assert change.detail == "replicas 4 -> 3, autoscale 1..3"
    assert (await read_declaration(redis, KEYS, "web")).replicas == 3


async def test_drain_and_uncordon(redis: AnyRedis, standalone_env: RedisEnv) -> None:
    assert await drain_host(redis, KEYS, "b", drain=True, by="test")
    assert not await drain_host(redis, KEYS, "b", drain=True, by="test")
    assert set((await read_snapshot(redis, KEYS)).drained) == {"b"}
    assert await drain_host(redis, KEYS, "b", drain=False, by="test")
    assert (await read_snapshot(redis, KEYS)).drained == {}
    kinds = [f["kind"] for _, f in standalone_env.client.xrange(KEYS.events)]
    assert kinds == ["drain", "uncordon"]
