"""One rcontrol deployment as Kubernetes objects: a ConfigMap with its settings, a Deployment, and
for a service that listens (hgateway, the exporter) a Service.

An mpush service runs as rcontrol's agent runs it — ``mpush <service> --config FILE`` with the
namespace, the Redis and a label given apart — here with the settings table as a JSON file
mounted from the ConfigMap and the rest as ``MPUSH_*`` variables (the label is the pod's name).
Its ``--metrics-port`` listener, on every address (as is a listener's ``host``), serves the
probes: startup and liveness on ``/healthz``, readiness on ``/readyz``
(``mpush.runtime.health``). A command runs as given, with ``RCONTROL_*`` variables as under an
agent, and without probes (what healthy means for it is not known). ``labels`` become a
nodeSelector, ``max_surge`` and ``max_unavailable`` the rolling update's maxSurge and
maxUnavailable (1 when both are 0, as rcontrol retires one old instance first), and
``rollout.min_ready`` its minReadySeconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from mpush.config import SERVICES, check_table
from mpush.config.base import URL_PASSWORDS, normalise_keys
from mpush.errors import ConfigError
from mpush.orchestration.kubernetes.redis import Endpoint, Passwords
from mpush.orchestration.rcontrol.spec import Deployment

__all__ = ["CONFIG_DIR", "Target", "labels_of", "queues_endpoint", "selector", "workload"]

CONFIG_DIR = "/etc/mpush"
_CONFIG_FILE = "settings.json"
_LISTENING = {"hgateway": "http", "exporter": "exporter"}  # services with a port of their own
_ALL_ADDRESSES = {"0.0.0.0", "::"}
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Target:
    """Where and how the deployments run: what every one of them shares."""

    namespace: str  # the mpush service namespace (rcontrol's)
    redis: Endpoint  # rcontrol's Redis: the registry, and the queues unless a table names another
    image: str
    probe_port: int
    cpu_request: str
    memory_request: str
    memory_limit: str
    kube_namespace: str | None = None

    def metadata(self, name: str, **extra: Any) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if self.kube_namespace:
            meta["namespace"] = self.kube_namespace
        meta.update(extra)
        return meta


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "mpush"}


def labels_of(name: str, deployment: Deployment) -> dict[str, str]:
    component = deployment.service or "command"
    return {**selector(name), "app.kubernetes.io/component": component}


def workload(
    name: str,
    deployment: Deployment,
    target: Target,
    passwords: Passwords,
    *,
    autoscaled: bool,
    notes: list[str],
    extra_env: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The ConfigMap (services), Deployment and Service (listeners) of one deployment.

    ``autoscaled``: the Deployment leaves its replica count to KEDA; ``extra_env`` goes into the
    container's environment (what a trigger reads from it); what had to change on the way is
    added to ``notes``."""
    where = f"deployments.{name}"
    node_selector = _node_selector(where, deployment.labels)
    if deployment.command is not None:
        container = _command_container(name, deployment, target)
        objects: list[dict[str, Any]] = []
        digest = _digest({"command": deployment.command})
    else:
        assert deployment.service is not None
        settings, env, ports = _service_settings(name, deployment, target, passwords, notes)
        config = json.dumps(settings, sort_keys=True, indent=2)
        container = _service_container(name, deployment, target, env, ports)
        objects = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": target.metadata(f"{name}-settings", labels=labels_of(name, deployment)),
                "data": {_CONFIG_FILE: config + "\n"},
            }
        ]
        digest = _digest({"settings": config, "env": env, "service": deployment.service})
    container["env"] = [*container["env"], *(extra_env or [])]
    pod: dict[str, Any] = {"containers": [container]}
    if node_selector:
        pod["nodeSelector"] = node_selector
    if deployment.service is not None:
        pod["volumes"] = [{"name": "settings", "configMap": {"name": f"{name}-settings"}}]
    annotations = {"mpush.io/config-digest": digest}
    if deployment.service is not None:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(_metrics_port(deployment, target)),
                "prometheus.io/path": "/metrics",
            }
        )
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": deployment.max_surge,
                "maxUnavailable": _unavailable(deployment),
            },
        },
        "minReadySeconds": math.ceil(deployment.rollout.min_ready),
        "template": {
            "metadata": {"labels": labels_of(name, deployment), "annotations": annotations},
            "spec": pod,
        },
    }
    if not autoscaled:  # else KEDA's HPA owns the count: an apply must not reset it
        spec = {"replicas": deployment.replicas, **spec}
    objects.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": target.metadata(
                name,
                labels=labels_of(name, deployment),
                annotations={
                    "mpush.io/service-namespace": target.namespace,
                    "mpush.io/release": deployment.release,
                },
            ),
            "spec": spec,
        }
    )
    if deployment.service in _LISTENING:
        objects.append(_service(name, deployment, target))
    return objects


