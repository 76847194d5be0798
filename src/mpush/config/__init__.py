"""Typed settings, read once at the entry point.

Load order, lowest to highest priority: defaults < config file (TOML or JSON, named by ``--config``
or ``MPUSH_CONFIG``) < ``MPUSH_*`` environment variables < command-line flags. Keys are snake_case;
the original project's camelCase prop names (``popTimeout``, ``serviceNamespace``, ``in``, …) are
accepted in the file. Unknown keys and bad values raise ConfigError naming the key.

``base`` holds what every service shares and the loader; each family of services has its module.
All of them are imported here, so that an ``MPUSH_*`` variable is checked against every setting.
"""

from mpush.config.base import (
    ENV_PREFIX,
    CommonSettings,
    LpushSettings,
    MonitorSettings,
    MoverSettings,
    MpushSettings,
    StatusSettings,
    TrackingSettings,
    check_table,
    load_settings,
    overlay,
)
from mpush.config.catalog import SERVICES, ServiceEntry
from mpush.config.exporter import ExporterSettings
from mpush.config.http import (
    DemoSettings,
    DispatchSettings,
    FilerSettings,
    GatewaySettings,
    HandlerSettings,
    QuerySettings,
    RenderSettings,
    RouterSettings,
)
from mpush.config.ndeploy import (
    NdeployListSettings,
    NdeployPopSettings,
    NdeployRequestSettings,
    NdeployRollbackSettings,
    NdeployServeSettings,
    NdeploySettings,
)
from mpush.config.rcontrol import (
    RcontrolAgentSettings,
    RcontrolApplySettings,
    RcontrolControllerSettings,
    RcontrolDeleteSettings,
    RcontrolDrainSettings,
    RcontrolExportSettings,
    RcontrolRollbackSettings,
    RcontrolRolloutSettings,
    RcontrolScaleSettings,
    RcontrolSettings,
    RcontrolStatusSettings,
    RcontrolUncordonSettings,
)
from mpush.config.stages import (
    MbalanceSettings,
    MdedupeSettings,
    MthrottleSettings,
    StageSettings,
)
from mpush.config.vpush import VpushSettings

__all__ = [
    "ENV_PREFIX",
    "SERVICES",
    "CommonSettings",
    "DemoSettings",
    "DispatchSettings",
    "ExporterSettings",
    "FilerSettings",
    "GatewaySettings",
    "HandlerSettings",
    "LpushSettings",
    "MbalanceSettings",
    "MdedupeSettings",
    "MonitorSettings",
    "MoverSettings",
    "MpushSettings",
    "MthrottleSettings",
    "NdeployListSettings",
    "NdeployPopSettings",
    "NdeployRequestSettings",
    "NdeployRollbackSettings",
    "NdeployServeSettings",
    "NdeploySettings",
    "QuerySettings",
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
    "RenderSettings",
    "RouterSettings",
    "ServiceEntry",
    "StageSettings",
    "StatusSettings",
    "TrackingSettings",
    "VpushSettings",
    "check_table",
    "load_settings",
    "overlay",
]
