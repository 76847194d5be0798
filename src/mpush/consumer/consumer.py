"""The consumer: its lease, its ways of handing out messages (``async for``, ``run``), failures,
and the recovery of what dead consumers held. The claims themselves are ``claims.py``'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

from mpush.connection import AnyRedis, describe_client, reply_text
from mpush.consumer.claims import Claims
from mpush.consumer.message import Message
from mpush.errors import ConfigError
from mpush.keys import ConsumerKeys, MessageKeys, check_same_slot
from mpush.retry import keep_trying, outage_of, retrying
from mpush.runtime.tracking import tracking_script

__all__ = ["Consumer", "Handler", "consume"]

log = logging.getLogger("mpush.consumer")

Handler = Callable[[Message], Awaitable[object]]

_RECOVER_AT_ONCE = 10
_ERROR_TEXT = 300
MOST_IN_HAND = 10_000  # concurrency + prefetch


def consume(
    redis: AnyRedis,
    queue: str,
    *,
    namespace: str | None = None,
    lease: float = 30.0,
    pop_timeout: float = 1.0,
    consumer_id: str | None = None,
    concurrency: int = 1,
    prefetch: int = 0,
) -> Consumer:
    """A reliable consumer of ``queue``: ``async with`` it, ``async for`` over it, or give
    ``run`` a handler."""
    return Consumer(
        redis,
        queue,
        namespace=namespace,
        lease=lease,
        pop_timeout=pop_timeout,
        consumer_id=consumer_id,
        concurrency=concurrency,
        prefetch=prefetch,
    )


class Consumer:
    """Claims messages from ``queue`` in batches; see the package docstring."""

    def __init__(
        self,
        redis: AnyRedis,
        queue: str,
        *,
        namespace: str | None = None,
        lease: float = 30.0,
        pop_timeout: float = 1.0,
        consumer_id: str | None = None,
        concurrency: int = 1,
        prefetch: int = 0,
    ) -> None:
        if lease <= 3 * pop_timeout:
            raise ConfigError(
                "lease", f"{lease:g}s must be over 3 × pop_timeout ({pop_timeout:g}s)"
            )
        if concurrency < 1 or prefetch < 0 or concurrency + prefetch > MOST_IN_HAND:
            raise ConfigError(
                "concurrency",
                f"{concurrency} handlers and a prefetch of {prefetch}: give at least one "
                f"handler, a prefetch of 0 or more, and at most {MOST_IN_HAND:,} in all",
            )
        self._redis = redis
        self.queue = queue
        self.id = consumer_id or uuid.uuid4().hex[:12]
        self.concurrency = concurrency
        self._keys = ConsumerKeys(queue)
        self._messages = MessageKeys(namespace) if namespace else None
        self._lease = lease
        self.inflight = self._keys.inflight(self.id)
        self._outage = outage_of(describe_client(redis))
        self._claims = Claims(
            redis,
            queue,
            self.inflight,
            messages=self._messages,
            room=concurrency + prefetch,
            pop_timeout=pop_timeout,
            outage=self._outage,
            make=lambda body: Message(body, queue, self),
        )
        self._fail = redis.register_script(tracking_script("consume_fail"))
        self._recover = redis.register_script(tracking_script("consume_recover"))
        self._beat = redis.register_script(tracking_script("consume_beat"))
        self._pending: Message | None = None  # in a loop's hand: acknowledged at the next turn
        self._next_beat = 0.0
        self._background: list[asyncio.Task[None]] = []  # lease renewal, acknowledgements
        self._checked = False

    # -- the async context manager: lease and acknowledgements in the background

    async def __aenter__(self) -> Consumer:
        await self._start()
        self._background = [
            asyncio.create_task(self._beat_forever(), name=f"lease {self.id}"),
            asyncio.create_task(self._claims.write_forever(), name=f"acks {self.id}"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pending, self._pending = self._pending, None
        try:
            if pending is not None and not pending.settled:
                if exc is None:
                    self._claims.acked(pending)
                elif isinstance(exc, Exception):
                    await self.fail(pending, exc)
                # cancelled or interrupted: the message stays claimed; release() requeues it
            await self.release()
        finally:
            background, self._background = self._background, []
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- one message at a time: the async iterator

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Message:
        if self.concurrency > 1:
            raise ConfigError(
                "concurrency", "async for hands out one message at a time: use run(handler)"
            )
        pending, self._pending = self._pending, None
        if pending is not None:
            self._claims.acked(pending)  # written with the next claim
        message = await self._next()
        if message is None:
            raise StopAsyncIteration
        self._pending = message
        return message

    # -- side by side: run(handler)

    async def run(self, handler: Handler) -> None:
        """Handle messages with ``handler``, ``concurrency`` at a time, until ``stop()``.

        A handler that returns acknowledges its message (written in batches, in the background);
        one that raises reports a failure (logged), and its worker goes on with the next message.
        """
        async with contextlib.AsyncExitStack() as stack:
            if not self._background:
                await stack.enter_async_context(self)
            try:
                async with asyncio.TaskGroup() as group:
                    for n in range(self.concurrency):
                        group.create_task(self._work(handler), name=f"{self.id} handler {n}")
            except BaseExceptionGroup as errors:
                if len(errors.exceptions) == 1:
                    raise errors.exceptions[0] from None
                raise

    async def _work(self, handler: Handler) -> None:
        while (message := await self._next()) is not None:
            try:
                await handler(message)
            except Exception as exc:
                await self.fail(message, exc)
            else:
                self._claims.acked(message)

    async def _next(self) -> Message | None:
        """The next message to handle; None once stopped."""
        if not self._checked:
            await self._patiently(self._start)
        while True:
            for task in self._background:
                if task.done():
                    task.result()  # a background task failed for good: raise its error here
            if not self._background and asyncio.get_running_loop().time() >= self._next_beat:
                await self._patiently(self.heartbeat)  # no background renewal: between turns
            message = await self._claims.next()
            if message is not None or self._claims.stopped:
                return message

    async def _patiently(self, call: Callable[[], Awaitable[object]]) -> None:
        """Run ``call`` until it succeeds, waiting out Redis outages (logged once)."""
        await retrying(call, outage=self._outage)

    def stop(self) -> None:
        """Hand out no more messages: the handlers finish what they hold (the loop ends after the
        message in hand), and what was claimed but not handed out is given back on exit."""
        self._claims.stopped = True

    # -- acknowledgement, failure, leases, recovery

    async def ack(self, message: Message) -> None:
        """Acknowledge ``message``; returns once it is written (with any others queued)."""
        self._claims.acked(message)
        await self._claims.flush()

    async def fail(self, message: Message, error: BaseException | str) -> str:
        """Report a failure; returns 'retry', 'dead' or 'failed' (see consume_fail.lua), or
        'settled' when the message was acknowledged or failed already."""
        if not self._claims.settle(message):
            return "settled"
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = " ".join(text.split())[:_ERROR_TEXT]
        if self._messages is None:
            keys = [self.inflight, self.inflight, self._keys.failed]
            prefix = ""
        else:
            keys = [self.inflight, self._messages.due, self._messages.dead]
            prefix = self._messages.prefix

        async def report() -> Any:
            return await self._fail(keys=keys, args=[message.body, prefix, text, self.queue])

        outcome = reply_text(await retrying(report, outage=self._outage))
        self._claims.failed(message)
        log.warning("message %s failed (%s): %s", message.xid, outcome, text)
        return outcome

    async def heartbeat(self) -> None:
        """Renew the lease — one for everything this consumer holds — and recover the consumers
        whose lease has ended. (If the in-flight list is longer than what this consumer knows it
        holds, a claim's reply was lost: the next claim adopts the rest.)"""
        listed, expired = await self._beat(
            keys=[self._keys.consumers, self.inflight],
            args=[self.id, round(self._lease * 1000), _RECOVER_AT_ONCE],
        )
        self._next_beat = asyncio.get_running_loop().time() + self._lease / 3
        self._claims.listed(int(listed))
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
        """Stop cleanly: acknowledgements written, whatever is still claimed back to the queue
        (oldest first), the lease ended."""
        self._claims.stopped = True
        await self._claims.flush()
        await self._patiently(lambda: self.recover(self.id, mode="release"))
        self._claims.forget()

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
