"""Settings of rcontrol's commands: apply, scale, delete, status, agent, controller."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from mpush.config.base import CommonSettings

__all__ = [
    "HOST_NAME",
    "RcontrolAgentSettings",
    "RcontrolApplySettings",
    "RcontrolControllerSettings",
    "RcontrolDeleteSettings",
    "RcontrolDrainSettings",
    "RcontrolExportSettings",
    "RcontrolRollbackSettings",
    "RcontrolRolloutSettings",
    "RcontrolScaleSettings",
    "RcontrolSettings",
    "RcontrolStatusSettings",
    "RcontrolUncordonSettings",
]

# A host name as agents give it: letters, digits, '.', '_' and '-' (it is part of keys and logs).
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}=[A-Za-z0-9._-]{0,63}$")
# A Kubernetes resource quantity (500m, 0.5, 128Mi, 1Gi) and a namespace name (a DNS label).
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class RcontrolSettings(CommonSettings):
    """What every rcontrol command shares: the Redis and the namespace it controls."""

    @model_validator(mode="after")
    def _namespace_given(self) -> RcontrolSettings:
        if not self.service_namespace:
            raise ValueError(
                "service_namespace: required, e.g. --service-namespace demo:web "
                "(rcontrol runs its instances in that namespace)"
            )
        return self

    @property
    def namespace(self) -> str:
        assert self.service_namespace  # checked above
        return self.service_namespace


class RcontrolApplySettings(RcontrolSettings):
    """rcontrol apply FILE: declare the deployments of a TOML file (all or nothing).

    Prints what changes; a deployment the file does not name is kept (rcontrol delete removes it).
    A bad file is refused as a whole with one line naming the key, exit 2, nothing applied.
    """

    file: Path = Field(..., description="The TOML file: one [deployments.NAME] table each.")
    dry_run: bool = Field(False, description="Only print what would change.")


class RcontrolScaleSettings(RcontrolSettings):
    """rcontrol scale NAME REPLICAS: set how many active instances a deployment wants."""

    name: str = Field(..., min_length=1, description="The deployment.")
    replicas: int = Field(..., ge=0, le=1000, description="Active instances wanted.")


class RcontrolDeleteSettings(RcontrolSettings):
    """rcontrol delete NAME: remove a deployment; its instances are shut down gracefully."""

    name: str = Field(..., min_length=1, description="The deployment.")


class RcontrolExportSettings(RcontrolSettings):
    """rcontrol export FILE --kubernetes: the deployments of a TOML file as Kubernetes manifests.

    A Deployment per deployment (settings in a ConfigMap, probes on /healthz and /readyz), a
    Service for hgateway and the exporter, a KEDA ScaledObject per autoscaled deployment. Redis
    passwords become Secret references, never text: the output names the Secrets to create.
    Multi-document YAML, on stdout or in --output. Reads no Redis.
    """

    cli_names: ClassVar[dict[str, str]] = {"redis_secrets": "redis-secret"}

    file: Path = Field(..., description="The TOML file: one [deployments.NAME] table each.")
    kubernetes: bool = Field(False, description="Write Kubernetes manifests (the one format).")
    output: Path | None = Field(None, description="Write here instead of stdout.")
    image: str = Field(
        "mpush:latest", min_length=1, description="Container image with mpush installed."
    )
    redis_secrets: list[str] = Field(
        [],
        description="[HOST:PORT=]SECRET[:KEY]: the Kubernetes Secret (and its key, default "
        "password) holding the password of the --redis server, or of HOST:PORT; repeatable.",
    )
    kube_namespace: str | None = Field(
        None, description="Kubernetes namespace of every object (default: kubectl's)."
    )
    probe_port: int = Field(
        9200, ge=1, le=65535, description="Port of /metrics, /healthz and /readyz in each pod."
    )
    cpu_request: str = Field("50m", description="CPU each pod requests.")
    memory_request: str = Field("96Mi", description="Memory each pod requests.")
    memory_limit: str = Field("512Mi", description="Memory each pod may use (empty: no limit).")

    @model_validator(mode="after")
    def _export(self) -> RcontrolExportSettings:
        if not self.kubernetes:
            raise ValueError("kubernetes: give --kubernetes (the one format export writes)")
        for name in ("cpu_request", "memory_request", "memory_limit"):
            value = getattr(self, name)
            if (value or name != "memory_limit") and not _QUANTITY.match(value):
                raise ValueError(f"{name}: {value!r} is not a Kubernetes quantity (100m, 128Mi)")
        if self.kube_namespace is not None and not _DNS_LABEL.match(self.kube_namespace):
            raise ValueError(f"kube_namespace: {self.kube_namespace!r} is not a DNS label")
        return self


class RcontrolRolloutSettings(RcontrolSettings):
    """rcontrol rollout NAME: roll a deployment out to a new release — changed settings, a git
    source, or its declaration in a file — replacing its instances within max_surge and
    max_unavailable; the controller rolls it back by itself when the new release is worse.
    """

    cli_names: ClassVar[dict[str, str]] = {"changes": "set", "removals": "unset"}

    name: str = Field(..., min_length=1, description="The deployment.")
    file: Path | None = Field(
        None, description="A TOML file whose [deployments.NAME] is the new declaration."
    )
    changes: list[str] = Field(
        [], description="A setting KEY=VALUE to change (a TOML value, else a string); repeat."
    )
    removals: list[str] = Field([], description="A setting KEY to remove; repeat.")
    git: str | None = Field(None, description="Run from this git repository, built by ndeploy.")
    branch: str | None = Field(None, description="With --git: the branch.")
    tag: str | None = Field(None, description="With --git: the tag.")
    commit: str | None = Field(None, description="With --git: the commit.")
    wait: float = Field(
        0.0,
        ge=0,
        description="Seconds to wait for the rollout to end (complete: exit 0; rolled back: "
        "exit 1; still going: exit 124); 0: do not wait.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> RcontrolRolloutSettings:
        ref = self.branch or self.tag or self.commit
        if self.file is not None and (self.changes or self.removals or self.git or ref):
            raise ValueError("file: the file's declaration is the new one: give no other change")
        if ref and not self.git:
            raise ValueError("git: branch, tag and commit go with --git URL")
        for change in self.changes:
            if "=" not in change or not change.partition("=")[0]:
                raise ValueError(f"changes: {change!r} is not KEY=VALUE")
        return self


class RcontrolRollbackSettings(RcontrolSettings):
    """rcontrol rollback NAME: go back to the deployment's previous release (run again to undo)."""

    name: str = Field(..., min_length=1, description="The deployment.")


