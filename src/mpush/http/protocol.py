"""One HTTP/1.1 connection of hgateway's server: llhttp (through httptools) fed by asyncio, with
the limits of a server that faces the internet.

Each connection is a small state machine fed by the parser. Complete requests go to the handler
one at a time (pipelined ones wait, reading paused), and the handler answers each with
``HttpRequest.answer`` — a callback, not a task per request. An answer is written with one
``write``: status line, headers, body. Every connection reads into one buffer of the server's
(``Shared.read_buffer``): the parser copies what it keeps.

Limits (``Limits``), all enforced here, before a request reaches the handler:

- **receipt deadlines**: the request line and headers must arrive within ``header_timeout`` of
  their first byte (of the connection, for its first request), the body within ``body_timeout``
  of the end of the headers; an idle keep-alive connection is closed after ``keepalive_timeout``;
  an answer the client does not read within ``body_timeout`` closes the connection. A connection
  that sent part of a request gets ``408``, an idle one is just closed. The server's sweep checks
  the deadlines (``Connection.deadline``): the hot path only notes the time.
- **sizes**: a request line over ``max_request_line`` bytes → ``414``; headers over
  ``max_header_bytes`` in all, or more than ``max_headers`` of them → ``431``; a body declared or
  streamed over ``body_limit`` → ``413``. The bytes of an unfinished head are counted read by
  read, so a request too large is refused without being held in memory.

A request the parser refuses gets ``400``. Every refusal ends the connection (its stream cannot be
trusted after it) after a short linger that discards what the client still sends, and is counted
through ``on_refusal``.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools

__all__ = ["Connection", "Handler", "HttpRequest", "Limits", "Shared"]

log = logging.getLogger(__name__)

Pairs = list[tuple[bytes, bytes]]

_STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())
    for status in range(200, 600)
    if status in http.HTTPStatus._value2member_map_
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"connection: close\r\n"
_LINGER = 2.0  # seconds a refused connection is read (and discarded) before it is closed
_READ_SIZE = 32768  # bytes read at once (a head's bytes are counted read by read)

_IDLE, _HEAD, _BODY = 0, 1, 2  # what the parser is reading


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's limits; see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    max_connections: int = 10_000
    max_request_line: int = 8192
    max_header_bytes: int = 16384
    max_headers: int = 100
    body_limit: int = 1_048_576

    @property
    def tick(self) -> float:
        """Seconds between deadline sweeps: a quarter of the shortest timeout, at most 1."""
        return min(1.0, self.header_timeout / 4, self.body_timeout / 4, self.keepalive_timeout / 4)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing: the request is refused with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpRequest:
    """One complete request. ``path`` and ``query`` are raw bytes; header names lower-case."""

    __slots__ = ("_conn", "body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        conn: Connection,
        method: str,
        path: bytes,
        query: bytes,
        headers: Pairs,
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def answer(self, status: int, headers: Pairs, body: bytes) -> None:
        """Send the answer (once): ``headers`` without content-length, date or connection, which
        the server adds; a 204 or 304 goes without body or length, an answer to HEAD without body.
        The status must be 200…599 and the headers valid: the caller checks them."""
        self._conn.send(self, status, headers, body)


Handler = Callable[[HttpRequest], None]


class Shared:
    """What every connection of one server shares: the handler, the limits, the open connections,
    a clock and a Date header refreshed by the server's sweep, the read buffer."""

    def __init__(
        self, handler: Handler, limits: Limits, on_refusal: Callable[[str], None] | None = None
    ) -> None:
        self.handler = handler
        self.limits = limits
        self.on_refusal = on_refusal or (lambda reason: None)
        self.connections: set[Connection] = set()
        self.closing = False  # answers say "connection: close" and connections end after them
        self.clock = time.monotonic()
        self.date_line = b""
        self.read_buffer = memoryview(bytearray(_READ_SIZE))
        self.tick()

    def tick(self) -> None:
        self.clock = time.monotonic()
        self.date_line = b"date: %s\r\n" % email.utils.formatdate(usegmt=True).encode()


