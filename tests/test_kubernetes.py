"""``mpush rcontrol export --kubernetes``: its manifests validate — the built-in kinds against
Kubernetes' own schemas (kubernetes-validate, offline, strict), KEDA's kinds against KEDA's own
models (cloudcoil-models-keda) — for every declaration file the project ships or shows (the
demo's, docs/rcontrol.md's, docs/kubernetes.md's); a ScaledObject carries the declared queue and
target; no password appears in plain text anywhere; and an exported pod, run as a real process
with its env and ConfigMap, works and answers its probes."""

from __future__ import annotations

import importlib
import re
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import kubernetes_validate
import pytest
import redis
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from pydantic import BaseModel

from mpush import keys
from mpush.config.base import checked_elsewhere
from mpush.keys import ServiceKeys
from mpush.orchestration.kubernetes.declarations import parse_declarations
from mpush.orchestration.kubernetes.export import ExportOptions, export_kubernetes
from mpush.orchestration.rcontrol.spec import check_settings
from mpush.orchestration.redisserver import RedisServer, free_port
from tests.helpers import ServiceProcess, run_cli, wait_until
from tests.rcontrol_rig import pipe

ROOT = Path(__file__).resolve().parent.parent
NS = "{web}:rc"
DEMO_NS = "demo:web"
REDIS = "redis://redis.web.svc:6379/0"
KEDA: dict[str, type[BaseModel]] = {
    "ScaledObject": ScaledObject,
    "TriggerAuthentication": TriggerAuthentication,
}

WEB = """
[deployments.gateway]
service = "hgateway"
replicas = 2
labels = {zone = "eu"}
[deployments.gateway.settings]
port = 8080
queue = "{web}:requests"

[deployments.router]
service = "hrouter"
[deployments.router.settings]
in = "{web}:requests"
route = ["GET ^/ {web}:files files"]

[deployments.files]
service = "hfiler"
replicas = 1
standby = 2
[deployments.files.settings]
in = "{web}:files"
root = "/srv/www"
[deployments.files.autoscale]
min = 1
max = 6
queue = "{web}:files"
target = 20
activation = 0
response_time = 0.2
response_metric = "hfiler"
scale_up_window = 0
scale_down_window = 30

[deployments.metrics]
service = "exporter"
[deployments.metrics.settings]
cache_ttl = 2.0

[deployments.ticker]
command = ["python3", "-c", "import time\\nwhile True: time.sleep(1)"]
max_surge = 0
"""


def toml_blocks(path: Path) -> list[str]:
    """The ```toml blocks of a page that declare deployments."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    return [block for block in blocks if "[deployments." in block]


def declaration_files() -> list[Any]:
    """Every declaration file the project ships or shows: the demo's (once it ships one), the
    docs' examples, and the tests' own."""
    found = [
        pytest.param(path.read_text(encoding="utf-8"), id=f"package:{path.name}")
        for path in sorted((ROOT / "src" / "mpush").rglob("*.toml"))
        if "[deployments." in path.read_text(encoding="utf-8")
    ]
    for page in ("rcontrol.md", "kubernetes.md"):
        found += [
            pytest.param(block, id=f"docs/{page}:{number}")
            for number, block in enumerate(toml_blocks(ROOT / "docs" / page))
        ]
    found += [
        pytest.param(pipe(replicas=3, standby=1), id="tests:pipe"),
        pytest.param(WEB, id="tests:web"),
    ]
    return found


def export(
    tmp_path: Path, text: str, *flags: str, env: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], Any]:
    path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.toml"
    path.write_text(text, encoding="utf-8")
    done = run_cli(
        "rcontrol", "export", str(path), "--kubernetes", "--service-namespace", NS,
        *(() if "--redis" in flags else ("--redis", REDIS)), *flags, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    if "--output" in flags:
        return [], done
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None], done


def validate(documents: list[dict[str, Any]]) -> None:
    """Built-in kinds against Kubernetes' schemas (strict: no unknown field); KEDA's kinds
    against KEDA's models, and read back whole (an unknown field would be dropped)."""
    version = kubernetes_validate.latest_version()
    for document in documents:
        model = KEDA.get(document["kind"])
        if model is None:
            kubernetes_validate.validate(document, version, strict=True)
            continue
        parsed = model.model_validate(document)
        assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == document


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.parametrize("text", declaration_files())
def test_declaration_files_export_valid_manifests(text: str) -> None:
    data = tomllib.loads(text)
    if "${" in text:  # the demo's file is a template: filled in as the demo fills it
        data = demo_filled(data)
    declarations = parse_declarations(data)
    options = ExportOptions(namespace=NS, redis=REDIS, image="registry.example/mpush:1")
    with checked_elsewhere():
        check_settings(declarations.spec, namespace=NS, redis=REDIS)
        manifests = export_kubernetes(declarations, options)
    documents = [doc for doc in yaml.safe_load_all(manifests.yaml()) if doc is not None]
    assert documents
    validate(documents)
    deployments = by_kind(documents, "Deployment")
    assert set(deployments) == set(declarations.spec.deployments), "a Deployment per deployment"
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["name"] != "command":
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert container["resources"]["requests"]["cpu"], name
    scaled = by_kind(documents, "ScaledObject")
    for name, autoscale in declarations.autoscale.items():
        if autoscale.queue is not None:
            (trigger,) = scaled[name]["spec"]["triggers"]
            assert trigger["metadata"]["listName"] == autoscale.queue
            assert trigger["metadata"]["listLength"] == str(autoscale.target)


