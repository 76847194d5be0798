"""Settings of the pipeline stages: mbalance, mdedupe, mthrottle."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from mpush.config.balancing import BalanceOutput, parse_outputs
from mpush.config.base import CommonSettings

__all__ = ["MbalanceSettings", "MdedupeSettings", "MthrottleSettings", "StageSettings"]


class StageSettings(CommonSettings):
    """What the stages share: an input list, output lists, a batch size."""

    cli_names: ClassVar[dict[str, str]] = {"input": "in"}

    input: str = Field(..., min_length=1, description="The list messages are taken from.")
    out: list[str] = Field(..., min_length=1, description="The list messages are passed to.")
    batch: int = Field(1000, ge=1, le=5000, description="Most messages taken by one atomic step.")

    @field_validator("out", mode="before")
    @classmethod
    def _out_list(cls, value: Any) -> Any:
        return _listed(value)

    def _one_out(self, service: str) -> None:
        if len(self.out) != 1:
            raise ValueError(f"out: {service} moves to exactly one list, got {len(self.out)}")
        if self.out[0] == self.input:
            raise ValueError(f"out: {self.input!r} is also the input list")


def _listed(value: Any) -> Any:
    """Let a config file give a list setting as a scalar or a ``{QUEUE: N}`` table."""
    if isinstance(value, dict):
        return [f"{key}={item}" for key, item in value.items()]
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list):
        return [str(item) if isinstance(item, int | float) else item for item in value]
    return value


class MbalanceSettings(StageSettings):
    """mbalance: move each message to the output list that is least full (length / weight)."""

    section: ClassVar[str] = "mbalance"

    out: list[str] = Field(
        ...,
        min_length=1,
        description="An output list: QUEUE, or QUEUE=NAMESPACE to skip it while no consumer is "
        "registered under NAMESPACE (repeat).",
    )
    weight: list[str] = Field(
        [], description="QUEUE=W: QUEUE takes W times the share of a weight-1 output (repeat)."
    )
    cap: list[str] = Field(
        [],
        description="QUEUE=N: the most messages QUEUE may hold; N alone caps every output "
        "(repeat). When all are full, messages wait in --in.",
    )
    cursor: str | None = Field(
        None, description="Round-robin cursor key shared by replicas (<in>:mbalance:cursor)."
    )
    live_check: float = Field(
        1.0, gt=0, description="Seconds between checks of the consumer namespaces' registrations."
    )

    @field_validator("weight", "cap", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _listed(value)

    @model_validator(mode="after")
    def _valid_outputs(self) -> MbalanceSettings:
        self.outputs()
        return self

    def outputs(self) -> tuple[BalanceOutput, ...]:
        """The outputs with their consumer namespace, weight and cap."""
        return parse_outputs(self.input, self.out, self.weight, self.cap)


class MdedupeSettings(StageSettings):
    """mdedupe: pass a message on only if its xid was not passed on within the window."""

    section: ClassVar[str] = "mdedupe"

    window: float = Field(
        ..., ge=0.001, description="Seconds an xid is remembered after its message passed."
    )
    duplicates: str | None = Field(
        None, description="Push each duplicate to this list (default: count it and drop it)."
    )
    seen: str | None = Field(
        None, description="Key prefix of the seen markers (<in>:mdedupe:seen:)."
    )

    @model_validator(mode="after")
    def _keys(self) -> MdedupeSettings:
        self._one_out("mdedupe")
        if self.duplicates in (self.input, self.out[0]):
            raise ValueError(f"duplicates: {self.duplicates!r} is also the in or out list")
        return self


class MthrottleSettings(StageSettings):
    """mthrottle: pass at most --rate messages per --per seconds, across all replicas."""

    section: ClassVar[str] = "mthrottle"

    rate: int = Field(..., ge=1, description="Messages passed per period, all replicas together.")
    per: float = Field(1.0, gt=0, description="The period, seconds.")
    burst: int = Field(
        1, ge=1, description="Most messages passed at once after an idle spell (bucket size)."
    )
    bucket: str | None = Field(
        None, description="Token bucket key shared by replicas (<in>:mthrottle:bucket)."
    )

    @model_validator(mode="after")
    def _keys(self) -> MthrottleSettings:
        self._one_out("mthrottle")
        return self
