"""A namespace at a glance: its registered instances, the queues they name, every metrics hash,
the message-tracking figures and rcontrol's replicas. Read-only; ``mpush status`` renders it
(``mpush.cli.status``) and ``mpush exporter`` serves it to Prometheus (``mpush.status.prometheus``).

Reads are pipelined — a round trip for the registry, one for the instances, one for the queues
and metrics, one for tracking, and the SCAN calls that find metrics hashes — and bounded by
``ReadLimits``: what is over a limit is left out and named in ``StatusReport.truncated``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.exceptions as rex

from mpush.connection import AnyRedis, is_transient, reply_text
from mpush.keys import ServiceKeys
from mpush.status.names import MetricNames
from mpush.status.replicas import ReplicaReader, Replicas
from mpush.status.tracking import TrackingFigures, collect_tracking

__all__ = [
    "Instance",
    "ReadLimits",
    "StatusReport",
    "collect",
]

log = logging.getLogger(__name__)

_REGISTRATION = frozenset({"service", "host", "pid", "started", "renewed"})


@dataclass
class Instance:
    id: str
    service: str
    host: str
    pid: str
    started: float | None
    renewed: float | None
    ttl: int
    fields: dict[str, str] = field(default_factory=dict)

    def age(self, now: float) -> float | None:
        return None if self.started is None else max(0.0, now - self.started)

    def since_renew(self, now: float) -> float | None:
        return None if self.renewed is None else max(0.0, now - self.renewed)


@dataclass(frozen=True)
class ReadLimits:
    """The most of each thing one read looks at."""

    instances: int = 1000  # entries of <ns>:service:ids
    queues: int = 1000  # lists measured
    metrics: int = 1000  # metrics hashes read


@dataclass
class StatusReport:
    namespace: str
    now: float
    instances: list[Instance]
    stale_ids: list[str]
    queues: dict[str, int]
    metrics: dict[str, dict[str, float]]
    tracking: TrackingFigures | None = None
    replicas: list[Replicas] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)  # what was over a ReadLimits limit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def instances_per_service(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for inst in self.instances:
            counts[inst.service] = counts.get(inst.service, 0) + 1
        return dict(sorted(counts.items()))


def _number(raw: object) -> float | None:
    try:
        return float(reply_text(raw)) if raw is not None else None
    except ValueError:
        return None


def _ok(reply: object) -> bool:
    """Not an error reply of a pipeline read with ``raise_on_error=False``."""
    return not isinstance(reply, Exception)


async def collect(
    redis: AnyRedis,
    namespace: str,
    extra_queues: Sequence[str] | None = None,
    *,
    limits: ReadLimits | None = None,
    names: MetricNames | None = None,
    replicas: ReplicaReader | None = None,
) -> StatusReport:
    """Read the registry, the queues the instances name, every metrics hash, tracking, replicas.

    ``names`` finds the metrics hashes; by default a walk of the whole keyspace (for one-shot
    reads). A caller that reads again and again passes its own, with a SCAN budget. ``replicas``
    reads rcontrol's replicas (none without it); a key of the wrong type among rcontrol's leaves
    them out (``truncated``: "replicas"), it cannot fail the read.
    """
    limits = limits or ReadLimits()
    keys = ServiceKeys(namespace)
    truncated: list[str] = []
    seconds, micros = await redis.time()
    now = int(seconds) + int(micros) / 1e6
    raw_ids = await redis.lrange(keys.ids, 0, limits.instances)  # one more tells of truncation
    if len(raw_ids) > limits.instances:
        truncated.append("instances")
    ids = list(dict.fromkeys(reply_text(i) for i in raw_ids[: limits.instances]))
    instances, stale = await _instances(redis, keys, ids)

    queues: dict[str, int] = {}
    for inst in instances:
        # An out list on another Redis (vpush's out_redis) is not this Redis's to measure.
        for name in ("in",) if inst.fields.get("out_redis") else ("in", "out"):
            queues.update(dict.fromkeys(filter(None, inst.fields.get(name, "").split(",")), 0))
    queues.update(dict.fromkeys(extra_queues or [], 0))
    if len(queues) > limits.queues:
        truncated.append("queues")
        queues = dict.fromkeys(list(queues)[: limits.queues], 0)

    names = names or MetricNames(namespace, limit=limits.metrics)
    await names.advance(redis)
    if names.overflow:
        truncated.append("metrics")
    if names.walking:
        truncated.append("metrics scan")
    found = names.names
    metrics: dict[str, dict[str, float]] = {}
    if queues or found:
        async with redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            for name in found:
                pipe.hgetall(keys.metrics(name))
            replies = await pipe.execute(raise_on_error=False)
        lengths, hashes = replies[: len(queues)], replies[len(queues) :]
        # A key of another type (WRONGTYPE) is left out: no key's content can fail the read.
        queues = {q: int(n) for q, n in zip(queues, lengths, strict=True) if _ok(n)}
        for name, raw in zip(found, hashes, strict=True):
            values = {reply_text(k): _number(v) for k, v in raw.items()} if _ok(raw) else {}
            if values:  # an empty reply: deleted since it was found
                metrics[name] = {k: v for k, v in values.items() if v is not None}
    tracking = await collect_tracking(redis, namespace)
    deployments: list[Replicas] = []
    if replicas is not None:
        try:
            deployments = await replicas(redis, namespace)
        except rex.ResponseError as exc:
            if is_transient(exc):  # BUSY, LOADING, …: an outage, as anywhere else
                raise
            log.debug("rcontrol's replicas in %s left out: %s", namespace, exc)
            truncated.append("replicas")
    return StatusReport(
        namespace,
        now,
        instances,
        stale,
        queues,
        dict(sorted(metrics.items())),
        tracking,
        deployments,
        truncated,
    )


async def _instances(
    redis: AnyRedis, keys: ServiceKeys, ids: list[str]
) -> tuple[list[Instance], list[str]]:
    """The live instances among ``ids``, and the ids whose registration is gone."""
    if not ids:
        return [], []
    async with redis.pipeline(transaction=False) as pipe:
        for instance_id in ids:
            pipe.hgetall(keys.instance(instance_id))
            pipe.ttl(keys.instance(instance_id))
        replies = await pipe.execute(raise_on_error=False)
    instances: list[Instance] = []
    stale: list[str] = []
    for index, instance_id in enumerate(ids):
        raw, ttl = replies[2 * index], replies[2 * index + 1]
        data = {reply_text(k): reply_text(v) for k, v in raw.items()} if _ok(raw) else {}
        if not data:
            stale.append(instance_id)
            continue
        instances.append(
            Instance(
                id=instance_id,
                service=data.get("service", "?"),
                host=data.get("host", "?"),
                pid=data.get("pid", "?"),
                started=_number(data.get("started")),
                renewed=_number(data.get("renewed")),
                ttl=int(ttl) if _ok(ttl) else -2,
                fields={k: v for k, v in data.items() if k not in _REGISTRATION},
            )
        )
    return instances, stale
