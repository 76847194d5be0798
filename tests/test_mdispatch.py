"""mdispatch: responses that carry only a request id reach the gateway that waits for them."""

from __future__ import annotations

import json
import threading
import time

import httpx

from mpush.status.histogram import BUCKETS
from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.webparts import NS, RAW, Web

SHARED = "{w}:res"  # the shared response list
PREFIX = "{w}:track"


def _metric(env: RedisEnv, name: str) -> dict[str, str]:
    return dict(env.client.hgetall(f"{NS}:metrics:{name}"))


def test_response_by_id_only_reaches_its_gateway(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = Web(redis_env, spawn)
    web.gateway("--timeout", "3")
    web.gateway("--timeout", "3")
    web.router("--track")  # registrations under the default <ns>:track
    web.handler("echo", "{w}:echo")
    dispatcher = spawn(
        "mdispatch", *web.common(), "--in", SHARED, "--metrics-interval", "0.2",
    )  # fmt: skip
    web.wait_started()
    dispatcher.wait_for_log("mdispatch started")
    web.wait_serving()

    answers: dict[int, httpx.Response] = {}

    def ask(gateway: int) -> None:
        answers[gateway] = httpx.get(web.url(f"/raw?g={gateway}", gateway), timeout=10)

    threads = [threading.Thread(target=ask, args=(g,)) for g in (0, 1)]
    for thread in threads:
        thread.start()
    for _ in threads:  # the test is a worker that knows only the request id
        raw = wait_until(lambda: redis_env.client.rpop(RAW), message="a request to answer")
        request = json.loads(raw)
        assert redis_env.client.exists(f"{NS}:track:{request['id']}")
        assert request["reply"].startswith(f"{NS}:reply:")
        answer = {"id": request["id"], "status": 200, "body": f"for {request['url']}"}
        redis_env.client.lpush(SHARED, json.dumps(answer))
    for thread in threads:
        thread.join()
    assert answers[0].text == "for /raw?g=0"
    assert answers[1].text == "for /raw?g=1"
    wait_until(lambda: _metric(redis_env, "mdispatch").get("forwarded") == "2")
    route = _metric(redis_env, "mdispatch:route:raw")
    assert route["count"] == "2"
    assert sum(int(v) for k, v in route.items() if k in BUCKETS) == 2


def test_late_and_unknown_responses_are_dropped_and_counted(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = Web(redis_env, spawn)
    web.gateway("--timeout", "1")
    web.router("--track", "--track-prefix", PREFIX)
    web.handler("echo", "{w}:echo")
    dispatcher = spawn(
        "mdispatch", *web.common(), "--in", SHARED, "--track-prefix", PREFIX,
        "--metrics-interval", "0.2",
    )  # fmt: skip
    web.wait_started()
    dispatcher.wait_for_log("mdispatch started")
    web.wait_serving()
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(httpx.get(web.url("/raw"), timeout=9)))
    thread.start()
    request = json.loads(wait_until(lambda: redis_env.client.rpop(RAW)))
    thread.join()
    assert answers[0].status_code == 504
    wait_until(lambda: time.time() > request["deadline"])
    redis_env.client.lpush(SHARED, json.dumps({"id": request["id"], "status": 200}))
    redis_env.client.lpush(SHARED, json.dumps({"id": "no-such-request", "status": 200}))
    redis_env.client.lpush(SHARED, "not json at all")
    wait_until(
        lambda: (
            (m := _metric(redis_env, "mdispatch")).get("late") == "1"
            and m.get("unknown") == "1"
            and m.get("malformed") == "1"
        ),
        message=lambda: f"counters {_metric(redis_env, 'mdispatch')}",
    )
    assert redis_env.client.lrange(f"{SHARED}:bad", 0, -1) == ["not json at all"]
    assert redis_env.client.llen(request["reply"]) == 0, "nothing forwarded"
    assert dispatcher.alive


def test_generic_correlator_outside_http(redis_env: RedisEnv, spawn: Spawner) -> None:
    """Requests of any kind: mdispatch registers and forwards them; workers answer by id."""
    dispatcher = spawn(
        "mdispatch", "--redis", redis_env.url, "--service-namespace", NS, "--in", "{w}:answers",
        "--requests", "{w}:jobs", "--forward", "{w}:work", "--track-prefix", PREFIX,
        "--pop-timeout", "0.5",
    )  # fmt: skip
    dispatcher.wait_for_log("mdispatch started")
    deadline = time.time() + 30
    for n in range(3):
        job = {"id": f"job{n}", "reply": f"{{w}}:client{n % 2}", "deadline": deadline, "n": n}
        redis_env.client.lpush("{w}:jobs", json.dumps(job))
    for _ in range(3):
        work = json.loads(wait_until(lambda: redis_env.client.rpop("{w}:work")))
        redis_env.client.lpush("{w}:answers", json.dumps({"id": work["id"], "n2": work["n"] * 2}))
    wait_until(lambda: redis_env.client.llen("{w}:client0") == 2)
    wait_until(lambda: redis_env.client.llen("{w}:client1") == 1)
    got = [json.loads(m) for m in redis_env.client.lrange("{w}:client0", 0, -1)]
    assert sorted(m["id"] for m in got) == ["job0", "job2"]
    assert json.loads(redis_env.client.lpop("{w}:client1")) == {"id": "job1", "n2": 2}
