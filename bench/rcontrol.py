"""Benchmark: rcontrol, in one run, on a private redis-server with two agents and a controller.

(a) converge: declare 16 lpush instances over 2 agents; the time from the declaration until all
    16 are registered and working;
(b) CPU at rest of the controller and of each agent, the 16 instances running: the CPU time
    (/proc/<pid>/stat utime + stime) they use in --rest seconds, as a share of one core
    (target: under 1% each);
(c) standby activation against a cold start of the same service, alternated, same run. A
    message waits on the deployment's (empty-handed) input; the clock starts at the scale step
    (the Lua step ``rcontrol scale`` runs, here called directly so the command's own Python
    start is not counted) and stops when the message arrives on the output:
      - activation: ``replicas 0 → 1`` with ``standby = 1``: the controller activates the
        waiting instance (target: p50 ≤ 50 ms, and ≥ 10× faster than a cold start);
      - cold start through rcontrol: the same with ``standby = 0``: placed, started by the
        agent, registered, serving;
      - cold start by hand: ``python -m mpush lpush …`` spawned here, until the message moves.
Prints the figures, the ratios and the targets.

    PYTHONPATH=src .venv/bin/python bench/rcontrol.py [--samples 20] [--rest 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and "mpush" would name this file
# instead of the package: take the directory off the path before importing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import redis  # noqa: E402

from mpush.connection import load_lua  # noqa: E402
from mpush.keys import RcontrolKeys, ServiceKeys  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402

NS = "{b}:rc"
KEYS = RcontrolKeys(NS)
REGISTRY = ServiceKeys(NS)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SPEC = """
[deployments.fleet]
service = "lpush"
replicas = 16
[deployments.fleet.settings]
in = "{b}:fleet:in"
out = ["{b}:fleet:out"]

[deployments.hot]
service = "lpush"
replicas = 0
standby = 1
[deployments.hot.settings]
in = "{b}:hot:in"
out = ["{b}:hot:out"]

[deployments.cold]
service = "lpush"
replicas = 0
[deployments.cold.settings]
in = "{b}:cold:in"
out = ["{b}:cold:out"]
"""


def wait(condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def registrations(client: redis.Redis, deployment: str) -> list[dict[str, str]]:
    ids = client.lrange(REGISTRY.ids, 0, -1)
    with client.pipeline(transaction=False) as pipe:
        for instance_id in ids:
            pipe.hgetall(REGISTRY.instance(instance_id))
        found = pipe.execute()
    return [r for r in found if r.get("label", "").startswith(f"{deployment}-")]


def active(client: redis.Redis, deployment: str) -> int:
    return sum(1 for r in registrations(client, deployment) if r.get("standby") != "1")


def standing_by(client: redis.Redis, deployment: str) -> int:
    return sum(1 for r in registrations(client, deployment) if r.get("standby") == "1")


def cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Scaler:
    """The Lua step of ``rcontrol scale`` (``store.scale_deployment``), called from here."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(load_lua("rcontrol_scale"))

    def __call__(self, name: str, replicas: int) -> None:
        keys = [KEYS.deployment(name), KEYS.events, KEYS.wake]
        status, _ = self._script(keys=keys, args=[replicas, 1000, "bench", name])
        if int(status) < 0:
            raise SystemExit(f"no deployment {name}")


def serve_one(client: redis.Redis, scale: Scaler, name: str) -> float:
    """Scale ``name`` 0 → 1 with a message waiting; seconds until it is moved."""
    client.lpush(f"{{b}}:{name}:in", "m")
    began = time.perf_counter()
    scale(name, 1)
    if client.brpop([f"{{b}}:{name}:out"], timeout=60) is None:
        raise SystemExit(f"{name}: the message was not moved within 60 s")
    took = time.perf_counter() - began
    scale(name, 0)
    wait(lambda: active(client, name) == 0, f"{name} scaled back to 0")
    return took


