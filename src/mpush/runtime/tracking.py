"""Message tracking (SPEC §2): what a tracked mover registers with each message, in the same
atomic step as the move (``lua/move_tracked.lua``), and the xid rules.

Each message moved gets an id (``INCRBY <ns>:message:id``) and its xid mapping in
``<ns>:message:xids`` (whose length message_capacity bounds); the timestamp, deadline, timeout and
service it shares with the rest of its batch go into one registration hash
``<ns>:message:batch:<first>``. A message that gets a history of its own (a timeout with retry
on, a failure, a redelivery) gets its own hash ``<ns>:message:<id>`` with its delivery count.
Consumers report completion by pushing the id or xid to ``<ns>:message:done``; the monitor
(``monitor.py``) does the rest. The key layout is in ``keys.py``; the walk-through in
docs/tracking.md.

Why batch registrations: a hash per message (plus its xid hash, plus their EXPIREs) costs about
9 µs of Redis time per message, ten times the move itself; one hash field per message, with
everything the batch shares written once, keeps tracking at about a third of the untracked
throughput (bench/tracking.py).

The message keys live on the Redis of the queues (they change in the same script as the move),
so on Redis Cluster the namespace must share the queues' hash tag: ``{demo}:mpush`` with
``{demo}:in``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpush.config import TrackingSettings
from mpush.connection import AnyRedis, load_lua, reply_text
from mpush.errors import ConfigError
from mpush.keys import MessageKeys, check_same_slot

__all__ = ["Tracking", "TrackingPolicy", "check_key_types", "message_xid", "tracking_script"]

_DIGITS = re.compile(rb"[0-9]+")
_JSON_START = re.compile(rb"[ \t\n\v\f\r]*\{")
_EXACT = 2**53


@dataclass(frozen=True)
class TrackingPolicy:
    """How long a message may take, how long its record lives, and how it is retried."""

    timeout: float = 10.0
    expire: int = 3600
    capacity: int = 100_000
    max_deliveries: int = 0  # 0: retry off (timeouts are counted, nothing is redelivered)
    backoff: float = 1.0
    backoff_max: float = 60.0


@dataclass(frozen=True)
class Tracking:
    """Tracking of one mover's messages under a namespace."""

    keys: MessageKeys
    policy: TrackingPolicy
    service: str

    @classmethod
    def from_settings(cls, settings: TrackingSettings, service: str) -> Tracking | None:
        """The tracking ``settings`` ask for; None when it is off (no namespace, or turned off)."""
        if not settings.tracking or settings.service_namespace is None:
            return None
        policy = TrackingPolicy(
            timeout=settings.message_timeout,
            expire=settings.message_expire,
            capacity=settings.message_capacity,
            max_deliveries=settings.max_deliveries,
            backoff=settings.retry_backoff,
            backoff_max=settings.retry_backoff_max,
        )
        return cls(MessageKeys(settings.service_namespace), policy, service)

    def check_slot(self, queues: Sequence[str], *, what: str) -> None:
        """On Cluster: ConfigError unless the queues and the message keys share one slot."""
        try:
            check_same_slot([*queues, *self.keys.fixed], what=f"{what} with message tracking")
        except ConfigError as exc:
            raise ConfigError(
                exc.key,
                f"{exc.problem} (the namespace needs the queues' hash tag; or set "
                "--no-message-tracking to use the namespace for registry and metrics only)",
            ) from None

    async def check_types(self, redis: AnyRedis) -> None:
        """ConfigError when a tracking key holds another Redis type than tracking writes."""
        await check_key_types(redis, self.keys)

    def move_keys(self, source: str, targets: Sequence[str]) -> list[str]:
        keys = self.keys
        return [source, keys.counter, keys.xids, keys.batches, keys.due, *targets]

    def move_args(
        self, *, batch: int, capacity: int, expire: int, targets: Sequence[str]
    ) -> list[Any]:
        p = self.policy
        return [
            batch,
            capacity,
            expire,
            self.keys.prefix,
            self.service,
            round(p.timeout * 1000),
            p.expire,
            p.capacity,
            p.max_deliveries,
            repr(p.backoff),
            repr(p.backoff_max),
            json.dumps(list(targets)),
        ]


async def check_key_types(redis: AnyRedis, keys: MessageKeys) -> None:
    """ConfigError naming the first tracking key that holds a type tracking does not write."""
    expected = {
        keys.counter: "string",
        keys.xids: "hash",
        keys.batches: "zset",
        keys.due: "zset",
        keys.done: "list",
        keys.dead: "list",
    }
    for key, kind in expected.items():
        found = await redis.type(key)
        found = reply_text(found)
        if found not in ("none", kind):
            raise ConfigError(
                "service_namespace",
                f"{key!r} holds a Redis {found}, not a {kind}: "
                "another application uses this namespace",
            )


def tracking_script(name: str) -> str:
    """The source of a tracking script: ``lua/tracking.lua`` (shared functions) + ``lua/<name>``."""
    return load_lua("tracking") + "\n" + load_lua(name)


def message_xid(body: bytes | str) -> tuple[str, str]:
    """The xid of a message and its type, by the rules the Lua scripts apply.

    The message itself if it is a decimal number (``number``); else ``meta.id`` if the message is
    a JSON object with one, a non-empty string or an integer (``meta``); else the SHA-1 of the
    message (``sha1``). (Invalid JSON that starts like an object may be read differently by the
    scripts' cjson — numbers with leading zeros, say: give tracked messages valid JSON.)
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if _DIGITS.fullmatch(raw):
        return raw.decode(), "number"
    if _JSON_START.match(raw):
        meta_id = _meta_id(raw)
        if meta_id is not None:
            return meta_id, "meta"
    return hashlib.sha1(raw).hexdigest(), "sha1"


def _meta_id(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    value = meta.get("id") if isinstance(meta, dict) else None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and abs(value) < _EXACT:
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT:
        return str(int(value))
    return None