def demo_filled(data: dict[str, Any]) -> dict[str, Any]:
    """The demo's template filled in with the demo's own placeholders (mpush.demo.declaration)."""
    declaration = importlib.import_module("mpush.demo.declaration")
    layout = keys.DemoKeys(DEMO_NS)  # type: ignore[attr-defined]
    filled: dict[str, Any] = declaration.fill(
        data, declaration.placeholders(layout, "0.0.0.0", 8080)
    )
    return filled


def test_the_checks_can_fail() -> None:
    """A misspelt field fails Kubernetes' strict schema; KEDA's models refuse a wrong type and
    the read-back sees a field they do not know."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "replica": 2,
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate([deployment])
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "redis", "metadata": {}}]},
    }
    validate([scaled])
    with pytest.raises(AssertionError):
        validate([{**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}])
    with pytest.raises(ValueError, match="minReplicaCount"):
        validate([{**scaled, "spec": {**scaled["spec"], "minReplicaCount": "one"}}])


def test_a_scaled_object_carries_the_declared_queue_and_target(tmp_path: Path) -> None:
    documents, done = export(tmp_path, WEB)
    scaled = by_kind(documents, "ScaledObject")
    assert set(scaled) == {"files"}
    spec = scaled["files"]["spec"]
    assert spec["scaleTargetRef"] == {"name": "files"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 6)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 30
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"] == {
        "address": "redis.web.svc:6379",
        "listName": "{web}:files",
        "listLength": "20",
        "activationListLength": "0",
    }
    deployments = by_kind(documents, "Deployment")
    assert "replicas" not in deployments["files"]["spec"], "KEDA's HPA owns the count"
    assert deployments["gateway"]["spec"]["replicas"] == 2
    assert "autoscale.response_time = 0.2s of hfiler has no equivalent" in done.stderr
    assert "standby = 2 has no Kubernetes equivalent" in done.stderr

    # a gateway declared for one machine (loopback) listens on every address in a pod
    local = WEB.replace("port = 8080", 'port = 8080\nhost = "127.0.0.1"')
    documents, done = export(tmp_path, local)
    assert (
        '"host": "0.0.0.0"'
        in by_kind(documents, "ConfigMap")["gateway-settings"]["data"]["settings.json"]
    )
    assert "gateway: host = 127.0.0.1 replaced by 0.0.0.0" in done.stderr

    # a Cluster: the redis-cluster scaler; a queue Redis of its own: its address, db and TLS
    clustered, _ = export(tmp_path, WEB, "--redis", "redis+cluster://redis-0.redis:7000")
    (trigger,) = by_kind(clustered, "ScaledObject")["files"]["spec"]["triggers"]
    assert trigger["type"] == "redis-cluster"
    assert trigger["metadata"]["addresses"] == "redis-0.redis:7000"
    assert trigger["metadata"]["listName"] == "{web}:files"
    own = WEB.replace(
        'in = "{web}:files"', 'in = "{web}:files"\nredis = "rediss://q.example:6380/3"'
    )
    documents, _ = export(tmp_path, own)
    (trigger,) = by_kind(documents, "ScaledObject")["files"]["spec"]["triggers"]
    assert trigger["metadata"]["address"] == "q.example:6380"
    assert trigger["metadata"]["databaseIndex"] == "3"
    assert trigger["metadata"]["enableTLS"] == "true"
    validate(documents)


SECRETS = """
[deployments.bridge]
service = "vpush"
[deployments.bridge.settings]
in = "{web}:out"
out = ["{far}:in"]
out_redis = "redis://relay:OUT-pw%2Fx@far.example:6379/0"

