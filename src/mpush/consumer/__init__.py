"""Reliable consumers of mpush queues: a worker in a few lines (docs/consumer.md).

    async with consume(redis, "{demo}:out0", namespace="{demo}:mpush") as messages:
        async for msg in messages:
            await handle(msg.body)

or, fifty handlers side by side in one process:

    async def handle(msg: Message) -> None: ...

    await consume(redis, "{demo}:out0", namespace="{demo}:mpush", concurrency=50).run(handle)

Messages are claimed in batches — up to as many as the consumer has room for
(``concurrency + prefetch`` less what it holds) — by one atomic step that moves them from the queue
onto ``<queue>:inflight:<consumer>``, so a message is never only in the worker's memory. When the
queue is empty, a blocking ``BLMOVE`` claims the next message the moment it arrives. When a
handler returns (or the loop body does), the message is acknowledged: taken off the in-flight list
and, on a tracked queue (``namespace`` given), reported done to the monitor by its xid.
Acknowledgements are written in batches, with the next claim or by a background writer; a crash
before one is written redelivers that message (at-least-once). When a handler raises (or the body
of ``async with msg`` does), the failure is reported: a tracked message takes the retry path
(redelivered up to ``max_deliveries``, then dead-lettered), an untracked one is dead-lettered
(``<ns>:message:dead``) or, without a namespace, pushed to ``<queue>:failed``.

A consumer holds one lease for all it holds (``<queue>:consumers``), renewed in the background.
When a consumer dies (kill -9, lost host), its lease ends and the next consumer to look recovers
what it held: a tracked message with retry on takes the retry path (so a message that kills every
consumer ends on the dead-letter list), anything else goes back to the queue, oldest first.
Nothing is lost.

``async for msg in consume(...)`` without ``async with`` works too: acknowledgements are written
with the next claim, and the lease is renewed between messages only — keep ``lease`` above the
longest time a message takes.
"""

from mpush.consumer.consumer import Consumer, Handler, consume
from mpush.consumer.message import Message

__all__ = ["Consumer", "Handler", "Message", "consume"]
