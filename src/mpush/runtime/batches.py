"""Serving a list in batches: what hrouter, mdispatch and every handler run.

``pump`` takes up to ``count`` messages from the tail (the oldest) of a list, hands them to a
function that returns the ``Writes`` they lead to (pushes to other lists, registrations, messages
set aside), and sends those writes *together with the next pop* in one pipeline: under load each
batch costs one round trip, over a connection of the pump's own (``mpush.runtime.pinned``). When
the list is empty it blocks (``BLMPOP`` on Redis ≥ 7.0, else ``BRPOP``) for up to ``pop_timeout``
seconds, so shutdown is never far.

The pops are destructive: this suits messages with a deadline (HTTP requests and responses). If the
process dies holding a batch, nobody could use those messages after their deadline anyway, and the
waiting side answers at the deadline.

Answers go to the reply list a request message names (``Writes.reply``) through ``lua/reply.lua``:
the push and the expiry in one step, and nothing at all when the key is not a reply list (another
type, or a list without an expiry): a message cannot make a handler write to, or expire, a key of
someone else's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as rex

from mpush.connection import AnyRedis, load_lua
from mpush.keys import set_aside
from mpush.retry import Outage, Stopped, keep_trying, retrying
from mpush.runtime.pinned import Command, PinnedConnection
from mpush.runtime.shutdown import Shutdown

log = logging.getLogger(__name__)

__all__ = ["Writes", "pop_batch", "pump"]

SET_ASIDE = 100  # newest messages kept on a ``<list>:bad`` list
REPLY_EXPIRE = 60  # seconds a reply list outlives its last push (a dead gateway's list goes away)
_REPLY = load_lua("reply")
_REPLY_SHA = hashlib.sha1(_REPLY.encode()).hexdigest()

_no_blmpop: weakref.WeakSet[PinnedConnection] = weakref.WeakSet()  # on Redis 6.2


@dataclass
class Writes:
    """Writes a batch leads to, sent in one pipeline (each command touches one key).

    A key of ``pushes`` given an expiry in ``expire`` is a reply list: its pushes go through
    ``lua/reply.lua`` (see the module docstring).
    """

    pushes: dict[str, list[bytes | str]] = field(default_factory=dict)
    expire: dict[str, int] = field(default_factory=dict)
    registrations: list[tuple[str, str, int]] = field(default_factory=list)  # key, value, PXAT
    aside: dict[str, list[bytes | str]] = field(default_factory=dict)

    def push(self, key: str, message: bytes | str) -> None:
        self.pushes.setdefault(key, []).append(message)

    def reply(self, key: str, message: bytes | str, expire: int = REPLY_EXPIRE) -> None:
        """Push an answer to the reply list ``key``, which then lives ``expire`` seconds."""
        self.pushes.setdefault(key, []).append(message)
        self.expire[key] = expire

    def set_aside(self, source: str, message: bytes) -> None:
        """Keep a malformed ``message`` of ``source`` on ``<source>:bad`` (the newest SET_ASIDE)."""
        self.aside.setdefault(set_aside(source), []).append(message)

    def __bool__(self) -> bool:
        return bool(self.pushes or self.registrations or self.aside)

    def commands(self) -> list[Command]:
        commands: list[Command] = []
        for key, value, expire_at_ms in self.registrations:
            commands.append(("SET", key, value, "PXAT", expire_at_ms))
        for key, messages in self.pushes.items():
            if key in self.expire:
                commands.append(("EVALSHA", _REPLY_SHA, 1, key, self.expire[key], *messages))
            else:
                commands.append(("LPUSH", key, *messages))
        for key, messages in self.aside.items():
            commands.append(("LPUSH", key, *messages))
            commands.append(("LTRIM", key, 0, SET_ASIDE - 1))
        return commands


async def pop_batch(redis: PinnedConnection, key: str, count: int, block: float) -> list[bytes]:
    """Up to ``count`` messages from the right of ``key``, oldest first; [] after ``block`` s."""
    if redis not in _no_blmpop:
        try:
            found = await redis.call("BLMPOP", block, 1, key, "RIGHT", "COUNT", count)
        except rex.ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            _no_blmpop.add(redis)  # Redis 6.2: no BLMPOP
        else:
            return list(found[1]) if found else []
    batch: Any = await redis.call("RPOP", key, count)
    if batch:
        return list(batch)
    one: Any = await redis.call("BRPOP", key, block)
    return [one[1]] if one else []


async def _write_and_pop(
    redis: PinnedConnection, writes: Writes, key: str, count: int
) -> list[bytes]:
    """Send ``writes`` and pop the next batch in one round trip.

    The pipeline is not a transaction: the pop runs whatever happened to the writes, so its
    messages are taken even when a write fails, and must not be lost with the error. A failed
    write (a reply list of the wrong type, an expiry out of range) is logged and counted by the
    caller's metrics, never allowed to end the service.
    """
    commands = writes.commands()
    if count:
        commands.append(("RPOP", key, count))
    results = await redis.pipeline(commands)
    unloaded = [i for i, r in enumerate(results) if isinstance(r, rex.NoScriptError)]
    if unloaded:  # a restarted or flushed server: load the script, send those again
        await redis.load_script(_REPLY)
        again = await redis.pipeline([commands[i] for i in unloaded])
        for index, result in zip(unloaded, again, strict=True):
            results[index] = result
    failed = [r for r in (results[:-1] if count else results) if isinstance(r, Exception)]
    if failed:
        log.warning(
            "%d of %d writes failed and were dropped, the first: %s",
            len(failed),
            len(results) - (1 if count else 0),
            failed[0],
        )
    popped = results[-1] if count else None
    if isinstance(popped, Exception):
        raise popped
    return list(popped or [])


async def pump(
    redis: AnyRedis,
    source: str,
    handle: Callable[[list[bytes]], Awaitable[Writes]],
    *,
    count: int,
    pop_timeout: float,
    shutdown: Shutdown,
    outage: Outage,
) -> None:
    """Serve ``source`` with ``handle`` until shutdown; Redis outages waited out with backoff.

    The writes of the last batch are sent before returning. A transient error loses the writes in
    hand (their messages had a deadline; the waiting side answers at it) and is retried.
    """
    pinned = PinnedConnection(redis)
    writes = Writes()

    async def turn() -> None:
        nonlocal writes
        batch: list[bytes] = []
        if writes:
            batch = await _write_and_pop(pinned, writes, source, count)
            writes = Writes()
        if not batch:
            batch = await pop_batch(pinned, source, count, pop_timeout)
        if batch:
            writes = await handle(batch)

    def drop(_: Exception) -> None:
        nonlocal writes
        writes = Writes()

    async def last() -> None:
        await _write_and_pop(pinned, writes, source, 0)

    try:
        await keep_trying(turn, outage=outage, shutdown=shutdown, on_transient=drop)
        if writes:  # one attempt: the service is stopping
            with contextlib.suppress(Stopped):
                await retrying(last, outage=outage, shutdown=shutdown)
    finally:
        await pinned.close()