def by_hand(client: redis.Redis, url: str) -> float:
    client.lpush("{b}:hand:in", "m")
    began = time.perf_counter()
    argv = [sys.executable, "-m", "mpush", "lpush", "--redis", url, "--in", "{b}:hand:in"]
    argv += ["--out", "{b}:hand:out", "--service-namespace", "{b}:hand", "--log-level", "ERROR"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        if client.brpop(["{b}:hand:out"], timeout=60) is None:
            raise SystemExit("by hand: the message was not moved within 60 s")
        return time.perf_counter() - began
    finally:
        proc.terminate()
        proc.wait(30)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Figures:
    converge: float = 0.0
    rest: dict[str, float] = field(default_factory=dict)
    hot: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    hand: list[float] = field(default_factory=list)


@contextmanager
def installation(tmp: Path) -> Iterator[tuple[RedisServer, dict[str, subprocess.Popen[bytes]]]]:
    """A private redis-server, agents a and b (capacity 20) and a controller, stopped at the end."""
    server = RedisServer(tmp / "redis").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in {
            "agent a": ["agent", "--host", "a", "--capacity", "20", "--work-dir", f"{tmp}/a"],
            "agent b": ["agent", "--host", "b", "--capacity", "20", "--work-dir", f"{tmp}/b"],
            "controller": ["controller"],
        }.items():
            with (tmp / f"{name.replace(' ', '-')}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "mpush", "rcontrol", *argv, *common(server)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        yield server, procs
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


def common(server: RedisServer) -> list[str]:
    return ["--redis", server.url, "--service-namespace", NS, "--log-level", "WARNING"]


def converge(client: redis.Redis, server: RedisServer, tmp: Path) -> float:
    """Declare the deployments; seconds from the declaration to 16 instances of fleet working."""
    spec = tmp / "spec.toml"
    spec.write_text(SPEC)
    applied = subprocess.run(
        [sys.executable, "-m", "mpush", "rcontrol", "apply", str(spec), *common(server)],
        capture_output=True,
        text=True,
        check=False,
    )
    if applied.returncode != 0:
        raise SystemExit(applied.stderr)
    began = min(
        int(entry_id.split("-")[0]) / 1000
        for entry_id, fields in client.xrange(KEYS.events)
        if fields["kind"] == "apply" and fields["deployment"] == "fleet"
    )
    wait(lambda: active(client, "fleet") == 16, "16 instances of fleet")
    seconds, micros = client.time()
    return float(seconds + micros / 1e6 - began)


def at_rest(pids: dict[str, int], seconds: float) -> dict[str, float]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}


def run(options: argparse.Namespace) -> Figures:
    figures = Figures()
    with (
        tempfile.TemporaryDirectory(prefix="bench-rcontrol-") as tmp_name,
        installation(Path(tmp_name)) as (server, procs),
    ):
        client = redis.Redis.from_url(server.url, decode_responses=True)
        wait(
            lambda: client.exists(KEYS.host("a"), KEYS.host("b")) == 2 and client.get(KEYS.lease),
            "agents and controller",
        )
        figures.converge = converge(client, server, Path(tmp_name))
        wait(lambda: standing_by(client, "hot") == 1, "the standby instance")
        time.sleep(2)  # let the start-up settle before measuring rest
        figures.rest = at_rest({name: proc.pid for name, proc in procs.items()}, options.rest)
        scale = Scaler(client)
        scale("fleet", 0)
        wait(lambda: active(client, "fleet") == 0, "fleet scaled to 0")
        for sample in range(options.samples):
            wait(lambda: standing_by(client, "hot") == 1, "the standby pool refilled")
            figures.hot.append(serve_one(client, scale, "hot"))
            if sample < options.cold:
                figures.cold.append(serve_one(client, scale, "cold"))
                figures.hand.append(by_hand(client, server.url))
        client.close()
    return figures


def report(figures: Figures, rest_seconds: float) -> None:
    hot, cold, hand = figures.hot, figures.cold, figures.hand
    hot_p50, hot_p99 = statistics.median(hot), quantile(hot, 0.99)
    cold_p50, hand_p50 = statistics.median(cold), statistics.median(hand)
    print(f"converge 0 → 16 lpush instances over 2 agents: {figures.converge:6.2f} s")
    print(f"CPU at rest ({rest_seconds:g} s, 16 instances running):")
    for name, share in figures.rest.items():
        verdict = "ok" if share < 0.01 else "OVER"
        print(f"  {name:<11} {share * 100:5.2f}% of a core   (target < 1%: {verdict})")
    print(f"standby activation, scale → first message moved, over {len(hot)}:")
    print(f"  p50 {hot_p50 * 1000:7.1f} ms   p99 {hot_p99 * 1000:7.1f} ms")
    print(f"cold start through rcontrol, over {len(cold)}:   p50 {cold_p50 * 1000:7.1f} ms")
    print(f"cold start by hand (python -m mpush lpush):  p50 {hand_p50 * 1000:7.1f} ms")
    ratio = cold_p50 / hot_p50
    print(
        f"activation is {ratio:.1f}× faster than a cold start through rcontrol "
        f"({hand_p50 / hot_p50:.1f}× than one by hand); targets: p50 ≤ 50 ms "
        f"({'ok' if hot_p50 <= 0.05 else 'MISSED'}), ≥ 10× ({'ok' if ratio >= 10 else 'MISSED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="activations measured")
    parser.add_argument("--cold", type=int, default=8, help="cold starts measured (each way)")
    parser.add_argument("--rest", type=float, default=10.0, help="seconds of CPU at rest")
    options = parser.parse_args()
    report(run(options), options.rest)


if __name__ == "__main__":
    main()
