"""Benchmark: autoscaling under a step of load, in one run, on a private redis-server with two
agents and a controller (default settings: --scale-interval 0.5, --tick 1).

A handler busy 20 ms per request (``bench/apps/busy_app.py``: one process answers at most 50 a
second) serves a queue; at the step, request messages arrive at --rate a second (120: more than
twice what one replica serves) for --load seconds, then stop. Three deployments of the same
handler take the same step in turn:

  fixed     1 replica, no autoscaling (the baseline);
  scaled    autoscale min 1, max 6, queue target 20 — no standby instances;
  standby   the same with 2 standby instances (started, registered, waiting).

For each: p50 and p99 of the response time (request sent → answer back, every request of the
step), the time from the step until the queue is back under its target after it went over, the
time until the first added replica answers, and the most replicas seen. Prints the ratios
against the fixed replica and the targets: the queue back under target within 10 s of the step;
with standby instances, the first added replica serving within 1 s.

    PYTHONPATH=src .venv/bin/python bench/autoscale.py [--rate 120] [--load 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and "mpush" would name this file
# instead of the package: take the directory off the path before importing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import redis  # noqa: E402

from mpush.http.messages import Response, encode_request  # noqa: E402
from mpush.keys import RcontrolKeys, ServiceKeys  # noqa: E402
from mpush.orchestration.redisserver import RedisServer  # noqa: E402

NS = "{b}:as"
KEYS = RcontrolKeys(NS)
REGISTRY = ServiceKeys(NS)
APPS = Path(__file__).resolve().parent / "apps"
TARGET = 20

DEPLOYMENT = """
[deployments.NAME]
service = "handler"
replicas = 1
standby = STANDBY
[deployments.NAME.settings]
handler = "busy_app:work"
in = "{b}:NAME"
batch = 1
"""

AUTOSCALE = f"""
[deployments.NAME.autoscale]
min = 1
max = 6
queue = "{{b}}:NAME"
target = {TARGET}
"""


def wait(condition: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def running(client: redis.Redis, deployment: str) -> list[dict[str, str]]:
    ids = client.lrange(REGISTRY.ids, 0, -1)
    with client.pipeline(transaction=False) as pipe:
        for instance_id in ids:
            pipe.hgetall(REGISTRY.instance(instance_id))
        found = pipe.execute()
    return [
        r
        for r in found
        if r.get("label", "").startswith(f"{deployment}-") and r.get("standby") != "1"
    ]


def standing_by(client: redis.Redis, deployment: str) -> int:
    ids = client.lrange(REGISTRY.ids, 0, -1)
    found = [client.hgetall(REGISTRY.instance(i)) for i in ids]
    return sum(
        1
        for r in found
        if r.get("label", "").startswith(f"{deployment}-") and r.get("standby") == "1"
    )


@dataclass
class Step:
    """What one deployment did under the step."""

    name: str
    latencies: list[float] = field(default_factory=list)
    under_target: float | None = None  # seconds from the step
    first_added: float | None = None  # seconds from the step
    most: int = 1


class Load:
    """Request messages at ``rate`` a second onto ``queue`` for ``seconds``; every answer timed;
    the queue's length and the replicas sampled."""

    def __init__(self, client: redis.Redis, queue: str, rate: float, seconds: float) -> None:
        self.client, self.queue, self.rate, self.seconds = client, queue, rate, seconds
        self.reply = f"{queue}:replies"
        self.sent: dict[str, float] = {}
        self.answered: list[tuple[float, float, str]] = []  # (at, latency, pid)
        self.lengths: list[tuple[float, int]] = []
        self.done = threading.Event()

    def send(self, began: float) -> None:
        count = 0
        while (elapsed := time.monotonic() - began) < self.seconds:
            due = int(elapsed * self.rate) - count
            if due > 0:
                now = time.time()
                messages = []
                for _ in range(due):
                    request_id = uuid.uuid4().hex
                    self.sent[request_id] = time.monotonic()
                    messages.append(
                        encode_request(
                            request_id,
                            "GET",
                            "/",
                            "",
                            {},
                            b"",
                            ts=now,
                            deadline=now + 120,
                            reply=self.reply,
                        )
                    )
                self.client.lpush(self.queue, *messages)
                count += due
            time.sleep(0.005)

    def receive(self) -> None:
        reader = redis.Redis(connection_pool=self.client.connection_pool)
        while not self.done.is_set() or len(self.answered) < len(self.sent):
            popped = reader.brpop([self.reply], timeout=0.5)
            if popped is None:
                continue
            response = Response.from_json(popped[1])
            at = time.monotonic()
            sent = self.sent.get(response.id)
            if sent is not None:
                self.answered.append((at, at - sent, response.body.decode()))

    def sample(self, stop: threading.Event) -> None:
        while not stop.wait(0.05):
            self.lengths.append((time.monotonic(), int(self.client.llen(self.queue))))


