"""rcontrol's declarations as Kubernetes manifests: multi-document YAML for ``kubectl apply -f``.

Per deployment, in this order: its ConfigMap (a service's settings), its Deployment, its Service
(hgateway, the exporter) and its KEDA ScaledObject (an autoscale table with a queue); before them,
the KEDA TriggerAuthentication of every Secret a trigger reads a password from. The header of the
file says which Secrets to create — with which keys, for which Redis servers — and what did not
map (standby instances, response-time targets): the same notes ``Manifests.notes`` holds.

What maps to what is written down in docs/kubernetes.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mpush import __version__
from mpush.connection import describe_url
from mpush.orchestration.kubernetes.declarations import Declarations
from mpush.orchestration.kubernetes.keda import (
    USERNAME_VARIABLE,
    scaled_object,
    trigger_authentication,
)
from mpush.orchestration.kubernetes.redis import Passwords, SecretRef
from mpush.orchestration.kubernetes.workloads import Target, queues_endpoint, workload

__all__ = ["ExportOptions", "Manifests", "export_kubernetes"]


@dataclass(frozen=True)
class ExportOptions:
    namespace: str  # the mpush service namespace the instances register in
    redis: str  # rcontrol's Redis URL (a password in it goes to a Secret)
    cluster: bool = False
    image: str = "mpush:latest"
    redis_secrets: Sequence[str] = ()  # --redis-secret entries
    kube_namespace: str | None = None
    probe_port: int = 9200
    cpu_request: str = "50m"
    memory_request: str = "96Mi"
    memory_limit: str = "512Mi"
    source: str = ""  # the file the declarations came from, for the header


@dataclass
class Manifests:
    """The objects, the Secrets they expect (Secret → its keys → the Redis URLs they are the
    password of), and what did not map."""

    title: str
    documents: list[dict[str, Any]]
    secrets: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def header(self) -> list[str]:
        lines = [self.title]
        if self.secrets:
            lines += ["", "Create these Secrets first (no password is written in this file):"]
            lines += [f"  {line}" for line in self.secret_commands()]
        if self.notes:
            lines += ["", "Not exported, or changed on the way:"]
            lines += [f"  {note}" for note in self.notes]
        return lines

    def secret_commands(self) -> list[str]:
        """A ``kubectl create secret`` line per Secret, the Redis servers it serves after it."""
        commands = []
        for name, keys in sorted(self.secrets.items()):
            literals = " ".join(f"--from-literal={key}=PASSWORD" for key in sorted(keys))
            servers = ", ".join(sorted({url for urls in keys.values() for url in urls}))
            commands.append(f"kubectl create secret generic {name} {literals}  # {servers}")
        return commands

    def yaml(self) -> str:
        comments = "".join(f"# {line}".rstrip() + "\n" for line in self.header())
        body = yaml.dump_all(
            self.documents,
            Dumper=_Dumper,
            sort_keys=False,
            explicit_start=True,
            allow_unicode=True,
            width=100,
        )
        return comments + body


def export_kubernetes(declarations: Declarations, options: ExportOptions) -> Manifests:
    """The manifests of every deployment declared, in name order."""
    passwords = Passwords.parse(options.redis_secrets, options.redis)
    main = passwords.endpoint(options.redis, cluster=options.cluster, key="redis")
    target = Target(
        namespace=options.namespace,
        redis=main,
        image=options.image,
        probe_port=options.probe_port,
        cpu_request=options.cpu_request,
        memory_request=options.memory_request,
        memory_limit=options.memory_limit,
        kube_namespace=options.kube_namespace,
    )
    notes: list[str] = []
    if main.loopback:
        notes.append(
            f"redis: {describe_url(main.url)} is on loopback: in a pod that is the pod itself "
            "(give a Redis address the pods reach)"
        )
    documents: list[dict[str, Any]] = []
    triggers: dict[SecretRef, None] = {}
    for name, deployment in sorted(declarations.spec.deployments.items()):
        autoscale = declarations.autoscale.get(name)
        scaled = autoscale is not None and autoscale.queue is not None
        extra_env: list[dict[str, Any]] = []
        objects: list[dict[str, Any]] = []
        if autoscale is not None and autoscale.queue is not None:
            queues = queues_endpoint(name, deployment, target, passwords)
            objects.append(scaled_object(name, autoscale, queues, target))
            if queues.secret is not None:
                triggers[queues.secret] = None
            if queues.username:
                extra_env.append({"name": USERNAME_VARIABLE, "value": queues.username})
        documents += workload(
            name,
            deployment,
            target,
            passwords,
            autoscaled=scaled,
            notes=notes,
            extra_env=extra_env,
        )
        documents += objects
        notes += _notes(name, declarations, scaled)
    documents = [trigger_authentication(secret, target) for secret in triggers] + documents
    secrets: dict[str, dict[str, list[str]]] = {}
    for secret, urls in sorted(passwords.needed.items()):
        secrets.setdefault(secret.name, {})[secret.key] = sorted(urls)
    source = f" of {options.source}" if options.source else ""
    title = (
        f"mpush {__version__}: rcontrol's declarations{source} for Kubernetes "
        f"(service namespace {options.namespace}); apply with kubectl apply -f FILE"
    )
    return Manifests(title, documents, secrets, notes)


def _notes(name: str, declarations: Declarations, scaled: bool) -> list[str]:
    deployment = declarations.spec.deployments[name]
    autoscale = declarations.autoscale.get(name)
    notes: list[str] = []
    if deployment.standby:
        notes.append(
            f"{name}: standby = {deployment.standby} has no Kubernetes equivalent (a pod starts "
            "cold): not exported"
        )
    if deployment.command is not None:
        notes.append(f"{name}: a command gets no probes (what healthy means for it is not known)")
    if deployment.source is not None:
        notes.append(
            f"{name}: source {deployment.source.describe()} is built by ndeploy under rcontrol; "
            "here the image is the release: build it into --image"
        )
    if autoscale is not None and autoscale.response_time is not None:
        metric = f" of {autoscale.response_metric}" if autoscale.response_metric else ""
        notes.append(
            f"{name}: autoscale.response_time = {autoscale.response_time:g}s{metric} has no "
            "equivalent in KEDA's redis scaler: not exported"
        )
    if scaled:
        notes.append(
            f"{name}: replicas = {deployment.replicas} left out: KEDA keeps between "
            f"{autoscale.min if autoscale else 0} and {autoscale.max if autoscale else 0}"
        )
    elif autoscale is not None:
        notes.append(f"{name}: no queue to scale on: no ScaledObject, replicas fixed")
    return notes


class _Dumper(yaml.SafeDumper):
    """Safe YAML; text of several lines (a settings file) as a literal block."""


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)
