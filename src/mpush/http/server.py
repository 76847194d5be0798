"""hgateway's HTTP/1.1 server: connections (``mpush.http.protocol``) on a listening socket, a
sweep that closes those past their deadlines, and a cap on how many are open.

At most ``max_connections`` connections are open; one more is answered ``503`` and closed.
``raise_open_files`` raises the process's soft limit on open files to what that needs (or says
how many the hard limit allows). The sweep runs every ``Limits.tick`` seconds: it refreshes the
clock and the Date header the connections use, and expires each connection whose deadline
passed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from mpush.http.protocol import Connection, Handler, Limits, Shared

__all__ = ["HttpServer", "raise_open_files"]

log = logging.getLogger(__name__)

_FILES_RESERVED = 256  # open files kept for everything but client connections


class HttpServer:
    """Serves ``handler`` on a listening socket within ``limits``."""

    def __init__(
        self, handler: Handler, limits: Limits, on_refusal: Callable[[str], None] | None = None
    ) -> None:
        self.shared = Shared(handler, limits, on_refusal)
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        shared = self.shared
        self._server = await loop.create_server(lambda: Connection(shared), sock=sock, backlog=2048)
        self._sweeper = asyncio.create_task(self._sweep())

    def stop_listening(self) -> None:
        """Stop taking connections; close the idle ones; the others end after their answer."""
        self.shared.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.shared.connections):
            if not conn.busy:
                conn.close()

    async def close(self) -> None:
        """Close every connection and stop."""
        self.stop_listening()
        for conn in list(self.shared.connections):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _sweep(self) -> None:
        shared = self.shared
        tick = shared.limits.tick
        while True:
            await asyncio.sleep(tick)
            shared.tick()
            now = shared.clock
            for conn in [c for c in shared.connections if c.deadline < now]:
                conn.expire()


def raise_open_files(connections: int) -> int:
    """Raise this process's soft limit on open files to what ``connections`` clients need (and
    what the rest of the process uses); return how many connections the limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + _FILES_RESERVED
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info(
            "open files limit raised from %d to %d (max_connections %d)", soft, target, connections
        )
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        allowed = max(soft - _FILES_RESERVED, 1)
        log.warning(
            "the open files limit (hard %d) allows %d connections, not max_connections %d",
            hard,
            allowed,
            connections,
        )
        return allowed
    return connections
