"""``mpush status``: the services, queues and metrics of a namespace at a glance.

Read-only. Output as a rich table, as JSON (``--json``) or in the Prometheus text format
(``--prometheus``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from mpush.connection import AnyRedis, reply_text
from mpush.keys import ServiceKeys
from mpush.status_tracking import TrackingFigures, collect_tracking, render_tracking

__all__ = [
    "Instance",
    "StatusReport",
    "collect",
    "render_json",
    "render_prometheus",
    "render_table",
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


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def render_table(report: StatusReport, console: Console) -> None:
    services = Table(title=f"services in {report.namespace}", title_justify="left")
    for column in ("id", "service", "host", "pid", "age", "last renew", "ttl", "queues"):
        services.add_column(column)
    for inst in report.instances:
        out = inst.fields.get("out")
        if out and inst.fields.get("out_redis"):
            out = f"{out} @ {inst.fields['out_redis']}"
        route = " → ".join(filter(None, [inst.fields.get("in"), out]))
        services.add_row(
            inst.id,
            inst.service,
            inst.host,
            inst.pid,
            _seconds(inst.age(report.now)),
            _seconds(inst.since_renew(report.now)) + " ago",
            f"{inst.ttl}s",
            route,
        )
    if not report.instances:
        services.add_row("-", "(no live instances)", "", "", "", "", "", "")
    console.print(services)
    if report.queues:
        queues = Table(title="queues", title_justify="left")
        queues.add_column("list")
        queues.add_column("length", justify="right")
        for name, length in report.queues.items():
            queues.add_row(name, str(length))
        console.print(queues)
    if report.metrics:
        metrics = Table(title="metrics", title_justify="left")
        for column in ("metric", "count", "sum", "avg", "max", "other"):
            metrics.add_column(column, justify="left" if column in ("metric", "other") else "right")
        for name, values in report.metrics.items():
            count = values.get("count", 0.0)
            total = values.get("sum")
            other = ", ".join(
                f"{k}={v:g}"
                for k, v in values.items()
                if k not in ("count", "sum", "max") and not k.startswith("histo")
            )
            metrics.add_row(
                name,
                f"{count:g}",
                "-" if total is None else f"{total:g}",
                f"{total / count:.3g}" if count and total is not None else "-",
                f"{values['max']:g}" if "max" in values else "-",
                other,
            )
        console.print(metrics)
    if report.tracking is not None:
        render_tracking(report.tracking, report.metrics, console)
    if report.stale_ids:
        console.print(f"[yellow]stale ids on the registry list:[/] {', '.join(report.stale_ids)}")


def render_json(report: StatusReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True)


def render_prometheus(report: StatusReport) -> str:
    """The Prometheus text exposition format: gauges for queues, counters for metrics."""
    ns = report.namespace
    lines = [
        "# HELP mpush_instances Live registered instances per service.",
        "# TYPE mpush_instances gauge",
    ]
    per_service: dict[str, int] = {}
    for inst in report.instances:
        per_service[inst.service] = per_service.get(inst.service, 0) + 1
    for service, count in sorted(per_service.items()):
        lines.append(f'mpush_instances{{namespace="{ns}",service="{service}"}} {count}')
    lines += [
        "# HELP mpush_queue_length Length of a Redis list.",
        "# TYPE mpush_queue_length gauge",
    ]
    for queue, length in report.queues.items():
        lines.append(f'mpush_queue_length{{namespace="{ns}",queue="{_escape(queue)}"}} {length}')
    if report.tracking is not None:
        lines += [
            "# HELP mpush_messages_in_flight Tracked messages not finished yet.",
            "# TYPE mpush_messages_in_flight gauge",
            f'mpush_messages_in_flight{{namespace="{ns}"}} {report.tracking.in_flight}',
            "# HELP mpush_dead_letters Entries on the dead-letter list.",
            "# TYPE mpush_dead_letters gauge",
            f'mpush_dead_letters{{namespace="{ns}"}} {report.tracking.dead_letters}',
        ]
    for name, values in report.metrics.items():
        metric = "mpush_" + "".join(c if c.isalnum() else "_" for c in name)
        labels = f'namespace="{ns}"'
        for field_name, value in values.items():
            if field_name.startswith("histo"):
                bucket = field_name.removeprefix("histo")
                lines.append(f'{metric}_histo{{{labels},bucket="{bucket}"}} {value:g}')
            else:
                lines.append(f"{metric}_{field_name}{{{labels}}} {value:g}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
