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
    "DispatchSettings",
    "FilerSettings",
    "GatewaySettings",
    "HandlerSettings",
    "LpushSettings",
    "MoverSettings",
    "MpushSettings",
    "QuerySettings",
    "RenderSettings",
    "RouterSettings",
    "StatusSettings",
    "default_prefix",
    "load_settings",
    "overlay",
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
                f"service_renew ({self.service_renew:g}s) must be shorter than "
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


def default_prefix(namespace: str | None, suffix: str, fallback: str) -> str:
    """``<namespace>:<suffix>`` when there is a namespace, else ``fallback``."""
    return f"{namespace}:{suffix}" if namespace else fallback


def overlay(settings: S, values: Mapping[str, Any], *, origin: str) -> S:
    """``settings`` with ``values`` (e.g. from a Redis hash) filling the fields left at default.

    Fields set by a flag, the environment or the config file keep their values; unknown keys and
    bad values raise ConfigError naming ``origin`` and the key.
    """
    cls = type(settings)
    fields = set(cls.model_fields)
    found = normalise_keys(values, fields)
    unknown = sorted(set(found) - fields)
    if unknown:
        raise ConfigError(f"{origin} {unknown[0]}", "unknown setting")
    given = settings.model_dump(include=settings.model_fields_set)
    merged = {**{k: v for k, v in found.items() if k not in given}, **given}
    try:
        return cls(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "settings"
        where = f"{origin} {key}" if key in found else key
        raise ConfigError(where, err["msg"].removeprefix("Value error, ")) from None


class GatewaySettings(CommonSettings):
    """hgateway: an HTTP server that turns each request into a message on a Redis list, waits
    for the response message and answers the client."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: all).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    queue: str = Field("hgateway:req", min_length=1, description="The request queue.")
    reply_prefix: str | None = Field(
        None,
        min_length=1,
        description="Reply lists: <reply_prefix>:<instance> (default <ns>:res, or hgateway:res).",
    )
    timeout: float = Field(10.0, gt=0, le=3600, description="Seconds a request may take.")
    body_limit: int = Field(1_048_576, ge=0, description="Largest request body, bytes.")
    queue_limit: int = Field(
        10_000, ge=0, description="503 while the request queue is longer (0: no limit)."
    )
    retry_after: int = Field(1, ge=0, description="Retry-After seconds sent with a 503.")
    require_consumer: bool = Field(
        True, description="503 while no live instance consumes the queue (needs a namespace)."
    )
    drain: float = Field(
        3.0, ge=0, le=4, description="Seconds to finish in-flight requests on shutdown."
    )
    batch: int = Field(500, ge=1, le=5000, description="Most messages per Redis round trip.")

    discoverable: ClassVar[tuple[str, ...]] = (
        "host",
        "port",
        "queue",
        "reply_prefix",
        "timeout",
        "body_limit",
        "queue_limit",
        "retry_after",
        "require_consumer",
        "drain",
        "batch",
    )


class RouterSettings(CommonSettings):
    """hrouter: routes each HTTP request message to a service queue by matching its URL."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hgateway:req", min_length=1, description="The request queue.")
    route: list[str] = Field(
        default_factory=list,
        description="A route '[METHOD[,METHOD]] REGEX QUEUE [NAME]', tried in order.",
    )
    routes_key: str | None = Field(
        None, description="Redis list of routes applied live (default: <ns>:routes)."
    )
    reload: float = Field(1.0, gt=0, description="Seconds between checks of the Redis routes.")
    track: bool = Field(
        False, description="Register each request for mdispatch (handlers answering by id)."
    )
    track_prefix: str | None = Field(
        None,
        min_length=1,
        description="Registrations: <track_prefix>:<id> (default <ns>:track, or mdispatch:req).",
    )
    batch: int = Field(500, ge=1, le=5000, description="Most messages per Redis round trip.")


class DispatchSettings(CommonSettings):
    """mdispatch: routes each response message to the instance that waits for it, by id."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hgateway:res", min_length=1, description="The shared response list.")
    track_prefix: str | None = Field(
        None,
        min_length=1,
        description="Registrations: <track_prefix>:<id> (default <ns>:track, or mdispatch:req).",
    )
    requests: str | None = Field(
        None, description="Also register the request messages of this list, then --forward them."
    )
    forward: str | None = Field(None, description="Where registered requests go on to.")
    batch: int = Field(500, ge=1, le=5000, description="Most messages per Redis round trip.")

    @model_validator(mode="after")
    def _requests_and_forward(self) -> DispatchSettings:
        if (self.requests is None) != (self.forward is None):
            raise ValueError("forward: --requests and --forward go together")
        return self


class HandlerSettings(CommonSettings):
    """handler: serve HTTP request messages from a queue with a Python function."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field(..., min_length=1, description="The queue of request messages.")
    handler: str = Field(
        ..., pattern=r"^[\w.]+:[\w.]+$", description="The handler, as module:function."
    )
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(100, ge=1, le=5000, description="Most messages per Redis round trip.")


