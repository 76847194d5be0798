"""One claimed message, as a consumer hands it to the code that handles it."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from mpush.runtime.tracking import message_xid

if TYPE_CHECKING:
    from mpush.consumer.consumer import Consumer

__all__ = ["Message"]


class Message:
    """One claimed message: ``body`` as the Redis client returns it (bytes, or str with
    ``decode_responses``), its ``xid``, and the queue it came from.

    ``async with msg:`` acknowledges when the block ends, and reports a failure (then swallows it)
    when the block raises.
    """

    __slots__ = ("_consumer", "_xid", "body", "queue", "settled")

    def __init__(self, body: Any, queue: str, consumer: Consumer) -> None:
        self.body = body
        self.queue = queue
        self._consumer = consumer
        self._xid: str | None = None
        self.settled = False  # acknowledged or failed (or being so)

    @property
    def xid(self) -> str:
        """The message's xid (docs/tracking.md), computed when first asked for."""
        if self._xid is None:
            self._xid = message_xid(self.body)[0]
        return self._xid

    @property
    def text(self) -> str:
        return self.body if isinstance(self.body, str) else bytes(self.body).decode()

    def __repr__(self) -> str:
        return f"Message(body={self.body!r}, queue={self.queue!r})"

    async def ack(self) -> None:
        """Acknowledge now; returns once the acknowledgement is written."""
        await self._consumer.ack(self)

    async def fail(self, error: BaseException | str) -> str:
        """Report a failure now; returns 'retry', 'dead' or 'failed' (see consume_fail.lua)."""
        return await self._consumer.fail(self, error)

    async def __aenter__(self) -> Message:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Acknowledge when the block ends; a failure is reported and swallowed."""
        if exc is None:
            await self.ack()
            return False
        if isinstance(exc, Exception):
            await self.fail(exc)
            return True
        return False
