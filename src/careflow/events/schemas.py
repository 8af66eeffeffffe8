"""Request and response bodies of the events API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from careflow.kit.clock import EARLIEST_INSTANT, LATEST_INSTANT, in_range
from careflow.kit.schemas import StrictInput, UTCDatetime, documented_as


class EventIn(StrictInput):
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The producer's id: the same id again in the organisation is a duplicate",
        examples=["evt-8c1f"],
    )
    type: str = Field(description="Event type (see the catalog)", examples=["appointment.booked"])
    occurred_at: datetime | None = Field(
        default=None, description="ISO 8601; defaults to the time careflow receives the event"
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The event's entities by type: `patient`, `appointment`, `invoice`, `form`, "
        "`message`",
    )

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        # Pydantic would also take a number of seconds; the API promises ISO 8601 only.
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 date-time string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("must be an ISO 8601 date-time string") from exc
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if not in_range(parsed):
            # It could not be stored in UTC (0001-01-01T00:00:00+01:00 has no UTC time).
            raise ValueError(
                f"must be between {EARLIEST_INSTANT:%Y-%m-%d} and {LATEST_INSTANT:%Y-%m-%d} in UTC"
            )
        return parsed


class EventAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "event_id": "evt-8c1f",
                    "type": "appointment.booked",
                    "status": "accepted",
                }
            ]
        }
    )

    id: int
    event_id: str | None
    type: Annotated[str, documented_as("EventType")]
    status: Annotated[str, documented_as("EventStatus")]


class EventExecution(BaseModel):
    id: int
    automation_rule_id: int | None
    status: Annotated[str, documented_as("ExecutionStatus")]


class EventOut(BaseModel):
    id: int
    event_id: str | None
    type: Annotated[str, documented_as("EventType")]
    occurred_at: UTCDatetime
    status: Annotated[str, documented_as("EventStatus")] = Field(
        description="`accepted` until the worker has dispatched it, then `processed`"
    )
    created_at: UTCDatetime
    processed_at: UTCDatetime | None
    executions: list[EventExecution]
    episode_id: int | None
