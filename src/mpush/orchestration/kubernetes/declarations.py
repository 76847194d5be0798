"""What an export reads: rcontrol's spec (``mpush.orchestration.rcontrol.spec``, the one parser of
the TOML) and each deployment's ``[deployments.NAME.autoscale]`` table::

    [deployments.files.autoscale]
    min = 1                    KEDA minReplicaCount
    max = 6                    KEDA maxReplicaCount
    queue = "{web}:files"      the redis scaler's listName
    target = 20                listLength: desired = ceil(length / target)
    activation = 0             activationListLength
    response_time = 0.2        target p95 in seconds: KEDA's redis scaler has no equivalent
    response_metric = "hfiler" the metrics hash of those response times
    scale_up_window = 0        HPA behavior.scaleUp.stabilizationWindowSeconds
    scale_down_window = 30     HPA behavior.scaleDown.stabilizationWindowSeconds

rcontrol's controller acts on the same table; while its spec model does not know the key yet, the
tables are taken out of the document here, before the spec parses the rest
(``autoscale_tables``: the one place to change once the spec model carries ``autoscale``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mpush.errors import ConfigError
from mpush.orchestration.rcontrol.spec import Deployment, Spec, parse_spec, read_toml

__all__ = ["Autoscale", "Declarations", "autoscale_tables", "read_declarations"]


class Autoscale(BaseModel):
    """One ``[deployments.NAME.autoscale]`` table, as the export reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(1, ge=0, le=1000)
    max: int = Field(..., ge=1, le=1000)
    queue: str | None = Field(None, min_length=1)
    target: int | None = Field(None, ge=1)
    activation: int = Field(0, ge=0)
    response_time: float | None = Field(None, gt=0)
    response_metric: str | None = Field(None, min_length=1)
    scale_up_window: float = Field(0, ge=0, le=3600)
    scale_down_window: float = Field(30, ge=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> Autoscale:
        if self.max < self.min:
            raise ValueError(f"max: {self.max} is below min ({self.min})")
        if self.queue is not None and self.target is None:
            raise ValueError("target: required with queue (the list length one replica serves)")
        if self.queue is None and self.response_time is None:
            raise ValueError("queue: give a queue (and its target), or a response_time")
        return self

    @property
    def windows(self) -> tuple[int, int]:
        """The stabilization windows in whole seconds, as HPA takes them (rounded up)."""
        return math.ceil(self.scale_up_window), math.ceil(self.scale_down_window)


@dataclass(frozen=True)
class Declarations:
    """A whole file: the spec, and the autoscale table of each deployment that has one."""

    spec: Spec
    autoscale: dict[str, Autoscale] = field(default_factory=dict)


def read_declarations(path: Path) -> Declarations:
    """Read ``path``; ConfigError naming the first bad key."""
    return parse_declarations(read_toml(path))


def parse_declarations(data: Mapping[str, Any]) -> Declarations:
    rest, tables = autoscale_tables(data)
    spec = parse_spec(rest)
    if not tables:  # the spec itself may carry them (once its model knows the key)
        tables = {
            name: _dumped(found)
            for name, deployment in spec.deployments.items()
            if (found := _spec_autoscale(deployment)) is not None
        }
    autoscale: dict[str, Autoscale] = {}
    for name, table in tables.items():
        try:
            autoscale[name] = Autoscale.model_validate(table)
        except ValidationError as exc:
            raise _autoscale_error(name, exc) from None
    return Declarations(spec, autoscale)


def autoscale_tables(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document without its ``[deployments.NAME.autoscale]`` tables, and those tables by
    deployment — while rcontrol's spec model does not know ``autoscale`` (it refuses unknown
    keys). Once it does, the document is left whole and the spec's own field is read."""
    if "autoscale" in Deployment.model_fields:
        return dict(data), {}
    deployments = data.get("deployments")
    if not isinstance(deployments, Mapping):
        return dict(data), {}
    kept: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    for name, table in deployments.items():
        if isinstance(table, Mapping) and "autoscale" in table:
            tables[str(name)] = table["autoscale"]
            kept[name] = {key: value for key, value in table.items() if key != "autoscale"}
        else:
            kept[name] = table
    return {**data, "deployments": kept}, tables


def _spec_autoscale(deployment: Deployment) -> Any:
    return getattr(deployment, "autoscale", None)


def _dumped(found: Any) -> Any:
    """The spec's own autoscale model as a table of the keys above (extra keys of its own are
    the controller's business)."""
    data = found.model_dump() if isinstance(found, BaseModel) else found
    if isinstance(data, Mapping):
        return {key: value for key, value in data.items() if key in Autoscale.model_fields}
    return data


def _autoscale_error(name: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    where = f"deployments.{name}.autoscale"
    loc = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return ConfigError(f"{where}.{loc}", "unknown key")
    if err["type"] == "missing":
        return ConfigError(f"{where}.{loc}", "required")
    if err["type"] == "model_type":
        return ConfigError(where, "must be a table")
    if not loc:  # our own checks: "KEY: problem"
        key, _, rest = message.partition(": ")
        return ConfigError(f"{where}.{key}", rest)
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) else ""
    return ConfigError(f"{where}.{loc}", f"{message}{shown}")
