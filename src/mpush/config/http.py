"""Settings of the HTTP side: hgateway, hrouter, mdispatch, the handler runner, hfiler, rquery,
hrender, and ``mpush demo`` (the distributed web server they make)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator

from mpush.config.base import CommonSettings, paths_are_local

STAGE_BATCH = (
    "Most messages per Redis round trip. Batches of tens keep the stages of a request's path "
    "working side by side: at 64 connections, 64 did best (16: 12% fewer requests/s, "
    "500: 13% fewer)."
)

__all__ = [
    "DemoSettings",
    "DispatchSettings",
    "FilerSettings",
    "GatewaySettings",
    "HandlerSettings",
    "QuerySettings",
    "RenderSettings",
    "RouterSettings",
]


class GatewaySettings(CommonSettings):
    """hgateway: an HTTP server that turns each request into a message on a Redis list, waits
    for the response message and answers the client."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: all).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    reuse_port: bool = Field(
        False,
        description="Share the port with other gateways on this host (SO_REUSEPORT): the kernel "
        "spreads new connections among them.",
    )
    queue: str = Field("hgateway:req", min_length=1, description="The request queue.")
    reply_prefix: str | None = Field(
        None,
        min_length=1,
        description="Reply lists: <reply_prefix>:<instance> (default <ns>:reply; hgateway:reply).",
    )
    timeout: float = Field(10.0, gt=0, le=3600, description="Seconds a request may take.")
    body_limit: int = Field(1_048_576, ge=0, description="Largest request body, bytes.")
    queue_limit: int = Field(
        10_000, ge=0, description="503 while the request queue is longer (0: no limit)."
    )
    retry_after: int = Field(1, ge=0, description="Retry-After seconds sent with a 503.")
    require_consumer: bool = Field(
        True, description="503 while no live instance consumes the queue (needs a namespace)."
    )
    drain: float = Field(
        3.0, ge=0, le=4, description="Seconds to finish in-flight requests on shutdown."
    )
    batch: int = Field(500, ge=1, le=5000, description="Most messages per Redis round trip.")
    cache_bytes: int = Field(
        32 * 1024 * 1024,
        ge=0,
        description="Memory for answers marked public, cached in the gateway, bytes (0: off).",
    )
    cache_max_age: float = Field(
        1.0, ge=0, le=86_400, description="Longest a cached answer is reused, seconds."
    )
    cache_max_entry: int = Field(
        1024 * 1024, ge=0, description="Largest answer the cache keeps, bytes."
    )
    header_timeout: float = Field(
        10.0, gt=0, le=3600, description="Seconds a request line and headers may take to arrive."
    )
    body_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds a body may take to arrive (and an answer to go)."
    )
    keepalive_timeout: float = Field(
        5.0, gt=0, le=3600, description="Seconds an idle keep-alive connection is kept."
    )
    max_connections: int = Field(
        10_000, ge=1, le=1_000_000, description="Most open client connections; more get 503."
    )
    max_request_line: int = Field(
        8192, ge=256, le=1_048_576, description="Longest request line (414 beyond), bytes."
    )
    max_header_bytes: int = Field(
        16384, ge=1024, le=1_048_576, description="Most header bytes (431 beyond)."
    )
    max_headers: int = Field(100, ge=1, le=10_000, description="Most headers (431 beyond).")
    route: list[str] = Field(
        default_factory=list,
        description="A route the gateway applies itself, as hrouter's (the rest go to queue).",
    )

    discoverable: ClassVar[tuple[str, ...]] = (
        "host",
        "port",
        "reuse_port",
        "queue",
        "reply_prefix",
        "timeout",
        "body_limit",
        "queue_limit",
        "retry_after",
        "require_consumer",
        "drain",
        "batch",
        "cache_bytes",
        "cache_max_age",
        "cache_max_entry",
        "header_timeout",
        "body_timeout",
        "keepalive_timeout",
        "max_connections",
        "max_request_line",
        "max_header_bytes",
        "max_headers",
    )


