"""hgateway → hrouter → handler → back, as real processes on real Redis (standalone and Cluster)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli, wait_until
from tests.webparts import ECHO, NS, QUEUE, RAW, SLOW, Web, start_web


def test_get_post_binary_and_large_headers(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(redis_env, spawn)
    with httpx.Client(timeout=10) as client:
        got = client.get(web.url("/echo/ann?x=1&y=%20"), headers={"x-client": "c1"})
        assert got.status_code == 200
        assert got.headers["x-method"] == "GET"
        assert got.headers["x-url"] == "/echo/ann?x=1&y=%20"
        assert got.headers["x-route"] == "echo"
        assert json.loads(got.headers["x-params"]) == {"who": "ann"}
        assert got.headers["x-client"] == "c1"
        assert got.headers.get_list("set-cookie") == ["a=1", "b=2"]

        binary = bytes(range(256)) * 64  # not UTF-8: travels as base64
        posted = client.post(
            web.url("/echo/bob"), content=binary, headers={"content-type": "application/x-bin"}
        )
        assert posted.status_code == 200
        assert posted.content == binary
        assert posted.headers["content-type"] == "application/x-bin"
        assert posted.headers["x-method"] == "POST"

        text = "naïve ☃ text\n".encode()
        assert client.post(web.url("/echo/cy"), content=text).content == text

        big = "b" * 12_000  # within max_header_bytes (16 KiB)
        large = client.get(web.url("/echo/dee"), headers={"x-big": big})
        assert large.status_code == 200
        assert large.headers["x-big-length"] == str(len(big))

        assert client.get(web.url("/nowhere")).status_code == 404
        assert client.delete(web.url("/echo/ann")).status_code == 404  # the route is GET,POST


def test_two_gateways_two_handlers_no_cross_talk(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = Web(redis_env, spawn)
    web.gateway()
    web.gateway()
    web.router()
    web.handler("echo", "{w}:echo")
    web.handler("echo", "{w}:echo")
    web.wait_started()
    web.wait_serving()

    def client_run(index: int) -> tuple[int, set[str]]:
        ok, pids = 0, set()
        with httpx.Client(timeout=15) as client:
            for n in range(40):
                token = f"client{index}-request{n}-" + "x" * (n * 7)
                got = client.post(
                    web.url(f"/echo/load?i={index}", gateway=index % 2),
                    content=token.encode(),
                    headers={"x-client": token[:40]},
                )
                assert got.status_code == 200, got.text
                assert got.content == token.encode(), "a response reached the wrong client"
                assert got.headers["x-client"] == token[:40]
                pids.add(got.headers["x-pid"])
                ok += 1
        return ok, pids

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(client_run, range(8)))
    assert sum(ok for ok, _ in results) == 320
    pids = set().union(*(p for _, p in results))
    assert len(pids) == 2, "both handler replicas served"


def test_handler_killed_mid_request_gives_504_and_gateway_stays_healthy(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = Web(redis_env, spawn)
    web.gateway("--timeout", "2")
    web.router()
    web.handler("echo", "{w}:echo")
    slow = web.handler("slow", SLOW)
    web.wait_started()
    web.wait_serving()
    answers: list[httpx.Response] = []
    began = time.monotonic()
    thread = threading.Thread(
        target=lambda: answers.append(httpx.get(web.url("/slow?sleep=30"), timeout=10))
    )
    thread.start()
    wait_until(
        lambda: _metric(redis_env, "hrouter:route:slow") and redis_env.client.llen(SLOW) == 0,
        message="the slow handler holding the request",
    )
    slow.kill9()  # it holds the request now
    thread.join()
    elapsed = time.monotonic() - began
    assert answers[0].status_code == 504
    assert 1.8 <= elapsed < 4.0, f"504 at the deadline (2 s), not after {elapsed:.1f}s"
    assert "Traceback" not in answers[0].text
    assert web.gateways[0].alive
    assert httpx.get(web.url("/echo/after"), timeout=5).status_code == 200
    web.handler("slow", SLOW).wait_for_log("handler started")
    assert httpx.get(web.url("/slow?sleep=0.1"), timeout=5).text == "slept 0.1\n"


def _metric(env: RedisEnv, name: str) -> dict[str, str]:
    return dict(env.client.hgetall(f"{NS}:metrics:{name}"))


def test_malformed_response_is_counted_and_answered_502(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(redis_env, spawn)
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(httpx.get(web.url("/raw"), timeout=10)))
    thread.start()
    # The test is the handler: take the request, answer with a broken document.
    raw = wait_until(lambda: redis_env.client.rpop(RAW), message="the request on the raw queue")
    request = json.loads(raw)
    assert request["route"] == "raw"
    assert request["deadline"] > time.time()
    broken = '{"id": "' + request["id"] + '", "status": "two hundred"'  # not even closed
    redis_env.client.lpush(request["reply"], broken)
    thread.join()
    assert answers[0].status_code == 502
    assert "Traceback" not in answers[0].text
    wait_until(lambda: _metric(redis_env, "hgateway").get("malformed") == "1")
    assert redis_env.client.llen(f"{request['reply']}:bad") == 1
    # A response to an id nobody waits for is dropped and counted.
    redis_env.client.lpush(request["reply"], json.dumps({"id": "nobody-1", "status": 200}))
    wait_until(lambda: _metric(redis_env, "hgateway").get("late") == "1")
    assert httpx.get(web.url("/echo/fine"), timeout=5).status_code == 200


def test_handler_error_is_500_without_details(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(redis_env, spawn)
    failing = web.handler("fails", "{w}:fails")
    failing.wait_for_log("handler started")
    got = httpx.get(web.url("/fails"), timeout=10)
    assert got.status_code == 500
    assert "secret" not in got.text
    assert "Traceback" not in got.text
    failing.wait_for_log("a handler bug with a secret")  # the details go to the log


def test_gateway_answers_413_400_and_503(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(redis_env, spawn, "--body-limit", "1000")
    with httpx.Client(timeout=10) as client:
        assert client.post(web.url("/echo/ok"), content=b"x" * 1000).status_code == 200
        too_big = client.post(web.url("/echo/big"), content=b"x" * 1001)
        assert too_big.status_code == 413

        def chunks() -> object:
            yield b"x" * 600
            yield b"x" * 600

        assert client.post(web.url("/echo/chunked"), content=chunks()).status_code == 413
    with socket.create_connection(("127.0.0.1", web.ports[0]), timeout=5) as sock:
        sock.sendall(b"GARBAGE \x00\x01 nonsense\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 400")
    assert web.gateways[0].alive
    # No live consumer of the request queue: 503 with Retry-After.
    web.routers[0].signal(15)
    web.routers[0].wait()
    unavailable = wait_until(
        lambda: (r := httpx.get(web.url("/echo/none"), timeout=10)).status_code == 503 and r
    )
    assert unavailable.headers["retry-after"] == "1"


def test_queue_over_its_limit_gives_503(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = Web(redis_env, spawn)
    web.gateway("--queue-limit", "3", "--no-require-consumer", "--timeout", "1")
    web.wait_started()
    redis_env.client.lpush(QUEUE, *[f"old{i}" for i in range(4)])  # nobody consumes it
    got = wait_until(lambda: (r := httpx.get(web.url("/x"), timeout=5)).status_code == 503 and r)
    assert got.headers["retry-after"] == "1"
    length = redis_env.client.llen(QUEUE)
    assert httpx.get(web.url("/y"), timeout=5).status_code == 503
    assert redis_env.client.llen(QUEUE) == length, "a rejected request is not queued"


def test_config_discovered_from_redis_hash(redis_env: RedisEnv, spawn: Spawner) -> None:
    from mpush.orchestration.redisserver import free_port

    port = free_port()
    redis_env.client.hset(
        f"{NS}:config",
        mapping={"port": str(port), "queue": QUEUE, "timeout": "1.5", "body_limit": "10"},
    )
    proc = spawn(
        "hgateway", "--redis", redis_env.url, "--service-namespace", NS, "--timeout", "1",
        "--no-require-consumer",
    )  # fmt: skip
    proc.wait_for_log(f"listening on http://127.0.0.1:{port}, requests to {QUEUE}")
    began = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{port}/x", timeout=5).status_code == 504
    assert time.monotonic() - began < 1.4, "the --timeout flag overrides the Redis hash"
    assert httpx.post(f"http://127.0.0.1:{port}/x", content=b"x" * 11).status_code == 413
    redis_env.client.hset(f"{NS}:config", "timeout", "soon")
    result = run_cli("hgateway", "--redis", redis_env.url, "--service-namespace", NS)
    assert result.returncode == 2
    assert f"{NS}:config timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_gateways_of_one_host_share_a_port_with_reuse_port(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    """--reuse-port: two gateways listen on one port; when one stops, the other still answers.
    Without it the second one cannot listen: one line naming the port, exit 2."""
    web = Web(redis_env, spawn)
    first = web.gateway("--reuse-port")
    port = web.ports[0]
    second = web.gateway("--reuse-port", port=port)
    web.router()
    web.handler("echo", ECHO)
    web.wait_started()
    web.wait_serving()
    assert first.alive
    assert second.alive
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    for _ in range(20):  # every new connection lands on the gateway still listening
        assert httpx.get(web.url("/echo/ann"), timeout=5).status_code == 200
    lone = web.gateway(port=port)
    assert lone.wait() == 2
    assert f"cannot listen on 127.0.0.1:{port}" in lone.log()


def test_graceful_shutdown_finishes_requests_in_flight(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(redis_env, spawn)
    web.handler("slow", SLOW).wait_for_log("handler started")
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(httpx.get(web.url("/slow?sleep=1"), timeout=10))
    )
    thread.start()
    wait_until(lambda: _metric(redis_env, "hrouter:route:slow"), message="the request routed")
    web.gateways[0].signal(15)
    thread.join()
    assert answers[0].status_code == 200
    assert answers[0].text == "slept 1.0\n"
    assert web.gateways[0].wait() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(web.url("/echo/gone"), timeout=2)


@pytest.mark.slow
def test_redis_restart_mid_load_gateway_recovers_by_itself(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(redis_env, spawn, "--timeout", "2")
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    statuses.append(client.get(web.url("/echo/load")).status_code)
                except httpx.HTTPError:
                    statuses.append(0)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: statuses.count(200) >= 50, message="load before the outage")
    server = redis_env.server_for(QUEUE)
    server.stop()
    outage_end = time.monotonic() + 3.0
    wait_until(lambda: time.monotonic() >= outage_end, timeout=10, interval=0.2)
    during = len(statuses)
    server.start()
    redis_env.wait_healthy()
    after = len(statuses)
    wait_until(
        lambda: statuses[after:].count(200) >= 50,
        timeout=30,
        message=lambda: f"200s after the restart; statuses {statuses[-20:]}\n{web.logs()}",
    )
    stop.set()
    for thread in threads:
        thread.join()
    assert set(statuses[:during]) <= {200, 503, 504}, "answers during the outage, no hangs"
    assert 0 not in statuses, "no connection was dropped"
    for proc in [*web.gateways, *web.routers, *web.handlers]:
        assert proc.alive
    gateway_log = web.gateways[0].log()
    assert "unavailable" in gateway_log, "the outage was seen (and logged)"
    assert "back after" in gateway_log
    assert "Traceback" not in gateway_log


def test_the_gateway_routes_by_itself_and_passes_the_rest_to_its_queue(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = Web(redis_env, spawn)
    web.gateway("--route", f"GET,POST ^/echo/(?P<who>[a-z]+)$ {ECHO} echo", "--timeout", "1")
    web.handler("echo", ECHO)
    web.wait_started()
    web.wait_serving()
    got = httpx.get(web.url("/echo/ann?x=1"), timeout=10)
    assert got.status_code == 200
    assert (got.headers["x-route"], json.loads(got.headers["x-params"])) == ("echo", {"who": "ann"})
    assert redis_env.client.hget(f"{NS}:metrics:hrouter", "count") is None, "no hrouter on the way"
    # What no route of the gateway takes goes to its queue: nothing consumes it yet (503) ...
    wait_until(  # once the gateway has looked at the registry
        lambda: httpx.get(web.url("/slow?sleep=0"), timeout=10).status_code == 503,
        message="503: nothing consumes the gateway's queue",
    )
    # ... until an hrouter does, with routes of its own.
    web.router()
    web.handler("slow", SLOW)
    web.wait_started()
    wait_until(
        lambda: httpx.get(web.url("/slow?sleep=0"), timeout=10).text == "slept 0.0\n",
        message="the rest routed by hrouter",
    )
