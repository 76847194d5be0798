"""Autoscaling and hosts with real processes: agents, a controller and handler instances against a
real redis-server. A step of load on a handler's queue raises the replicas within bounds in
seconds, and they fall once the load stops and the scale-down window has passed; a drained host's
instances move away with none lost on the way; an overloaded host gets no new instances."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from mpush.http.messages import encode_request
from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.rcontrol_rig import Rig, Watch, pipe

WORK = "{rc}:work"

SCALED = f"""
[deployments.work]
service = "handler"
replicas = 1
[deployments.work.settings]
handler = "tests.http_handlers:sleepy"
in = "{WORK}"
pop_timeout = 0.3
service_check = 0.2
metrics_interval = 0.2
[deployments.work.autoscale]
min = 1
max = 3
queue = "{WORK}"
target = 10
scale_down_window = 3
"""


@pytest.fixture
def rig(standalone_env: RedisEnv, spawn: Spawner, tmp_path: Path) -> Rig:
    return Rig(standalone_env, spawn, tmp_path)


def push_requests(rig: Rig, count: int, reply: str) -> None:
    now = time.time()
    messages = [
        encode_request(
            uuid.uuid4().hex, "GET", "/work", "", {}, b"", ts=now, deadline=now + 60, reply=reply
        )
        for _ in range(count)
    ]
    rig.client.lpush(WORK, *messages)


class Peak:
    """The most running instances of a deployment seen while it watches."""

    def __init__(self, rig: Rig, deployment: str) -> None:
        self.rig, self.deployment = rig, deployment
        self.most = 0
        self.least: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            running = len(self.rig.running(self.deployment))
            self.most = max(self.most, running)
            self.least = running if self.least is None else min(self.least, running)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_a_step_of_load_scales_up_within_bounds_and_down_after_the_window(rig: Rig) -> None:
    rig.agent("a")
    rig.agent("b")
    rig.controller()
    rig.wait_up("a", "b")
    done = rig.apply(SCALED)
    assert done.returncode == 0, done.stderr
    rig.wait_running(1, "work")
    refused = rig.cli("scale", "work", "5")
    assert refused.returncode == 2
    assert "autoscaled between 1 and 3 replicas" in refused.stderr
    with Peak(rig, "work") as peak:
        began = time.monotonic()
        push_requests(rig, 400, "{rc}:replies")  # 8 s of work for one instance
        rig.wait_running(3, "work", timeout=15)
        rose = time.monotonic() - began
        wait_until(lambda: rig.client.llen(WORK) == 0, timeout=30, message="the queue drained")
        drained = time.monotonic()
        rig.wait_running(1, "work", timeout=20)
        fell = time.monotonic() - drained
    assert peak.most == 3, f"never above max: {peak.most}"
    assert rose < 8, f"3 replicas after {rose:.1f}s"
    assert fell >= 2.5, f"scaled down {fell:.1f}s after the queue emptied: within the window"
    events = rig.events("autoscale")
    ups = [e["why"] for e in events if "-> 3" in e["why"].split(":")[0]]
    assert ups, [e["why"] for e in events]
    assert f"queue {WORK} " in ups[0], ups[0]
    assert "target 10" in ups[0]
    assert "within 1..3 -> 3" in ups[0]
    assert "-> 1 (the highest of the last 3s)" in events[-1]["why"], events[-1]["why"]
    assert rig.declaration("work")["replicas"] == "1"


def test_a_drained_host_hands_its_instances_over_and_uncordon_takes_it_back(rig: Rig) -> None:
    rig.agent("a")
    rig.agent("b")
    rig.controller()
    rig.wait_up("a", "b")
    rig.apply(pipe(replicas=2))
    rig.wait_running(2)
    assert sorted(rig.host_of(r) for r in rig.running()) == ["a", "b"]
    with Peak(rig, "pipe") as peak:
        done = rig.cli("drain", "b")
        assert done.returncode == 0, done.stderr
        assert "host b: drained" in done.stdout
        wait_until(
            lambda: sorted(rig.host_of(r) for r in rig.running()) == ["a", "a"],
            timeout=20,
            message=lambda: f"both instances on a:\n{rig.logs()}",
        )
    assert peak.least == 2, "one ready replacement before the drained instance went"
    view = rig.status()
    assert {h["name"]: h["drained"] for h in view["hosts"]} == {"a": False, "b": True}
    assert [e["host"] for e in rig.events("drain")] == ["b"]
    assert "host b is drained" in rig.events("retire")[-1]["why"]
    assert rig.cli("uncordon", "b").returncode == 0
    rig.scale("pipe", 4)
    rig.wait_running(4)
    assert sorted(rig.host_of(r) for r in rig.running()) == ["a", "a", "b", "b"]


def test_an_overloaded_host_takes_no_new_instances(rig: Rig) -> None:
    rig.agent("a")
    rig.agent("b", "--max-memory", "0.01")  # any memory in use is over this limit
    rig.controller()
    rig.wait_up("a", "b")
    with Watch(rig, desired=3).watching():
        rig.apply(pipe(replicas=3))
        rig.wait_running(3)
    assert [rig.host_of(r) for r in rig.running()] == ["a", "a", "a"]
    (note,) = rig.events("host-overloaded")
    assert note["host"] == "b"
    assert "of memory in use is over 0.01%" in note["why"]
    hosts = {h["name"]: h for h in rig.status()["hosts"]}
    assert hosts["b"]["overloaded"]
    assert not hosts["a"]["overloaded"]