class RouterSettings(CommonSettings):
    """hrouter: routes each HTTP request message to a service queue by matching its URL."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hgateway:req", min_length=1, description="The request queue.")
    route: list[str] = Field(
        default_factory=list,
        description="A route '[METHOD[,METHOD]] REGEX QUEUE [NAME]', tried in order.",
    )
    routes_key: str | None = Field(
        None, description="Redis list of routes applied live (default: <ns>:routes)."
    )
    reload: float = Field(1.0, gt=0, description="Seconds between checks of the Redis routes.")
    track: bool = Field(
        False, description="Register each request for mdispatch (handlers answering by id)."
    )
    track_prefix: str | None = Field(
        None,
        min_length=1,
        description="Registrations: <track_prefix>:<id> (default <ns>:track, or mdispatch:req).",
    )
    batch: int = Field(64, ge=1, le=5000, description=STAGE_BATCH)


class DispatchSettings(CommonSettings):
    """mdispatch: routes each response message to the instance that waits for it, by id."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hgateway:res", min_length=1, description="The shared response list.")
    track_prefix: str | None = Field(
        None,
        min_length=1,
        description="Registrations: <track_prefix>:<id> (default <ns>:track, or mdispatch:req).",
    )
    requests: str | None = Field(
        None, description="Also register the request messages of this list, then --forward them."
    )
    forward: str | None = Field(None, description="Where registered requests go on to.")
    batch: int = Field(64, ge=1, le=5000, description=STAGE_BATCH)

    @model_validator(mode="after")
    def _requests_and_forward(self) -> DispatchSettings:
        if (self.requests is None) != (self.forward is None):
            raise ValueError("forward: --requests and --forward go together")
        return self


class HandlerSettings(CommonSettings):
    """handler: serve HTTP request messages from a queue with a Python function."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field(..., min_length=1, description="The queue of request messages.")
    handler: str = Field(
        ..., pattern=r"^[\w.]+:[\w.]+$", description="The handler, as module:function."
    )
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(64, ge=1, le=5000, description=STAGE_BATCH)


class FilerSettings(CommonSettings):
    """hfiler: static files over HTTP messages, loaded into Redis once and served from there."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hfiler:req", min_length=1, description="The queue of request messages.")
    root: Path = Field(..., description="The directory served.")
    prefix: str = Field("/", description="URL path prefix removed before mapping to a file.")
    index: list[str] = Field(
        default_factory=lambda: ["index.html"], description="Index file of a directory."
    )
    ttl: int = Field(300, ge=1, description="Seconds a file stays in Redis (default expiry).")
    ttl_pattern: list[str] = Field(
        default_factory=list, description="GLOB=SECONDS: expiry of matching paths; first wins."
    )
    expiry: str | None = Field(
        None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="module:function(path, stat) returning seconds (None: the default).",
    )
    max_age: int | None = Field(
        None, ge=0, description="Cache-Control max-age (default: the file's expiry)."
    )
    gzip: bool = Field(False, description="Keep a gzip variant of compressible files.")
    gzip_min: int = Field(256, ge=0, description="Smallest file worth compressing, bytes.")
    max_size: int = Field(10_485_760, ge=1, description="Largest file served, bytes.")
    cache_prefix: str | None = Field(
        None, min_length=1, description="Files are <cache_prefix>:<path> (default <ns>:hfiler)."
    )
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(64, ge=1, le=5000, description=STAGE_BATCH)

    @model_validator(mode="after")
    def _check(self) -> FilerSettings:
        if paths_are_local() and not self.root.is_dir():
            raise ValueError(f"root: {str(self.root)!r} is not a directory")
        if not self.prefix.startswith("/"):
            raise ValueError(f"prefix: {self.prefix!r} must start with /")
        for spec in self.ttl_pattern:
            glob, sep, seconds = spec.rpartition("=")
            if not sep or not glob or not seconds.isdigit() or int(seconds) < 1:
                raise ValueError(f"ttl_pattern: {spec!r} is not GLOB=SECONDS")
        return self