class RcontrolDrainSettings(RcontrolSettings):
    """rcontrol drain HOST: no new instances on HOST; its instances move to other hosts
    gracefully (each retired once its replacement is ready)."""

    host: str = Field(..., min_length=1, description="The host (its agent's --host).")


class RcontrolUncordonSettings(RcontrolSettings):
    """rcontrol uncordon HOST: a drained host takes instances again."""

    host: str = Field(..., min_length=1, description="The host (its agent's --host).")


class RcontrolStatusSettings(RcontrolSettings):
    """rcontrol status: desired, ready and standby per deployment, every instance, every host."""

    cli_names: ClassVar[dict[str, str]] = {"as_json": "json"}

    as_json: bool = Field(False, description="Print JSON.")
    events: bool = Field(False, description="Also show the latest decisions of the event log.")
    count: int = Field(20, ge=1, le=10_000, description="How many events --events shows.")


class RcontrolAgentSettings(RcontrolSettings):
    """rcontrol agent: run the instances rcontrol assigns to this host, and report on them."""

    cli_names: ClassVar[dict[str, str]] = {"labels": "label"}

    host: str = Field(..., description="This host's name (unique among the agents).")
    capacity: int = Field(16, ge=0, le=10_000, description="Most instances this host runs.")
    labels: list[str] = Field(
        [], description="A label K=V deployments may require; repeat for several."
    )
    heartbeat: float = Field(
        1.0, gt=0, le=60, description="Seconds between heartbeats and reports."
    )
    host_ttl: float = Field(
        5.0, gt=0, le=600, description="Seconds without a heartbeat before the host is dead."
    )
    work_dir: Path | None = Field(
        None,
        description="Where instance configs and logs go (default: <tmp>/mpush-rcontrol-<host>).",
    )
    python: str | None = Field(
        None, description="Python that runs mpush services (default: the agent's own)."
    )
    restart_delay: float = Field(
        0.5, gt=0, le=60, description="Seconds before the first restart of a crashed instance."
    )
    restart_max_delay: float = Field(
        30.0, gt=0, le=3600, description="Cap of the restart backoff (it doubles each time)."
    )
    failing_after: int = Field(
        3, ge=1, le=1000, description="Crashes in a row before an instance is reported failing."
    )
    stable_after: float = Field(
        10.0, gt=0, description="Seconds of running that reset an instance's restart backoff."
    )
    stop_timeout: float = Field(
        4.0, gt=0, le=60, description="Seconds an instance has to stop before SIGKILL."
    )
    max_load: float | None = Field(
        None,
        gt=0,
        description="Load average (1 min) per CPU over which this host takes no new instances.",
    )
    max_memory: float | None = Field(
        None,
        gt=0,
        le=100,
        description="Percent of memory in use over which this host takes no new instances.",
    )
    ndeploy: str | None = Field(
        None,
        min_length=1,
        description="The namespace of this host's ndeploy service, which builds the git "
        "releases (sources) its instances run from.",
    )
    ndeploy_wait: float = Field(
        900.0, gt=0, description="Seconds a build of a git release may take."
    )

    @model_validator(mode="after")
    def _agent(self) -> RcontrolAgentSettings:
        if not HOST_NAME.match(self.host):
            raise ValueError(
                f"host: {self.host!r} is not a host name (letters, digits, '.', '_', '-')"
            )
        for label in self.labels:
            if not _LABEL.match(label):
                raise ValueError(f"labels: {label!r} is not KEY=VALUE")
        if self.host_ttl < 2 * self.heartbeat:
            raise ValueError(
                f"host_ttl: {self.host_ttl:g}s must be at least two heartbeats "
                f"(2 × {self.heartbeat:g}s)"
            )
        if self.restart_max_delay < self.restart_delay:
            raise ValueError("restart_max_delay: must not be shorter than restart_delay")
        return self

    @property
    def label_map(self) -> dict[str, str]:
        pairs = (label.partition("=") for label in self.labels)
        return {key: value for key, _, value in pairs}


class RcontrolControllerSettings(RcontrolSettings):
    """rcontrol controller: reconcile declared with running state (one active, the rest standby)."""

    tick: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between reconciles at rest (a change wakes it at once).",
    )
    lease_ttl: float = Field(
        5.0, ge=0.5, le=600, description="Seconds a dead active controller holds the lease."
    )
    host_grace: float = Field(
        10.0,
        gt=0,
        description="Seconds a host missing since the controller's view began (it took the lease, "
        "Redis came back) may take to heartbeat before it is dead.",
    )
    events_capacity: int = Field(
        1000, ge=10, description="Entries kept (about) on the event stream."
    )
    scale_interval: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds between reads of the queues and response times autoscaling "
        "follows (a change of replicas reconciles at once).",
    )