class FilerSettings(CommonSettings):
    """hfiler: static files over HTTP messages, loaded into Redis once and served from there."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hfiler:req", min_length=1, description="The queue of request messages.")
    root: Path = Field(..., description="The directory served.")
    prefix: str = Field("/", description="URL path prefix removed before mapping to a file.")
    index: list[str] = Field(
        default_factory=lambda: ["index.html"], description="Index file of a directory."
    )
    ttl: int = Field(300, ge=1, description="Seconds a file stays in Redis (default expiry).")
    ttl_pattern: list[str] = Field(
        default_factory=list, description="GLOB=SECONDS: expiry of matching paths; first wins."
    )
    expiry: str | None = Field(
        None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="module:function(path, stat) returning seconds (None: the default).",
    )
    max_age: int | None = Field(
        None, ge=0, description="Cache-Control max-age (default: the file's expiry)."
    )
    gzip: bool = Field(False, description="Keep a gzip variant of compressible files.")
    gzip_min: int = Field(256, ge=0, description="Smallest file worth compressing, bytes.")
    max_size: int = Field(10_485_760, ge=1, description="Largest file served, bytes.")
    cache_prefix: str | None = Field(
        None, min_length=1, description="Files are <cache_prefix>:<path> (default <ns>:hfiler)."
    )
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(100, ge=1, le=5000, description="Most messages per Redis round trip.")

    @model_validator(mode="after")
    def _check(self) -> FilerSettings:
        if not self.root.is_dir():
            raise ValueError(f"root: {str(self.root)!r} is not a directory")
        if not self.prefix.startswith("/"):
            raise ValueError(f"prefix: {self.prefix!r} must start with /")
        for spec in self.ttl_pattern:
            glob, sep, seconds = spec.rpartition("=")
            if not sep or not glob or not seconds.isdigit() or int(seconds) < 1:
                raise ValueError(f"ttl_pattern: {spec!r} is not GLOB=SECONDS")
        return self


class QuerySettings(CommonSettings):
    """rquery: read Redis data over HTTP, under allowed key prefixes only."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("rquery:req", min_length=1, description="The queue of request messages.")
    allow: list[str] = Field(..., min_length=1, description="A key prefix that may be read.")
    write: list[str] = Field(
        default_factory=list, description="A key prefix where POST set/lpush are enabled."
    )
    prefix: str = Field("/", description="URL path prefix removed before the command.")
    max_items: int = Field(1000, ge=1, le=100_000, description="Most items in one answer.")
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(100, ge=1, le=5000, description="Most messages per Redis round trip.")

    @model_validator(mode="after")
    def _check(self) -> QuerySettings:
        if any(not p for p in self.allow):
            raise ValueError("allow: an empty prefix would allow every key")
        for writable in self.write:
            if not writable or not any(writable.startswith(p) for p in self.allow):
                raise ValueError(f"write: {writable!r} is not under an allowed prefix")
        if not self.prefix.startswith("/"):
            raise ValueError(f"prefix: {self.prefix!r} must start with /")
        return self


class RenderSettings(CommonSettings):
    """hrender: HTML pages rendered with Jinja2 from request data and Redis data."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hrender:req", min_length=1, description="The queue of request messages.")
    templates: Path | None = Field(None, description="Directory of trusted templates.")
    templates_key: str | None = Field(
        None, description="Redis hash of templates, rendered sandboxed (default <ns>:templates)."
    )
    page: list[str] = Field(
        ..., min_length=1, description="A page 'ROUTE TEMPLATE [NAME=KEY ...]' ($param in KEY)."
    )
    max_items: int = Field(1000, ge=1, description="Most items read from one Redis key.")
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(100, ge=1, le=5000, description="Most messages per Redis round trip.")

    @model_validator(mode="after")
    def _check(self) -> RenderSettings:
        if self.templates is not None and not self.templates.is_dir():
            raise ValueError(f"templates: {str(self.templates)!r} is not a directory")
        for spec in self.page:
            parts = spec.split()
            if len(parts) < 2 or any("=" not in part for part in parts[2:]):
                raise ValueError(f"page: {spec!r} is not 'ROUTE TEMPLATE [NAME=KEY ...]'")
        return self
