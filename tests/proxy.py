"""A TCP proxy for fault injection: forwards to a local port, or *stalls*.

Stalled, it goes on accepting connections and reading what clients send, but forwards nothing in
either direction: to a client the peer looks alive but silent, the failure a timeout must catch
(a refused connection is the easy case). On ``resume`` everything it held is forwarded, late — so
a write the client already gave up on reaches the server after all.

One thread runs a select loop over non-blocking sockets; ``close`` stops it and closes them all.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_eof: bool = False
    upstream_eof: bool = False
    upstream_shut: bool = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class StallingProxy:
    """127.0.0.1:<port> → 127.0.0.1:<upstream_port>, switchable between forwarding and stalling."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._thread = threading.Thread(target=self._loop, name="stalling-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> StallingProxy:
        self._thread.start()
        return self

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def held_bytes(self) -> int:
        """Bytes clients sent that are waiting to be forwarded."""
        with self._lock:
            return sum(len(pair.to_upstream) for pair in self._pairs)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        with self._lock:
            for pair in self._pairs:
                pair.close()
            self._pairs.clear()
        self._listener.close()

    def _loop(self) -> None:
        while not self._closing.is_set():
            flowing = self._flowing.is_set()
            with self._lock:
                pairs = list(self._pairs)
            readers: list[socket.socket] = [self._listener]
            writers: list[socket.socket] = []
            for pair in pairs:
                if not pair.client_eof:
                    readers.append(pair.client)
                if flowing and not pair.upstream_eof:
                    readers.append(pair.upstream)
                if flowing and pair.to_upstream:
                    writers.append(pair.upstream)
                if flowing and pair.to_client and not pair.client_eof:
                    writers.append(pair.client)
            readable, writable, _ = select.select(readers, writers, [], 0.02)
            if self._listener in readable:
                self._accept()
            for pair in pairs:
                self._pump(pair, readable, writable, flowing)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:  # the server is down: refuse, as it would
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        with self._lock:
            self._pairs.append(_Pair(client, upstream))

    def _pump(
        self,
        pair: _Pair,
        readable: list[socket.socket],
        writable: list[socket.socket],
        flowing: bool,
    ) -> None:
        if pair.client in readable:
            data = _recv(pair.client)
            with self._lock:
                if data:
                    pair.to_upstream += data
                elif data is not None:
                    pair.client_eof = True
        if pair.upstream in readable:
            data = _recv(pair.upstream)
            if data:
                pair.to_client += data
            elif data is not None:
                pair.upstream_eof = True
        if flowing and pair.upstream in writable and pair.to_upstream:
            with self._lock:
                sent = _send(pair.upstream, pair.to_upstream)
                del pair.to_upstream[:sent]
        if flowing and pair.client in writable and pair.to_client:
            sent = _send(pair.client, pair.to_client)
            del pair.to_client[:sent]
        if pair.client_eof:
            pair.to_client.clear()  # nobody left to read it
        if pair.client_eof and not pair.to_upstream and flowing and not pair.upstream_shut:
            # The client left: let the server finish what it was sent, then see EOF.
            with contextlib.suppress(OSError):
                pair.upstream.shutdown(socket.SHUT_WR)
            pair.upstream_shut = True
        if pair.upstream_eof and not pair.to_client:
            pair.close()
            with self._lock:
                self._pairs.remove(pair)


def _recv(sock: socket.socket) -> bytes | None:
    """Data, b"" at EOF (or a broken connection), None when there is nothing to read now."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytearray) -> int:
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
    except OSError:
        return len(data)  # the peer is gone: drop what was meant for it
