"""What rcontrol runs: a TOML file of deployments, parsed into typed, validated models.

The schema (every key optional unless said; any other key is refused)::

    [deployments.NAME]            NAME: a DNS label (a-z, 0-9, '-'; at most 63)
    service   = "hfiler"          an mpush service (``mpush.config.SERVICES``) …
    command   = ["prog", "arg"]   … or any program (exactly one of the two)
    replicas  = 1                 active instances wanted (0 … 1000)
    standby   = 0                 instances kept started, registered and waiting (services only)
    labels    = {zone = "a"}      labels a host must have (its agent's --label K=V)
    max_surge = 1                 active instances allowed above replicas while instances of an
                                  older release are replaced
    max_unavailable = 0           ready instances allowed below replicas meanwhile

    [deployments.NAME.settings]   the service's own settings (as in its --config file), checked
    in = "{web}:in"               against its settings model at apply time; rcontrol sets
                                  service_namespace, service_label, service_release and standby

    [deployments.NAME.source]     a release built from git by ndeploy (docs/ndeploy.md): the
    git = "https://…"             instances run from its deploy dir's venv; one of branch, tag,
    tag = "v2"                    commit (default: the default branch)

    [deployments.NAME.autoscale]  replicas follow a queue and/or a response time
    min, max, queue, target, activation, response_time, response_metric, window,
    scale_up_window, scale_down_window          (docs/autoscale.md)

    [deployments.NAME.rollout]    how a new release is judged, and rolled back when worse
    auto_rollback, min_ready, progress_deadline, verify, max_restarts, error_margin, min_errors,
    latency_ratio, min_requests, metrics        (docs/rcontrol.md)

A deployment's *run* (service and settings, or command, and its source) is what an instance
executes; its
*release* is a digest of the run's canonical JSON, so instances started from an older declaration
are recognised and replaced. The controller and the agents only ever read these models back from
the canonical JSON that ``apply`` stored (``Deployment.model_validate_json``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mpush.config import SERVICES, check_table
from mpush.config.git import (
    RequestError,
    check_combination,
    check_commit,
    check_git_url,
    check_ref,
)
from mpush.errors import ConfigError

__all__ = [
    "DEPLOYMENT_NAME",
    "RESERVED_SETTINGS",
    "Autoscale",
    "Deployment",
    "RolloutPolicy",
    "Run",
    "Source",
    "Spec",
    "canonical",
    "check_settings",
    "parse_spec",
    "read_spec",
    "read_toml",
]

DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9._-]{0,63}$")

# Settings the agent sets for every instance: a deployment may not.
RESERVED_SETTINGS = {
    "service_namespace": "every instance runs in the namespace rcontrol controls",
    "service_redis": "the registry is rcontrol's Redis",
    "service_label": "rcontrol labels each instance with its id",
    "service_release": "rcontrol tells each instance its release",
    "standby": "set the deployment's standby count instead",
    "config": "the settings table is the instance's config file",
}


def canonical(value: BaseModel | Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys: equal declarations give equal text (and digests)."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Source(BaseModel):
    """A release built from git by ndeploy: the URL and at most one of branch, tag, commit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    git: str
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None

    @model_validator(mode="after")
    def _checked(self) -> Source:
        try:
            check_git_url(self.git)
            if self.branch is not None:
                check_ref("branch", self.branch)
            if self.tag is not None:
                check_ref("tag", self.tag)
            if self.commit is not None:
                check_commit(self.commit)
            check_combination(self.branch, self.commit, self.tag)
        except RequestError as exc:
            raise ValueError(f"{exc.field}: {exc.problem}") from None
        return self

    def request(self) -> dict[str, str]:
        """The fields of an ndeploy request for it."""
        fields = {"git": self.git, "branch": self.branch, "tag": self.tag, "commit": self.commit}
        return {name: value for name, value in fields.items() if value is not None}

    def describe(self) -> str:
        ref = (
            f"tag {self.tag}"
            if self.tag
            else " @ ".join(x for x in (self.branch, self.commit) if x) or "default branch"
        )
        return f"{self.git} ({ref})"


