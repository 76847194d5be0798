"""Routes: ordered regexes over the request path, each naming the queue its requests go to.

A route is written ``[METHOD[,METHOD]] REGEX QUEUE [NAME]``, for example::

    GET ^/hello/(?P<name>\\w+)$ hello:req hello
    ^/static/ hfiler:req
    GET,HEAD ^/$ hrender:req home

or as a JSON object ``{"method": "GET", "pattern": "^/$", "queue": "hrender:req", "name": "home"}``.
The method is optional (any method), the name defaults to the queue. The regex is searched in
the path (not the query string), so anchor it with ``^``/``$`` as needed; it cannot contain spaces
in the short form (write ``\\s`` or ``\\x20``, or use the JSON form). Named groups become the
request's ``params``. The first route that matches wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Route", "RouteError", "RouteTable", "parse_route", "parse_routes"]

_METHODS = re.compile(r"^(\*|[A-Z]+(,[A-Z]+)*)$")
_NAME = re.compile(r"^[\w.:{}-]{1,100}$")


class RouteError(ValueError):
    """A route that cannot be used; the text names the route and the problem."""


@dataclass(frozen=True)
class Route:
    name: str
    pattern: re.Pattern[str]
    queue: str
    methods: frozenset[str] = frozenset()  # empty: any method

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The named groups when the route takes this request, else None."""
        if self.methods and method not in self.methods:
            return None
        found = self.pattern.search(path)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}


def parse_route(text: str) -> Route:
    """One route from its short form or its JSON form; RouteError naming the problem."""
    spec = text.strip()
    if spec.startswith("{"):
        return _from_json(spec)
    tokens = spec.split()
    methods = ""
    if tokens and _METHODS.match(tokens[0]) and len(tokens) >= 3:
        methods = tokens.pop(0)
    if len(tokens) not in (2, 3):
        raise RouteError(f"route {text!r}: expected '[METHOD[,METHOD]] REGEX QUEUE [NAME]'")
    pattern, queue = tokens[0], tokens[1]
    name = tokens[2] if len(tokens) == 3 else queue
    return _build(text, pattern, queue, name, methods)


def _from_json(text: str) -> Route:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RouteError(f"route {text!r}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RouteError(f"route {text!r}: a JSON route must be an object")
    unknown = set(doc) - {"method", "pattern", "queue", "name"}
    if unknown:
        raise RouteError(f"route {text!r}: unknown field {sorted(unknown)[0]!r}")
    pattern, queue = doc.get("pattern"), doc.get("queue")
    if not isinstance(pattern, str) or not isinstance(queue, str):
        raise RouteError(f"route {text!r}: 'pattern' and 'queue' are required strings")
    method = doc.get("method") or ""
    if isinstance(method, list):
        method = ",".join(str(m) for m in method)
    name = doc.get("name") or queue
    return _build(text, pattern, queue, str(name), str(method).upper())


def _build(text: str, pattern: str, queue: str, name: str, methods: str) -> Route:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RouteError(f"route {text!r}: invalid regex {pattern!r}: {exc}") from None
    if methods and not _METHODS.match(methods):
        raise RouteError(f"route {text!r}: bad method list {methods!r}")
    if not queue or any(ch.isspace() for ch in queue):
        raise RouteError(f"route {text!r}: bad queue name {queue!r}")
    if not _NAME.match(name):
        raise RouteError(f"route {text!r}: bad name {name!r} (letters, digits, . : _ - {{ }})")
    chosen = frozenset() if methods in ("", "*") else frozenset(methods.split(","))
    return Route(name=name, pattern=compiled, queue=queue, methods=chosen)


def parse_routes(texts: Iterable[str]) -> list[Route]:
    """Every route of ``texts``, in order; the first bad one raises RouteError."""
    return [parse_route(text) for text in texts if text.strip()]


class RouteTable:
    """Routes tried in order: the live ones (from Redis) first, then the configured ones."""

    def __init__(self, configured: list[Route]) -> None:
        self.configured = configured
        self.live: list[Route] = []

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.live:
            params = route.match(method, path)
            if params is not None:
                return route, params
        for route in self.configured:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None
