"""Logging set-up, done only at the entry point: human-readable by default, JSON lines on request.

Modules log through ``logging.getLogger(__name__)``; one line per lifecycle event, never per message
at INFO. Extra structured fields go in ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from typing import Any, Literal

__all__ = ["configure_logging"]

_HUMAN = "%(asctime)s %(levelname)-7s %(service)s[%(process)d] %(message)s"


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, service, pid, host, logger, msg, and any fields."""

    def __init__(self) -> None:
        super().__init__()
        self._host = socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": getattr(record, "service", None),
            "pid": record.process,
            "host": self._host,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(
    service: str, *, fmt: Literal["human", "json"] = "human", level: str = "INFO"
) -> None:
    """Send the root logger to stderr in the chosen format. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_HUMAN, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_ServiceFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
