"""The settings every service shares, and how settings are loaded.

Load order, lowest to highest priority: defaults < config file (TOML or JSON, named by ``--config``
or ``MPUSH_CONFIG``) < ``MPUSH_*`` environment variables < command-line flags. Keys are snake_case;
the original project's camelCase prop names (``popTimeout``, ``serviceNamespace``, ``in``, …) are
accepted in the file so an original props file, written as JSON, works. Unknown keys and bad values
raise ConfigError naming the key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mpush.connection import with_password, without_password
from mpush.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "URL_PASSWORDS",
    "CommonSettings",
    "LpushSettings",
    "MonitorSettings",
    "MoverSettings",
    "MpushSettings",
    "StatusSettings",
    "TrackingSettings",
    "check_table",
    "checked_elsewhere",
    "load_settings",
    "overlay",
    "paths_are_local",
]

ENV_PREFIX = "MPUSH_"

# Original prop names that are not simply the camelCase of ours.
_LEGACY_NAMES = {"in": "input", "redisNamespace": "service_namespace"}
# A Redis URL setting and the setting that may hold its password apart from it (for a secret
# store: MPUSH_REDIS_PASSWORD from a Kubernetes Secret), in the models that have both.
URL_PASSWORDS = {
    "redis": "redis_password",
    "service_redis": "service_redis_password",
    "out_redis": "out_redis_password",
}
# Original props that the atomic engine made unnecessary: accepted, ignored, documented.
_OBSOLETE_NAMES = {"pending", "pending_list"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class CommonSettings(BaseSettings):
    """Settings every service shares: where Redis is, the service registry, logging."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, frozen=True)

    cli_names: ClassVar[dict[str, str]] = {}
    # The table of a shared config file that holds this service's own keys (see select_section).
    section: ClassVar[str] = ""

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
    redis_password: SecretStr | None = Field(
        None,
        description="Password of the --redis URL, kept apart from it (best from the environment: "
        "MPUSH_REDIS_PASSWORD).",
    )
    service_redis_password: SecretStr | None = Field(
        None, description="Password of the --service-redis URL, kept apart from it."
    )
    service_expire: int = Field(60, ge=2, description="Seconds a registration lives unrenewed.")
    service_renew: float = Field(15.0, gt=0, description="Seconds between renewals.")
    service_check: float = Field(
        1.0, gt=0, description="Seconds between checks that the registration still exists."
    )
    service_capacity: int = Field(100, ge=1, description="Entries kept on <ns>:service:ids.")
    service_label: str | None = Field(
        None,
        max_length=200,
        description="A label for this instance: in its registration and in <ns>:service:labels "
        "(rcontrol labels its instances so).",
    )
    service_release: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="The release this instance runs: in its registration, and its metrics also "
        "kept per release in <ns>:release:<release>:metrics:<name> (rcontrol sets it).",
    )
    standby: bool = Field(
        False,
        description="Register as standby and do no work until activated (a push on "
        "<ns>:service:<id>:activate).",
    )
    pop_timeout: float = Field(
        1.0, gt=0, le=60, description="Seconds a blocking wait lasts; bounds shutdown time."
    )
    startup_timeout: float = Field(
        10.0, ge=0, description="Seconds to keep trying to reach Redis at startup."
    )
    metrics_interval: float = Field(1.0, gt=0, description="Seconds between metrics flushes.")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve this process's own Prometheus /metrics on this port (0: any free).",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the --metrics-port listener (0.0.0.0: all)."
    )
    log_format: Literal["human", "json"] = Field("human", description="human or json.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )

    @model_validator(mode="before")
    @classmethod
    def _passwords_into_urls(cls, data: Any) -> Any:
        """A password given apart from its URL (``redis_password``, …) goes into the URL."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for url_key, password_key in URL_PASSWORDS.items():
            password = data.get(password_key)
            if password is None or password_key not in cls.model_fields:
                continue
            secret = password.get_secret_value() if isinstance(password, SecretStr) else password
            url = data.get(url_key, cls.model_fields[url_key].default)
            if not isinstance(url, str) or not url:
                raise ValueError(f"{password_key}: needs a {url_key} URL to be the password of")
            if without_password(url)[1] is not None:
                raise ValueError(
                    f"{password_key}: the {url_key} URL has a password already (give one or "
                    "the other)"
                )
            data[url_key] = with_password(url, str(secret))
        return data

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> CommonSettings:
        for name in ("standby", "service_label", "service_release"):
            if getattr(self, name) and not self.service_namespace:
                raise ValueError(f"{name}: needs a service_namespace (the registry it shows in)")
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


class TrackingSettings(CommonSettings):
    """Message tracking (docs/tracking.md): on when a service_namespace is set."""

    message_tracking: bool = Field(
        True, description="Track each message moved (needs service_namespace)."
    )
    message_timeout: float = Field(
        10.0, gt=0, description="Seconds a consumer has to report a message done."
    )
    message_expire: int = Field(
        3600,
        ge=1,
        description="Seconds an unfinished message stays tracked (retry off), and a finished "
        "message's record is kept.",
    )
    message_capacity: int = Field(
        100_000, ge=1, description="Most messages tracked at once; more move untracked."
    )
    max_deliveries: int = Field(
        0, ge=0, description="Deliveries before a timed-out message is dead-lettered (0: no retry)."
    )
    retry_backoff: float = Field(
        1.0, ge=0, description="Seconds before the first redelivery; doubles each time."
    )
    retry_backoff_max: float = Field(60.0, ge=0, description="Cap of the redelivery backoff.")

    @model_validator(mode="after")
    def _expire_covers_deliveries(self) -> TrackingSettings:
        if self.message_expire <= self.message_timeout:
            raise ValueError(
                f"message_expire: {self.message_expire}s must be longer than "
                f"message_timeout ({self.message_timeout:g}s)"
            )
        needed = self.max_deliveries * (self.message_timeout + self.retry_backoff_max)
        if self.message_expire <= needed:
            raise ValueError(
                f"message_expire: {self.message_expire}s must outlast every delivery "
                f"(max_deliveries × (message_timeout + retry_backoff_max) = {needed:g}s)"
            )
        return self

    @property
    def tracking(self) -> bool:
        """True when messages are tracked: a namespace is set and tracking is not turned off."""
        return bool(self.service_namespace) and self.message_tracking


class MoverSettings(TrackingSettings):
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

    section: ClassVar[str] = "mpush"


class LpushSettings(MoverSettings):
    """lpush: move each message to one out list."""

    section: ClassVar[str] = "lpush"

    @model_validator(mode="after")
    def _one_out(self) -> LpushSettings:
        if len(self.out) != 1:
            raise ValueError(f"out: lpush moves to exactly one list, got {len(self.out)}")
        return self


class StatusSettings(CommonSettings):
    """``mpush status``: read-only view of a namespace."""


class MonitorSettings(CommonSettings):
    """monitor: response times, timeouts, redelivery and dead letters of tracked messages."""

    batch: int = Field(1000, ge=1, le=5000, description="Most messages handled by one step.")

    @model_validator(mode="after")
    def _namespace_given(self) -> MonitorSettings:
        if not self.service_namespace:
            raise ValueError("service_namespace: required, e.g. --service-namespace {demo}:mpush")
        return self


S = TypeVar("S", bound=CommonSettings)


def load_settings(
    cls: type[S], flags: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> S:
    """Build ``cls`` from defaults, file, environment and ``flags`` (None values are unset).

    ``env`` is the environment to read (``os.environ`` when None): every ``MPUSH_*`` variable,
    ``MPUSH_CONFIG`` included, is read from it and from nowhere else.
    """
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    environ = os.environ if env is None else env
    _check_env(environ)
    token = _ENVIRON.set(environ)
    try:
        return cls(**given)
    except ValidationError as exc:
        raise _config_error(cls, exc, given) from None
    finally:
        _ENVIRON.reset(token)


# True while settings are checked for another machine (a container image, another host).
_ELSEWHERE: ContextVar[bool] = ContextVar("mpush_elsewhere", default=False)


@contextlib.contextmanager
def checked_elsewhere() -> Iterator[None]:
    """Within it, settings are checked for another machine: the paths they name (a directory
    served, templates) are not looked for here."""
    token = _ELSEWHERE.set(True)
    try:
        yield
    finally:
        _ELSEWHERE.reset(token)


def paths_are_local() -> bool:
    """False within ``checked_elsewhere``: a validator then leaves paths alone."""
    return not _ELSEWHERE.get()


# The environment load_settings was given, for the settings sources pydantic builds.
_ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("mpush_environ", default=os.environ)


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
    if f"{ENV_PREFIX}{key.upper()}" in _ENVIRON.get():
        return f", from {ENV_PREFIX}{key.upper()}"
    return ", from the config file"


class _EnvSource(PydanticBaseSettingsSource):
    """``MPUSH_<SETTING>`` variables; lists as JSON or comma-separated."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raw = _ENVIRON.get().get(f"{ENV_PREFIX}{field_name.upper()}")
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
        path = self._init().get("config") or _ENVIRON.get().get(f"{ENV_PREFIX}CONFIG")
        if not path:
            return {}
        return select_section(read_config_file(Path(path)), self.settings_cls)


def select_section(data: Mapping[str, Any], cls: type[BaseSettings]) -> dict[str, Any]:
    """One service's view of a config file: the top-level keys, overlaid with its own table.

    A file may hold a table per service (``[mdedupe]``, ``[mbalance]``, …) beside the keys they
    share, so one file configures a whole pipeline of stages: each service reads the shared keys
    and its own table, and ignores the tables of the other services.
    """
    fields = set(cls.model_fields)
    sections = {sub.section for sub in _settings_classes() if sub.section}
    shared = {k: v for k, v in data.items() if not (k in sections and isinstance(v, dict))}
    result = normalise_keys(shared, fields)
    own = getattr(cls, "section", "")
    if own and own in data:
        table = data[own]
        if not isinstance(table, dict):
            raise ConfigError(own, "must be a table of settings for the service")
        result.update(normalise_keys(table, fields))
    return result


def _settings_classes() -> list[type[CommonSettings]]:
    found: list[type[CommonSettings]] = []
    stack: list[type[CommonSettings]] = [CommonSettings]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


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


def check_table(
    cls: type[S], values: Mapping[str, Any], *, where: str, given: Mapping[str, Any] | None = None
) -> S:
    """``cls`` built from a table of settings found inside another file (a deployment's
    ``settings``), with ``given`` filling what the table leaves out; nothing from the
    environment or a config file. A bad key or value raises ConfigError naming ``where.KEY``.
    """
    fields = set(cls.model_fields)
    found = normalise_keys(values, fields)
    unknown = sorted(set(found) - fields)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")
    token = _ENVIRON.set({})
    try:
        return cls(**{**(given or {}), **found})
    except ValidationError as exc:
        error = _config_error(cls, exc, {})
        problem = error.problem.removesuffix(", from the config file")
        if problem.startswith("required"):
            problem = "required"
        raise ConfigError(f"{where}.{error.key}", problem) from None
    finally:
        _ENVIRON.reset(token)


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
