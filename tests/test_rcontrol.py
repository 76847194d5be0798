"""rcontrol with real processes: two agents (hosts "a" and "b") and controllers as ``python -m
mpush rcontrol …`` processes against a real redis-server; lpush instances as the workload.

Faults are real: kill -9 of an agent and of the active controller, a DEL of a registration, a
crash-looping command, a redis-server stopped and started mid-reconcile (with its data, and
without it)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import RedisEnv
from tests.helpers import Spawner, wait_until
from tests.rcontrol_rig import KEYS, NS, REGISTRY, Rig, Watch, pipe


@pytest.fixture
def rig(standalone_env: RedisEnv, spawn: Spawner, tmp_path: Path) -> Rig:
    return Rig(standalone_env, spawn, tmp_path)


def up(rig: Rig, *, controllers: int = 1) -> None:
    rig.agent("a")
    rig.agent("b")
    for _ in range(controllers):
        rig.controller()
    rig.wait_up("a", "b")


def test_scale_1_4_1_spread_over_both_hosts(rig: Rig) -> None:
    up(rig)
    done = rig.apply(pipe(replicas=1))
    assert done.returncode == 0, done.stderr
    assert "deployment pipe: created (1 × mpush lpush)" in done.stdout
    with Watch(rig, desired=1).watching() as watch:
        rig.wait_running(1)
        watch.desire(4)
        rig.scale("pipe", 4)
        rig.wait_running(4)
        hosts = sorted(rig.host_of(r) for r in rig.running())
        assert hosts == ["a", "a", "b", "b"], hosts
        watch.desire(1)
        rig.scale("pipe", 1)
        rig.wait_running(1)
    # the work really flows through the one left
    rig.client.lpush("{rc}:in", "hello")
    assert rig.client.brpop(["{rc}:out"], timeout=5) == ("{rc}:out", "hello")
    view = rig.status()
    (deployment,) = view["deployments"]
    # the shape the JSON promises (more fields are allowed)
    assert {"name", "desired", "ready", "standby", "instances"} <= deployment.keys()
    assert {"id", "host", "pid", "state"} <= deployment["instances"][0].keys()
    assert {"name", "alive", "capacity", "running"} <= view["hosts"][0].keys()
    assert (deployment["desired"], deployment["ready"]) == (1, 1)
    assert [i["state"] for i in deployment["instances"]] == ["ready"]
    assert {h["name"]: h["alive"] for h in view["hosts"]} == {"a": True, "b": True}
    kinds = [e["kind"] for e in view["events"]]
    assert kinds.count("place") == 4, kinds
    assert kinds.count("retire") == 3, kinds
    retired = [e["why"] for e in view["events"] if e["kind"] == "retire"]
    assert all("active for 1 replicas" in why for why in retired), retired


def test_a_removed_registration_is_replaced(rig: Rig) -> None:
    up(rig)
    rig.apply(pipe(replicas=2))
    rig.wait_running(2)
    victim = rig.running()[0]
    rig.client.delete(REGISTRY.instance(rig.client.hget(REGISTRY.labels, victim["label"])))
    wait_until(
        lambda: len(rig.running()) == 2 and victim["pid"] not in {r["pid"] for r in rig.running()},
        message=lambda: f"a new process for {victim['label']}:\n{rig.logs()}",
    )
    assert sorted(r["label"] for r in rig.running()) == ["pipe-1", "pipe-2"], "same instance ids"
    report = rig.reports()[victim["label"]]
    assert report["restarts"] == "1"


def test_standby_instances_are_activated_in_place(rig: Rig) -> None:
    up(rig)
    rig.apply(pipe(replicas=1, standby=1))
    wait_until(
        lambda: len(rig.running()) == 1 and len(rig.registrations()) == 2,
        message=lambda: f"one active and one standby instance:\n{rig.logs()}",
    )
    (spare,) = [r for r in rig.registrations() if r.get("standby") == "1"]
    registration = REGISTRY.instance(rig.client.hget(REGISTRY.labels, spare["label"]))
    began = time.monotonic()
    rig.scale("pipe", 2)
    wait_until(
        lambda: rig.client.hget(registration, "standby") == "0",
        interval=0.01,
        message="the standby instance activated",
    )
    took = time.monotonic() - began
    assert took < 1.5, f"activation took {took:.2f}s (the scale command's own start included)"
    running = {r["label"]: r["pid"] for r in rig.running()}
    assert running[spare["label"]] == spare["pid"], "activated in place: the same process"
    # the pool is refilled, and the activation was logged
    wait_until(lambda: len(rig.registrations()) == 3, message="a new standby instance")
    (event,) = rig.events("activate")
    assert event["instance"] == spare["label"]


CRASHING = """
[deployments.crash]
command = ["python3", "-c", "import sys; sys.exit(1)"]
replicas = 1

