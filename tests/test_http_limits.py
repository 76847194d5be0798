"""hgateway against slow and greedy clients: receipt timeouts, the connection cap, header limits,
bounded memory — real processes, raw sockets."""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.webparts import NS, start_web


@contextlib.contextmanager
def open_files(soft: int) -> Iterator[None]:
    """This process's soft limit on open files set to ``soft`` for the block (children started in
    it inherit it)."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return sock


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


STALLS = [
    b"",  # nothing at all
    b"GET /echo/sta",  # half a request line
    b"GET /echo/stall HTTP/1.1\r\nHost: x\r\nX-Half: ",  # half a header block
    b"POST /echo/stall HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",  # half a body
]


def test_thousands_of_stalled_connections_while_a_valid_client_is_served(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    with open_files(1024):  # the gateway starts with a soft limit too low for the cap
        web = start_web(
            standalone_env, spawn, "--max-connections", "4000", "--header-timeout", "60",
            "--body-timeout", "60",
        )  # fmt: skip
    gateway = web.gateways[0]
    assert "open files limit raised from 1024" in gateway.log()
    stalled: list[socket.socket] = []
    try:
        for n in range(3000):
            sock = connect(web.ports[0])
            if STALLS[n % 4]:
                sock.sendall(STALLS[n % 4])
            stalled.append(sock)
        began = time.monotonic()
        with httpx.Client(timeout=10) as client:
            for n in range(20):
                got = client.post(web.url("/echo/valid"), content=b"ok %d" % n)
                assert (got.status_code, got.content) == (200, b"ok %d" % n)
        assert time.monotonic() - began < 5, "a valid client is served at once"
        assert gateway.alive
    finally:
        for sock in stalled:
            sock.close()


def test_connections_over_the_cap_are_refused_with_503(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(standalone_env, spawn, "--max-connections", "20", "--header-timeout", "60")
    held = [connect(web.ports[0]) for _ in range(20)]
    try:
        with connect(web.ports[0]) as sock:
            assert read_all(sock).startswith(b"HTTP/1.1 503")
        for sock in held[:5]:
            sock.close()
        wait_until(
            lambda: httpx.get(web.url("/echo/again"), timeout=5).status_code == 200,
            message="served again once connections closed",
        )
    finally:
        for sock in held:
            sock.close()
    wait_until(
        lambda: standalone_env.client.hget(f"{NS}:metrics:hgateway", "refused:connections"),
        message="refusals counted",
    )


def test_each_stall_is_closed_after_its_timeout(standalone_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(
        standalone_env, spawn, "--header-timeout", "1", "--body-timeout", "1.5",
        "--keepalive-timeout", "1",
    )  # fmt: skip
    port = web.ports[0]
    expected = {0: b"", 1: b"HTTP/1.1 408", 2: b"HTTP/1.1 408", 3: b"HTTP/1.1 408"}
    for index, stall in enumerate(STALLS):
        sock = connect(port)
        began = time.monotonic()
        sock.sendall(stall)
        answer = read_all(sock)
        elapsed = time.monotonic() - began
        sock.close()
        assert answer.startswith(expected[index]), (stall, answer)
        low, high = (1.5, 3.5) if index == 3 else (1.0, 3.0)
        assert low * 0.8 <= elapsed <= high, f"{stall!r} closed after {elapsed:.2f}s"
    # A slow client trickling its headers is cut at the header timeout, not at each byte.
    sock = connect(port)
    began = time.monotonic()
    sock.sendall(b"GET /echo/trickle HTTP/1.1\r\n")
    with contextlib.suppress(OSError):
        for _ in range(30):  # a header every 0.1 s, until the gateway answers
            sock.sendall(b"X-A: b\r\n")
            if select.select([sock], [], [], 0.1)[0]:
                break
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - began < 3
    sock.close()
    # An idle keep-alive connection is closed after keepalive_timeout.
    sock = connect(port)
    sock.sendall(b"GET /echo/idle HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    began = time.monotonic()
    rest = read_all(sock)
    assert rest == b""
    assert 0.8 <= time.monotonic() - began <= 3
    sock.close()
    counts = standalone_env.client.hgetall(f"{NS}:metrics:hgateway")
    wait_until(
        lambda: (
            {"refused:header_timeout", "refused:body_timeout", "refused:idle_timeout"}
            <= set(standalone_env.client.hgetall(f"{NS}:metrics:hgateway"))
        ),
        message=lambda: f"each kind counted: {counts}",
    )


def test_oversized_headers_get_431_414_and_the_gateway_memory_stays_bounded(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(standalone_env, spawn)
    port = web.ports[0]
    gateway = web.gateways[0]

    def ask(request: bytes) -> bytes:
        sock = connect(port)
        try:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(request)
            return read_all(sock)
        finally:
            sock.close()

    big = b"GET /echo/big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17_000 + b"\r\n\r\n"
    assert ask(big).startswith(b"HTTP/1.1 431")
    many = b"GET /echo/many HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101))
    assert ask(many + b"\r\n").startswith(b"HTTP/1.1 431")
    long_line = b"GET /echo/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert ask(long_line).startswith(b"HTTP/1.1 414")
    declared = b"POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
    assert ask(declared).startswith(b"HTTP/1.1 413")
    assert standalone_env.client.llen("{w}:echo") == 0, "nothing refused reached Redis"
    # A stream of requests whose headers never end: each is refused once past the limit.
    before = rss_kib(gateway.pid)
    endless = b"GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"e" * 1_048_576
    socks = []
    for _ in range(200):  # 200 MiB offered at once
        sock = connect(port)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError, TimeoutError):
            sock.settimeout(5)
            sock.sendall(endless)
        socks.append(sock)
    for sock in socks:
        with contextlib.suppress(OSError):
            assert read_all(sock).startswith(b"HTTP/1.1 431")
        sock.close()
    grown = rss_kib(gateway.pid) - before
    assert grown < 40 * 1024, f"the gateway grew by {grown} KiB"
    assert httpx.get(web.url("/echo/after"), timeout=5).status_code == 200
    assert gateway.alive
    assert "Traceback" not in gateway.log()
