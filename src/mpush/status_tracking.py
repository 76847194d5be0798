"""The message-tracking part of ``mpush status``: figures and the response-time histogram.

Read-only, like the rest of ``status``. The figures come from the tracking keys (``keys.py``) and
the metrics hashes the monitor writes (``done``, ``timeout``, ``failed``, ``retry``, ``dead``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mpush.connection import AnyRedis
from mpush.keys import MessageKeys

__all__ = ["TrackingFigures", "collect_tracking", "histogram_rows", "render_tracking"]

_BAR = 40
_BUCKETS = [f"histo{k}" for k in range(0, 101, 10)]


@dataclass
class TrackingFigures:
    messages: int  # ids handed out so far
    in_flight: int  # tracked and unfinished
    reports_waiting: int  # done reports the monitor has not taken yet
    dead_letters: int  # entries on the dead-letter list


async def collect_tracking(redis: AnyRedis, namespace: str) -> TrackingFigures | None:
    """The tracking figures of ``namespace``, or None when nothing was ever tracked there."""
    keys = MessageKeys(namespace)
    counter = await redis.get(keys.counter)
    if counter is None:
        return None
    return TrackingFigures(
        messages=int(counter),
        in_flight=int(await redis.hlen(keys.xids)),
        reports_waiting=int(await redis.llen(keys.done)),
        dead_letters=int(await redis.llen(keys.dead)),
    )


def histogram_rows(done: dict[str, float]) -> list[tuple[str, int]]:
    """(label, count) per response-time bucket, as fractions of the message timeout."""
    rows = []
    for field in _BUCKETS:
        k = int(field.removeprefix("histo"))
        label = "≥ timeout" if k == 100 else f"{k:>3}–{k + 10}%"
        rows.append((label, int(done.get(field, 0))))
    return rows


def render_tracking(
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
