"""``mpush status``: a namespace's services, queues and metrics, as a table, JSON or the
Prometheus text format. What is shown is read by ``mpush.status``, and put in Prometheus's terms
there (``mpush.status.prometheus``); this module only renders it."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mpush.status.prometheus import exposition_of
from mpush.status.report import StatusReport
from mpush.status.tracking import TrackingFigures, histogram_rows

__all__ = ["render_json", "render_prometheus", "render_table"]

_BAR = 40


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
            f"{inst.service} (standby)" if inst.fields.get("standby") == "1" else inst.service,
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
        _render_tracking(report.tracking, report.metrics, console)
    if report.stale_ids:
        console.print(f"[yellow]stale ids on the registry list:[/] {', '.join(report.stale_ids)}")


def render_json(report: StatusReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True)


def render_prometheus(report: StatusReport) -> bytes:
    """The Prometheus text format, as ``mpush exporter`` serves it (``mpush.status.prometheus``)."""
    return exposition_of(report).body


def _render_tracking(
    figures: TrackingFigures, metrics: dict[str, dict[str, float]], console: Console
) -> None:
    done = metrics.get("done", {})
    count = done.get("count", 0.0)
    table = Table(title="message tracking", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("messages tracked", f"{figures.messages:,}")
    table.add_row("in flight", f"{figures.in_flight:,}")
    table.add_row("done", f"{count:,.0f}")
    if count:
        table.add_row("response time avg", f"{done.get('sum', 0.0) / count:.3f}s")
        table.add_row("response time max", f"{done.get('max', 0.0):.3f}s")
    table.add_row("timeouts", f"{metrics.get('timeout', {}).get('count', 0.0):,.0f}")
    table.add_row("failures reported", f"{metrics.get('failed', {}).get('count', 0.0):,.0f}")
    table.add_row("redelivered", f"{metrics.get('retry', {}).get('count', 0.0):,.0f}")
    table.add_row("dead-lettered", f"{metrics.get('dead', {}).get('count', 0.0):,.0f}")
    table.add_row("on the dead-letter list", f"{figures.dead_letters:,}")
    table.add_row("done reports waiting", f"{figures.reports_waiting:,}")
    console.print(table)
    rows = histogram_rows(done)
    peak = max((n for _, n in rows), default=0)
    if not peak:
        return
    console.print("response times (share of the message timeout)")
    for label, n in rows:
        width = round(_BAR * n / peak)
        bar = Text("█" * width or ("▏" if n else ""), style="cyan")
        console.print(Text(f"{label:>10} "), bar, Text(f" {n:,}"), sep="")
