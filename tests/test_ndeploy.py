"""ndeploy as real processes on real Redis, deploying real git repositories made by the test.

Tests about what is deployed (refs, failures, the deploy command) run on standalone only: Redis
plays no part in them beyond what the Cluster tests already cover. Tests about claiming, recovery
and answering run on standalone and Cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import RedisEnv
from tests.helpers import ServiceProcess, Spawner, run_cli, stopped, wait_until
from tests.ndeploy_repos import Repos, make_repos

NS = "{nd}:ndeploy"
FAST = ("--no-venv-pip", "--pip-arg=--no-index")


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repos:
    return make_repos(tmp_path_factory.mktemp("ndeploy-repos"))


class Ndeploy:
    """One test's view of ndeploy: its deploy root, its instances, and a requester."""

    def __init__(self, env: RedisEnv, spawn: Spawner, repos: Repos, root: Path) -> None:
        self.env = env
        self.spawn = spawn
        self.repos = repos
        self.root = root
        self.dir = root / "nd-ndeploy"

    def args(self, command: str, *extra: str) -> list[str]:
        return [
            "ndeploy",
            command,
            *extra,
            "--redis",
            self.env.url,
            "--service-namespace",
            NS,
            "--deploy-root",
            str(self.root),
        ]

    def service_args(self, command: str, *extra: str) -> list[str]:
        return self.args(command, *extra, "--allow", self.repos.prefix, "--pop-timeout", "0.5")

    def serve(self, *extra: str, env: dict[str, str] | None = None) -> ServiceProcess:
        proc = self.spawn(*self.service_args("serve", *FAST, *extra), env=env)
        proc.wait_for_log("ndeploy started")
        return proc

    def submit(self, **fields: str) -> int:
        """What a requester does, as with redis-cli: INCR, HSET, LPUSH."""
        client = self.env.client
        request_id = int(client.incr(f"{NS}:req:id"))
        client.hset(f"{NS}:req:{request_id}", mapping=fields)
        client.lpush(f"{NS}:req", request_id)
        return request_id

    def response(self, request_id: int, timeout: float = 60) -> dict[str, str]:
        key = f"{NS}:res:{request_id}"
        return wait_until(
            lambda: self.env.client.hgetall(key), timeout=timeout, message=f"a response in {key}"
        )

    def current(self) -> str | None:
        link = self.dir / "current"
        return os.readlink(link) if link.is_symlink() else None

    def deploy_dirs(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(
            (p.name for p in self.dir.iterdir() if p.name.isdecimal() and p.is_dir()), key=int
        )


@pytest.fixture
def nd(redis_env: RedisEnv, spawn: Spawner, repos: Repos, tmp_path: Path) -> Ndeploy:
    return Ndeploy(redis_env, spawn, repos, tmp_path / "deploys")


@pytest.fixture
def nd_standalone(
    standalone_env: RedisEnv, spawn: Spawner, repos: Repos, tmp_path: Path
) -> Ndeploy:
    return Ndeploy(standalone_env, spawn, repos, tmp_path / "deploys")


def installed_version(deploy_dir: str) -> str:
    python = Path(deploy_dir) / ".venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", "import hello; print(hello.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def redis_now(env: RedisEnv) -> float:
    seconds, micros = env.client.time()
    return float(seconds) + float(micros) / 1e6


# -- what gets deployed --------------------------------------------------------------------------


def test_branch_commit_and_tag_select_what_is_deployed(nd_standalone: Ndeploy) -> None:
    nd = nd_standalone
    url, commits = nd.repos.url(nd.repos.hello), nd.repos.commits
    began = redis_now(nd.env)
    nd.serve()
    cases = [
        ({"git": url}, "v2"),  # the default branch, main
        ({"git": url, "branch": "feature"}, "v3"),
        ({"git": url, "commit": commits["v1"][:10]}, "v1"),
        ({"git": url, "branch": "feature", "commit": commits["v2"]}, "v2"),
        ({"git": url, "tag": "v1"}, "v1"),
    ]
    ids = [nd.submit(**fields) for fields, _ in cases]
    for request_id, (fields, expected) in zip(ids, cases, strict=True):
        response = nd.response(request_id)
        assert "error" not in response, f"{fields}: {response}"
        assert response["actualCommit"] == commits[expected], fields
        assert response["deployDir"] == str(nd.dir / str(request_id))
        assert installed_version(response["deployDir"]) == expected[1:], fields
        assert response["service"] == "1"
        stamps = [float(response[name]) for name in ("cloned", "installed", "finished")]
        assert began <= stamps[0] <= stamps[1] <= stamps[2] <= redis_now(nd.env)
    assert nd.current() == str(ids[-1])
    listed = run_cli(*nd.args("list", "--json"))
    branches = [d["branch"] for d in json.loads(listed.stdout)["deploys"]]
    assert branches == ["main", "feature", None, "feature", None]


def test_deploy_command_prints_the_deploy_dir_last(nd_standalone: Ndeploy) -> None:
    nd = nd_standalone
    nd.serve()
    result = run_cli(*nd.args("deploy", nd.repos.url(nd.repos.hello), "--tag", "v1"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"request 1 queued on {NS}:req"
    assert nd.repos.commits["v1"] in lines[-2]
    assert lines[-1] == str(nd.dir / "1")
    assert nd.current() == "1"

    failed = run_cli(*nd.args("deploy", nd.repos.url(nd.repos.broken)))
    assert failed.returncode == 1
    assert "request 2 failed at install: pip install exited with" in failed.stderr
    assert "Traceback" not in failed.stderr.split("failed at install")[0]
    assert nd.current() == "1"


def test_failed_deploys_answer_with_the_step_and_leave_current_alone(
    nd_standalone: Ndeploy,
) -> None:
    nd = nd_standalone
    repos, client = nd.repos, nd.env.client
    hello = repos.url(repos.hello)
    proc = nd.serve()
    good = nd.submit(git=hello)
    assert "error" not in nd.response(good)
    failures = {
        nd.submit(git=repos.url(repos.broken)): "install",
        nd.submit(git=repos.prefix + "no-such-repo"): "clone",
        nd.submit(git="file:///etc/"): "allow",
        nd.submit(git=repos.prefix + "x/../../etc"): "request",
        nd.submit(git=hello, branch="no-such-branch"): "clone",
        nd.submit(git=hello, branch="main", commit=repos.commits["v3"]): "checkout",
        nd.submit(git=hello, commit="0123456789abcdef"): "checkout",
        nd.submit(git=hello, tag="v1", commit=repos.commits["v1"]): "request",
        nd.submit(branch="main"): "request",
    }
    client.lpush(f"{NS}:req", "not-an-id")
    for request_id, step in failures.items():
        response = nd.response(request_id)
        assert response.get("failedStep") == step, f"request {request_id}: {response}"
        assert response["error"], response
        assert response["service"] == "1"
        assert "deployDir" not in response
        assert client.lrange(f"{NS}:res:{request_id}:done", 0, -1) == ["error"]
    wait_until(lambda: client.lrange(f"{NS}:req:malformed", 0, -1) == ["not-an-id"])
    assert nd.current() == str(good)
    assert nd.deploy_dirs() == [str(good)], "failed deploys leave no dir behind"
    assert not list(nd.dir.glob(".trash-*"))
    assert client.llen(f"{NS}:inflight:1") == 0
    assert proc.alive
    metric = client.hgetall(f"{NS}:metrics:deploy")
    wait_until(lambda: client.hget(f"{NS}:metrics:deploy", "failed") == str(len(failures)))
    assert client.hget(f"{NS}:metrics:deploy", "malformed") == "1", metric


def test_cli_refusals_and_the_deploy_wait(nd_standalone: Ndeploy) -> None:
    nd = nd_standalone
    result = run_cli(*nd.args("serve"))
    assert result.returncode == 2
    assert "allow: give at least one git URL prefix" in result.stderr
    bad = run_cli(*nd.args("deploy", "file:///x", "--commit", "nothex"))
    assert bad.returncode == 2
    assert "commit: must be 4 to 40 hex digits" in bad.stderr
    assert nd.env.client.llen(f"{NS}:req") == 0, "nothing submitted"

    unanswered = run_cli(*nd.args("deploy", nd.repos.url(nd.repos.hello), "--wait", "0.5"))
    assert unanswered.returncode == 124, unanswered.stderr
    assert "no response to request 1 within 0.5s; it stays queued" in unanswered.stderr
    assert nd.env.client.lrange(f"{NS}:req", 0, -1) == ["1"]
    assert nd.env.client.hgetall(f"{NS}:req:1") == {"git": nd.repos.url(nd.repos.hello)}


# -- claiming, recovery, answering (standalone and Cluster) --------------------------------------


def test_pop_deploys_one_request_or_times_out(nd: Ndeploy) -> None:
    began = time.monotonic()
    idle = run_cli(*nd.service_args("pop", "1"))
    assert idle.returncode == 124, idle.stderr
    assert f"no request on {NS}:req within 1s" in idle.stderr
    assert time.monotonic() - began < 15

    request_id = nd.submit(git=nd.repos.url(nd.repos.hello), tag="v1")
    popped = run_cli(*nd.service_args("pop", "60"))  # the default: a venv with its own pip
    assert popped.returncode == 0, popped.stderr
    response = nd.env.client.hgetall(f"{NS}:res:{request_id}")
    assert response["actualCommit"] == nd.repos.commits["v1"]
    assert installed_version(response["deployDir"]) == "1"
    assert (Path(response["deployDir"]) / ".venv" / "bin" / "pip").exists()

    failing = nd.submit(git=nd.repos.url(nd.repos.broken))
    other = nd.submit(git=nd.repos.url(nd.repos.hello))
    popped = run_cli(*nd.service_args("pop", "60", *FAST))
    assert popped.returncode == 1, popped.stderr
    assert nd.env.client.hget(f"{NS}:res:{failing}", "failedStep") == "install"
    assert nd.env.client.lrange(f"{NS}:req", 0, -1) == [str(other)], "pop takes one request"
    assert nd.env.client.lrange(f"{NS}:service:ids", 0, -1) == [], "each pop deregistered"
    assert nd.current() == str(request_id)


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes with an argument under ``path`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(arg == str(path) or arg.startswith(f"{path}/") for arg in args):
            found.append(" ".join(args))
    return found


def test_kill9_mid_deploy_another_instance_redoes_it(nd: Ndeploy, tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # never opened: the first attempt's install waits forever
    fast_expiry = ("--service-expire", "2", "--service-renew", "0.5", "--recover-interval", "0.3")
    first = nd.serve(*fast_expiry, env={"HELLO_BUILD_GATE": str(gate)})
    request_id = nd.submit(git=nd.repos.url(nd.repos.hello))
    deploy_dir = nd.dir / str(request_id)
    try:
        wait_until(lambda: Path(f"{gate}.waiting").exists(), message="the first install to start")
        assert nd.env.client.lrange(f"{NS}:inflight:1", 0, -1) == [str(request_id)]
        first.kill9()
        assert processes_using(deploy_dir), "pip's children outlive the kill -9"

        second = nd.serve(*fast_expiry)
        response = nd.response(request_id, timeout=60)
        assert "error" not in response, response
        assert response["service"] == "2"
        assert installed_version(response["deployDir"]) == "2"
        assert nd.env.client.hget(f"{NS}:req:{request_id}", "attempts") == "2"
        assert "requeued 1 request(s) held by instance 1" in second.log()
        assert "left by an earlier attempt" in second.log()
        assert processes_using(deploy_dir) == [], "the first attempt's stragglers were stopped"
        assert nd.current() == str(request_id)
        assert nd.deploy_dirs() == [str(request_id)]
        assert nd.env.client.exists(f"{NS}:inflight:1") == 0
        assert nd.env.client.smembers(f"{NS}:inflight") == {"2"}
    finally:
        gate.touch()  # releases any straggler a failed assertion left behind


def test_an_instance_that_lost_its_claim_does_not_answer(nd: Ndeploy, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    first = nd.serve(env={"HELLO_BUILD_GATE": str(gate)})
    request_id = nd.submit(git=nd.repos.url(nd.repos.hello))
    wait_until(lambda: Path(f"{gate}.waiting").exists(), message="the first install to start")
    second = nd.serve("--recover-interval", "0.2")
    client = nd.env.client
    client.delete(f"{NS}:service:1")  # remote shutdown: instance 1's claim is up for recovery
    wait_until(
        lambda: client.lrange(f"{NS}:inflight:2", 0, -1) == [str(request_id)],
        message="instance 2 to take the request over",
    )
    gate.touch()  # instance 1 completes within its shutdown grace, but may no longer answer
    assert first.wait(timeout=20) == 0
    assert "our claim was taken over" in first.log()
    response = nd.response(request_id)
    assert "error" not in response, response
    second.wait_for_log("completed by an earlier attempt")
    assert client.lrange(f"{NS}:res:{request_id}:done", 0, -1) == ["ok"], "answered once"
    assert nd.current() == str(request_id)
    assert nd.deploy_dirs() == [str(request_id)]


def test_two_instances_ten_requests_each_deployed_once(nd: Ndeploy) -> None:
    first, second = nd.serve("--keep", "3"), nd.serve("--keep", "3")
    url = nd.repos.url(nd.repos.hello)
    ids = [nd.submit(git=url) for _ in range(10)]
    responses = {request_id: nd.response(request_id, timeout=90) for request_id in ids}
    assert all("error" not in r for r in responses.values()), responses
    deployed_by: dict[str, list[int]] = {"1": [], "2": []}
    for request_id, response in responses.items():
        deployed_by[response["service"]].append(request_id)
        assert nd.env.client.hget(f"{NS}:req:{request_id}", "attempts") == "1"
    assert sorted(deployed_by["1"] + deployed_by["2"]) == ids
    assert deployed_by["1"], f"both instances worked: {deployed_by}"
    assert deployed_by["2"], f"both instances worked: {deployed_by}"
    done = re.compile(r"deploy (\d+): \S+ at [0-9a-f]{12} in ")
    for proc, instance in ((first, "1"), (second, "2")):
        logged = sorted(int(m.group(1)) for m in done.finditer(proc.log()))
        assert logged == sorted(deployed_by[instance]), "each deployed once, by its answerer"
    current = nd.current()
    assert current is not None
    assert set(nd.deploy_dirs()) == {str(i) for i in ids[-3:]} | {current}, "pruned to 3"


def test_sigterm_mid_deploy_gives_the_request_back(nd_standalone: Ndeploy, tmp_path: Path) -> None:
    # Standalone only: the give-back is the recovery script that the kill -9 test runs on Cluster.
    nd = nd_standalone
    gate = tmp_path / "gate"
    first = nd.serve(env={"HELLO_BUILD_GATE": str(gate)})
    request_id = nd.submit(git=nd.repos.url(nd.repos.hello))
    wait_until(lambda: Path(f"{gate}.waiting").exists(), message="the install to start")
    first.signal(15)
    assert first.wait(timeout=20) == 0
    client = nd.env.client
    assert client.lrange(f"{NS}:req", 0, -1) == [str(request_id)], "given back"
    assert client.exists(f"{NS}:inflight:1") == 0
    assert client.hget(f"{NS}:req:{request_id}", "attempts") == "0"
    assert nd.deploy_dirs() == [], "the half-made dir is removed"
    assert nd.current() is None
    gate.touch()
    nd.serve()
    assert "error" not in nd.response(request_id)
    assert nd.current() == str(request_id)


def test_redis_restart_while_waiting_resumes(nd_standalone: Ndeploy) -> None:
    nd = nd_standalone
    proc = nd.serve()
    with stopped(nd.env.servers[0]):
        proc.wait_for_log("unavailable", timeout=20)
    nd.env.wait_healthy()
    request_id = nd.submit(git=nd.repos.url(nd.repos.hello))
    assert "error" not in nd.response(request_id)
    proc.wait_for_log("back after")
    assert proc.log().count("unavailable") == 1, "the outage is logged once"


def test_cluster_needs_a_hash_tagged_namespace(redis_env: RedisEnv, tmp_path: Path) -> None:
    if not redis_env.is_cluster:
        pytest.skip("slots exist only on Cluster")
    common = ["--redis", redis_env.url, "--service-namespace", "demo:ndeploy"]
    served = run_cli(
        "ndeploy", "serve", *common, "--allow", "file:///", "--deploy-root", str(tmp_path)
    )
    assert served.returncode == 2, served.stderr
    assert "Traceback" not in served.stderr
    assert "demo:ndeploy:req" in served.stderr
    assert "--service-namespace {demo}:ndeploy" in served.stderr
    submitted = run_cli("ndeploy", "deploy", "file:///x", *common)
    assert submitted.returncode == 2
    assert "--service-namespace {demo}:ndeploy" in submitted.stderr
