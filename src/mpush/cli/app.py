"""The ``mpush`` command: the only place that parses argv and reads the environment.

Each service command's flags are generated from its settings model, so every setting has a flag,
the same name in a config file and an ``MPUSH_*`` variable, and its help text in one place. Exit
codes are ``mpush.exits``'s.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, Union, get_args, get_origin

import typer
from pydantic.fields import FieldInfo
from rich.console import Console

from mpush import __version__
from mpush.cli import ndeploy as ndeploy_commands
from mpush.cli import rcontrol as rcontrol_commands
from mpush.cli.logs import configure_logging
from mpush.cli.status import render_json, render_prometheus, render_table
from mpush.config import (
    CommonSettings,
    DemoSettings,
    DispatchSettings,
    ExporterSettings,
    FilerSettings,
    GatewaySettings,
    HandlerSettings,
    LpushSettings,
    MbalanceSettings,
    MdedupeSettings,
    MonitorSettings,
    MpushSettings,
    MthrottleSettings,
    NdeployListSettings,
    NdeployPopSettings,
    NdeployRequestSettings,
    NdeployRollbackSettings,
    NdeployServeSettings,
    QuerySettings,
    RcontrolAgentSettings,
    RcontrolApplySettings,
    RcontrolControllerSettings,
    RcontrolDeleteSettings,
    RcontrolDrainSettings,
    RcontrolExportSettings,
    RcontrolRollbackSettings,
    RcontrolRolloutSettings,
    RcontrolScaleSettings,
    RcontrolStatusSettings,
    RcontrolUncordonSettings,
    RenderSettings,
    RouterSettings,
    StatusSettings,
    VpushSettings,
    load_settings,
)
from mpush.connection import connect, parse_redis_url
from mpush.errors import ConfigError, MpushError
from mpush.exits import Exit, for_error
from mpush.orchestration.ndeploy import service as ndeploy
from mpush.orchestration.rcontrol import agent as rcontrol_agent
from mpush.orchestration.rcontrol import controller as rcontrol_controller
from mpush.orchestration.rcontrol.view import read_replicas
from mpush.runtime.runner import Service, run_service
from mpush.services import (
    exporter,
    handler,
    hfiler,
    hgateway,
    hrender,
    hrouter,
    mdispatch,
    rquery,
)
from mpush.services.movers import lpush, mpush
from mpush.services.movers.monitor import MonitorService
from mpush.services.stages import mbalance, mdedupe, mthrottle
from mpush.services.vpush import service as vpush
from mpush.status.report import collect

__all__ = ["SERVICE_COMMANDS", "app", "main"]

log = logging.getLogger("mpush")

app = typer.Typer(
    name="mpush",
    help="Small, stateless microservices that cooperate through Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

S = TypeVar("S", bound=CommonSettings)

# Every service command registered: "lpush", "ndeploy serve", … → its settings model.
SERVICE_COMMANDS: dict[str, type[CommonSettings]] = {}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mpush {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],  # noqa: UP045 - typer reads the annotation at runtime
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Small, stateless microservices that cooperate through Redis.

    Every service is `mpush <service> --redis URL [--config FILE] [flags]`; flags, MPUSH_* variables
    and config-file keys share the same names.
    """


def _cli_type(field: FieldInfo) -> tuple[Any, str | None]:
    """How typer should read a setting: (annotation, metavar); metavar None for a boolean flag.

    Values are read as text and validated by the settings model, so a bad value gets the same
    one-line error, naming the key, whether it came from a flag, the environment or a file.
    """
    annotation = field.annotation
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        origin = get_origin(annotation)
    if annotation is bool:
        return Optional[bool], None  # noqa: UP045 - typer reads the annotation at runtime
    if origin is list:
        return Optional[list[str]], "KEY"  # noqa: UP045
    if origin is Literal:
        return Optional[str], "|".join(map(str, get_args(annotation)))  # noqa: UP045
    metavar = getattr(annotation, "__name__", "TEXT").upper()
    metavar = "SECRET" if metavar == "SECRETSTR" else metavar.replace("STR", "TEXT")
    return Optional[str], metavar  # noqa: UP045


def _declared_depth(cls: type[CommonSettings], name: str) -> int:
    """How far from CommonSettings the class declaring setting ``name`` is (sort is stable)."""
    for klass in cls.__mro__:
        if name in getattr(klass, "__annotations__", {}):
            return len(klass.__mro__)
    return 0