class Connection(asyncio.BufferedProtocol):
    """One client connection: parses requests, hands them over one at a time, writes answers."""

    def __init__(self, server: Shared) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.deadline = float("inf")
        self.busy = False  # the handler holds a request of this connection
        self._phase = _IDLE
        self._fresh = True  # no request begun yet
        self._current: HttpRequest | None = None  # the request the handler holds
        self._queue: deque[HttpRequest] = deque()  # complete requests waiting their turn
        self._eof = False  # the client sent all it will
        self._refusal: _Refused | None = None  # sent once the requests before it are answered
        self._reading = True
        self._writing = True
        self._closed = False
        self._lingering = False  # refused: discarding what comes until the client closes
        # the request being read
        self._url = b""
        self._headers: Pairs = []
        self._head_bytes = 0
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect = False
        self._declared: bytes | None = None  # the content-length header

    # asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        if len(server.connections) >= self.limits.max_connections:
            server.on_refusal("connections")
            transport.write(
                _plain(503, "Service Unavailable", server.date_line, b"retry-after: 1\r\n")
            )
            transport.close()
            self._closed = True
            return
        server.connections.add(self)
        self.deadline = server.clock + self.limits.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._queue.clear()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.server.read_buffer[:nbytes])

    def data_received(self, data: memoryview | bytes) -> None:
        if self._closed or self._refusal is not None:
            return  # closing: what still comes is discarded
        if self._phase == _HEAD:  # a head that did not end in the last chunk goes on
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._pause_reading()  # answered as a plain request; what follows is not HTTP
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, _Refused) else _Refused(400, "Bad Request"))
            return
        if self._phase == _HEAD and self._head_bytes > self._head_budget:
            # the end of the headers has still not come: what the parser holds is too large
            self._refuse(_Refused(431, _BIG))

    def eof_received(self) -> bool | None:
        if self._lingering:
            self.close()
            return None
        if self.busy or self._queue:
            self._eof = True
            return True  # keep the connection to answer; closed after the answer
        return None

    def pause_writing(self) -> None:
        self._writing = False
        self.deadline = self.server.clock + self.limits.body_timeout

    def resume_writing(self) -> None:
        self._writing = True
        if self._phase == _IDLE:
            self.deadline = float("inf")
        self._next()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._phase == _IDLE:
            self._phase = _HEAD
            self.deadline = self.server.clock + self.limits.header_timeout
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._expect = False
        self._declared = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_request_line:
            raise _Refused(414, "URI Too Long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.limits.max_header_bytes:
            raise _Refused(431, _BIG)
        if len(self._headers) >= self.limits.max_headers:
            raise _Refused(431, _BIG)
        name = name.lower()
        if name == b"content-length":
            self._declared = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self.deadline = self.server.clock + self.limits.body_timeout
        declared = self._declared
        if declared is not None and int(declared) > self.limits.body_limit:
            raise _Refused(413, "Content Too Large")
        if self._expect and declared not in (None, b"0") and not self.busy and not self._queue:
            assert self.transport is not None
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.body_limit:
            raise _Refused(413, "Content Too Large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        self._fresh = False
        target = self._url
        if target[:1] == b"/" and b"#" not in target:  # origin-form, the usual: split at "?"
            path, _, query = target.partition(b"?")
        else:
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise _Refused(400, "Bad Request") from None
            path, query = url.path or b"", url.query or b""
        parser = self.parser
        request = HttpRequest(
            self,
            parser.get_method().decode("ascii"),
            path,
            query,
            self._headers,
            b"".join(self._body) if self._body else b"",
            parser.should_keep_alive() and not parser.should_upgrade(),
        )
        if self.busy or self._queue:
            self._queue.append(request)
            self._pause_reading()
        else:
            self._dispatch(request)

    # answers

    def send(self, request: HttpRequest, status: int, headers: Pairs, body: bytes) -> None:
        if request is not self._current:
            return  # answered already
        self._current = None
        self.busy = False
        transport = self.transport
        if self._closed or transport is None:
            return
        keep_alive = request.keep_alive and not self.server.closing
        if self._eof and not self._queue:
            keep_alive = False
        parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if status in (204, 304):
            body = b""
        else:
            parts.append(b"content-length: %d\r\n" % len(body))
            if request.method == "HEAD":
                body = b""
        parts.append(self.server.date_line)
        if not keep_alive:
            parts.append(_CLOSE)
        parts += (b"\r\n", body)
        transport.write(b"".join(parts))
        if not keep_alive:
            self.close()
            return
        self._next()

    def _dispatch(self, request: HttpRequest) -> None:
        self.busy = True
        self._current = request
        if self._phase == _IDLE:
            self.deadline = float("inf")  # no receipt in progress: the handler has the time
        try:
            self.server.handler(request)
        except Exception:  # the handler must answer; if it broke, this connection cannot go on
            log.exception("the request handler failed")
            self.close()

    def _next(self) -> None:
        """After an answer: the next pipelined request, a refusal waiting its turn, or idle."""
        if self.busy or self._closed or not self._writing:
            return
        if self._queue:
            self._dispatch(self._queue.popleft())
            return
        if self._refusal is not None:
            self._send_refusal(self._refusal)
            return
        if self._phase == _IDLE:  # else the deadline of the request being read holds
            self.deadline = self.server.clock + self.limits.keepalive_timeout
        self._resume_reading()

    def _refuse(self, refused: _Refused) -> None:
        self.server.on_refusal(str(refused.status))
        self._refusal = refused
        self.parser = httptools.HttpRequestParser(self)  # drop what the old one held
        self._pause_reading()
        if not self.busy and not self._queue:
            self._send_refusal(refused)

    def _send_refusal(self, refused: _Refused) -> None:
        """Send the refusal, then close — after a short linger, reading and discarding what the
        client still sends (a close with unread bytes would reset the connection, and the client
        could lose the answer)."""
        transport = self.transport
        if transport is None or self._closed:
            return
        transport.write(_plain(refused.status, refused.reason, self.server.date_line))
        if not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self._lingering = True
        self.deadline = self.server.clock + _LINGER
        if not self._reading:
            self._reading = True
            transport.resume_reading()

    def expire(self) -> None:
        """Called by the sweep when ``deadline`` has passed."""
        if self._closed:
            return
        if self._lingering:
            self.close()
        elif not self._writing:
            self.server.on_refusal("send_timeout")
            self.close()
        elif self._phase == _IDLE:
            self.server.on_refusal("header_timeout" if self._fresh else "idle_timeout")
            self.close()
        elif not self._reading:
            self.deadline = self.server.clock + self.limits.header_timeout  # paused by us
        else:
            reason = "header_timeout" if self._phase == _HEAD else "body_timeout"
            self.server.on_refusal(reason)
            self._refusal = _Refused(408, "Request Timeout")
            if not self.busy and not self._queue:
                self._send_refusal(self._refusal)
            else:
                self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.server.connections.discard(self)
            if self.transport is not None:
                self.transport.close()

    @property
    def _head_budget(self) -> int:
        """Bytes a head may take on the wire: its request line, headers and their separators."""
        limits = self.limits
        return limits.max_request_line + limits.max_header_bytes + 2 * limits.max_headers + 64

    def _pause_reading(self) -> None:
        if self._reading and self.transport is not None and not self._closed:
            self._reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._reading and self._refusal is None and not self._closed:
            self._reading = True
            assert self.transport is not None
            self.transport.resume_reading()


_BIG = "Request Header Fields Too Large"


def _plain(status: int, reason: str, date_line: bytes, extra: bytes = b"") -> bytes:
    """A short plain-text answer that closes the connection."""
    body = f"{status} {reason}\n".encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"%s%s%s\r\n%s" % (status, reason.encode(), len(body), extra, date_line, _CLOSE, body)
    )
