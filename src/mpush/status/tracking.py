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
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.counter)
        pipe.hlen(keys.xids)
        pipe.llen(keys.done)
        pipe.llen(keys.dead)
        replies = await pipe.execute(raise_on_error=False)
    counter, *sizes = replies
    if counter is None or isinstance(counter, Exception):
        return None
    in_flight, waiting, dead = (0 if isinstance(n, Exception) else int(n) for n in sizes)
    try:
        messages = int(counter)
    except ValueError:
        return None
    return TrackingFigures(
        messages=messages, in_flight=in_flight, reports_waiting=waiting, dead_letters=dead
    )


def histogram_rows(done: dict[str, float]) -> list[tuple[str, int]]:
    """(label, count) per response-time bucket, as fractions of the message timeout."""
    rows = []
    for field in _BUCKETS:
        k = int(field.removeprefix("histo"))
        label = "≥ timeout" if k == 100 else f"{k:>3}–{k + 10}%"
        rows.append((label, int(done.get(field, 0))))
    return rows
