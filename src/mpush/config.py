"""Typed settings, read once at the entry point.

Load order, lowest to highest priority: defaults < config file (TOML or JSON, named by ``--config``
or ``MPUSH_CONFIG``) < ``MPUSH_*`` environment variables < command-line flags. Keys are snake_case;
the original project's camelCase prop names (``popTimeout``, ``serviceNamespace``, ``in``, …) are
accepted in the file so an original props file, written as JSON, works. Unknown keys and bad values
raise ConfigError naming the key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mpush.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "CommonSettings",
    "LpushSettings",
    "MoverSettings",
    "MpushSettings",
    "StatusSettings",
    "VpushSettings",
    "load_settings",
]

ENV_PREFIX = "MPUSH_"

# Original prop names that are not simply the camelCase of ours.
_LEGACY_NAMES = {"in": "input", "redisNamespace": "service_namespace"}
# Original props that the atomic engine made unnecessary: accepted, ignored, documented.
_OBSOLETE_NAMES = {"pending", "pending_list"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class CommonSettings(BaseSettings):
    """Settings every service shares: where Redis is, the service registry, logging."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, frozen=True)

    cli_names: ClassVar[dict[str, str]] = {}

    config: Path | None = Field(
        None, description="Config file (TOML or JSON) read before env/flags."
    )
    redis: str = Field("redis://127.0.0.1:6379/0", description="Redis URL of the queues.")
    cluster: bool = Field(False, description="Treat the Redis URL as a Redis Cluster.")
    service_namespace: str | None = Field(
        None, description="Namespace for the service registry and metrics, e.g. demo:mpush."
    )
    service_redis: str | None = Field(
        None, description="Redis URL for registry and metrics (default: the main Redis)."
    )
    service_expire: int = Field(60, ge=2, description="Seconds a registration lives unrenewed.")
    service_renew: float = Field(15.0, gt=0, description="Seconds between renewals.")
    service_check: float = Field(
        1.0, gt=0, description="Seconds between checks that the registration still exists."
    )
    service_capacity: int = Field(100, ge=1, description="Entries kept on <ns>:service:ids.")
    pop_timeout: float = Field(
        1.0, gt=0, le=60, description="Seconds a blocking wait lasts; bounds shutdown time."
    )
    startup_timeout: float = Field(
        10.0, ge=0, description="Seconds to keep trying to reach Redis at startup."
    )
    metrics_interval: float = Field(1.0, gt=0, description="Seconds between metrics flushes.")
    log_format: Literal["human", "json"] = Field("human", description="human or json.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> CommonSettings:
        if self.service_renew >= self.service_expire:
            raise ValueError(
                f"service_renew: {self.service_renew:g}s must be shorter than "
                f"service_expire ({self.service_expire}s)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls), _FileSource(settings_cls, init_settings))


class MoverSettings(CommonSettings):
    """The atomic move engine: from one list to one or more lists of the same Redis."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field(..., min_length=1, description="The list messages are taken from.")
    out: list[str] = Field(..., min_length=1, description="A list messages are pushed to.")
    batch: int = Field(1000, ge=1, le=5000, description="Most messages moved by one atomic step.")
    capacity: int = Field(
        0, ge=0, description="Trim each out list to its newest N messages (0: no trim)."
    )
    expire: int = Field(0, ge=0, description="EXPIRE each out list after a move, seconds (0: no).")

    @model_validator(mode="after")
    def _distinct_keys(self) -> MoverSettings:
        if self.input in self.out:
            raise ValueError(f"out: {self.input!r} is also the input list")
        if len(set(self.out)) != len(self.out):
            raise ValueError("out: the same list is named twice")
        return self


class MpushSettings(MoverSettings):
    """mpush: fan each message out to every out list."""


class LpushSettings(MoverSettings):
    """lpush: move each message to one out list."""

    @model_validator(mode="after")
    def _one_out(self) -> LpushSettings:
        if len(self.out) != 1:
            raise ValueError(f"out: lpush moves to exactly one list, got {len(self.out)}")
        return self


class StatusSettings(CommonSettings):
    """``mpush status``: read-only view of a namespace."""


S = TypeVar("S", bound=CommonSettings)


def load_settings(
    cls: type[S], flags: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> S:
    """Build ``cls`` from defaults, file, environment and ``flags`` (None values are unset)."""
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    _check_env(os.environ if env is None else env)
    try:
        return cls(**given)
    except ValidationError as exc:
        raise _config_error(cls, exc, given) from None


def _check_env(env: Mapping[str, str]) -> None:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in _all_fields()}
    for var in env:
        if var.startswith(ENV_PREFIX) and var not in known:
            raise ConfigError(var, "unknown environment variable (no mpush setting has that name)")


def _all_fields() -> set[str]:
    names: set[str] = set()
    stack: list[type[CommonSettings]] = [CommonSettings]
    while stack:
        cls = stack.pop()
        names.update(cls.model_fields)
        stack.extend(cls.__subclasses__())
    return names


def _config_error(
    cls: type[CommonSettings], exc: ValidationError, flags: Mapping[str, Any]
) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    key = loc[0] if loc else "settings"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return ConfigError(key, "unknown setting")
    if err["type"] == "missing":
        return ConfigError(key, f"required, set {_origin_hint(cls, key)}")
    if not loc:  # a model-level check: its message starts with the key
        key, _, rest = message.partition(": ")
        return ConfigError(key, rest) if rest else ConfigError("settings", message)
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
    return ConfigError(".".join(loc), f"{message}{shown}{_source_of(key, flags)}")


def _origin_hint(cls: type[CommonSettings], key: str) -> str:
    flag = "--" + cls.cli_names.get(key, key).replace("_", "-")
    return f"{flag}, {ENV_PREFIX}{key.upper()} or {key!r} in the config file"


def _source_of(key: str, flags: Mapping[str, Any]) -> str:
    if key in flags:
        return ", from the command line"
    if f"{ENV_PREFIX}{key.upper()}" in os.environ:
        return f", from {ENV_PREFIX}{key.upper()}"
    return ", from the config file"


class _EnvSource(PydanticBaseSettingsSource):
    """``MPUSH_<SETTING>`` variables; lists as JSON or comma-separated."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raw = os.environ.get(f"{ENV_PREFIX}{field_name.upper()}")
        if raw is None:
            return None, field_name, False
        if get_origin(field.annotation) is list or list in get_args(field.annotation):
            text = raw.strip()
            value: Any = json.loads(text) if text.startswith("[") else _split(text)
            return value, field_name, False
        return raw, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                found[name] = value
        return found


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class _FileSource(PydanticBaseSettingsSource):
    """The config file named by the ``config`` setting (flag or environment)."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._init = init

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self._init().get("config") or os.environ.get(f"{ENV_PREFIX}CONFIG")
        if not path:
            return {}
        return normalise_keys(read_config_file(Path(path)), set(self.settings_cls.model_fields))


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML or JSON object from ``path``; ConfigError('config', …) when it can't be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("config", f"cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("config", f"{path} is not valid {_kind(path)}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a JSON object / TOML table")
    return data


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "TOML"


def normalise_keys(data: Mapping[str, Any], fields: set[str]) -> dict[str, Any]:
    """Map original camelCase prop names to our snake_case ones; drop obsolete props."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        name = _LEGACY_NAMES.get(key, key)
        if name not in fields:
            snake = _snake(name)
            name = snake if snake in fields else name
        if name in _OBSOLETE_NAMES or _snake(name) in _OBSOLETE_NAMES:
            continue
        result[name] = [value] if name == "out" and isinstance(value, str) else value
    return result


class VpushSettings(CommonSettings):
    """vpush: move messages to a list on a different, remote Redis, exactly once in effect.

    Replicas elect one active mover through a lease with a fencing token; the others stand by.
    """

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field(..., min_length=1, description="The list messages are taken from.")
    out_redis: str = Field(..., min_length=1, description="Redis URL of the destination.")
    out_cluster: bool = Field(False, description="Treat the destination URL as a Redis Cluster.")
    out: list[str] = Field(
        ..., min_length=1, description="The list on the destination messages are pushed to."
    )
    batch: int = Field(
        1, ge=1, le=5000, description="Most messages in flight at once (1: one at a time)."
    )
    lease_ttl: float = Field(
        10.0, ge=0.5, le=3600, description="Seconds a dead mover's lease lasts before takeover."
    )
    out_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds before a stalled call to either Redis counts as an outage.",
    )
    dedupe_window: int = Field(
        604800,
        ge=0,
        description="Seconds the destination remembers the last message id (0: forever).",
    )
    provenance: bool = Field(
        False, description="Add meta.vpush = {source, moved_at} to JSON object messages."
    )

    @model_validator(mode="after")
    def _route(self) -> VpushSettings:
        if len(self.out) != 1:
            raise ValueError(f"out: vpush moves to exactly one list, got {len(self.out)}")
        if self.out_redis == self.redis and self.out[0] == self.input:
            raise ValueError(f"out: {self.input!r} on the same Redis is the input list")
        if self.pop_timeout >= self.lease_ttl:
            raise ValueError(
                f"lease_ttl: {self.lease_ttl:g}s must be longer than "
                f"pop_timeout ({self.pop_timeout:g}s), or the lease lapses while idle"
            )
        return self
