"""The message-tracking figures of a namespace and its response-time histogram.

Read-only, like the rest of ``mpush.status``. The figures come from the tracking keys
(``keys.py``) and the metrics hashes the monitor writes (``done``, ``timeout``, ``failed``,
``retry``, ``dead``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mpush.connection import AnyRedis
from mpush.keys import MessageKeys

__all__ = ["TrackingFigures", "collect_tracking", "histogram_rows"]

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