def step(client: redis.Redis, name: str, rate: float, seconds: float) -> Step:
    queue = f"{{b}}:{name}"
    initial = {r["pid"] for r in running(client, name)}
    load = Load(client, queue, rate, seconds)
    stop = threading.Event()
    replicas: list[int] = []

    def count() -> None:
        while not stop.wait(0.1):
            replicas.append(len(running(client, name)))

    threads = [
        threading.Thread(target=load.receive, daemon=True),
        threading.Thread(target=load.sample, args=(stop,), daemon=True),
        threading.Thread(target=count, daemon=True),
    ]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    load.send(began)
    wait(lambda: len(load.answered) >= len(load.sent), f"{name}: every answer", timeout=300)
    load.done.set()
    stop.set()
    for thread in threads:
        thread.join(10)
    result = Step(name, [latency for _, latency, _ in load.answered])
    over = False
    for at, length in load.lengths:
        over = over or length > TARGET
        if over and length <= TARGET:
            result.under_target = at - began
            break
    added = [at for at, _, pid in load.answered if pid not in initial]
    result.first_added = min(added) - began if added else None
    result.most = max(replicas, default=1)
    return result


def apply(server: RedisServer, text: str, tmp: Path) -> None:
    path = tmp / f"spec-{time.monotonic_ns()}.toml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "mpush", "rcontrol", "apply", str(path), *common(server)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)


def common(server: RedisServer) -> list[str]:
    return ["--redis", server.url, "--service-namespace", NS, "--log-level", "WARNING"]


@contextmanager
def installation(tmp: Path) -> Iterator[RedisServer]:
    """A private redis-server, agents a and b and a controller, stopped at the end."""
    server = RedisServer(tmp / "redis").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPUSH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, argv in {
            "agent-a": ["agent", "--host", "a", "--work-dir", f"{tmp}/a"],
            "agent-b": ["agent", "--host", "b", "--work-dir", f"{tmp}/b"],
            "controller": ["controller"],
        }.items():
            with (tmp / f"{name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "mpush", "rcontrol", *argv, *common(server)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
        yield server
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()


def run(options: argparse.Namespace) -> list[Step]:
    steps = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-autoscale-") as tmp_name,
        installation(Path(tmp_name)) as server,
    ):
        tmp = Path(tmp_name)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        wait(
            lambda: client.exists(KEYS.host("a"), KEYS.host("b")) == 2 and client.get(KEYS.lease),
            "agents and controller",
        )
        for name, standby, scaled in (("fixed", 0, False), ("scaled", 0, True),
                                      ("standby", 2, True)):  # fmt: skip
            text = DEPLOYMENT.replace("STANDBY", str(standby))
            if scaled:
                text += AUTOSCALE
            apply(server, text.replace("NAME", name), tmp)
            wait(lambda n=name: len(running(client, n)) == 1, f"{name} running")
            wait(lambda n=name, s=standby: standing_by(client, n) == s, f"{name}'s standby")
            time.sleep(1)  # the autoscaler's first readings
            steps.append(step(client, name, options.rate, options.load))
            done = subprocess.run(
                [sys.executable, "-m", "mpush", "rcontrol", "delete", name, *common(server)],
                capture_output=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            wait(lambda n=name: not running(client, n), f"{name} gone")
        client.close()
    return steps


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seconds(value: float | None) -> str:
    return "    never" if value is None else f"{value:7.2f} s"


def report(steps: list[Step], options: argparse.Namespace) -> None:
    print(
        f"a step from idle to {options.rate:g} requests/s for {options.load:g} s "
        "(one replica serves 50/s); queue target 20, max 6 replicas"
    )
    print(f"{'':8} {'p50':>9} {'p99':>9} {'under target':>13} {'1st added':>10} {'most':>5}")
    for s in steps:
        p50, p99 = statistics.median(s.latencies), quantile(s.latencies, 0.99)
        print(
            f"{s.name:8} {p50:7.3f} s {p99:7.3f} s {seconds(s.under_target):>13} "
            f"{seconds(s.first_added):>10} {s.most:5d}"
        )
    fixed = {s.name: s for s in steps}["fixed"]
    base_p99 = quantile(fixed.latencies, 0.99)
    for s in steps[1:]:
        p99 = quantile(s.latencies, 0.99)
        print(f"{s.name}: p99 {base_p99 / p99:.1f}× lower than the fixed replica's")
    scaled = {s.name: s for s in steps}
    for name in ("scaled", "standby"):
        under = scaled[name].under_target
        verdict = "ok" if under is not None and under <= 10 else "MISSED"
        print(f"target: {name}: queue back under target within 10 s of the step: {verdict}")
    first = scaled["standby"].first_added
    verdict = "ok" if first is not None and first <= 1 else "MISSED"
    print(f"target: standby: the first added replica serving within 1 s: {verdict}")
    cold = scaled["scaled"].first_added
    if first and cold:
        print(f"standby instances: the first added replica serves {cold / first:.1f}× sooner")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=120.0, help="requests a second at the step")
    parser.add_argument("--load", type=float, default=10.0, help="seconds the load lasts")
    options = parser.parse_args()
    report(run(options), options)


if __name__ == "__main__":
    main()