[deployments.queues]
service = "lpush"
[deployments.queues.settings]
redis = "redis://queues.example:6379/1"
redis_password = "TABLE-pw:y"
in = "{q}:in"
out = ["{q}:out"]
[deployments.queues.autoscale]
max = 3
queue = "{q}:in"
target = 10
"""


def test_no_secret_appears_in_plain_text(tmp_path: Path) -> None:
    passwords = ["MAIN-pw@z", "OUT-pw/x", "TABLE-pw:y"]
    out = tmp_path / "web.yaml"
    documents, done = export(
        tmp_path,
        SECRETS,
        "--redis", f"redis://:{quote(passwords[0], safe='')}@redis.web.svc:6379/0",
        "--redis-secret", "far.example:6379=far-auth:relay-password",
        "--output", str(out),
    )  # fmt: skip
    assert documents == []
    assert done.stdout.startswith(f"wrote {out}: 1 TriggerAuthentication, 2 ConfigMap"), done.stdout
    text = out.read_text()
    for password in passwords:
        for form in (password, quote(password, safe=""), quote(password)):
            for where, seen in (("file", text), ("stdout", done.stdout), ("stderr", done.stderr)):
                assert form not in seen, f"{form!r} in the {where}"
    documents = list(yaml.safe_load_all(text))
    validate(documents)
    env = {
        (name, e["name"]): e
        for name, d in by_kind(documents, "Deployment").items()
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    main = {"secretKeyRef": {"name": "mpush-redis", "key": "password"}}
    assert env["bridge", "MPUSH_REDIS_PASSWORD"]["valueFrom"] == main
    far = {"secretKeyRef": {"name": "far-auth", "key": "relay-password"}}
    assert env["bridge", "MPUSH_OUT_REDIS_PASSWORD"]["valueFrom"] == far
    assert env["queues", "MPUSH_SERVICE_REDIS_PASSWORD"]["valueFrom"] == main
    table = {"secretKeyRef": {"name": "mpush-redis-queues-example-6379", "key": "password"}}
    assert env["queues", "MPUSH_REDIS_PASSWORD"]["valueFrom"] == table
    assert env["queues", "MPUSH_SERVICE_REDIS"]["value"] == "redis://redis.web.svc:6379/0"
    configs = by_kind(documents, "ConfigMap")
    assert '"out_redis": "redis://relay@far.example:6379/0"' in str(configs["bridge-settings"])
    assert "redis_password" not in str(configs["queues-settings"])
    (auth,) = by_kind(documents, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "mpush-redis-queues-example-6379", "key": "password"}
    ]
    (trigger,) = by_kind(documents, "ScaledObject")["queues"]["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert trigger["metadata"]["databaseIndex"] == "1"
    for name in ("mpush-redis", "far-auth", "mpush-redis-queues-example-6379"):
        assert f"kubectl create secret generic {name} " in text
        assert f"kubectl create secret generic {name} " in done.stderr

    # a password given as a setting (MPUSH_REDIS_PASSWORD) is split out the same way
    documents, done = export(tmp_path, pipe(), env={"MPUSH_REDIS_PASSWORD": passwords[0]})
    assert passwords[0] not in done.stdout + done.stderr
    (deployment,) = by_kind(documents, "Deployment").values()
    variables = {
        e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert variables["MPUSH_REDIS_PASSWORD"]["valueFrom"] == main


@pytest.mark.parametrize(
    ("text", "flags", "words"),
    [
        (
            WEB.replace("target = 20", "tagret = 20"),
            (),
            "deployments.files.autoscale.tagret: unknown",
        ),
        (WEB.replace("max = 6", "max = 0"), (), "deployments.files.autoscale.max"),
        (WEB.replace('zone = "eu"', 'zone = "-eu"'), (), "deployments.gateway.labels.zone"),
        (
            WEB.replace("port = 8080", "port = 9200"),
            (),
            "deployments.gateway.settings.port: a Service needs a fixed port of its own",
        ),
        (WEB, ("--redis-secret", "Bad_Name"), "redis_secrets"),
        (WEB, ("--redis", "unix:///run/redis.sock"), "redis: a unix socket URL"),
        (WEB, ("--memory-limit", "lots"), "memory_limit"),
    ],
)
def test_bad_declarations_are_refused_naming_the_key(
    tmp_path: Path, text: str, flags: tuple[str, ...], words: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    redis_flags = () if "--redis" in flags else ("--redis", REDIS)
    done = run_cli(
        "rcontrol", "export", str(path), "--kubernetes", "--service-namespace", NS, *redis_flags,
        *flags,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_the_format_must_be_named(tmp_path: Path) -> None:
    path = tmp_path / "pipe.toml"
    path.write_text(pipe())
    done = run_cli("rcontrol", "export", str(path), "--service-namespace", NS)
    assert done.returncode == 2
    assert "kubernetes: give --kubernetes" in done.stderr


POD = {"metadata.name": "pipe-5d8f7c9b6-x2x7q", "spec.nodeName": "node-1"}


def resolved(
    variables: list[dict[str, Any]], secrets: dict[tuple[str, str], str]
) -> dict[str, str]:
    """A container's env as the kubelet gives it: values, Secret keys and the pod's fields."""
    env: dict[str, str] = {}
    for variable in variables:
        source = variable.get("valueFrom", {})
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[variable["name"]] = secrets[ref["name"], ref["key"]]
        else:
            env[variable["name"]] = POD[source["fieldRef"]["fieldPath"]]
    return env


def test_an_exported_pod_runs_and_answers_its_probes(tmp_path: Path) -> None:
    """The Deployment's own command, env (Secret and field references resolved as the kubelet
    would) and ConfigMap, run as a real process against a password-protected redis-server."""
    password = "pod-pw/@:%"
    server = RedisServer(tmp_path / "redis", extra=("--requirepass", password)).start()
    client = redis.Redis(port=server.port, password=password, decode_responses=True)
    proc: ServiceProcess | None = None
    try:
        probe_port = free_port()
        url = f"redis://:{quote(password, safe='')}@127.0.0.1:{server.port}/0"
        documents, _ = export(
            tmp_path, pipe(replicas=2), "--redis", url, "--probe-port", str(probe_port)
        )
        (config,) = by_kind(documents, "ConfigMap").values()
        (deployment,) = by_kind(documents, "Deployment").values()
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (mount,) = container["volumeMounts"]
        (volume,) = pod["volumes"]
        assert volume["configMap"]["name"] == config["metadata"]["name"]
        directory = tmp_path / "configmap"
        directory.mkdir()
        for key, content in config["data"].items():
            (directory / key).write_text(content)
        env = resolved(container["env"], {("mpush-redis", "password"): password})
        command = [
            part.replace(mount["mountPath"], str(directory)) for part in container["command"]
        ]
        assert command[0] == "mpush"
        proc = ServiceProcess(command[1:], tmp_path / "pod.log", env)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}

        def probe(which: str) -> int:
            http = container[which]["httpGet"]
            address = f"http://127.0.0.1:{ports[http['port']]}{http['path']}"
            try:
                with urllib.request.urlopen(address, timeout=5) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as refused:
                refused.close()
                return refused.code
            except OSError:
                return 0

        wait_until(lambda: probe("readinessProbe") == 200, timeout=30, message=proc.log)
        assert probe("livenessProbe") == 200
        assert probe("startupProbe") == 200
        client.lpush("{rc}:in", "a", "b", "c")
        wait_until(lambda: client.llen("{rc}:out") == 3)
        registration = client.hgetall(ServiceKeys(NS).instance(1))
        assert registration["label"] == POD["metadata.name"], "the pod's name labels it"
        assert password not in proc.log()
        proc.signal(15)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc is not None:
            proc.close()
        client.close()
        server.stop()
