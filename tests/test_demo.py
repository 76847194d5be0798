"""`mpush demo`: the distributed web server run by rcontrol, end to end, as `make demo` runs it.

One demo (private redis-server, a controller, two agents, the web server they run) serves the
tests of this module in order: it comes up, its page and data answer, the load control drives
traffic and replicas follow (scaled from the page until rcontrol autoscales them, then by
rcontrol), a headless chromium watches the replicas rise on the page, a kill -9 of an agent has
its instances placed on the other host, and Ctrl-C stops every process. The demo starts its own
standalone redis-server, as `make demo` does: the services it runs are tested on a Cluster in
their own modules.
"""

from __future__ import annotations

import hashlib
import json
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

from mpush.demo.console import CONTROL_HEADER
from mpush.demo.declaration import AUTOSCALE_KNOWN
from mpush.demo.web import HOSTS, SITE
from mpush.keys import DemoKeys, RcontrolKeys
from mpush.orchestration.redisserver import free_port
from tests.conftest import RedisEnv
from tests.helpers import run_cli, wait_until

NS = "demo:web"
LAYOUT = DemoKeys(NS)
KEYS = RcontrolKeys(NS)
DEPLOYMENTS = {"gateway", "router", "pages", "files", "query", "work", "throttle", "fanout",
               "archive"}  # fmt: skip
UPLOT = SITE / "static" / "vendor" / "uplot"


@dataclass
class RunningDemo:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    redis_url: str = ""
    tmp: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.url(path), headers=headers, timeout=10)

    def post(self, path: str) -> httpx.Response:
        return httpx.post(self.url(path), headers=dict([CONTROL_HEADER]), timeout=10)

    def status(self) -> dict[str, Any]:
        """What /control/status answers: rcontrol's view, the load, the site."""
        got = self.get("/control/status")
        assert got.status_code == 200, got.text
        return got.json()  # type: ignore[no-any-return]

    def redis(self) -> Any:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    def view(self) -> dict[str, Any]:
        """rcontrol's view, as `mpush rcontrol status --json` reads it from Redis."""
        done = run_cli(
            "rcontrol", "status", "--json", "--events", "--count", "200",
            "--redis", self.redis_url, "--service-namespace", NS,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]


def deployments(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in view["deployments"]}


def all_ready(view: dict[str, Any]) -> bool:
    return all(
        d["ready"] == d["desired"] and d["standby"] == d["standby_desired"]
        for d in view["deployments"]
    )


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

    wait_until(serving, timeout=120, interval=0.1, message=lambda: "the URL:\n" + demo.output())
    text = demo.output()
    demo.port = int(re.search(r"serving http://localhost:(\d+)/", text).group(1))  # type: ignore[union-attr]
    demo.redis_url = re.search(r"redis +(redis://\S+)", text).group(1)  # type: ignore[union-attr]
    demo.tmp = re.search(r"Logs: (\S+)/logs/", text).group(1)  # type: ignore[union-attr]
    demo.pids = {m[0]: int(m[1]) for m in re.findall(r"^  (\S+) +pid (\d+)", text, re.M)}


def stop(demo: RunningDemo, signum: int = signal.SIGTERM) -> int | None:
    if demo.process.poll() is None:
        demo.process.send_signal(signum)
        try:
            demo.process.wait(60)
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


def processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in argv:
            found.append(f"{entry.name}: {argv}")
    return found


def test_the_demo_comes_up_every_deployment_ready_over_two_hosts(demo: RunningDemo) -> None:
    assert set(demo.pids) == {"controller", *HOSTS}
    status = demo.status()
    view = status["rcontrol"]
    assert set(deployments(view)) == DEPLOYMENTS
    assert all_ready(view), view["deployments"]  # the URL is printed once everything is ready
    assert {host["name"] for host in view["hosts"] if host["alive"]} == set(HOSTS)
    for host in HOSTS:  # placed over both hosts: a gateway and a router on each
        for name in ("gateway", "router"):
            assert [i for i in deployments(view)[name]["instances"] if i["host"] == host], name
    assert view["controller"] is not None
    site = status["site"]
    assert site["mode"] == ("autoscale" if AUTOSCALE_KNOWN else "manual")
    assert {entry["name"] for entry in site["scalable"]} == {"pages", "files", "query", "work"}
    assert site["queues"]["work"] == LAYOUT.work
    assert status["load"]["rate"] == 0
    assert f"kill -9 {demo.pids[HOSTS[-1]]}" in demo.output()  # the banner says what to try