def _options(cls: type[CommonSettings], arguments: Sequence[str] = ()) -> list[inspect.Parameter]:
    params = []
    own = [name for name in cls.model_fields if name not in CommonSettings.model_fields]
    own.sort(key=lambda name: _declared_depth(cls, name), reverse=True)  # the service's own first
    for name in [
        *arguments,
        *[n for n in [*own, *CommonSettings.model_fields] if n not in arguments],
    ]:
        field = cls.model_fields[name]
        flag = "--" + cls.cli_names.get(name, name).replace("_", "-")
        annotation, metavar = _cli_type(field)
        decls = [f"{flag}/--no-{flag[2:]}"] if metavar is None else [flag]
        helptext = field.description or ""
        if field.is_required():
            helptext += " (required)"
        elif metavar is not None and field.default not in (None, "", []):
            helptext += f" (default: {field.default})"
        option = typer.Option(None, *decls, help=helptext, show_default=False, metavar=metavar)
        if name in arguments:
            option = typer.Argument(None, metavar=name.upper(), help=helptext, show_default=False)
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    return params


def service_command(
    name: str,
    cls: type[S],
    create: Callable[[S], Service],
    *,
    group: typer.Typer | None = None,
    arguments: Sequence[str] = (),
) -> None:
    """Register ``mpush <name>``: flags from ``cls``, settings loaded, the service run.

    ``group`` registers it under a command group instead; ``arguments`` names settings taken as
    positional arguments rather than flags.
    """

    def action(settings: S) -> int:
        return run_service(create(settings), settings)

    SERVICE_COMMANDS[f"{group.info.name} {name}" if group is not None else name] = cls

    settings_command(name, cls, action, group=group, arguments=arguments)


def settings_command(
    name: str,
    cls: type[S],
    action: Callable[[S], int],
    *,
    group: typer.Typer | None = None,
    arguments: Sequence[str] = (),
) -> None:
    """Register a command whose flags come from ``cls`` and which runs ``action(settings)``."""
    params = _options(cls, arguments)
    label = f"{group.info.name} {name}" if group is not None else name

    def command(**flags: Any) -> None:
        raise typer.Exit(_run_action(label, cls, action, flags, arguments))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = inspect.getdoc(cls)
    (group or app).command(name, help=inspect.getdoc(cls))(command)


def _run_action(
    label: str,
    cls: type[S],
    action: Callable[[S], int],
    flags: dict[str, Any],
    arguments: Sequence[str] = (),
) -> int:
    try:
        settings = load_settings(cls, flags)
    except ConfigError as exc:
        if exc.key in arguments and exc.problem.startswith("required"):
            exc = ConfigError(exc.key, f"required: give it as the {exc.key.upper()} argument")
        typer.echo(f"mpush {label}: {exc}", err=True)
        return for_error(exc)
    configure_logging(label.split(maxsplit=1)[0], fmt=settings.log_format, level=settings.log_level)
    try:
        return action(settings)
    except MpushError as exc:
        log.error("%s", exc)
        return for_error(exc)
    except KeyboardInterrupt:
        return Exit.SECOND_SIGNAL


service_command("mpush", MpushSettings, mpush.create)
service_command("lpush", LpushSettings, lpush.create)
service_command("monitor", MonitorSettings, MonitorService)
service_command("mbalance", MbalanceSettings, mbalance.create)
service_command("mdedupe", MdedupeSettings, mdedupe.create)
service_command("mthrottle", MthrottleSettings, mthrottle.create)

service_command("vpush", VpushSettings, vpush.create)
# rcontrol's replicas are read by rcontrol's own read model, handed to the exporter from here.
service_command(
    "exporter", ExporterSettings, functools.partial(exporter.create, replicas=read_replicas)
)

service_command("hgateway", GatewaySettings, hgateway.create)
service_command("hrouter", RouterSettings, hrouter.create)
service_command("mdispatch", DispatchSettings, mdispatch.create)
service_command("handler", HandlerSettings, handler.create)
service_command("hfiler", FilerSettings, hfiler.create)
service_command("rquery", QuerySettings, rquery.create)
service_command("hrender", RenderSettings, hrender.create)

ndeploy_app = typer.Typer(
    name="ndeploy",
    help="Deploy Python packages from git on requests in Redis.",
    no_args_is_help=True,
)
app.add_typer(ndeploy_app)
service_command("serve", NdeployServeSettings, ndeploy.create, group=ndeploy_app)
service_command("pop", NdeployPopSettings, ndeploy.create, group=ndeploy_app, arguments=["wait"])
settings_command(
    "deploy", NdeployRequestSettings, ndeploy_commands.deploy, group=ndeploy_app, arguments=["git"]
)
settings_command("list", NdeployListSettings, ndeploy_commands.show, group=ndeploy_app)
settings_command(
    "rollback",
    NdeployRollbackSettings,
    ndeploy_commands.rollback,
    group=ndeploy_app,
    arguments=["to"],
)

