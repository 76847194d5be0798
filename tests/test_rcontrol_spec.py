"""rcontrol's declarations: the TOML schema, its one-line errors naming the key, the settings of
each deployment checked against its service's model, and the release digest."""

from __future__ import annotations

import tomllib

import pytest

from mpush.cli.app import SERVICE_COMMANDS
from mpush.config import SERVICES
from mpush.errors import ConfigError
from mpush.orchestration.rcontrol.spec import (
    Deployment,
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
    ],
)
def test_a_bad_file_names_the_key(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(line) or line in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_service_command_can_be_deployed() -> None:
    """The catalog rcontrol validates against is the list of services the mpush command runs."""
    catalog = {" ".join(entry.command): entry.settings for entry in SERVICES.values()}
    runnable = {name: cls for name, cls in SERVICE_COMMANDS.items() if name != "ndeploy pop"}
    runnable = {n: c for n, c in runnable.items() if not n.startswith("rcontrol ")}
    assert catalog == runnable
