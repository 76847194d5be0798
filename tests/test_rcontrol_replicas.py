"""rcontrol's replicas on Prometheus: ``mpush_deployment_replicas_{desired,ready,standby}`` from a
real ``mpush exporter`` (and ``mpush status --prometheus``) while real agents and a controller run
real instances — the same figures ``rcontrol status`` shows, following a scale and a kill -9."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpush.keys import RcontrolKeys
from tests.conftest import RedisEnv
from tests.helpers import Spawner, run_cli, wait_until
from tests.promtools import metrics_port, parse, scrape
from tests.rcontrol_rig import NS, Rig, pipe


@pytest.fixture
def rig(standalone_env: RedisEnv, spawn: Spawner, tmp_path: Path) -> Rig:
    return Rig(standalone_env, spawn, tmp_path)


def replicas(port: int, deployment: str = "pipe") -> tuple[float | None, ...]:
    got = scrape(port)
    return tuple(
        got.value(f"mpush_deployment_replicas_{kind}", namespace=NS, deployment=deployment)
        for kind in ("desired", "ready", "standby")
    )


def from_status(rig: Rig, deployment: str = "pipe") -> tuple[float, ...]:
    (entry,) = [d for d in rig.status()["deployments"] if d["name"] == deployment]
    return float(entry["desired"]), float(entry["ready"]), float(entry["standby"])


def test_the_exporter_serves_rcontrols_replicas(rig: Rig, spawn: Spawner) -> None:
    rig.agent("a")
    rig.agent("b")
    rig.controller()
    rig.wait_up("a", "b")
    exporter = spawn(
        "exporter", "--redis", rig.env.url, "--service-namespace", NS, "--port", "0",
        "--cache-ttl", "0", "--pop-timeout", "0.5",
    )  # fmt: skip
    port = metrics_port(exporter)
    assert replicas(port) == (None, None, None), "nothing declared: no series"

    rig.apply(pipe(replicas=2, standby=1))
    wait_until(
        lambda: replicas(port) == (2, 2, 1),
        timeout=30,
        message=lambda: f"2 desired, 2 ready, 1 standby: {replicas(port)}\n{rig.logs()}",
    )
    assert from_status(rig) == (2, 2, 1), "the exporter and rcontrol status agree"

    rig.scale("pipe", 3)  # the standby instance is activated, and the pool refilled
    wait_until(lambda: replicas(port) == (3, 3, 1), timeout=30, message="3, 3, 1 after the scale")

    victim = rig.agents["b"]
    victim.kill9()  # its instances stop; the controller reschedules them on a
    wait_until(
        lambda: replicas(port)[1] < 3,
        timeout=15,
        message="fewer ready while b's instances are lost",
    )
    wait_until(lambda: replicas(port) == (3, 3, 1), timeout=40, message="back to 3, 3, 1 on a")

    printed = run_cli("status", "--redis", rig.env.url, "--service-namespace", NS, "--prometheus")
    assert printed.returncode == 0, printed.stderr
    once = parse(printed.stdout)
    ready = once.value("mpush_deployment_replicas_ready", namespace=NS, deployment="pipe")
    assert ready == 3, "mpush status --prometheus reads the same"


def test_declared_replicas_are_read_on_a_cluster(
    redis_env: RedisEnv, spawn: Spawner, tmp_path: Path
) -> None:
    """The read itself on both kinds of Redis (declarations and a registration read back), with
    no agent running: desired as declared, none ready."""
    rig = Rig(redis_env, spawn, tmp_path)
    applied = rig.apply(pipe(replicas=4, standby=2))
    assert applied.returncode == 0, applied.stderr
    exporter = spawn(
        "exporter", "--redis", redis_env.url, "--service-namespace", NS, "--port", "0",
        "--cache-ttl", "0",
    )  # fmt: skip
    port = metrics_port(exporter)
    wait_until(lambda: replicas(port) == (4, 0, 0), message=lambda: f"{replicas(port)}")
    assert scrape(port).value("mpush_instances", namespace=NS, service="exporter") == 1


def test_a_key_of_the_wrong_type_leaves_replicas_out_not_the_read(
    standalone_env: RedisEnv, spawn: Spawner
) -> None:
    standalone_env.client.set(RcontrolKeys(NS).deployments, "not a set")
    printed = run_cli(
        "status", "--redis", standalone_env.url, "--service-namespace", NS, "--prometheus"
    )
    assert printed.returncode == 0, printed.stderr
    got = parse(printed.stdout)
    assert got.value("mpush_read_truncated", namespace=NS, what="replicas") == 1
    assert got.value("mpush_registry_stale_ids", namespace=NS) == 0
