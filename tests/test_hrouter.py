"""hrouter live routes and outages, with real processes on real Redis (standalone and Cluster)."""

from __future__ import annotations

import httpx

from mpush.status.histogram import BUCKETS
from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli, wait_until
from tests.webparts import NS, start_web


def test_route_change_in_redis_applied_live_and_bad_regex_refused(
    redis_env: RedisEnv, spawn: Spawner
) -> None:
    web = start_web(redis_env, spawn)
    assert httpx.get(web.url("/fresh/zoe"), timeout=5).status_code == 404
    routes = f"{NS}:routes"
    redis_env.client.rpush(routes, "GET ^/fresh/(?P<who>[a-z]+)$ {w}:echo fresh")
    fresh = wait_until(
        lambda: (r := httpx.get(web.url("/fresh/zoe"), timeout=5)).status_code == 200 and r,
        message="the live route applied",
    )
    assert fresh.headers["x-route"] == "fresh"
    web.routers[0].wait_for_log(f"routes from {routes} applied: 1 live")

    redis_env.client.rpush(routes, "GET ^/broken/(unclosed {w}:echo broken")
    web.routers[0].wait_for_log("refused, the 1 routes in use stay")
    assert "invalid regex" in web.routers[0].log()
    assert httpx.get(web.url("/fresh/zoe"), timeout=5).status_code == 200, "old routes kept"

    redis_env.client.delete(routes)
    wait_until(
        lambda: httpx.get(web.url("/fresh/zoe"), timeout=5).status_code == 404,
        message="the live route removed",
    )
    assert httpx.get(web.url("/echo/still"), timeout=5).status_code == 200, "configured routes"
    assert web.routers[0].alive


def test_per_route_metrics(redis_env: RedisEnv, spawn: Spawner) -> None:
    web = start_web(redis_env, spawn)
    for _ in range(5):
        assert httpx.get(web.url("/echo/m"), timeout=5).status_code == 200
    httpx.get(web.url("/missing"), timeout=5)
    metric = f"{NS}:metrics:hrouter:route:echo"
    wait_until(lambda: int(redis_env.client.hget(metric, "count") or 0) >= 6)  # + the probe
    histo = {k: int(v) for k, v in redis_env.client.hgetall(metric).items() if k in BUCKETS}
    assert sum(histo.values()) == int(redis_env.client.hget(metric, "count"))
    wait_until(lambda: redis_env.client.hget(f"{NS}:metrics:hrouter", "notfound") == "1")


def test_bad_route_flag_is_a_clear_config_error(redis_env: RedisEnv) -> None:
    result = run_cli("hrouter", "--redis", redis_env.url, "--route", "GET ^/(x {w}:q")
    assert result.returncode == 2
    assert "invalid regex" in result.stderr
    assert "Traceback" not in result.stderr
