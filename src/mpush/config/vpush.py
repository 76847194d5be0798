"""Settings of vpush: a bridge to a list on another Redis."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr, model_validator

from mpush.config.base import CommonSettings

__all__ = ["VpushSettings"]


class VpushSettings(CommonSettings):
    """vpush: move messages to a list on a different, remote Redis, exactly once in effect.

    Replicas elect one active mover through a lease with a fencing token; the others stand by.
    """

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field(..., min_length=1, description="The list messages are taken from.")
    out_redis: str = Field(..., min_length=1, description="Redis URL of the destination.")
    out_redis_password: SecretStr | None = Field(
        None, description="Password of the --out-redis URL, kept apart from it."
    )
    out_cluster: bool = Field(False, description="Treat the destination URL as a Redis Cluster.")
    out: list[str] = Field(
        ..., min_length=1, description="The list on the destination messages are pushed to."
    )
    batch: int = Field(
        1, ge=1, le=5000, description="Most messages in flight at once (1: one at a time)."
    )
    lease_ttl: float = Field(
        10.0, ge=0.5, le=3600, description="Seconds a dead mover's lease lasts before takeover."
    )
    out_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds before a stalled call to either Redis counts as an outage.",
    )
    dedupe_window: int = Field(
        604800,
        ge=0,
        description="Seconds the destination remembers the last message id (0: forever).",
    )
    provenance: bool = Field(
        False, description="Add meta.vpush = {source, moved_at} to JSON object messages."
    )

    @model_validator(mode="after")
    def _route(self) -> VpushSettings:
        if len(self.out) != 1:
            raise ValueError(f"out: vpush moves to exactly one list, got {len(self.out)}")
        if self.out_redis == self.redis and self.out[0] == self.input:
            raise ValueError(f"out: {self.input!r} on the same Redis is the input list")
        if self.pop_timeout >= self.lease_ttl:
            raise ValueError(
                f"lease_ttl: {self.lease_ttl:g}s must be longer than "
                f"pop_timeout ({self.pop_timeout:g}s), or the lease lapses while idle"
            )
        return self
