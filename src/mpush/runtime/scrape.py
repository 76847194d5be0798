"""The HTTP listener behind every ``/metrics``: a small HTTP/1.1 server on asyncio streams.

prometheus_client's own server (``start_http_server``) is a thread-per-connection WSGI server with
no receive timeout, no connection cap and http.server's generous head limits: one client that
sends half a request holds a thread forever, a thousand hold a thousand. This one keeps the
project's rules for listeners:

- **receive deadline**: a request head must arrive whole within ``receive_timeout`` seconds (an
  idle keep-alive connection gets as long for its next one), else the connection is closed;
- **size limits**: a head over ``max_head`` bytes or ``max_headers`` lines is answered 431, a
  request with a body 413 (a scrape has none);
- **connection cap**: beyond ``max_connections`` open connections a new one is answered 503 and
  closed at once;
- **send deadline**: a client that does not take its answer within ``send_timeout`` is dropped.

It answers ``GET`` and ``HEAD`` of ``/metrics`` (and a pointer at ``/``), and of the probes it is
given (``/healthz``, ``/readyz``: 200 or 503 with a line saying why, ``mpush.runtime.health``): 405
for another method, 404 for another path, 400 for what is not HTTP/1.x. Answers are gzipped when
the client accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import re
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from mpush.errors import ConfigError
from mpush.runtime.shutdown import Shutdown

__all__ = ["Exposition", "ListenerLimits", "MetricsListener", "Probe", "Render"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_GZIP_OVER = 1024  # smaller answers go as they are
_INDEX = b"mpush metrics: see /metrics\n"


@dataclass(frozen=True)
class Exposition:
    """An answer to a scrape: the body and its content type."""

    body: bytes
    content_type: str


# What the listener calls for each scrape, with the request's headers (lower-case names).
Render = Callable[[Mapping[str, str]], Awaitable[Exposition]]
# A probe: (healthy, why), answered 200 or 503 with ``why`` as the body.
Probe = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class ListenerLimits:
    receive_timeout: float = 5.0  # seconds a request head may take to arrive
    send_timeout: float = 10.0  # seconds a client has to take an answer
    max_head: int = 8192  # bytes of request line and headers
    max_headers: int = 64  # header lines
    max_connections: int = 16  # open at once


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return self.version == "HTTP/1.1" and "close" not in connection


class MetricsListener:
    """Serves ``render``'s exposition on ``/metrics`` at ``host:port``; ``bind`` then ``serve``.

    ``setting`` names the setting the port came from, for the ConfigError when it can't be bound;
    ``probes`` are further paths answered by a probe (``{"/healthz": health.live, …}``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        render: Render,
        *,
        limits: ListenerLimits | None = None,
        setting: str = "metrics_port",
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._render = render
        self._probes = dict(probes or {})
        self.limits = limits or ListenerLimits()
        self._setting = setting
        self._socket: socket.socket | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.refused: Counter[str] = Counter()  # why connections were refused or dropped

    @property
    def address(self) -> tuple[str, int]:
        """The address listened on (the real port once bound, when 0 was asked for)."""
        if self._socket is None:
            return self._host, self._port
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    def bind(self) -> None:
        """Take the port now, so a port in use is a ConfigError before the service registers."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            where = f"{self._host}:{self._port}"
            raise ConfigError(self._setting, f"cannot listen on {where}: {exc.strerror}") from None
        sock.setblocking(False)
        self._socket = sock

    async def serve(self, shutdown: Shutdown) -> None:
        """Serve until shutdown; then close the listener and every open connection."""
        if self._socket is None:
            self.bind()
        server = await asyncio.start_server(
            self._connection, sock=self._socket, limit=self.limits.max_head
        )
        try:
            await shutdown.wait()
        finally:
            server.close()
            for writer in list(self._open):
                writer.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.limits.max_connections:
            self.refused["connections"] += 1
            with contextlib.suppress(Exception):
                await self._send(writer, 503, b"too many connections\n", close=True)
            writer.close()
            return
        self._open.add(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, TimeoutError) as exc:
            self.refused["send"] += 1
            log.debug("metrics client dropped: %r", exc)
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; True when the connection stays open for another."""
        try:
            async with asyncio.timeout(self.limits.receive_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self.refused["receive_timeout"] += 1
            return False
        except asyncio.IncompleteReadError:
            return False  # the client went away
        except asyncio.LimitOverrunError:
            self.refused["head_size"] += 1
            await self._send(writer, 431, b"request head too large\n", close=True)
            return False
        try:
            request = self._parse(head)
        except _Refused as refused:
            self.refused[f"status_{refused.status}"] += 1
            await self._send(writer, refused.status, b"", close=True)
            return False
        status, body, content_type, extra = await self._answer(request)
        encoding = request.headers.get("accept-encoding", "")
        if status == 200 and len(body) > _GZIP_OVER and "gzip" in encoding.lower():
            body = gzip.compress(body, compresslevel=5)
            extra = [*extra, ("Content-Encoding", "gzip")]
        await self._send(
            writer,
            status,
            body,
            content_type=content_type,
            extra=extra,
            close=not request.keep_alive,
            head_only=request.method == "HEAD",
        )
        return request.keep_alive

    async def _answer(self, request: _Request) -> tuple[int, bytes, str, list[tuple[str, str]]]:
        text = "text/plain; charset=utf-8"
        if request.method not in ("GET", "HEAD"):
            return 405, b"use GET\n", text, [("Allow", "GET, HEAD")]
        if request.path == "/":
            return 200, _INDEX, text, []
        probe = self._probes.get(request.path)
        if probe is not None:
            try:
                ok, why = await probe()
            except Exception:  # a probe that fails says "no", and the log says why
                log.exception("probe %s failed", request.path)
                ok, why = False, "the check failed"
            line = " ".join(why.split()).encode("utf-8", errors="replace")[:1000] + b"\n"
            return (200 if ok else 503), line, text, [("Cache-Control", "no-store")]
        if request.path != "/metrics":
            return 404, b"not found: see /metrics\n", text, []
        try:
            exposition = await self._render(request.headers)
        except Exception:  # never a stack trace to a client; one to the log
            log.exception("rendering /metrics failed")
            return 500, b"rendering the metrics failed\n", text, []
        return 200, exposition.body, exposition.content_type, []

    def _parse(self, head: bytes) -> _Request:
        lines = head.decode("latin-1").split("\r\n")[:-2]
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
            raise _Refused(400)
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refused(505 if version.startswith("HTTP/") else 400)
        if len(lines) - 1 > self.limits.max_headers:
            raise _Refused(431)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                raise _Refused(400)
            headers[name.lower()] = value.strip(" \t")
        length = headers.get("content-length", "0")
        if not length.isdigit():
            raise _Refused(400)
        if int(length) or "transfer-encoding" in headers:
            raise _Refused(413)
        try:
            path = urlsplit(target).path if "://" in target else target.partition("?")[0]
        except ValueError:
            raise _Refused(400) from None
        if not path.startswith("/"):
            raise _Refused(400)
        return _Request(method, path, version, headers)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        extra: list[tuple[str, str]] | None = None,
        close: bool = False,
        head_only: bool = False,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in extra or []),
        ]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(head if head_only else head + body)
        async with asyncio.timeout(self.limits.send_timeout):
            await writer.drain()
