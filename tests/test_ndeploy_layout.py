"""ndeploy's deploy root and request checks, without Redis: prune, rollback, switch, list."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mpush.config.git import RequestError, url_allowed
from mpush.orchestration.ndeploy.deployer import DeployPolicy, deploy
from mpush.orchestration.ndeploy.layout import DeployRecord, DeployRoot, LayoutError, namespace_dir
from mpush.orchestration.ndeploy.proc import StepError
from mpush.orchestration.ndeploy.request import DeployRequest
from tests.helpers import run_cli

NS = "{nd}:ndeploy"


def fake_deploy(root: DeployRoot, deploy_id: int, *, record: bool = True) -> None:
    """A deploy dir as a successful deploy leaves it (a record makes it successful)."""
    directory = root.deploy_dir(deploy_id)
    (directory / ".venv").mkdir(parents=True)
    (directory / "app.py").write_text(f"ID = {deploy_id}\n")
    if record:
        root.write_record(
            DeployRecord(
                id=deploy_id,
                git="file:///repos/hello",
                branch="main",
                commit=None,
                tag=None,
                actual_commit=f"{deploy_id:040x}",
                deploy_dir=str(directory),
                cloned=f"{1_700_000_000 + deploy_id}.000000",
                installed=f"{1_700_000_001 + deploy_id}.000000",
                service="1",
            )
        )


@pytest.fixture
def root(tmp_path: Path) -> DeployRoot:
    deploy_root = DeployRoot(tmp_path / "deploys", NS)
    deploy_root.ensure()
    return deploy_root


def test_namespace_dir_drops_hash_tag_and_colons() -> None:
    assert namespace_dir("demo:ndeploy") == "demo-ndeploy"
    assert namespace_dir("{demo}:ndeploy") == "demo-ndeploy"


def test_switch_replaces_the_link_atomically(root: DeployRoot) -> None:
    fake_deploy(root, 1)
    fake_deploy(root, 2)
    root.switch(1)
    assert os.readlink(root.current_link) == "1"
    root.switch(2)
    assert os.readlink(root.current_link) == "2"
    assert root.current_id() == 2
    assert (root.current_link / "app.py").read_text() == "ID = 2\n"
    assert not list(root.path.glob(".current.*")), "no temporary link left behind"


def test_prune_keeps_the_newest_and_never_current(root: DeployRoot) -> None:
    for deploy_id in range(1, 8):
        fake_deploy(root, deploy_id)
    root.switch(2)  # an old deploy is live (after a rollback)
    removed = root.prune(keep=3)
    assert removed == [1, 3, 4]
    assert [record.id for record in root.records()] == [2, 5, 6, 7]
    assert sorted(p.name for p in root.path.iterdir() if p.is_dir() and not p.is_symlink()) == [
        "2",
        "5",
        "6",
        "7",
    ]
    assert root.current_id() == 2


def test_prune_ignores_a_deploy_in_progress(root: DeployRoot) -> None:
    for deploy_id in range(1, 4):
        fake_deploy(root, deploy_id)
    fake_deploy(root, 4, record=False)  # being deployed: no record yet
    root.switch(3)
    assert root.prune(keep=1) == [1, 2]
    assert root.deploy_dir(4).is_dir()


def test_rollback_goes_to_the_previous_successful_deploy(root: DeployRoot) -> None:
    fake_deploy(root, 1)
    fake_deploy(root, 3)
    fake_deploy(root, 4)
    root.switch(4)
    assert root.rollback() == (4, 3)
    assert root.rollback() == (3, 1)
    with pytest.raises(LayoutError, match="no successful deploy older than 1"):
        root.rollback()
    assert root.rollback(to=4) == (1, 4)
    with pytest.raises(LayoutError, match="deploy 2 is not a successful deploy"):
        root.rollback(to=2)
    assert root.current_id() == 4


def test_discard_removes_record_and_dir(root: DeployRoot) -> None:
    fake_deploy(root, 5)
    root.discard(5)
    assert not root.deploy_dir(5).exists()
    assert not root.record_path(5).exists()
    assert not list(root.path.glob(".trash-*"))
    root.discard(5)  # twice is fine


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "git"),
        ({"git": "-uhttps://x"}, "git"),
        ({"git": "https://github.com/org/../evil/repo"}, "git"),
        ({"git": "https://github.com/org/%2e%2e/evil/repo"}, "git"),
        ({"git": "https://github.com/org/a b"}, "git"),
        ({"git": "ext::sh -c touch% /tmp/x"}, "git"),
        ({"git": "https://h/r", "commit": "xyz"}, "commit"),
        ({"git": "https://h/r", "branch": "-f"}, "branch"),
        ({"git": "https://h/r", "branch": "a..b"}, "branch"),
        ({"git": "https://h/r", "tag": "v1", "commit": "abcd"}, "tag"),
        ({"git": "https://h/r", "tag": "v1", "branch": "main"}, "tag"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, str], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        DeployRequest.from_hash(1, fields)
    assert caught.value.field == field


def test_good_request_and_allowlist() -> None:
    request = DeployRequest.from_hash(
        7, {"git": "https://github.com/org/app.git", "branch": "release/1.2", "commit": "ABCD12"}
    )
    assert request.commit == "abcd12"
    assert request.ref == "branch release/1.2 @ abcd12"
    assert url_allowed(request.git, ["https://github.com/org/"])
    assert not url_allowed(request.git, ["https://github.com/other/"])
    assert not url_allowed("https://github.com/org-evil/app", ["https://github.com/org/"])
    assert not url_allowed(request.git, [])


def test_list_and_rollback_commands(tmp_path: Path) -> None:
    root = DeployRoot(tmp_path, NS)
    for deploy_id in (1, 2, 3):
        fake_deploy(root, deploy_id)
    root.switch(3)
    common = ["--deploy-root", str(tmp_path), "--service-namespace", NS]

    listed = run_cli("ndeploy", "list", "--json", *common)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["current"] == 3
    assert [(d["id"], d["current"]) for d in doc["deploys"]] == [(1, False), (2, False), (3, True)]

    back = run_cli("ndeploy", "rollback", *common)
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines()[-1] == str(root.deploy_dir(2))
    assert root.current_id() == 2

    chosen = run_cli("ndeploy", "rollback", "1", *common)
    assert chosen.returncode == 0, chosen.stderr
    assert root.current_id() == 1

    nothing = run_cli("ndeploy", "rollback", *common)
    assert nothing.returncode == 1
    assert "no successful deploy older than 1" in nothing.stderr
    assert root.current_id() == 1

    table = run_cli("ndeploy", "list", *common)
    assert table.returncode == 0
    assert "0000000000000000000000000000000000000003"[:12] in table.stdout


async def test_a_redo_of_a_completed_deploy_answers_from_its_record(root: DeployRoot) -> None:
    fake_deploy(root, 4)  # an attempt that completed here, then died before answering
    policy = DeployPolicy(allow=("file:///repos/",), python=sys.executable)
    request = DeployRequest(id=4, git="file:///repos/hello")  # does not exist: no clone happens
    record = await deploy(request, root, policy, service="2")
    assert record.service == "1"
    assert record.actual_commit == f"{4:040x}"
    assert root.current_id() == 4


async def test_a_deploy_outside_the_allowlist_touches_nothing(root: DeployRoot) -> None:
    policy = DeployPolicy(allow=("file:///repos/",), python=sys.executable)
    with pytest.raises(StepError) as caught:
        await deploy(DeployRequest(id=1, git="file:///elsewhere/x"), root, policy, service="1")
    assert caught.value.step == "allow"
    assert list(root.path.iterdir()) == []
