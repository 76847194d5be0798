"""Reliable consumers of mpush queues: a worker in a few lines (docs/consumer.md).

    async with consume(redis, "{demo}:out0", namespace="{demo}:mpush") as messages:
        async for msg in messages:
            await handle(msg.body)

or, to go on after a failure (it is reported, logged, and the loop goes on):

    async for msg in consume(redis, "{demo}:out0", namespace="{demo}:mpush"):
        async with msg:
            await handle(msg.body)

Each message is claimed with ``BLMOVE queue → <queue>:inflight:<consumer>``, so it is never only
in the worker's memory. When the loop body returns, the message is acknowledged: taken off the
in-flight list and, on a tracked queue (``namespace`` given), reported done to the monitor by its
xid — in one atomic step. When the body raises, ``async with`` reports the failure: a tracked
message takes the retry path (redelivered up to ``max_deliveries``, then dead-lettered), an
untracked one is dead-lettered (``<ns>:message:dead``) or, without a namespace, pushed to
``<queue>:failed``. The exception then propagates.

A consumer holds a lease (``<queue>:consumers``), renewed in the background. When a consumer dies
(kill -9, lost host), its lease ends and the next consumer to look recovers what it held: a
tracked message with retry on takes the retry path (so a message that kills every consumer ends
on the dead-letter list), anything else goes back to the queue. Nothing is lost.

``async for msg in consume(...)`` without ``async with`` works too: acknowledgement is the same,
and the lease is renewed between messages only — a failure (the loop ended by an exception) is
noticed when the lease ends, so keep ``lease`` above the longest time a message takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from mpush.connection import AnyRedis, describe_client, reply_text
from mpush.errors import ConfigError
from mpush.keys import ConsumerKeys, MessageKeys, check_same_slot
from mpush.retry import Backoff, keep_trying, outage_of, retrying
from mpush.runtime.tracking import message_xid, tracking_script

__all__ = ["Consumer", "Message", "consume"]

log = logging.getLogger(__name__)

_RECOVER_AT_ONCE = 10
_ERROR_TEXT = 300


@dataclass
class Message:
    """One claimed message: ``body`` as the Redis client returns it (bytes, or str with
    ``decode_responses``), its ``xid``, and the queue it came from."""

    body: Any
    queue: str
    xid: str
    _consumer: Consumer = field(repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def text(self) -> str:
        return self.body if isinstance(self.body, str) else bytes(self.body).decode()

    async def ack(self) -> None:
        """Acknowledge now (the loop does it when the body returns)."""
        await self._consumer.ack(self)

    async def fail(self, error: BaseException | str) -> None:
        """Report a failure now (``async with`` does it when the body raises)."""
        await self._consumer.fail(self, error)

    async def __aenter__(self) -> Message:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """``async with msg:`` acks when the block ends; a failure is reported and swallowed."""
        if exc is None:
            await self.ack()
            return False
        if isinstance(exc, Exception):
            await self.fail(exc)
            return True
        return False


def consume(
    redis: AnyRedis,
    queue: str,
    *,
    namespace: str | None = None,
    lease: float = 30.0,
    pop_timeout: float = 1.0,
    consumer_id: str | None = None,
) -> Consumer:
    """A reliable consumer of ``queue``: ``async with`` it, or ``async for`` over it."""
    return Consumer(
        redis,
        queue,
        namespace=namespace,
        lease=lease,
        pop_timeout=pop_timeout,
        consumer_id=consumer_id,
    )


class Consumer:
    """Claims messages one at a time from ``queue``; see the module docstring."""

    def __init__(
        self,
        redis: AnyRedis,
        queue: str,
        *,
        namespace: str | None = None,
        lease: float = 30.0,
        pop_timeout: float = 1.0,
        consumer_id: str | None = None,
    ) -> None:
        if lease <= 3 * pop_timeout:
            raise ConfigError(
                "lease", f"{lease:g}s must be over 3 × pop_timeout ({pop_timeout:g}s)"
            )
        self._redis = redis
        self.queue = queue
        self.id = consumer_id or uuid.uuid4().hex[:12]
        self._keys = ConsumerKeys(queue)
        self._messages = MessageKeys(namespace) if namespace else None
        self._lease = lease
        self._pop_timeout = pop_timeout
        self.inflight = self._keys.inflight(self.id)
        self._ack = redis.register_script(tracking_script("consume_ack"))
        self._fail = redis.register_script(tracking_script("consume_fail"))
        self._recover = redis.register_script(tracking_script("consume_recover"))
        self._beat = redis.register_script(tracking_script("consume_beat"))
        self._pending: Message | None = None
        self._next_beat = 0.0
        self._beating: asyncio.Task[None] | None = None
        self._checked = False
        self._stopped = False
        self._orphans = False  # a claim may have been lost in an outage: requeue before the next
        self._outage = outage_of(describe_client(redis))

    # -- the async context manager: background lease renewal, failures reported at once

    async def __aenter__(self) -> Consumer:
        await self._start()
        self._beating = asyncio.create_task(self._beat_forever(), name=f"lease {self.id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pending, self._pending = self._pending, None
        try:
            if pending is not None and not pending._settled:
                if exc is None:
                    await self._patiently(lambda: self.ack(pending))
                elif isinstance(exc, Exception):
                    await self._patiently(lambda: self.fail(pending, exc))
                # cancelled or interrupted: the message stays claimed; release() requeues it
            await self.release()
        finally:
            if self._beating is not None:
                self._beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._beating

    # -- the async iterator

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        pending, self._pending = self._pending, None
        if pending is not None and not pending._settled:
            await self._patiently(lambda: self.ack(pending))
        if not self._checked:
            await self._patiently(self._start)
        backoff = Backoff()
        while not self._stopped:
            body = await retrying(
                self._claim, outage=self._outage, backoff=backoff, on_transient=self._lost_claim
            )
            if body is not None:
                message = Message(body, self.queue, message_xid(body)[0], self)
                self._pending = message
                return message
        raise StopAsyncIteration

    async def _claim(self) -> Any:
        """Renew the lease when due (no background task), then wait up to pop_timeout for one."""
        if self._beating is not None and self._beating.done():
            self._beating.result()  # the lease renewal failed for good: raise its error here
        if self._orphans:
            await self.recover(self.id, mode="release")
            self._orphans = False
            self._next_beat = 0.0  # the release ended the lease: take it again now
        if self._beating is None and asyncio.get_running_loop().time() >= self._next_beat:
            await self.heartbeat()
        timeout: Any = self._pop_timeout  # redis-py types it int; Redis takes decimals
        return await self._redis.blmove(self.queue, self.inflight, timeout, "RIGHT", "LEFT")

    def _lost_claim(self, _: Exception) -> None:
        self._orphans = True  # the claim may have moved a message we never heard of

    async def _patiently(self, call: Callable[[], Awaitable[object]]) -> None:
        """Run ``call`` until it succeeds, waiting out Redis outages (logged once)."""
        await retrying(call, outage=self._outage)

    def stop(self) -> None:
        """End the iteration after the message in hand (within ``pop_timeout``)."""
        self._stopped = True

    # -- acknowledgement, failure, leases, recovery

    async def ack(self, message: Message) -> None:
        if message._settled:
            return
        if self._messages is None:
            keys, tracked = [self.inflight, self.inflight, self.inflight], "0"
        else:
            keys, tracked = [self.inflight, self._messages.done, self._messages.xids], "1"
        await self._ack(keys=keys, args=[message.body, tracked])
        message._settled = True

    async def fail(self, message: Message, error: BaseException | str) -> str:
        """Report a failure; returns 'retry', 'dead' or 'failed' (see consume_fail.lua)."""
        if message._settled:
            return "settled"
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = " ".join(text.split())[:_ERROR_TEXT]
        if self._messages is None:
            keys = [self.inflight, self.inflight, self._keys.failed]
            prefix = ""
        else:
            keys = [self.inflight, self._messages.due, self._messages.dead]
            prefix = self._messages.prefix
        outcome = await self._fail(keys=keys, args=[message.body, prefix, text, self.queue])
        message._settled = True
        outcome = reply_text(outcome)
        log.warning("message %s failed (%s): %s", message.xid, outcome, text)
        return outcome

    async def heartbeat(self) -> None:
        """Renew the lease, and recover the consumers whose lease has ended."""
        expired = await self._beat(
            keys=[self._keys.consumers], args=[self.id, round(self._lease * 1000), _RECOVER_AT_ONCE]
        )
        self._next_beat = asyncio.get_running_loop().time() + self._lease / 3
        for raw in expired:
            other = reply_text(raw)
            await self.recover(other)

    async def recover(
        self, consumer: str, *, mode: Literal["lost", "release"] = "lost"
    ) -> tuple[int, int]:
        """Give back what ``consumer`` holds; returns (requeued, sent to the retry path)."""
        due = self._messages.due if self._messages else self._keys.consumers
        prefix = self._messages.prefix if self._messages else ""
        keys = [self._keys.consumers, self._keys.inflight(consumer), self.queue, due]
        requeued, retried = await self._recover(keys=keys, args=[consumer, prefix, mode])
        if int(requeued) > 0 or int(retried) > 0:
            log.warning(
                "recovered consumer %s of %s: %d requeued, %d to retry",
                consumer,
                self.queue,
                int(requeued),
                int(retried),
            )
        return int(requeued), int(retried)

    async def release(self) -> None:
        """Stop cleanly: whatever is still claimed goes back to the queue; the lease ends."""
        self._stopped = True
        await self.recover(self.id, mode="release")

    async def _start(self) -> None:
        """Check the keys can share a slot (on Cluster) and take the lease."""
        keys = [self.queue, self.inflight, self._keys.consumers]
        if self._messages is not None:
            keys += list(self._messages.fixed)
        if _is_cluster(self._redis):
            check_same_slot(keys, what=f"consuming {self.queue}")
        self._checked = True
        await self.heartbeat()

    async def _beat_forever(self) -> None:
        """Renew the lease every lease/3 s; an outage is retried (and logged once)."""
        loop = asyncio.get_running_loop()

        async def beat() -> None:
            await asyncio.sleep(max(self._next_beat - loop.time(), 0.0))
            self._next_beat = loop.time()  # if it fails: again after the backoff
            await self.heartbeat()

        await keep_trying(beat, outage=self._outage)


def _is_cluster(redis: AnyRedis) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(redis, RedisCluster)
