"""The demo's load: GET requests to one path of the site at a steady rate, for as long as asked.

``Load.rate`` requests a second (0: none) go out over at most ``connections`` keep-alive HTTP/1.1
connections, each carrying one request at a time. When every connection is busy — the site
answers more slowly than requests fall due — the requests due are skipped and counted, so the load
never holds more than ``connections`` requests in flight. ``figures`` tells what it did: requests
sent, answers by status class, failures (refused, reset, no answer in ``timeout``), skips, and the
p50 and p95 of the response times it measured over the last ``window`` seconds.

It runs inside ``mpush demo``; the page's load buttons and ``mpush demo --load RATE`` set the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from typing import Any

from mpush.runtime.shutdown import Shutdown

__all__ = ["MAX_RATE", "Load"]

log = logging.getLogger(__name__)

MAX_RATE = 500.0  # requests a second, at most
_TICK = 0.01  # seconds between looks at what falls due
_MAX_HEADERS = 100
_MAX_BODY = 1 << 20


class _Unreadable(Exception):
    """An answer that is not the HTTP/1.1 this client reads."""


class _Connection:
    """One keep-alive connection to the site, opened on first use."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reusable = True

    async def get(self, host: str, port: int, request: bytes) -> int:
        """Send ``request``, read the whole answer; its status code."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise _Unreadable(f"status line {status_line[:60]!r}")
        length: int | None = None
        chunked = False
        for _ in range(_MAX_HEADERS):
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection" and value == "close":
                self.reusable = False
        else:
            raise _Unreadable("too many headers")
        if chunked:
            await self._chunks()
        elif length is not None:
            if length > _MAX_BODY:
                raise _Unreadable(f"a body of {length} bytes")
            await self.reader.readexactly(length)
        else:  # the body runs to the end of the connection
            self.reusable = False
            await self.reader.read(_MAX_BODY)
        return int(parts[1])

    async def _chunks(self) -> None:
        assert self.reader is not None
        while True:
            size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await self.reader.readline()
                return
            await self.reader.readexactly(size + 2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Load:
    """Requests to ``http://host:port<path>`` at ``rate`` a second; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        rate: float = 0.0,
        connections: int = 64,
        timeout: float = 10.0,
        window: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.connections = connections
        self.timeout = timeout
        self.window = window
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: mpush-demo-load\r\n\r\n"
        ).encode()
        self._rate = 0.0
        self._idle: list[_Connection] = []
        self._open = 0
        self._latencies: deque[tuple[float, float]] = deque()  # (answered at, seconds)
        self.sent = 0
        self.answers: Counter[str] = Counter()  # "2xx", "5xx", …
        self.failed = 0
        self.skipped = 0
        self.since = time.time()
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Requests a second from now on (ValueError outside 0 … MAX_RATE)."""
        if not 0 <= rate <= MAX_RATE:
            raise ValueError(f"a rate is 0 … {MAX_RATE:g} requests a second, not {rate:g}")
        if rate != self._rate:
            log.info("load: %g requests a second to %s", rate, self.path)
            self._rate = float(rate)
            self.since = time.time()

    def figures(self) -> dict[str, Any]:
        """What the load did, and the response times of its last ``window`` seconds."""
        self._forget(time.monotonic())
        times = sorted(latency for _, latency in self._latencies)
        return {
            "rate": self._rate,
            "path": self.path,
            "since": self.since,
            "sent": self.sent,
            "answers": dict(sorted(self.answers.items())),
            "failed": self.failed,
            "skipped": self.skipped,
            "in_flight": self._open - len(self._idle),
            "window": self.window,
            "p50": _quantile(times, 0.50),
            "p95": _quantile(times, 0.95),
        }

    async def run(self, shutdown: Shutdown) -> None:
        """Send requests as they fall due until ``shutdown``; then drop what is in flight."""
        tasks: set[asyncio.Task[None]] = set()
        due = 0.0
        last = time.monotonic()
        try:
            while not await shutdown.sleep(_TICK):
                now = time.monotonic()
                due = min(due + self._rate * (now - last), self._rate + 1.0)  # no catching up
                last = now
                while due >= 1.0:
                    due -= 1.0
                    connection = self._connection()
                    if connection is None:
                        self.skipped += 1
                        continue
                    task = asyncio.create_task(self._send(connection))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for connection in self._idle:
                self._discard(connection)
            self._idle.clear()

    def _connection(self) -> _Connection | None:
        if self._idle:
            return self._idle.pop()
        if self._open >= self.connections:
            return None
        self._open += 1
        return _Connection()

    async def _send(self, connection: _Connection) -> None:
        began = time.monotonic()
        self.sent += 1
        try:
            async with asyncio.timeout(self.timeout):
                status = await connection.get(self.host, self.port, self._request)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, _Unreadable):
            self.failed += 1
            self._discard(connection)
            return
        except asyncio.CancelledError:
            self._discard(connection)
            raise
        now = time.monotonic()
        self.answers[f"{status // 100}xx"] += 1
        self._latencies.append((now, now - began))
        self._forget(now)
        if connection.reusable:
            self._idle.append(connection)
        else:
            self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        with contextlib.suppress(Exception):
            connection.close()
        self._open -= 1

    def _forget(self, now: float) -> None:
        while self._latencies and self._latencies[0][0] < now - self.window:
            self._latencies.popleft()


def _quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (nearest rank), None when there are none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