[deployments.broken]
command = ["python3", "-c", "import sys; print('config: port: bad'); sys.exit(2)"]
replicas = 1

[deployments.missing]
command = ["/nonexistent/program"]
replicas = 1
"""


def test_a_crash_loop_is_backed_off_and_reported_the_rest_unaffected(rig: Rig) -> None:
    up(rig)
    rig.apply(pipe(replicas=2))
    rig.wait_running(2)
    steady = {r["label"]: r["pid"] for r in rig.running()}
    done = rig.apply(CRASHING)
    assert done.returncode == 0, done.stderr

    def state(iid: str) -> dict[str, str]:
        return rig.client.hgetall(KEYS.instance(iid))

    crash = next(i for i, a in rig.assignments().items() if a["deployment"] == "crash")
    broken = next(i for i, a in rig.assignments().items() if a["deployment"] == "broken")
    missing = next(i for i, a in rig.assignments().items() if a["deployment"] == "missing")
    wait_until(lambda: state(crash).get("state") == "failing", message="crash reported failing")
    wait_until(lambda: state(broken).get("state") == "exited", message="broken reported exited")
    began, restarts = time.monotonic(), int(state(crash)["restarts"])
    wait_until(lambda: int(state(crash)["restarts"]) >= restarts + 2, timeout=15)
    rate = (int(state(crash)["restarts"]) - restarts) / (time.monotonic() - began)
    assert rate < 3, f"{rate:.1f} restarts/s: not backed off"
    assert state(broken)["restarts"] == "0", "code 2 is never restarted"
    assert state(broken)["code"] == "2"
    assert "config: port: bad" in state(broken)["reason"]
    wait_until(lambda: len(rig.events("give-up")) >= 2, message="give-up events")
    whys = {e["instance"]: e["why"] for e in rig.events("give-up")}
    assert "is failing" in whys[crash]
    assert "restarted with backoff" in whys[crash]
    assert "exited with code 2" in whys[broken]
    # the crash loop costs no more instances, and the steady deployment never noticed
    assert len([a for a in rig.assignments().values() if a["deployment"] == "crash"]) == 1
    assert {r["label"]: r["pid"] for r in rig.running()} == steady
    # a program that cannot even be started is backed off the same way; the agents live on
    wait_until(lambda: "cannot start" in state(missing).get("reason", ""), message="missing")
    assert "No such file or directory" in state(missing)["reason"]
    assert all(agent.alive for agent in rig.agents.values())


BAD_SETTING = """
[deployments.pipe]
service = "lpush"
replicas = 5
[deployments.pipe.settings]
in = "{rc}:in"
out = ["{rc}:out"]
batch = 99999