class Run(BaseModel):
    """What one instance executes: an mpush service with its settings, or a command; either
    from a git source built by ndeploy, or from the agent's own installation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    command: list[str] | None = None
    source: Source | None = None

    def describe(self) -> str:
        """One line: ``mpush lpush``, or the command as a shell would take it."""
        if self.command is not None:
            line = shlex.join(self.command).replace("\n", "\\n")
        else:
            line = f"mpush {self.service}"
        return line if self.source is None else f"{line} from {self.source.describe()}"

    @property
    def release(self) -> str:
        """12 hex digits naming exactly this run (a run without a source names none, so its
        digest is what it was before sources existed)."""
        data = self.model_dump(mode="json")
        if data["source"] is None:
            del data["source"]
        return hashlib.sha256(canonical(data).encode()).hexdigest()[:12]


class Autoscale(BaseModel):
    """``[deployments.NAME.autoscale]``: replicas follow a queue's length (KEDA's redis lists
    scaler) and/or a response time (a p95 from a published histogram), as docs/autoscale.md
    says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(1, ge=0, le=1000)
    max: int = Field(..., ge=1, le=1000)
    queue: str | None = Field(None, min_length=1)
    target: int = Field(20, ge=1)  # integers, as KEDA's listLength and activationListLength
    activation: int = Field(0, ge=0)
    response_time: float | None = Field(None, gt=0)
    response_metric: str | None = Field(None, min_length=1)
    window: float = Field(10.0, ge=1, le=600)
    scale_up_window: float = Field(0.0, ge=0, le=3600)
    scale_down_window: float = Field(30.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> Autoscale:
        if self.min > self.max:
            raise ValueError(f"min: {self.min} is more than max ({self.max})")
        if self.queue is None and self.response_time is None:
            raise ValueError("queue: give a queue (and target), a response_time, or both")
        if self.response_metric is not None and self.response_time is None:
            raise ValueError("response_metric: only with a response_time")
        return self


class RolloutPolicy(BaseModel):
    """``[deployments.NAME.rollout]``: how a new release is judged against the old one, and
    when it is rolled back by itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_rollback: bool = True
    min_ready: float = Field(default=2.0, ge=0, le=3600)
    progress_deadline: float = Field(default=60.0, gt=0, le=86400)
    verify: float = Field(default=30.0, ge=0, le=86400)
    max_restarts: int = Field(default=2, ge=1, le=1000)
    error_margin: float = Field(default=0.05, ge=0, le=1)
    min_errors: int = Field(default=5, ge=1)
    latency_ratio: float = Field(default=2.0, ge=0)
    min_requests: int = Field(default=20, ge=1)
    metrics: list[str] | None = None


class Deployment(BaseModel):
    """One ``[deployments.NAME]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    command: list[str] | None = None
    replicas: int = Field(1, ge=0, le=1000)
    standby: int = Field(0, ge=0, le=1000)
    labels: dict[str, str] = Field(default_factory=dict)
    max_surge: int = Field(1, ge=0, le=1000)
    max_unavailable: int = Field(0, ge=0, le=1000)
    source: Source | None = None
    autoscale: Autoscale | None = None
    rollout: RolloutPolicy = RolloutPolicy()  # frozen: one default for all

    @model_validator(mode="after")
    def _consistent(self) -> Deployment:
        if (self.service is None) == (self.command is None):
            raise ValueError('service: give exactly one of service = "NAME" and command = [...]')
        if self.service is not None and self.service not in SERVICES:
            raise ValueError(
                f"service: {self.service!r} is not an mpush service "
                f"(one of {', '.join(sorted(SERVICES))})"
            )
        if self.command is not None:
            if not self.command or not all(part.strip() for part in self.command):
                raise ValueError("command: give the program and its arguments, none empty")
            if self.settings:
                raise ValueError("settings: only a service has settings (a command has argv)")
            if self.standby:
                raise ValueError(
                    "standby: only an mpush service can stand by (a command cannot be activated)"
                )
        for key in self.settings:
            if key in RESERVED_SETTINGS:
                raise ValueError(f"settings.{key}: set by rcontrol ({RESERVED_SETTINGS[key]})")
        for key, value in self.labels.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise ValueError(f"labels.{key}: {key}={value!r} is not a label")
        scaling = self.autoscale
        if (
            scaling is not None
            and scaling.response_time is not None
            and scaling.response_metric is None
            and self.service is None
        ):
            raise ValueError(
                "autoscale.response_metric: a command publishes no metric of its own: name "
                "the metrics hash that holds its response times"
            )
        return self

    @property
    def run(self) -> Run:
        return Run(
            service=self.service, settings=self.settings, command=self.command, source=self.source
        )

    @property
    def release(self) -> str:
        return self.run.release

    @property
    def response_metric(self) -> str | None:
        """The metrics hash whose histogram the autoscaler's response time is read from."""
        scaling = self.autoscale
        if scaling is None or scaling.response_time is None:
            return None
        return scaling.response_metric or SERVICES[str(self.service)].metrics[0]

    @property
    def health_metrics(self) -> list[str]:
        """The metrics hashes a new release's errors and response times are compared in."""
        if self.rollout.metrics is not None:
            return list(self.rollout.metrics)
        if self.service is None:
            return []
        return list(SERVICES[self.service].metrics)

    def starting_replicas(self, current: int) -> int:
        """The replicas to keep when this declaration replaces one that has ``current``: an
        autoscaled deployment keeps what its autoscaler chose, within its new bounds."""
        if self.autoscale is None:
            return self.replicas
        return min(max(current, self.autoscale.min), self.autoscale.max)


class Spec(BaseModel):
    """A whole file: the deployments by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployments: dict[str, Deployment] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("deployments"), Mapping):
            for name in data["deployments"]:
                if not DEPLOYMENT_NAME.match(str(name)):
                    raise ValueError(
                        f"deployments.{name}: a deployment name is a DNS label "
                        "(a-z, 0-9 and '-', at most 63, no '-' at either end)"
                    )
        return data


def parse_spec(data: Mapping[str, Any]) -> Spec:
    """The typed spec of a parsed TOML document; ConfigError naming the first bad key."""
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc) from None


def read_spec(path: Path) -> Spec:
    """Read and parse the TOML file ``path``."""
    return parse_spec(read_toml(path))


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document ``path`` holds, not parsed further; ConfigError('file', …) when it
    cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("file", f"cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("file", f"{path} is not valid TOML: {exc}") from None


def check_settings(spec: Spec, *, namespace: str, redis: str) -> None:
    """Check every service deployment's settings against its service's settings model, as its
    instances will read them (in ``namespace``, on ``redis`` unless the table names another)."""
    for name, deployment in spec.deployments.items():
        if deployment.service is None:
            continue
        model = SERVICES[deployment.service].settings
        check_table(
            model,
            deployment.settings,
            where=f"deployments.{name}.settings",
            given={"redis": redis, "service_namespace": namespace, "service_label": name},
        )


def _spec_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return ConfigError(".".join(loc), "unknown key")
    if err["type"] == "missing":
        return ConfigError(".".join(loc), "required")
    if err["type"] == "value_error":  # our own checks: "KEY: problem", KEY below loc
        head, sep, rest = message.partition(": ")
        if sep and " " not in head:
            if head.startswith("deployments."):
                return ConfigError(head, rest)
            return ConfigError(".".join([*loc, head]), rest)
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
    return ConfigError(".".join(loc) or "file", f"{message}{shown}")
