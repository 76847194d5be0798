"""rcontrol's declarations: the TOML schema, its one-line errors naming the key, the settings of
each deployment checked against its service's model, and the release digest."""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from mpush.cli.app import SERVICE_COMMANDS
from mpush.config import SERVICES
from mpush.errors import ConfigError
from mpush.orchestration.rcontrol.spec import (
    Autoscale,
    Deployment,
    Source,
    canonical,
    check_settings,
    parse_spec,
)

GOOD = """
[deployments.pipe]
service = "lpush"
replicas = 2
standby = 1
labels = {zone = "a"}
[deployments.pipe.settings]
in = "{t}:in"
out = ["{t}:out"]
popTimeout = 0.5

[deployments.tick]
command = ["python3", "-c", "import time; time.sleep(60)"]
max_surge = 0
"""


def parse(text: str) -> None:
    spec = parse_spec(tomllib.loads(text))
    check_settings(spec, namespace="{t}:rc", redis="redis://127.0.0.1:1/0")


def test_a_good_file() -> None:
    spec = parse_spec(tomllib.loads(GOOD))
    check_settings(spec, namespace="{t}:rc", redis="redis://127.0.0.1:1/0")
    pipe, tick = spec.deployments["pipe"], spec.deployments["tick"]
    assert (pipe.service, pipe.replicas, pipe.standby) == ("lpush", 2, 1)
    assert pipe.labels == {"zone": "a"}
    assert (tick.replicas, tick.standby, tick.max_surge) == (1, 0, 0)
    assert tick.run.describe() == "python3 -c 'import time; time.sleep(60)'"


def test_the_release_names_what_runs_and_nothing_else() -> None:
    pipe = parse_spec(tomllib.loads(GOOD)).deployments["pipe"]
    scaled = pipe.model_copy(update={"replicas": 7, "standby": 0, "labels": {}})
    assert scaled.release == pipe.release
    changed = pipe.model_copy(update={"settings": {**pipe.settings, "batch": 10}})
    assert changed.release != pipe.release
    assert len(pipe.release) == 12
    # the canonical JSON reads back to the same declaration
    assert Deployment.model_validate_json(canonical(pipe)) == pipe


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[deployments.web]\nservice = "lpush"\nreplicas = -1\n',
            "config: deployments.web.replicas: Input should be greater than or equal to 0 (got -1)",
        ),
        ('[deployments.web]\nservice = "lpush"\nreplica = 2\n', "deployments.web.replica"),
        ('[deployments.Web_1]\nservice = "lpush"\n', "config: deployments.Web_1: a deployment"),
        ('[deployments.web]\nservice = "nope"\n', "deployments.web.service: 'nope' is not"),
        ("[deployments.web]\nreplicas = 1\n", "deployments.web.service: give exactly one"),
        ("[deployments.web]\ncommand = []\n", "deployments.web.command: give the program"),
        ('[deployments.web]\ncommand = ["x"]\nstandby = 1\n', "deployments.web.standby: only"),
        (
            '[deployments.web]\ncommand = ["x"]\n[deployments.web.settings]\nbatch = 1\n',
            "deployments.web.settings: only a service has settings",
        ),
        (
            '[deployments.web]\nservice = "lpush"\nlabels = {zone = "a b"}\n',
            "deployments.web.labels.zone",
        ),
        ("[releases]\nx = 1\n", "config: releases: unknown key"),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.settings]\n'
            'in = "a"\nout = ["b"]\nbatch = 99999\n',
            "config: deployments.web.settings.batch: Input should be less than or equal to 5000 "
            "(got 99999)",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.settings]\n'
            'in = "a"\nout = ["b"]\nbogus = 1\n',
            "config: deployments.web.settings.bogus: unknown setting",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.settings]\nin = "a"\n',
            "config: deployments.web.settings.out: required",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.settings]\n'
            'in = "a"\nout = ["b"]\nservice_namespace = "x"\n',
            "config: deployments.web.settings.service_namespace: set by rcontrol",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.autoscale]\nmin = 4\nmax = 2\n'
            'queue = "q"\n',
            "config: deployments.web.autoscale.min: 4 is more than max (2)",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.autoscale]\nmax = 2\n',
            "config: deployments.web.autoscale.queue: give a queue",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.autoscale]\nmax = 2\n'
            'queue = "q"\nwindows = 3\n',
            "config: deployments.web.autoscale.windows: unknown key",
        ),
        (
            '[deployments.web]\ncommand = ["x"]\n[deployments.web.autoscale]\nmax = 2\n'
            "response_time = 0.2\n",
            "config: deployments.web.autoscale.response_metric: a command publishes no metric",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.source]\n'
            'git = "-oProxyCommand=x"\n',
            "config: deployments.web.source.git: not an acceptable git URL",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.source]\n'
            'git = "https://h/r.git"\ntag = "v1"\ncommit = "abcd"\n',
            "config: deployments.web.source.tag: give a tag or a commit, not both",
        ),
        (
            '[deployments.web]\nservice = "lpush"\n[deployments.web.rollout]\nverify = -1\n',
            "config: deployments.web.rollout.verify: Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_bad_file_names_the_key(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(line) or line in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_source_makes_a_release_and_no_source_keeps_the_old_digests() -> None:
    plain = Deployment(service="lpush", settings={"in": "a", "out": ["b"]})
    before_sources = {"command": None, "service": "lpush", "settings": {"in": "a", "out": ["b"]}}
    digest = hashlib.sha256(canonical(before_sources).encode()).hexdigest()[:12]
    assert plain.release == digest, "running deployments are not replaced by an upgrade"
    built = plain.model_copy(update={"source": Source(git="https://h/r.git", tag="v1")})
    assert built.release != plain.release
    moved = plain.model_copy(update={"source": Source(git="https://h/r.git", tag="v2")})
    assert moved.release != built.release
    scaled = plain.model_copy(update={"autoscale": Autoscale(max=3, queue="a")})
    assert scaled.release == plain.release, "autoscaling is no new release"
    assert Deployment.model_validate_json(canonical(built)) == built


def test_every_service_command_can_be_deployed() -> None:
    """The catalog rcontrol validates against is the list of services the mpush command runs."""
    catalog = {" ".join(entry.command): entry.settings for entry in SERVICES.values()}
    runnable = {name: cls for name, cls in SERVICE_COMMANDS.items() if name != "ndeploy pop"}
    runnable = {n: c for n, c in runnable.items() if not n.startswith("rcontrol ")}
    assert catalog == runnable