def queues_endpoint(
    name: str, deployment: Deployment, target: Target, passwords: Passwords
) -> Endpoint:
    """The Redis of the deployment's queues: its settings table's own ``redis``, else rcontrol's."""
    if deployment.service is None:
        return target.redis
    model = SERVICES[deployment.service].settings
    settings = normalise_keys(deployment.settings, set(model.model_fields))
    if "redis" not in settings:
        return target.redis
    endpoint = passwords.endpoint(
        str(settings["redis"]),
        cluster=bool(settings.get("cluster")),
        key=f"deployments.{name}.settings.redis",
    )
    if settings.get("redis_password") is not None:
        endpoint = passwords.with_password(endpoint)
    return endpoint


def _service_settings(
    name: str, deployment: Deployment, target: Target, passwords: Passwords, notes: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The settings file (passwords taken out, listeners on every address), the env, the ports."""
    assert deployment.service is not None
    where = f"deployments.{name}"
    model = SERVICES[deployment.service].settings
    settings = normalise_keys(deployment.settings, set(model.model_fields))
    env: list[dict[str, Any]] = [
        {"name": "MPUSH_SERVICE_NAMESPACE", "value": target.namespace},
        {"name": "MPUSH_SERVICE_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    main = target.redis
    own_redis = "redis" in settings
    registry = "SERVICE_REDIS" if own_redis else "REDIS"  # as rcontrol's agent does
    env.append({"name": f"MPUSH_{registry}", "value": main.url})
    if main.cluster and not own_redis:
        env.append({"name": "MPUSH_CLUSTER", "value": "true"})
    if main.secret is not None:
        env.append({"name": f"MPUSH_{registry}_PASSWORD", "valueFrom": main.secret.env_source()})
    for url_key, password_key in URL_PASSWORDS.items():
        if url_key == "service_redis" and password_key in settings:
            raise ConfigError(f"{where}.settings.{password_key}", "set by rcontrol")
        if url_key not in settings:
            if password_key in settings:
                raise ConfigError(f"{where}.settings.{password_key}", f"needs {url_key}")
            continue
        cluster = bool(settings.get("cluster" if url_key == "redis" else "out_cluster"))
        endpoint = passwords.endpoint(
            str(settings[url_key]), cluster=cluster, key=f"{where}.settings.{url_key}"
        )
        if settings.pop(password_key, None) is not None:
            endpoint = passwords.with_password(endpoint)
        settings[url_key] = endpoint.url
        if endpoint.secret is not None:
            variable = f"MPUSH_{password_key.upper()}"
            env.append({"name": variable, "valueFrom": endpoint.secret.env_source()})
    ports = [{"name": "metrics", "containerPort": _metrics_port(deployment, target)}]
    if settings.get("metrics_host", "0.0.0.0") not in _ALL_ADDRESSES:
        notes.append(
            f"{name}: metrics_host = {settings['metrics_host']} replaced by 0.0.0.0 (the kubelet "
            "probes the pod's address)"
        )
    settings["metrics_port"] = ports[0]["containerPort"]
    settings["metrics_host"] = "0.0.0.0"
    port_name = _LISTENING.get(deployment.service)
    if port_name is not None:
        parsed = check_table(model, settings, where=f"{where}.settings", given=_given(target))
        host, port = getattr(parsed, "host", ""), int(getattr(parsed, "port", 0))
        if "host" in settings and host not in _ALL_ADDRESSES:
            notes.append(f"{name}: host = {host} replaced by 0.0.0.0 (its Service reaches the pod)")
        if not port or port == ports[0]["containerPort"]:
            raise ConfigError(
                f"{where}.settings.port",
                f"a Service needs a fixed port of its own (got {port}, probes on "
                f"{ports[0]['containerPort']})",
            )
        settings["host"] = "0.0.0.0"
        ports.append({"name": port_name, "containerPort": port})
    check_table(model, settings, where=f"{where}.settings", given=_given(target))
    env += [{"name": "RCONTROL_DEPLOYMENT", "value": name}, *_pod_identity()]
    return settings, env, ports


def _given(target: Target) -> dict[str, Any]:
    return {"redis": target.redis.url, "service_namespace": target.namespace}


def _pod_identity() -> list[dict[str, Any]]:
    """What rcontrol's agent tells an instance about itself: its id and its host."""
    return [
        {"name": "RCONTROL_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "RCONTROL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]


def _metrics_port(deployment: Deployment, target: Target) -> int:
    """The table's own metrics_port when it names a fixed one, else the export's probe port."""
    assert deployment.service is not None
    model = SERVICES[deployment.service].settings
    settings = normalise_keys(deployment.settings, set(model.model_fields))
    port = settings.get("metrics_port")
    return int(port) if isinstance(port, int) and port > 0 else target.probe_port


def _resources(target: Target) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "requests": {"cpu": target.cpu_request, "memory": target.memory_request}
    }
    if target.memory_limit:
        resources["limits"] = {"memory": target.memory_limit}
    return resources


def _service_container(
    name: str,
    deployment: Deployment,
    target: Target,
    env: list[dict[str, Any]],
    ports: list[dict[str, Any]],
) -> dict[str, Any]:
    assert deployment.service is not None
    words = SERVICES[deployment.service].command

    def probe(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "metrics"},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
        }

    return {
        "name": deployment.service,
        "image": target.image,
        "command": ["mpush", *words, "--config", f"{CONFIG_DIR}/{_CONFIG_FILE}"],
        "env": env,
        "ports": ports,
        "resources": _resources(target),
        # Python starting on a busy node: up to a minute before liveness counts.
        "startupProbe": probe("/healthz", 2, 3, 30),
        "livenessProbe": probe("/healthz", 10, 5, 3),
        "readinessProbe": probe("/readyz", 5, 3, 2),
        "volumeMounts": [{"name": "settings", "mountPath": CONFIG_DIR, "readOnly": True}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def _command_container(name: str, deployment: Deployment, target: Target) -> dict[str, Any]:
    assert deployment.command is not None
    return {
        "name": "command",
        "image": target.image,
        "command": list(deployment.command),
        "env": [{"name": "RCONTROL_DEPLOYMENT", "value": name}, *_pod_identity()],
        "resources": _resources(target),
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def _service(name: str, deployment: Deployment, target: Target) -> dict[str, Any]:
    assert deployment.service is not None
    port_name = _LISTENING[deployment.service]
    model = SERVICES[deployment.service].settings
    settings = normalise_keys(deployment.settings, set(model.model_fields))
    port = int(settings.get("port") or model.model_fields["port"].default)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": target.metadata(name, labels=labels_of(name, deployment)),
        "spec": {
            "selector": selector(name),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name}],
        },
    }


def _node_selector(where: str, labels: dict[str, str]) -> dict[str, str]:
    """rcontrol's host labels as node labels: each must be a valid Kubernetes label."""
    for key, value in labels.items():
        prefix, slash, label = key.rpartition("/")
        if (
            not _LABEL_NAME.match(label)
            or (slash and not _LABEL_PREFIX.match(prefix))
            or not _LABEL_VALUE.match(value)
        ):
            raise ConfigError(f"{where}.labels.{key}", f"{key}={value!r} is not a Kubernetes label")
    return dict(labels)


def _digest(data: Any) -> str:
    """12 hex digits naming what a pod runs: a change rolls the Deployment."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _unavailable(deployment: Deployment) -> int:
    """maxUnavailable: the declared one, or 1 when neither a surge nor an unavailable instance is
    allowed (a rollout could not move otherwise; rcontrol retires one old instance first)."""
    if deployment.max_surge or deployment.max_unavailable:
        return deployment.max_unavailable
    return 1