class QuerySettings(CommonSettings):
    """rquery: read Redis data over HTTP, under allowed key prefixes only."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("rquery:req", min_length=1, description="The queue of request messages.")
    allow: list[str] = Field(..., min_length=1, description="A key prefix that may be read.")
    write: list[str] = Field(
        default_factory=list, description="A key prefix where POST set/lpush are enabled."
    )
    prefix: str = Field("/", description="URL path prefix removed before the command.")
    max_items: int = Field(1000, ge=1, le=100_000, description="Most items in one answer.")
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(64, ge=1, le=5000, description=STAGE_BATCH)

    @model_validator(mode="after")
    def _check(self) -> QuerySettings:
        if any(not p for p in self.allow):
            raise ValueError("allow: an empty prefix would allow every key")
        for writable in self.write:
            if not writable or not any(writable.startswith(p) for p in self.allow):
                raise ValueError(f"write: {writable!r} is not under an allowed prefix")
        if not self.prefix.startswith("/"):
            raise ValueError(f"prefix: {self.prefix!r} must start with /")
        return self


class RenderSettings(CommonSettings):
    """hrender: HTML pages rendered with Jinja2 from request data and Redis data."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field("hrender:req", min_length=1, description="The queue of request messages.")
    templates: Path | None = Field(None, description="Directory of trusted templates.")
    templates_key: str | None = Field(
        None, description="Redis hash of templates, rendered sandboxed (default <ns>:templates)."
    )
    page: list[str] = Field(
        ..., min_length=1, description="A page 'ROUTE TEMPLATE [NAME=KEY ...]' ($param in KEY)."
    )
    max_items: int = Field(1000, ge=1, description="Most items read from one Redis key.")
    concurrency: int = Field(64, ge=1, description="Most requests handled at once.")
    batch: int = Field(64, ge=1, le=5000, description=STAGE_BATCH)

    @model_validator(mode="after")
    def _check(self) -> RenderSettings:
        if paths_are_local() and self.templates is not None and not self.templates.is_dir():
            raise ValueError(f"templates: {str(self.templates)!r} is not a directory")
        for spec in self.page:
            parts = spec.split()
            if len(parts) < 2 or any("=" not in part for part in parts[2:]):
                raise ValueError(f"page: {spec!r} is not 'ROUTE TEMPLATE [NAME=KEY ...]'")
        return self


class DemoSettings(CommonSettings):
    """demo: the distributed web server on http://localhost:8080, run by rcontrol — a private
    redis-server unless --redis is given, two agents (host-a, host-b) and a controller running
    the gateway, router, handlers and a live-data ring declared in the demo's TOML file — with a
    page of live charts and a load control, until Ctrl-C. With --fanout: mpush fanning out three
    messages."""

    cli_names: ClassVar[dict[str, str]] = {"run_for": "for"}

    host: str = Field("127.0.0.1", description="Address the site listens on (0.0.0.0: all).")
    port: int = Field(8080, ge=0, le=65535, description="Port of the site (0: any free port).")
    run_for: float | None = Field(
        None, gt=0, description="Stop after this many seconds (default: run until Ctrl-C)."
    )
    fanout: bool = Field(
        False, description="Instead of the site: the mpush fan-out walkthrough, then exit."
    )
    redis: str = Field(
        "", description="Redis URL to use (default: a private redis-server, started and removed)."
    )
    # The services' shared settings, passed on to every child, with defaults that suit a demo:
    # a killed instance leaves the live registry within seconds, and Ctrl-C is quick.
    service_expire: int = Field(10, ge=2, description="Seconds a registration lives unrenewed.")
    service_renew: float = Field(2.0, gt=0, description="Seconds between renewals.")
    pop_timeout: float = Field(
        0.5, gt=0, le=60, description="Seconds a blocking wait lasts; bounds shutdown time."
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also run mpush exporter for the demo's namespace on this port (on --host).",
    )
    load: float = Field(
        0.0,
        ge=0,
        le=500,
        description="Requests a second to the slow handler (/work) from the start; the page's "
        "load buttons change it.",
    )

    @model_validator(mode="after")
    def _namespace_is_one_word(self) -> DemoSettings:
        if self.service_namespace is not None and not re.fullmatch(r"\S+", self.service_namespace):
            raise ValueError("service_namespace: must be one word (it names queues in routes)")
        if self.service_redis:
            raise ValueError(
                "service_redis: the demo keeps its registry beside rcontrol's state, on --redis"
            )
        return self

    @property
    def private_redis(self) -> bool:
        """True when no Redis was configured: the demo starts its own redis-server."""
        return not self.redis
