"""The services ``mpush`` runs, by name: the words of their command and their settings model.

rcontrol checks a deployment's settings table against the model named here before anything is
applied, and its agents run the service as ``mpush <words> --config <that table>``. The ``mpush``
command registers the same services (a test keeps the two lists equal).
"""

from __future__ import annotations

from dataclasses import dataclass

from mpush.config.base import CommonSettings, LpushSettings, MonitorSettings, MpushSettings
from mpush.config.exporter import ExporterSettings
from mpush.config.http import (
    DispatchSettings,
    FilerSettings,
    GatewaySettings,
    HandlerSettings,
    QuerySettings,
    RenderSettings,
    RouterSettings,
)
from mpush.config.ndeploy import NdeployServeSettings
from mpush.config.stages import MbalanceSettings, MdedupeSettings, MthrottleSettings
from mpush.config.vpush import VpushSettings

__all__ = ["SERVICES", "ServiceEntry"]


@dataclass(frozen=True)
class ServiceEntry:
    """How to run one service: ``mpush <command…>``, configured by ``settings``."""

    command: tuple[str, ...]
    settings: type[CommonSettings]


def _one(name: str, settings: type[CommonSettings]) -> tuple[str, ServiceEntry]:
    return name, ServiceEntry((name,), settings)


SERVICES: dict[str, ServiceEntry] = dict(
    [
        _one("mpush", MpushSettings),
        _one("lpush", LpushSettings),
        _one("monitor", MonitorSettings),
        _one("mbalance", MbalanceSettings),
        _one("mdedupe", MdedupeSettings),
        _one("mthrottle", MthrottleSettings),
        _one("vpush", VpushSettings),
        _one("hgateway", GatewaySettings),
        _one("hrouter", RouterSettings),
        _one("mdispatch", DispatchSettings),
        _one("handler", HandlerSettings),
        _one("hfiler", FilerSettings),
        _one("rquery", QuerySettings),
        _one("hrender", RenderSettings),
        _one("exporter", ExporterSettings),
        ("ndeploy", ServiceEntry(("ndeploy", "serve"), NdeployServeSettings)),
    ]
)
