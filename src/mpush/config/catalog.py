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
    """How to run one service: ``mpush <command…>``, configured by ``settings``; ``metrics``
    names the metrics hashes its instances write, its main one (response times, errors) first."""

    command: tuple[str, ...]
    settings: type[CommonSettings]
    metrics: tuple[str, ...]


def _one(name: str, settings: type[CommonSettings], *metrics: str) -> tuple[str, ServiceEntry]:
    return name, ServiceEntry((name,), settings, metrics or (name,))


SERVICES: dict[str, ServiceEntry] = dict(
    [
        _one("mpush", MpushSettings, "move"),
        _one("lpush", LpushSettings, "move"),
        _one("monitor", MonitorSettings, "done", "timeout", "failed", "dead"),
        _one("mbalance", MbalanceSettings, "balance"),
        _one("mdedupe", MdedupeSettings, "dedupe"),
        _one("mthrottle", MthrottleSettings, "throttle"),
        _one("vpush", VpushSettings, "vpush_moved"),
        _one("hgateway", GatewaySettings, "hgateway:response", "hgateway"),
        _one("hrouter", RouterSettings),
        _one("mdispatch", DispatchSettings),
        _one("handler", HandlerSettings),
        _one("hfiler", FilerSettings),
        _one("rquery", QuerySettings),
        _one("hrender", RenderSettings),
        _one("exporter", ExporterSettings),
        ("ndeploy", ServiceEntry(("ndeploy", "serve"), NdeployServeSettings, ("deploy",))),
    ]
)
