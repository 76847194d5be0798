"""What one consumer holds, and the step that changes it: acknowledge, then claim, in batches.

``lua/consume_claim.lua`` does both in one atomic step: it takes the finished messages off the
consumer's in-flight list (reporting the tracked ones done), then moves up to N messages from the
queue onto it. N is the room the consumer has: ``concurrency + prefetch`` less the messages it
has claimed and not yet finished. So a consumer never holds more than that, and a crash leaves
everything it held on its in-flight list, for recovery.

When the queue is empty, one ``BLMOVE queue → in-flight`` waits up to ``pop_timeout`` for the next
message and claims it as it arrives (the lowest latency Redis offers; the wait holds nothing).

Acknowledgements are queued as handlers finish and written in batches: with the next claim, or by
the writer task (``write_forever``) while the claims wait — whichever comes first. ``flush``
writes them now. A claim whose reply was lost (an outage, a cancellation) may have moved messages
nobody knows of: the next claim first adopts whatever the in-flight list holds that is not in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from mpush.connection import AnyRedis
from mpush.consumer.message import Message
from mpush.keys import MessageKeys
from mpush.retry import Backoff, Outage, retrying
from mpush.runtime.tracking import tracking_script

__all__ = ["Claims"]

AT_ONCE = 1000  # most messages claimed, or acknowledged, by one step (Lua's unpack limit: 5000)


class Claims:
    """The messages one consumer holds: claimed in batches, acknowledged in batches."""

    def __init__(
        self,
        redis: AnyRedis,
        queue: str,
        inflight: str,
        *,
        messages: MessageKeys | None,
        room: int,
        pop_timeout: float,
        outage: Outage,
        make: Callable[[Any], Message],
    ) -> None:
        self._redis = redis
        self._queue = queue
        self._inflight = inflight
        self._step = redis.register_script(tracking_script("consume_claim"))
        if messages is None:
            self._keys, self._tracked = [inflight, queue, inflight, inflight], "0"
        else:
            self._keys, self._tracked = [inflight, queue, messages.done, messages.xids], "1"
        self._room = room
        self._pop_timeout: Any = pop_timeout  # redis-py types it int; Redis takes decimals
        self._outage = outage
        self._backoff = Backoff()
        self._make = make
        self.stopped = False
        self._ready: deque[Message] = deque()  # claimed, not yet handed out (oldest first)
        self._held: set[Message] = set()  # claimed, not yet acknowledged or failed in Redis
        self._unsettled = 0  # claimed, neither acknowledged nor failed here: ready or in hand
        self._acks: list[Message] = []  # acknowledged here, not yet in Redis
        self._orphans = False  # a claim's reply was lost: adopt what it may have moved
        self._filling = asyncio.Lock()
        self._writing = asyncio.Lock()  # one write at a time: a step, a flush or an adoption
        self._written = asyncio.Event()  # set as each write ends
        self._wake = asyncio.Event()  # set as acknowledgements are queued

    # -- handing messages out

    async def next(self) -> Message | None:
        """The oldest claimed message not handed out yet, claiming more when there is none; None
        once stopped, or when none came within pop_timeout. Several handlers may ask at once:
        one claims, the others wait for its batch."""
        if not self._ready and not self.stopped:
            async with self._filling:
                if not self._ready and not self.stopped:
                    await self._fill()
        if self.stopped or not self._ready:
            return None
        return self._ready.popleft()

    async def _fill(self) -> None:
        claimed = await retrying(
            self._claim_or_wait, outage=self._outage, backoff=self._backoff, on_transient=self._lost
        )
        self._backoff.reset()
        for body in claimed:
            self._take(body)

    async def _claim_or_wait(self) -> list[Any]:
        claimed = await self._claim()
        if claimed or self.stopped:
            return claimed
        one = await self._wait_for_one()
        return [] if one is None else [one]

    async def _claim(self) -> list[Any]:
        """Write the queued acknowledgements and claim what there is room for, in one step."""
        if self._orphans:
            await self._adopt()
        room = min(max(self._room - self._unsettled, 1), AT_ONCE)
        async with self._write():
            acks = self._acks[:AT_ONCE]
            del self._acks[: len(acks)]
            try:
                claimed = await self._step(
                    keys=self._keys, args=[self._tracked, room, *[m.body for m in acks]]
                )
            except BaseException:
                self._acks[:0] = acks  # written or not, sent again: acknowledging is idempotent
                self._orphans = True
                raise
            self._held.difference_update(acks)
        return list(claimed)

    async def _wait_for_one(self) -> Any:
        try:
            return await self._redis.blmove(
                self._queue, self._inflight, self._pop_timeout, "RIGHT", "LEFT"
            )
        except BaseException:
            self._orphans = True
            raise

    def _lost(self, _: Exception) -> None:
        self._orphans = True

    def listed(self, length: int) -> None:
        """The in-flight list holds ``length`` messages: adopt the excess at the next claim.

        (A claim whose reply is still on its way makes the list look long too; the adoption,
        which waits for that claim to finish, then finds nothing to adopt.)"""
        if length > len(self._held):
            self._orphans = True

    async def _adopt(self) -> None:
        """Hand out what the in-flight list holds beyond the messages in hand: the claims whose
        replies were lost. (Under the writing lock: no acknowledgement lands meanwhile.)"""
        async with self._write():
            listed = await self._redis.lrange(self._inflight, 0, -1)  # newest first
            known = Counter(m.body for m in self._held)
            for body in reversed(listed):
                if known[body] > 0:
                    known[body] -= 1
                else:
                    self._take(body)
            self._orphans = False

    def _take(self, body: Any) -> None:
        message = self._make(body)
        self._held.add(message)
        self._ready.append(message)
        self._unsettled += 1

    # -- settling: acknowledgements in batches, failures one by one

    def settle(self, message: Message) -> bool:
        """Mark ``message`` acknowledged or failed here; False when it was already."""
        if message.settled:
            return False
        message.settled = True
        self._unsettled -= 1
        return True

    def acked(self, message: Message) -> None:
        """Queue the acknowledgement of ``message``; it is written with the next step."""
        if self.settle(message):
            self._acks.append(message)
            self._wake.set()

    def failed(self, message: Message) -> None:
        """The failure of ``message`` is written: it is no longer on the in-flight list."""
        self._held.discard(message)

    async def flush(self) -> None:
        """Write every queued acknowledgement now (Redis outages waited out)."""
        async with self._write():
            while self._acks:
                acks = self._acks[:AT_ONCE]
                del self._acks[: len(acks)]
                args = [self._tracked, 0, *[m.body for m in acks]]

                async def write(args: list[Any] = args) -> None:
                    await self._step(keys=self._keys, args=args)

                try:
                    await retrying(write, outage=self._outage)
                except BaseException:
                    self._acks[:0] = acks
                    raise
                self._held.difference_update(acks)

    async def write_forever(self) -> None:
        """Write acknowledgements as they come, each batch what queued during the last write.

        While another write is on its way (a claim, most often) this waits for it to end and
        looks again, rather than queue for the lock: the next claim, about to start, takes the
        acknowledgements along at no cost, and a write queued before it would delay it a round
        trip."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._acks:
                if self._writing.locked():
                    self._written.clear()
                    await self._written.wait()
                else:
                    await self.flush()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        async with self._writing:
            try:
                yield
            finally:
                self._written.set()

    def forget(self) -> None:
        """Everything held was given back (``consume_recover.lua``, mode release)."""
        self.stopped = True
        for message in self._ready:
            message.settled = True
        self._ready.clear()
        self._held.clear()
        self._unsettled = 0
