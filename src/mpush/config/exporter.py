"""Settings of ``mpush exporter``: a namespace's figures served to Prometheus."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from mpush.config.base import CommonSettings

__all__ = ["ExporterSettings"]


class ExporterSettings(CommonSettings):
    """exporter: serve a whole namespace's figures on /metrics for Prometheus — instances per
    service, queue lengths, metrics as histograms and counters, message tracking, replicas."""

    section: ClassVar[str] = "exporter"

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: all).")
    port: int = Field(9121, ge=0, le=65535, description="TCP port of /metrics (0: any free).")
    queue: list[str] = Field(
        default_factory=list, description="Also export this list's length (repeatable)."
    )
    cache_ttl: float = Field(
        1.0, ge=0, le=300, description="Seconds a read of Redis answers scrapes before the next."
    )
    scrape_timeout: float = Field(
        5.0, gt=0, le=120, description="Seconds a read of Redis may take before a scrape fails."
    )
    max_queues: int = Field(1000, ge=1, description="Most queue lengths read per scrape.")
    max_metrics: int = Field(1000, ge=1, description="Most metrics hashes read per scrape.")
    scan_budget: int = Field(
        50, ge=1, description="Most SCAN calls per scrape looking for metrics hashes."
    )
    request_timeout: float = Field(
        5.0, gt=0, le=300, description="Seconds a client has to send a request's head."
    )
    max_connections: int = Field(
        32, ge=1, le=10_000, description="Most open connections; more are answered 503."
    )

    @model_validator(mode="after")
    def _namespace_given(self) -> ExporterSettings:
        if not self.service_namespace:
            raise ValueError("service_namespace: required, e.g. --service-namespace {demo}:mpush")
        return self