def test_the_page_its_files_and_its_data_answer(demo: RunningDemo) -> None:
    home = demo.get("/")
    assert home.status_code == 200, demo.output()
    assert home.headers["content-type"] == "text/html; charset=utf-8"
    page = home.text
    for link in ("/static/site.css", "/static/demo.js", "/static/vendor/uplot/uPlot.iife.min.js",
                 "/static/vendor/uplot/uPlot.min.css", "/static/logo.png"):  # fmt: skip
        assert f'"{link}"' in page, link
    assert f'data-namespace="{NS}"' in page
    assert "GET /</code>" in page  # the request itself, rendered by hrender

    css = demo.get("/static/site.css", **{"accept-encoding": "gzip"})
    assert css.status_code == 200
    assert css.headers["content-encoding"] == "gzip"
    assert css.text == (SITE / "static" / "site.css").read_text()
    assert demo.get("/static/logo.png").content == (SITE / "static" / "logo.png").read_bytes()
    readme = (UPLOT / "README.md").read_text()
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):  # vendored as npm has it, served as is
        served = demo.get(f"/static/vendor/uplot/{name}")
        assert served.status_code == 200
        assert served.content == (UPLOT / name).read_bytes()
        assert f"{hashlib.sha256(served.content).hexdigest()}  {name}" in readme
    assert "MIT" in (UPLOT / "LICENSE").read_text()

    work = demo.get("/work")
    assert work.status_code == 200
    assert work.json()["waited"] == 0.05
    # rquery: queues, metrics, the registry and rcontrol's keys; nothing else
    for queue in ("req", "pages", "files", "query", "work"):
        assert isinstance(demo.get(f"/data/llen/{NS}:{queue}").json(), int)
    wait_until(
        lambda: f"{NS}:metrics:hgateway:response" in demo.get(f"/data/scan/{NS}:metrics:").json(),
        message="the gateway's metrics (flushed every second)",
    )
    spec = demo.get(f"/data/hgetall/{KEYS.deployment('work')}").json()
    assert spec["replicas"] == "1"
    assert demo.get(f"/data/get/{NS}:site").status_code == 403
    assert demo.get("/data/get/elsewhere").status_code == 403
    wait_until(
        lambda: demo.get("/data/llen/" + LAYOUT.ring("archive").replace("{", "%7B")
                         .replace("}", "%7D")).json() > 0,
        timeout=15,
        message="the live ring to move messages",
    )  # fmt: skip