[deployments.other]
service = "lpush"
[deployments.other.settings]
in = "{rc}:in2"
out = ["{rc}:out2"]
"""


def test_a_bad_spec_is_refused_as_a_whole_and_apply_is_idempotent(rig: Rig) -> None:
    first = rig.apply(pipe(replicas=2))
    assert first.returncode == 0, first.stderr
    before = _dump(rig)
    refused = rig.apply(BAD_SETTING)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "mpush rcontrol apply: config: deployments.pipe.settings.batch: Input should be less "
        "than or equal to 5000 (got 99999)"
    ]
    assert _dump(rig) == before, "nothing applied"
    again = rig.apply(pipe(replicas=2))
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        "deployment pipe: unchanged",
        "0 of 1 deployments changed",
    ]
    assert _dump(rig) == before, "an unchanged declaration is not rewritten"
    changed = rig.apply(pipe(replicas=3))
    assert "deployment pipe: changed (replicas 2 -> 3)" in changed.stdout


def _dump(rig: Rig) -> dict[str, object]:
    found: dict[str, object] = {}
    for key in rig.client.keys(f"{NS}:rcontrol:*"):
        kind = rig.client.type(key)
        if kind == "hash":
            found[key] = rig.client.hgetall(key)
        elif kind == "set":
            found[key] = rig.client.smembers(key)
        elif kind == "stream":
            found[key] = rig.client.xlen(key)
        else:
            found[key] = kind
    return found


@pytest.mark.slow
def test_a_killed_agents_replicas_run_again_on_the_other_host(rig: Rig) -> None:
    up(rig)
    rig.apply(pipe(replicas=4))
    rig.wait_running(4)
    doomed = [r for r in rig.running() if rig.host_of(r) == "a"]
    assert len(doomed) == 2
    with Watch(rig, desired=4).watching():
        rig.agents["a"].kill9()
        killed = time.monotonic()
        # the kernel's parent-death signal stops its instances at once (gracefully)
        wait_until(
            lambda: not any(Path(f"/proc/{r['pid']}").exists() for r in doomed),
            message="the killed agent's instances to stop",
        )
        rig.wait_running(4, timeout=20)
        took = time.monotonic() - killed
    assert sorted(rig.host_of(r) for r in rig.running()) == ["b"] * 4
    # host ttl 1.5 s + a tick 0.5 s + a start (~1 s, more on a loaded machine)
    assert took < 12, f"rescheduled after {took:.1f}s"
    assert len(rig.events("reschedule")) == 2
    view = rig.status()
    assert {h["name"]: h["alive"] for h in view["hosts"]} == {"a": False, "b": True}


@pytest.mark.slow
def test_a_killed_controller_is_replaced_by_the_standby_one(rig: Rig) -> None:
    up(rig, controllers=2)
    rig.apply(pipe(replicas=2))
    rig.wait_running(2)
    holder = rig.client.get(KEYS.lease)
    active = next(c for c in rig.controllers if f":{c.pid}" in holder)
    standby = next(c for c in rig.controllers if c is not active)
    with Watch(rig, desired=2).watching() as watch:
        active.kill9()
        wait_until(
            lambda: f":{standby.pid}" in (rig.client.get(KEYS.lease) or ""),
            timeout=10,
            message=lambda: f"the standby controller to take the lease:\n{standby.log()}",
        )
        watch.desire(3)
        rig.scale("pipe", 3)
        rig.wait_running(3)
    leads = rig.events("lead")
    assert len(leads) == 2
    assert str(standby.pid) in leads[-1]["by"]
    assert "leading with token 2" in standby.log()
    placed_by = {e["instance"]: e["by"] for e in rig.events("place")}
    assert str(standby.pid) in placed_by["pipe-3"]


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [True, False], ids=["with-data", "data-lost"])
def test_a_redis_restart_mid_reconcile_converges_without_duplicates(
    rig: Rig, persistent: bool
) -> None:
    up(rig)
    rig.apply(pipe(replicas=2))
    rig.wait_running(2)
    server = rig.env.servers[0]
    with Watch(rig, desired=6, window=60).watching():
        rig.scale("pipe", 6)
        server.stop()  # while the controller places the new instances
        if not persistent:
            shutil.rmtree(server.directory / "appendonlydir", ignore_errors=True)
        server.start()
        rig.wait_running(6, timeout=60)
    running = rig.running()
    labels = [r["label"] for r in running]
    assert len(set(labels)) == len(labels) == 6, labels
    assert set(labels) == set(rig.assignments()), "each assignment runs exactly one process"
    pids = [int(r["pid"]) for r in running]
    assert len(set(pids)) == 6
    for pid in pids:  # every process is an agent's child: none is left over from before
        assert rig.host_of({"pid": str(pid)}) in ("a", "b")
    if not persistent:
        assert rig.events("restore"), "the controller declared the deployment again"


def test_sigterm_of_an_agent_moves_its_instances_at_once(rig: Rig) -> None:
    up(rig)
    rig.apply(pipe(replicas=2))
    rig.wait_running(2)
    rig.agents["b"].signal(signal.SIGTERM)
    assert rig.agents["b"].wait(timeout=15) == 0
    assert "host b signed off" in rig.agents["b"].log()
    rig.wait_running(2)
    assert sorted(rig.host_of(r) for r in rig.running()) == ["a", "a"]
    assert not any(Path(f"/proc/{p}").exists() for p in _children_of(rig.agents["b"].pid))


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            if int(text[text.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_agents_and_the_controller_run_on_a_cluster(
    redis_env: RedisEnv, spawn: Spawner, tmp_path: Path
) -> None:
    """The agent's heartbeat script and reads, the controller's fenced steps: on a Cluster too
    (the namespace's hash tag keeps rcontrol's keys in one slot)."""
    if not redis_env.is_cluster:
        pytest.skip("every other test here runs on standalone")
    rig = Rig(redis_env, spawn, tmp_path)
    up(rig)
    assert rig.apply(pipe(replicas=2)).returncode == 0
    rig.wait_running(2)
    assert sorted(rig.host_of(r) for r in rig.running()) == ["a", "b"]
    rig.client.lpush("{rc}:in", "hello")
    assert rig.client.brpop(["{rc}:out"], timeout=5) == ("{rc}:out", "hello")