rcontrol_app = typer.Typer(
    name="rcontrol",
    help="Declared replicas, hosts and standby instances, reconciled from Redis.",
    no_args_is_help=True,
)
app.add_typer(rcontrol_app)
settings_command(
    "apply", RcontrolApplySettings, rcontrol_commands.apply, group=rcontrol_app, arguments=["file"]
)
settings_command(
    "scale",
    RcontrolScaleSettings,
    rcontrol_commands.scale,
    group=rcontrol_app,
    arguments=["name", "replicas"],
)
settings_command(
    "delete",
    RcontrolDeleteSettings,
    rcontrol_commands.delete,
    group=rcontrol_app,
    arguments=["name"],
)
settings_command("status", RcontrolStatusSettings, rcontrol_commands.status, group=rcontrol_app)
settings_command(
    "export",
    RcontrolExportSettings,
    rcontrol_commands.export,
    group=rcontrol_app,
    arguments=["file"],
)
settings_command(
    "rollout",
    RcontrolRolloutSettings,
    rcontrol_commands.rollout,
    group=rcontrol_app,
    arguments=["name"],
)
settings_command(
    "rollback",
    RcontrolRollbackSettings,
    rcontrol_commands.rollback,
    group=rcontrol_app,
    arguments=["name"],
)
settings_command(
    "drain", RcontrolDrainSettings, rcontrol_commands.drain, group=rcontrol_app, arguments=["host"]
)
settings_command(
    "uncordon",
    RcontrolUncordonSettings,
    rcontrol_commands.uncordon,
    group=rcontrol_app,
    arguments=["host"],
)
service_command("agent", RcontrolAgentSettings, rcontrol_agent.create, group=rcontrol_app)
service_command(
    "controller", RcontrolControllerSettings, rcontrol_controller.create, group=rcontrol_app
)


@app.command()
def status(
    redis: Annotated[Optional[str], typer.Option(help="Redis URL.")] = None,  # noqa: UP045
    service_namespace: Annotated[
        Optional[str], typer.Option("--service-namespace", help="Namespace, e.g. demo:mpush.")  # noqa: UP045
    ] = None,
    cluster: Annotated[Optional[bool], typer.Option("--cluster/--no-cluster")] = None,  # noqa: UP045
    config: Annotated[Optional[Path], typer.Option(help="Config file.")] = None,  # noqa: UP045
    queue: Annotated[
        Optional[list[str]], typer.Option(help="Also show this list's length.")  # noqa: UP045
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    prometheus: Annotated[
        bool, typer.Option(help="Print the Prometheus text format (what mpush exporter serves).")
    ] = False,
) -> None:
    """Show the registered services, queue lengths and metrics of a namespace."""
    flags = {
        "redis": redis,
        "service_namespace": service_namespace,
        "cluster": cluster,
        "config": config,
    }
    try:
        settings = load_settings(StatusSettings, flags)
        if not settings.service_namespace:
            raise ConfigError("service_namespace", "required, e.g. --service-namespace demo:mpush")
        target = parse_redis_url(settings.redis, cluster=settings.cluster)
    except ConfigError as exc:
        typer.echo(f"mpush status: {exc}", err=True)
        raise typer.Exit(for_error(exc)) from None
    namespace = settings.service_namespace

    async def gather() -> Any:
        client = connect(target, socket_timeout=5.0)
        try:
            return await collect(client, namespace, queue, replicas=read_replicas)
        finally:
            await client.aclose()

    try:
        report = asyncio.run(gather())
    except Exception as exc:
        typer.echo(f"mpush status: cannot read {namespace} from Redis: {exc}", err=True)
        raise typer.Exit(Exit.UNAVAILABLE) from None
    if as_json:
        typer.echo(render_json(report))
    elif prometheus:
        sys.stdout.buffer.write(render_prometheus(report))
        sys.stdout.flush()
    else:
        render_table(report, Console())


def _demo(settings: DemoSettings) -> int:
    from mpush.demo import run_demo

    return run_demo(settings)


settings_command("demo", DemoSettings, _demo)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(Exit.SECOND_SIGNAL)
