"""What handlers send back: answers a client must not get (502, or the body dropped), and request
messages whose ``reply`` names a key that is not a reply list — real processes, real Redis."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.webparts import ECHO, NS, RAW, start_web


class Conn:
    """One keep-alive HTTP/1.1 connection, read by hand (to see exactly what the gateway sends)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, method: str, path: str) -> None:
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

    def receive(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("the gateway closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


BAD_ANSWERS = [
    ("status 101", {"status": 101}),
    ("status 100", {"status": 100}),
    ("status 199", {"status": 199}),
    ("status 600", {"status": 600}),
    ("empty header name", {"headers": {"": "x"}}),
    ("header name with a space", {"headers": {"bad name": "x"}}),
    ("header name with a colon", {"headers": {"a:b": "x"}}),
    ("CR LF in a value", {"headers": {"x-a": "1\r\nx-injected: 2"}}),
    ("LF in a value", {"headers": {"x-a": "1\nx-injected: 2"}}),
    ("NUL in a value", {"headers": {"x-a": "1\x00"}}),
    ("CR LF in a repeated value", {"headers": {"set-cookie": ["a=1", "b=2\r\n\r\nbody"]}}),
    ("a value beyond Latin-1", {"headers": {"x-a": "☃"}}),
]


def answer_raw(env: RedisEnv, **fields: object) -> None:
    """Be the handler of /raw: take the request, answer it with ``fields``."""
    raw = wait_until(lambda: env.client.rpop(RAW), message="the request on the raw queue")
    request = json.loads(raw)
    document = {"id": request["id"], "status": 200, "headers": {}, "body": "handler body", **fields}
    env.client.lpush(request["reply"], json.dumps(document))


def test_invalid_answers_become_502_and_the_connection_serves_the_next_request(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(redis_env, spawn)
    conn = Conn(web.ports[0])
    try:
        for case, fields in BAD_ANSWERS:
            conn.send("GET", "/raw")
            answer_raw(redis_env, **fields)
            status, headers, body = conn.receive()
            assert status == 502, case
            assert body == b"502 Bad Gateway\n", case
            assert "x-injected" not in headers, case
            conn.send("GET", "/echo/next")  # the same connection goes on
            assert conn.receive()[0] == 200, case
    finally:
        conn.close()
    log = web.gateways[0].log()
    assert log.count("502 for") == len(BAD_ANSWERS), "one line per invalid answer"
    assert "Traceback" not in log

    def counted() -> int:
        found = redis_env.client.hgetall(f"{NS}:metrics:hgateway")
        return int(found.get("invalid_answer", 0)) + int(found.get("malformed", 0))

    wait_until(lambda: counted() == len(BAD_ANSWERS), message="each counted")


@pytest.mark.parametrize("status", [204, 304])
def test_a_body_on_204_or_304_is_dropped(
    standalone_env: RedisEnv, spawn: Spawner, status: int
) -> None:
    web = start_web(standalone_env, spawn)
    conn = Conn(web.ports[0])
    try:
        conn.send("GET", "/raw")
        answer_raw(standalone_env, status=status, headers={"etag": '"v1"'})
        got, headers, _ = conn.receive()
        assert (got, headers["etag"]) == (status, '"v1"')
        assert "content-length" not in headers
        conn.send("GET", "/echo/next")  # nothing of the body was sent: the next answer parses
        got, _, body = conn.receive()
        assert (got, body) == (200, b"")
    finally:
        conn.close()
    log = web.gateways[0].log()
    assert f"the body of a {status} answer to GET /raw dropped" in log
    assert "Traceback" not in log
    wait_until(
        lambda: standalone_env.client.hget(f"{NS}:metrics:hgateway", "body_dropped") == "1",
        message="counted",
    )


def test_an_answer_to_head_goes_without_its_body(standalone_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(standalone_env, spawn)
    conn = Conn(web.ports[0])
    try:
        conn.send("HEAD", "/raw")
        answer_raw(standalone_env)
        got, headers, _ = conn.receive("HEAD")
        assert (got, headers["content-length"]) == (200, str(len(b"handler body")))
        conn.send("GET", "/echo/next")
        got, _, body = conn.receive()
        assert (got, body) == (200, b"")
    finally:
        conn.close()


def test_a_reply_key_that_is_not_a_reply_list_is_left_untouched(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(redis_env, spawn)
    client = redis_env.client
    client.hset("{w}:victim:hash", "field", "value")
    client.set("{w}:victim:string", "value", ex=1000)
    client.sadd("{w}:victim:set", "member")
    client.lpush("{w}:victim:queue", "job")  # a list without an expiry: a queue, not a reply list
    victims = ["{w}:victim:hash", "{w}:victim:string", "{w}:victim:set", "{w}:victim:queue"]
    before = {key: (client.type(key), client.dump(key)) for key in victims}
    now = time.time()

    def request(request_id: str, reply: str) -> str:
        return json.dumps({
            "v": 1, "id": request_id, "method": "GET", "url": "/echo/x", "path": "/echo/x",
            "query": "", "headers": {}, "ts": now, "deadline": now + 30, "reply": reply,
        })  # fmt: skip

    for n, key in enumerate(victims):
        client.lpush(ECHO, request(f"attack-{n}", key))
    client.lpush(ECHO, request("bad-shape", "a key with spaces"))
    client.lpush(ECHO, request("fine", "{w}:test:reply"))  # a batch after them all: handled last
    wait_until(lambda: client.llen("{w}:test:reply") == 1, message="the legitimate answer")
    assert 0 < client.ttl("{w}:test:reply") <= 60
    after = {key: (client.type(key), client.dump(key)) for key in victims}
    assert after == before
    assert [client.ttl(key) for key in victims if key != "{w}:victim:string"] == [-1, -1, -1]
    assert 900 < client.ttl("{w}:victim:string") <= 1000, "its expiry untouched"
    assert client.llen(f"{ECHO}:bad") == 1, "the message with a malformed reply is set aside"
    handler = web.handlers[0]
    handler.wait_for_log("is not a reply list")
    assert "Traceback" not in handler.log()
