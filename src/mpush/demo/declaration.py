"""What ``mpush demo`` declares for rcontrol: ``site/rcontrol.toml``, filled in and checked.

The file is a template: ``${name}`` placeholders in its strings stand for the site's address, its
directory and the namespace's queues and prefixes (``placeholders``); a string that is one
placeholder alone takes the value as it is, so ``port = "${port}"`` becomes a number. Every
service's settings table also gets the settings the demo passes on to all its services
(``shared_settings``: quick registry expiry, short blocking pops, the log format), unless the
table sets them itself. The result is parsed by rcontrol's own parser and each table checked
against its service's settings model, before anything starts.

Deployments with an ``[deployments.NAME.autoscale]`` table are the ones the page may scale
(``Scalable``: their bounds, their queue). The file is read as ``rcontrol export`` reads one
(``orchestration.kubernetes.declarations``: the spec, and the autoscale tables, which it takes out
of the document while rcontrol's spec does not know the key). When rcontrol autoscales, the page
only watches; until then it scales those deployments by hand, within the same bounds.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpush.config import DemoSettings
from mpush.errors import ConfigError
from mpush.keys import DemoKeys, RcontrolKeys, ServiceKeys
from mpush.orchestration.kubernetes.declarations import Autoscale, parse_declarations
from mpush.orchestration.rcontrol.spec import Deployment, Spec, check_settings

__all__ = [
    "AUTOSCALE_KNOWN",
    "SHARED",
    "SITE",
    "TEMPLATE",
    "Declared",
    "Scalable",
    "declare",
    "fill",
    "placeholders",
    "shared_settings",
]

SITE = Path(__file__).resolve().parent / "site"
# rcontrol autoscales the deployments with an autoscale table once its spec knows the key.
AUTOSCALE_KNOWN = "autoscale" in Deployment.model_fields
TEMPLATE = SITE / "rcontrol.toml"

# The settings of every service the demo passes on from its own (``mpush demo --help``).
SHARED = (
    "service_expire",
    "service_renew",
    "service_check",
    "service_capacity",
    "pop_timeout",
    "startup_timeout",
    "metrics_interval",
    "log_format",
    "log_level",
)


class _Template(string.Template):
    """Only ``${name}`` is a placeholder: a lone ``$`` (a regex's end) stays as it is."""

    pattern = r"""
        \$(?:
          (?P<escaped>(?!))
        | \{(?P<braced>[a-z_]+)\}
        | (?P<named>(?!))
        | (?P<invalid>(?!))
        )
    """  # type: ignore[assignment]


@dataclass(frozen=True)
class Scalable:
    """A deployment with an autoscale table: the page shows (or sets) its replicas in bounds."""

    name: str
    min: int
    max: int
    queue: str | None
    target: int | None

    @classmethod
    def of(cls, name: str, table: Autoscale) -> Scalable:
        return cls(name, table.min, table.max, table.queue, table.target)


@dataclass(frozen=True)
class Declared:
    """The filled-in file: rcontrol's spec, and what the page may scale."""

    spec: Spec
    scalable: dict[str, Scalable]
    autoscaled: bool  # True: rcontrol sets their replicas; False: the page does, by hand

    @property
    def gateway_timeout(self) -> float:
        """Seconds the gateway gives a request: the scale of its response-time histogram."""
        for deployment in self.spec.deployments.values():
            if deployment.service == "hgateway":
                return float(deployment.settings.get("timeout", 10.0))
        return 10.0


def placeholders(layout: DemoKeys, host: str, port: int) -> dict[str, Any]:
    """The value of every ``${name}`` the template may use."""
    registry = ServiceKeys(layout.namespace)
    return {
        "host": host,
        "port": port,
        "dir": str(SITE),
        "req": layout.requests,
        "pages": layout.pages,
        "files": layout.files,
        "query": layout.query,
        "work": layout.work,
        "control": layout.control,
        "site": layout.site,
        "live": layout.live,
        "registry": registry.instance_prefix,
        "metrics": registry.metrics_prefix,
        "rcontrol": RcontrolKeys(layout.namespace).prefix,
    }


def fill(value: Any, values: Mapping[str, Any], where: str = "file") -> Any:
    """``value`` (a parsed TOML document or part of one) with its placeholders filled in."""
    if isinstance(value, dict):
        return {key: fill(item, values, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, values, f"{where}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    template = _Template(value)
    names = template.get_identifiers()
    if len(names) == 1 and value == "${" + names[0] + "}" and names[0] in values:
        return values[names[0]]  # alone: the value as it is
    try:
        return template.substitute(values)
    except (KeyError, ValueError) as exc:
        raise ConfigError(where, f"{value!r}: no placeholder {exc} in the demo") from None


def shared_settings(settings: DemoSettings) -> dict[str, Any]:
    """What every service of the demo gets from the demo's own settings."""
    return {name: getattr(settings, name) for name in SHARED}


def declare(settings: DemoSettings, layout: DemoKeys, port: int, redis: str) -> Declared:
    """The demo's declarations, filled in and checked (ConfigError naming the key if not)."""
    try:
        data = tomllib.loads(TEMPLATE.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("file", f"{TEMPLATE}: {exc}") from None
    data = fill(data, placeholders(layout, settings.host, port))
    shared = shared_settings(settings)
    for deployment in data.get("deployments", {}).values():
        if isinstance(deployment, dict) and "service" in deployment:
            deployment["settings"] = {**shared, **deployment.get("settings", {})}
    declarations = parse_declarations(data)
    check_settings(declarations.spec, namespace=layout.namespace, redis=redis)
    scalable = {name: Scalable.of(name, table) for name, table in declarations.autoscale.items()}
    return Declared(declarations.spec, scalable, autoscaled=AUTOSCALE_KNOWN and bool(scalable))
