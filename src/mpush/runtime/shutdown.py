"""The one stop signal of a service: set by OS signals, the registry watcher, or a failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mpush.exits import Exit

__all__ = ["Shutdown"]

log = logging.getLogger(__name__)


class Shutdown:
    """A latch with a reason and an exit code. The first request wins; later ones are ignored."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: str | None = None
        self.exit_code = Exit.OK

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str, exit_code: Exit = Exit.OK) -> None:
        if self._event.is_set():
            return
        self.reason = reason
        self.exit_code = exit_code
        log.info("stopping: %s", reason)
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()

    async def sleep(self, seconds: float, *, wake: asyncio.Event | None = None) -> bool:
        """Sleep up to ``seconds``; return True early (and at once) if shutdown is requested.

        With ``wake``, also return early (False) when that event is set.
        """
        if wake is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._event.wait()
            return self._event.is_set()
        if wake.is_set() or self._event.is_set():
            return self._event.is_set()
        waits = [asyncio.ensure_future(self._event.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return self._event.is_set()
