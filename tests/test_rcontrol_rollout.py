"""Rollouts with real processes: agents, controllers, handler instances, and (for one) a real
hgateway → hrouter → handler path and a real ndeploy building git releases.

- a release whose handler answers 500 is rolled back by the controller while the old release
  keeps serving;
- a good release rolled out under steady HTTP load fails no request;
- a controller killed mid-rollout: the next one finishes it, no half-state;
- a git release (built by ndeploy) whose handler crashes is rolled back; the old one serves on.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from mpush.http import Response
from mpush.http.messages import encode_request
from mpush.orchestration.redisserver import free_port
from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.ndeploy_repos import make_handler_repo
from tests.rcontrol_rig import KEYS, NS, Rig

WEB = "{rc}:web"
REPLY = "{rc}:test-replies"

HANDLER = f"""
[deployments.web]
service = "handler"
replicas = 2
[deployments.web.settings]
handler = "tests.http_handlers:hello"
in = "{WEB}"
pop_timeout = 0.3
service_check = 0.2
metrics_interval = 0.2
[deployments.web.rollout]
min_errors = 3
verify = 1
"""


@pytest.fixture
def rig(standalone_env: RedisEnv, spawn: Spawner, tmp_path: Path) -> Rig:
    return Rig(standalone_env, spawn, tmp_path)


class Traffic:
    """Request messages pushed on the handlers' queue at a steady rate, and every answer kept
    with the time it came back."""

    def __init__(self, rig: Rig, rate: float = 40.0) -> None:
        self.rig = rig
        self.period = 1 / rate
        self.sent = 0
        self.answers: list[tuple[float, int, str]] = []  # (monotonic time, status, body)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]

    def _send(self) -> None:
        while not self._stop.wait(self.period):
            now = time.time()
            message = encode_request(
                uuid.uuid4().hex, "GET", "/", "", {}, b"", ts=now, deadline=now + 30, reply=REPLY
            )
            self.rig.client.lpush(WEB, message)
            self.sent += 1

    def _receive(self) -> None:
        while not self._stop.is_set() or len(self.answers) < self.sent:
            popped = self.rig.client.brpop([REPLY], timeout=1)
            if popped is None:
                if self._stop.is_set():
                    return
                continue
            response = Response.from_json(popped[1])
            self.answers.append((time.monotonic(), response.status, response.body.decode()))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def statuses(self, since: float = 0.0) -> dict[int, int]:
        found: dict[int, int] = {}
        for at, status, _ in self.answers:
            if at >= since:
                found[status] = found.get(status, 0) + 1
        return found


def rollout_state(rig: Rig, name: str = "web") -> str:
    rollout: dict[str, Any] = rig.declaration(name).get("rollout") or {}
    return str(rollout.get("state", ""))


def pids_of(rig: Rig, deployment: str, release: str) -> set[str]:
    return {r["pid"] for r in rig.running(deployment) if r.get("release") == release}


def test_a_release_answering_500_is_rolled_back_while_the_old_one_serves(rig: Rig) -> None:
    rig.agent("a")
    rig.agent("b")
    rig.controller()
    rig.wait_up("a", "b")
    rig.apply(HANDLER.replace("verify = 1", "verify = 1\nmin_ready = 3"))
    rig.wait_running(2, "web")
    good = rig.declaration("web")["release"]
    serving = pids_of(rig, "web", good)
    assert len(serving) == 2
    with Traffic(rig) as traffic:
        done = rig.cli("rollout", "web", "--set", "handler=tests.http_handlers:fails")
        assert done.returncode == 0, done.stderr
        assert f"rollout {good} -> " in done.stdout
        wait_until(
            lambda: rollout_state(rig) == "rolled-back",
            timeout=30,
            message=lambda: f"the rollback ({rollout_state(rig)}):\n{rig.logs()}",
        )
        back = time.monotonic()
        wait_until(lambda: len(traffic.statuses(back + 1)) > 0, message="answers after it")
    (rollback,) = rig.events("rollback")
    assert "failed" in rollback["why"]
    assert "%" in rollback["why"]
    declaration = rig.declaration("web")
    assert declaration["release"] == good
    assert declaration["rollout"]["old"] != good
    assert declaration["rollout"]["new"] == good
    assert pids_of(rig, "web", good) == serving, "the old release's instances were never stopped"
    assert not [r for r in rig.running("web") if r.get("release") != good]
    after = traffic.statuses(back + 0.5)  # the bad instance's last answers may still come back
    assert set(after) == {200}, after
    before = traffic.statuses()
    assert before.get(500, 0) >= 3, "the new release did answer 500"
    assert before[200] > before[500], "the old release kept serving meanwhile"
    view = rig.status()
    (web,) = view["deployments"]
    assert web["rollout"]["state"] == "rolled-back"
    assert {i["release"] for i in web["instances"]} == {good}


def test_a_good_release_under_http_load_fails_no_request(rig: Rig) -> None:
    rig.agent("a")
    rig.agent("b")
    rig.controller()
    rig.wait_up("a", "b")
    port = free_port()
    common = ["--redis", rig.env.url, "--service-namespace", NS, "--pop-timeout", "0.5"]
    gateway = rig.spawn(
        "hgateway", *common, "--port", str(port), "--queue", "{rc}:req", "--timeout", "5",
    )  # fmt: skip
    router = rig.spawn("hrouter", *common, "--in", "{rc}:req", "--route", f"^/ {WEB} web")
    gateway.wait_for_log("listening on")
    router.wait_for_log("hrouter started")
    rig.apply(HANDLER)
    rig.wait_running(2, "web")
    first = rig.declaration("web")["release"]
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while not stop.is_set():
                statuses.append(client.get("/hello").status_code)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(statuses) > 50, message="the load running")
    done = rig.cli("rollout", "web", "--set", "handler=tests.http_handlers:echo", "--wait", "40")
    stop.set()
    for thread in threads:
        thread.join(15)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{rig.logs()}"
    assert "complete" in done.stdout.splitlines()[-1]
    assert len(statuses) > 100
    failed = [s for s in statuses if not 200 <= s < 300]
    assert not failed, f"{len(failed)} of {len(statuses)} failed: {sorted(set(failed))}"
    second = rig.declaration("web")["release"]
    assert second != first
    assert {r["release"] for r in rig.running("web")} == {second}
    kinds = [e["why"].split(":")[0] for e in rig.events("rollout")]
    assert kinds == ["verifying", "complete"], kinds


@pytest.mark.slow
def test_a_controller_killed_mid_rollout_is_finished_by_the_next_one(rig: Rig) -> None:
    rig.agent("a")
    rig.agent("b")
    rig.controller()
    rig.controller()
    rig.wait_up("a", "b")
    rig.apply(HANDLER.replace("replicas = 2", "replicas = 4"))
    rig.wait_running(4, "web")
    old = rig.declaration("web")["release"]
    holder = rig.client.get(KEYS.lease)
    active = next(c for c in rig.controllers if f":{c.pid}" in holder)
    standby = next(c for c in rig.controllers if c is not active)
    done = rig.cli("rollout", "web", "--set", "batch=50")
    assert done.returncode == 0, done.stderr
    new = rig.declaration("web")["release"]

    def mixed() -> bool:
        releases = [a["release"] for a in rig.assignments().values()]
        return new in releases and old in releases

    wait_until(mixed, interval=0.01, message="old and new instances side by side")
    active.kill9()
    wait_until(
        lambda: rollout_state(rig) == "complete",
        timeout=40,
        message=lambda: f"the rollout complete ({rollout_state(rig)}):\n{rig.logs()}",
    )
    assignments = rig.assignments()
    assert {a["release"] for a in assignments.values()} == {new}, "no half-state"
    assert len(assignments) == 4
    rig.wait_running(4, "web")
    assert {r["release"] for r in rig.running("web")} == {new}
    finishers = {e["by"] for e in rig.events("rollout")}
    assert all(str(standby.pid) in by for by in finishers), finishers


@pytest.mark.slow
def test_a_git_release_that_crashes_is_rolled_back(rig: Rig, tmp_path: Path) -> None:
    repo = make_handler_repo(tmp_path / "git")
    rig.spawn(
        "ndeploy", "serve", "--redis", rig.env.url, "--service-namespace", "{rc}:nd",
        "--allow", repo.prefix, "--deploy-root", str(tmp_path / "deploys"),
        "--no-venv-pip", "--pip-arg=--no-index", "--pop-timeout", "0.5",
    ).wait_for_log("ndeploy started")  # fmt: skip
    rig.agent("a", "--ndeploy", "{rc}:nd")
    rig.controller()
    rig.wait_up("a")
    spec = f"""
[deployments.site]
service = "handler"
replicas = 1
[deployments.site.settings]
handler = "rc_site:hello"
in = "{WEB}"
pop_timeout = 0.3
service_check = 0.2
[deployments.site.source]
git = "{repo.url}"
tag = "v1"
"""
    assert rig.apply(spec).returncode == 0
    rig.wait_running(1, "site", timeout=90)
    v1 = rig.declaration("site")["release"]
    with Traffic(rig, rate=20) as traffic:
        wait_until(lambda: len(traffic.answers) > 5, message="v1 answering")
        done = rig.cli("rollout", "site", "--git", repo.url, "--tag", "v2")
        assert done.returncode == 0, done.stderr
        assert "from " + repo.url + " (tag v2)" in done.stdout
        wait_until(
            lambda: rollout_state(rig, "site") == "rolled-back",
            timeout=90,
            message=lambda: f"the rollback ({rollout_state(rig, 'site')}):\n{rig.logs()}",
        )
    (rollback,) = rig.events("rollback")
    assert "crashed" in rollback["why"], rollback["why"]
    assert rig.declaration("site")["release"] == v1
    assert {body for _, _, body in traffic.answers} == {"v1\n"}, "v1 served throughout"
    assert set(traffic.statuses()) == {200}
