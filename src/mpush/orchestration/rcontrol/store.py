"""rcontrol's Redis side for readers and for the declaring commands.

``read_snapshot`` reads everything a reconcile or ``rcontrol status`` needs: the Redis time, then
two pipelined round trips. ``apply`` (and ``rollout``, which applies a changed declaration),
``rollback``, ``scale``, ``delete``, ``drain`` and ``uncordon`` change the declarations, each in
one atomic step that also logs the change and wakes the controller. The controller's own (fenced)
steps are in ``fence.py``; the agents' writes in ``agent.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpush.connection import AnyRedis, load_lua, reply_text
from mpush.errors import ConfigError
from mpush.keys import RcontrolKeys, ServiceKeys, check_same_slot
from mpush.orchestration.rcontrol.events import Event
from mpush.orchestration.rcontrol.fence import declaration_args
from mpush.orchestration.rcontrol.rollouts import (
    declaration_fields,
    rollback_fields,
    rollout_fields,
)
from mpush.orchestration.rcontrol.spec import Deployment, Spec, canonical
from mpush.orchestration.rcontrol.state import (
    Declaration,
    Host,
    Placed,
    Registration,
    Report,
    Snapshot,
    number,
)

__all__ = [
    "Change",
    "apply_spec",
    "check_slots",
    "delete_deployment",
    "drain_host",
    "read_declaration",
    "read_snapshot",
    "rollback_deployment",
    "scale_deployment",
]


def check_slots(keys: RcontrolKeys) -> None:
    """On a Redis Cluster, rcontrol's steps need all its keys in one slot (a hash-tagged
    namespace); ConfigError naming the keys and the fix otherwise."""
    check_same_slot(keys.fixed, what="rcontrol")


def _text(raw: Any) -> str:
    return reply_text(raw)


def _integer(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _hash(raw: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()} if isinstance(raw, dict) else {}


async def read_snapshot(redis: AnyRedis, keys: RcontrolKeys) -> Snapshot:
    """Declarations, assignments, hosts, instance reports and labels, read now."""
    registry = ServiceKeys(keys.namespace)
    now_raw = await redis.time()  # not in the pipeline: a Cluster pipeline refuses TIME
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.state, ["epoch", "seq"])
        pipe.smembers(keys.deployments)
        pipe.hgetall(keys.assignments)
        pipe.zrange(keys.hosts, 0, -1, withscores=True)
        pipe.hgetall(registry.labels)
        pipe.get(keys.lease)
        pipe.hgetall(keys.drained)
        (
            state_raw,
            names_raw,
            assigned_raw,
            hosts_raw,
            labels_raw,
            holder,
            drained_raw,
        ) = await pipe.execute()
    now = int(now_raw[0]) + int(now_raw[1]) / 1e6
    epoch, seq = (None if value is None else _text(value) for value in state_raw)
    names = sorted(_text(name) for name in names_raw or ())
    assignments = {
        instance_id: Placed.decode(instance_id, raw)
        for instance_id, raw in sorted(_hash(assigned_raw).items())
    }
    seen = {_text(name): float(score) / 1000 for name, score in hosts_raw or ()}
    host_names = sorted(
        set(seen) | {p.assignment.host for p in assignments.values() if p.assignment is not None}
    )
    labels = _hash(labels_raw)
    labelled = [(iid, labels[iid]) for iid in assignments if iid in labels]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.deployment(name))
        for host in host_names:
            pipe.hgetall(keys.host(host))
        for instance_id in assignments:
            pipe.hgetall(keys.instance(instance_id))
        for _, service_id in labelled:
            pipe.hmget(registry.instance(service_id), ["pid", "standby"])
        replies = await pipe.execute() if names or host_names or assignments else []
    declarations: dict[str, Declaration] = {}
    for name, raw in zip(names, replies[: len(names)], strict=True):
        declaration = Declaration.decode(name, _hash(raw))
        if declaration is not None:
            declarations[name] = declaration
    offset = len(names)
    hosts = {
        host: Host.decode(host, _hash(raw), seen.get(host))
        for host, raw in zip(host_names, replies[offset : offset + len(host_names)], strict=True)
    }
    offset += len(host_names)
    reports: dict[str, Report] = {}
    for instance_id, raw in zip(
        assignments, replies[offset : offset + len(assignments)], strict=True
    ):
        report = Report.decode(instance_id, _hash(raw))
        if report is not None:
            reports[instance_id] = report
    offset += len(assignments)
    registrations: dict[str, Registration] = {}
    for (instance_id, service_id), (pid, standby) in zip(labelled, replies[offset:], strict=True):
        if pid is not None:  # the registration exists
            registrations[instance_id] = Registration(
                service_id, _integer(_text(pid)), _text(standby or "") == "1"
            )
    return Snapshot(
        now=now,
        epoch=epoch,
        seq=int(number(seq, 0)),
        declarations=declarations,
        assignments=assignments,
        hosts=hosts,
        reports=reports,
        labels=labels,
        registrations=registrations,
        holder="" if holder is None else _text(holder),
        drained=_hash(drained_raw),
    )


@dataclass(frozen=True)
class Change:
    """What ``apply`` does to one deployment: ``created``, ``changed`` (with how) or
    ``unchanged``."""

    name: str
    kind: str
    detail: str = ""

    def line(self) -> str:
        return f"deployment {self.name}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


def _differences(old: Declaration, new: Deployment) -> list[str]:
    found = []
    replicas = new.starting_replicas(old.replicas)
    if old.replicas != replicas:
        found.append(f"replicas {old.replicas} -> {replicas}")
    before = old.deployment
    for name in ("standby", "max_surge", "max_unavailable"):
        if getattr(before, name) != getattr(new, name):
            found.append(f"{name} {getattr(before, name)} -> {getattr(new, name)}")
    if before.labels != new.labels:
        found.append(f"labels {before.labels or '{}'} -> {new.labels or '{}'}")
    if before.autoscale != new.autoscale:
        scaling = new.autoscale
        found.append("autoscale " + ("off" if scaling is None else f"{scaling.min}..{scaling.max}"))
    if old.release != new.release:
        found.append(f"release {old.release} -> {new.release} ({new.run.describe()})")
    return found


@dataclass(frozen=True)
class _Write:
    name: str
    fields: dict[str, str]
    detail: str
    emptied: tuple[str, ...] = ()  # the new release's metrics hashes, emptied for its rollout


async def _redis_time(redis: AnyRedis) -> float:
    seconds, micros = await redis.time()
    return int(seconds) + int(micros) / 1e6


async def apply_spec(
    redis: AnyRedis,
    keys: RcontrolKeys,
    spec: Spec,
    *,
    by: str,
    capacity: int = 1000,
    dry_run: bool = False,
) -> list[Change]:
    """Declare every deployment of ``spec`` in one transaction; what changed, deployment by
    deployment. Idempotent: an unchanged deployment is not written at all. A deployment whose
    release changes starts a rollout (``rollouts.rollout_fields``); an autoscaled one keeps the
    replicas its autoscaler chose (within its bounds)."""
    names = sorted(spec.deployments)
    registry = ServiceKeys(keys.namespace)
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.deployment(name))
        current = await pipe.execute() if names else []
    now = await _redis_time(redis)
    changes: list[Change] = []
    writes: list[_Write] = []
    for name, raw in zip(names, current, strict=True):
        new = spec.deployments[name]
        old = Declaration.decode(name, _hash(raw)) if raw else None
        if old is None:
            changes.append(Change(name, "created", f"{new.replicas} × {new.run.describe()}"))
            fields = {**declaration_fields(new, new.replicas), "rollout": "", "previous": ""}
            writes.append(_Write(name, fields, "created"))
            continue
        differences = _differences(old, new)
        if not differences and old.spec == canonical(new):
            changes.append(Change(name, "unchanged"))
            continue
        detail = ", ".join(differences) or "declaration rewritten"
        changes.append(Change(name, "changed", detail))
        fields = declaration_fields(new, new.starting_replicas(old.replicas))
        emptied: tuple[str, ...] = ()
        if old.release != new.release:
            fields.update(rollout_fields(old, new, now=now, why=detail, by=by))
            emptied = tuple(registry.release_metrics(new.release, m) for m in new.health_metrics)
        writes.append(_Write(name, fields, detail, emptied))
    if writes and not dry_run:
        async with redis.pipeline(transaction=True) as pipe:
            for write in writes:
                pipe.sadd(keys.deployments, write.name)
                mapping = {**write.fields, "applied": f"{now:.3f}"}
                pipe.hset(keys.deployment(write.name), mapping=mapping)  # type: ignore[arg-type]
                pipe.hincrby(keys.deployment(write.name), "generation", 1)
                if write.emptied:
                    pipe.delete(*write.emptied)
                event = Event("apply", deployment=write.name, why=write.detail, by=by)
                pipe.xadd(keys.events, event.fields(), maxlen=capacity, approximate=True)  # type: ignore[arg-type]
            pipe.lpush(keys.wake, "1")
            pipe.ltrim(keys.wake, 0, 0)
            pipe.pexpire(keys.wake, 60_000)
            await pipe.execute()
    return changes


async def read_declaration(redis: AnyRedis, keys: RcontrolKeys, name: str) -> Declaration:
    """The stored declaration of ``name``; ConfigError when none is (readable)."""
    raw = _hash(await redis.hgetall(keys.deployment(name)))
    declaration = Declaration.decode(name, raw) if raw else None
    if declaration is None:
        raise ConfigError("name", f"no deployment {name!r} is declared in {keys.namespace}")
    return declaration


async def rollback_deployment(
    redis: AnyRedis, keys: RcontrolKeys, name: str, *, by: str, capacity: int = 1000
) -> Declaration:
    """Declare ``name``'s previous declaration again (``rollouts.rollback_fields``); the
    declaration rolled back. ConfigError when there is nothing to go back to."""
    declaration = await read_declaration(redis, keys, name)
    now = await _redis_time(redis)
    fields = rollback_fields(declaration, now=now, why="rollback by command", by=by)
    if fields is None:
        raise ConfigError("name", f"deployment {name} has no previous release to go back to")
    why = f"release {declaration.release} rolled back to {declaration.previous_release}"
    script = redis.register_script(load_lua("rcontrol_declare"))
    reply = await script(
        keys=[keys.state, keys.deployment(name), keys.events, keys.wake],
        args=declaration_args(
            declaration, fields, kind="rollback", why=why, by=by, capacity=capacity, fence=None
        ),
    )
    if int(reply[0]) != 1:
        raise ConfigError("name", f"deployment {name} changed meanwhile: try again")
    return declaration


async def drain_host(
    redis: AnyRedis, keys: RcontrolKeys, host: str, *, drain: bool, by: str, capacity: int = 1000
) -> bool:
    """Drain ``host`` (no new instances, its instances move away gracefully), or take it back
    (``drain`` False); False when it already was so."""
    if bool(await redis.hexists(keys.drained, host)) == drain:
        return False  # already so: nothing to write, nothing to log
    now = await _redis_time(redis)
    async with redis.pipeline(transaction=True) as pipe:
        if drain:
            pipe.hsetnx(keys.drained, host, f"{now:.3f} {by}")
        else:
            pipe.hdel(keys.drained, host)
        kind, why = ("drain", "moving its instances away") if drain else ("uncordon", "back")
        event = Event(kind, host=host, why=f"host {host}: {why}", by=by)
        pipe.xadd(keys.events, event.fields(), maxlen=capacity, approximate=True)  # type: ignore[arg-type]
        pipe.lpush(keys.wake, "1")
        pipe.ltrim(keys.wake, 0, 0)
        pipe.pexpire(keys.wake, 60_000)
        changed, *_ = await pipe.execute()
    return bool(changed)


async def scale_deployment(
    redis: AnyRedis, keys: RcontrolKeys, name: str, replicas: int, *, by: str, capacity: int = 1000
) -> tuple[bool, int]:
    """Set ``name``'s replicas; (changed, the replicas before). ConfigError if not declared."""
    script = redis.register_script(load_lua("rcontrol_scale"))
    status, old = await script(
        keys=[keys.deployment(name), keys.events, keys.wake], args=[replicas, capacity, by, name]
    )
    if int(status) == -2:
        raise ConfigError(
            "replicas",
            f"deployment {name} is autoscaled between {_text(old).replace('..', ' and ')} "
            "replicas: its autoscaler sets them (change [deployments.NAME.autoscale] and apply)",
        )
    if int(status) < 0:
        raise ConfigError("name", f"no deployment {name!r} is declared in {keys.namespace}")
    return int(status) == 1, int(_text(old) or 0)


async def delete_deployment(
    redis: AnyRedis, keys: RcontrolKeys, name: str, *, by: str, capacity: int = 1000
) -> bool:
    """Remove ``name``'s declaration; False when it was not declared."""
    script = redis.register_script(load_lua("rcontrol_delete"))
    done = await script(
        keys=[keys.deployments, keys.deployment(name), keys.events, keys.wake],
        args=[name, capacity, by],
    )
    return int(done) == 1
