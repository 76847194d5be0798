"""The face of mpush: the ``mpush`` command (``app``), the rendering of ``mpush status`` and
ndeploy's commands. Nothing below imports it."""

from mpush.cli.app import app, main

__all__ = ["app", "main"]
