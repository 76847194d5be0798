"""The event log: every rcontrol decision, with what and why, on a capped Redis stream.

``NS:rcontrol:events`` entries have the fields ``kind``, ``deployment``, ``instance``, ``host``,
``why`` and ``by`` (the controller or command that decided); the entry id is the Redis time. The
fenced Lua steps of the controller add their entry in the same atomic step as the change (so the
log says exactly what was applied); other events (a command's, a give-up, a dead host) are added
here. Kinds:

    apply, scale, delete          a declaration changed (by the command named in ``by``)
    lead, restore                 a controller took the lease; it re-declared what a Redis that
                                  lost its data had forgotten
    place, activate, retire       an instance was assigned to a host; a standby one activated;
                                  one shut down gracefully
    reschedule                    an instance of a dead host was retired (a place follows)
    host-dead                     a host's heartbeat expired
    give-up                       an instance cannot run: failing, or exited with code 2
    unschedulable                 no live host has room (or the labels) for an instance
    autoscale                     the autoscaler set a deployment's replicas (with its figures)
    rollout, rollback             a rollout moved on (verifying, complete, rolled-back); a
                                  release was rolled back (by the controller, with why, or by
                                  the command)
    rollout-unhealthy             a new release is worse, and auto_rollback is off
    drain, uncordon               a host was drained; taken back
    host-overloaded               a host is over its agent's load or memory limit
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mpush.connection import AnyRedis, reply_text
from mpush.keys import RcontrolKeys

__all__ = ["EVENT_FIELDS", "Event", "latest", "record"]

EVENT_FIELDS = ("kind", "deployment", "instance", "host", "why", "by")


@dataclass(frozen=True)
class Event:
    kind: str
    deployment: str = ""
    instance: str = ""
    host: str = ""
    why: str = ""
    by: str = ""
    id: str = ""  # the stream entry id, once written
    at: float | None = None  # Redis time (s), from the entry id

    def fields(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in EVENT_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def decode(cls, entry_id: str, data: Mapping[str, str]) -> Event:
        millis = entry_id.partition("-")[0]
        return cls(
            **{name: data.get(name, "")[:2000] for name in EVENT_FIELDS},
            id=entry_id,
            at=int(millis) / 1000 if millis.isdigit() else None,
        )


async def record(redis: AnyRedis, keys: RcontrolKeys, event: Event, capacity: int) -> None:
    """Add ``event`` to the log, trimming it to about ``capacity`` entries."""
    await redis.xadd(
        keys.events,
        event.fields(),  # type: ignore[arg-type]  # redis-py's stub wants a dict of its unions
        maxlen=capacity,
        approximate=True,
    )


async def latest(redis: AnyRedis, keys: RcontrolKeys, count: int) -> list[Event]:
    """The newest ``count`` events, oldest first."""
    entries = await redis.xrevrange(keys.events, count=count) or []
    events = [
        Event.decode(
            reply_text(entry_id),
            {reply_text(k): reply_text(v) for k, v in (fields or {}).items()},
        )
        for entry_id, fields in entries
    ]
    return events[::-1]