def test_a_browser_sees_the_replicas_rise_on_the_page_under_load(
    demo: RunningDemo, tmp_path: Path
) -> None:
    from tests.browser import chromium

    with chromium(tmp_path) as browser:
        browser.get(demo.url("/"))
        wait_until(
            lambda: int(browser.execute_script("return document.body.dataset.refreshed || 0")) >= 2,
            timeout=20,
            message="the page's script to read its figures twice",
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
        charts = browser.execute_script(
            "return typeof uPlot === 'function' ? Object.keys(window.demo.charts).sort() : null"
        )
        assert charts == ["chart-latency", "chart-queues", "chart-replicas", "chart-rps"]
        assert browser.execute_script("return document.querySelectorAll('.chart canvas').length")

        def page_ready(name: str) -> int:
            return int(browser.execute_script(
                f"const row = document.querySelector('#deployments tr[data-deployment={name}]');"
                "return row ? row.querySelector('td.ready').textContent : -1"
            ))  # fmt: skip

        def same_as_redis() -> bool:
            view = deployments(demo.view())
            rows = browser.execute_script(
                "return [...document.querySelectorAll('#deployments tbody tr')].map(row => "
                "[row.dataset.deployment, +row.querySelector('td.ready').textContent])"
            )
            return dict(rows) == {name: entry["ready"] for name, entry in view.items()}

        # The page reads every second; Redis may change in between.
        wait_until(same_as_redis, timeout=15, interval=0.5, message="the page to show Redis's")
        start = page_ready("work")
        browser.find_element("css selector", "#load-buttons button[data-rate='50']").click()
        wait_until(lambda: demo.status()["load"]["rate"] == 50, message="the load to start")
        if not AUTOSCALE_KNOWN:  # scale by hand, with the page's + button, twice
            for wanted in (start + 1, start + 2):
                plus = "#scalable tr[data-deployment=work] button.plus"
                browser.find_element("css selector", plus).click()
                wait_until(
                    lambda w=wanted: deployments(demo.view())["work"]["desired"] == w,
                    timeout=10,
                    message=f"work's replicas declared {wanted}",
                )
        wait_until(
            lambda: page_ready("work") > start,
            timeout=40,
            interval=0.5,
            message="more work instances ready on the page",
        )
        wait_until(same_as_redis, timeout=15, interval=0.5, message="the page to show Redis's")
        risen = page_ready("work")
        series = browser.execute_script(
            "const chart = window.demo.charts['chart-replicas'];"
            "const at = window.demo.series['chart-replicas']"
            ".findIndex(s => s.key === 'work:ready');"
            "return chart.data[at + 1].filter(v => v !== null)"
        )
        assert max(series) >= risen > start, series  # the chart drew the rise
        served = browser.execute_script(
            "const chart = window.demo.charts['chart-rps'];"
            "const at = window.demo.series['chart-rps'].findIndex(s => s.key === 'rps:work');"
            "return Math.max(...chart.data[at + 1].filter(v => v !== null))"
        )
        assert served > 10  # requests a second to /work, drawn
        events = browser.execute_script(
            "return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.kind)"
        )
        assert "place" in events or "activate" in events
        browser.find_element("css selector", "#load-buttons button[data-rate='0']").click()
        wait_until(lambda: demo.status()["load"]["rate"] == 0, message="the load to stop")
        if not AUTOSCALE_KNOWN:  # and back down by hand, with the page's − button
            for wanted in (start + 1, start):
                minus = "#scalable tr[data-deployment=work] button.minus"
                browser.find_element("css selector", minus).click()
                wait_until(
                    lambda w=wanted: deployments(demo.view())["work"]["desired"] == w,
                    timeout=10,
                    message=f"work's replicas declared {wanted}",
                )


def scale_by_hand(demo: RunningDemo, replicas: int) -> None:
    """Until rcontrol autoscales: what the page's + button does."""
    got = demo.post(f"/control/scale/work/{replicas}")
    assert got.status_code == 200, got.text


def test_the_load_control_drives_traffic_and_the_replicas_follow(demo: RunningDemo) -> None:
    client = demo.redis()
    handled = lambda: int(client.hget(f"{NS}:metrics:handler", "count") or 0)  # noqa: E731
    before = handled()
    got = demo.post("/control/load/40")
    assert got.status_code == 200, got.text
    assert got.json()["rate"] == 40
    assert demo.get("/control/load/40").status_code == 405  # a GET changes nothing
    wait_until(lambda: handled() >= before + 60, timeout=20, message="the load to reach /work")
    wait_until(
        lambda: demo.status()["load"]["answers"].get("2xx", 0) >= 40,
        timeout=20,
        message="answers to the load",
    )
    if AUTOSCALE_KNOWN:
        assert demo.post("/control/scale/work/3").status_code == 409
    else:
        scale_by_hand(demo, 3)
        assert client.hget(KEYS.deployment("work"), "replicas") == "3"

    def more_work_ready() -> bool:
        work = deployments(demo.view())["work"]
        return work["ready"] >= 3 if not AUTOSCALE_KNOWN else work["ready"] > 1

    wait_until(more_work_ready, timeout=30, interval=0.5, message="more work instances ready")
    kinds = {event["kind"] for event in demo.view()["events"] if event["deployment"] == "work"}
    assert "activate" in kinds  # the standby instance went first
    assert demo.post("/control/load/0").json()["rate"] == 0
    if not AUTOSCALE_KNOWN:
        scale_by_hand(demo, 1)
    # and back down once the load stops: by hand, or by rcontrol after its scale-down window
    wait_until(
        lambda: deployments(demo.view())["work"]["ready"] == 1,
        timeout=90 if AUTOSCALE_KNOWN else 30,
        interval=0.5,
        message="work back to one instance",
    )
    client.close()


def test_kill_9_of_an_agent_places_its_instances_on_the_other_host(demo: RunningDemo) -> None:
    dead, other = HOSTS[-1], HOSTS[0]
    client = demo.redis()
    agent = int(client.hget(KEYS.host(dead), "pid"))
    before = demo.view()
    lost = [i for d in before["deployments"] for i in d["instances"] if i["host"] == dead]
    assert lost, "the other host runs some instances"
    killed = float(client.time()[0])
    os.kill(agent, signal.SIGKILL)

    def rescheduled() -> bool:
        view = demo.view()
        seen = {e["kind"] for e in view["events"] if e["host"] == dead and e["at"] >= killed}
        active = [i for d in view["deployments"] for i in d["instances"] if i["role"] == "active"]
        return (
            {"host-dead", "reschedule"} <= seen
            and all_ready(view)
            and all(instance["host"] == other for instance in active)
        )

    # The demo starts the agent again 6 to 12 s after its death: its host may be back by then.
    wait_until(
        rescheduled, timeout=30, interval=0.5, message=lambda: f"rescheduled:\n{demo.view()}"
    )
    for instance in lost:  # the kernel stopped the dead agent's instances
        assert instance["pid"] is None or not alive(instance["pid"])
    wait_until(lambda: demo.get("/").status_code == 200, timeout=10, message="the site")
    assert demo.status()["rcontrol"]["controller"] is not None
    wait_until(
        lambda: client.exists(KEYS.host(dead)) == 1,
        timeout=30,
        interval=0.5,
        message=f"{dead}'s agent to be back",
    )
    assert f"{dead} restarted" in demo.output()
    client.close()


def test_ctrl_c_stops_every_process(demo: RunningDemo) -> None:
    view = demo.view()
    pids = [i["pid"] for d in view["deployments"] for i in d["instances"] if i["pid"]]
    client = demo.redis()
    pids += [int(client.hget(KEYS.host(host), "pid") or 0) for host in HOSTS]
    client.close()
    redis_port = demo.redis_url.rsplit(":", 1)[1].split("/")[0]
    assert stop(demo, signal.SIGINT) == 0, demo.output()
    out = demo.output()
    assert "every process stopped; exit code 0" in out
    assert "stopped the private redis-server" in out
    for pid in pids:
        assert not alive(pid), f"pid {pid} still running:\n{out}"
    assert not processes_mentioning(demo.tmp), "instances or agents left behind"
    assert not processes_mentioning(f"127.0.0.1:{redis_port}"), "the redis-server left behind"
    assert not Path(demo.tmp).exists()


def test_a_given_redis_and_a_time_limit(standalone_env: RedisEnv, tmp_path: Path) -> None:
    """--redis: no private redis-server, nothing flushed, the web server declared there; --for:
    stops by itself."""
    standalone_env.client.set("unrelated", "kept")
    running = start_demo(
        tmp_path, "--port", "0", "--redis", standalone_env.url, "--for", "30", "--load", "5"
    )
    try:
        wait_serving(running)
        assert running.redis_url == standalone_env.url
        assert running.get("/").status_code == 200
        assert standalone_env.client.hget(f"{NS}:site", "namespace") == NS
        assert standalone_env.client.sismember(KEYS.deployments, "work")
        assert running.status()["load"]["rate"] == 5  # --load: from the start
        assert running.process.wait(60) == 0
    finally:
        stop(running)
    out = running.output()
    assert "ran for 30s" in out
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


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (("--service-namespace", "demo web"),
         "service_namespace: must be one word (it names queues in routes)"),
        (("--service-redis", "redis://127.0.0.1:1/0"),
         "service_redis: the demo keeps its registry beside rcontrol's state, on --redis"),
        (("--load", "1000"), "load: Input should be less than or equal to 500"),
    ],
)  # fmt: skip
def test_bad_demo_settings_are_one_clear_line(flags: tuple[str, ...], line: str) -> None:
    result = run_cli("demo", *flags, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"mpush demo: config: {line}"), result.stderr


def test_the_uplot_files_are_vendored_whole() -> None:
    """The charts library ships with the package (pyproject's package-data), no CDN."""
    pyproject = (SITE.parents[3] / "pyproject.toml").read_text()
    assert '"demo/site/static/vendor/uplot/*"' in pyproject
    assert '"demo/site/rcontrol.toml"' in pyproject
    script = (UPLOT / "uPlot.iife.min.js").read_text()
    assert script.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    page = (SITE / "templates" / "home.html").read_text()
    assert "http://" not in page.replace("http://localhost", "")
    assert "https://" not in page
