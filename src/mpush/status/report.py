"""A namespace at a glance: its registered instances, the queues they name, every metrics hash and
the message-tracking figures. Read-only; ``mpush status`` renders it (``mpush.cli.status``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mpush.connection import AnyRedis, reply_text
from mpush.keys import ServiceKeys
from mpush.status.tracking import TrackingFigures, collect_tracking

__all__ = [
    "Instance",
    "StatusReport",
    "collect",
]


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


@dataclass
class StatusReport:
    namespace: str
    now: float
    instances: list[Instance]
    stale_ids: list[str]
    queues: dict[str, int]
    metrics: dict[str, dict[str, float]]
    tracking: TrackingFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


async def collect(
    redis: AnyRedis, namespace: str, extra_queues: list[str] | None = None
) -> StatusReport:
    """Read the registry, the queues the instances name, and every metrics hash."""
    keys = ServiceKeys(namespace)
    seconds, micros = await redis.time()
    now = int(seconds) + int(micros) / 1e6
    instances: list[Instance] = []
    stale: list[str] = []
    queues: dict[str, int] = {}
    for raw_id in dict.fromkeys(await redis.lrange(keys.ids, 0, -1)):
        instance_id = reply_text(raw_id)
        data = {
            reply_text(k): reply_text(v)
            for k, v in (await redis.hgetall(keys.instance(instance_id))).items()
        }
        if not data:
            stale.append(instance_id)
            continue
        ttl = int(await redis.ttl(keys.instance(instance_id)))
        base = {"service", "host", "pid", "started", "renewed"}
        instances.append(
            Instance(
                id=instance_id,
                service=data.get("service", "?"),
                host=data.get("host", "?"),
                pid=data.get("pid", "?"),
                started=_number(data.get("started")),
                renewed=_number(data.get("renewed")),
                ttl=ttl,
                fields={k: v for k, v in data.items() if k not in base},
            )
        )
        # An out list on another Redis (vpush's out_redis) is not this Redis's to measure.
        for name in ("in",) if data.get("out_redis") else ("in", "out"):
            for queue in filter(None, data.get(name, "").split(",")):
                queues[queue] = 0
    for queue in extra_queues or []:
        queues[queue] = 0
    for queue in queues:
        queues[queue] = int(await redis.llen(queue))
    metrics: dict[str, dict[str, float]] = {}
    prefix = keys.metrics("")
    async for raw_key in redis.scan_iter(match=keys.metrics_pattern, count=500):
        key = reply_text(raw_key)
        values = {
            reply_text(k): _number(reply_text(v)) for k, v in (await redis.hgetall(key)).items()
        }
        metrics[key.removeprefix(prefix)] = {k: v for k, v in values.items() if v is not None}
    tracking = await collect_tracking(redis, namespace)
    return StatusReport(
        namespace, now, instances, stale, queues, dict(sorted(metrics.items())), tracking
    )
