"""``mpush handler``: a Python function served behind hgateway/hrouter.

``--handler mymodule:function`` names a function from a ``Request`` to a ``Response`` (plain or
``async``); the loop around it is ``mpush.http.serve``'s, shared with hfiler, hrender and rquery.
"""

from __future__ import annotations

from collections.abc import Mapping

from mpush.config import HandlerSettings
from mpush.http.serve import Handle, RequestService, load_callable

__all__ = ["HandlerService", "create", "load_handler"]


def load_handler(spec: str) -> Handle:
    """The handler named ``module:function``; ConfigError('handler', …) when it is not there."""
    handle: Handle = load_callable(spec, "handler")
    return handle


class HandlerService(RequestService):
    """Serves the request messages of ``--in`` with the function ``--handler`` names."""

    name = "handler"
    settings: HandlerSettings

    def __init__(self, settings: HandlerSettings, handle: Handle) -> None:
        self.settings = settings
        self._function = handle

    def registry_info(self) -> Mapping[str, str]:
        return {"in": self.settings.input, "handler": self.settings.handler}

    def handler(self) -> Handle:
        return self._function


def create(settings: HandlerSettings) -> HandlerService:
    return HandlerService(settings, load_handler(settings.handler))
