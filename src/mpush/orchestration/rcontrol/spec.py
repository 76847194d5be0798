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

    [deployments.NAME.settings]   the service's own settings (as in its --config file), checked
    in = "{web}:in"               against its settings model at apply time; rcontrol sets
                                  service_namespace, service_label and standby itself

A deployment's *run* (service and settings, or command) is what an instance executes; its
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
from mpush.errors import ConfigError

__all__ = [
    "DEPLOYMENT_NAME",
    "RESERVED_SETTINGS",
    "Deployment",
    "Run",
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
    "standby": "set the deployment's standby count instead",
    "config": "the settings table is the instance's config file",
}


def canonical(value: BaseModel | Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys: equal declarations give equal text (and digests)."""
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Run(BaseModel):
    """What one instance executes: an mpush service with its settings, or a command."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    command: list[str] | None = None

    def describe(self) -> str:
        """One line: ``mpush lpush``, or the command as a shell would take it."""
        if self.command is not None:
            return shlex.join(self.command).replace("\n", "\\n")
        return f"mpush {self.service}"

    @property
    def release(self) -> str:
        """12 hex digits naming exactly this run."""
        return hashlib.sha256(canonical(self).encode()).hexdigest()[:12]


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
        return self

    @property
    def run(self) -> Run:
        return Run(service=self.service, settings=self.settings, command=self.command)

    @property
    def release(self) -> str:
        return self.run.release


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
