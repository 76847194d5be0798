"""`mpush demo`: the distributed web server end to end, as `make demo` runs it.

One demo (private redis-server, eight supervised services) serves the tests of this module in
order: the site, a kill -9 of one of its processes, a headless chromium, and finally SIGTERM.
The demo starts its own standalone redis-server, as `make demo` does, so there is no Cluster
variant here; the services it runs are tested on Cluster in their own modules.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mpush.demo.web import SITE
from mpush.orchestration.redisserver import free_port
from tests.conftest import RedisEnv
from tests.helpers import run_cli, wait_until

NS = "demo:web"
SERVICES = {"hgateway", "hrouter", "hrender", "hfiler", "rquery", "mthrottle", "mpush", "lpush"}


@dataclass
class RunningDemo:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    redis_url: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.url(path), headers=headers, timeout=10)

    def registrations(self) -> list[dict[str, str]]:
        """Every registration in the registry, oldest first (a killed instance's until it
        expires)."""
        client: Any = redis.Redis.from_url(self.redis_url, decode_responses=True)
        try:
            ids = reversed(client.lrange(f"{NS}:service:ids", 0, -1))
            return [e for e in (client.hgetall(f"{NS}:service:{i}") for i in ids) if e]
        finally:
            client.close()

    def registry(self) -> dict[str, dict[str, str]]:
        """The newest registration of each service."""
        return {entry["service"]: entry for entry in self.registrations()}


def start_demo(tmp: Path, *args: str) -> RunningDemo:
    log_path = tmp / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mpush", "demo", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return RunningDemo(process, log_path)


def wait_serving(demo: RunningDemo) -> None:
    def serving() -> bool:
        if demo.process.poll() is not None:
            raise AssertionError(f"the demo exited ({demo.process.returncode}):\n{demo.output()}")
        return "serving http://" in demo.output()

    wait_until(serving, timeout=90, interval=0.1, message=lambda: "the URL:\n" + demo.output())
    text = demo.output()
    demo.port = int(re.search(r"serving http://localhost:(\d+)/", text).group(1))  # type: ignore[union-attr]
    demo.redis_url = re.search(r"redis +(redis://\S+)", text).group(1)  # type: ignore[union-attr]
    demo.pids = {m[0]: int(m[1]) for m in re.findall(r"^  (\w+) +pid (\d+)", text, re.M)}


def stop(demo: RunningDemo) -> int | None:
    if demo.process.poll() is None:
        demo.process.send_signal(signal.SIGTERM)
        try:
            demo.process.wait(30)
        except subprocess.TimeoutExpired:
            demo.process.kill()
            demo.process.wait()
    return demo.process.returncode


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    running = start_demo(tmp_path_factory.mktemp("demo"), "--port", "0")
    try:
        wait_serving(running)
        yield running
    finally:
        stop(running)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_the_site_serves_a_page_styles_an_image_and_the_registry(demo: RunningDemo) -> None:
    assert set(demo.pids) == SERVICES
    home = demo.get("/")
    assert home.status_code == 200, demo.output()
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    page = home.text
    assert 'href="/static/site.css"' in page
    assert 'src="/static/logo.png"' in page
    assert 'data-namespace="demo:web"' in page
    assert "GET /</code>" in page  # the request itself, rendered by hrender
    assert f"{NS}:service:" in page  # the registry's ids, read from Redis at render time

    css = demo.get("/static/site.css", **{"accept-encoding": "gzip"})
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert css.headers["content-encoding"] == "gzip"
    assert css.text == (SITE / "static" / "site.css").read_text()
    logo = demo.get("/static/logo.png")
    assert logo.status_code == 200
    assert logo.headers["content-type"] == "image/png"
    assert logo.content == (SITE / "static" / "logo.png").read_bytes()

    ids = demo.get(f"/data/lrange/{NS}:service:ids/0/-1").json()
    services = {demo.get(f"/data/hgetall/{NS}:service:{i}").json().get("service") for i in ids}
    assert services >= SERVICES
    assert demo.get(f"/data/get/{NS}:site").status_code == 403  # outside rquery's prefixes
    wait_until(
        lambda: f"{NS}:metrics:hgateway" in demo.get(f"/data/scan/{NS}:metrics:").json(),
        message="the gateway's metrics (flushed every second)",
    )

    def moving() -> bool:  # the live ring keeps the metrics going
        return demo.get(f"/data/llen/{NS}:%7Blive%7D:archive").json() > 0

    wait_until(moving, timeout=15, message="the live ring to move messages")


def test_a_killed_process_is_restarted_and_the_site_keeps_serving(demo: RunningDemo) -> None:
    old = int(demo.registry()["hfiler"]["pid"])
    os.kill(old, signal.SIGKILL)
    assert demo.get("/").status_code == 200  # the rest of the site is unaffected
    wait_until(
        lambda: "hfiler restarted" in demo.output(),
        timeout=30,
        message=lambda: "the restart:\n" + demo.output(),
    )
    wait_until(
        lambda: demo.registry().get("hfiler", {}).get("pid") not in (None, str(old)),
        timeout=30,
        message="a new hfiler registration",
    )
    new = int(demo.registry()["hfiler"]["pid"])
    assert alive(new)
    assert not alive(old)
    wait_until(lambda: demo.get("/static/site.css").status_code == 200, timeout=15)
    assert f"hfiler (pid {old}) ended: killed by SIGKILL; restarting in" in demo.output()


def test_a_browser_sees_the_styled_page_the_logo_and_the_live_registry(
    demo: RunningDemo, tmp_path: Path
) -> None:
    from tests.browser import chromium

    with chromium(tmp_path) as browser:
        browser.get(demo.url("/"))
        wait_until(
            lambda: browser.execute_script("return document.body.dataset.refreshed || ''"),
            timeout=20,
            message="the page's script to read the registry from rquery",
        )
        header = browser.execute_script(
            "return getComputedStyle(document.querySelector('header')).backgroundColor"
        )
        assert header == "rgb(29, 35, 42)", "site.css is applied"
        logo = browser.execute_script(
            "const img = document.getElementById('logo');"
            "return [img.complete, img.naturalWidth, img.naturalHeight]"
        )
        assert logo == [True, 96, 96]

        def same_as_redis() -> bool:
            rows = browser.execute_script(
                "return [...document.querySelectorAll('#services tbody tr')]"
                ".map(row => row.dataset.service + ' ' + row.querySelector('td.pid').textContent)"
            )
            registered = {f"{e['service']} {e['pid']}" for e in demo.registrations()}
            return set(rows) == registered

        # The page refreshes every 2 s; a registration can expire in between.
        wait_until(same_as_redis, timeout=15, interval=0.5, message="the registry on the page")
        services = browser.execute_script(
            "return [...document.querySelectorAll('#services td.service')]"
            ".map(td => td.textContent)"
        )
        assert set(services) == SERVICES
        figures = browser.execute_script(
            "return [...document.querySelectorAll('#figures td.name')].map(td => td.textContent)"
        )
        assert "hgateway" in figures
        assert "move" in figures  # the live ring's mpush and lpush
        assert browser.execute_script("return document.querySelectorAll('#archive li').length")


def test_sigterm_stops_every_process(demo: RunningDemo) -> None:
    pids = [int(entry["pid"]) for entry in demo.registry().values()]
    assert stop(demo) == 0, demo.output()
    out = demo.output()
    assert "every process stopped; exit code 0" in out
    assert "stopped the private redis-server" in out
    for pid in pids:
        assert not alive(pid), f"pid {pid} still running:\n{out}"


def test_a_given_redis_and_a_time_limit(standalone_env: RedisEnv, tmp_path: Path) -> None:
    """--redis: no private redis-server, nothing flushed; --for: stops by itself."""
    standalone_env.client.set("unrelated", "kept")
    running = start_demo(tmp_path, "--port", "0", "--redis", standalone_env.url, "--for", "15")
    try:
        wait_serving(running)
        assert running.redis_url == standalone_env.url
        assert running.get("/").status_code == 200
        assert standalone_env.client.hget(f"{NS}:site", "namespace") == NS
        assert running.process.wait(40) == 0
    finally:
        stop(running)
    out = running.output()
    assert "ran for 15s" in out
    assert "private redis-server" not in out
    assert standalone_env.client.get("unrelated") == "kept"


def test_a_port_in_use_is_one_clear_line() -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_cli("demo", "--port", str(port), timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(
        f"config: port: cannot listen on 127.0.0.1:{port} (Address already in use): "
        "give --port N, or 0"
    )


def test_fanout_walkthrough() -> None:
    result = run_cli("demo", "--fanout", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "redis-cli lrange demo:mpush:out0" in out
    assert "redis-cli lrange demo:mpush:out1" in out
    assert out.count('"one"') == 2
    assert out.count('"three"') == 2
    assert "services in demo:mpush" in out
    assert "mpush stopped with exit code 0" in out
    assert "stopped the private redis-server" in out


def test_bad_demo_settings_are_one_clear_line() -> None:
    result = run_cli("demo", "--service-namespace", "demo web", timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mpush demo: config: service_namespace: must be one word (it names queues in routes)"
    )
